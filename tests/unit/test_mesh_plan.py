"""Planning the data-plane move: waves, relabels and tag flips per mode (meshops.domain.mesh_plan)."""

from __future__ import annotations

import pytest

from meshops.domain.mesh_plan import PlanError, plan_upgrade
from tests.support.canary_fixtures import (
    ns,
    pod,
    revision,
    snapshot,
    tag,
    unrevisioned_control_plane,
    workload,
)

ENABLED = {"istio-injection": "enabled"}


def _app(name: str, rev: str = "default", **labels: str) -> list[dict]:
    return [ns(name, **labels), workload(name, "web"), pod(name, "web-1", owner=("Deployment", "web"), revision=rev)]


def _unrevisioned(count: int = 5) -> list[dict]:
    objs = [*unrevisioned_control_plane(), *revision("1-25-2", "1.25.2")]
    for i in range(count):
        objs += _app(f"app-{i}", **ENABLED)
    return objs


def test_tags_mode_moves_injection_namespaces_with_the_default_tag() -> None:
    """istio-injection=enabled namespaces keep their label; the default tag flips at the first wave."""
    plan = plan_upgrade(snapshot(_unrevisioned()), old="default", new="1-25-2", wave_size=2)
    assert [w.namespaces for w in plan.waves] == [["app-0", "app-1"], ["app-2", "app-3"], ["app-4"]]
    assert [w.flip for w in plan.waves] == [{"default": "1-25-2"}, {}, {}]
    assert all(not w.relabel for w in plan.waves)
    assert plan.tags_before == {"default": "default"} and plan.workloads == 5


def test_first_namespaces_move_alone_on_the_canary_tag() -> None:
    """--first namespaces are relabelled to the canary tag in wave 0 and get their labels back at finalize."""
    plan = plan_upgrade(snapshot(_unrevisioned(3)), old="default", new="1-25-2", first=["app-2"])
    wave0, wave1 = plan.waves
    assert wave0.canary and wave0.namespaces == ["app-2"] and wave0.flip == {"prod-canary": "1-25-2"}
    assert wave0.relabel == {"app-2": {"istio-injection": None, "istio.io/rev": "prod-canary"}}
    assert wave0.original == {"app-2": {"istio-injection": "enabled", "istio.io/rev": None}}
    assert wave1.namespaces == ["app-0", "app-1"] and wave1.flip == {"default": "1-25-2"}
    assert plan.first_restore == {"app-2": {"istio-injection": "enabled", "istio.io/rev": None}}


def test_revisioned_install_flips_the_stable_tag() -> None:
    """Namespaces on prod-stable move when prod-stable is retargeted; none is relabelled."""
    objs = [*revision("1-24-1", "1.24.1"), *revision("1-25-2", "1.25.2"), *tag("prod-stable", "1-24-1"),
            *tag("default", "1-24-1"), *_app("a", "1-24-1", **{"istio.io/rev": "prod-stable"})]
    plan = plan_upgrade(snapshot(objs), old="1-24-1", new="1-25-2")
    assert plan.waves[0].flip == {"prod-stable": "1-25-2"} and not plan.waves[0].relabel


def test_namespaces_on_the_revision_name_adopt_the_stable_tag() -> None:
    """A namespace labelled with the old revision's name is relabelled to the stable tag, which flips."""
    objs = [*revision("1-24-1", "1.24.1"), *revision("1-25-2", "1.25.2"), *tag("default", "1-24-1"),
            *_app("a", "1-24-1", **{"istio.io/rev": "1-24-1"})]
    plan = plan_upgrade(snapshot(objs), old="1-24-1", new="1-25-2")
    assert plan.waves[0].relabel == {"a": {"istio-injection": None, "istio.io/rev": "prod-stable"}}
    assert plan.waves[0].flip == {"prod-stable": "1-25-2"}
    assert plan.tags_before == {"prod-stable": None}  # created by the run


def test_relabel_mode() -> None:
    """--mode relabel: each namespace gets istio.io/rev=<new> and loses istio-injection; no tag moves."""
    plan = plan_upgrade(snapshot(_unrevisioned(2)), old="default", new="1-25-2", mode="relabel", wave_size=10)
    assert plan.waves[0].relabel == {f"app-{i}": {"istio-injection": None, "istio.io/rev": "1-25-2"} for i in (0, 1)}
    assert plan.waves[0].flip == {} and plan.waves[0].pod_label == "1-25-2"


def test_empty_namespaces_that_select_the_old_revision_are_planned() -> None:
    """A namespace with no workloads that selects the old revision moves too (it must not dangle later),
    after those with workloads (a first wave that restarts nothing would prove nothing)."""
    objs = [*_unrevisioned(1), ns("empty", **ENABLED), ns("other", **{"istio-injection": "disabled"})]
    plan = plan_upgrade(snapshot(objs), old="default", new="1-25-2", mode="relabel")
    assert [w.namespaces for w in plan.waves] == [["app-0"], ["empty"]]
    assert "nothing to restart" in plan.waves[1].why["empty"]


def test_pod_label_workloads_in_unlabelled_namespaces() -> None:
    """Workloads that select by pod label in an unlabelled namespace are planned with their namespace."""
    objs = [*unrevisioned_control_plane(), *revision("1-25-2", "1.25.2"), ns("p"),
            workload("p", "web", labels={"sidecar.istio.io/inject": "true"}),
            pod("p", "web-1", owner=("Deployment", "web"), revision="default")]
    plan = plan_upgrade(snapshot(objs), old="default", new="1-25-2")
    assert plan.waves[0].namespaces == ["p"] and plan.waves[0].flip == {"default": "1-25-2"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"first": ["nope"]}, "do not exist"),
    ({"first": ["other"]}, "nothing on revision default"),
    ({"wave_size": -1}, "at least 1"),
    ({"growth": 0.5}, "growth 0.5"),
    ({"order": "random"}, "unknown order"),
    ({"mode": "bogus"}, "unknown mode"),
])
def test_plan_errors(kwargs: dict, message: str) -> None:
    """Impossible requests are refused with a reason."""
    objs = [*_unrevisioned(1), ns("other")]
    with pytest.raises(PlanError, match=message):
        plan_upgrade(snapshot(objs), old="default", new="1-25-2", **kwargs)


def test_canary_tag_in_use_outside_first_is_refused() -> None:
    """Retargeting a canary tag that other namespaces use would move them early: refused."""
    objs = [*_unrevisioned(1), *tag("prod-canary", "default"),
            *_app("c", **{"istio.io/rev": "prod-canary"})]
    with pytest.raises(PlanError, match="canary tag"):
        plan_upgrade(snapshot(objs), old="default", new="1-25-2", first=["app-0"])
