"""Per-deployment protection, as small state machines over injected time (`now` is passed in).

- `CircuitBreaker`: a deployment that keeps failing at the transport level (refused, reset, timed out)
  is not hammered: after `threshold` failures in a row, requests to it fail at once as `unreachable`
  for `cooldown` seconds; then one request may try again (half-open), and one answer closes it.
- `Pacer`: the spacing between requests to one deployment. It doubles (and honours Retry-After) when
  the deployment says 429 or 503, and halves with every plain answer, down to none at all.
- `last_word`: what a request (or a create) that failed until its retries ran out tells of its deployment:
  `unreachable` only when no attempt reached it at all, else the error as it came.

And fleet-wide, `RequestSlots`: the run's cap on requests in flight, where following a job goes first.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import anyio

from orchestrator.backoff import MAX_RETRY_AFTER
from orchestrator.errors import ErrorClass, TargetError

MAX_GAP_S: Final = 30.0  # the widest spacing a throttled deployment gets between two requests
MIN_GAP_S: Final = 0.05  # below this, the spacing falls to none: the deployment has recovered


@dataclass(slots=True)
class CircuitBreaker:
    threshold: int
    cooldown: float
    failures: int = 0  # transport failures in a row
    open_until: float = 0.0

    def open_for(self, now: float) -> float:
        """Seconds the circuit stays open (0: a request may go)."""
        if self.failures < self.threshold:
            return 0.0
        return max(0.0, self.open_until - now)

    def transport_failed(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = now + self.cooldown  # also re-opens at once after a failed half-open try

    def answered(self) -> None:
        """Any HTTP answer, even an error: the deployment is reachable."""
        self.failures, self.open_until = 0, 0.0


@dataclass(slots=True)
class Pacer:
    gap: float = 0.0  # seconds between two requests to this deployment
    not_before: float = 0.0  # no request before this moment

    def wait(self, now: float) -> float:
        return max(0.0, self.not_before - now)

    def sent(self, now: float) -> None:
        self.not_before = max(self.not_before, now + self.gap)

    def throttled(self, now: float, retry_after: float | None) -> None:
        self.gap = min(MAX_GAP_S, max(MIN_GAP_S, self.gap * 2))
        wanted = min(retry_after or 0.0, MAX_RETRY_AFTER)  # a server asking for a day is not waited a day
        self.not_before = max(self.not_before, now + max(self.gap, wanted))

    def answered(self) -> None:
        half = self.gap / 2
        self.gap = half if half >= MIN_GAP_S else 0.0


def reached(error: TargetError) -> bool:
    """Whether the attempt that failed with `error` reached the deployment. Pure.

    Not reached: a connection never made (refused, no such host, no connection within the connect timeout)
    and a request its open circuit kept off the network: both are `unreachable` as they happen
    (`api.transport`). Everything else reached it: any HTTP answer, even a proxy's 502 or 503, and a
    connection accepted then lost or left silent."""
    return error.error_class is not ErrorClass.UNREACHABLE


def last_word(error: TargetError, reached_once: bool) -> TargetError:
    """The error a request or a create ends with once its retries are spent, `error` being the last attempt's
    and `reached_once` whether any attempt of it reached the deployment. Pure.

    `unreachable` only when nothing reached the deployment for the whole retry budget (so a stopped server
    or a wrong address reads as such, not as "will fix itself"); a deployment that answered anything in
    that time, and then refused a connection, was up moments ago: its failure stays `transient`."""
    if error.error_class is not ErrorClass.UNREACHABLE or not reached_once:
        return error
    kind = type(error)  # a failed sign-in stays one: the request behind it was never sent
    return kind(
        ErrorClass.TRANSIENT, error.message, retry_after=error.retry_after, ambiguous=error.ambiguous, code=error.code
    )


class RequestSlots:
    """At most `total` requests in flight, fleet-wide; waiters served first come, first served, except
    that urgent ones (following a job: polls, backups lists) go before the rest.

    Why: at fleet scale the request queue is thousands deep with sign-ins and creates; a poll behind
    them sees its job's end seconds late. The fan-out's requests are many and each waits a little longer
    instead, which costs the run almost nothing.

    `async with slots.slot(urgent=...)` holds one. Taken on every request, so it is plain code, not a
    generator: a free slot is taken at once (a cancellation point, not a scheduling one: the request
    that follows waits on the network anyway), and the two context managers are made once.
    """

    def __init__(self, total: int) -> None:
        self._free = total
        self._urgent: deque[anyio.Event] = deque()
        self._normal: deque[anyio.Event] = deque()
        self._slots = (_Slot(self, urgent=False), _Slot(self, urgent=True))

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._normal)

    @property
    def free(self) -> int:
        """Slots no request holds and none is waiting for."""
        return self._free

    def slot(self, *, urgent: bool = False) -> _Slot:
        return self._slots[urgent]

    async def acquire(self, urgent: bool) -> None:
        """Take a slot, waiting in line if none is free; `release` gives it back (`slot` pairs the two)."""
        if self._free > 0 and not self._urgent and not self._normal:
            self._free -= 1
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException:  # cancelled as it took the slot: given straight back
                self.release()
                raise
            return
        handed = anyio.Event()
        queue = self._urgent if urgent else self._normal
        queue.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():  # a slot was handed over as this waiter was cancelled: pass it on
                self.release()
            else:
                queue.remove(handed)
            raise

    def release(self) -> None:
        """Hand the slot straight to the next waiter (urgent first), or put it back."""
        if self._urgent:
            self._urgent.popleft().set()
        elif self._normal:
            self._normal.popleft().set()
        else:
            self._free += 1


class _Slot:
    """`RequestSlots.slot`'s context manager: one for urgent requests, one for the rest, shared by all."""

    __slots__ = ("_slots", "_urgent")

    def __init__(self, slots: RequestSlots, *, urgent: bool) -> None:
        self._slots = slots
        self._urgent = urgent

    async def __aenter__(self) -> None:
        await self._slots.acquire(self._urgent)

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.release()
