"""The read-only check of a deployment before anything is submitted to it (`plan --check`, a snapshot's
preflight): sign in, read its version, check that every store asked for exists and that no DR job runs.

One task per deployment; whatever one deployment answers ends in its own `Preflight`, never another's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from orchestrator.api import ArcGISClient
from orchestrator.api.client import NO_DEFAULT_STORE
from orchestrator.dr import clean_version, default_store_of, dr_job_running, no_such_store, store_names
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import Deployment
from orchestrator.untrusted import shown


@dataclass(frozen=True, slots=True)
class Preflight:
    """One deployment's check: its version ("" when unread), and what stops a backup of it (none: ready)."""

    deployment: str
    version: str
    problems: tuple[str, ...] = ()
    error_class: str = ""  # of the first problem

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else f"{self.error_class}: {'; '.join(self.problems)}"


async def preflight(
    deployments: Sequence[Deployment], clients: Callable[[Deployment], ArcGISClient]
) -> list[Preflight]:
    """Every deployment checked, concurrently; in the order given."""
    results: dict[str, Preflight] = {}
    async with anyio.create_task_group() as checks:
        for deployment in deployments:
            checks.start_soon(_check, clients(deployment), results)
    return [results[d.name] for d in deployments]


async def _check(client: ArcGISClient, results: dict[str, Preflight]) -> None:
    name = client.deployment.name
    try:
        results[name] = await _checked(client)
    except TargetError as error:
        version = clean_version(client.version) or ""
        results[name] = Preflight(name, version, (error.message,), error.error_class.value)
    except Exception as error:  # an answer nothing foresaw: this deployment's problem, no one else's
        problem = f"its answers could not be read ({type(error).__name__})"
        results[name] = Preflight(name, "", (problem,), ErrorClass.INTERNAL.value)


async def _checked(client: ArcGISClient) -> Preflight:
    deployment = client.deployment
    version = await client.release()  # signs in
    entries = await client.store_list()
    stores = store_names(entries)
    problems: list[tuple[ErrorClass, str]] = []
    if not deployment.stores and default_store_of(entries) is None:
        problems.append((ErrorClass.CONFIGURATION, NO_DEFAULT_STORE))
    for store in deployment.stores:
        if store not in stores:
            problems.append((ErrorClass.CONFIGURATION, shown(no_such_store(store, stores))))
    status = await client.dr_status()
    if dr_job_running(status):
        running = shown(status.get("backupName") or "unnamed", 120)
        problems.append((ErrorClass.TRANSIENT, f"a DR job is running ({running})"))
    if not problems:
        return Preflight(deployment.name, version)
    return Preflight(deployment.name, version, tuple(p for _, p in problems), problems[0][0].value)
