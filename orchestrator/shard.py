"""`--shard K/N`: split one fleet among N processes (a Kubernetes Indexed Job, N hosts), each taking shard K.

A deployment's shard is a stable hash of its name, the same across runs, machines and Python versions (never
`hash()`, which is salted per process): all the stores of a deployment stay in one shard. `--shard /N` takes K
from JOB_COMPLETION_INDEX, which Kubernetes sets in each pod of an Indexed Job. Pure but for that variable.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

INDEX_VARIABLE: Final = "JOB_COMPLETION_INDEX"
_FORM: Final = re.compile(r"\s*(\d*)\s*/\s*(\d+)\s*")


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) of a deployment named `name`: the first 8 bytes of its SHA-256, modulo `count`."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % count


def parse_shard(text: str, environ: Mapping[str, str]) -> Shard:
    """`K/N`, or `/N` with K from JOB_COMPLETION_INDEX in `environ`. `ValueError` naming the fix otherwise."""
    match = _FORM.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r}: write K/N, shard K (0 to N-1) of N (e.g. 0/4), or /N to take K from "
                         f"{INDEX_VARIABLE} (Kubernetes Indexed Jobs)")  # fmt: skip
    index_text, count = match.group(1), int(match.group(2))
    if count < 1:
        raise ValueError(f"{text!r}: N is the number of shards, at least 1")
    if not index_text:
        index_text = environ.get(INDEX_VARIABLE, "").strip()
        if not index_text.isdigit():
            found = "is not set" if INDEX_VARIABLE not in environ else f"is {environ[INDEX_VARIABLE]!r}, not a number"
            raise ValueError(f"{text!r}: {INDEX_VARIABLE} {found}; run it as an Indexed Job "
                             f"(completionMode: Indexed, completions: {count}) or write K/{count}")  # fmt: skip
    index = int(index_text)
    if index >= count:
        raise ValueError(f"{text!r} -> shard {index} of {count}: K runs from 0 to {count - 1}"
                         f"{f' (completions: {count} in the Indexed Job)' if not match.group(1) else ''}")  # fmt: skip
    return Shard(index, count)


def in_shard(deployments: Iterable[N], shard: Shard) -> list[N]:
    """The deployments of `shard`, in their order."""
    return [d for d in deployments if shard.holds(d.name)]


def empty_shard_warning(shard: Shard, selected: int) -> str:
    return (f"shard {shard} has no deployment (of the {selected} selected): its report says so, with no target, "
            "so that `report merge` finds every shard")  # fmt: skip
