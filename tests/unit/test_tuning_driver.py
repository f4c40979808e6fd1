"""PrometheusClient's HTTP edge cases against a stub server: auth, proxies, overload, timeouts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from meshops.domain.errors import DriverError
from meshops.drivers.prometheus import BadQuery, PrometheusClient


class Stub:
    """Answers every request with (status, body, delay) from `reply`; records headers and forms."""

    def __init__(self) -> None:
        self.reply: tuple[int, bytes, float] = (200, b"", 0.0)
        self.seen: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                stub.seen.append({"auth": self.headers.get("Authorization"), "body": self.rfile.read(length).decode()})
                status, body, delay = stub.reply
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return None  # the timeout test hangs up first: the late write's broken pipe is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.server.shutdown()
    s.server.server_close()


def ok(result: list[dict[str, Any]]) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def test_bearer_token_and_form_post(stub: Stub) -> None:
    """The token goes in an Authorization header; the query is a form-encoded POST with the time."""
    stub.reply = (200, ok([{"metric": {"pod": "a"}, "value": [1, "0.5"]}]), 0.0)
    samples = PrometheusClient(stub.url, bearer_token="s3cr3t-t0ken").query("up", at=1700000100)
    assert [(s.labels, s.value) for s in samples] == [({"pod": "a"}, 0.5)]
    assert stub.seen[0]["auth"] == "Bearer s3cr3t-t0ken"
    assert stub.seen[0]["body"] == "query=up&time=1700000100"


def test_a_proxy_error_page_is_not_taken_for_data(stub: Stub) -> None:
    """An HTML 502 from a proxy becomes a temporary error quoting the page, not an empty result."""
    stub.reply = (502, b"<html><title>502 Bad Gateway</title></html>", 0.0)
    with pytest.raises(DriverError, match="HTTP 502 with a body that is not Prometheus JSON: '<html><title>502") as exc:
        PrometheusClient(stub.url).query("up")
    assert exc.value.temporary


def test_overload_is_temporary_and_bad_data_is_not(stub: Stub) -> None:
    """503 'unavailable' may pass; 400 'bad_data' never will."""
    stub.reply = (503, json.dumps({"status": "error", "errorType": "unavailable", "error": "too many queries"}).encode(), 0.0)
    with pytest.raises(DriverError, match="too many queries") as exc:
        PrometheusClient(stub.url).query("up")
    assert exc.value.temporary
    stub.reply = (400, json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode(), 0.0)
    with pytest.raises(BadQuery) as bad:
        PrometheusClient(stub.url).query("up(")
    assert not bad.value.temporary


def test_a_slow_server_times_out(stub: Stub) -> None:
    """No answer within the timeout: a temporary error naming the query and the limit."""
    stub.reply = (200, ok([]), 1.0)
    with pytest.raises(DriverError, match=r"did not answer 'up' within 0\.2s") as exc:
        PrometheusClient(stub.url, timeout=0.2).query("up")
    assert exc.value.temporary


def test_nan_values_are_kept_as_nan(stub: Stub) -> None:
    """Prometheus's "NaN" is parsed as NaN (callers drop it), never as zero."""
    stub.reply = (200, ok([{"metric": {}, "value": [1, "NaN"]}]), 0.0)
    [sample] = PrometheusClient(stub.url).query("0/0")
    assert sample.value != sample.value
