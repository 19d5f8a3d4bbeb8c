# The two set-up commands of the README are a contract: each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test lint typecheck pytest soak simulate bench bench-full bench-simulator bench-client bench-ledger bench-audit fuzz soak-full crash-sweep test-browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job on the built-in simulated fleet: a few dozen deployments, flaky profile, live progress.
demo: $(STAMP)
	$(BIN)/orchestrator demo

test: $(STAMP) lint typecheck pytest

# The HTML reports in a real browser: Debian's headless chromium (installed where missing: CI runs as root on
# Debian) driven by Playwright; charts, filters, sorting, escaping, no network. Not part of make test.
test-browser: $(STAMP)
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	$(BIN)/pytest tests/browser -m browser -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests benchmarks
	$(BIN)/ruff format --check orchestrator tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Four workers on two cores: most tests wait on sockets and simulated jobs, not on the CPU.
pytest: $(STAMP)
	$(BIN)/pytest -n 4

# The long soak: 1,000 deployments on the hostile profile (a few minutes). A smaller one is in make test.
soak: $(STAMP)
	$(BIN)/pytest -m soak -p no:cacheprovider

# The soak at the compass's scale: 10,000 hostile deployments, every fault at once (a few minutes).
# Its summary goes to benchmarks/results/soak-full.{md,json}.
soak-full: $(STAMP)
	$(BIN)/pytest -m soak_full -p no:cacheprovider -s -q

# A simulated fleet of 50 deployments on a random loopback port, with an inventory pointing at it.
simulate: $(STAMP)
	$(BIN)/orchestrator simulate --deployments 50 --profile flaky --write-inventory inventories/simulated.toml

# The benchmark's extras (matplotlib, for the chart) on top of the test tools.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The fleet benchmark, quick: 100 deployments; the orchestrator, a sequential loop and a thread pool
# (about 6 minutes). Results, table and chart in benchmarks/results/fleet-quick.*.
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_fleet.py --scenario quick

# All of it: 100, 1,000 and 10,000 deployments, and 1,000 with two stores (about 40 minutes).
bench-full: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_fleet.py --scenario full

bench-simulator: $(STAMP)
	$(BIN)/python benchmarks/bench_simulator.py

# Client CPU per request: the orchestrator's HTTP client against bare aiohttp, side by side (under a minute).
bench-client: $(STAMP)
	$(BIN)/python benchmarks/bench_client.py

# The same 10,000-deployment run with and without the run ledger (a few minutes).
bench-ledger: $(STAMP)
	$(BIN)/python benchmarks/bench_ledger.py

# One hostile deployment beside healthy ones, answering what hypothesis draws: about 10,000 answers through
# the client, the poller and the audit's readers, over real sockets (about ten minutes).
fuzz: $(STAMP)
	ORCHESTRATOR_FUZZ_EXAMPLES=1000 $(BIN)/pytest tests/test_isolation.py -p no:cacheprovider -q -s

# A compliance audit of 10,000 simulated deployments with 14 days of history (about a minute).
bench-audit: $(STAMP)
	$(BIN)/python benchmarks/bench_audit.py

# SIGKILL (and Ctrl-C) at every failpoint and at random moments, then resume: 57 kill points, each on its own
# slice of a flaky simulated fleet; every target exactly one backup or an explained non-success (a few minutes).
# Results in benchmarks/results/crash-sweep.md and .json.
crash-sweep: $(STAMP)
	$(BIN)/python benchmarks/crash_sweep.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
