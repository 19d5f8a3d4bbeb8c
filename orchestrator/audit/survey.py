"""The audit's reading of the fleet, read-only: per deployment, sign in, read its version, its stores where
the default store or the `offsite` control needs them, and each store's backups list once; then judge
each target (`controls`). Never creates, deletes, updates or validates anything.

One task per deployment; the run's request slots bound the requests in flight. Whatever one deployment
answers (an error, a malformed body, an exception) ends as that deployment's `unknown` targets, never
as another's outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import anyio

from orchestrator.api import ArcGISClient
from orchestrator.api.client import NO_DEFAULT_STORE, ApiContext
from orchestrator.audit.controls import (
    AuditTarget,
    Offsite,
    audited,
    judge,
    offsite_evidence,
    store_facts,
    unknown,
)
from orchestrator.audit.policy import Policy, PolicyValues
from orchestrator.dr import Backup, default_store_of, no_such_store, read_backups, store_names
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import DEFAULT_STORE, Deployment

Found = dict[tuple[str, str], AuditTarget]  # by (deployment, the inventory's store: "" for the default)
INTERRUPTED: Final = "interrupted"
MAX_STORES: Final = 16  # stores of one deployment read for `offsite`: each read may be retried for a minute


async def survey(
    deployments: Iterable[Deployment], policy: Policy, context: ApiContext, *, now: float, found: Found
) -> None:
    """Read and judge every target of `deployments` into `found` (filled as deployments finish, so a
    caller that cancels this keeps what was read)."""
    async with anyio.create_task_group() as readers:
        for deployment in deployments:
            client = ArcGISClient(deployment, context)
            readers.start_soon(_survey_deployment, client, policy.for_deployment(deployment), now, found)


async def _survey_deployment(client: ArcGISClient, policy: PolicyValues, now: float, found: Found) -> None:
    deployment = client.deployment
    wanted = deployment.stores or (DEFAULT_STORE,)
    try:
        targets = await _read_and_judge(client, wanted, policy, now)
    except TargetError as error:
        targets = [unknown(deployment, s, error.error_class.value, error.message, now=now) for s in wanted]
    except Exception as error:  # a malformed answer we did not foresee: this deployment's, no one else's
        reason = f"the audit could not read this deployment's answers ({type(error).__name__})"
        targets = [unknown(deployment, s, ErrorClass.INTERNAL.value, reason, now=now) for s in wanted]
    for store, target in zip(wanted, targets, strict=True):
        found[(deployment.name, store)] = target


async def _read_and_judge(
    client: ArcGISClient, wanted: tuple[str, ...], policy: PolicyValues, now: float
) -> list[AuditTarget]:
    deployment = client.deployment
    release = await client.release()  # signs in
    known_stores: list[str] | None = None
    default: str | None = None
    if DEFAULT_STORE in wanted or policy.require_offsite:
        entries = await client.store_list()
        known_stores, default = store_names(entries), default_store_of(entries)
    resolved: dict[str, str | None] = {store: store or default for store in wanted}
    to_read = {s for s in resolved.values() if s is not None}
    unread: dict[str, TargetError] = {}
    if policy.require_offsite and known_stores is not None:  # the others too, up to a bound a server cannot stretch
        to_read |= set(known_stores[:MAX_STORES])
        unread = {name: TargetError(ErrorClass.PERMANENT, f"not read: the deployment lists over {MAX_STORES} stores")
                  for name in known_stores[MAX_STORES:] if name not in to_read}  # fmt: skip
    lists: dict[str, list[Backup]] = {}
    errors: dict[str, TargetError] = {}
    for name in sorted(to_read):
        if known_stores is not None and name not in known_stores:
            errors[name] = TargetError(ErrorClass.CONFIGURATION, no_such_store(name, known_stores))
            continue
        try:
            lists[name] = read_backups(await client.backups(name))
        except TargetError as error:
            errors[name] = error
    offsite, undecided = judge_offsite(policy, default, known_stores or [], lists, {**unread, **errors}, now)
    targets = []
    for asked, store in resolved.items():
        if store is None:
            targets.append(unknown(deployment, asked, ErrorClass.CONFIGURATION.value, NO_DEFAULT_STORE, now=now,
                                   release=release))  # fmt: skip
        elif store in errors:
            refused = errors[store]
            targets.append(unknown(deployment, store, refused.error_class.value, refused.message, now=now,
                                   release=release))  # fmt: skip
        else:
            facts = store_facts(lists[store], now, policy.window_days)
            violations = judge(facts, release=release, policy=policy, now=now, offsite=offsite)
            targets.append(audited(deployment, store, facts, violations, release=release, now=now, undecided=undecided))
    return targets


def judge_offsite(
    policy: PolicyValues,
    default: str | None,
    stores: list[str],
    lists: dict[str, list[Backup]],
    errors: dict[str, TargetError],
    now: float,
) -> tuple[Offsite | None, TargetError | None]:
    """The `offsite` evidence where the policy asks for it, or why it cannot be judged: no default store
    to tell offsite from, or a store of the deployment that could not be read, while none read holds a
    recent good backup. Pure."""
    if not policy.require_offsite:
        return None, None
    if default is None:
        return None, TargetError(ErrorClass.CONFIGURATION, f"offsite: {NO_DEFAULT_STORE}")
    evidence = offsite_evidence(default, lists, max_age_hours=policy.max_age_hours, now=now)
    unreadable = sorted(s for s in errors if s != default and s in stores)
    if evidence.recent_elsewhere or not unreadable:
        return evidence, None
    first = errors[unreadable[0]]
    return None, TargetError(first.error_class, f"offsite: cannot read store {unreadable[0]!r}: {first.message}")
