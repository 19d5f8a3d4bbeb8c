"""A faithful simulated fleet of ArcGIS Enterprise on Kubernetes deployments (`orchestrator simulate`)."""

from orchestrator.simulator.config import (
    PROFILES,
    DeploymentPlan,
    DeploymentSpec,
    Distribution,
    FaultProfile,
    FleetConfig,
    FleetFileError,
    History,
    load_fleet_file,
    resolve_fleet,
)
from orchestrator.simulator.fleet import SimulatedFleet
from orchestrator.simulator.server import RunningSimulator, serve_fleet

__all__ = [
    "PROFILES",
    "DeploymentPlan",
    "DeploymentSpec",
    "Distribution",
    "FaultProfile",
    "FleetConfig",
    "FleetFileError",
    "History",
    "RunningSimulator",
    "SimulatedFleet",
    "load_fleet_file",
    "resolve_fleet",
    "serve_fleet",
]
