"""A probe-able ingress per cluster: a real HTTP endpoint on 127.0.0.1 that routes like the gateway.

A request is answered from the cluster's state, the way traffic through the
`istio-ingressgateway` load balancer would be:
- no ready gateway pod behind the Service: 503 (the load balancer has no healthy target);
- no Istio Gateway + VirtualService route for the host and path: 404 (Envoy's NR);
- a route whose destination Service has no ready pods: 503 `no healthy upstream`;
- otherwise 200 from the destination. `/healthz/ready` answers for the gateway itself.
Every answer names the cluster in `x-meshops-cluster`. An `ingress-503` fault answers 503
(`fault filter abort`) to all or a share of requests before any of that.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from meshops.sandbox.istio import selectors

log = logging.getLogger("meshops.sandbox.ingress")

Obj = dict[str, Any]
GATEWAYS = ("networking.istio.io", "gateways")
VIRTUAL_SERVICES = ("networking.istio.io", "virtualservices")
SERVICES = ("", "services")
PODS = ("", "pods")
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SERVICE = "istio-ingressgateway"


def _ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def ready_pods(store: Any, namespace: str, selector: dict[str, str]) -> list[Obj]:
    if not selector:
        return []
    sel = {"matchLabels": selector}
    pods, _ = store.list(PODS, namespace, lambda p: selectors.matches(sel, (p.get("metadata") or {}).get("labels")))
    return [p for p in pods if _ready(p)]


def _host_matches(pattern: str, host: str) -> bool:
    pattern = pattern.split("/", 1)[-1]  # Gateway hosts may be `namespace/host`
    return pattern == "*" or fnmatch.fnmatch(host, pattern)


def _uri_matches(match: Obj, path: str) -> bool:
    uri = match.get("uri")
    if not uri:
        return True
    if "exact" in uri:
        return bool(path == uri["exact"])
    if "prefix" in uri:
        return path.startswith(uri["prefix"])
    if "regex" in uri:
        return re.fullmatch(uri["regex"], path) is not None
    return False


def _pick(routes: list[Obj], rng: random.Random) -> Obj | None:
    if not routes:
        return None
    weights = [int(r.get("weight", 0) or 0) for r in routes]
    if not any(weights):
        return routes[0]
    return rng.choices(routes, weights=weights)[0]


def route(store: Any, host: str, path: str, rng: random.Random) -> tuple[int, str, dict[str, str]]:
    """(status, body, extra headers) for a request to the cluster's ingress."""
    if path == "/healthz/ready":
        gw_ready = _gateway_pods(store)
        return (200, "ready\n", {}) if gw_ready else (503, "no ready ingress gateway\n", {})
    gw_pods = _gateway_pods(store)
    if not gw_pods:
        return 503, "no healthy upstream: the ingress gateway has no ready pods\n", {}
    host = host.split(":", 1)[0]
    gateway_labels = [(p.get("metadata") or {}).get("labels") or {} for p in gw_pods]
    bound: set[tuple[str, str]] = set()
    gateways, _ = store.list(GATEWAYS)
    for gw in gateways:
        spec = gw.get("spec") or {}
        sel = {"matchLabels": spec.get("selector") or {}}
        if not spec.get("selector") or not any(selectors.matches(sel, lbl) for lbl in gateway_labels):
            continue
        if any(_host_matches(h, host) for s in spec.get("servers") or [] for h in s.get("hosts") or []):
            bound.add((gw["metadata"].get("namespace", "default"), gw["metadata"]["name"]))
    virtual_services, _ = store.list(VIRTUAL_SERVICES)
    for vs in sorted(virtual_services, key=lambda v: (v["metadata"].get("creationTimestamp", ""), v["metadata"]["name"])):
        ns = vs["metadata"].get("namespace", "default")
        spec = vs.get("spec") or {}
        refs = {(g.split("/", 1)[0], g.split("/", 1)[1]) if "/" in g else (ns, g) for g in spec.get("gateways") or []}
        if not refs & bound or not any(_host_matches(h, host) for h in spec.get("hosts") or []):
            continue
        for http in spec.get("http") or []:
            if not any(_uri_matches(m, path) for m in http.get("match") or [{}]):
                continue
            if http.get("directResponse"):
                dr = http["directResponse"]
                return int(dr.get("status", 200)), str((dr.get("body") or {}).get("string", "")), {}
            dest = _pick(http.get("route") or [], rng)
            if dest is None:
                continue
            return _upstream(store, dest.get("destination") or {}, ns)
    return 404, "", {}


def _gateway_pods(store: Any) -> list[Obj]:
    svc = store.get(SERVICES, GATEWAY_NAMESPACE, GATEWAY_SERVICE)
    if svc is None:
        return []
    return ready_pods(store, GATEWAY_NAMESPACE, (svc.get("spec") or {}).get("selector") or {})


def _upstream(store: Any, dest: Obj, vs_namespace: str) -> tuple[int, str, dict[str, str]]:
    host = str(dest.get("host", ""))
    parts = host.split(".")
    name, ns = parts[0], (parts[1] if len(parts) > 1 else vs_namespace)
    svc = store.get(SERVICES, ns, name)
    if svc is None:
        return 503, "no healthy upstream\n", {"x-meshops-upstream": f"{name}.{ns}"}
    pods = ready_pods(store, ns, (svc.get("spec") or {}).get("selector") or {})
    subset = dest.get("subset")
    if subset:
        pods = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get("version") == subset]
    if not pods:
        return 503, "no healthy upstream\n", {"x-meshops-upstream": f"{name}.{ns}"}
    pod = pods[random.randrange(len(pods))]
    body = json.dumps({"service": f"{name}.{ns}", "pod": pod["metadata"]["name"]}) + "\n"
    return 200, body, {"x-meshops-upstream": f"{name}.{ns}", "x-meshops-pod": pod["metadata"]["name"]}


class _Handler(BaseHTTPRequestHandler):
    server: IngressServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._answer()

    def _answer(self, head: bool = False) -> None:
        srv = self.server
        headers = {"x-meshops-cluster": srv.cluster_name}
        fault = srv.faults.ingress_fails(srv.cluster_name) if srv.faults is not None else None
        if fault is not None:
            status, body = 503, "fault filter abort"
            headers["x-meshops-fault"] = fault.describe()
        else:
            try:
                status, body, extra = route(srv.store, self.headers.get("Host", ""), self.path.split("?", 1)[0], srv.rng)
                headers.update(extra)
            except Exception:  # a routing bug must not hang the client: answer like Envoy would
                log.exception("ingress routing failed")
                status, body = 500, "internal error\n"
        data = body.encode()
        self.send_response(status)
        headers["content-type"] = "text/plain" if not body.startswith("{") else "application/json"
        headers["content-length"] = str(len(data))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def version_string(self) -> str:
        return "istio-envoy"  # the Server header Envoy sends

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ingress %s: " + format, self.server.cluster_name, *args)


class IngressServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cluster_name: str, store: Any, faults: Any = None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.cluster_name = cluster_name
        self.store = store
        self.faults = faults
        self.rng = random.Random()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> IngressServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"ingress-{self.cluster_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
