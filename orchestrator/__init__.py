"""Fleet-scale disaster-recovery backup orchestration for ArcGIS Enterprise on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

from orchestrator.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]

try:
    __version__ = version("arcgis-fleet-orchestrator")  # pyproject's, as installed: one place to change it
except PackageNotFoundError:  # imported from a source tree never installed
    __version__ = "0+unknown"
