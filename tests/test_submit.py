"""Submitting backups: create, retry, reconcile a create whose answer was lost, the running-job slot (held
inside `submission`'s block, given back by it), and one deployment's stores one after another. Driven by an
in-memory deployment and a manual clock that steps in the background; nothing sleeps for real."""

from __future__ import annotations

import itertools
import math
import random
from contextlib import suppress
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest

from orchestrator.backoff import Backoff, Retry
from orchestrator.clock import ManualClock
from orchestrator.dr import CLOCK_SKEW_S, is_duplicate_name
from orchestrator.errors import ErrorClass, TargetError
from orchestrator.model import DEFAULT_STORE, Deployment, Outcome, Phase, TargetState
from orchestrator.poll import Poller
from orchestrator.submit import Gate, Stopped, Submitted, WorkerContext, back_up_deployment, submission
from tests.conftest import make_deployment
from tests.fakes import (
    STEP,
    Answer,
    Background,
    CreateRequest,
    FakeDeployment,
    Taken,
    duplicate,
    let_tasks_run,
    time_flows,
)

pytestmark = pytest.mark.anyio

RETRY = Backoff(2.0, 2.0, 8.0)  # the retry backoff of every test context
RETENTION_MS = 1_797_000_000_000
RECONCILE = ("backup_names", "dr_status", "job_ids", "job")  # the requests only a reconciliation makes here
WHY = "the run deadline (60 s) was reached"  # what the gate is closed with: said of the run
STOPPED = f"not submitted: {WHY}"  # what a target left unsubmitted says


def _target(deployment: Deployment | None = None, store: str = "default", index: int = 0) -> TargetState:
    deployment = deployment or make_deployment()
    return TargetState(index, deployment, store, f"fleet-{deployment.name}-{store or 'default'}", RETENTION_MS)


def _unavailable(retry_after: float | None = None) -> TargetError:
    """A proxy's 503: the create never reached the server."""
    return TargetError(ErrorClass.TRANSIENT, "HTTP 503 Service Unavailable", retry_after=retry_after, code=503)


def _lost() -> TargetError:
    """The connection dropped after the create was sent: the server may or may not have taken it."""
    return TargetError(ErrorClass.TRANSIENT, "connection lost (ServerDisconnectedError)", ambiguous=True)


@dataclass
class Seen:
    """What the worker told its callbacks, by target key, in order."""

    described: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


def _context(
    clock: ManualClock,
    *,
    running: float = math.inf,
    retries: int = 3,
    job_timeout: float = 600.0,
    retry_for: float = math.inf,
) -> tuple[WorkerContext, Seen]:
    seen = Seen()

    def describe(target: TargetState) -> str:
        seen.described.append(target.key)
        return f"backup of {target.deployment.name}/{target.store}"

    async def intend(target: TargetState) -> None:  # no ledger here, as a run without one
        await anyio.lowlevel.checkpoint()

    ctx = WorkerContext(
        poller=Poller(clock=clock, rng=random.Random(11), first_look=1.0, cap=4.0),
        gate=Gate(),
        running_limiter=anyio.CapacityLimiter(running),
        clock=clock,
        rng=random.Random(5),
        retry=Retry(retries, RETRY, retry_for),
        job_timeout=job_timeout,
        description=describe,
        passcode=lambda target: target.deployment.passcode.get_secret_value(),
        before_create=intend,
        on_submitted=lambda target: seen.submitted.append(target.key),
        on_finished=lambda target: seen.finished.append(target.key),
    )
    return ctx, seen


def _clock_of(ctx: WorkerContext) -> ManualClock:
    assert isinstance(ctx.clock, ManualClock)
    return ctx.clock


async def _submit(target: TargetState, api: FakeDeployment, ctx: WorkerContext) -> Submitted | Stopped:
    """`submission` with time flowing; checks a Submitted holds a running slot in the block, and none after it."""
    async with time_flows(_clock_of(ctx)), submission(target, api, ctx) as submitted:
        assert ctx.running_limiter.borrowed_tokens == (1 if isinstance(submitted, Submitted) else 0)
    assert ctx.running_limiter.borrowed_tokens == 0
    return submitted


async def _submit_failing(target: TargetState, api: FakeDeployment, ctx: WorkerContext) -> TargetError:
    """`submission` with time flowing, expected to raise; checks no running slot is left held."""
    outcome: Submitted | TargetError | Stopped
    async with time_flows(_clock_of(ctx)):  # no pytest.raises in here: its BaseException would leave a group
        try:
            async with submission(target, api, ctx) as outcome:
                pass
        except TargetError as error:
            outcome = error
    assert isinstance(outcome, TargetError), f"submit returned {outcome!r}"
    assert ctx.running_limiter.borrowed_tokens == 0
    return outcome


async def _back_up(
    ctx: WorkerContext,
    *work: tuple[list[TargetState], FakeDeployment],
    background: tuple[Background, ...] = (),
) -> None:
    """One `back_up_deployment` worker per deployment, beside the poller, as the runner runs them."""
    async with time_flows(_clock_of(ctx), ctx.poller.run, *background), anyio.create_task_group() as workers:
        for targets, api in work:
            workers.start_soon(back_up_deployment, targets, api, ctx)


# -- one create ------------------------------------------------------------------------------------


async def test_an_answered_create_is_submitted_holding_a_running_slot_until_its_block_ends() -> None:
    """A create answering a job id is Submitted after one attempt; its running slot is held for the whole
    block (another deployment cannot create meanwhile) and given back when the block ends."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=["job-42"])
    ctx, seen = _context(clock, running=1)
    target = _target()
    other, other_api = _target(make_deployment("e"), index=1), FakeDeployment(clock, "e")

    async def submit_other() -> None:
        async with submission(other, other_api, ctx) as submitted:
            assert submitted == Submitted("job-1")

    async with anyio.create_task_group() as tg:
        async with submission(target, api, ctx) as submitted:
            assert submitted == Submitted("job-42")
            assert target.attempts == 1 and target.submitted_at == clock.now() and target.phase is Phase.SUBMITTING
            assert api.creates == [
                CreateRequest(
                    "default", "fleet-d-default", "passcode-1", "backup of d/default", RETENTION_MS, clock.now()
                )
            ]
            assert seen.described == ["d/default"]
            assert ctx.running_limiter.borrowed_tokens == 1
            tg.start_soon(submit_other)
            await let_tasks_run()
            assert other_api.creates == []  # the only slot is still ours
        await let_tasks_run()
        assert len(other_api.creates) == 1  # given back as the block ended
    assert ctx.running_limiter.borrowed_tokens == 0


@pytest.mark.parametrize("retry_after", [None, 7.0])
async def test_a_transient_refusal_is_retried_after_a_backoff_without_reconciling(retry_after: float | None) -> None:
    """A non-ambiguous transient refusal is retried after a backoff sleep (or Retry-After), asking nothing else."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_unavailable(retry_after)])
    ctx, _ = _context(clock)
    target = _target()

    submitted = await _submit(target, api, ctx)

    assert submitted == Submitted("job-2") and target.attempts == 2
    waited = api.creates[1].at - api.creates[0].at
    if retry_after is None:
        assert 0 < waited <= RETRY.initial + STEP
    else:
        assert retry_after <= waited <= retry_after + STEP
    assert api.calls == ["create_backup", "create_backup"]  # no backups list, DR status or jobs asked
    assert target.notes == []


async def test_transient_refusals_stop_after_the_retries() -> None:
    """A create refused transiently every time is sent 1 + retries times, then the last error is raised."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_unavailable()] * 5)
    ctx, _ = _context(clock, retries=2)
    target = _target()

    error = await _submit_failing(target, api, ctx)

    assert error.transient and "503" in error.message
    assert len(api.creates) == 3 and target.attempts == 3


async def test_transient_refusals_are_retried_for_the_time_budget_not_a_few_times() -> None:
    """Twenty refusals in a row (a deployment only flaky, a busy proxy) are retried within the budget, and the
    twenty-first create goes through: no fixed count of attempts ends the target first."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_unavailable()] * 20)
    ctx, _ = _context(clock, retries=1000, retry_for=300.0)
    target = _target()

    submitted = await _submit(target, api, ctx)

    assert submitted == Submitted("job-21") and target.attempts == 21
    assert api.creates[-1].at - api.creates[0].at <= 300.0


async def test_transient_refusals_stop_once_the_time_budget_is_spent() -> None:
    """A create refused transiently every time is retried until `retry_for` has passed, never after it,
    then the last error is raised."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_unavailable()] * 1000)
    ctx, _ = _context(clock, retries=1000, retry_for=60.0)
    target = _target()

    error = await _submit_failing(target, api, ctx)

    assert error.transient and "503" in error.message
    assert 60.0 - 8.0 <= api.creates[-1].at - api.creates[0].at <= 60.0 + STEP  # the last try at the budget's end
    assert 60 / 8 <= len(api.creates) == target.attempts < 1000


def _no_connection() -> TargetError:
    """A create that never reached the deployment: refused connection, or its open circuit."""
    return TargetError(ErrorClass.UNREACHABLE, "cannot connect: Connection refused")


@pytest.mark.parametrize(
    ("refusals", "ends"),
    [
        ([_no_connection()] * 1000, ErrorClass.UNREACHABLE),
        ([_unavailable()] + [_no_connection()] * 1000, ErrorClass.TRANSIENT),
    ],
    ids=["never-reached", "answered-once"],
)
async def test_a_create_that_never_reached_the_deployment_ends_unreachable(
    refusals: list[Answer], ends: ErrorClass
) -> None:
    """Retried like a transient refusal for the budget; then `unreachable` only if no attempt ever reached
    the deployment, and `transient` if one did (it was up moments ago)."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=refusals)
    ctx, _ = _context(clock, retries=1000, retry_for=60.0)

    error = await _submit_failing(_target(), api, ctx)

    assert error.error_class is ends and "cannot connect" in error.message and len(api.creates) > 5


async def test_a_create_waiting_for_its_retry_stops_as_soon_as_submitting_stops() -> None:
    """A create told to come back in 100 s is not kept waiting once the deadline (or Ctrl-C) closes the gate:
    its target ends with the gate's reason at once, and nothing is created after the deadline."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_unavailable(retry_after=100)])
    api.status = {}
    ctx, seen = _context(clock, retry_for=300.0)
    target = _target()
    started = clock.now()

    await _back_up(ctx, ([target], api), background=(_close_gate_during_backoff(ctx),))

    assert seen.finished == [target.key] and target.outcome is ctx.gate.outcome
    assert target.finished_at is not None and target.finished_at - started < 2.0  # not after the 100 s wait
    assert len(api.creates) == 1


async def test_waiting_for_a_running_slot_does_not_spend_the_retry_budget() -> None:
    """Refused, then kept waiting minutes for the only running slot: the next refusal is still retried, as the
    budget counts the time spent trying, not the time spent queueing behind other deployments' jobs."""
    clock = ManualClock()
    a = FakeDeployment(clock, "a", creates=[_unavailable(retry_after=30), _unavailable()])
    b = FakeDeployment(clock, "b", sign_in_seconds=5, job_seconds=200)
    ctx, _ = _context(clock, running=1, retries=1000, retry_for=60.0)
    ta, tb = _target(make_deployment("a")), _target(make_deployment("b"), index=1)

    await _back_up(ctx, ([ta], a), ([tb], b))

    assert a.creates[1].at - a.creates[0].at >= 200  # the retry waited for b's job to end
    assert ta.outcome is Outcome.SUCCEEDED and tb.outcome is Outcome.SUCCEEDED, (ta.error, tb.error)
    assert len(a.creates) == 3


@pytest.mark.parametrize("error_class", [ErrorClass.PERMANENT, ErrorClass.CONFIGURATION, ErrorClass.AUTHENTICATION])
async def test_a_non_transient_refusal_fails_at_once(error_class: ErrorClass) -> None:
    """A permanent, configuration or authentication refusal is raised as is, after one create, without retry."""
    clock = ManualClock()
    refusal = TargetError(error_class, "refused")
    api = FakeDeployment(clock, creates=[refusal])
    ctx, _ = _context(clock)
    target = _target()

    error = await _submit_failing(target, api, ctx)

    assert error is refusal
    assert api.calls == ["create_backup"] and target.attempts == 1


# -- a create whose answer was lost ----------------------------------------------------------------


async def test_a_lost_answer_whose_backup_is_listed_is_already_complete() -> None:
    """After a lost answer, our backup already in the store's list means the create was taken and is done."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[Taken(_lost())], job_seconds=0)
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    assert submitted == Submitted("", already_complete=True)
    assert len(api.creates) == 1
    assert len(target.notes) == 1 and "answer lost" in target.notes[0]


async def test_a_lost_answer_is_matched_to_our_running_job() -> None:
    """After a lost answer, a DR status naming our backup and store plus a recent create job there: that job is ours."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[Taken(_lost())], job_seconds=600)
    api.add_job("older", "default", "nightly", clock.now() - 86_400, clock.now() - 80_000)
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    assert submitted == Submitted("job-1")
    assert len(api.creates) == 1
    assert "answer lost" in target.notes[0]


@pytest.mark.parametrize("jobs_unknown", ["listed empty", "jobs request fails"])
async def test_a_lost_answer_named_in_the_dr_status_is_ours_without_a_job_id(jobs_unknown: str) -> None:
    """A DR status naming our backup and store with no job of ours found: ours, followed by the backups list."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[Taken(_lost())], job_seconds=600)
    if jobs_unknown == "listed empty":
        api.hide_jobs = True
    else:
        api.errors["job_ids"] = _unavailable()
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    assert submitted == Submitted("")
    assert len(api.creates) == 1


@pytest.mark.parametrize(
    ("store", "name"),
    [("default", "someone-elses-backup"), ("offsite", "fleet-d-default")],
    ids=["another backup", "our name on another store"],
)
async def test_a_lost_answer_is_retried_when_the_dr_status_is_someone_elses(store: str, name: str) -> None:
    """A DR status naming another backup (or another store) is not ours, its recent job neither: create again."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_lost()])
    api.add_job("theirs", store, name, clock.now(), clock.now() + 600)  # the last DR job, started just now
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    assert "dr_status" in api.calls  # it did ask before creating again
    assert submitted == Submitted("job-2")
    assert len(api.creates) == 2 and target.notes == []


@pytest.mark.parametrize("failing", ["backup_names", "dr_status", "job_ids"])
async def test_a_lost_answer_is_retried_when_reconciling_fails(failing: str) -> None:
    """When the reconciliation's own requests fail, the create is sent again (the server refuses duplicates)."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_lost()])
    api.errors[failing] = _unavailable()
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    assert failing in api.calls
    assert submitted == Submitted("job-2")
    assert len(api.creates) == 2


@pytest.mark.parametrize("cannot_tell", ["reconcile requests fail", "server says nothing useful"])
async def test_a_duplicate_name_after_a_lost_answer_means_the_first_create_was_ours(cannot_tell: str) -> None:
    """After an ambiguous create, a retry refused with "already exists" means our first create was taken."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[Taken(_lost())], job_seconds=600)
    if cannot_tell == "reconcile requests fail":
        api.errors.update(dict.fromkeys(("backup_names", "dr_status", "job_ids"), _unavailable()))
    else:
        api.status, api.hide_jobs = {}, True  # the backup is not listed yet: it is still running
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    assert submitted == Submitted("")
    assert [entry[2] for entry in api.log] == ["created", "refused"]
    assert target.attempts == 2
    assert len(target.notes) == 1 and "answer lost" in target.notes[0] and "name" in target.notes[0]


async def test_an_ambiguous_create_with_no_retry_left_is_still_reconciled() -> None:
    """With no retry left, a create whose answer was lost is still looked for on the server before failing."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[Taken(_lost())], job_seconds=600)
    target = _target()
    ctx, _ = _context(clock, retries=0)

    submitted = await _submit(target, api, ctx)

    assert submitted == Submitted("job-1")
    assert len(api.creates) == 1 and "answer lost" in target.notes[0]


@pytest.mark.parametrize(
    ("store", "started_before", "ours"),
    [
        ("default", CLOCK_SKEW_S + 60, False),  # too old to be the create we just sent
        ("offsite", 0.0, False),  # a create on another store
        ("default", CLOCK_SKEW_S - 60, True),  # the server's clock behind ours, within the allowed skew
    ],
    ids=["old job", "another store", "within clock skew"],
)
async def test_only_a_recent_create_job_on_our_store_is_taken_as_ours(
    store: str, started_before: float, ours: bool
) -> None:
    """A job older than the first attempt (beyond CLOCK_SKEW_S) or on another store is not taken for our create."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_lost()])
    api.status = {}  # the DR status names no backup: only the jobs can tell
    started = clock.now() - started_before
    api.add_job("theirs", store, "someone-elses-backup", started, started + 30)
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    if ours:
        assert submitted == Submitted("theirs") and len(api.creates) == 1
    else:
        assert submitted == Submitted("job-2") and len(api.creates) == 2


@pytest.mark.parametrize("taken", [True, False], ids=["the lost create was taken", "it was not"])
@pytest.mark.parametrize("earlier_job", [False, True], ids=["no job before", "an older job before"])
async def test_on_10_9_a_dr_job_started_since_our_create_is_taken_as_ours(taken: bool, earlier_job: bool) -> None:
    """10.9: no jobs list, a status naming no backup. Only a job other than the one it showed before our lost
    create is ours: followed, not created again; the same old job is not, so the backup is created again."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[Taken(_lost()) if taken else _lost()])
    api.legacy = True
    if earlier_job:  # ended long ago, on this very store
        api.add_job("old", "default", "last-nights-backup", clock.now() - 3600, clock.now() - 3000)
    target = _target()
    ctx, _ = _context(clock)

    submitted = await _submit(target, api, ctx)

    if taken:
        assert submitted == Submitted("") and len(api.creates) == 1 and "answer lost" in target.notes[0]
    else:
        assert submitted == Submitted("job-2") and len(api.creates) == 2


async def test_on_10_9_a_resumed_create_is_not_matched_to_whatever_job_ran_last() -> None:
    """Resumed on 10.9 (no status seen before the first create): the last DR job, e.g. another store's of this
    run, is not taken for ours; the create is sent (the server refuses a duplicate name if it had one)."""
    clock = ManualClock()
    api = FakeDeployment(clock)
    api.legacy = True
    api.add_job("other-store", "offsite", "tonight-offsite", clock.now() - 20, clock.now() - 5)
    target = _target()
    target.create_intended = True  # the intent was on record when the previous run was cut off

    submitted = await _submit(target, api, _context(clock)[0])

    assert submitted == Submitted("job-1") and len(api.creates) == 1
    assert target.dr_mark is None and target.notes == []


@pytest.mark.parametrize("earlier", [[], [_unavailable()]], ids=["first attempt", "after a 503"])
async def test_a_duplicate_name_without_an_ambiguous_attempt_fails(earlier: list[Answer]) -> None:
    """A refusal of our name with no earlier ambiguous attempt is a permanent failure, never taken as ours."""
    clock = ManualClock()
    target = _target()
    api = FakeDeployment(clock, creates=[*earlier, duplicate(target.backup_name)])
    ctx, _ = _context(clock)

    error = await _submit_failing(target, api, ctx)

    assert error.error_class is ErrorClass.PERMANENT and is_duplicate_name(error)
    assert len(api.creates) == len(earlier) + 1
    assert not set(api.calls) & set(RECONCILE)
    assert target.notes == []


@pytest.mark.parametrize(
    ("error", "duplicate"),
    [
        (TargetError(ErrorClass.PERMANENT, "Backup 'b' already exists."), True),
        (TargetError(ErrorClass.PERMANENT, "BACKUP 'b' ALREADY EXISTS"), True),
        (TargetError(ErrorClass.TRANSIENT, "Backup 'b' already exists."), False),
        (TargetError(ErrorClass.PERMANENT, "Invalid passcode."), False),
    ],
)
def test_is_duplicate_name(error: TargetError, duplicate: bool) -> None:
    """Only a permanent refusal saying "already exists" (any case) is the duplicate-name refusal."""
    assert is_duplicate_name(error) is duplicate


# -- the running-job slot and the gate -------------------------------------------------------------


async def test_the_running_slot_is_given_back_during_a_retry_backoff() -> None:
    """While one target sleeps before a retry, another deployment can take the only running slot and create."""
    clock = ManualClock()
    log: list[tuple[str, float, str]] = []
    a = FakeDeployment(clock, "a", creates=[_unavailable(retry_after=30)], log=log)
    b = FakeDeployment(clock, "b", sign_in_seconds=5, log=log)
    ctx, _ = _context(clock, running=1)
    ta, tb = _target(make_deployment("a")), _target(make_deployment("b"), index=1)

    await _back_up(ctx, ([ta], a), ([tb], b))

    assert [(name, what) for name, _, what in log] == [("a", "refused"), ("b", "created"), ("a", "created")]
    (_, a_refused, _), (_, b_created, _), (_, a_retried, _) = log
    assert a_refused < b_created < a_refused + 30 <= a_retried  # b created while a slept
    assert a_retried >= b.jobs["job-1"].ends  # and the limit held: one job running at a time
    assert ta.outcome is Outcome.SUCCEEDED and tb.outcome is Outcome.SUCCEEDED
    assert ctx.running_limiter.borrowed_tokens == 0


async def test_a_gate_closed_during_the_failed_attempt_stops_the_retry() -> None:
    """The gate closing while a create fails: no retry; the target is stopped, saying why and what it last met."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[_unavailable()])
    ctx, _ = _context(clock)
    api.on_create = lambda: ctx.gate.close(WHY)
    target = _target()

    outcome = await _submit(target, api, ctx)

    assert outcome == Stopped(f"{STOPPED} (the last create attempt: HTTP 503 Service Unavailable)")
    assert len(api.creates) == 1 and ctx.running_limiter.borrowed_tokens == 0


def _close_gate_during_backoff(ctx: WorkerContext) -> Background:
    async def close_the_gate_meanwhile() -> None:
        await _clock_of(ctx).sleep(0.1)  # after the failed attempt, during the backoff sleep (>= 2 s here)
        ctx.gate.close(WHY)

    return close_the_gate_meanwhile


@pytest.mark.parametrize("first", [_unavailable(retry_after=30), _lost()], ids=["503", "ambiguous"])
async def test_a_gate_closed_during_a_backoff_sleep_creates_nothing_more(first: TargetError) -> None:
    """The gate closing while a target sleeps before its retry: no further create, and no slot kept."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[first])
    api.status = {}  # reconciling finds nothing
    ctx, _ = _context(clock)
    target = _target()

    async with time_flows(clock, _close_gate_during_backoff(ctx)):
        with suppress(TargetError):
            async with submission(target, api, ctx):
                pass
    assert len(api.creates) == 1
    assert ctx.running_limiter.borrowed_tokens == 0


@pytest.mark.parametrize("first", [_unavailable(retry_after=30), _lost()], ids=["503", "ambiguous"])
async def test_a_gate_closed_during_a_backoff_sleep_ends_the_target_with_the_gate_and_its_last_error(
    first: TargetError,
) -> None:
    """Stopped during the retry sleep: the gate's outcome (its backup was never made), its reason and last error."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[first])
    api.status = {}  # reconciling finds nothing
    ctx, seen = _context(clock)
    target = _target()

    await _back_up(ctx, ([target], api), background=(_close_gate_during_backoff(ctx),))

    assert len(api.creates) == 1 and seen.finished == [target.key]
    assert target.outcome is ctx.gate.outcome, (target.outcome, target.error)
    assert target.error == f"{STOPPED} (the last create attempt: {first.message})"


async def test_a_taken_create_is_still_followed_when_the_gate_closes_during_the_backoff() -> None:
    """A create the server took, its answer lost, is found and followed even if the gate closes before the retry."""
    clock = ManualClock()
    api = FakeDeployment(clock, creates=[Taken(_lost())], job_seconds=20)
    ctx, _ = _context(clock)
    target = _target()

    await _back_up(ctx, ([target], api), background=(_close_gate_during_backoff(ctx),))

    assert len(api.creates) == 1 and api.jobs["job-1"].name == target.backup_name  # running on the server
    assert (target.outcome, target.job_id) == (Outcome.SUCCEEDED, "job-1"), (target.outcome, target.error)


async def test_a_closed_gate_submits_nothing_and_holds_no_slot() -> None:
    """With the gate closed before the first attempt, submit returns Stopped, sends nothing and holds no slot."""
    clock = ManualClock()
    api = FakeDeployment(clock)
    ctx, _ = _context(clock, running=1)
    ctx.gate.close(WHY)
    target = _target()

    assert await _submit(target, api, ctx) == Stopped(STOPPED)

    assert api.creates == [] and target.attempts == 0 and target.submitted_at is None
    assert ctx.running_limiter.borrowed_tokens == 0


@pytest.mark.parametrize("outcome", [Outcome.SKIPPED, Outcome.NOT_STARTED])
async def test_a_closed_gate_ends_every_store_with_its_outcome_and_reason(outcome: Outcome) -> None:
    """back_up_deployment with the gate closed ends each store with the gate's outcome and reason, unsubmitted."""
    clock = ManualClock()
    deployment = make_deployment(stores=("default", "offsite"))
    targets = [_target(deployment, "default"), _target(deployment, "offsite", index=1)]
    api = FakeDeployment(clock)
    ctx, seen = _context(clock)
    ctx.gate.close("stopped for the test", outcome)
    said = f"{'not started' if outcome is Outcome.NOT_STARTED else 'not submitted'}: stopped for the test"

    await _back_up(ctx, (targets, api))

    assert [(t.outcome, t.error, t.error_class) for t in targets] == [(outcome, said, "")] * 2
    assert seen.finished == ["d/default", "d/offsite"] and seen.submitted == []
    assert api.creates == [] and api.calls == []  # not even a sign-in
    assert ctx.running_limiter.borrowed_tokens == 0


# -- one deployment --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        ("token", TargetError(ErrorClass.AUTHENTICATION, "sign-in refused: Invalid username or password.")),
        ("detect_version", TargetError(ErrorClass.TRANSIENT, "cannot connect: Connection refused")),
        ("default_store", TargetError(ErrorClass.CONFIGURATION, "no default backup store")),
    ],
)
async def test_a_sign_in_failure_ends_every_store_of_themake_deployment(failing: str, error: TargetError) -> None:
    """A failure signing in (or reading the version or default store) fails every store with it, creating nothing."""
    clock = ManualClock()
    deployment = make_deployment(stores=())
    targets = [_target(deployment, DEFAULT_STORE), _target(deployment, "offsite", index=1)]
    api = FakeDeployment(clock)
    api.errors[failing] = error
    ctx, seen = _context(clock)

    await _back_up(ctx, (targets, api))

    for target in targets:
        assert (target.outcome, target.error_class, target.error) == (
            Outcome.FAILED,
            error.error_class.value,
            error.message,
        )
    assert len(seen.finished) == 2 and seen.submitted == []
    assert "create_backup" not in api.calls


async def test_the_default_store_is_asked_of_the_server() -> None:
    """A target for the default store ("") is backed up to the store the server names as its default."""
    clock = ManualClock()
    target = _target(make_deployment(stores=()), DEFAULT_STORE)
    api = FakeDeployment(clock)
    api.default = "primary"
    ctx, _ = _context(clock)

    await _back_up(ctx, ([target], api))

    assert target.store == "primary" and [c.store for c in api.creates] == ["primary"]
    assert target.outcome is Outcome.SUCCEEDED
    assert api.calls.count("default_store") == 1


async def test_a_deployments_stores_are_backed_up_one_after_another() -> None:
    """A deployment's stores are created one at a time, each after the previous job ended, each described."""
    clock = ManualClock()
    deployment = make_deployment(stores=("a", "b", "c"))
    targets = [_target(deployment, store, index) for index, store in enumerate(deployment.stores)]
    api = FakeDeployment(clock, job_seconds=20)
    ctx, seen = _context(clock)

    await _back_up(ctx, (targets, api))

    assert [c.store for c in api.creates] == ["a", "b", "c"]
    assert api.overlaps == 0
    for earlier, later in itertools.pairwise(api.jobs.values()):
        assert later.started >= earlier.ends
    assert [t.outcome for t in targets] == [Outcome.SUCCEEDED] * 3
    assert [t.job_id for t in targets] == ["job-1", "job-2", "job-3"]
    keys = ["d/a", "d/b", "d/c"]
    assert seen.described == seen.submitted == seen.finished == keys
    assert [c.description for c in api.creates] == ["backup of d/a", "backup of d/b", "backup of d/c"]
    assert "default_store" not in api.calls
    assert ctx.running_limiter.borrowed_tokens == 0


async def test_a_failing_store_does_not_stop_the_next() -> None:
    """A store whose create fails ends failed, its slot is given back, and the next store is still backed up."""
    clock = ManualClock()
    deployment = make_deployment(stores=("a", "b"))
    targets = [_target(deployment, "a"), _target(deployment, "b", index=1)]
    api = FakeDeployment(clock, creates=[TargetError(ErrorClass.CONFIGURATION, "store 'a' does not exist")])
    ctx, seen = _context(clock, running=1)

    await _back_up(ctx, (targets, api))

    assert (targets[0].outcome, targets[0].error_class) == (Outcome.FAILED, "configuration")
    assert targets[1].outcome is Outcome.SUCCEEDED
    assert seen.finished == ["d/a", "d/b"] and seen.submitted == ["d/b"]
    assert ctx.running_limiter.borrowed_tokens == 0


async def test_an_already_complete_backup_succeeds_without_polling() -> None:
    """A lost create found complete in the list succeeds at once, is reported submitted and finished, unpolled."""
    clock = ManualClock()
    target = _target()
    api = FakeDeployment(clock, creates=[Taken(_lost())], job_seconds=0)
    ctx, seen = _context(clock)

    await _back_up(ctx, ([target], api))

    assert target.outcome is Outcome.SUCCEEDED and target.server_status == "COMPLETED" and target.job_id == ""
    assert seen.submitted == seen.finished == ["d/default"]
    assert "job" not in api.calls and target.polls == 0
    assert ctx.running_limiter.borrowed_tokens == 0


async def test_the_job_timeout_counts_from_the_accepted_create() -> None:
    """A create accepted after waiting for a running slot still gets the whole job timeout for its job."""
    clock = ManualClock()
    a = FakeDeployment(clock, "a", creates=[_unavailable(retry_after=2)], job_seconds=30)
    b = FakeDeployment(clock, "b", sign_in_seconds=1, job_seconds=80)
    ctx, _ = _context(clock, running=1, job_timeout=100)
    ta, tb = _target(make_deployment("a")), _target(make_deployment("b"), index=1)

    await _back_up(ctx, ([ta], a), ([tb], b))

    assert tb.outcome is Outcome.SUCCEEDED
    accepted = a.jobs["job-2"]
    assert accepted.started > 80  # a waited for b's job to end before its retry
    assert accepted.ends - accepted.started == 30 < ctx.job_timeout
    assert ta.outcome is Outcome.SUCCEEDED, ta.error


# -- a resumed run: targets as the ledger left them ------------------------------------------------


async def test_a_resumed_target_with_a_job_id_is_followed_not_created() -> None:
    """The job the killed run started is followed to its end; no create is sent."""
    clock = ManualClock()
    api = FakeDeployment(clock)
    api.add_job("job-from-before", "default", "fleet-d-default", started=0.0, ends=5.0)
    ctx, _ = _context(clock)
    target = _target()
    target.job_id, target.submitted_at, target.create_intended, target.attempts = "job-from-before", 0.0, True, 1

    await _back_up(ctx, ([target], api))

    assert (target.outcome, target.job_id, target.attempts) == (Outcome.SUCCEEDED, "job-from-before", 1)
    assert api.creates == [] and "job" in api.calls
    assert ctx.running_limiter.borrowed_tokens == 0


async def test_resumed_targets_with_an_outcome_are_left_alone() -> None:
    """A deployment whose targets all ended before the kill gets no request at all."""
    clock = ManualClock()
    api = FakeDeployment(clock)
    ctx, seen = _context(clock)
    target = _target()
    target.finish(Outcome.FAILED, 1.0, reason="failed before the kill")

    await _back_up(ctx, ([target], api))

    assert api.calls == [] and seen.finished == [] and target.error == "failed before the kill"


@pytest.mark.parametrize("taken", [True, False], ids=["server-had-it", "server-never-saw-it"])
async def test_an_intent_without_a_job_id_is_reconciled_before_any_create(taken: bool) -> None:
    """Killed between "create sent" and "job id recorded": the server is asked first; created only if absent."""
    clock = ManualClock()
    api = FakeDeployment(clock)
    target = _target()
    target.create_intended, target.submitted_at, target.attempts = True, clock.now(), 1
    if taken:
        now = clock.now()
        api.add_job("job-lost", "default", target.backup_name, started=now, ends=now + 30)  # still running
    ctx, _ = _context(clock)

    await _back_up(ctx, ([target], api))

    assert target.outcome is Outcome.SUCCEEDED
    first_create = api.calls.index("create_backup") if "create_backup" in api.calls else len(api.calls)
    assert "backup_names" in api.calls[:first_create] and "dr_status" in api.calls[:first_create], api.calls
    if taken:
        assert api.creates == [] and target.job_id == "job-lost"
        assert any("the server had accepted it" in note for note in target.notes)
    else:
        assert [c.name for c in api.creates] == [target.backup_name] and target.attempts == 2
