"""The Kubernetes driver: the official client over HTTP, behind a small generic interface.

Objects are plain dicts (``apiVersion``/``kind``/``metadata``...), addressed by apiVersion
and kind. Every request passes the client-side rate limiter; 429 (honouring
Retry-After), 5xx and dropped connections are retried a bounded number of times; HTTP
errors become meshops errors (NotFound, Conflict, DriverError) with the Status reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3

from meshops.domain.errors import Conflict, DriverError, ExitCode, NotFound
from meshops.domain.redact import register_credential
from meshops.drivers.kube_api import KubeApi as KubeApi
from meshops.drivers.kube_api import Obj as Obj
from meshops.drivers.kube_api import ObjectList as ObjectList
from meshops.drivers.kube_api import PatchType as PatchType
from meshops.drivers.kube_api import WatchEvent as WatchEvent
from meshops.drivers.ratelimit import TokenBucket

_PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}


@dataclass(frozen=True, kw_only=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


def status_reason(body: str | bytes | None) -> tuple[str, str]:
    """(reason, message) from a Kubernetes Status body, tolerating anything else."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return "", (body.decode(errors="replace") if isinstance(body, bytes) else str(body or ""))[:300]
    if not isinstance(data, dict):
        return "", str(data)[:300]
    return str(data.get("reason", "")), str(data.get("message", ""))[:500]


class Unreachable(DriverError):
    """The API server never answered this client: a wrong address or a cluster that is down.
    Nothing can have been changed through it, so this is exit 2 like other bad input."""

    exit_code = ExitCode.BAD_INPUT


class KubeClient:
    """``KubeApi`` over the official client. One per context; thread-safe."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None, qps: float = 50.0,
                 burst: int = 100, max_retries: int = 6, request_timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, max_retry_after: float = 10.0) -> None:
        from meshops.drivers.kube_config import load_api_client

        # A kubeconfig, or the ServiceAccount inside a cluster; BadInput naming what was tried.
        self._api, self.context = load_api_client(kubeconfig, context)
        conf = self._api.configuration
        # The API server URL: a guard matches it too (a context can be renamed, the server cannot).
        self.server = str(conf.host or "")
        # Until the API server has answered once, a connection error is a wrong address or a
        # cluster that is down, not a blip: say so at once instead of retrying for 13 s.
        self._reached = False
        for key in ("authorization", "BearerToken"):
            if conf.api_key.get(key):
                register_credential(conf.api_key[key])
                register_credential(str(conf.api_key[key]).split(" ", 1)[-1].strip())  # "Bearer x" and in-cluster "bearer x"
        self._api.user_agent = "meshops/0.1"
        self.limiter = TokenBucket(qps=qps, burst=burst)
        self._sleep = sleep
        self._max_retries = max_retries
        self._max_retry_after = max_retry_after
        self._timeout = request_timeout
        self._resources: dict[tuple[str, str], Resource] = {}
        self._discovered: set[str] = set()
        self._lock = threading.Lock()
        self.requests = 0

    # ---- transport --------------------------------------------------------------------

    def _call(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
              content_type: str | None = None, stream: bool = False, timeout: float | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        query_list = [(k, v) for k, v in (query or {}).items() if v is not None]
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire()
            method_, url, hdrs, body_, _ = self._api.param_serialize(
                method=method, resource_path=path, query_params=query_list, header_params=dict(headers), body=body,
                auth_settings=["BearerToken"])
            try:
                with self._lock:
                    self.requests += 1
                # (connect, read): an address that drops packets fails in seconds, not after the read timeout.
                read = timeout or self._timeout
                resp = self._api.call_api(method_, url, header_params=hdrs, body=body_,
                                          _request_timeout=(min(10.0, read), read))
            except Exception as exc:  # urllib3 connection errors surface raw
                if attempt <= (self._max_retries if self._reached else 1):
                    self._sleep(min(8.0, 0.2 * 2 ** (attempt - 1)))
                    continue
                cause = getattr(exc, "reason", None) or exc
                text = f"{method} {path}: cannot reach the API server {self.server} of context {self.context}: {cause}"
                if not self._reached:
                    raise Unreachable(text, hint="is the cluster up, and is this the right context?") from None
                raise DriverError(text, temporary=True) from None
            self._reached = True
            if 200 <= resp.status < 300:
                if stream:
                    return resp.response
                data = resp.read()
                return json.loads(data) if data else {}
            data = resp.read()
            if resp.status in (429, 500, 502, 503, 504) and attempt <= self._max_retries:
                retry_after = resp.getheader("Retry-After")
                try:
                    delay = float(retry_after) if retry_after else min(8.0, 0.2 * 2 ** (attempt - 1))
                except ValueError:
                    delay = 1.0
                # A server (or anything in between) may ask for any wait; a run must not hang on
                # it. Past the cap the retry budget, not the header, decides.
                delay = min(max(0.0, delay), self._max_retry_after) if delay == delay else 1.0
                if resp.status == 429:
                    self.limiter.pause_until(time.monotonic() + delay)
                else:
                    self._sleep(delay)
                continue
            reason, message = status_reason(data)
            text = f"{method} {path}: {resp.status} {reason or resp.reason}: {message}"
            if resp.status == 404:
                raise NotFound(text)
            if resp.status == 409:
                raise Conflict(text)
            if resp.status in (400, 422):
                raise DriverError(text, temporary=False)
            if resp.status in (401, 403):
                raise DriverError(text, temporary=False, hint="check the credentials and RBAC of this context")
            raise DriverError(text, temporary=resp.status >= 500 or resp.status == 429)

    # ---- discovery ----------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        if key in self._resources:
            return self._resources[key]
        if api_version not in self._discovered:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                doc = self._call("GET", path)
            except NotFound:
                doc = {"resources": []}
            for r in doc.get("resources", []):
                if "/" not in r["name"]:
                    self._resources.setdefault((api_version, r["kind"]),
                                               Resource(api_version=api_version, kind=r["kind"], plural=r["name"],
                                                        namespaced=bool(r.get("namespaced"))))
            self._discovered.add(api_version)
        if key not in self._resources:
            raise NotFound(f"the cluster {self.context} serves no {kind} in {api_version}")
        return self._resources[key]

    def server_version(self) -> str:
        data = self._call("GET", "/version")
        return str(data.get("gitVersion", ""))

    # ---- verbs --------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        res = self.resource(api_version, kind)
        try:
            obj: Obj = self._call("GET", res.path(namespace, name))
            return obj
        except NotFound:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> ObjectList:
        res = self.resource(api_version, kind)
        items: list[Obj] = []
        cont: str | None = None
        while True:
            data = self._call("GET", res.path(namespace), query={
                "labelSelector": label_selector, "fieldSelector": field_selector, "limit": 500, "continue": cont})
            for it in data.get("items", []):
                it.setdefault("apiVersion", api_version)
                it.setdefault("kind", kind)
                items.append(it)
            cont = (data.get("metadata") or {}).get("continue")
            if not cont:
                return ObjectList(items=items, resource_version=str((data.get("metadata") or {}).get("resourceVersion", "")))

    def create(self, obj: Obj) -> Obj:
        res = self.resource(obj["apiVersion"], obj["kind"])
        out: Obj = self._call("POST", res.path(obj["metadata"].get("namespace")), body=obj)
        return out

    def replace(self, obj: Obj) -> Obj:
        res = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        out: Obj = self._call("PUT", res.path(meta.get("namespace"), meta["name"]), body=obj)
        return out

    def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: PatchType = "merge", subresource: str | None = None) -> Obj:
        res = self.resource(api_version, kind)
        query = {"fieldManager": "meshops", "force": "true"} if patch_type == "apply" else {"fieldManager": "meshops"}
        out: Obj = self._call("PATCH", res.path(namespace, name, subresource), body=patch,
                              content_type=_PATCH_CONTENT_TYPES[patch_type], query=query)
        return out

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               propagation: str = "Background") -> bool:
        res = self.resource(api_version, kind)
        try:
            self._call("DELETE", res.path(namespace, name), body={"propagationPolicy": propagation})
            return True
        except NotFound:
            return False

    def watch(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
              field_selector: str | None = None, resource_version: str | None = None,
              timeout: float | None = None) -> Iterator[WatchEvent]:
        """Events from ``resource_version`` on; ends when the server closes the stream (``timeout``)."""
        res = self.resource(api_version, kind)
        server_timeout = max(1, int(timeout)) if timeout else 300
        raw = self._call("GET", res.path(namespace), stream=True, timeout=server_timeout + 10, query={
            "watch": "true", "labelSelector": label_selector, "fieldSelector": field_selector,
            "resourceVersion": resource_version, "timeoutSeconds": server_timeout, "allowWatchBookmarks": "true"})
        buf = b""
        try:
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        obj = event.get("object") or {}
                        code = obj.get("code")
                        if code == 410:
                            raise Conflict(f"watch of {kind}: resourceVersion {resource_version} is too old (410 Gone)")
                        raise DriverError(f"watch of {kind}: {obj.get('message', obj)}", temporary=True)
                    yield WatchEvent(type=event["type"], object=event["object"])
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
            # A cut stream is normal (server restarts, proxies, faults): the caller re-lists or resumes.
            raise DriverError(f"watch of {kind} interrupted: {type(exc).__name__}", temporary=True) from None
        finally:
            raw.release_conn()
