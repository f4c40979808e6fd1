"""FakeKube, FakeIstioctl, the watch-based waits and the K-at-a-time restarts they serve."""

from __future__ import annotations

import re
import threading
import time

import pytest

from meshops.domain.errors import Conflict, NotFound
from meshops.domain.selectors import selector_matches as label_selector_matches
from meshops.drivers.istioctl import IstioctlFailed
from meshops.drivers.istioctl_fake import FakeIstioctl, UnplannedCommand, fail, ok
from meshops.drivers.kube_fake import FakeKube
from meshops.drivers.kube_waits import Cache, rollout_state
from meshops.ops import k8s_restart as restarts
from meshops.ops.istio_common import RESTARTED_BY
from tests.support.canary_fixtures import FakeWorld, Rollouts, ns, workload


@pytest.mark.parametrize(("selector", "labels", "ok_"), [
    ("a=1", {"a": "1"}, True), ("a==1,b!=2", {"a": "1", "b": "3"}, True), ("a!=1", {}, True),
    ("a in (1, 2)", {"a": "2"}, True), ("a notin (1,2)", {"a": "2"}, False), ("a", {"a": ""}, True),
    ("!a", {"a": "x"}, False), ("a,b", {"a": "1"}, False),
])
def test_label_selector_strings(selector: str, labels: dict[str, str], ok_: bool) -> None:
    """The label selector grammar the API server accepts."""
    assert label_selector_matches(selector, labels) is ok_


def test_resource_versions_conflicts_and_generation() -> None:
    """Stale replaces get 409, creates of existing names too; spec changes bump generation, labels do not."""
    kube = FakeKube()
    created = kube.create(workload("a", "web"))
    assert created["metadata"]["generation"] == 1
    with pytest.raises(Conflict):
        kube.create(workload("a", "web"))
    kube.patch("apps/v1", "Deployment", "web", {"metadata": {"labels": {"x": "1"}}}, "a")
    assert kube.get("apps/v1", "Deployment", "web", "a")["metadata"]["generation"] == 1
    with pytest.raises(Conflict):
        kube.replace(created)  # its resourceVersion is stale now
    kube.patch("apps/v1", "Deployment", "web", {"spec": {"replicas": 3}}, "a")
    assert kube.get("apps/v1", "Deployment", "web", "a")["metadata"]["generation"] == 2
    with pytest.raises(NotFound):
        kube.patch("apps/v1", "Deployment", "nope", {}, "a")


def test_strategic_patch_merges_containers_by_name() -> None:
    """A strategic patch of one container keeps the others; None removes a key; merge replaces lists."""
    kube = FakeKube()
    w = workload("a", "web")
    w["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "s:1", "env": [{"name": "A", "value": "1"}]})
    kube.create(w)
    kube.patch("apps/v1", "Deployment", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "env": [{"name": "B", "value": "2"}]}]}}}}, "a", patch_type="strategic")
    containers = kube.get("apps/v1", "Deployment", "web", "a")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "side"]
    assert containers[1]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    kube.patch("apps/v1", "Deployment", "web", {"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}, "a")
    assert [c["name"] for c in kube.get("apps/v1", "Deployment", "web", "a")["spec"]["template"]["spec"]["containers"]] == ["x"]


def test_watch_resumes_from_a_resource_version_and_expires() -> None:
    """A watch replays events after its resourceVersion; one older than the kept history is 410 (Conflict)."""
    kube = FakeKube(history=3)
    kube.create(ns("a"))
    rv = kube.list("v1", "Namespace").resource_version
    kube.create(ns("b"))
    events = list(kube.watch("v1", "Namespace", resource_version=rv, timeout=0.05))
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "b")]
    for name in "cdef":
        kube.create(ns(name))
    with pytest.raises(Conflict, match="410"):
        list(kube.watch("v1", "Namespace", resource_version=rv, timeout=0.05))


def test_fake_istioctl_answers_planned_commands_only() -> None:
    """Canned results by argv prefix or regex; a failure raises IstioctlFailed; anything else is refused."""
    ictl = FakeIstioctl().on("version", ok("1.24.1")).on(re.compile(r"^tag set \S+"), fail(1, "Error: boom"))
    assert ictl.run(["version", "--remote=false"]).stdout == "1.24.1"
    with pytest.raises(IstioctlFailed, match="boom"):
        ictl.run(["tag", "set", "x"])
    with pytest.raises(UnplannedCommand):
        ictl.run(["uninstall", "--purge"])
    assert len(ictl.ran("tag set")) == 1


def test_cache_waits_on_watch_events_not_polling() -> None:
    """A waiter wakes on the watch event that makes its condition true; the API sees one list and one
    watch per kind however long it waits."""
    kube = FakeKube()
    kube.create(workload("a", "web"))
    start = kube.requests
    cache = Cache(kube).start()
    try:
        deadline = time.monotonic() + 5
        while kube.requests - start < 8 and time.monotonic() < deadline:  # a list and a watch per kind
            time.sleep(0.01)
        before = kube.requests
        threading.Timer(0.2, lambda: kube.patch("apps/v1", "Deployment", "web", {"status": {"observedGeneration": 1,
                        "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}, "a")).start()
        done = cache.wait_until(lambda: rollout_state(cache.workload("Deployment", "a", "web"), 1).done,
                                timeout=5, check=lambda: None)
        assert done
        time.sleep(0.1)
        assert kube.requests - before == 1  # the patch itself; waiting cost nothing
    finally:
        cache.stop()
        kube.close()


def test_restarts_keep_at_most_k_in_flight_and_resume_without_repatching() -> None:
    """K rollouts at a time, never more; a workload an earlier attempt already restarted is only waited for."""
    world = FakeWorld(apps=1, per_ns=0)
    kube = world.kube
    for i in range(12):
        kube.create(workload("app-0", f"w{i}"))
    slow = Rollouts(kube, delay=0.05)
    kube.reactors = [slow]
    for d in kube.dump("Deployment"):
        if d["metadata"]["namespace"] == "app-0":
            slow(kube, "create", d)
    time.sleep(0.3)
    cache = Cache(kube).start()
    try:
        ctx = world.ctx("waves[0]")
        kube.patch("apps/v1", "Deployment", "w0", {"metadata": {"annotations": {RESTARTED_BY: "run-1/wave-0"}}}, "app-0")
        assert cache.wait_until(lambda: (cache.workload("Deployment", "app-0", "w0")["metadata"]["annotations"] or {})
                                .get(RESTARTED_BY) == "run-1/wave-0", timeout=5, check=lambda: None)
        slow.max_inflight = 0
        targets = [restarts.Target(kind="Deployment", namespace="app-0", name=f"w{i}") for i in range(12)]
        report = restarts.restart(ctx, kube, cache, targets, accept=lambda p: p.ready, mark="run-1/wave-0",
                                  concurrency=3, timeout=30, force=True)
        assert report.ok and len(report.seconds) == 12
        assert "Deployment/app-0/w0" not in report.restarted and len(report.restarted) == 11
        assert slow.max_inflight <= 3
        report = restarts.restart(ctx, kube, cache, targets, accept=lambda p: p.ready, mark="run-1/again",
                                  concurrency=12, timeout=30, force=True)
        assert report.ok and slow.max_inflight > 3
    finally:
        cache.stop()
        kube.close()
