"""What a simulated fleet looks like: the fleet file, the named fault profiles, and their resolution.

A fleet file is TOML::

    seed = 7
    count = 200                       # generated deployments gis-0000 ... gis-0199
    versions = { "11.3" = 3, "11.4" = 1, "12.0" = 1 }
    stores = ["default", "offsite"]
    profile = "flaky"
    job_duration = { dist = "lognormal", median = 2.0, sigma = 0.3 }

    [faults]                          # overrides on top of the profile, fleet-wide
    http_429 = 0.05

    [history]                         # the backups already there, over the profile's, key by key
    days = 30

    [[deployments]]                   # explicit deployments, each key overrides the fleet's
    name = "gis-eu-1"
    version = "10.9"
    wrong_credentials = true

`resolve_fleet` turns that into one frozen `DeploymentPlan` per deployment. It is pure and seeded:
the same file and seed always give the same fleet.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""Deployment names are DNS labels, so no deployment can shadow the `/_simulator` path."""

KNOWN_VERSIONS: Final = ("10.9", "10.9.1", "11.0", "11.1", "11.2", "11.3", "11.4", "11.5", "12.0")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """A distribution of seconds: `fixed` (value), `uniform` (low..high) or `lognormal` (median, sigma).

    `low` / `high` also clamp a lognormal draw, so a long tail stays bounded.
    """

    dist: Literal["fixed", "uniform", "lognormal"] = "fixed"
    value: float = Field(0.0, ge=0)
    median: float = Field(1.0, gt=0)
    sigma: float = Field(0.0, ge=0)
    low: float = Field(0.0, ge=0)
    high: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Distribution:
        if self.high is not None and self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low}); swap them")
        if self.dist == "uniform" and self.high is None:
            raise ValueError("a uniform distribution needs `high`")
        return self

    def sample(self, rng: random.Random) -> float:
        if self.dist == "fixed":
            return self.value
        if self.dist == "uniform":
            assert self.high is not None
            return rng.uniform(self.low, self.high)
        drawn = rng.lognormvariate(math.log(self.median), self.sigma)
        return min(max(drawn, self.low), self.high if self.high is not None else math.inf)


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class FaultProfile(_Strict):
    """How a deployment misbehaves. Probabilities are per request (or per job, for `job_failure`)."""

    latency: Distribution = Distribution()
    http_5xx: Probability = 0.0  # 502/503 from the ingress, with Retry-After
    http_429: Probability = 0.0  # 429 Too Many Requests, with Retry-After
    retry_after_s: int = Field(1, ge=0)
    reset: Probability = 0.0  # the connection is reset before any answer
    hang: Probability = 0.0  # the answer never comes (the connection is held, then reset)
    hang_s: float = Field(30.0, ge=0)
    lost_create: Probability = 0.0  # the backup is created, then the connection drops before the answer
    late_5xx: Probability = 0.0  # the backup is created, then the gateway answers 502 or 504 (upstream slow)
    job_failure: Probability = 0.0  # the DR job ends FAILED with messages
    unavailable_blip: Probability = 0.0  # a job poll answers status UNAVAILABLE
    token_lifetime_s: float | None = Field(None, gt=0)  # caps every token's life: tokens expire mid-job
    down_fraction: Probability = 0.0  # share of deployments that are down for a window
    down_after_s: float = Field(0.0, ge=0)  # the window opens this long after the fleet starts
    down_for_s: float = Field(0.0, ge=0)  # and stays open this long
    wrong_credentials_fraction: Probability = 0.0  # share of deployments whose admin password differs


PROFILES: Final[Mapping[str, FaultProfile]] = {
    "none": FaultProfile(),
    # A realistic night: mostly fine, with the odd proxy error, throttle, reset and failed job.
    "flaky": FaultProfile(
        latency=Distribution(dist="lognormal", median=0.004, sigma=0.6, high=0.2),
        http_5xx=0.01,
        http_429=0.01,
        reset=0.003,
        hang=0.001,
        hang_s=10.0,
        lost_create=0.02,
        late_5xx=0.01,
        job_failure=0.03,
        unavailable_blip=0.02,
    ),
    # Everything at once.
    "hostile": FaultProfile(
        latency=Distribution(dist="lognormal", median=0.01, sigma=1.0, high=1.0),
        http_5xx=0.05,
        http_429=0.05,
        reset=0.02,
        hang=0.01,
        hang_s=10.0,
        lost_create=0.1,
        late_5xx=0.05,
        job_failure=0.1,
        unavailable_blip=0.1,
        token_lifetime_s=3.0,
        down_fraction=0.05,
        down_after_s=1.0,
        down_for_s=5.0,
        wrong_credentials_fraction=0.02,
    ),
}


class History(_Strict):
    """The scheduled backups each deployment already has when the fleet starts (see `history.py`).

    Shares marked "per deployment" are drawn once for each deployment, the others once for each backup.
    """

    days: float = Field(0.0, ge=0, le=366)  # the history spans this many days before the fleet starts (0: none)
    every_hours: float = Field(24.0, ge=1)  # one scheduled backup per store every this many hours
    failed: Probability = 0.0  # share of history backups that ended `failed`
    retention_days: float | None = Field(None, gt=0)  # the usual retention; None (key left out): never expires
    no_retention: Probability = 0.0  # share of backups kept forever (retentionDate -1) whatever the usual
    short_retention: Probability = 0.0  # share of backups kept only `short_retention_days`
    short_retention_days: float = Field(2.0, gt=0)  # how long those few are kept
    stale: Probability = 0.0  # per deployment: its history stopped `stale_days` before the fleet starts
    stale_days: float = Field(5.0, gt=0)  # how long before the fleet starts a stale deployment's history stopped
    # Per deployment: upgraded since its newest backup, so every history backup and `versionCreated` carry the
    # release before its version (11.3 -> 11.2.0); never for 10.9, the first known release.
    upgraded: Probability = 0.0
    other_stores: Probability = 1.0  # per deployment: its non-default stores have history too (else default only)

    @model_validator(mode="after")
    def _shares_add_up(self) -> History:
        if self.no_retention + self.short_retention > 1:
            raise ValueError("no_retention + short_retention is over 1: they are shares of the same backups")
        return self


HISTORIES: Final[Mapping[str, History]] = {
    "none": History(),
    # Two weeks of nightly backups, kept 14 days, with a few of each kind of compliance problem.
    "flaky": History(
        days=14.0,
        failed=0.03,
        retention_days=14.0,
        no_retention=0.02,
        short_retention=0.02,
        stale=0.03,
        upgraded=0.03,
        other_stores=0.9,
    ),
    # The same fortnight with many more of them.
    "hostile": History(
        days=14.0,
        failed=0.15,
        retention_days=14.0,
        no_retention=0.1,
        short_retention=0.1,
        stale=0.15,
        stale_days=10.0,
        upgraded=0.1,
        other_stores=0.6,
    ),
}
"""The history each fault profile brings; a fleet's `[history]` and a deployment's `history` go on top."""


class ErrorCodes(_Strict):
    """Codes of the refusals the real API does not document ([SIM] in the reference)."""

    job_running: int = 409  # a second DR job while one runs
    duplicate_name: int = 409  # a backup name that already exists in the store
    bad_passcode: int = 400  # passcode shorter than 8 characters
    unknown_store: int = 404
    not_found: int = 404  # unknown backup, job or resource
    method_not_allowed: int = 405  # GET on a POST-only operation


class Quirks(_Strict):
    """Version quirks and undocumented behaviours, each a setting with the reference's suggestion."""

    instant_complete_versions: tuple[str, ...] = ("11.4",)  # job COMPLETED at once, backup appears later
    no_result_versions: tuple[str, ...] = ("12.0",)  # COMPLETED job without `result`
    queue_fraction: float = Field(0.05, ge=0, lt=1)  # share of a job's duration spent SUBMITTED
    strict_post_token: bool = False  # refuse a POST whose token is only in the query string
    job_ttl_s: float | None = Field(None, gt=0)  # forget finished jobs after this long (None: never)
    backup_release_suffix: str = ""  # appended to `release` in backups (tests of release checks)
    echo_request_in_errors: bool = False  # a careless server: errors repeat the request, secrets and all


Overrides = dict[str, Any]


class DeploymentSpec(_Strict):
    """One explicit deployment; every key left out comes from the fleet."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str | None = None
    stores: tuple[str, ...] | None = None
    default_store: str | None = None
    username: str | None = None
    job_duration: Distribution | None = None
    job_timeout_s: float | None = Field(None, gt=0)
    profile: str | None = None
    faults: Overrides = Field(default_factory=dict)
    history: Overrides = Field(default_factory=dict)  # this deployment's own History keys
    wrong_credentials: bool | None = None
    forbidden: bool = False  # the account signs in but lacks the DR privilege: 403 on DR resources and jobs
    down: tuple[float, float] | None = None  # seconds after fleet start: [opens, closes)


class FleetConfig(_Strict):
    """The whole fleet file."""

    seed: int = 0
    count: int = Field(0, ge=0, le=100_000)
    name_template: str = "gis-{index:04d}"
    versions: dict[str, float] = Field(
        default_factory=lambda: {
            "10.9": 1.0,
            "10.9.1": 1.0,
            "11.3": 6.0,
            "11.4": 4.0,
            "11.5": 4.0,
            "12.0": 4.0,
        }
    )
    stores: tuple[str, ...] = ("default",)
    default_store: str | None = None
    username: str = "admin"
    job_duration: Distribution = Distribution(dist="lognormal", median=2.0, sigma=0.35, low=0.3, high=10)
    # None: every job draws its duration from `job_duration`. A number: each deployment draws its own
    # typical duration from `job_duration` once (a big organisation is slow every night), and each of
    # its jobs varies around it by a lognormal of this sigma (night-to-night variation).
    night_to_night: float | None = Field(None, ge=0)
    job_timeout_s: float = Field(7200.0, gt=0)  # the server's own `timeoutInSeconds` (2 h by default)
    token_default_minutes: int = Field(120, gt=0)  # generateToken without `expiration`
    token_max_minutes: int = Field(20_160, gt=0)  # a longer request is capped, not refused
    profile: str = "none"
    faults: Overrides = Field(default_factory=dict)
    history: Overrides = Field(default_factory=dict)  # History keys over the profile's, fleet-wide
    error_status: Literal["200", "mirror"] = "200"  # 200 with an error body, or the code in the status line
    error_codes: ErrorCodes = ErrorCodes()
    quirks: Quirks = Quirks()
    record_requests: bool = True  # keep every request record (counts are kept regardless)
    deployments: tuple[DeploymentSpec, ...] = ()

    @field_validator("versions")
    @classmethod
    def _known_versions(cls, versions: dict[str, float]) -> dict[str, float]:
        for version, weight in versions.items():
            _check_version(version)
            if weight < 0:
                raise ValueError(f"weight of {version} is negative")
        if not any(weight > 0 for weight in versions.values()):
            raise ValueError("at least one version needs a positive weight")
        return versions

    @field_validator("name_template")
    @classmethod
    def _template_gives_names(cls, template: str) -> str:
        try:
            first, second = template.format(index=0), template.format(index=1)
        except (KeyError, IndexError, ValueError):
            raise ValueError("use {index} (e.g. 'gis-{index:04d}') and no other placeholder") from None
        if first == second:
            raise ValueError("the template must contain {index}, or every name would be the same")
        if not re.fullmatch(NAME_PATTERN, first):
            raise ValueError(f"gives {first!r}, not a DNS label (lower-case letters, digits, '-')")
        return template

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        return _check_profile(profile)

    @model_validator(mode="after")
    def _consistent(self) -> FleetConfig:
        names = [spec.name for spec in self.deployments]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"deployment names appear twice: {', '.join(duplicates)}")
        if self.count == 0 and not self.deployments:
            raise ValueError("the fleet is empty: set `count` or add [[deployments]]")
        faults_of(self.profile, self.faults)
        history_of(self.profile, self.history)
        for spec in self.deployments:
            if spec.version is not None:
                _check_version(spec.version)
            if spec.profile is not None:
                _check_profile(spec.profile)
            faults_of(spec.profile or self.profile, self.faults, spec.faults)
            history_of(spec.profile or self.profile, self.history, spec.history)
            _check_stores(spec.stores or self.stores, spec.default_store or self.default_store)
        _check_stores(self.stores, self.default_store)
        return self


def faults_of(profile: str, *overrides: Overrides) -> FaultProfile:
    """A named profile with overrides on top, validated like the profile itself."""
    if not any(overrides):
        return PROFILES[profile]  # shared, not copied: 10,000 deployments need one profile object
    merged: dict[str, Any] = PROFILES[profile].model_dump()
    for override in overrides:
        merged.update(override)
    try:
        return FaultProfile.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"faults.{field}: {first['msg']}") from None


def history_of(profile: str, *overrides: Overrides) -> History:
    """A profile's history with overrides on top, key by key, validated like the history itself."""
    if not any(overrides):
        return HISTORIES[profile]  # shared, like the fault profile
    merged: dict[str, Any] = HISTORIES[profile].model_dump()
    for override in overrides:
        merged.update(override)
    try:
        return History.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"history.{field or '(table)'}: {first['msg']}") from None


def previous_version(version: str) -> str | None:
    """The release before `version` among the known ones (11.3 -> 11.2, 10.9.1 -> 10.9), None for the first."""
    index = KNOWN_VERSIONS.index(version)
    return KNOWN_VERSIONS[index - 1] if index else None


def full_version(version: str) -> str:
    """`fullVersion` as the server spells it: three parts (11.3 -> 11.3.0, 10.9.1 stays)."""
    return version if version.count(".") == 2 else f"{version}.0"


def _check_version(version: str) -> None:
    if version not in KNOWN_VERSIONS:
        raise ValueError(f"unknown version {version!r}; use one of {', '.join(KNOWN_VERSIONS)}")


def _check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown fault profile {profile!r}; use one of {', '.join(PROFILES)}")
    return profile


def _check_stores(stores: tuple[str, ...], default_store: str | None) -> None:
    if not stores:
        raise ValueError("a deployment needs at least one backup store")
    if default_store is not None and default_store not in stores:
        raise ValueError(f"default_store {default_store!r} is not one of the stores {list(stores)}")


class FleetFileError(ValueError):
    """A fleet file that cannot be used; the message names the file, the field and the fix."""


def load_fleet_file(path: Path, **overrides: Any) -> FleetConfig:
    """Read a fleet file; `overrides` (from the command line) win over the file's keys."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FleetFileError(f"{path}: cannot read the fleet file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetFileError(f"{path}: not valid TOML: {exc}") from None
    merged = dict(data)
    for key, value in overrides.items():
        base = merged.get(key)
        merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    return fleet_from_mapping(merged, source=str(path))


def fleet_from_mapping(data: Mapping[str, Any], source: str = "fleet") -> FleetConfig:
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise FleetFileError(f"{source}: {len(problems)} problem(s):\n" + "\n".join(problems)) from None


@dataclass(frozen=True, slots=True)
class DeploymentPlan:
    """Everything the simulator needs to know about one deployment, resolved and frozen."""

    index: int
    name: str
    version: str
    stores: tuple[str, ...]
    default_store: str
    username: str
    wrong_credentials: bool
    forbidden: bool
    job_duration: Distribution
    job_timeout_s: float
    faults: FaultProfile
    down: tuple[float, float] | None
    history: History = HISTORIES["none"]

    @property
    def legacy_only(self) -> bool:
        """10.9 has only the `backuprestore` paths; the store-scoped ones came with 10.9.1."""
        return version_tuple(self.version) < (10, 9, 1)

    @property
    def has_timeout_setting(self) -> bool:
        return version_tuple(self.version) >= (11, 0)


def _own_durations(config: FleetConfig, sizes: random.Random) -> Distribution:
    """A deployment's job durations: the fleet's, or (with `night_to_night`) its own around a typical one."""
    typical = config.job_duration.sample(sizes)  # drawn for every deployment, so the stream stays aligned
    if config.night_to_night is None:
        return config.job_duration
    fleet = config.job_duration
    return Distribution(
        dist="lognormal", median=max(typical, 1e-3), sigma=config.night_to_night, low=fleet.low, high=fleet.high
    )


def resolve_fleet(config: FleetConfig) -> list[DeploymentPlan]:
    """One plan per deployment: explicit ones first, in file order, then the generated ones."""
    rng = random.Random(f"fleet:{config.seed}")
    versions, weights = zip(*config.versions.items(), strict=True)
    explicit = {spec.name for spec in config.deployments}
    generated = (
        DeploymentSpec(name=name)
        for name in (config.name_template.format(index=i) for i in range(config.count))
        if name not in explicit
    )
    plans = []
    sizes = random.Random(f"sizes:{config.seed}")  # its own stream: turning it on shifts no other draw
    for index, spec in enumerate((*config.deployments, *generated)):
        faults = faults_of(spec.profile or config.profile, config.faults, spec.faults)
        history = history_of(spec.profile or config.profile, config.history, spec.history)
        stores = spec.stores or config.stores
        default_store = spec.default_store or config.default_store or stores[0]
        # Every draw happens for every deployment, so one deployment's overrides never shift another's.
        drawn_version = rng.choices(versions, weights)[0]
        drawn_down = rng.random() < faults.down_fraction
        drawn_wrong = rng.random() < faults.wrong_credentials_fraction
        down_window = (faults.down_after_s, faults.down_after_s + faults.down_for_s) if drawn_down else None
        plans.append(
            DeploymentPlan(
                index=index,
                name=spec.name,
                version=spec.version or drawn_version,
                stores=stores,
                default_store=default_store,
                username=spec.username or config.username,
                wrong_credentials=drawn_wrong if spec.wrong_credentials is None else spec.wrong_credentials,
                forbidden=spec.forbidden,
                job_duration=spec.job_duration or _own_durations(config, sizes),
                job_timeout_s=spec.job_timeout_s or config.job_timeout_s,
                faults=faults,
                down=spec.down if spec.down is not None else down_window,
                history=history,
            )
        )
    return plans
