"""Run settings: command-line flags, then ORCHESTRATOR_* variables, then a settings file, then defaults.

Read once, at the edge (`cli`); everything else takes the frozen `RunSettings` object.
"""

from __future__ import annotations

import math
import os
import re
import string
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from orchestrator.backoff import Backoff, Retry
from orchestrator.errors import InputError
from orchestrator.redact import MASK
from orchestrator.shard import parse_shard

NAME_FIELDS: Final = frozenset({"timestamp", "deployment", "store", "run_id"})
DEFAULT_NAME_TEMPLATE: Final = "backup-{timestamp}-{deployment}"


@dataclass(frozen=True, slots=True)
class FailureBudget:
    """`--max-failures`: stop submitting once this many (or this share of all) targets failed."""

    count: int | None = None
    percent: float | None = None

    def exceeded(self, failed: int, total: int) -> bool:
        if self.count is not None and failed >= self.count:
            return True
        return self.percent is not None and total > 0 and failed * 100 >= self.percent * total


def parse_failure_budget(text: str | None) -> FailureBudget:
    if text is None or text == "":
        return FailureBudget()
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is neither a count (e.g. 5) nor a share (e.g. 10%)")
    number, percent = match.groups()
    if percent:
        if not 0 < float(number) <= 100:
            raise ValueError("a share must be above 0% and at most 100%")
        return FailureBudget(percent=float(number))
    if "." in number or int(number) < 1:
        raise ValueError("a count must be a whole number of at least 1")
    return FailureBudget(count=int(number))


class ConnectionSettings(BaseSettings):
    """What every command that reads or backs up the fleet shares: which deployments, how requests are made,
    where reports go. `RunSettings` (run, snapshot, plan) and `AuditSettings` build on it."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="forbid", frozen=True)

    inventory: Path | None = Field(None, description="inventory file (TOML or CSV)")
    select: tuple[str, ...] = Field((), description="tag=TAG or name=GLOB; repeat to narrow (all must match)")
    concurrency: int = Field(32, ge=1, le=10_000, description="HTTP requests in flight at once, fleet-wide")
    retries: int = Field(
        100,
        ge=0,
        le=10_000,
        description="at most this many retries of a request or create that failed transiently (0: none); "
        "a guard: --retry-for ends them first",
    )
    retry_for: float = Field(
        300.0,
        ge=0,
        description="retry a request or create that failed transiently for up to this many seconds from its "
        "first attempt (never longer than --job-timeout or --deadline)",
    )
    retry_initial: float = Field(1.0, ge=0, description="first retry after up to this many seconds")
    retry_max: float = Field(30.0, ge=0, description="longest wait between retries, seconds")
    request_timeout: float = Field(60.0, gt=0, description="whole HTTP request, seconds")
    connect_timeout: float = Field(10.0, gt=0, description="TCP and TLS connect, seconds")
    read_timeout: float = Field(30.0, gt=0, description="longest silence while an answer is awaited or read, seconds")
    token_minutes: int = Field(60, ge=1, description="token lifetime asked of generateToken, minutes")
    report_dir: Path = Field(Path("reports"), description="reports go to a folder of their own under REPORT_DIR")
    breaker_threshold: int = Field(
        5, ge=1, description="transport failures in a row that mark a deployment unreachable for a while"
    )
    breaker_cooldown: float = Field(60.0, gt=0, description="seconds an unreachable deployment is left alone")
    quiet: bool = Field(False, description="only the final summary")
    metrics_file: Path | None = Field(
        None, description="write Prometheus metrics here (textfile collector format), atomically, at the end"
    )
    notify: tuple[str, ...] = Field((), description="Apprise URL to send the summary to; repeat for more")
    notify_on: Literal["failure", "always"] = Field("failure", description="when to notify: failure or always")
    shard: str | None = Field(
        None,
        description="K/N: only the deployments whose name hashes to shard K (0 to N-1) of N; "
        "/N: K from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs)",
    )

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        """Recorded as K/N, K resolved: the run's report and ledger say which shard it was."""
        return None if value is None else str(parse_shard(value, os.environ))

    @property
    def retry_policy(self) -> Retry:
        """How transient errors are retried: requests by the client, creates by `submit`."""
        return Retry(self.retries, Backoff(self.retry_initial, 2.0, self.retry_max), self.retry_for)

    def public(self) -> dict[str, Any]:
        """The settings as written into reports and the ledger: no secret among them. A notification URL
        carries its service's token in any part (slack://TokenA/TokenB/...): only its scheme is kept."""
        settings = self.model_dump(mode="json")
        settings["notify"] = [f"{url.partition('://')[0]}://{MASK}" for url in self.notify]
        return settings


class AuditSettings(ConnectionSettings):
    """Every setting of a compliance audit: the connection settings and the policy."""

    policy: Path | None = Field(None, description="compliance policy (TOML); default: the inventory's [policy]")
    # A read that fails is read again tomorrow; the audit of a fleet with a stopped deployment in it should
    # end in a minute or two, not wait five for the one that cannot answer.
    retry_for: float = Field(
        60.0,
        ge=0,
        description="retry a read that failed transiently for up to this many seconds from its first attempt",
    )


class RunSettings(ConnectionSettings):
    """Every setting of a fleet run. Each default is explained in the README and in `--help`."""

    max_running: int = Field(0, ge=0, description="backup jobs running at once, fleet-wide (0: no cap)")
    poll_initial: float = Field(
        1.0,
        gt=0,
        description="first poll of a job nothing is known of, this many seconds after it started (a job at least "
        "this long is seen ended within --poll-lag of its duration)",
    )
    poll_max: float = Field(60.0, gt=0, description="longest wait between two polls of one job, seconds")
    poll_factor: float = Field(
        2.0, ge=1, description="no longer used (polls follow --poll-lag); accepted so that settings naming it load"
    )
    poll_lag: float = Field(
        0.08,
        gt=0,
        le=1,
        description="once a job may be done, the longest a poll comes after its end, as a share of its duration",
    )
    job_timeout: float = Field(7500.0, gt=0, description="give up following a job after this many seconds")
    deadline: float | None = Field(None, gt=0, description="seconds after start: submit nothing new after it")
    max_failures: str | None = Field(None, description="N or P%: stop submitting once reached")
    grace: float = Field(30.0, ge=0, description="after Ctrl-C / SIGTERM, follow running jobs this long")
    name_template: str = Field(
        DEFAULT_NAME_TEMPLATE, description="backup name; {timestamp} {deployment} {store} {run_id}"
    )
    description: str = Field("fleet backup {run_id}", description="backup description; same fields as the name")
    ledger: Path | None = Field(
        None, description="run ledger (SQLite) for resume, retry and history; default REPORT_DIR/ledger.sqlite3"
    )
    record_ledger: bool = Field(
        True, description="keep the run ledger (--no-ledger: keep none; then no resume, retry or history)"
    )
    log_format: Literal["text", "json"] = Field("text", description="log lines when not on a terminal")
    remember_for: float = Field(
        7 * 86_400.0,
        ge=0,
        description="go by a deployment's version and default store as an earlier run read them for up to this "
        "many seconds (each deployment half to all of it), instead of asking; 0: ask every run (not for snapshot)",
    )

    @field_validator("max_failures")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        parse_failure_budget(value)
        return value

    @field_validator("name_template", "description")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        unknown = fields - NAME_FIELDS
        if unknown:
            raise ValueError(
                f"unknown field(s) {sorted(unknown)}; use {{timestamp}} {{deployment}} {{store}} {{run_id}}"
            )
        return value

    @model_validator(mode="after")
    def _poll_bounds(self) -> RunSettings:
        if self.poll_max < self.poll_initial:
            raise ValueError(f"poll_max ({self.poll_max}) is below poll_initial ({self.poll_initial})")
        return self

    @property
    def failure_budget(self) -> FailureBudget:
        return parse_failure_budget(self.max_failures)

    @property
    def retry_policy(self) -> Retry:
        """As for every command, with a budget no longer than the job timeout or the run's deadline: retrying
        one request or create must not outlast the whole of either."""
        policy = super().retry_policy
        budget = min(policy.budget, self.job_timeout, self.deadline if self.deadline is not None else math.inf)
        return replace(policy, budget=budget)


SNAPSHOT_NAME_TEMPLATE: Final = "pre-upgrade-{timestamp}-{deployment}"


class SnapshotSettings(RunSettings):
    """A pre-upgrade snapshot: a run's settings, its purpose, and how long its backups are kept."""

    name_template: str = Field(
        SNAPSHOT_NAME_TEMPLATE, description="backup name; {timestamp} {deployment} {store} {run_id}"
    )
    purpose: str = Field("", max_length=200, description="why (required): the backups' description is "
                         "'pre-upgrade: PURPOSE'")  # fmt: skip
    retention_days: float = Field(
        30.0, ge=0, le=36_500, description="days every snapshot is kept (0: never expires), whatever the inventory says"
    )

    @field_validator("purpose")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(not ch.isprintable() for ch in value):
            raise ValueError("must be one line of printable text")
        return value.strip()


def snapshot_identity(settings: SnapshotSettings, chosen: dict[str, Any]) -> SnapshotSettings:
    """A snapshot's backups are named and described as a snapshot's: `name_template` and `description` come
    from `chosen` (the flags given, or the snapshot's own record on resume and retry), never from the
    ORCHESTRATOR_* variables or a settings file it shares with the nightly run."""
    purpose = settings.purpose.replace("{", "{{").replace("}", "}}")  # text, never a name field
    return settings.model_copy(
        update={
            "name_template": chosen.get("name_template", SNAPSHOT_NAME_TEMPLATE),
            "description": chosen.get("description", f"pre-upgrade: {purpose}"),
        }
    )


S = TypeVar("S", bound=ConnectionSettings)


def load_settings(
    flags: dict[str, Any], settings_file: Path | None = None, base: dict[str, Any] | None = None
) -> RunSettings:
    """The settings of a run (see `load_command_settings`)."""
    return load_command_settings(RunSettings, flags, settings_file, base)


def load_command_settings(
    model: type[S], flags: dict[str, Any], settings_file: Path | None = None, base: dict[str, Any] | None = None
) -> S:
    """A command's settings (`model`): flags (only those given) win over ORCHESTRATOR_* variables, which win
    over the settings file (TOML, the same keys), which wins over `base` (a past run's settings, for resume
    and retry), which wins over the defaults. Every problem is an `InputError` naming where the setting came from.

    One settings file serves every command: a key another command takes (`poll_max` to an audit) is left
    to it; a key no command takes is refused."""
    from_file = _settings_file(settings_file, model) if settings_file is not None else {}
    recorded = {k: v for k, v in (base or {}).items() if k in model.model_fields}

    def sources(
        cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            InitSettingsSource(settings_cls, from_file),
            InitSettingsSource(settings_cls, recorded),
        )

    layered = type("Layered", (model,), {"settings_customise_sources": classmethod(sources)})
    try:
        loaded = layered(**flags)
    except SettingsError as exc:  # a variable that does not parse: a list one is a JSON list
        raise InputError([f"settings: {exc}; a list in an ORCHESTRATOR_* variable is written as JSON, e.g. "
                          """ORCHESTRATOR_NOTIFY='["json://127.0.0.1:8080/hook"]'"""]) from None  # fmt: skip
    except ValidationError as exc:
        where = f"settings (flags, ORCHESTRATOR_* variables{', ' + str(settings_file) if settings_file else ''})"
        raise InputError(
            [
                _unknown_setting(str(e["loc"][0]), flags, settings_file)
                if e["type"] == "extra_forbidden" and e["loc"]
                else f"{where}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                for e in exc.errors()
            ]
        ) from None
    return model.model_validate(loaded.model_dump())


def _unknown_setting(key: str, flags: dict[str, Any], settings_file: Path | None) -> str:
    """A key no command takes, where it was written (the settings file's line of it) and the closest known key.
    (An ORCHESTRATOR_* variable no setting has is never read, so never refused.)"""
    from orchestrator.inventory.rules import did_you_mean  # here: `inventory` imports `model`, which imports us

    every = dict.fromkeys((*RunSettings.model_fields, *SnapshotSettings.model_fields, *AuditSettings.model_fields))
    if key in flags or settings_file is None:
        where = "settings (flags)"
    else:
        try:
            lines = settings_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):  # read a moment ago; gone since: the file without its line
            lines = []
        pattern = rf"\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*[=.\]]"
        line = next((n for n, text in enumerate(lines, 1) if re.match(pattern, text)), None)
        where = f"{settings_file}:{line}" if line else str(settings_file)
    return f"{where}: {key}: unknown setting; {did_you_mean(key, every)}"


def _settings_file(path: Path, model: type[ConnectionSettings]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError([f"{path}: cannot read the settings file ({exc.strerror})"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError([f"{path}: not valid TOML: {exc}"]) from None
    every = (*RunSettings.model_fields, *SnapshotSettings.model_fields, *AuditSettings.model_fields)
    for_others = set(every) - set(model.model_fields)
    return {key: value for key, value in data.items() if key not in for_others}
