"""Which endpoint a path inside one deployment's web context names. Pure: segments in, route out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Endpoint(StrEnum):
    TOKEN = "token"
    ROOT = "root"
    DR = "dr"
    SETTINGS = "settings"
    SETTINGS_UPDATE = "settings_update"
    STATUS = "status"
    STORES = "stores"
    STORE = "store"
    STORE_VALIDATE = "store_validate"
    BACKUPS = "backups"
    CREATE = "create"
    BACKUP = "backup"
    BACKUP_UPDATE = "backup_update"
    BACKUP_DELETE = "backup_delete"
    JOBS = "jobs"
    JOB = "job"
    LEGACY_ROOT = "legacy_root"
    LEGACY_CREATE = "legacy_create"
    LEGACY_BACKUPS = "legacy_backups"
    LEGACY_BACKUP = "legacy_backup"
    LEGACY_DELETE = "legacy_delete"
    LEGACY_STATUS = "legacy_status"


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    post_only: bool
    since_10_9_1: bool
    store: str = ""
    backup: str = ""
    job: str = ""


_DR: Final = ("admin", "system", "disasterrecovery")
_STORE: Final = (*_DR, "stores", "{store}")
_LEGACY: Final = (*_DR, "backuprestore")

# (pattern, endpoint, POST-only operation, new in 10.9.1). Operations come before resources, so a
# backup literally named "create" cannot shadow the create operation (as on the real server).
_TABLE: Final[tuple[tuple[tuple[str, ...], Endpoint, bool, bool], ...]] = (
    (("sharing", "rest", "generateToken"), Endpoint.TOKEN, True, False),
    (("admin",), Endpoint.ROOT, False, False),
    (_DR, Endpoint.DR, False, False),
    ((*_DR, "settings"), Endpoint.SETTINGS, False, False),
    ((*_DR, "settings", "update"), Endpoint.SETTINGS_UPDATE, True, False),
    ((*_DR, "status"), Endpoint.STATUS, False, True),
    ((*_DR, "stores"), Endpoint.STORES, False, False),
    (_STORE, Endpoint.STORE, False, False),
    ((*_STORE, "validate"), Endpoint.STORE_VALIDATE, True, True),
    ((*_STORE, "backups"), Endpoint.BACKUPS, False, True),
    ((*_STORE, "backups", "create"), Endpoint.CREATE, True, True),
    ((*_STORE, "backups", "{backup}"), Endpoint.BACKUP, False, True),
    ((*_STORE, "backups", "{backup}", "update"), Endpoint.BACKUP_UPDATE, True, True),
    ((*_STORE, "backups", "{backup}", "delete"), Endpoint.BACKUP_DELETE, True, True),
    (("admin", "jobs"), Endpoint.JOBS, False, True),
    (("admin", "jobs", "{job}"), Endpoint.JOB, False, True),
    (_LEGACY, Endpoint.LEGACY_ROOT, False, False),
    ((*_LEGACY, "backup"), Endpoint.LEGACY_CREATE, True, False),
    ((*_LEGACY, "backups"), Endpoint.LEGACY_BACKUPS, False, False),
    ((*_LEGACY, "status"), Endpoint.LEGACY_STATUS, False, False),
    ((*_LEGACY, "backups", "{backup}"), Endpoint.LEGACY_BACKUP, False, False),
    ((*_LEGACY, "backups", "{backup}", "delete"), Endpoint.LEGACY_DELETE, True, False),
)

_BY_LENGTH: Final = defaultdict(list)
for _entry in _TABLE:
    _BY_LENGTH[len(_entry[0])].append(_entry)


def match(segments: tuple[str, ...]) -> Route | None:
    """The route for the path segments after the deployment's web context, or None."""
    for pattern, endpoint, post_only, since in _BY_LENGTH.get(len(segments), ()):
        captured: dict[str, str] = {}
        for want, got in zip(pattern, segments, strict=True):
            if want[0] == "{":
                if not got:
                    break
                captured[want[1:-1]] = got
            elif want != got:
                break
        else:
            return Route(endpoint, post_only, since, **captured)
    return None
