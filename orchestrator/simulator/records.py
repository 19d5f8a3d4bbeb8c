"""What the simulator saw, kept for tests and benchmarks. Records hold no secret, only facts about them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """One request as the simulator saw it: filled in while it is answered, kept once it has been."""

    at: float  # simulator clock when the request arrived
    deployment: str
    method: str
    path: str  # path only: the query string may hold what should never be there
    endpoint: str  # routes.Endpoint value, or "unknown"
    token_source: str  # body, query, x-esri-authorization, authorization, or none
    secret_in_url: bool  # a token, password or passcode appeared in the URL
    status: int = 0  # HTTP status sent (0: no answer: reset or hang)
    error_code: int = 0  # code of the {"error": ...} envelope, 0 for none
    fault: str = ""  # injected fault, "" for none

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CreateRecord:
    at: float
    deployment: str
    store: str
    backup_name: str
    accepted: bool
    job_id: str
    error_code: int
    response_lost: bool  # accepted, but the connection was dropped before the answer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class InFlight:
    """Requests being handled right now, and the most there ever were, fleet-wide and per deployment."""

    now: int = 0
    peak: int = 0
    per_deployment: Counter[str] = field(default_factory=Counter)
    peak_per_deployment: int = 0

    def enter(self, deployment: str) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.per_deployment[deployment] += 1
        self.peak_per_deployment = max(self.peak_per_deployment, self.per_deployment[deployment])

    def leave(self, deployment: str) -> None:
        self.now -= 1
        self.per_deployment[deployment] -= 1
        if not self.per_deployment[deployment]:
            del self.per_deployment[deployment]


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals [start, end) open at one instant (a sweep over their edges)."""
    spans = [(start, end) for start, end in intervals if end > start]
    # At a tie a close (-1) sorts before an open (+1): back-to-back intervals do not overlap.
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak
