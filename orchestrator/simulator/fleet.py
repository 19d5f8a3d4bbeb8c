"""A whole simulated fleet in one object: its deployments and everything they saw.

Tests and benchmarks inspect it in-process (`fleet.requests`, `fleet.jobs()`, `fleet.stats()`), or over
HTTP under `/_simulator/` (see `server.py`), which serves the same values.
"""

from __future__ import annotations

import resource
import secrets
import sys
import time
from collections import Counter
from typing import Any

from orchestrator.clock import Clock, SystemClock
from orchestrator.simulator.config import FleetConfig, resolve_fleet
from orchestrator.simulator.jobs import Job, ms
from orchestrator.simulator.model import Deployment
from orchestrator.simulator.records import CreateRecord, InFlight, RequestRecord, peak_overlap


class SimulatedFleet:
    """The server-side state of every simulated deployment, on one clock."""

    def __init__(self, config: FleetConfig, *, clock: Clock | None = None, password: str | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        # The admin password every deployment accepts (but those planned with wrong credentials).
        # Generated unless given: it never appears in a file the simulator writes but the secret file.
        self.password = password or secrets.token_urlsafe(18)
        self.started_at = self.clock.now()
        self.plans = resolve_fleet(config)
        self.deployments: dict[str, Deployment] = {
            plan.name: Deployment(
                plan=plan,
                seed=config.seed,
                password=self.password,
                quirks=config.quirks,
                codes=config.error_codes,
                token_default_minutes=config.token_default_minutes,
                token_max_minutes=config.token_max_minutes,
                fleet_started_at=self.started_at,
            )
            for plan in self.plans
        }
        self.requests: list[RequestRecord] = []
        self.creates: list[CreateRecord] = []
        self.all_jobs: list[Job] = []
        self.request_counts: Counter[str] = Counter()
        self.fault_counts: Counter[str] = Counter()
        self.token_sources: Counter[str] = Counter()
        self.secrets_in_urls = 0
        self.in_flight = InFlight()
        self._cpu_at_start = time.process_time()

    def record_request(self, record: RequestRecord) -> None:
        self.request_counts[record.endpoint] += 1
        self.token_sources[record.token_source] += 1
        if record.fault:
            self.fault_counts[record.fault] += 1
        if record.secret_in_url:
            self.secrets_in_urls += 1
        if self.config.record_requests:
            self.requests.append(record)

    def record_create(self, record: CreateRecord, job: Job | None) -> None:
        self.creates.append(record)
        if job is not None:
            self.all_jobs.append(job)

    def settle(self) -> None:
        now = self.clock.now()
        for deployment in self.deployments.values():
            deployment.settle(now)

    def reconfigure(
        self,
        name: str,
        *,
        version: str | None = None,
        stores: tuple[str, ...] | None = None,
        default_store: str | None = None,
    ) -> None:
        """Change a deployment between runs, as its administrator would (`model.Deployment.reconfigure`); the
        fleet's plans follow, so an inventory written from them afterwards says the same."""
        deployment = self.deployments[name]
        deployment.reconfigure(version=version, stores=stores, default_store=default_store)
        self.plans = [deployment.plan if plan.name == name else plan for plan in self.plans]

    # -- inspection --
    def jobs(self, deployment: str | None = None) -> list[dict[str, Any]]:
        """Every backup job ever created, with its server-side timeline (epoch seconds)."""
        now = self.clock.now()
        return [
            {
                "deployment": job.deployment,
                "store": job.store,
                "job_id": job.job_id,
                "backup_name": job.backup_name,
                "created_at": job.created_at,
                "executing_at": job.executing_at,
                "reported_end_at": job.reported_end_at,
                "completed_at": job.work_done_at,  # when the server really finished the work
                "final_status": job.final_status.value,
                "status_now": job.status_at(now).value,
                "running": job.is_running_at(now),
            }
            for job in self.all_jobs
            if deployment is None or job.deployment == deployment
        ]

    def backups(self, deployment: str | None = None, *, history: bool = False) -> list[dict[str, Any]]:
        """The backups created through the API (by the orchestrator, or a test) that exist now, after the
        retention cleaner has run: what a run made. `history=True` adds the seeded history, as the stores
        list it (`scheduleType` tells them apart: `MANUAL` created, `SCHEDULED` seeded)."""
        self.settle()
        return [
            {"deployment": d.name, **backup.to_json()}
            for d in self.deployments.values()
            if deployment is None or d.name == deployment
            for store in d.backups.values()
            for backup in store.values()
            if history or backup.schedule_type == "MANUAL"
        ]

    def describe(self) -> list[dict[str, Any]]:
        """The fleet as planned (never a secret)."""
        return [
            {
                "name": d.name,
                "version": d.plan.version,
                "stores": list(d.plan.stores),
                "default_store": d.plan.default_store,
                "username": d.plan.username,
                "wrong_credentials": d.plan.wrong_credentials,
                "forbidden": d.plan.forbidden,
                "down": list(d.plan.down) if d.plan.down else None,
                "timeout_s": d.timeout_s,
                "token_lifetime_s": d.plan.faults.token_lifetime_s,
                "history": {  # what was seeded before the fleet started: the truth an audit is checked against
                    "seeded": d.history.seeded,
                    "stores": list(d.history.stores),
                    "stale": d.history.stale,
                    "upgraded_from": d.history.upgraded_from,
                    "version_created": d.history.registered_at,
                },
            }
            for d in self.deployments.values()
        ]

    def peak_running_jobs(self) -> tuple[int, int]:
        """Most DR jobs running at once, fleet-wide and on any single deployment."""
        spans_by_deployment: dict[str, list[tuple[float, float]]] = {}
        for job in self.all_jobs:
            spans_by_deployment.setdefault(job.deployment, []).append((job.created_at, job.work_done_at))
        fleet_wide = peak_overlap(span for spans in spans_by_deployment.values() for span in spans)
        per_deployment = max((peak_overlap(spans) for spans in spans_by_deployment.values()), default=0)
        return fleet_wide, per_deployment

    def stats(self) -> dict[str, Any]:
        peak_fleet, peak_one = self.peak_running_jobs()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        rss_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss // 1024
        return {
            "now_ms": ms(self.clock.now()),
            "deployments": len(self.deployments),
            "requests": sum(self.request_counts.values()),
            "requests_by_endpoint": dict(self.request_counts),
            "faults": dict(self.fault_counts),
            "token_sources": dict(self.token_sources),
            "secrets_in_urls": self.secrets_in_urls,
            "creates": len(self.creates),
            "creates_accepted": sum(1 for c in self.creates if c.accepted),
            "creates_lost": sum(1 for c in self.creates if c.response_lost),
            "jobs": len(self.all_jobs),
            "peak_requests_in_flight": self.in_flight.peak,
            "peak_requests_in_flight_one_deployment": self.in_flight.peak_per_deployment,
            "peak_running_jobs": peak_fleet,
            "peak_running_jobs_one_deployment": peak_one,
            "cpu_seconds": time.process_time() - self._cpu_at_start,
            "peak_rss_mib": round(rss_kib / 1024, 1),
        }
