"""The HTTP front of one cluster: routing, request filters, verbs, audit.

``ThreadingHTTPServer`` with a thread per connection; HTTP/1.1 keep-alive, Content-Length on
every reply, chunked encoding for watches and TCP_NODELAY (without it every request waits
~44 ms for Nagle and delayed ACKs). Each reply goes out in one write for the same reason.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import ssl
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from . import errors, wire
from .errors import ApiError
from .handlers import ResourceHandler
from .jsonutil import dumps
from .routing import RequestInfo, ResourceRoute, describe
from .served import ServedCluster

log = logging.getLogger("meshops.sandbox.apiserver")

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's request size limit
_DRAIN_LIMIT = 32 * 1024 * 1024
_DISCOVERY_PATHS = ("/api", "/apis")


# What kube's default RBAC (system:public-info-viewer) lets anyone read.
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})


class ApiHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, cluster: ServedCluster, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cluster = cluster
        super().__init__((host, port), ApiRequestHandler)


class ApiRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 600  # idle keep-alive connections are closed after this (kube keeps them longer)
    server: ApiHTTPServer
    server_version = "meshops-sandbox"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    # ---- plumbing ----------------------------------------------------------------------------

    def _handle(self) -> None:
        cluster = self.server.cluster
        started = time.time()
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = parse_qs(split.query, keep_blank_values=True)
        status = 500
        info: RequestInfo | None = None
        try:
            body = self._read_body()
            if not self._authenticated(cluster, path):
                status = self._send_error(errors.unauthorized())
                return
            info, route = describe(self.command, path, query, dict(self.headers.items()), cluster.types)
            for request_filter in list(cluster.request_filters):
                response = request_filter(info)
                if response is not None:
                    status = self._send_filtered(response)
                    return
            status = self._dispatch(info, route, body)
        except ApiError as e:
            status = self._send_error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            status = 499  # the client went away (nginx's convention; audit only)
        except Exception as e:
            log.exception("request failed: %s %s", self.command, self.path)
            status = self._send_error(errors.internal(repr(e)))
        finally:
            cluster.audit.record(
                started=started,
                method=self.command,
                path=path,
                query=split.query,
                verb=info.verb if info else self.command.lower(),
                content_type=self.headers.get("Content-Type", ""),
                status=status,
                user_agent=self.headers.get("User-Agent", ""),
                resource=info.resource if info else None,
                namespace=info.namespace if info else None,
                name=info.name if info else None,
            )

    def _authenticated(self, cluster: ServedCluster, path: str) -> bool:
        """With a token set (`sandbox up` writes it into the kubeconfig), every request but the
        public health/version endpoints needs `Authorization: Bearer <token>`; 401 otherwise."""
        token = cluster.token
        if not token or path in PUBLIC_PATHS:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, "RequestEntityTooLarge", "the request is too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise errors.bad_request("invalid Content-Length") from None
        if n > MAX_BODY:
            if n <= _DRAIN_LIMIT:
                # Read and drop it, so the client gets the 413 rather than a broken pipe mid-send.
                remaining = n
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            else:
                self.close_connection = True  # left unread: the connection cannot be reused
            raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        return self.rfile.read(n) if n > 0 else b""

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> int:
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Unknown"
        lines = [
            f"HTTP/1.1 {code} {phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-cache, private",
            f"Date: {self.date_time_string()}",
        ]
        pairs = headers.items() if isinstance(headers, dict) else headers or []
        for key, value in pairs:
            lines.append(f"{key}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)
        return code

    def _send_headers_for_stream(self, content_type: str) -> None:
        head = (
            "HTTP/1.1 200 OK\r\n"
            f"Content-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Cache-Control: no-cache, private\r\n"
            f"Date: {self.date_time_string()}\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1"))

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _abort_stream(self) -> None:
        """Drop the connection mid-stream, without the final chunk."""
        self.close_connection = True
        shutdown_socket(self.connection)

    def _send_json(self, code: int, value: Any, accept: wire.Accept | None = None) -> int:
        if accept is not None and accept.yaml:
            data = value if not isinstance(value, bytes) else json.loads(value)
            return self._send(code, yaml.safe_dump(data, sort_keys=False).encode(), "application/yaml")
        return self._send(code, value if isinstance(value, bytes) else dumps(value))

    def _send_error(self, error: ApiError) -> int:
        return self._send(error.code, dumps(error.status()), headers=error.headers)

    def _send_filtered(self, response: tuple[int, Any, dict[str, str] | None] | tuple[int, Any]) -> int:
        code, body = response[0], response[1]
        headers = dict(response[2] or {}) if len(response) > 2 else {}
        content_type = headers.pop("Content-Type", "application/json")
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = dumps(body)
        return self._send(code, data, content_type, headers)

    # ---- routing -----------------------------------------------------------------------------

    def _dispatch(self, info: RequestInfo, route: ResourceRoute | None, body: bytes) -> int:
        if route is None:
            return self._non_resource(info)
        if self.command not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise errors.method_not_allowed()
        rt = route.resource_type
        if rt is None:
            raise errors.path_not_found()
        if route.namespace is not None and not rt.namespaced:
            raise errors.path_not_found()
        if route.subresource is not None and route.subresource not in rt.subresources:
            raise errors.path_not_found()
        if info.verb not in rt.verbs and not (route.subresource and info.verb in ("get", "update", "patch")):
            raise errors.method_not_allowed()
        if route.subresource == "log" and info.verb != "get":
            raise errors.method_not_allowed()
        if route.name is None and self.command in ("PUT", "PATCH"):
            raise errors.method_not_allowed()
        if route.name is None and route.namespace is None and rt.namespaced and self.command in ("POST", "DELETE"):
            raise errors.path_not_found()
        return ResourceHandler(self, self.server.cluster, info, route, rt, body).run()

    def _non_resource(self, info: RequestInfo) -> int:
        cluster = self.server.cluster
        path = info.path
        known = path in ("/version", "/healthz", "/livez", "/readyz") or path.startswith(("/api", "/openapi"))
        if self.command not in ("GET", "HEAD"):
            if known:
                raise errors.method_not_allowed()
            raise errors.path_not_found()
        if path == "/version":
            return self._send_json(200, cluster.version_info())
        if path in ("/healthz", "/livez", "/readyz"):
            return self._send(200, b"ok", "text/plain; charset=utf-8")
        if path.startswith("/openapi"):
            result = cluster.openapi.serve(path, info.query, info.headers.get("accept", ""))
            if result is None:
                raise errors.path_not_found()
            code, data, content_type, headers = result
            return self._send(code, data, content_type, headers)
        accept = info.headers.get("accept", "")
        if path in _DISCOVERY_PATHS and "as=APIGroupDiscoveryList" in accept:
            # Aggregated discovery: v2 (kubectl 1.30+) or v2beta1 (1.26-1.29), whichever is asked first.
            for entry in accept.split(","):
                params = dict(p.strip().split("=", 1) for p in entry.split(";")[1:] if "=" in p)
                if params.get("as") == "APIGroupDiscoveryList" and params.get("v") in ("v2", "v2beta1"):
                    doc = cluster.discovery.document(path, aggregated=True)
                    if doc is None:
                        break
                    version = params["v"]
                    if version != "v2":
                        doc = doc.replace(b'"apiVersion":"apidiscovery.k8s.io/v2"', b'"apiVersion":"apidiscovery.k8s.io/v2beta1"', 1)
                    return self._send(200, doc, f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
        doc = cluster.discovery.document(path)
        if doc is None:
            raise errors.path_not_found()
        return self._send(200, doc)


def shutdown_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
