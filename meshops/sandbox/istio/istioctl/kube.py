"""A small Kubernetes REST client for the istioctl programs: kubeconfig, paths, verbs.

stdlib only (http.client + json), so an istioctl invocation starts in ~0.1 s instead of
paying for the official client's import. It talks to whatever the kubeconfig names, so the
programs have no side door into the sandbox. Like client-go, it waits out 429s (and 5xx
answers carrying Retry-After) before giving up.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshops.sandbox.istio.crds import KIND_BY_NAME

Obj = dict[str, Any]

# kind -> (plural, namespaced) for the built-in kinds istioctl touches.
_BUILTIN: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False), "Node": ("nodes", False), "Pod": ("pods", True),
    "Service": ("services", True), "Endpoints": ("endpoints", True), "ConfigMap": ("configmaps", True),
    "Secret": ("secrets", True), "ServiceAccount": ("serviceaccounts", True), "Event": ("events", True),
    "Deployment": ("deployments", True), "ReplicaSet": ("replicasets", True),
    "StatefulSet": ("statefulsets", True), "DaemonSet": ("daemonsets", True), "Job": ("jobs", True),
    "CronJob": ("cronjobs", True), "PodDisruptionBudget": ("poddisruptionbudgets", True),
    "Lease": ("leases", True), "HorizontalPodAutoscaler": ("horizontalpodautoscalers", True),
    "MutatingWebhookConfiguration": ("mutatingwebhookconfigurations", False),
    "ValidatingWebhookConfiguration": ("validatingwebhookconfigurations", False),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
}
_DEFAULT_API_VERSION = {
    "Deployment": "apps/v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
    "Job": "batch/v1", "CronJob": "batch/v1", "PodDisruptionBudget": "policy/v1",
    "Lease": "coordination.k8s.io/v1", "HorizontalPodAutoscaler": "autoscaling/v2",
    "MutatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
    "ValidatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
}


class KubeError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


class ConfigError(Exception):
    pass


@dataclass
class KubeConfig:
    server: str
    namespace: str = "default"
    context: str = ""
    token: str | None = None
    basic: tuple[str, str] | None = None
    ca_file: str | None = None
    insecure: bool = False
    client_cert: tuple[str, str] | None = None
    _temp: list[str] = field(default_factory=list, repr=False)


def _materialise(data_b64: str, keep: list[str]) -> str:
    fd, path = tempfile.mkstemp(prefix="istioctl-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64decode(data_b64))
    keep.append(path)
    return path


def load_kubeconfig(path: str | None = None, context: str | None = None) -> KubeConfig:
    """Resolve --kubeconfig / $KUBECONFIG (first file wins per entry) / ~/.kube/config."""
    if path:
        paths = [path]
    elif os.environ.get("KUBECONFIG"):
        paths = [p for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
    else:
        paths = [str(Path.home() / ".kube" / "config")]
    merged: Obj = {"clusters": {}, "users": {}, "contexts": {}, "current-context": ""}
    for p in paths:
        try:
            doc = yaml.safe_load(Path(p).read_text()) or {}
        except FileNotFoundError:
            continue
        for section in ("clusters", "users", "contexts"):
            for entry in doc.get(section) or []:
                merged[section].setdefault(entry.get("name"), entry.get(section[:-1]) or {})
        merged["current-context"] = merged["current-context"] or doc.get("current-context", "")
    ctx_name = context or merged["current-context"]
    if not ctx_name:
        raise ConfigError("invalid configuration: no configuration has been provided, try setting "
                          "KUBERNETES_MASTER environment variable")
    ctx = merged["contexts"].get(ctx_name)
    if ctx is None:
        raise ConfigError(f'context "{ctx_name}" does not exist')
    cluster = merged["clusters"].get(ctx.get("cluster"), {})
    user = merged["users"].get(ctx.get("user"), {}) or {}
    if not cluster.get("server"):
        raise ConfigError(f'cluster "{ctx.get("cluster")}" has no server')
    cfg = KubeConfig(server=cluster["server"].rstrip("/"), namespace=ctx.get("namespace") or "default",
                     context=ctx_name, insecure=bool(cluster.get("insecure-skip-tls-verify")))
    if cluster.get("certificate-authority-data"):
        cfg.ca_file = _materialise(cluster["certificate-authority-data"], cfg._temp)
    elif cluster.get("certificate-authority"):
        cfg.ca_file = cluster["certificate-authority"]
    cfg.token = user.get("token") or (Path(user["tokenFile"]).read_text().strip() if user.get("tokenFile") else None)
    if user.get("username"):
        cfg.basic = (user["username"], user.get("password", ""))
    cert = user.get("client-certificate") or (
        _materialise(user["client-certificate-data"], cfg._temp) if user.get("client-certificate-data") else None)
    key = user.get("client-key") or (
        _materialise(user["client-key-data"], cfg._temp) if user.get("client-key-data") else None)
    if cert and key:
        cfg.client_cert = (cert, key)
    return cfg


def resource_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    if kind in _BUILTIN:
        plural, namespaced = _BUILTIN[kind]
    elif kind in KIND_BY_NAME:
        plural, namespaced = KIND_BY_NAME[kind].plural, True
    else:
        raise KubeError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"')
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


def object_path(obj: Obj, default_namespace: str = "default", with_name: bool = True) -> str:
    kind = obj["kind"]
    api_version = obj.get("apiVersion") or _DEFAULT_API_VERSION.get(kind, "v1")
    meta = obj.get("metadata") or {}
    namespaced = _BUILTIN.get(kind, ("", True))[1]
    ns = (meta.get("namespace") or default_namespace) if namespaced else None
    return resource_path(api_version, kind, ns, meta.get("name") if with_name else None)


class Client:
    """One keep-alive connection to the API server; methods return parsed JSON."""

    def __init__(self, cfg: KubeConfig, *, max_retries: int = 10) -> None:
        self.cfg = cfg
        self.max_retries = max_retries
        url = urllib.parse.urlsplit(cfg.server)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                ctx = ssl.create_default_context(cafile=self.cfg.ca_file)
                if self.cfg.insecure:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if self.cfg.client_cert:
                    ctx.load_cert_chain(*self.cfg.client_cert)
                self._conn = http.client.HTTPSConnection(self._host, self._port, context=ctx, timeout=60)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
        return self._conn

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
                content_type: str = "application/json") -> Any:
        url = self._prefix + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None and v != ""})
        headers = {"Accept": "application/json", "User-Agent": "istioctl/sandbox"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        elif self.cfg.basic:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.cfg.basic).encode()).decode()
        for attempt in range(self.max_retries + 1):
            status, resp_headers, data = self._send(method, url, payload, headers)
            retry_after = resp_headers.get("retry-after")
            if (status == 429 or (status >= 500 and retry_after)) and attempt < self.max_retries:
                time.sleep(min(float(retry_after or 1), 10.0))
                continue
            break
        if status >= 400:
            try:
                st = json.loads(data)
                raise KubeError(status, st.get("reason", ""), st.get("message", data.decode(errors="replace")))
            except (ValueError, AttributeError):
                raise KubeError(status, "", data.decode(errors="replace")) from None
        return json.loads(data) if data else None

    def _send(self, method: str, url: str, payload: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            conn = self._connect()
            try:
                conn.request(method, url, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                # A keep-alive connection the server closed: reconnect once, then report.
                conn.close()
                self._conn = None
                if attempt == 1:
                    host = f"{self._host}:{self._port}"
                    raise KubeError(0, "ConnectionRefused",
                                    f'Get "{self.cfg.server}{url}": dial tcp {host}: connect: connection refused'
                                    if isinstance(exc, ConnectionRefusedError) else str(exc)) from exc
        raise AssertionError("unreachable")

    # --- verbs -------------------------------------------------------------------------------

    def get(self, path: str) -> Obj | None:
        try:
            return self.request("GET", path)  # type: ignore[no-any-return]
        except KubeError as e:
            if e.code == 404:
                return None
            raise

    def list(self, path: str, *, label_selector: str | None = None, field_selector: str | None = None) -> list[Obj]:
        items: list[Obj] = []
        cont = None
        while True:
            page = self.request("GET", path, query={"labelSelector": label_selector, "fieldSelector": field_selector,
                                                     "limit": 500, "continue": cont})
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items

    def create(self, path: str, obj: Obj) -> Obj:
        return self.request("POST", path, obj)  # type: ignore[no-any-return]

    def replace(self, path: str, obj: Obj) -> Obj:
        return self.request("PUT", path, obj)  # type: ignore[no-any-return]

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")  # type: ignore[no-any-return]

    def delete(self, path: str, *, propagation: str = "Background") -> bool:
        try:
            self.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                          "propagationPolicy": propagation})
            return True
        except KubeError as e:
            if e.code == 404:
                return False
            raise

    def server_version(self) -> Obj:
        return self.request("GET", "/version")  # type: ignore[no-any-return]

    def apply(self, obj: Obj, default_namespace: str = "default") -> str:
        """Create or update `obj`; returns 'created', 'configured' or 'unchanged'."""
        path = object_path(obj, default_namespace)
        for _ in range(5):
            existing = self.get(path)
            if existing is None:
                try:
                    self.create(object_path(obj, default_namespace, with_name=False), obj)
                    return "created"
                except KubeError as e:
                    if e.reason == "AlreadyExists":
                        continue
                    raise
            desired = _carry_server_fields(existing, obj)
            if _same(existing, desired):
                return "unchanged"
            try:
                self.replace(path, desired)
                return "configured"
            except KubeError as e:
                if e.code == 409:
                    continue
                raise
        raise KubeError(409, "Conflict", f"could not apply {obj['kind']} {obj['metadata'].get('name')}: conflicts")


def _carry_server_fields(existing: Obj, desired: Obj) -> Obj:
    out: Obj = json.loads(json.dumps(desired))
    meta = out.setdefault("metadata", {})
    old_meta = existing.get("metadata") or {}
    meta["resourceVersion"] = old_meta.get("resourceVersion")
    meta["labels"] = {**(old_meta.get("labels") or {}), **(meta.get("labels") or {})}
    meta["annotations"] = {**(old_meta.get("annotations") or {}), **(meta.get("annotations") or {})}
    if out.get("kind") == "Service":
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if key in (existing.get("spec") or {}):
                out.setdefault("spec", {})[key] = existing["spec"][key]
    if "status" in existing:
        out["status"] = existing["status"]
    return out


def _same(existing: Obj, desired: Obj) -> bool:
    for key, value in desired.items():
        if key == "metadata":
            old = existing.get("metadata") or {}
            if any(old.get(k) != value.get(k) for k in ("labels", "annotations")):
                return False
        elif key != "status" and existing.get(key) != value:
            return False
    return True
