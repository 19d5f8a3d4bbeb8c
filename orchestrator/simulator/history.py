"""The scheduled backups a deployment already has when the fleet starts: its history.

Drawn once, when the deployment is created, from the deployment's own seeded stream
(`random.Random(f"{seed}:{name}:history")`), so the same seed gives the same history and one deployment's
overrides never shift another's. What is drawn, and how often:

- per deployment, always in this order: the schedule's minute of the period, `stale`, `upgraded`,
  `other_stores`;
- per backup, always the same five draws: the scheduler's delay, the duration, `failed`, the point it
  failed at, the retention kind.

A scheduled backup is named as Esri's scheduler names them (`schedule1-2026-11-30-22-00-46`: the schedule
number is the store's place in the deployment's stores, the time its start, UTC), and listed with
`scheduleType: "SCHEDULED"`; a failed one with `status: "failed"` and its `completeTime` the moment it
failed. One whose `retentionDate` has passed by the fleet's start is not kept: the retention cleaner
would have removed it already. Only backups complete by then are kept: none is running.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from random import Random
from typing import Final

from orchestrator.simulator.config import DeploymentPlan, full_version, previous_version
from orchestrator.simulator.jobs import NEVER_EXPIRES, Backup

DAY: Final = 86_400.0
HOUR: Final = 3_600.0
SCHEDULER_DELAY_S: Final = 90.0  # a scheduled backup starts up to this long after its slot
STORE_OFFSET_S: Final = HOUR  # each further store's schedule runs this long after the previous one's


Listed = dict[str, dict[str, Backup]]
"""Backups by store, then by name, oldest first: a deployment's store lists."""


@dataclass(frozen=True, slots=True)
class SeededHistory:
    """The facts behind one deployment's seeded backups (the backups themselves go to its store lists)."""

    registered_at: str  # the full release its stores were registered at (`versionCreated`)
    upgraded_from: str | None  # the release its history was taken at, when it was upgraded since; else None
    stale: bool  # its history stopped `stale_days` before the fleet started
    stores: tuple[str, ...]  # the stores that have history (the default one, or all)
    earliest_expiry: float  # the first moment the retention cleaner has work (inf: never)
    seeded: int  # how many backups were seeded (the retention cleaner and deletes may remove some later)


def seed_history(
    plan: DeploymentPlan, seed: int, fleet_started_at: float, release_suffix: str = ""
) -> tuple[SeededHistory, Listed]:
    """The history of one deployment as it stands at `fleet_started_at`: its facts and its store lists."""
    settings = plan.history
    backups: Listed = {store: {} for store in plan.stores}
    if settings.days <= 0:
        return SeededHistory(full_version(plan.version), None, False, (), math.inf, 0), backups
    rng = Random(f"{seed}:{plan.name}:history")
    period = settings.every_hours * HOUR
    phase = rng.randrange(max(1, int(period // 60))) * 60.0  # the schedule runs on a whole minute
    stale = rng.random() < settings.stale
    previous = previous_version(plan.version)
    upgraded_from = previous if rng.random() < settings.upgraded and previous is not None else None
    all_stores = rng.random() < settings.other_stores
    release = full_version(upgraded_from or plan.version)
    stores = tuple(s for s in plan.stores if all_stores or s == plan.default_store)

    history_from = fleet_started_at - settings.days * DAY
    history_until = fleet_started_at - (settings.stale_days * DAY if stale else 0.0)
    earliest_expiry = math.inf
    for number, store in enumerate(plan.stores, start=1):
        if store not in stores:
            continue
        offset = phase + ((number - 1) * min(STORE_OFFSET_S, period / len(plan.stores)))
        listed = backups[store]
        for slot in _slots(history_from, history_until, period, offset):
            started = slot + rng.uniform(0.0, SCHEDULER_DELAY_S)
            duration = plan.job_duration.sample(rng)
            failed = rng.random() < settings.failed
            fail_point = rng.uniform(0.2, 0.9)
            kind = rng.random()
            ended = started + duration * (fail_point if failed else 1.0)
            if ended >= history_until:
                continue  # still running when the history stops: not history
            if kind < settings.no_retention:
                keep_days: float | None = None
            elif kind < settings.no_retention + settings.short_retention:
                keep_days = settings.short_retention_days
            else:
                keep_days = settings.retention_days
            retention_ms = NEVER_EXPIRES if keep_days is None else round((started + keep_days * DAY) * 1000)
            if keep_days is not None and retention_ms / 1000 <= fleet_started_at:
                continue  # the retention cleaner removed it before the fleet started
            name = f"schedule{number}-{time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime(started))}"
            listed[name] = Backup(
                name=name,
                store=store,
                release=release + release_suffix,
                description="",
                started_at=started,
                completed_at=ended,
                retention_ms=retention_ms,
                status="failed" if failed else "completed",
                schedule_type="SCHEDULED",
            )
            if keep_days is not None:
                earliest_expiry = min(earliest_expiry, retention_ms / 1000)
    seeded = SeededHistory(
        registered_at=release,
        upgraded_from=upgraded_from,
        stale=stale,
        stores=stores,
        earliest_expiry=earliest_expiry,
        seeded=sum(len(listed) for listed in backups.values()),
    )
    return seeded, backups


def _slots(start: float, until: float, period: float, offset: float) -> Iterator[float]:
    """The schedule's times in [start, until), oldest first: every `period` seconds, `offset` into each period."""
    slot = math.ceil((start - offset) / period) * period + offset
    while slot < until:
        yield slot
        slot += period
