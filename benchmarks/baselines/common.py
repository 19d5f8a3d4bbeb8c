"""What both baselines share: the per-target sequence a plain `requests` script runs, its I/O and its CLI.

Per deployment: sign in (`/sharing/rest/generateToken`, as Esri's CLI and the ArcGIS Python API do on
Enterprise), then for each of its stores, one after another (a deployment runs one DR job at a time):
create the backup, then poll the job resource at a fixed interval until it ends. This is what a careful
script does, no more: every answer is checked for ArcGIS's `{"error": ...}` envelope (ArcGIS answers
most errors with HTTP 200); an invalid or missing token (498/499) signs in again once; a transient error
(HTTP 429/5xx, a dropped connection) is retried a few times after a short sleep; a failing target never
stops the others. The token travels in the `X-Esri-Authorization` header, never in a URL, and the
secrets come from environment variables only and never appear in the output.

It deliberately has none of the orchestrator's machinery (no backoff, no jitter, no fleet-wide limits,
no check of the store's backup list, no recovery of a create whose answer was lost): that difference is
what the benchmark measures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import requests

TOKEN_PATH: Final = "/sharing/rest/generateToken"
CREATE_PATH: Final = "/admin/system/disasterrecovery/stores/{store}/backups/create"
JOB_PATH: Final = "/admin/jobs/{job_id}"
# The documented end states, and the spellings Esri's own clients also test for (see the reference, §2).
TERMINAL_STATUSES: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED OUT", "TIME OUT", "ERROR"})
TOKEN_MINUTES: Final = "60"  # what Esri's CLI asks for
RETRIES: Final = 3  # extra attempts after a transient error
RETRY_SLEEP_S: Final = 1.0
TIMEOUT_S: Final = (10.0, 120.0)  # connect, read: so a dead server cannot hang a bench
TRANSIENT_HTTP: Final = frozenset({429, 500, 502, 503, 504})
# Refused before the server did anything: the only errors after which a create is safely sent again.
NOT_CARRIED_OUT_HTTP: Final = frozenset({429, 503})
DEFAULT_POLL_INTERVAL_S: Final = 10.0  # Esri's CLI
DEFAULT_JOB_DEADLINE_S: Final = 7500.0  # the server's own 2 h job timeout, and a little more

Outcome = Literal["succeeded", "failed", "not_started", "abandoned"]
RequestKind = Literal["token", "create", "job", "other"]


class InputError(Exception):
    """The targets file, the environment or the arguments cannot be used (exit code 2)."""


class CapReached(Exception):
    """The time cap has passed: nothing more is sent, the target in hand is abandoned."""


class ApiError(Exception):
    """A request that failed: an error envelope, an HTTP error, a broken answer or a network error."""

    def __init__(self, message: str, *, code: int | None = None, transient: bool = False, auth: bool = False):
        super().__init__(message)
        self.code = code
        self.transient = transient
        self.auth = auth


@dataclass(frozen=True, slots=True)
class Target:
    deployment: str
    url: str  # the deployment's root, web context included (no trailing slash)
    username: str
    store: str
    backup_name: str


@dataclass(frozen=True, slots=True)
class TargetsFile:
    password_env: str
    passcode_env: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Secrets:
    password: str = field(repr=False)
    passcode: str = field(repr=False)


@dataclass(slots=True)
class TargetRecord:
    """What happened to one target. Epoch seconds (time.time()), as the simulator stamps its jobs."""

    deployment: str
    store: str
    backup_name: str
    job_id: str | None = None
    sent_at: float | None = None  # the create was first sent
    accepted_at: float | None = None  # the create's answer (with its job id) came back
    detected_at: float | None = None  # the poll that saw the end status returned
    outcome: Outcome = "not_started"
    server_status: str | None = None  # the last job status seen
    polls: int = 0  # job polls answered
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "store": self.store,
            "backup_name": self.backup_name,
            "job_id": self.job_id,
            "sent_at": self.sent_at,
            "accepted_at": self.accepted_at,
            "detected_at": self.detected_at,
            "outcome": self.outcome,
            "server_status": self.server_status,
            "polls": self.polls,
            "error": self.error,
        }


class RequestCounts:
    """HTTP requests sent, by kind, retries included; shared by every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[RequestKind, int] = {"token": 0, "create": 0, "job": 0, "other": 0}

    def add(self, kind: RequestKind) -> None:
        with self._lock:
            self._counts[kind] += 1

    def to_json(self) -> dict[str, int]:
        with self._lock:
            return {kind: n for kind, n in self._counts.items()}


@dataclass(frozen=True, slots=True)
class RunOptions:
    poll_interval_s: float
    job_deadline_s: float
    cap_at: float | None = None  # epoch seconds after which nothing more is sent; None: no cap
    description: str = "fleet benchmark baseline"
    retry_sleep_s: float = RETRY_SLEEP_S

    def capped(self) -> bool:
        return self.cap_at is not None and time.time() >= self.cap_at

    def sleep(self, seconds: float) -> None:
        """time.sleep, cut short by the cap (and then CapReached)."""
        until = time.time() + seconds
        if self.cap_at is not None:
            until = min(until, self.cap_at)
        time.sleep(max(0.0, until - time.time()))
        if self.capped():
            raise CapReached


@dataclass(slots=True)
class RunResult:
    records: list[TargetRecord]
    counts: RequestCounts
    started_at: float
    ended_at: float = 0.0


# -- input --


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: `{key}` must be a non-empty string")
    return value


def load_targets(path: Path) -> TargetsFile:
    """Read and check the targets file; secrets are only named in it, never written."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the targets file ({exc.strerror})") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    entries = data.get("targets")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: `targets` must be a non-empty list")
    targets = []
    for index, entry in enumerate(entries):
        where = f"{path}: targets[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object")
        targets.append(
            Target(
                deployment=_text(entry, "deployment", where),
                url=_text(entry, "url", where).rstrip("/"),
                username=_text(entry, "username", where),
                store=_text(entry, "store", where),
                backup_name=_text(entry, "backup_name", where),
            )
        )
    keys = [(t.deployment, t.store) for t in targets]
    duplicates = sorted({f"{d}/{s}" for d, s in keys if keys.count((d, s)) > 1})
    if duplicates:
        raise InputError(f"{path}: targets appear twice: {', '.join(duplicates)}")
    return TargetsFile(
        password_env=_text(data, "password_env", str(path)),
        passcode_env=_text(data, "passcode_env", str(path)),
        targets=tuple(targets),
    )


def read_secrets(targets: TargetsFile, environ: Mapping[str, str] | None = None) -> Secrets:
    env = os.environ if environ is None else environ
    missing = [name for name in (targets.password_env, targets.passcode_env) if not env.get(name)]
    if missing:
        raise InputError(f"set the environment variable(s) {', '.join(missing)} (secrets are read only from there)")
    return Secrets(password=env[targets.password_env], passcode=env[targets.passcode_env])


# -- HTTP --


def new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # the bench talks to 127.0.0.1: no proxy or .netrc from the environment
    return session


def interpret(response: requests.Response) -> dict[str, Any]:
    """The answer's JSON object, or the ApiError it stands for (an error envelope whatever the status)."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            details = error.get("details")
            detail = f" ({'; '.join(str(d) for d in details)})" if isinstance(details, list) and details else ""
            raise ApiError(
                f"error {code}: {error.get('message', '')}{detail}",
                code=code,
                transient=code in NOT_CARRIED_OUT_HTTP,
                auth=code in (498, 499),
            )
        if error:
            raise ApiError(f"error: {error}")
        if body.get("status") == "error" and "jobid" not in body:  # the classic admin APIs' error
            code = body.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            raise ApiError(f"error {code}: {body.get('messages')}", code=code, auth=code in (498, 499))
    if status in TRANSIENT_HTTP:
        raise ApiError(f"HTTP {status}", code=status, transient=True)
    if not 200 <= status < 300:
        raise ApiError(f"HTTP {status}", code=status, auth=status in (498, 499))
    if not isinstance(body, dict):
        raise ApiError(f"HTTP {status} answer is not a JSON object")
    return body


class Client:
    """One deployment as a plain script sees it: its URL, its account and its current token."""

    def __init__(
        self,
        session: requests.Session,
        target: Target,
        secrets: Secrets,
        counts: RequestCounts,
        options: RunOptions,
    ) -> None:
        self.session = session
        self.url = target.url
        self.username = target.username
        self.secrets = secrets
        self.counts = counts
        self.options = options
        self.token: str | None = None
        self._tokens: list[str] = []  # every token held, to keep them out of the output

    def sign_in(self) -> None:
        form = {
            "username": self.username,
            "password": self.secrets.password,
            "client": "referer",
            "referer": self.url,
            "expiration": TOKEN_MINUTES,
            "f": "json",
        }
        body = self._send("POST", TOKEN_PATH, form, "token", signed=False)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ApiError("the sign-in answer holds no token")
        self.token = token
        self._tokens.append(token)

    def call(
        self, method: str, path: str, form: Mapping[str, str], kind: RequestKind, *, resend_unsure: bool = True
    ) -> dict[str, Any]:
        """A signed request; a 498/499 answer signs in again, once, and sends the request again."""
        if self.token is None:
            self.sign_in()
        try:
            return self._send(method, path, form, kind, resend_unsure=resend_unsure)
        except ApiError as error:
            if not error.auth:
                raise
        self.sign_in()
        return self._send(method, path, form, kind, resend_unsure=resend_unsure)

    def _send(
        self,
        method: str,
        path: str,
        form: Mapping[str, str],
        kind: RequestKind,
        *,
        signed: bool = True,
        resend_unsure: bool = True,
    ) -> dict[str, Any]:
        """One request, retried a few times on a transient error.

        `resend_unsure=False` (the create): retried only when the server surely did not carry it out
        (a 429/503, a connection never made); after a dropped answer or a gateway error it may have,
        and a second create would then fail on the name it took.
        """
        headers = {"X-Esri-Authorization": f"Bearer {self.token}"} if signed else {}
        last: ApiError | None = None
        for attempt in range(RETRIES + 1):
            if attempt:
                self.options.sleep(self.options.retry_sleep_s)
            elif self.options.capped():
                raise CapReached
            self.counts.add(kind)
            try:
                response = self.session.request(
                    method,
                    self.url + path,
                    data=form if method == "POST" else None,
                    params=form if method != "POST" else None,
                    headers=headers,
                    timeout=TIMEOUT_S,
                    allow_redirects=False,
                )
            except requests.ConnectTimeout:
                last = ApiError("connection timed out", transient=True)
                continue
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = ApiError(f"connection error: {type(exc).__name__}", transient=True)
                if resend_unsure:
                    continue
                raise last from None
            try:
                return interpret(response)
            except ApiError as error:
                if not error.transient or (not resend_unsure and error.code not in NOT_CARRIED_OUT_HTTP):
                    raise
                last = error
        assert last is not None
        raise last

    def scrub(self, text: str) -> str:
        """The text with the password, the passcode and every token held replaced by `***`."""
        for secret in (self.secrets.password, self.secrets.passcode, *self._tokens):
            if secret:
                text = text.replace(secret, "***")
        return text


# -- the per-target sequence --

Work = list[tuple[Target, TargetRecord]]  # one deployment's targets, in file order


def group_by_deployment(targets: Sequence[Target], records: Sequence[TargetRecord]) -> list[Work]:
    """One unit of work per deployment (its stores one after another), in order of first appearance."""
    groups: dict[str, Work] = {}
    for target, record in zip(targets, records, strict=True):
        groups.setdefault(target.deployment, []).append((target, record))
    return list(groups.values())


def back_up_deployment(
    session: requests.Session, work: Work, secrets: Secrets, counts: RequestCounts, options: RunOptions
) -> None:
    """Sign in, then back up each store in turn. Never raises: every outcome lands in the records."""
    if options.capped():
        return  # all stay not_started
    client = Client(session, work[0][0], secrets, counts, options)
    try:
        client.sign_in()
    except CapReached:
        return
    except Exception as exc:  # a failed sign-in fails every store of the deployment, and nothing else
        for _, record in work:
            record.outcome = "failed"
            record.error = client.scrub(f"sign-in failed: {_describe(exc)}")
        return
    for target, record in work:
        try:
            back_up_target(client, target, record, options)
        except CapReached:
            if record.sent_at is not None:
                record.outcome = "abandoned"
            return  # the rest stay not_started
        except Exception as exc:
            record.outcome = "failed"
            record.error = client.scrub(_describe(exc))


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"


def back_up_target(client: Client, target: Target, record: TargetRecord, options: RunOptions) -> None:
    """Create the backup, then poll its job every `poll_interval_s` until it ends or the deadline passes."""
    form = {
        "name": target.backup_name,
        "passcode": client.secrets.passcode,
        "description": options.description,
        "f": "json",
    }
    record.sent_at = time.time()
    created = client.call(
        "POST", CREATE_PATH.format(store=quote(target.store, safe="")), form, "create", resend_unsure=False
    )
    job_id = created.get("jobid")
    if not isinstance(job_id, str) or not job_id:
        raise ApiError("the create answer holds no jobid")
    record.accepted_at = time.time()
    record.job_id = job_id
    record.server_status = created.get("status") if isinstance(created.get("status"), str) else None
    deadline = record.accepted_at + options.job_deadline_s
    path = JOB_PATH.format(job_id=quote(job_id, safe=""))
    while True:
        job = client.call("GET", path, {"f": "json"}, "job")
        now = time.time()
        record.polls += 1
        status = job.get("status")
        record.server_status = status if isinstance(status, str) else None
        if status in TERMINAL_STATUSES:
            record.detected_at = now
            if status == "COMPLETED":
                record.outcome = "succeeded"
            else:
                messages = job.get("messages")
                said = f": {'; '.join(str(m) for m in messages)}" if isinstance(messages, list) and messages else ""
                record.outcome = "failed"
                record.error = client.scrub(f"job ended {status}{said}")
            return
        if now >= deadline:  # UNAVAILABLE and unknown statuses are polled on, until here
            record.outcome = "failed"
            record.error = f"job still {status} after the {options.job_deadline_s:g} s job deadline"
            return
        options.sleep(options.poll_interval_s)


# -- the CLI --


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--targets", type=Path, required=True, metavar="FILE", help="the targets file (JSON)")
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=DEFAULT_POLL_INTERVAL_S,
        metavar="SECONDS",
        help=f"fixed time between two polls of a job (default {DEFAULT_POLL_INTERVAL_S:g}, as Esri's CLI)",
    )
    parser.add_argument(
        "--job-deadline",
        type=_positive,
        default=DEFAULT_JOB_DEADLINE_S,
        metavar="SECONDS",
        help=f"give up on a job this long after its create was accepted (default {DEFAULT_JOB_DEADLINE_S:g})",
    )
    parser.add_argument(
        "--time-cap",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop everything this long after the start: targets not started are not_started, running ones abandoned",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the records (JSON)")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def report(contender: str, workers: int, args: argparse.Namespace, result: RunResult) -> dict[str, Any]:
    capped = any(r.outcome in ("not_started", "abandoned") for r in result.records)
    return {
        "contender": contender,
        "workers": workers,
        "poll_interval_s": args.poll_interval,
        "job_deadline_s": args.job_deadline,
        "time_cap_s": args.time_cap,
        "started_at": result.started_at,
        "ended_at": result.ended_at,
        "capped": capped,
        "requests": result.counts.to_json(),
        "targets": [r.to_json() for r in result.records],
    }


Runner = Callable[[TargetsFile, Secrets, RunOptions, float], RunResult]


def run_cli(contender: str, workers: int, args: argparse.Namespace, runner: Runner) -> int:
    """Load, run, write the records. Exit 0 once the records are written (whatever the outcomes), 2 on bad input."""
    try:
        targets = load_targets(args.targets)
        secrets = read_secrets(targets)
        if not args.out.parent.is_dir():
            raise InputError(f"{args.out.parent}: no such folder for --out")
    except InputError as exc:
        print(f"{contender}: {exc}", file=sys.stderr)
        return 2
    started = time.time()
    options = RunOptions(
        poll_interval_s=args.poll_interval,
        job_deadline_s=args.job_deadline,
        cap_at=started + args.time_cap if args.time_cap is not None else None,
        description=f"fleet benchmark baseline ({contender})",
    )
    result = runner(targets, secrets, options, started)
    document = report(contender, workers, args, result)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    outcomes: dict[str, int] = {}
    for record in result.records:
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    took = result.ended_at - result.started_at
    print(
        f"{contender}: {len(result.records)} targets in {took:.1f} s: {summary}; records in {args.out}", file=sys.stderr
    )
    return 0


def new_records(targets: TargetsFile) -> list[TargetRecord]:
    return [TargetRecord(t.deployment, t.store, t.backup_name) for t in targets.targets]
