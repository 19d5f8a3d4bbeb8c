"""The client benchmark's harness (benchmarks/bench_client.py): its figures from hand-made runs, the fleet it
needs, and one tiny end-to-end measurement with every figure the fleet benchmark reads. No assert on time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `benchmarks/` has no __init__.py: its modules are imported as the harness imports them, from there.
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_client import Plan, _short, markdown, measure_client_cpu, summarise  # noqa: E402


def run(mode: str, cpu_ms_per_request: float, requests: int = 1000) -> dict[str, object]:
    return {"mode": mode, "deployments": 10, "requests": requests, "cpu_s": cpu_ms_per_request * requests / 1000,
            "wall_s": 1.0}  # fmt: skip


def test_the_figures_are_medians_and_the_ratio_is_the_median_of_each_repetitions_own() -> None:
    """A repetition's two runs are compared with each other: load that moves both cancels out."""
    runs = [run("ours", 0.2), run("bare", 0.1), run("bare", 0.4), run("ours", 0.6), run("ours", 0.3), run("bare", 0.3)]
    summary = summarise(runs)
    assert summary["modes"]["ours"]["cpu_ms_per_request"] == pytest.approx(0.3)
    assert summary["modes"]["bare"]["cpu_ms_per_request"] == pytest.approx(0.3)
    assert summary["modes"]["ours"]["cpu_ms_per_request_each"] == pytest.approx([0.2, 0.6, 0.3])
    assert summary["ratio"] == pytest.approx(1.5)  # 2.0, 1.5, 1.0
    assert summary["within_target"] == {"cpu_ms_per_request": True, "ratio": True}
    assert not summarise([run("ours", 0.5), run("bare", 0.2)])["within_target"]["cpu_ms_per_request"]
    assert not summarise([run("ours", 0.32), run("bare", 0.2)])["within_target"]["ratio"]


def test_no_deployment_is_used_twice() -> None:
    """A deployment runs one backup job at a time: every warm-up, repetition and the profile take fresh ones."""
    plan = Plan(deployments=50, repetitions=3, warm_up=5)
    assert plan.fleet_size(profile=False) == 2 * (5 + 3 * 50)
    assert plan.fleet_size(profile=True) == 2 * (5 + 3 * 50) + 50
    assert plan.requests_per_deployment == plan.polls + 5


def test_profiled_files_are_named_from_their_package() -> None:
    assert _short("/x/.venv/lib/python3.11/site-packages/aiohttp/client.py") == "aiohttp/client.py"
    assert _short("/usr/lib/python3.12/asyncio/events.py") == "asyncio/events.py"
    assert _short("/elsewhere/checkout/orchestrator/api/transport.py") == "orchestrator/api/transport.py"
    assert _short("~") == "~"


@pytest.mark.slow
def test_a_tiny_measurement_has_every_figure() -> None:
    """Both clients against a real simulator; every request served once (checked inside); the figures the fleet
    benchmark reads, the profile and the Markdown."""
    result = measure_client_cpu(Plan(deployments=3, polls=2, repetitions=2, warm_up=1), profile=True)
    for mode in ("ours", "bare"):
        figures = result["modes"][mode]
        assert figures["cpu_ms_per_request"] > 0 and figures["requests_per_repetition"] == 3 * 7
        assert len(figures["cpu_ms_per_request_each"]) == 2
    assert result["ratio"] > 0 and set(result["within_target"]) == {"cpu_ms_per_request", "ratio"}
    assert [run["mode"] for run in result["runs"]] == ["ours", "bare", "bare", "ours"]
    profile = result["profile"]
    assert profile["own"] and all(row["function"].startswith("orchestrator/") for row in profile["cumulative"])
    text = markdown(result)
    assert "| ours |" in text and "| bare |" in text and "Profile of one more repetition" in text
