"""Extension points the API server offers to the rest of the sandbox (Istio, faults).

The API server (``meshops.sandbox.apiserver``) knows nothing of Istio. The Istio layer
(``meshops.sandbox.istio``) plugs in through these protocols, registered on the
``Cluster`` object that owns a store, its HTTP server and its controllers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class AdmissionRequest:
    operation: str  # "CREATE" | "UPDATE" | "DELETE"
    group: str  # "" for core
    version: str
    resource: str  # plural, e.g. "pods"
    kind: str
    namespace: str | None
    name: str | None
    obj: Obj | None  # the object as it will be stored (mutable copy for mutating plugins)
    old: Obj | None  # the stored object, for UPDATE and DELETE
    dry_run: bool = False


class AdmissionDenied(Exception):
    """Raised by a plugin to refuse a write. The API server answers with a Status of this code."""

    def __init__(self, message: str, *, code: int = 400, reason: str = "BadRequest") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason


class MutatingPlugin(Protocol):
    """Runs before validation and storage; may change ``req.obj`` in place or raise AdmissionDenied."""

    def mutate(self, req: AdmissionRequest, cluster: Any) -> None: ...


class ValidatingPlugin(Protocol):
    """Runs after mutation, before storage; raises AdmissionDenied to refuse."""

    def validate(self, req: AdmissionRequest, cluster: Any) -> None: ...


class ReadinessGate(Protocol):
    """Asked by the simulated kubelet before it marks a running pod Ready.

    Returning False keeps the pod running but not Ready (e.g. a proxy that never becomes
    ready under a fault). The kubelet asks again whenever the gate's owner calls
    ``cluster.kick_pods()``.
    """

    def pod_ready(self, pod: Obj, cluster: Any) -> bool: ...
