"""The drivers seam: one client per Prometheus URL with that URL's token (gates included), the
fake set refusing what a test did not plan, and the CLI reading driver settings in one place."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from meshops.cli.app import App, parse_prometheus_tokens
from meshops.domain.errors import BadInput, DriverError, NotFound
from meshops.drivers.api import DriverSettings, NoDrivers
from meshops.drivers.dry_run import DryRunDrivers, istioctl_reads
from meshops.drivers.istioctl_fake import FakeIstioctl, ok
from meshops.drivers.kube_fake import FakeKube
from meshops.drivers.live import LiveDrivers
from meshops.drivers.prometheus_fake import FakePrometheus
from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook_text
from meshops.engine.runner import Engine, EngineOptions
from meshops.testing import FakeDrivers, UnplannedDriver
from tests.support.fakeclock import FakeClock


class _Prom(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.path, self.headers.get("Authorization") or ""))
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1.0, "1"]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def prom() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    handler = type("Handler", (_Prom,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


def test_one_prometheus_client_per_url_each_with_its_token(prom: tuple[str, list[tuple[str, str]]]) -> None:
    base, seen = prom
    drivers = LiveDrivers(DriverSettings(prometheus_token="everyone",
                                         prometheus_tokens={f"{base}/b/": "only-b"}))
    a, b = drivers.prometheus(f"{base}/a"), drivers.prometheus(f"{base}/b")
    assert a is not b  # a second URL no longer gets the first URL's client
    assert drivers.prometheus(f"{base}/a/") is a
    a.query("up")
    b.query("up")
    assert seen == [("/a/api/v1/query", "Bearer everyone"), ("/b/api/v1/query", "Bearer only-b")]


def test_the_gate_step_sends_the_prometheus_token(prom: tuple[str, list[tuple[str, str]]], tmp_path: Path) -> None:
    base, seen = prom
    text = f"""apiVersion: meshops.dev/v1
kind: Playbook
metadata: {{name: gate, lock: false}}
steps:
  - id: gate
    uses: health.promql
    with: {{prometheus: "{base}", exprs: ["up > 0"], duration: 0s, interval: 1s}}
"""
    clock = FakeClock()
    engine = Engine(store=LocalStateStore(tmp_path), drivers=LiveDrivers(DriverSettings(prometheus_token="s3cret")),
                    options=EngineOptions(clock=clock, sleep=clock.sleep))
    assert engine.start(load_playbook_text(text, path="gate.yaml"), {}).status == "succeeded"
    assert seen and all(auth == "Bearer s3cret" for _, auth in seen)


def test_fake_drivers_refuse_what_a_test_did_not_plan() -> None:
    kube = FakeKube(context="default")
    drivers = FakeDrivers(kube=kube, istioctl={"1.22.1": FakeIstioctl(version="1.22.1")},
                          prometheus=FakePrometheus(url="http://p:9090"))
    assert drivers.kube is kube
    assert drivers.istioctl("1.22.1").version == "1.22.1"
    assert drivers.prometheus("http://p:9090/") is drivers.prometheus("http://p:9090")
    with pytest.raises(UnplannedDriver, match=r"Route53, which this test did not plan"):
        drivers.route53()
    with pytest.raises(UnplannedDriver, match=r"Prometheus at http://q:9090.*planned: http://p:9090"):
        drivers.prometheus("http://q:9090")
    with pytest.raises(UnplannedDriver, match="HTTP probes"):
        drivers.http()
    # Planned kinds keep the real set's answers for what is missing: a context or version not there.
    with pytest.raises(BadInput, match=r"no istioctl 1\.23\.0"):
        drivers.istioctl("1.23.0")
    with pytest.raises(BadInput, match="kubeconfig context 'other'"):
        drivers.kube_for("other")
    with pytest.raises(UnplannedDriver, match=r"istioctl 1\.22\.1"):
        FakeDrivers().istioctl("1.22.1")
    assert drivers.requests[:2] == ["kube:", "istioctl:1.22.1"]


def test_an_engine_without_drivers_fails_clearly() -> None:
    with pytest.raises(DriverError, match="no drivers, so it cannot reach Route53"):
        NoDrivers().route53()


def test_cli_driver_settings_come_from_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHOPS_PROMETHEUS_TOKEN", "t0")
    monkeypatch.setenv("MESHOPS_PROMETHEUS_TOKENS", "http://a:9090=ta, http://b:9090/=tb==")
    monkeypatch.setenv("MESHOPS_AWS_REGION", "eu-west-1")
    app = App(kube_context="blue", kubeconfig="/k", state_dir="/s", qps=7.0, burst=9)
    s = app.driver_settings()
    assert (s.context, s.kubeconfig, s.qps, s.burst, s.aws_region) == ("blue", "/k", 7.0, 9, "eu-west-1")
    assert s.prometheus_token_for("http://a:9090/") == "ta"
    assert s.prometheus_token_for("http://b:9090") == "tb=="
    assert s.prometheus_token_for("http://c:9090") == "t0"
    assert isinstance(app.drivers, LiveDrivers) and app.drivers is app.drivers
    with pytest.raises(BadInput, match="MESHOPS_PROMETHEUS_TOKENS"):
        parse_prometheus_tokens("http://a:9090")


def test_plan_runs_steps_on_dry_run_drivers_that_record_writes(tmp_path: Path) -> None:
    kube = FakeKube(context="c")
    ictl = FakeIstioctl(version="1.24.1").on("version", ok("1.24.1"))
    text = """apiVersion: meshops.dev/v1
kind: Playbook
metadata: {name: sneaky, lock: false}
steps:
  - id: look
    uses: test.sneaky_read
"""
    engine = Engine(store=LocalStateStore(tmp_path), drivers=FakeDrivers(kube=kube, istioctl={"1.24.1": ictl}))
    [planned] = engine.plan(load_playbook_text(text, path="sneaky.yaml"), {})
    assert planned.error is None, planned.error
    assert "tried 2 write(s), not made" in planned.note
    assert "kube create c: ConfigMap default/sneaky" in planned.note
    assert "istioctl install -y 1.24.1" in planned.note
    assert kube.get("v1", "ConfigMap", "sneaky", "default") is None  # nothing was created
    assert [c[0] for c in ictl.calls] == ["version"]  # the read ran, the install did not


def test_dry_run_drivers_pass_reads_and_answer_writes() -> None:
    kube = FakeKube(context="c")
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}, "data": {"k": "1"}})
    dry = DryRunDrivers(FakeDrivers(kube=kube))
    patched = dry.kube.patch("v1", "ConfigMap", "a", {"data": {"k": "2"}}, "n")
    assert patched["data"] == {"k": "1"}  # the object as it is: the patch was not sent
    assert dry.kube.delete("v1", "ConfigMap", "a", "n") is True
    assert kube.get("v1", "ConfigMap", "a", "n") is not None
    with pytest.raises(NotFound):
        dry.kube.patch("v1", "ConfigMap", "missing", {}, "n")
    assert [w.action for w in dry.writes] == ["patch", "delete", "patch"]
    assert istioctl_reads(["x", "precheck", "--revision", "r"]) and istioctl_reads(["manifest", "generate", "-f", "o"])
    assert not istioctl_reads(["install", "-y"]) and not istioctl_reads(["tag", "set", "default"])
