"""Per-deployment protection: the circuit breaker leaves a deployment that keeps failing at the transport
level alone, and the pacer slows requests to one that says 429/503, then recovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web

from orchestrator.api import ArcGISClient
from orchestrator.clock import ManualClock
from orchestrator.errors import ErrorClass, SignInFailed, TargetError
from orchestrator.guard import MAX_GAP_S, MIN_GAP_S, CircuitBreaker, Pacer, RequestSlots, last_word, reached
from tests.conftest import PASSWORD, make_deployment
from tests.fakes import serving
from tests.test_api import Handler, SteppingClock, client_for


def test_the_breaker_opens_after_the_threshold_and_half_opens_after_the_cooldown() -> None:
    """Open after N failures in a row; one try after the cooldown; a failed try re-opens; an answer closes."""
    breaker = CircuitBreaker(threshold=3, cooldown=60.0)
    for _ in range(2):
        breaker.transport_failed(now=0.0)
    assert breaker.open_for(0.0) == 0.0  # two failures: still trying
    breaker.transport_failed(now=1.0)
    assert breaker.open_for(1.0) == 60.0 and breaker.open_for(31.0) == 30.0
    assert breaker.open_for(61.0) == 0.0  # half-open: one request may go
    breaker.transport_failed(now=61.0)
    assert breaker.open_for(61.0) == 60.0  # it failed: open again at once
    breaker.answered()
    assert breaker.open_for(61.0) == 0.0 and breaker.failures == 0


def test_the_pacer_backs_off_on_throttling_honours_retry_after_and_recovers() -> None:
    """429/503 double the spacing (at least Retry-After); plain answers halve it down to none."""
    pacer = Pacer()
    pacer.sent(now=0.0)
    assert pacer.wait(0.0) == 0.0  # an untroubled deployment: no spacing at all
    pacer.throttled(now=0.0, retry_after=7.0)
    assert pacer.wait(0.0) == 7.0 and pacer.gap == MIN_GAP_S
    for _ in range(20):
        pacer.throttled(now=0.0, retry_after=None)
    assert pacer.gap == MAX_GAP_S  # capped
    pacer.sent(now=100.0)
    assert pacer.wait(100.0) == MAX_GAP_S
    for _ in range(20):
        pacer.answered()
    assert pacer.gap == 0.0


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_only_a_connection_never_made_or_an_open_circuit_did_not_reach_the_deployment(error_class: ErrorClass) -> None:
    """`unreachable` attempts (refused, no such host, connect timeout, circuit open) did not reach it; any other
    failure did: an HTTP answer, even an ingress 503, or a connection accepted and then lost."""
    assert reached(TargetError(error_class, "x")) is (error_class is not ErrorClass.UNREACHABLE)


def test_the_last_word_is_unreachable_only_when_no_attempt_reached_the_deployment() -> None:
    """Nothing reached it for the whole budget: unreachable. Something did (it answered a 502, then refused):
    transient, with the same message, code, wait and kind (a failed sign-in stays one)."""
    refused = TargetError(ErrorClass.UNREACHABLE, "cannot connect: Connection refused", retry_after=4.0)
    assert last_word(refused, reached_once=False) is refused
    answered_before = last_word(refused, reached_once=True)
    assert answered_before.error_class is ErrorClass.TRANSIENT and answered_before.message == refused.message
    assert answered_before.retry_after == 4.0 and not answered_before.ambiguous
    sign_in = SignInFailed(ErrorClass.UNREACHABLE, "cannot connect: Connection refused", code=None)
    assert type(last_word(sign_in, reached_once=True)) is SignInFailed
    for error_class in ErrorClass:
        if error_class is not ErrorClass.UNREACHABLE:
            error = TargetError(error_class, "HTTP 502 Bad Gateway", code=502)
            assert last_word(error, reached_once=True) is error and last_word(error, reached_once=False) is error


@asynccontextmanager
async def _hanging_up_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server on 127.0.0.1 that accepts and hangs up at once; it counts the connections."""
    connections: list[int] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/ctx", connections
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_a_deployment_that_keeps_hanging_up_is_left_alone_then_tried_again() -> None:
    """After `breaker_threshold` hang-ups, requests fail as unreachable without connecting, until the cooldown."""
    clock = SteppingClock()
    async with (
        _hanging_up_server() as (url, connections),
        client_for(url, clock, retries=0, breaker_threshold=3, breaker_cooldown=60.0) as client,
    ):
        errors = []
        for _ in range(5):
            with pytest.raises(TargetError) as caught:
                await client.detect_version()
            errors.append(caught.value.error_class)
        assert len(connections) == 3  # the last two never reached the network
        assert errors == [ErrorClass.TRANSIENT] * 3 + [ErrorClass.UNREACHABLE] * 2
        assert "unreachable: 3 connection failures in a row" in caught.value.message
        await clock.sleep(60.0)
        with pytest.raises(TargetError):
            await client.detect_version()
        assert len(connections) == 4  # one try after the cooldown
        with pytest.raises(TargetError) as caught:
            await client.detect_version()
        assert caught.value.error_class is ErrorClass.UNREACHABLE and len(connections) == 4


def _throttled_once() -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A deployment that answers its first request 429 with Retry-After: 5, then every request its version."""
    answers = [web.Response(status=429, text="slow down", headers={"Retry-After": "5"})]

    async def handler(request: web.Request) -> web.StreamResponse:
        if answers:
            return answers.pop()
        return web.json_response({"fullVersion": "11.3"})

    return handler


@pytest.mark.anyio
async def test_a_429_slows_every_request_to_that_deployment_and_plain_answers_speed_it_up_again() -> None:
    """Retry-After from one answer delays the deployment's next request, whoever sends it; then it recovers."""
    handler = _throttled_once()
    clock = SteppingClock()
    async with _serving(handler) as url, client_for(url, clock, retries=0) as client:
        with pytest.raises(TargetError):
            await client.detect_version()
        assert clock.sleeps == []
        assert await client.detect_version() == "11.3"
        assert clock.sleeps == [5.0]  # the next request waited for the Retry-After, without a retry
        await client.detect_version()
        await client.detect_version()
        assert len(clock.sleeps) == 2 and clock.sleeps[1] <= MIN_GAP_S  # the last spacing, then none:
        assert client.link.pacing_gap == 0.0  # recovered


@pytest.mark.anyio
async def test_a_request_waiting_out_its_deployments_pacing_holds_no_request_slot() -> None:
    """A throttled deployment's next request waits for its pacing before it takes a request slot: with one
    slot for the whole run, another deployment's request goes meanwhile, and the paced one follows."""
    handler = _throttled_once()
    clock = ManualClock()
    async with _serving(handler) as url, client_for(url, clock, retries=0, concurrency=1) as paced:
        other = ArcGISClient(make_deployment("gis-0001", url=url, password=PASSWORD), paced.context)
        slots = paced.context.transport.slots
        with pytest.raises(TargetError):
            await paced.detect_version()  # 429: its next request waits 5 s
        async with anyio.create_task_group() as tg:
            tg.start_soon(paced.detect_version)
            await anyio.wait_all_tasks_blocked()
            assert paced.version == "" and slots.free == 1  # pacing, no slot held
            assert await other.detect_version() == "11.3"
            clock.advance(5)
    assert paced.version == "11.3" and slots.free == 1


@pytest.mark.anyio
async def test_an_answer_that_stalls_midway_times_out_on_the_read_timeout() -> None:
    """Headers sent, then silence: the read timeout ends the wait long before the whole-request timeout."""

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"fullVersion": ')
        await released.wait()  # silence until the test is done
        return response

    released = asyncio.Event()
    settings: dict[str, Any] = {"retries": 0, "read_timeout": 0.3, "request_timeout": 3600.0}
    async with _serving(stall) as url:
        try:
            async with client_for(url, SteppingClock(), **settings) as client:
                # A hang guard only: were the read timeout ignored, the hour-long request timeout would run.
                with anyio.fail_after(60), pytest.raises(TargetError) as caught:
                    await client.detect_version()
        finally:
            released.set()  # the handler ends, so the server can stop
    assert caught.value.transient and caught.value.ambiguous
    assert "0.3 s of silence" in caught.value.message


@asynccontextmanager
async def _serving(handler: Handler) -> AsyncIterator[str]:
    """`handler` answering every path on 127.0.0.1 but sign-ins (granted at once); yields the root URL of a
    deployment there."""

    async def granting(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/sharing/rest/generateToken"):
            return web.json_response({"token": "t", "expires": 4_102_444_800_000})  # 2100
        return await handler(request)

    async with serving(granting) as port:
        yield f"http://127.0.0.1:{port}/ctx"


@pytest.mark.anyio
async def test_request_slots_serve_following_jobs_first_then_first_come_first_served() -> None:
    """One slot, held: a poll that queued after two creates still goes first; the creates keep their order."""
    slots, served = RequestSlots(1), []

    async def request(name: str, urgent: bool) -> None:
        async with slots.slot(urgent=urgent):
            served.append(name)

    async with anyio.create_task_group() as tg, slots.slot():
        for queued, (name, urgent) in enumerate((("create-a", False), ("create-b", False), ("poll", True)), 1):
            tg.start_soon(request, name, urgent)
            await until_waiting(slots, queued)
    assert served == ["poll", "create-a", "create-b"]
    assert slots.waiting == 0


@pytest.mark.anyio
async def test_a_waiter_cancelled_in_the_queue_neither_loses_nor_leaks_a_slot() -> None:
    slots = RequestSlots(1)
    with anyio.move_on_after(0.05):
        async with slots.slot(), slots.slot():  # the second waits for the slot the first holds: cancelled
            pass
    assert slots.waiting == 0
    with anyio.fail_after(5):
        async with slots.slot():  # the slot came back
            pass


@pytest.mark.anyio
async def test_request_slots_hold_their_cap_and_serve_urgent_waiters_first_under_load() -> None:
    """The slots' context managers are shared by every request: many requests at once, urgent and not, never
    hold more than the cap; every slot comes back; and a slot freed by a request that took it at once (free
    and no queue) still goes to the urgent waiter before the others that queued earlier."""
    slots, held, peak, served = RequestSlots(3), 0, 0, []

    async def request(name: str, urgent: bool) -> None:
        nonlocal held, peak
        async with slots.slot(urgent=urgent):
            held += 1
            peak = max(peak, held)
            served.append(name)
            await anyio.lowlevel.checkpoint()
            held -= 1

    async with anyio.create_task_group() as tg:
        for index in range(30):
            tg.start_soon(request, f"r{index}", index % 3 == 0)
    assert peak == 3 and held == 0 and slots.free == 3 and slots.waiting == 0
    assert len(served) == 30

    served.clear()
    one = RequestSlots(1)
    async with anyio.create_task_group() as tg, one.slot():  # taken at once: no waiter was queued
        tg.start_soon(request_on, one, served, "create", False)
        await until_waiting(one, 1)
        tg.start_soon(request_on, one, served, "poll", True)
        await until_waiting(one, 2)
    assert served == ["poll", "create"] and one.free == 1


async def request_on(slots: RequestSlots, served: list[str], name: str, urgent: bool) -> None:
    async with slots.slot(urgent=urgent):
        served.append(name)


async def until_waiting(slots: RequestSlots, count: int) -> None:
    with anyio.fail_after(5):
        while slots.waiting < count:
            await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_a_request_cancelled_as_it_takes_a_free_slot_gives_it_back() -> None:
    """Cancelled at the very moment it takes a free slot (the run ending, say): the slot is not lost."""
    slots = RequestSlots(2)
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with slots.slot():
            raise AssertionError("a cancelled request never holds a slot")
    assert slots.free == 2
    async with slots.slot(), slots.slot():
        assert slots.free == 0
    assert slots.free == 2
