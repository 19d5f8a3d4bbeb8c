"""What a run writes into the ledger while it goes: an observer of its events, plus the awaited intent to create.

Status changes are queued and committed in groups by one writer task, the commit (the disk sync) in a
worker thread, so the event loop never waits on the disk except for an intent to create, and then only
for the group commit in progress. Rows are written into the open transaction on the loop, where the GIL
is held anyway: a worker thread would wait for it at every row while the loop is busy.
"""

from __future__ import annotations

import time
from typing import Any, Final

import anyio

from orchestrator.events import Event, EventKind
from orchestrator.ledger import Ledger, target_row
from orchestrator.model import TargetState
from orchestrator.redact import redact

GATHER_S: Final = 0.05  # how long status changes may wait to share a commit (an intent never waits for it)
_STEP_EVENTS: Final = frozenset({EventKind.SUBMITTED, EventKind.FINISHED})


class LedgerWriter:
    """`run()` is the writer task: it commits whatever is queued, in one transaction per group;
    whoever awaits an intent is released once the group holding it is committed."""

    def __init__(self, ledger: Ledger, run_id: str) -> None:
        self._ledger = ledger
        self._run_id = run_id
        self._targets: dict[int, tuple[Any, ...]] = {}  # latest row per target: older ones are moot
        self._steps: list[tuple[Any, ...]] = []
        self._waiters: list[anyio.Event] = []
        self._queued = anyio.Event()
        self._intent_queued = anyio.Event()
        self._last_status: dict[int, str] = {}

    def on_event(self, event: Event) -> None:
        target = event.target
        if target is None:
            return
        if event.kind is EventKind.POLLED:
            if self._last_status.get(target.index) == target.server_status:
                return  # nothing new: a poll that changed nothing is not worth a write
            self._last_status[target.index] = target.server_status
            self._queue(target, "status", target.server_status)
        elif event.kind in _STEP_EVENTS:
            detail = target.job_id if event.kind is EventKind.SUBMITTED else target.outcome.value
            self._queue(target, event.kind.value, detail)

    async def intend_create(self, target: TargetState) -> None:
        """Record that `target` is about to be created; returns once that is on disk."""
        target.create_intended = True
        done = anyio.Event()
        self._waiters.append(done)
        self._queue(target, "create_intended", target.backup_name)
        self._intent_queued.set()
        await done.wait()

    def _queue(self, target: TargetState, kind: str, detail: str) -> None:
        self._targets[target.index] = target_row(self._run_id, target)
        self._steps.append((self._run_id, target.index, time.time(), kind, redact(detail)))
        self._queued.set()

    async def run(self) -> None:
        try:
            while True:
                await self._queued.wait()
                if not self._waiters:  # nobody waits: let status changes gather for a moment, fewer commits
                    with anyio.move_on_after(GATHER_S):
                        await self._intent_queued.wait()
                await self._flush_in_thread()
        finally:
            self._flush_now()  # cancelled (the run ended or was aborted): what is queued still lands, synchronously

    async def _flush_in_thread(self) -> None:
        targets, steps, waiters = self._take()
        if targets or steps:
            with anyio.CancelScope(shield=True):  # a batch taken off the queue must land, cancelled or not
                self._ledger.stage(targets, steps, durable=bool(waiters))
                await anyio.to_thread.run_sync(self._ledger.commit_staged)
        for waiter in waiters:
            waiter.set()

    def _flush_now(self) -> None:
        targets, steps, waiters = self._take()
        if targets or steps:
            self._ledger.stage(targets, steps, durable=True)
            self._ledger.commit_staged()
        for waiter in waiters:
            waiter.set()

    def _take(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[anyio.Event]]:
        targets, steps, waiters = list(self._targets.values()), self._steps, self._waiters
        self._targets, self._steps, self._waiters = {}, [], []
        self._queued, self._intent_queued = anyio.Event(), anyio.Event()
        return targets, steps, waiters
