"""What a run remembers of each deployment from earlier runs, so that a nightly run need not ask: its version
(which paths to use) and its default store. Pure functions over plain values.

A deployment's memory is what the latest finished run over the same inventory in which it succeeded read from
the server and then used for that success (`history.past_of` finds it), with when it was last *read* (a run that
only reused it passes the same time on). It is trusted for at most `--remember-for`, each deployment for its own
share of it (half to all, from a stable hash of its name), so a fleet's re-reads are spread over the nights. A
10.9 version is never remembered: its paths differ, so it is always read.

A memory is a guess that costs nothing, never a fact: a create the server refuses (`contradicts`: a store or a
path that is not there, in whatever words) has the worker read both again and carry on with what the server
says, so a stale memory costs a request or two, never a wrong outcome. What no answer contradicts is a default
store switched to another store that still exists: the backup goes to the remembered one (a good backup) until
the memory is due. A deployment at another URL than remembered, or with a backup of a resumed run maybe on the
server already (its job is followed by its version's paths, with no create first to contradict them), is read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from orchestrator.dr import clean_version, is_duplicate_name, is_legacy
from orchestrator.errors import ErrorClass, SignInFailed, TargetError
from orchestrator.shard import shard_of

_SPREAD: Final = 10_000  # the resolution of a deployment's share of `remember_for`
_CONTRADICTED_BY: Final = frozenset({ErrorClass.CONFIGURATION, ErrorClass.PERMANENT})


@dataclass(frozen=True, slots=True)
class Remembered:
    """A deployment's version and default store as an earlier run read them from the server (at `read_at`, from
    `url`) and then used for a backup that succeeded. `due`: too old to be trusted, read again (and compared)."""

    version: str
    default_store: str  # "" when no default store of it was backed up with success then
    read_at: float
    url: str
    due: bool = False


@dataclass(slots=True)
class Facts:
    """What one deployment's worker goes by: its version, default store ("" when none is asked for) and when they
    were read from the server; `remembered` while they come from an earlier run and no answer bore them out."""

    version: str
    default_store: str
    read_at: float
    remembered: bool = False


def worth_remembering(version: str, read_at: float | None) -> bool:
    """Whether a version read at `read_at` may be remembered: a version (not 10.9's), and a time it was read. Pure."""
    return read_at is not None and bool(clean_version(version)) and not is_legacy(version)


def age_limit(deployment: str, remember_for: float) -> float:
    """How long `deployment`'s memory is trusted: between half and all of `remember_for`, the same every run
    (a stable hash of its name, not `shard`'s: a shard's deployments still spread). Pure."""
    share = shard_of(f"remember:{deployment}", _SPREAD) / (_SPREAD - 1)
    return remember_for * (0.5 + 0.5 * share)


def recalled(
    memory: Remembered | None, deployment: str, url: str, remember_for: float, now: float
) -> Remembered | None:
    """The memory a run may go by: None when there is none or the deployment has moved (another URL); marked `due`
    once it is older than its age limit (with `remember_for` 0, always), or dated in the future (a clock set
    back: its age is unknown). Pure."""
    if memory is None or memory.url != url:
        return None
    age = now - memory.read_at
    return replace(memory, due=not 0 <= age < age_limit(deployment, remember_for))


def facts_of(memory: Remembered | None, *, needs_default_store: bool) -> Facts | None:
    """The facts a worker may take from memory without asking, or None (read them): none, due, or without the
    default store it needs, or not worth remembering (10.9). Pure."""
    if memory is None or memory.due or not worth_remembering(memory.version, memory.read_at):
        return None
    if needs_default_store and not memory.default_store:
        return None
    return Facts(memory.version, memory.default_store, memory.read_at, remembered=True)


def contradicts(error: TargetError) -> bool:
    """Whether a refusal may say that a remembered fact no longer holds: any refusal of the create as such
    (configuration or permanent), not only one that says a store or a path is not there in the words of the
    servers seen so far ("does not exist", "not found", a 404): another release may word it otherwise, and one
    read of the facts, made only on a refusal, is cheap. Never a refusal that says nothing of them: a sign-in, a
    duplicate name, a transient error, or one whose request may have been carried out. Pure."""
    if error.ambiguous or isinstance(error, SignInFailed) or error.error_class not in _CONTRADICTED_BY:
        return False
    return not is_duplicate_name(error)


def changed(before: Facts | Remembered, now: Facts, *, default_store_used: bool) -> str:
    """What the server says now that differs from what was remembered, as a target's note ("" for nothing):
    the default store (when the target backs it up), and the version. Pure."""
    differences = []
    if default_store_used and before.default_store and before.default_store != now.default_store:
        differences.append(f"default store {before.default_store!r}, now {now.default_store!r}")
    if before.version != now.version:
        differences.append(f"version {before.version}, now {now.version}")
    return "; ".join(differences)
