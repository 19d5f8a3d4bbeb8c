"""Which fault a request meets: pure draws from a deployment's seeded stream."""

from __future__ import annotations

import random
from enum import StrEnum

from orchestrator.simulator.config import FaultProfile


class Fault(StrEnum):
    NONE = ""
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    HTTP_429 = "http_429"
    RESET = "reset"
    HANG = "hang"
    DOWN = "down"
    LOST_CREATE = "lost_create"
    LATE_5XX = "late_5xx"
    UNAVAILABLE = "unavailable"


def draw_request_fault(rng: random.Random, profile: FaultProfile) -> Fault:
    """One uniform draw picks at most one transport/HTTP fault, so their probabilities simply add up.

    Exactly two numbers are drawn whatever the outcome, so a deployment's later draws do not depend on
    which fault an earlier request met.
    """
    draw, coin = rng.random(), rng.random()
    threshold = profile.http_5xx
    if draw < threshold:
        return Fault.HTTP_502 if coin < 0.5 else Fault.HTTP_503
    threshold += profile.http_429
    if draw < threshold:
        return Fault.HTTP_429
    threshold += profile.reset
    if draw < threshold:
        return Fault.RESET
    threshold += profile.hang
    if draw < threshold:
        return Fault.HANG
    return Fault.NONE


def draw_latency(rng: random.Random, profile: FaultProfile) -> float:
    latency = profile.latency
    if latency.dist == "fixed":
        return latency.value  # no draw: a fleet without latency keeps its stream for the other faults
    return latency.sample(rng)


def draw_create_fault(rng: random.Random, profile: FaultProfile) -> Fault:
    """What happens to a create's answer once the backup was created: one draw, whatever the outcome."""
    draw = rng.random()
    if draw < profile.lost_create:
        return Fault.LOST_CREATE
    if draw < profile.lost_create + profile.late_5xx:
        return Fault.LATE_5XX
    return Fault.NONE


def chance(rng: random.Random, probability: float) -> bool:
    """A Bernoulli draw that consumes one number even when the probability is zero."""
    return rng.random() < probability
