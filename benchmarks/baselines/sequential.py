"""Baseline 1: one deployment at a time, as Esri's admin CLI (`create-backup --wait`) is run today.

What it models: a loop over the fleet that signs in to a deployment, creates a backup on each of its
stores, waits for each job by polling the job resource at a fixed interval (10 s in Esri's CLI), and only
then moves on to the next deployment. Its total time is the sum of every job's duration plus the
detection lag of each.

Why it is fair: it speaks the same API as the orchestrator, over keep-alive `requests` connections, with
the envelope check, one re-sign-in on 498/499 and a few retries of transient errors a careful script has.
The benchmark scales the poll interval by the same factor as the simulated job durations, so the lag a
fixed 10 s poll adds to a real job keeps its real proportion. Esri's CLI has no deadline; this one takes
`--job-deadline` (default 7,500 s, past the server's own 2 h job timeout) only so that a bench cannot hang.

Run: `python -m benchmarks.baselines.sequential --targets FILE --out FILE [--poll-interval S]
[--job-deadline S] [--time-cap S]`, with the secrets in the environment variables the targets file names.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from .common import (
    RequestCounts,
    RunOptions,
    RunResult,
    Secrets,
    TargetsFile,
    back_up_deployment,
    build_parser,
    group_by_deployment,
    new_records,
    new_session,
    run_cli,
)

CONTENDER = "sequential"


def run(targets: TargetsFile, secrets: Secrets, options: RunOptions, started_at: float | None = None) -> RunResult:
    """Back up every target, one deployment after another, on one `requests.Session`."""
    result = RunResult(new_records(targets), RequestCounts(), started_at if started_at is not None else time.time())
    with new_session() as session:
        for work in group_by_deployment(targets.targets, result.records):
            back_up_deployment(session, work, secrets, result.counts, options)
    result.ended_at = time.time()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        f"python -m benchmarks.baselines.{CONTENDER}",
        "Back up every target one deployment at a time, polling each job at a fixed interval (a benchmark baseline).",
    )
    args = parser.parse_args(argv)
    return run_cli(CONTENDER, 1, args, run)


if __name__ == "__main__":
    sys.exit(main())
