"""The audit's controls, as pure functions: what a store's backups list (`dr.read_backups`) shows at a
moment (`store_facts`), and a target judged against its policy (`judge`).

A good backup is one the server lists as `completed`. What cannot be true is not believed: a value that is
not a plausible time is absent (`dr.read_backups`), a backup said to end in the future is left out
(`believable`), so a broken answer can fail a control but never pass one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from orchestrator.audit.policy import PolicyValues
from orchestrator.dr import CLOCK_SKEW_S, Backup, same_release
from orchestrator.errors import TargetError
from orchestrator.model import Deployment
from orchestrator.untrusted import shown

DAY: Final = 86_400.0


class Control(StrEnum):
    RECENT = "recent"
    RELEASE = "release"
    RETENTION = "retention"
    DEPTH = "depth"
    OFFSITE = "offsite"


class Verdict(StrEnum):
    COMPLIANT = "compliant"
    VIOLATION = "violation"
    UNKNOWN = "unknown"  # the audit could not read it


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What one store's list shows at the moment of the audit."""

    last_good: Backup | None  # the newest good backup
    newest: Backup | None  # the newest of any status: a failed one says why the good one is old
    good_backups: int  # good and not expired
    days_covered: int  # of the last `window_days` UTC days, those with a good backup


def believable(backups: list[Backup], now: float) -> list[Backup]:
    """The entries that can be true at `now`: one said to end later than the server's clock may be from ours
    (`dr.CLOCK_SKEW_S`) is not believed, or it would pass `recent` and hide the real newest backup. Pure."""
    latest = now + CLOCK_SKEW_S
    return [b for b in backups if (b.at is None or b.at <= latest) and (b.started_at or 0.0) <= latest]


def store_facts(backups: list[Backup], now: float, window_days: int) -> StoreFacts:
    backups = believable(backups, now)
    good = [b for b in backups if b.good]
    dated = [b for b in backups if b.at is not None]
    today = math.floor(now / DAY)
    days = {math.floor(b.completed_at / DAY) for b in good if b.completed_at is not None}
    return StoreFacts(
        last_good=max(good, key=lambda b: b.completed_at or 0.0, default=None),
        newest=max(dated, key=lambda b: b.at or 0.0, default=None),
        good_backups=sum(1 for b in good if not b.expired(now)),
        days_covered=sum(1 for day in days if today - window_days < day <= today),
    )


def age_hours(backup: Backup | None, now: float) -> float | None:
    """How long ago it completed, in hours (never below 0: a server clock ahead of ours is not the future)."""
    if backup is None or backup.completed_at is None:
        return None
    return max(0.0, (now - backup.completed_at) / 3600)


@dataclass(frozen=True, slots=True)
class Violation:
    control: Control
    reason: str


def judge(
    facts: StoreFacts, *, release: str, policy: PolicyValues, now: float, offsite: Offsite | None = None
) -> list[Violation]:
    """Every control the target fails, each with a reason a person understands. `offsite`: the evidence
    from the deployment's other stores, where the policy asks for it. Pure."""
    found: list[Violation] = []
    last = facts.last_good
    age = age_hours(last, now)
    if last is None or age is None:
        newest = facts.newest
        seen = f" (newest: {newest.name}, {newest.status or 'no status'})" if newest is not None else ""
        found.append(Violation(Control.RECENT, f"no good backup in this store{seen}"))
    elif age > policy.max_age_hours:
        found.append(
            Violation(Control.RECENT, f"newest good backup is {age:.1f} h old (policy: {policy.max_age_hours:g} h)")
        )
    if last is not None and policy.require_same_release and not same_release(last.release, release):
        found.append(
            Violation(
                Control.RELEASE,
                f"newest good backup is release {last.release or '(none)'}, the deployment runs {release}: "
                "it cannot be restored into it",
            )
        )
    if last is not None and last.completed_at is not None and last.retention_until is not None:
        kept = (last.retention_until - last.completed_at) / DAY
        if kept < policy.min_retention_days:
            found.append(
                Violation(
                    Control.RETENTION,
                    f"newest good backup is kept {max(kept, 0.0):.1f} days after it completed "
                    f"(policy: at least {policy.min_retention_days:g})",
                )
            )
    if facts.good_backups < policy.min_backups:
        found.append(
            Violation(
                Control.DEPTH, f"{facts.good_backups} unexpired good backups (policy: at least {policy.min_backups})"
            )
        )
    if offsite is not None and not offsite.recent_elsewhere:
        where = f"a store other than the default store {offsite.default_store!r}"
        none = "" if offsite.other_stores else " (the deployment has no other store)"
        found.append(
            Violation(Control.OFFSITE, f"no good backup younger than {policy.max_age_hours:g} h in {where}{none}")
        )
    return found


@dataclass(frozen=True, slots=True)
class Offsite:
    """What a deployment's stores other than its default one hold, for the `offsite` control."""

    default_store: str
    other_stores: tuple[str, ...]
    recent_elsewhere: bool  # a good backup younger than the policy's age in one of them


def offsite_evidence(
    default_store: str, lists: dict[str, list[Backup]], *, max_age_hours: float, now: float
) -> Offsite:
    """Whether any store but the default holds a good backup recent enough. Pure."""
    others = tuple(sorted(store for store in lists if store != default_store))
    recent = any(
        (age := age_hours(backup, now)) is not None and age <= max_age_hours and backup.good
        for store in others
        for backup in believable(lists[store], now)
    )
    return Offsite(default_store, others, recent)


@dataclass(frozen=True, slots=True)
class AuditTarget:
    """One target (deployment x store) as the audit found it: the compliance report's row, defined once."""

    deployment: Deployment
    store: str  # as resolved; the inventory's word for the default store until it is
    verdict: Verdict
    audited_at: float
    violations: tuple[Violation, ...] = ()
    error_class: str = ""
    error: str = ""
    current_release: str = ""
    facts: StoreFacts | None = None

    @property
    def age_hours(self) -> float | None:
        return age_hours(self.facts.last_good if self.facts else None, self.audited_at)


def audited(
    deployment: Deployment,
    store: str,
    facts: StoreFacts,
    violations: list[Violation],
    *,
    release: str,
    now: float,
    undecided: TargetError | None = None,
) -> AuditTarget:
    """A target that was read: in violation of what it fails; else compliant, unless a control could not be
    judged (`undecided`, then `unknown` with why); the why is said in either case."""
    verdict = Verdict.VIOLATION if violations else Verdict.UNKNOWN if undecided else Verdict.COMPLIANT
    error_class, error = (undecided.error_class.value, undecided.message) if undecided else ("", "")
    return AuditTarget(deployment, store, verdict, now, tuple(violations), error_class, error, release, facts)


def unknown(
    deployment: Deployment, store: str, error_class: str, error: str, *, now: float, release: str = ""
) -> AuditTarget:
    return AuditTarget(deployment, store, Verdict.UNKNOWN, now, (), error_class, shown(error), release)
