"""Test harness for the switchover: two fake clusters, ingress HTTP servers, moto behind a recording
proxy (that can throttle), an independent checker for every batch sent, and the engine wiring.

Nothing here patches boto3 or botocore: the driver talks HTTP to the proxy, the proxy to moto.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from meshops.domain.weights import RecordSet
from meshops.drivers.http_api import HttpProbeApi
from meshops.drivers.kube_fake import FakeKube
from meshops.drivers.route53_api import Route53Api
from meshops.drivers.route53_fake import FakeAwsError, FakeRoute53
from meshops.testing import FakeDrivers

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "switchover.yaml"
NS = "{https://route53.amazonaws.com/doc/2013-04-01/}"


# ---- Kubernetes ---------------------------------------------------------------------------------


# What the switchover reads: core, apps and the Istio APIs at v1 (an older mesh's v1beta1 is NotFound).
SERVED = ("v1", "apps/v1", "networking.istio.io/v1", "security.istio.io/v1")


def seeded(context: str, objects: list[dict[str, Any]], *, served: tuple[str, ...] = SERVED) -> FakeKube:
    """The one FakeKube, holding ``objects`` (``reachable = False`` on it refuses every request)."""
    kube = FakeKube(context=context, served=served)
    kube.apply(*objects)
    # The switchover only reads clusters and patches annotations: anything else is a bug.
    for verb in ("create", "replace", "delete", "watch"):
        kube.faults.append([verb, "*", AssertionError(f"the switchover never {verb}s Kubernetes objects"), 10**9])
    return kube


def _deploy(ns: str, name: str, *, labels: dict[str, str] | None = None, image: str = "app:1",
            container: str = "app", ready: bool = True, replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"namespace": ns, "name": name, "labels": labels or {"app": name}, "generation": 1},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": container, "image": image}]}}},
            "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas if ready else 0,
                       "updatedReplicas": replicas}}


def _istio(kind: str, group: str, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"namespace": ns, "name": name}, "spec": spec}


GATEWAY_PORTS = [{"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                 {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
                 {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]


def cluster_objects(*, ingress: str, version: str = "1.23.2", mesh_mtls: str = "STRICT", shop_mtls: str | None = None,
                    app_ready: bool = True, vs_weight: int = 100, annotations: dict[str, str] | None = None,
                    ip: bool = False, ports: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One cluster of the blue-green picture: istiod, an ingress gateway with a load balancer, an app, Istio config.

    The gateway Service's ports are the istioctl chart's (status-port first: istio-reality.md §2)."""
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"namespace": "istio-system", "name": "istio-ingressgateway", "annotations": dict(annotations or {})},
           "spec": {"type": "LoadBalancer", "selector": {"istio": "ingressgateway"},
                    "ports": GATEWAY_PORTS if ports is None else ports},
           "status": {"loadBalancer": {"ingress": [{"ip": ingress} if ip else {"hostname": ingress}]}}}
    objs = [
        _deploy("istio-system", "istiod", labels={"app": "istiod", "istio": "pilot"},
                image=f"docker.io/istio/pilot:{version}", container="discovery"),
        _deploy("istio-system", "istio-ingressgateway", labels={"app": "istio-ingressgateway", "istio": "ingressgateway"},
                image=f"docker.io/istio/proxyv2:{version}", container="istio-proxy"),
        _deploy("shop", "frontend", ready=app_ready),
        _deploy("shop", "cart"),
        svc,
        _istio("PeerAuthentication", "security.istio.io", "istio-system", "default", {"mtls": {"mode": mesh_mtls}}),
        _istio("Gateway", "networking.istio.io", "shop", "web", {"selector": {"istio": "ingressgateway"},
               "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["app.example.com"]}]}),
        _istio("VirtualService", "networking.istio.io", "shop", "frontend", {"hosts": ["app.example.com"], "gateways": ["web"],
               "http": [{"route": [{"destination": {"host": "frontend"}, "weight": vs_weight}]
                         + ([{"destination": {"host": "frontend-v2"}, "weight": 100 - vs_weight}] if vs_weight < 100 else [])}]}),
        _istio("DestinationRule", "networking.istio.io", "shop", "frontend", {"host": "frontend",
               "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 5}}}),
        _istio("AuthorizationPolicy", "security.istio.io", "shop", "allow-web", {"action": "ALLOW", "rules": [{}]}),
        _istio("Sidecar", "networking.istio.io", "shop", "default", {"egress": [{"hosts": ["./*", "istio-system/*"]}]}),
        _istio("ServiceEntry", "networking.istio.io", "shop", "payments", {"hosts": ["pay.example.net"], "resolution": "DNS"}),
    ]
    if shop_mtls is not None:
        objs.append(_istio("PeerAuthentication", "security.istio.io", "shop", "default", {"mtls": {"mode": shop_mtls}}))
    return objs


# ---- ingress endpoints ----------------------------------------------------------------------------


class Ingress:
    """A cluster's ingress: an HTTP server on 127.0.0.1 answering 200 (or ``status`` when set) and its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = 200
        self.requests = 0
        self.first_failure: float | None = None
        ingress = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ingress.requests += 1
                code = ingress.status
                if code >= 400 and ingress.first_failure is None:
                    ingress.first_failure = time.monotonic()
                body = f"{ingress.name} {self.headers.get('Host')}\n".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def fail(self, code: int = 503) -> None:
        self.status = code

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- Route53: moto behind a recording, throttling proxy ----------------------------------------------


@dataclass
class Exchange:
    at: float
    method: str
    path: str
    body: bytes
    status: int
    response: bytes
    upstream_status: int = 0  # what moto answered (0: not forwarded)
    upstream_response: bytes = b""


# What Route53 answers when it refuses a request (API reference, "Common Errors"): HTTP status,
# the error's Type and Code. Throttling is a 400 Sender error; the 5xx are Receiver errors.
ROUTE53_ERRORS = {"throttle": (400, "Sender", "Throttling"), "500": (500, "Receiver", "InternalFailure"),
                  "503": (503, "Receiver", "ServiceUnavailable")}


@dataclass(frozen=True, kw_only=True)
class ProxyFault:
    """One kind of Route53 misbehaviour, hitting each Route53 API request with probability ``rate``:
    ``throttle``/``500``/``503`` answer an error without forwarding; ``slow`` holds the request
    ``ms`` before forwarding; ``500-after`` forwards (the change applies) and answers 500, as when
    AWS applied a change but the answer was an error."""

    kind: str
    rate: float
    ms: int = 0


def _error_body(kind: str) -> tuple[int, bytes]:
    status, typ, code = ROUTE53_ERRORS[kind]
    return status, (f'<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
                    f"<Error><Type>{typ}</Type><Code>{code}</Code><Message>injected {code}</Message></Error>"
                    f"<RequestId>x</RequestId></ErrorResponse>").encode()


def is_route53_change(method: str, path: str) -> bool:
    """A request that changes Route53: a record batch, a health check's creation, tags or deletion."""
    return (method == "POST" and (path.endswith("/rrset/") or path.endswith("/rrset") or "/healthcheck" in path)) \
        or (method == "DELETE" and "/healthcheck/" in path)


@dataclass
class Route53Proxy:
    """Forwards to moto; records every request; answers ``Throttling`` / ``PriorRequestNotComplete``
    for the requests ``throttle(n)`` says (by position), as Route53 does with HTTP 400.

    ``faults`` (drawn from ``rng``) inject errors and latency at random; ``after_forward(method,
    path, status)`` is called once moto has answered and before the client gets the answer (a
    chaos run SIGKILLs the client there: the change applied, its answer never read)."""

    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    throttle_every: int = 0  # every n-th request is throttled (0: never)
    throttle_code: str = "Throttling"
    on_change: Callable[[dict[str, Any]], None] | None = None
    faults: list[ProxyFault] = field(default_factory=list)
    rng: Any = None  # random.Random for ``faults``
    after_forward: Callable[[str, str, int], None] | None = None
    injected: dict[str, int] = field(default_factory=dict)  # fault kind -> requests it hit

    def __post_init__(self) -> None:
        proxy = self
        self._lock = threading.Lock()
        self._count = 0

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy._count += 1
                    n = proxy._count
                now = time.monotonic()
                up_status, up_out = 0, b""
                fault = proxy._draw(self.path)
                if fault is not None and fault.kind == "slow":
                    time.sleep(fault.ms / 1000)
                if fault is not None and fault.kind in ROUTE53_ERRORS:
                    status, out = _error_body(fault.kind)
                elif proxy.throttle_every and n % proxy.throttle_every == 0:
                    code = proxy.throttle_code
                    out = (f'<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
                           f"<Error><Type>Sender</Type><Code>{code}</Code><Message>Rate exceeded</Message></Error>"
                           f"<RequestId>x</RequestId></ErrorResponse>").encode()
                    status = 400
                else:
                    up = urllib.parse.urlsplit(proxy.upstream)
                    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                    try:
                        conn.request(self.command, self.path, body=body or None, headers=dict(self.headers.items()))
                        resp = conn.getresponse()
                        status, out = resp.status, resp.read()
                    finally:
                        conn.close()
                    up_status, up_out = status, out
                    if proxy.on_change is not None and self.command == "POST" and self.path.endswith("/rrset/") \
                            and status == 200:
                        proxy.on_change(parse_change_batch(body))
                    if proxy.after_forward is not None:
                        proxy.after_forward(self.command, self.path, status)
                    if fault is not None and fault.kind == "500-after":
                        status, out = _error_body("500")
                with proxy._lock:
                    proxy.exchanges.append(Exchange(now, self.command, self.path, body, status, out, up_status, up_out))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed while waiting (a chaos run's kill point)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *a: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _draw(self, path: str) -> ProxyFault | None:
        """The fault (if any) for one request: Route53's own API only (paths start with the version)."""
        if not self.faults or self.rng is None or not path.startswith("/20"):
            return None
        with self._lock:
            for f in self.faults:
                if self.rng.random() < f.rate:
                    self.injected[f.kind] = self.injected.get(f.kind, 0) + 1
                    return f
        return None

    def batches(self) -> list[dict[str, Any]]:
        """Every ChangeResourceRecordSets request sent, parsed, in order (throttled ones excluded)."""
        return [parse_change_batch(e.body) for e in self.exchanges
                if e.method == "POST" and e.path.endswith("/rrset/") and e.upstream_status == 200]

    def created_health_checks(self) -> list[str]:
        out = []
        for e in self.exchanges:
            if e.method == "POST" and e.path.endswith("/healthcheck") and e.upstream_status in (200, 201):
                el = ET.fromstring(e.upstream_response).find(f"{NS}HealthCheck/{NS}Id")
                if el is not None and el.text:
                    out.append(el.text)
        return out

    def max_per_second(self) -> int:
        # Route53's own API only (its paths start with the API version); the dry-run's one STS
        # GetCallerIdentity (POST /) goes to another service with its own limits.
        stamps = sorted(e.at for e in self.exchanges if e.path.startswith("/20"))
        best, lo = 0, 0
        for hi, t in enumerate(stamps):
            while t - stamps[lo] >= 1.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def max_burst(self, qps: float = 10.0) -> float:
        """Route53 requests as they arrived, against a token bucket refilled at ``qps``: the burst
        the bucket needs to have let them all through (see ``burst_of``)."""
        return burst_of([e.at for e in self.exchanges if e.path.startswith("/20")], qps)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _text(el: ET.Element, tag: str) -> str | None:
    found = el.find(f"{NS}{tag}")
    return None if found is None else (found.text or "")


def parse_change_batch(body: bytes) -> dict[str, Any]:
    """A ChangeResourceRecordSets XML body as the boto3-shaped ChangeBatch dict."""
    root = ET.fromstring(body)
    changes = []
    for ch in root.iter(f"{NS}Change"):
        rr = ch.find(f"{NS}ResourceRecordSet")
        assert rr is not None
        rec: dict[str, Any] = {"Name": _text(rr, "Name"), "Type": _text(rr, "Type")}
        for tag in ("SetIdentifier", "HealthCheckId"):
            if _text(rr, tag) is not None:
                rec[tag] = _text(rr, tag)
        if _text(rr, "Weight") is not None:
            raw = _text(rr, "Weight") or ""
            rec["Weight"] = int(raw) if re.fullmatch(r"-?\d+", raw) else raw
        if _text(rr, "TTL") is not None:
            rec["TTL"] = int(_text(rr, "TTL") or 0)
        alias = rr.find(f"{NS}AliasTarget")
        if alias is not None:
            rec["AliasTarget"] = {"HostedZoneId": _text(alias, "HostedZoneId"), "DNSName": _text(alias, "DNSName"),
                                  "EvaluateTargetHealth": _text(alias, "EvaluateTargetHealth") == "true"}
        else:
            rec["ResourceRecords"] = [{"Value": v.text} for v in rr.iter(f"{NS}Value")]
        changes.append({"Action": _text(ch, "Action"), "ResourceRecordSet": rec})
    return {"Changes": changes}


def check_batches(batches: list[dict[str, Any]], *, zone: str, start: list[RecordSet],
                  health_checks: list[str], name: str = "app.example.com.") -> list[RecordSet]:
    """Replay ``batches`` on an independent strict Route53 (FakeRoute53's own rules, not meshops's
    validator) and check meshops's invariants after each; returns the final records at ``name``."""
    shadow = FakeRoute53(validate_client_side=False)
    zone_id = shadow.add_zone(zone)
    for r in start:
        shadow.put(zone_id, r)
    shadow._checks.update({h: None for h in health_checks})  # type: ignore[misc]
    for i, sent in enumerate(batches):
        try:
            shadow._zones[zone_id].records = shadow._apply(shadow._zones[zone_id], sent)
        except FakeAwsError as exc:
            raise AssertionError(f"batch {i} would be refused by Route53: {exc}: {sent}") from None
        weighted = [r for r in shadow.records(zone_id) if r.name == name and r.weighted]
        assert not weighted or sum(r.weight or 0 for r in weighted) > 0, f"batch {i} left every weight at 0"
        for r in weighted:
            assert isinstance(r.weight, int) and 0 <= r.weight <= 255, f"batch {i}: weight {r.weight!r}"
        if all(c["Action"] == "UPSERT" and "Weight" in c["ResourceRecordSet"] for c in sent["Changes"]):
            # a shift: both weights, one batch
            ids = {c["ResourceRecordSet"].get("SetIdentifier") for c in sent["Changes"]}
            assert len(ids) == 2 and len(sent["Changes"]) == 2, f"batch {i} is not a two-weight shift: {sent}"
    return [r for r in shadow.records(zone_id) if r.name == name]


# ---- engine wiring ------------------------------------------------------------------------------------


def drivers_for(clusters: dict[str, FakeKube], *, route53: Route53Api | None = None, http: HttpProbeApi | None = None,
                **planned: Any) -> FakeDrivers:
    """Fake clusters by context (an unknown context is BadInput, as with a real kubeconfig); Route53
    from the environment (moto in these tests) and real HTTP probes unless fakes are given."""
    from meshops.drivers.http_probe import HttpProber
    from meshops.drivers.route53 import Route53Client

    return FakeDrivers(clusters=clusters, route53=Route53Client() if route53 is None else route53,
                       http=HttpProber() if http is None else http, **planned)


def params(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"from_context": "blue", "to_context": "green", "zone": "example.com",
                            "record": "app.example.com", "bake": "0.3s", "propagation_allowance": "0s",
                            "probe_interval": "0.1s", "probe_timeout": "2s", "gate_window": "0s"}
    base.update(overrides)
    return base


def journal(state_dir: Path, run_id: str) -> list[dict[str, Any]]:
    path = state_dir / "runs" / run_id / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def burst_of(stamps: list[float], qps: float) -> float:
    """The smallest burst of a token bucket refilled at ``qps`` that lets requests through at
    these times: the most, over any run of them, of their count less what the bucket refills
    between its first and last (``Route53Client``'s limiter: burst 10, 10/s)."""
    stamps = sorted(stamps)
    return max((j - i + 1 - qps * (stamps[j] - stamps[i]) for i in range(len(stamps))
                for j in range(i, len(stamps))), default=0.0)
