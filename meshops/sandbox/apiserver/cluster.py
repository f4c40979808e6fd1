"""One simulated cluster: store, API, HTTP server, controllers and the plugin lists.

    cluster = Cluster("blue", rollout_seconds=0.05).start()
    cluster.url                      # http://127.0.0.1:PORT
    cluster.api.create(("apps", "deployments"), {...}, namespace="default")
    cluster.stop()

See README.md in this package for the in-process API the rest of the sandbox uses.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from .admission import Admission
from .api import ResourceApi
from .audit import AuditLog
from .controllers import default_controllers
from .controllers.base import ControllerManager
from .defaults import Allocator
from .discovery import Discovery, version_info
from .errors import ApiError
from .http import ApiHTTPServer
from .kinds import CRD_GR, ResourceTypes, storage_version, types_from_crd
from .openapi import OpenApi
from .plugins import MutatingPlugin, ReadinessGate, ValidatingPlugin
from .served import ActiveStream, FilterResponse, RequestFilter, WatchFilter
from .store import Store, StoreEvent
from .tables import TableConverter
from .tls import ServingCert
from .tls import create as create_cert

log = logging.getLogger("meshops.sandbox.cluster")

Obj = dict[str, Any]
__all__ = ["Cluster", "FilterResponse", "RequestFilter"]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
ZONES = ("a", "b", "c")


class Cluster:
    def __init__(
        self,
        name: str = "sandbox",
        *,
        k8s_version: str = "1.30.4",
        rollout_seconds: float = 0.05,
        nodes: int = 3,
        history_size: int = 10_000,
        bookmark_interval: float = 5.0,
        cron_minute_seconds: float = 60.0,
        audit_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        self.name = name
        # The bearer token clients must send (None: no authentication, for in-process tests).
        # Clients send tokens only over TLS, so `sandbox up` pairs it with `tls_dir` (tls.py).
        self.token = token
        self.serving: ServingCert | None = None
        self._tls_dir = tls_dir
        self.k8s_version = k8s_version.lstrip("v")
        self.rollout_seconds = rollout_seconds
        self.node_count = nodes
        self.bookmark_interval = bookmark_interval
        self.cron_minute_seconds = cron_minute_seconds
        self.store = Store(history_size=history_size)
        self.types = ResourceTypes()
        self.allocator = Allocator()
        self.audit = AuditLog(audit_path)
        # Extension points (see plugins.py): consulted on every write and by the kubelet.
        self.mutating_plugins: list[MutatingPlugin] = []
        self.validating_plugins: list[ValidatingPlugin] = []
        self.readiness_gates: list[ReadinessGate] = []
        # Request-level faults: consulted before each request is handled, and when a watch starts.
        self.request_filters: list[RequestFilter] = []
        self.watch_filters: list[WatchFilter] = []
        self.streams: set[ActiveStream] = set()
        # The composition root of the layers (docs/architecture.md): each part gets what it
        # needs from the layers above it handed in here, so no module imports upwards.
        self.discovery = Discovery(self.types)
        self.openapi = OpenApi(self.types, self.k8s_version)
        self.tables = TableConverter()
        self.admission = Admission(
            host=self, allocator=self.allocator, mutating=self.mutating_plugins,
            validating=self.validating_plugins, check_fields=self.openapi.check_fields,
        )
        self.api = ResourceApi(self.store, self.types, self.admission)
        self.controllers = ControllerManager(self, default_controllers(self))
        self._host, self._port = host, port
        self._server: ApiHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.store.subscribe(self._on_crd_event, [CRD_GR])

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Bootstrap the cluster's own objects, start controllers, then serve HTTP."""
        self._bootstrap()
        self.controllers.start()
        self._server = ApiHTTPServer(self, self._host, self._port)
        if self._tls_dir is not None:
            self.serving = create_cert(self._tls_dir, self.name, self._host)
            # The handshake runs in the request's thread (ApiRequestHandler.setup), not in accept().
            self._server.socket = self.serving.server_context().wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"apiserver-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for stream in list(self.streams):
            stream.cut()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.controllers.stop()
        self.audit.close()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the cluster is not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.serving else 'http'}://127.0.0.1:{self.port}"

    def version_info(self) -> Obj:
        return version_info(self.k8s_version)

    # ---- hooks for the rest of the sandbox ---------------------------------------------------

    def kick_pods(self) -> None:
        """Ask the kubelet to re-evaluate readiness of every pod (a readiness gate changed its mind)."""
        self.controllers.kick("kubelet")

    def cut_watches(self, *, resource: str | None = None, abrupt: bool = False) -> int:
        """End open watch streams now (all, or those on one plural resource); returns how many."""
        cut = 0
        for stream in list(self.streams):
            if resource is None or stream.info.resource == resource:
                stream.cut(abrupt=abrupt)
                cut += 1
        return cut

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the controllers have nothing ready to do (delayed work may remain)."""
        return self.controllers.wait_idle(timeout)

    # ---- internals ---------------------------------------------------------------------------

    def _on_crd_event(self, event: StoreEvent) -> None:
        # Registered synchronously (under the store lock) so a custom resource can be created
        # right after its CRD; kube establishes CRDs within milliseconds too.
        crd = event.obj
        name = crd["metadata"]["name"]
        if event.type == "DELETED":
            self.types.remove_crd(name)
        else:
            self.types.set_crd(name, types_from_crd(crd), storage_version(crd))

    def _bootstrap(self) -> None:
        for ns in DEFAULT_NAMESPACES:
            self._ensure(("", "namespaces"), None, {"metadata": {"name": ns}})
        for i in range(1, self.node_count + 1):
            self._ensure(("", "nodes"), None, self._node(i))
        self._ensure(
            ("", "services"),
            "default",
            {
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
            },
        )

    def _ensure(self, gr: tuple[str, str], namespace: str | None, body: Obj) -> None:
        try:
            self.api.create(gr, body, namespace=namespace)
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise

    def _node(self, i: int) -> Obj:
        name = f"{self.name}-node-{i}"
        zone = f"sandbox-1{ZONES[(i - 1) % len(ZONES)]}"
        return {
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/region": "sandbox-1",
                    "topology.kubernetes.io/zone": zone,
                },
            },
            # A /16 per node: pod IPs never run out at benchmark scale (kube's default is a /24).
            "spec": {"podCIDR": f"10.{243 + i}.0.0/16", "podCIDRs": [f"10.{243 + i}.0.0/16"]},
        }
