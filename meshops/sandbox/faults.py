"""Faults on demand: parse specs, keep the active set, and apply it to running clusters.

A spec is `KIND[:key=value,...]`, the same on the command line and in a faults file:

    proxy-not-ready:revision=1-25-0        proxies of that revision never become Ready
    ingress-503[:share=0.5]                the cluster's ingress answers 503 (to a share of requests)
    api-error:code=500|429|409[,rate=0.2][,retry-after=2][,resource=pods][,verbs=list,get]
    api-latency:ms=200[,rate=1.0]          added latency before the API answers
    watch-cut:after=5[,abrupt=true]        watch streams end after N events
    node-not-ready:node=blue-node-1        the node goes NotReady; pods on it lose Ready

409s only hit writes (create/update/patch/delete), as conflicts do. The sandbox process owns
a FaultBook; `meshops sandbox fault` changes it through a small HTTP control endpoint on
127.0.0.1, and every change is written to the cluster's audit log.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

KINDS = ("proxy-not-ready", "ingress-503", "api-error", "api-latency", "watch-cut", "node-not-ready")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_REQUIRED = {"proxy-not-ready": ("revision",), "api-error": ("code",), "api-latency": ("ms",),
             "watch-cut": ("after",), "node-not-ready": ("node",)}
_API_ERROR_CODES = (409, 429, 500, 503)


class FaultError(ValueError):
    pass


@dataclass
class Fault:
    kind: str
    cluster: str
    params: dict[str, Any] = field(default_factory=dict)
    id: int = 0

    def describe(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}:{args}" if args else self.kind

    @property
    def rate(self) -> float:
        return float(self.params.get("rate", self.params.get("share", 1.0)))


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def make_fault(kind: str, cluster: str, params: dict[str, Any]) -> Fault:
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")
    params = {k.replace("_", "-"): _coerce(v) for k, v in params.items()}
    for key in _REQUIRED.get(kind, ()):
        if key not in params:
            raise FaultError(f"fault {kind} needs {key}=...")
    for key in ("rate", "share"):
        if key in params and not (isinstance(params[key], int | float) and 0 <= params[key] <= 1):
            raise FaultError(f"fault {kind}: {key} must be between 0 and 1")
    if kind == "api-error" and params["code"] not in _API_ERROR_CODES:
        raise FaultError(f"fault api-error: code must be one of {_API_ERROR_CODES}")
    if kind == "watch-cut" and (not isinstance(params["after"], int) or params["after"] < 0):
        raise FaultError("fault watch-cut: after must be a whole number of events")
    if kind == "api-latency" and (not isinstance(params["ms"], int | float) or params["ms"] < 0):
        raise FaultError("fault api-latency: ms must be a non-negative number")
    if isinstance(params.get("verbs"), str):
        params["verbs"] = params["verbs"].replace("+", ",").replace(" ", "")
    return Fault(kind=kind, cluster=cluster, params=params)


def parse_spec(spec: str, cluster: str) -> Fault:
    """`api-error:code=429,rate=0.5,retry-after=1` -> Fault. `verbs` lists use `+`: verbs=list+get."""
    kind, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise FaultError(f"fault {spec!r}: expected key=value, got {item!r}")
        params[key.strip()] = value.strip()
    return make_fault(kind.strip(), cluster, params)


def load_file(path: Path, default_cluster: str | None = None) -> list[Fault]:
    """A faults file: `faults: [{cluster: blue, fault: api-error, code: 429, rate: 0.5}, ...]`.

    Entries may also be strings (`"api-error:code=500"`) under a cluster key:
    `blue: ["ingress-503"]`.
    """
    doc = yaml.safe_load(path.read_text()) or {}
    out: list[Fault] = []
    entries = doc.get("faults") if isinstance(doc, dict) and "faults" in doc else doc
    if isinstance(entries, dict):
        for cluster, specs in entries.items():
            for spec in specs or []:
                out.append(parse_spec(spec, str(cluster)) if isinstance(spec, str)
                           else make_fault(str(spec.get("fault") or spec.get("kind")), str(cluster),
                                           {k: v for k, v in spec.items() if k not in ("fault", "kind")}))
        return out
    for entry in entries or []:
        if isinstance(entry, str):
            if not default_cluster:
                raise FaultError(f"{path}: fault {entry!r} names no cluster")
            out.append(parse_spec(entry, default_cluster))
            continue
        cluster = entry.get("cluster") or default_cluster
        if not cluster:
            raise FaultError(f"{path}: fault {entry} names no cluster")
        kind = entry.get("fault") or entry.get("kind")
        out.append(make_fault(str(kind), str(cluster),
                              {k: v for k, v in entry.items() if k not in ("fault", "kind", "cluster")}))
    return out


class FaultBook:
    """The active faults of one sandbox. Listeners hear every add and clear (to kick kubelets, audit)."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self.random = random.Random(seed)
        self._listeners: list[Callable[[str, Fault], None]] = []

    def listen(self, callback: Callable[[str, Fault], None]) -> None:
        self._listeners.append(callback)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = next(self._ids)
            self._faults.append(fault)
        for cb in list(self._listeners):
            cb("added", fault)
        return fault

    def clear(self, cluster: str | None = None, fault_id: int | None = None) -> list[Fault]:
        with self._lock:
            gone = [f for f in self._faults if (cluster is None or f.cluster == cluster)
                    and (fault_id is None or f.id == fault_id)]
            self._faults = [f for f in self._faults if f not in gone]
        for fault in gone:
            for cb in list(self._listeners):
                cb("cleared", fault)
        return gone

    def active(self, cluster: str | None = None, kind: str | None = None) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if (cluster is None or f.cluster == cluster)
                    and (kind is None or f.kind == kind)]

    def hit(self, fault: Fault) -> bool:
        return self.random.random() < fault.rate

    # --- decisions the sandbox components ask for ----------------------------------------------

    def not_ready_revisions(self, cluster: str) -> set[str]:
        return {str(f.params["revision"]) for f in self.active(cluster, "proxy-not-ready")}

    def not_ready_nodes(self, cluster: str) -> set[str]:
        return {str(f.params["node"]) for f in self.active(cluster, "node-not-ready")}

    def ingress_fails(self, cluster: str) -> Fault | None:
        for f in self.active(cluster, "ingress-503"):
            if self.hit(f):
                return f
        return None

    def api_response(self, cluster: str, verb: str, resource: str | None) -> tuple[Fault, tuple[int, Any, dict[str, str]]] | None:
        """Latency is served here (sleep); an error comes back as (fault, filter response)."""
        for f in self.active(cluster, "api-latency"):
            if _targets(f, verb, resource) and self.hit(f):
                time.sleep(float(f.params["ms"]) / 1000.0)
        for f in self.active(cluster, "api-error"):
            code = int(f.params["code"])
            if code == 409 and verb not in WRITE_VERBS:
                continue
            if _targets(f, verb, resource) and self.hit(f):
                return f, error_response(code, resource or "", f)
        return None

    def watch_cut(self, cluster: str) -> Fault | None:
        found = self.active(cluster, "watch-cut")
        return found[-1] if found else None


def _targets(f: Fault, verb: str, resource: str | None) -> bool:
    verbs = f.params.get("verbs")
    if verbs and verb not in str(verbs).split(","):
        return False
    wanted = f.params.get("resource")
    return not wanted or wanted == resource


def error_response(code: int, resource: str, fault: Fault) -> tuple[int, Any, dict[str, str]]:
    """A Status body as kube-apiserver sends for each code."""
    headers: dict[str, str] = {}
    details: dict[str, Any] = {}
    if code == 429:
        retry = int(fault.params.get("retry-after", 1))
        headers["Retry-After"] = str(retry)
        details = {"retryAfterSeconds": retry}
        reason, message = "TooManyRequests", "the server has received too many requests and has asked us to try again later"
    elif code == 409:
        reason = "Conflict"
        message = (f'Operation cannot be fulfilled on {resource or "objects"}: the object has been modified; '
                   "please apply your changes to the latest version and try again")
    elif code == 503:
        reason, message = "ServiceUnavailable", "the server is currently unable to handle the request"
    else:
        reason = "InternalError"
        message = 'an error on the server ("sandbox fault injected") has prevented the request from succeeding'
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}
    return code, body, headers


def fault_record(fault: Fault, event: str) -> dict[str, Any]:
    return {"event": event, **asdict(fault)}


def encode(faults: list[Fault]) -> bytes:
    return json.dumps([asdict(f) for f in faults]).encode()


# --- wiring a FaultBook into running clusters ---------------------------------------------------


class ClusterFaults:
    """Applies one sandbox's FaultBook to one Cluster through its extension points."""

    def __init__(self, book: FaultBook, cluster: Any) -> None:
        self.book = book
        self.cluster = cluster
        self.name = cluster.name
        cluster.request_filters.append(self.request_filter)
        cluster.watch_filters.append(self.watch_filter)
        cluster.readiness_gates.append(self)
        book.listen(self.on_change)

    def request_filter(self, info: Any) -> tuple[int, Any, dict[str, str]] | None:
        if not info.is_resource_request:
            return None
        found = self.book.api_response(self.name, info.verb, info.resource)
        return found[1] if found else None

    def watch_filter(self, info: Any) -> Any:
        fault = self.book.watch_cut(self.name)
        if fault is None:
            return None
        wanted = fault.params.get("resource")
        if wanted and wanted != info.resource:
            return None
        from meshops.sandbox.apiserver.watch import WatchCut

        return WatchCut(after_events=int(fault.params["after"]), abrupt=bool(fault.params.get("abrupt", False)))

    def pod_ready(self, pod: dict[str, Any], cluster: Any) -> bool:
        """ReadinessGate: new proxies of a faulted revision, and pods on a NotReady node, are not Ready."""
        nodes = self.book.not_ready_nodes(self.name)
        if nodes and (pod.get("spec") or {}).get("nodeName") in nodes:
            return False
        revisions = self.book.not_ready_revisions(self.name)
        if revisions:
            from meshops.sandbox.istio.injection import proxy_revision

            if proxy_revision(pod) in revisions:
                # "Never become ready": a proxy that is Ready already stays so; new ones are held back.
                return any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in (pod.get("status") or {}).get("conditions") or [])
        return True

    def on_change(self, event: str, fault: Fault) -> None:
        if fault.cluster != self.name:
            return
        self.cluster.audit.record(
            started=time.time(), method="FAULT", path=f"/sandbox/faults/{fault.id}", query=fault.describe(),
            verb=f"fault-{event}", content_type="", status=200, user_agent="meshops-sandbox-faults",
            resource=fault.kind, namespace=None, name=str(fault.id),
        )
        if fault.kind == "node-not-ready":
            self._set_node_ready(str(fault.params["node"]), ready=event == "cleared")
        if fault.kind in ("proxy-not-ready", "node-not-ready"):
            self.cluster.kick_pods()
        if fault.kind == "watch-cut" and event == "added":
            # Streams already open get the cut too: end them now, clients reconnect and meet it.
            self.cluster.cut_watches(resource=fault.params.get("resource"))

    def _set_node_ready(self, node: str, *, ready: bool) -> None:
        from meshops.sandbox.apiserver.errors import ApiError
        from meshops.sandbox.apiserver.jsonutil import clone

        nodes = ("", "nodes")
        for _ in range(5):
            current = self.cluster.store.get(nodes, "", node)
            if current is None:
                return
            obj = clone(current)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            cond = {"type": "Ready", "status": "True" if ready else "Unknown", "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                    "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                    "message": "kubelet is posting ready status" if ready else "Kubelet stopped posting node status."}
            conds = [c for c in (obj.setdefault("status", {}).get("conditions") or []) if c.get("type") != "Ready"]
            obj["status"]["conditions"] = [*conds, cond]
            try:
                self.cluster.api.update(nodes, obj, subresource="status")
                return
            except ApiError as e:
                if e.code != 409:
                    raise


# --- the control endpoint and its client ----------------------------------------------------------


class ControlServer(ThreadingHTTPServer):
    """`GET|POST|DELETE /faults` on 127.0.0.1: how `meshops sandbox fault` reaches a running sandbox."""

    daemon_threads = True

    def __init__(self, book: FaultBook, clusters: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _ControlHandler)
        self.book = book
        self.clusters = clusters

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> ControlServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="faults", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _ControlHandler(BaseHTTPRequestHandler):
    server: ControlServer

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(200, [asdict(f) for f in self.server.book.active()])

    def do_POST(self) -> None:
        try:
            doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            cluster = doc.get("cluster")
            faults = [parse_spec(s, cluster) if isinstance(s, str) else make_fault(
                str(s.get("fault") or s.get("kind")), str(s.get("cluster") or cluster),
                {k: v for k, v in s.items() if k not in ("fault", "kind", "cluster")}) for s in doc.get("faults") or []]
            unknown = sorted({f.cluster for f in faults} - set(self.server.clusters))
            if unknown:
                raise FaultError(f"unknown cluster(s) {', '.join(map(str, unknown))}; this sandbox has "
                                 f"{', '.join(self.server.clusters)}")
        except (FaultError, ValueError, AttributeError) as e:
            self._reply(400, {"error": str(e)})
            return
        self._reply(201, [asdict(self.server.book.add(f)) for f in faults])

    def do_DELETE(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        cluster = query["cluster"][0] if query.get("cluster") else None
        fault_id = int(query["id"][0]) if query.get("id") else None
        self._reply(200, [asdict(f) for f in self.server.book.clear(cluster, fault_id)])

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _call(url: str, method: str, body: Any = None) -> Any:
    if not url.startswith("http://127.0.0.1:"):
        raise FaultError(f"not a sandbox control endpoint: {url}")
    req = urllib.request.Request(  # noqa: S310 - loopback http only, checked above
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback http only, checked above
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise FaultError(json.loads(e.read() or b"{}").get("error") or str(e)) from None


def send(url: str, cluster: str, specs: list[str]) -> list[dict[str, Any]]:
    return list(_call(f"{url}/faults", "POST", {"cluster": cluster, "faults": specs}))


def send_faults(url: str, faults: list[Fault]) -> list[dict[str, Any]]:
    payload = [{"fault": f.kind, "cluster": f.cluster, **f.params} for f in faults]
    return list(_call(f"{url}/faults", "POST", {"faults": payload}))


def clear(url: str, cluster: str | None = None) -> list[dict[str, Any]]:
    return list(_call(f"{url}/faults" + (f"?cluster={cluster}" if cluster else ""), "DELETE"))


def listing(url: str) -> list[dict[str, Any]]:
    return list(_call(f"{url}/faults", "GET"))
