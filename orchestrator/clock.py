"""Injectable time.

Everything that waits or stamps a time takes a `Clock`, so tests can replace hours of backoff and
job runtime with a `ManualClock` that only moves when told to.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a way to wait on that clock."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_unless(self, event: anyio.Event, seconds: float | None) -> None:
        """Wait `seconds` on this clock (None: for ever), or less: until `event` is set."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    async def sleep_unless(self, event: anyio.Event, seconds: float | None) -> None:
        # One cancel scope, no task: the poller waits like this between every two rounds of polls.
        with anyio.move_on_after(math.inf if seconds is None else max(0.0, seconds)):
            await event.wait()


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

    async def sleep_unless(self, event: anyio.Event, seconds: float | None) -> None:
        await sleep_unless_by_sleeping(self, event, seconds)


async def sleep_unless_by_sleeping(clock: Clock, event: anyio.Event, seconds: float | None) -> None:
    """`Clock.sleep_unless` for a clock that only knows how to sleep: its sleep raced against the event."""
    async with anyio.create_task_group() as race:

        async def sleep_then_stop() -> None:
            assert seconds is not None
            await clock.sleep(seconds)
            race.cancel_scope.cancel()

        async def set_then_stop() -> None:
            await event.wait()
            race.cancel_scope.cancel()

        if seconds is not None:
            race.start_soon(sleep_then_stop)
        race.start_soon(set_then_stop)
