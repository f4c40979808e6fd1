"""The canary-upgrade steps on a FakeKube with a FakeIstioctl: checks, a full upgrade, and its undo."""

from __future__ import annotations

import re
from typing import Any

import pytest

from meshops.domain.errors import BadInput, LockHeld, PermanentStepError, PreconditionFailed
from meshops.drivers.prometheus import Sample
from meshops.drivers.prometheus_fake import FakePrometheus
from meshops.steps.istio_discover import Discover, DiscoverInputs
from meshops.steps.istio_finalize import Finalize, FinalizeInputs
from meshops.steps.istio_gateways import Gateways, GatewaysInputs
from meshops.steps.istio_install_revision import InstallRevision, InstallRevisionInputs
from meshops.steps.istio_precheck import CheckInputs, UpgradeCheck
from meshops.steps.istio_waves import MoveWave, WaveInputs
from tests.support.canary_fixtures import FakeWorld


def _check(world: FakeWorld, **kw: Any) -> Any:
    inputs = CheckInputs(**{"to": "1.25.2", **kw})
    return UpgradeCheck().run(inputs, world.ctx("check"))


def _wave_inputs(check: Any, wave: dict[str, Any], **kw: Any) -> WaveInputs:
    return WaveInputs(wave=wave, old_revision=check.from_revision, new_revision=check.to_revision,
                      to_version=check.to_version, backup=check.backup, **kw)


@pytest.mark.parametrize(("kw", "kube_version", "error", "message"), [
    ({"to": "1.99.0"}, "v1.30.4", BadInput, "not a release meshops knows"),
    ({"to": "banana"}, "v1.30.4", BadInput, "not an Istio version"),
    ({"to": "1.27.0"}, "v1.30.4", PreconditionFailed, "jumps 3 minors"),
    ({"to": "1.25.2"}, "v1.28.3", PreconditionFailed, "supports Kubernetes 1.29 to 1.32"),
    ({"to": "1.24.2"}, "v1.30.4", PreconditionFailed, "no istioctl 1.24.2"),
    ({"to": "1.25.2", "revision": "default"}, "v1.30.4", PreconditionFailed, "reserved"),
    ({"to": "1.25.2", "first": ["nope"]}, "v1.30.4", PreconditionFailed, "do not exist"),
    ({"to": "1.25.2", "strategy": "inplace"}, "v1.30.4", PreconditionFailed, "matches --protect"),
    ({"to": "1.25.2", "gate_exprs": ["up == bool 1"]}, "v1.30.4", PreconditionFailed, "without `bool`"),
    ({"to": "1.25.2", "compatibility_version": "1.21"}, "v1.30.4", PreconditionFailed,
     "ships compatibility versions 1.22, 1.23, 1.24"),
    ({"to": "1.25.2", "sets": ["values.global.jwtPolicy=first-party-jwt"]}, "v1.30.4", PreconditionFailed,
     "values.global.jwtPolicy: first-party-jwt was dropped in Istio 1.22"),
])
def test_check_refuses_before_any_write(kw: dict[str, Any], kube_version: str, error: type[Exception],
                                        message: str) -> None:
    """Each impossible upgrade is refused with its reason, and nothing was written."""
    world = FakeWorld(kube_version=kube_version, context="prod-east")
    writes = len(world.kube.writes)
    with pytest.raises(error, match=re.escape(message)):
        _check(world, **kw)
    assert world.kube.writes[writes:] == []


def test_inplace_refused_on_an_eks_arn_context() -> None:
    """--protect prod* matches the cluster name inside an EKS ARN context, not only the context name."""
    world = FakeWorld(context="arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu")
    with pytest.raises(PreconditionFailed, match=re.escape("matches --protect prod* (prod-eu)")):
        _check(world, strategy="inplace")
    assert _check(world, strategy="inplace", force=True).to_revision == "default"


def test_inplace_allowed_on_protected_context_with_force() -> None:
    """--force lifts the --protect refusal of an in-place upgrade."""
    world = FakeWorld(context="prod-east")
    out = _check(world, strategy="inplace", force=True)
    assert out.to_revision == "default" and out.plan["mode"] == "restart"


def test_check_refuses_while_another_run_holds_the_lock() -> None:
    """A live Lease held by another run is LockHeld (exit 4)."""
    import time
    from datetime import UTC, datetime

    world = FakeWorld()
    now = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    world.kube.apply({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                      "metadata": {"name": "meshops-run-lock", "namespace": "meshops-system"},
                      "spec": {"holderIdentity": "other-run@host/1", "leaseDurationSeconds": 30,
                               "acquireTime": now, "renewTime": now}})
    with pytest.raises(LockHeld, match="other-run@host/1"):
        _check(world)


def test_discover_summarizes_the_mesh() -> None:
    """Discover reports revisions, default, tags, namespaces, gateways and the istioctl programs."""
    world = FakeWorld(apps=2)
    mesh = Discover().run(DiscoverInputs(), world.ctx("discover"))
    assert mesh.mesh["default_revision"] == "default" and mesh.mesh["tags"] == {"default": "default"}
    assert set(mesh.mesh["namespaces"]) >= {"app-0", "app-1"}
    assert mesh.mesh["gateways"][0]["mode"] == "installed"
    assert set(mesh.istioctls) == {"1.25.2", "1.26.0"}


def test_full_canary_upgrade_and_finalize() -> None:
    """install, waves, gateways, finalize: everything on 1-25-2, --first labels back, the old revision gone."""
    world = FakeWorld(apps=3, per_ns=2)
    check = _check(world, first=["app-1"], wave_size=1)
    install_in = InstallRevisionInputs(version="1.25.2", revision=check.to_revision, overlay=check.overlay)
    install_out = InstallRevision().run(install_in, world.ctx("install"))
    assert install_out.installed
    waves = [(_wave_inputs(check, w, concurrency=2), f"waves[{w['index']}]") for w in check.plan["waves"]]
    assert [w.wave["namespaces"] for w, _ in waves] == [["app-1"], ["app-0"], ["app-2"]]
    wave_out = [MoveWave().run(inputs, world.ctx(key)) for inputs, key in waves]
    assert sum(len(o.restarted) for o in wave_out) == 6
    gw_in = GatewaysInputs(old_revision="default", new_revision="1-25-2", to_version="1.25.2",
                            overlay=check.settings_overlay, backup=check.gateway_backup)
    gw_out = Gateways().run(gw_in, world.ctx("gateways"))
    assert gw_out.moved == ["Deployment/istio-system/istio-ingressgateway"]
    after = world.state()
    assert all(v == ["1-25-2"] for v in after["workloads"].values()) and len(after["workloads"]) == 7
    assert after["namespaces"]["app-1"].get("istio.io/rev") == "prod-canary"
    fin_in = FinalizeInputs(old_revision="default", new_revision="1-25-2", to_version="1.25.2", istioctl="",
                            first_restore=check.plan["first_restore"], backup=check.backup)
    fin_ctx = world.ctx("finalize")
    # the old revision is kept while anything runs on it; here nothing does, so it goes
    fin = Finalize().run(fin_in, fin_ctx)
    assert fin.complete and fin.uninstalled == "default", fin.message
    final = world.state()
    assert final["namespaces"]["app-1"] == {"istio-injection": "enabled"}
    assert final["revisions"] == ["1-25-2"] and not [s for s in final["services"] if s[1] == "istiod"]
    with pytest.raises(PermanentStepError, match="was uninstalled"):
        Finalize().undo(fin_in, fin, fin_ctx)


def test_undo_before_finalize_restores_the_mesh() -> None:
    """A canary rolled back before finalize leaves labels, webhooks, services and proxies as they were."""
    world = FakeWorld(apps=3, per_ns=2)
    before = world.state()
    check = _check(world, first=["app-1"], wave_size=1)
    install_in = InstallRevisionInputs(version="1.25.2", revision=check.to_revision, overlay=check.overlay)
    install_out = InstallRevision().run(install_in, world.ctx("install"))
    done = []
    for w in check.plan["waves"]:
        inputs, key = _wave_inputs(check, w), f"waves[{w['index']}]"
        done.append((inputs, MoveWave().run(inputs, world.ctx(key)), key))
    gw_in = GatewaysInputs(old_revision="default", new_revision="1-25-2", to_version="1.25.2",
                            overlay=check.settings_overlay, backup=check.gateway_backup)
    gw_out = Gateways().run(gw_in, world.ctx("gateways"))
    Gateways().undo(gw_in, gw_out, world.ctx("gateways"))
    for inputs, out, key in reversed(done):
        MoveWave().undo(inputs, out, world.ctx(key))
    InstallRevision().undo(install_in, install_out, world.ctx("install"))
    assert world.state() == before


def test_wave_that_never_gets_ready_fails_and_its_undo_moves_it_back() -> None:
    """Pods of a broken revision never get ready: the wave fails within its timeout; undo restores it."""
    world = FakeWorld(apps=1, per_ns=2, broken=frozenset({"1-25-2"}))
    before = world.state()
    check = _check(world)
    InstallRevision().run(InstallRevisionInputs(version="1.25.2", revision="1-25-2", overlay=check.overlay),
                          world.ctx("install"))
    inputs = _wave_inputs(check, check.plan["waves"][0], wave_timeout="1s")
    with pytest.raises(PermanentStepError, match="did not become ready within 1s"):
        MoveWave().run(inputs, world.ctx("waves[0]"))
    MoveWave().undo(inputs, None, world.ctx("waves[0]"))
    state = world.state()
    assert state["workloads"] == before["workloads"] and state["namespaces"] == before["namespaces"]
    assert {k: v for k, v in state["hooks"].items() if "1-25-2" not in k} == before["hooks"]


def test_failed_promql_gate_fails_the_wave() -> None:
    """A PromQL condition that does not hold after the wave fails it (the playbook then rolls back)."""
    world = FakeWorld(apps=1, per_ns=1)
    check = _check(world)
    InstallRevision().run(InstallRevisionInputs(version="1.25.2", revision="1-25-2", overlay=check.overlay),
                          world.ctx("install"))
    prom = FakePrometheus({re.compile("app-0"): []})
    inputs = _wave_inputs(check, check.plan["waves"][0], prometheus=prom.url, gate_exprs=['errors{ns=~"{namespaces}"} < 1'])
    with pytest.raises(PermanentStepError, match="no data"):
        MoveWave().run(inputs, world.ctx("waves[0]", extra={"prometheus": prom}))
    assert prom.calls and 'ns=~"app-0"' in prom.calls[0][0]


def test_passing_gates_and_approval_with_yes() -> None:
    """Holding PromQL conditions pass; --approve-each-wave is answered by --yes."""
    world = FakeWorld(apps=1, per_ns=1)
    check = _check(world)
    InstallRevision().run(InstallRevisionInputs(version="1.25.2", revision="1-25-2", overlay=check.overlay),
                          world.ctx("install"))
    prom = FakePrometheus({re.compile("app-0"): [Sample(labels={}, value=0.0)]})
    inputs = _wave_inputs(check, check.plan["waves"][0], prometheus=prom.url, gate_exprs=['e{ns=~"{namespaces}"} < 1'],
                          approve=True)
    out = MoveWave().run(inputs, world.ctx("waves[0]", assume_yes=True, extra={"prometheus": prom}))
    assert out.gates["evaluations"] >= 1 and out.restarted


def test_injected_gateway_moves_last_and_back_with_its_namespace() -> None:
    """An injected gateway is left to the gateways step going forward, and follows its namespace back."""
    world = FakeWorld(apps=1, per_ns=1, injected_gateway=True)
    before = world.state()
    check = _check(world, wave_size=10)  # one wave: the gateway namespace with its app
    assert [w["namespaces"] for w in check.plan["waves"]] == [["app-0", "istio-ingress"]]
    install_in = InstallRevisionInputs(version="1.25.2", revision="1-25-2", overlay=check.overlay)
    install_out = InstallRevision().run(install_in, world.ctx("install"))
    wave_in = _wave_inputs(check, check.plan["waves"][0])
    wave_out = MoveWave().run(wave_in, world.ctx("waves[0]"))
    assert "Deployment/istio-ingress/ingress" not in wave_out.restarted
    assert world.state()["workloads"]["Deployment/istio-ingress/ingress"] == ["default"]
    gw_in = GatewaysInputs(old_revision="default", new_revision="1-25-2", to_version="1.25.2",
                            overlay=check.settings_overlay, backup=check.gateway_backup)
    gw_out = Gateways().run(gw_in, world.ctx("gateways"))
    assert set(gw_out.moved) == {"Deployment/istio-ingress/ingress", "Deployment/istio-system/istio-ingressgateway"}
    assert world.state()["workloads"]["Deployment/istio-ingress/ingress"] == ["1-25-2"]
    Gateways().undo(gw_in, gw_out, world.ctx("gateways"))
    MoveWave().undo(wave_in, wave_out, world.ctx("waves[0]"))
    InstallRevision().undo(install_in, install_out, world.ctx("install"))
    assert world.state() == before
