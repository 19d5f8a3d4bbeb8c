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
    Backup,
    audited,
    judge,
    offsite_evidence,
    read_backups,
    store_facts,
    unknown,
)
from orchestrator.audit.policy import Policy, PolicyValues
from orchestrator.dr import clean_version, default_store_of
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import DEFAULT_STORE, Deployment
from orchestrator.untrusted import shown

Found = dict[tuple[str, str], AuditTarget]  # by (deployment, the inventory's store: "" for the default)
INTERRUPTED: Final = "interrupted"


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
    raw_version = await client.detect_version()  # signs in
    release = clean_version(raw_version)
    if release is None:
        raise TargetError(ErrorClass.PERMANENT, f"the server's version {shown(raw_version, 40)!r} is not a version")
    known_stores: list[str] | None = None
    default: str | None = None
    if DEFAULT_STORE in wanted or policy.require_offsite:
        entries = await client.store_list()
        known_stores = [str(s["name"]) for s in entries if isinstance(s.get("name"), str)]
        default = default_store_of(entries)
    resolved: dict[str, str | None] = {store: store or default for store in wanted}
    to_read = {s for s in resolved.values() if s is not None}
    if policy.require_offsite and known_stores is not None:
        to_read |= set(known_stores)
    lists: dict[str, list[Backup]] = {}
    errors: dict[str, TargetError] = {}
    for name in sorted(to_read):
        if known_stores is not None and name not in known_stores:
            has = ", ".join(sorted(known_stores)) or "none"
            errors[name] = TargetError(ErrorClass.CONFIGURATION, f"no store {name!r} on the deployment (has: {has})")
            continue
        try:
            lists[name] = read_backups(await client.backups(name))
        except TargetError as error:
            errors[name] = error
    offsite = None
    if policy.require_offsite:
        if default is None:  # offsite of what? not a pass
            raise TargetError(ErrorClass.CONFIGURATION, f"offsite: {NO_DEFAULT_STORE}")
        offsite = offsite_evidence(default, lists, max_age_hours=policy.max_age_hours, now=now)
    targets = []
    for asked, store in resolved.items():
        if store is None:
            targets.append(unknown(deployment, asked, ErrorClass.CONFIGURATION.value, NO_DEFAULT_STORE, now=now,
                                   release=release))  # fmt: skip
            continue
        if store in errors:
            refused = errors[store]
            targets.append(unknown(deployment, store, refused.error_class.value, refused.message, now=now,
                                   release=release))  # fmt: skip
            continue
        unreadable = sorted(s for s in errors if s != default)
        if offsite is not None and not offsite.recent_elsewhere and unreadable:
            reason = f"offsite: cannot read store {unreadable[0]!r}: {errors[unreadable[0]].message}"
            targets.append(unknown(deployment, store, errors[unreadable[0]].error_class.value, reason, now=now,
                                   release=release))  # fmt: skip
            continue
        facts = store_facts(lists[store], now, policy.window_days)
        violations = judge(facts, release=release, policy=policy, now=now, offsite=offsite)
        targets.append(audited(deployment, store, facts, violations, release=release, now=now))
    return targets
