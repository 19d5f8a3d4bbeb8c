"""Named points where the crash tests stop the process, to prove a run survives dying (or Ctrl-C) anywhere.

`ORCHESTRATOR_FAILPOINT=NAME:N` makes the N-th pass through point NAME kill the process with SIGKILL,
as a power cut or the OOM killer would: no cleanup, no report, no flushing. NAME `any` counts the passes
through every point, so a seeded draw of N stands for a moment nobody chose. `NAME:N:sigint` sends the
process a SIGINT there instead, as an operator's Ctrl-C at that very moment. Unset (always, outside those
tests), a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from functools import cache
from typing import Final

POINTS: Final = frozenset({"before_create", "after_create", "after_submitted", "while_following"})
ANY: Final = "any"
_SIGNALS: Final = {"kill": signal.SIGKILL, "sigint": signal.SIGINT}
_passes: Counter[str] = Counter()


@cache
def _armed() -> tuple[str, int, signal.Signals] | None:
    spec = os.environ.get("ORCHESTRATOR_FAILPOINT", "")
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    count, _, action = rest.partition(":")
    action = action or "kill"
    if name not in POINTS | {ANY} or not count.isdigit() or action not in _SIGNALS:
        raise ValueError(
            f"ORCHESTRATOR_FAILPOINT={spec!r}: write NAME:N or NAME:N:sigint with NAME one of {sorted(POINTS)} or {ANY}"
        )
    return name, int(count), _SIGNALS[action]


def failpoint(name: str) -> None:
    armed = _armed()
    if armed is None or armed[0] not in (name, ANY):
        return
    _passes[armed[0]] += 1
    if _passes[armed[0]] == armed[1]:
        os.kill(os.getpid(), armed[2])
