"""Injectable time.

Everything that waits or stamps a time takes a `Clock`, so tests can replace hours of backoff and
job runtime with a `ManualClock` that only moves when told to.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a way to wait on that clock."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only through `advance`; `sleep` waits until it has moved far enough."""

    def __init__(self, start: float = 1_795_741_200.0) -> None:  # 2026-11-27T01:00:00Z
        self._now = start
        self._changed: anyio.Event | None = None  # created by the first sleeper, inside the event loop

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def sleep(self, seconds: float) -> None:
        wake_at = self._now + max(0.0, seconds)
        while self._now < wake_at:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
