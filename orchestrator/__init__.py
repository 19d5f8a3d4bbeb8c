"""Fleet-scale disaster-recovery backup orchestration for ArcGIS Enterprise on Kubernetes."""

from orchestrator.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
__version__ = "0.1.0"
