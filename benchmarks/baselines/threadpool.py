"""Baseline 2: the same per-target sequence on a thread pool of 20 workers.

What it models: the next step users take when one deployment at a time is too slow: the sequential
script's body handed to `concurrent.futures.ThreadPoolExecutor`. 20 workers is the default of popular
thread-pool automation frameworks (Nornir's threaded runner, for one; Ansible's `forks` default is only 5),
and `--workers` changes it. One task per deployment (its stores one after another, since a deployment runs
one DR job at a time); each worker thread keeps its own `requests.Session` (sessions are not thread-safe),
so connections are kept alive as any script would.

Why it is fair: each worker does exactly what the sequential baseline does, with the same fixed poll
interval (scaled like the job durations), the same checks and retries, and a deadline per job only so that
a bench cannot hang. What it lacks, and the orchestrator has, is what the benchmark measures: a worker
is held for the whole life of its jobs, so at most `--workers` jobs run at once and each thread sleeps
through its fixed interval.

Run: `python -m benchmarks.baselines.threadpool --targets FILE --out FILE [--workers N]
[--poll-interval S] [--job-deadline S] [--time-cap S]`, secrets in the environment variables the targets
file names.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from .common import (
    RequestCounts,
    RunOptions,
    RunResult,
    Secrets,
    TargetsFile,
    Work,
    back_up_deployment,
    build_parser,
    group_by_deployment,
    new_records,
    new_session,
    run_cli,
)

CONTENDER = "threadpool"
DEFAULT_WORKERS = 20


class _ThreadSessions:
    """One `requests.Session` per worker thread, all closed at the end."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[requests.Session] = []

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = new_session()
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()


def run(
    targets: TargetsFile,
    secrets: Secrets,
    options: RunOptions,
    started_at: float | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
) -> RunResult:
    """Back up every target, one task per deployment on `workers` threads."""
    result = RunResult(new_records(targets), RequestCounts(), started_at if started_at is not None else time.time())
    sessions = _ThreadSessions()

    def task(work: Work) -> None:
        back_up_deployment(sessions.get(), work, secrets, result.counts, options)

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backup") as pool:
            futures = [pool.submit(task, work) for work in group_by_deployment(targets.targets, result.records)]
            for future in futures:
                future.result()  # back_up_deployment never raises; this only surfaces a bug
    finally:
        sessions.close()
    result.ended_at = time.time()
    return result


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("needs at least one worker")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        f"python -m benchmarks.baselines.{CONTENDER}",
        "Back up every target on a thread pool, each worker polling its job at a fixed interval "
        "(a benchmark baseline).",
    )
    parser.add_argument(
        "--workers", type=_workers, default=DEFAULT_WORKERS, metavar="N", help=f"threads (default {DEFAULT_WORKERS})"
    )
    args = parser.parse_args(argv)
    return run_cli(CONTENDER, args.workers, args, lambda t, s, o, at: run(t, s, o, at, workers=args.workers))


if __name__ == "__main__":
    sys.exit(main())
