"""The API server at the HTTP level: bad input, content types, connections, watch framing, audit."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from meshops.sandbox.apiserver import Cluster


@pytest.fixture
def conn(cluster: Cluster) -> Iterator[http.client.HTTPConnection]:
    c = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
    yield c
    c.close()


def call(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed


def cm(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}


def test_trailing_slashes_and_unknown_paths(conn: http.client.HTTPConnection) -> None:
    """Trailing slashes are ignored; unknown paths and resources are 404 Status bodies."""
    for path in ("/version/", "/api/", "/apis/", "/api/v1/", "/apis/apps/v1/"):
        assert call(conn, "GET", path)[0] == 200, path
    for path in ("/nope", "/api/v1/widgets", "/apis/nope/v1/things", "/api/v1/namespaces/default/pods/p/bogus"):
        code, _, body = call(conn, "GET", path)
        assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound", path


def test_post_without_content_type_is_json(conn: http.client.HTTPConnection) -> None:
    """A POST with no Content-Type is read as JSON, as kube-apiserver does."""
    code, headers, body = call(conn, "POST", "/api/v1/namespaces/default/configmaps", cm("plain"))
    assert code == 201 and body["metadata"]["name"] == "plain"
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) > 0


def test_wrong_methods_and_media_types(conn: http.client.HTTPConnection) -> None:
    """405 for verbs a path does not take, 415 for unknown body types, 406 for unservable Accepts."""
    assert call(conn, "PUT", "/api/v1/namespaces/default/configmaps", cm("x"))[0] == 405
    assert call(conn, "POST", "/version")[0] == 405
    call(conn, "POST", "/api/v1/namespaces/default/configmaps", cm("m"))
    code, _, body = call(conn, "PATCH", "/api/v1/namespaces/default/configmaps/m", {"data": {}}, {"Content-Type": "application/json"})
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    code, _, _ = call(conn, "POST", "/api/v1/namespaces/default/configmaps", b"<xml/>", {"Content-Type": "text/xml"})
    assert code == 400
    code, _, body = call(conn, "GET", "/api/v1/namespaces", headers={"Accept": "application/vnd.kubernetes.protobuf"})
    assert code == 406 and body["reason"] == "NotAcceptable"


def test_malformed_and_invalid_bodies(conn: http.client.HTTPConnection) -> None:
    """Unparseable JSON is 400; a wrong field type is 400 naming it; invalid values are 422 with causes."""
    code, _, body = call(conn, "POST", "/api/v1/namespaces/default/configmaps", b"{not json", {"Content-Type": "application/json"})
    assert code == 400 and body["reason"] == "BadRequest"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    code, _, body = call(conn, "POST", "/apis/apps/v1/namespaces/default/deployments", deployment)
    assert code == 400 and "spec.replicas" in body["message"]
    deployment["spec"]["replicas"] = -1
    deployment["spec"]["template"]["metadata"]["labels"] = {"a": "other"}
    code, _, body = call(conn, "POST", "/apis/apps/v1/namespaces/default/deployments", deployment)
    assert code == 422 and body["reason"] == "Invalid"
    fields = {cause["field"] for cause in body["details"]["causes"]}
    assert fields == {"spec.replicas", "spec.template.metadata.labels"}
    code, _, body = call(conn, "POST", "/api/v1/namespaces/default/configmaps", cm("Bad_Name"))
    assert code == 422 and body["details"]["causes"][0]["field"] == "metadata.name"
    code, _, body = call(conn, "POST", "/api/v1/namespaces/other/configmaps", {**cm("x"), "metadata": {"name": "x", "namespace": "default"}})
    assert code == 400 and "does not match the namespace" in body["message"]
    code, _, body = call(conn, "POST", "/api/v1/namespaces/default/configmaps", [1, 2])
    assert code == 400


def test_field_validation(conn: http.client.HTTPConnection) -> None:
    """Unknown fields are refused with Strict, warned about with Warn (the default) and always dropped."""
    body = cm("fv", data={"a": "b"}, bogus=1)
    code, _, reply = call(conn, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", body)
    assert code == 400 and reply["message"] == 'strict decoding error: unknown field "bogus"'
    code, headers, reply = call(conn, "POST", "/api/v1/namespaces/default/configmaps", body)
    assert code == 201 and "bogus" not in reply
    assert headers["warning"] == '299 - "unknown field \\"bogus\\""'
    assert call(conn, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Loose", cm("fv2"))[0] == 400


def test_oversized_body_is_refused(conn: http.client.HTTPConnection, cluster: Cluster) -> None:
    """A body beyond the 3 MiB request limit gets a 413 Status, not a crash or a hung connection."""
    big = cm("big", data={"k": "x" * (3 * 1024 * 1024 + 10)})
    code, _, body = call(conn, "POST", "/api/v1/namespaces/default/configmaps", big)
    assert code == 413 and body["reason"] == "RequestEntityTooLarge"
    fresh = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=5)
    assert call(fresh, "GET", "/version")[0] == 200
    fresh.close()


def test_keep_alive_and_nodelay(conn: http.client.HTTPConnection) -> None:
    """Many requests share one connection, each reply with Content-Length; sockets run with TCP_NODELAY."""
    from meshops.sandbox.apiserver.http import ApiRequestHandler

    call(conn, "POST", "/api/v1/namespaces/default/configmaps", cm("k"))
    local_port = conn.sock.getsockname()[1]
    for i in range(50):
        code, headers, _ = call(conn, "PATCH", "/api/v1/namespaces/default/configmaps/k", {"data": {"i": str(i)}},
                                {"Content-Type": "application/merge-patch+json"})
        assert code == 200 and "content-length" in headers
    assert conn.sock.getsockname()[1] == local_port  # the same TCP connection throughout
    # Without it every request waits ~44 ms for Nagle and delayed ACKs (timings live in the bench).
    assert ApiRequestHandler.disable_nagle_algorithm is True


def test_watch_is_chunked_and_ends_on_timeout(cluster: Cluster) -> None:
    """A watch is a chunked stream of newline-delimited events that ends cleanly at timeoutSeconds."""
    sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=5)
    sock.sendall(b"GET /api/v1/namespaces?watch=true&timeoutSeconds=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    start = time.monotonic()
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the final chunk"
        data += chunk
    assert 0.9 < time.monotonic() - start < 10  # it waited for timeoutSeconds, then ended
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")  # still usable: keep-alive after a watch
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()
    events = [json.loads(line) for line in body.split(b"\r\n") if line.startswith(b"{")]
    assert {e["object"]["metadata"]["name"] for e in events} >= {"default", "kube-system"}
    assert all(e["type"] == "ADDED" for e in events)


def test_request_filters_and_audit(conn: http.client.HTTPConnection, cluster: Cluster, wait: Any) -> None:
    """A request filter can answer instead of the server; every request, faulted or not, is audited."""
    def throttle(info: Any) -> Any:
        if info.verb == "list" and info.resource == "configmaps":
            return 429, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests", "code": 429}, {"Retry-After": "1"}
        return None

    cluster.request_filters.append(throttle)
    code, headers, body = call(conn, "GET", "/api/v1/namespaces/default/configmaps?limit=5", headers={"User-Agent": "audit-test"})
    assert code == 429 and headers["retry-after"] == "1" and body["reason"] == "TooManyRequests"
    cluster.request_filters.remove(throttle)
    assert call(conn, "GET", "/api/v1/namespaces/default/configmaps", headers={"User-Agent": "audit-test"})[0] == 200
    # A request is audited once its response is sent: the client can be a moment ahead.
    entries = wait(lambda: [e for e in list(cluster.audit.entries) if e["user_agent"] == "audit-test"][1:] and
                   [e for e in list(cluster.audit.entries) if e["user_agent"] == "audit-test"])
    assert [(e["verb"], e["status"], e["query"]) for e in entries] == [("list", 429, "limit=5"), ("list", 200, "")]
    assert all(e["duration_ms"] >= 0 and e["path"] == "/api/v1/namespaces/default/configmaps" for e in entries)


def test_audit_file_has_one_line_per_request(tmp_path: Any) -> None:
    """With an audit path, each request is one JSON line with the documented fields."""
    path = tmp_path / "audit.jsonl"
    with Cluster("audited", audit_path=path) as c:
        conn = http.client.HTTPConnection("127.0.0.1", c.port)
        for _ in range(3):
            call(conn, "GET", "/api/v1/namespaces", headers={"User-Agent": "counted"})
        conn.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    counted = [e for e in lines if e["user_agent"] == "counted"]
    assert len(counted) == 3
    assert set(counted[0]) >= {"time", "verb", "path", "query", "content_type", "status", "duration_ms", "user_agent"}


def test_watch_cut_after_events(cluster: Cluster) -> None:
    """A watch filter ends streams after N events, cleanly or by dropping the connection."""
    from meshops.sandbox.apiserver import WatchCut

    cluster.watch_filters.append(lambda info: WatchCut(after_events=2, abrupt=True) if info.resource == "namespaces" else None)
    sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=5)
    sock.sendall(b"GET /api/v1/namespaces?watch=1&timeoutSeconds=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.count(b'"type":"ADDED"') == 2
    assert not data.endswith(b"0\r\n\r\n")  # abrupt: no final chunk


def test_bearer_token_required_when_set(cluster: Cluster, conn: http.client.HTTPConnection) -> None:
    """`sandbox up` gives its API servers the token it writes into DIR/kubeconfig: 401 without it."""
    cluster.token = "sbx-" + "ab" * 24
    status, _, body = call(conn, "GET", "/api/v1/namespaces")
    assert status == 401 and body["reason"] == "Unauthorized" and body["code"] == 401
    assert call(conn, "GET", "/api/v1/namespaces", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert call(conn, "GET", "/api/v1/namespaces", headers={"Authorization": f"Bearer {cluster.token}"})[0] == 200
    assert call(conn, "GET", "/version")[0] == 200  # public, as system:public-info-viewer allows
