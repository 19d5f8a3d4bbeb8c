"""The two processes of a measurement: the simulated fleet, and the contender run against it.

The simulator is `orchestrator simulate` in its own process (its CPU is counted apart), started on a
free loopback port, waited for (its "listening on" line, its banner's last line, one answer), read
through its `/_simulator/...` records, and always stopped (SIGINT, then SIGKILL), also on error.
A contender is waited for with `os.wait4`, whose resource usage is that process's own: user and
system CPU seconds and peak RSS. Secrets reach both only through environment variables.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

LISTENING: Final = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
READY: Final = "press Ctrl-C to stop"  # the banner's last line: the inventory is written by then
STARTUP_TIMEOUT_S: Final = 300.0
STOP_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 120.0
PAGE: Final = 20_000


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a child: ours without ORCHESTRATOR_* settings (defaults mean defaults), plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCHESTRATOR_")}
    return {**env, **extra}


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process from /proc (Linux), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
        return json.loads(response.read())


@dataclass(slots=True)
class Simulator:
    process: subprocess.Popen[str]
    base_url: str
    startup_s: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = get_json(f"{self.base_url}/_simulator/stats")
        stats["proc_cpu_seconds"] = process_cpu_s(self.pid)
        return stats

    def records(self, what: str) -> Iterator[dict[str, Any]]:
        """Every record of a kind (jobs, requests, creates, ...), fetched page by page."""
        offset = 0
        while True:
            page = get_json(f"{self.base_url}/_simulator/{what}?offset={offset}&limit={PAGE}")
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_for(lines: queue.Queue[str | None], pattern: re.Pattern[str], deadline: float) -> re.Match[str]:
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"the simulator did not print {pattern.pattern!r} in time") from None
        if line is None:
            raise RuntimeError(f"the simulator exited before printing {pattern.pattern!r}")
        if found := pattern.search(line):
            return found


@contextmanager
def running_simulator(command: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path) -> Iterator[Simulator]:
    """Start the simulator, yield it once it answers; stop it whatever happens."""
    started = time.perf_counter()
    with log.open("wb") as errors:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    pump.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        base_url = _wait_for(lines, LISTENING, deadline).group(1)
        startup_s = time.perf_counter() - started
        _wait_for(lines, re.compile(re.escape(READY)), deadline)
        simulator = Simulator(process, base_url, startup_s)
        simulator.stats()  # one answer: its SIGINT handler is surely in place (see bench_simulator.py)
        yield simulator
    finally:
        stop(process)
        pump.join(timeout=STOP_TIMEOUT_S)
        process.stdout.close()


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True, slots=True)
class Accounting:
    """What one contender process cost, from `os.wait4`."""

    started_at: float  # epoch, just before the process was started
    ended_at: float  # epoch, when it was reaped
    exit_code: int
    killed: bool  # past its hard limit: stopped by the harness
    user_s: float
    sys_s: float
    peak_rss_mib: float

    @property
    def wall_s(self) -> float:
        return self.ended_at - self.started_at

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def run_accounted(
    command: Sequence[str], env: Mapping[str, str], cwd: Path, stdout: Path, stderr: Path, hard_limit_s: float
) -> Accounting:
    """Run a contender to its end (killed past `hard_limit_s`), with its own CPU and peak RSS."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started_at = time.time()
        process = subprocess.Popen(list(command), env=dict(env), cwd=cwd, stdout=out, stderr=err)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)

    watchdog = threading.Timer(hard_limit_s, kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        kill()
        process.wait()
        raise
    finally:
        watchdog.cancel()
    ended_at = time.time()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return Accounting(
        started_at=started_at,
        ended_at=ended_at,
        exit_code=process.returncode,
        killed=killed.is_set(),
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
    )


def machine(**extra: Any) -> dict[str, Any]:
    """The machine a measurement ran on, taken before it (its load average is then the machine's other work,
    which skews every figure), with what the benchmark adds (`extra`: a library's version, the processor)."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **extra,
        "load_average_1m_before": round(os.getloadavg()[0], 2),
    }
