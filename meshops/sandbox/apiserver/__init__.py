"""An embedded Kubernetes API server with simulated controllers; see README.md."""

from __future__ import annotations

from .cluster import Cluster
from .errors import ApiError
from .plugins import AdmissionDenied, AdmissionRequest, MutatingPlugin, ReadinessGate, ValidatingPlugin
from .watch import WatchCut

__all__ = [
    "AdmissionDenied",
    "AdmissionRequest",
    "ApiError",
    "Cluster",
    "MutatingPlugin",
    "ReadinessGate",
    "ValidatingPlugin",
    "WatchCut",
]
