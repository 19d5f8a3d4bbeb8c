"""Paths inside a deployment's web context map to the right endpoint; operations win over names."""

from __future__ import annotations

import pytest

from orchestrator.simulator.routes import Endpoint, match

DR = ("admin", "system", "disasterrecovery")


@pytest.mark.parametrize(
    ("segments", "endpoint", "captured"),
    [
        (("sharing", "rest", "generateToken"), Endpoint.TOKEN, {}),
        (("admin",), Endpoint.ROOT, {}),
        ((*DR, "stores", "s1", "backups", "create"), Endpoint.CREATE, {"store": "s1"}),
        ((*DR, "stores", "s1", "backups", "b1"), Endpoint.BACKUP, {"store": "s1", "backup": "b1"}),
        (
            (*DR, "stores", "s1", "backups", "b1", "delete"),
            Endpoint.BACKUP_DELETE,
            {"store": "s1", "backup": "b1"},
        ),
        (("admin", "jobs", "j1"), Endpoint.JOB, {"job": "j1"}),
        ((*DR, "backuprestore", "backup"), Endpoint.LEGACY_CREATE, {}),
        ((*DR, "backuprestore", "backups", "b1", "delete"), Endpoint.LEGACY_DELETE, {"backup": "b1"}),
    ],
)
def test_routes(segments: tuple[str, ...], endpoint: Endpoint, captured: dict[str, str]) -> None:
    route = match(segments)
    assert route is not None and route.endpoint is endpoint
    assert {k: v for k, v in (("store", route.store), ("backup", route.backup), ("job", route.job)) if v} == captured


@pytest.mark.parametrize(
    "segments", [(), ("admin", "nothing"), (*DR, "stores", ""), (*DR, "stores", "s", "backups", "b", "x")]
)
def test_unknown_paths(segments: tuple[str, ...]) -> None:
    assert match(segments) is None


def test_operations_are_post_only_and_new_paths_are_marked() -> None:
    create = match((*DR, "stores", "s", "backups", "create"))
    backups = match((*DR, "stores", "s", "backups"))
    legacy = match((*DR, "backuprestore", "backups"))
    assert create is not None and create.post_only and create.since_10_9_1
    assert backups is not None and not backups.post_only and backups.since_10_9_1
    assert legacy is not None and not legacy.since_10_9_1
