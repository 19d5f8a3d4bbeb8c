"""Injectable time: `sleep_unless` ends at the event or at the time, whichever comes first, on both clocks."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from orchestrator.clock import ManualClock, SystemClock

pytestmark = pytest.mark.anyio


async def test_the_system_clock_wakes_at_the_event_before_the_time() -> None:
    event = anyio.Event()
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(SystemClock().sleep_unless, event, 30.0)
        await anyio.sleep(0.01)
        event.set()
    assert time.monotonic() - started < 5.0  # not the 30 s


async def test_the_system_clock_wakes_at_the_time_without_the_event() -> None:
    started = time.monotonic()
    await SystemClock().sleep_unless(anyio.Event(), 0.02)
    assert time.monotonic() - started >= 0.015


async def test_the_manual_clock_wakes_at_the_event_or_once_advanced_far_enough() -> None:
    clock = ManualClock(start=0.0)
    woke: list[str] = []

    async def sleeper(name: str, event: anyio.Event, seconds: float | None) -> None:
        await clock.sleep_unless(event, seconds)
        woke.append(name)

    by_event, by_time = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "event", by_event, None)
        tg.start_soon(sleeper, "time", by_time, 10.0)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        clock.advance(5.0)
        by_event.set()
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert woke == ["event"]
        clock.advance(5.0)
    assert woke == ["event", "time"]
