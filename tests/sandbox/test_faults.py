"""Fault specs, the fault book's decisions, the faults file and the control endpoint."""

from __future__ import annotations

import pytest

from meshops.sandbox import faults
from meshops.sandbox.faults import FaultBook, FaultError, load_file, parse_spec


def test_parse_specs():
    f = parse_spec("api-error:code=429,rate=0.5,retry-after=2", "blue")
    assert (f.kind, f.cluster, f.params) == ("api-error", "blue", {"code": 429, "rate": 0.5, "retry-after": 2})
    assert parse_spec("ingress-503", "blue").rate == 1.0
    assert parse_spec("ingress-503:share=0.25", "blue").rate == 0.25
    assert parse_spec("watch-cut:after=3,abrupt=true", "g").params == {"after": 3, "abrupt": True}
    assert parse_spec("api-error:code=500,verbs=list+get", "g").params["verbs"] == "list,get"


@pytest.mark.parametrize("spec", ["nope", "api-error", "api-error:code=418", "proxy-not-ready",
                                  "ingress-503:share=2", "watch-cut:after=-1", "api-latency:ms=x", "api-error:code"])
def test_bad_specs(spec):
    with pytest.raises(FaultError):
        parse_spec(spec, "blue")


def test_api_error_decisions():
    book = FaultBook(seed=1)
    book.add(parse_spec("api-error:code=409", "blue"))
    assert book.api_response("blue", "get", "pods") is None  # conflicts only hit writes
    fault, (code, body, headers) = book.api_response("blue", "patch", "deployments")
    assert code == 409 and body["reason"] == "Conflict" and fault.kind == "api-error"
    assert book.api_response("green", "patch", "deployments") is None
    book.clear("blue")
    book.add(parse_spec("api-error:code=429,retry-after=3,resource=deployments", "blue"))
    assert book.api_response("blue", "list", "pods") is None
    _, (code, body, headers) = book.api_response("blue", "list", "deployments")
    assert code == 429 and headers == {"Retry-After": "3"} and body["details"]["retryAfterSeconds"] == 3


def test_rate_is_a_share_of_requests():
    book = FaultBook(seed=7)
    book.add(parse_spec("api-error:code=500,rate=0.3", "blue"))
    hits = sum(book.api_response("blue", "get", "pods") is not None for _ in range(2000))
    assert 500 < hits < 700


def test_ingress_share_and_gates():
    book = FaultBook(seed=3)
    book.add(parse_spec("ingress-503:share=0.5", "blue"))
    fails = sum(book.ingress_fails("blue") is not None for _ in range(1000))
    assert 400 < fails < 600
    assert book.ingress_fails("green") is None
    book.add(parse_spec("proxy-not-ready:revision=1-25-0", "blue"))
    book.add(parse_spec("node-not-ready:node=blue-node-2", "blue"))
    assert book.not_ready_revisions("blue") == {"1-25-0"}
    assert book.not_ready_nodes("blue") == {"blue-node-2"}
    assert [f.kind for f in book.clear("blue")] == ["ingress-503", "proxy-not-ready", "node-not-ready"]
    assert book.active() == []


def test_listeners_hear_adds_and_clears():
    book = FaultBook()
    heard = []
    book.listen(lambda event, f: heard.append((event, f.kind, f.id)))
    f = book.add(parse_spec("watch-cut:after=2", "blue"))
    book.clear(fault_id=f.id)
    assert heard == [("added", "watch-cut", 1), ("cleared", "watch-cut", 1)]


def test_faults_file_forms(tmp_path):
    p = tmp_path / "faults.yaml"
    p.write_text("faults:\n"
                 "  - {cluster: blue, fault: api-error, code: 429, rate: 0.5, retry-after: 1}\n"
                 "  - {cluster: green, fault: ingress-503, share: 0.2}\n"
                 "  - \"watch-cut:after=5\"\n")
    got = load_file(p, default_cluster="blue")
    assert [(f.cluster, f.kind) for f in got] == [("blue", "api-error"), ("green", "ingress-503"), ("blue", "watch-cut")]
    p.write_text("blue: ['proxy-not-ready:revision=canary']\ngreen: [{fault: api-latency, ms: 50}]\n")
    got = load_file(p)
    assert [(f.cluster, f.kind, f.params) for f in got] == [("blue", "proxy-not-ready", {"revision": "canary"}),
                                                             ("green", "api-latency", {"ms": 50})]


def test_control_endpoint_round_trip():
    book = FaultBook()
    server = faults.ControlServer(book, ["blue", "green"]).start()
    try:
        added = faults.send(server.url, "blue", ["ingress-503", "api-error:code=500,rate=0.1"])
        assert [a["kind"] for a in added] == ["ingress-503", "api-error"]
        assert len(book.active("blue")) == 2
        with pytest.raises(FaultError, match="unknown cluster"):
            faults.send(server.url, "purple", ["ingress-503"])
        with pytest.raises(FaultError, match="needs code"):
            faults.send(server.url, "blue", ["api-error"])
        assert len(faults.listing(server.url)) == 2
        assert len(faults.clear(server.url, "blue")) == 2
        assert book.active() == []
    finally:
        server.stop()
