"""The benchmark's fleet: its simulator fleet file, and the job durations its seed fixes.

Real job durations are lognormal (median 15 min, sigma 0.5) clamped to [2 min, 120 min] across the fleet,
each deployment around its own typical duration night after night (sigma 0.1); every time is
multiplied by the run's scale (1/60 by default: a real minute is a benchmark second). The simulator
draws a deployment's k-th job duration from a stream seeded by (fleet seed, deployment name), so
every contender served by a fresh simulator with the same fleet file meets the same durations,
whatever the order of its requests. `predicted_durations` draws them ahead of any run, with the
simulator's own code on a manual clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from orchestrator.clock import ManualClock
from orchestrator.simulator.config import fleet_from_mapping
from orchestrator.simulator.fleet import SimulatedFleet

REAL_MEDIAN_S: Final = 15 * 60.0
REAL_SIGMA: Final = 0.5
REAL_LOW_S: Final = 2 * 60.0
REAL_HIGH_S: Final = 120 * 60.0
# Each deployment has its own typical duration (drawn from the above); its nights vary around it by this
# lognormal sigma (about +-10 %): a big organisation is slow every night, which a nightly run can learn.
REAL_NIGHT_TO_NIGHT: Final = 0.1
VERSION: Final = "11.3"
STORE_NAMES: Final = ("default", "offsite", "archive", "vault")
_PASSCODE: Final = "prediction-only"  # no secret: the in-process fleet never leaves this module


@dataclass(frozen=True, slots=True)
class FleetSpec:
    deployments: int
    stores: int
    seed: int
    scale: float

    @property
    def store_names(self) -> tuple[str, ...]:
        if not 1 <= self.stores <= len(STORE_NAMES):
            raise ValueError(f"stores must be 1..{len(STORE_NAMES)}")
        return STORE_NAMES[: self.stores]

    @property
    def targets(self) -> int:
        return self.deployments * self.stores

    def job_duration(self) -> dict[str, float | str]:
        return {
            "dist": "lognormal",
            "median": REAL_MEDIAN_S * self.scale,
            "sigma": REAL_SIGMA,
            "low": REAL_LOW_S * self.scale,
            "high": REAL_HIGH_S * self.scale,
        }

    def mapping(self) -> dict[str, object]:
        """The fleet file's keys: profile `none`, one version, the stores, the seeded durations."""
        return {
            "seed": self.seed,
            "count": self.deployments,
            "versions": {VERSION: 1.0},
            "stores": list(self.store_names),
            "profile": "none",
            "job_duration": self.job_duration(),
            "night_to_night": REAL_NIGHT_TO_NIGHT,
        }

    def toml(self) -> str:
        """The fleet file, for `orchestrator simulate --fleet`."""
        duration = ", ".join(f"{key} = {json.dumps(value)}" for key, value in self.job_duration().items())
        return "\n".join(
            [
                "# The fleet benchmark's fleet (benchmarks/bench_fleet.py).",
                f"seed = {self.seed}",
                f"count = {self.deployments}",
                f'versions = {{ "{VERSION}" = 1 }}',
                f"stores = {json.dumps(list(self.store_names))}",
                'profile = "none"',
                f"job_duration = {{ {duration} }}",
                f"night_to_night = {REAL_NIGHT_TO_NIGHT}",
                "",
            ]
        )


def predicted_durations(spec: FleetSpec, night: int = 1) -> dict[str, list[float]]:
    """Each deployment's job durations on the `night`-th run over the fleet, in the order its jobs are
    created, as the simulator will draw them: the simulator's own fleet, on a manual clock, creating
    each deployment's jobs in turn."""
    clock = ManualClock()
    fleet = SimulatedFleet(fleet_from_mapping(spec.mapping(), source="benchmark"), clock=clock, password="unused")
    durations: dict[str, list[float]] = {}
    for name, deployment in fleet.deployments.items():
        jobs = durations.setdefault(name, [])
        for k in range(spec.stores * night):
            job = deployment.create_backup(
                store=spec.store_names[k % spec.stores],
                name=f"predicted-{k}",
                passcode=_PASSCODE,
                description="",
                retention="",
                username=deployment.plan.username,
                operation_uri="",
                now=clock.now(),
            )
            jobs.append(job.work_done_at - job.created_at)
            clock.advance(job.work_done_at - clock.now() + 1.0)  # the next create finds no job running
    return {name: jobs[-spec.stores :] for name, jobs in durations.items()}
