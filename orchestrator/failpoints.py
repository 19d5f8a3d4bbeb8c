"""Named points where the crash tests kill the process, to prove a run survives dying anywhere.

`ORCHESTRATOR_FAILPOINT=NAME:N` makes the N-th pass through point NAME kill the process with
SIGKILL, as a power cut or the OOM killer would: no cleanup, no report, no flushing. Unset (always,
outside those tests), a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from functools import cache
from typing import Final

POINTS: Final = frozenset({"before_create", "after_create", "after_submitted", "while_following"})
_passes: Counter[str] = Counter()


@cache
def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("ORCHESTRATOR_FAILPOINT", "")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS or not count.isdigit():
        raise ValueError(f"ORCHESTRATOR_FAILPOINT={spec!r}: write NAME:N with NAME one of {sorted(POINTS)}")
    return name, int(count)


def failpoint(name: str) -> None:
    armed = _armed()
    if armed is None or armed[0] != name:
        return
    _passes[name] += 1
    if _passes[name] == armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
