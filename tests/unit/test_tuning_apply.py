"""playbooks/tune-apply.yaml on FakeKube: annotations set in waves, rollouts awaited, rollback restores."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshops.domain.errors import PermanentStepError, RunFailed
from meshops.drivers.kube_fake import FakeKube
from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook, resolve_params
from meshops.engine.runner import Engine
from meshops.steps.tune_apply import PREVIOUS, parse_annotations_file
from meshops.testing import FakeDrivers

ROOT = Path(__file__).resolve().parents[2]
CPU = "sidecar.istio.io/proxyCPU"


def workload(kind: str, ns: str, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 2, "template": {"metadata": {"annotations": dict(annotations or {})}, "spec": {}}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                       "readyReplicas": 2}}


def annotations_for(cpu: str) -> dict[str, str]:
    return {CPU: cpu, "sidecar.istio.io/proxyCPULimit": "500m", "sidecar.istio.io/proxyMemory": "64Mi",
            "sidecar.istio.io/proxyMemoryLimit": "128Mi"}


class Rollouts:
    """Plays the Deployment controller: a changed template finishes rolling out `delay` seconds later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.rolling: set[str] = set()
        self.max_rolling = 0
        self.lock = threading.Lock()

    def __call__(self, kube: FakeKube, verb: str, obj: dict[str, Any]) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        if obj["kind"] not in ("Deployment", "StatefulSet") or status.get("observedGeneration") == meta.get("generation"):
            return
        key = f"{meta['namespace']}/{meta['name']}"
        with self.lock:
            self.rolling.add(key)
            self.max_rolling = max(self.max_rolling, len(self.rolling))

        def finish() -> None:
            time.sleep(self.delay)
            with self.lock:
                self.rolling.discard(key)
            kube.patch("apps/v1", obj["kind"], meta["name"], {"status": {"observedGeneration": meta["generation"]}},
                       meta["namespace"])

        threading.Thread(target=finish, daemon=True).start()


@pytest.fixture
def kube() -> Any:
    fake = FakeKube()
    fake.apply(workload("Deployment", "shop", "cart"), workload("Deployment", "shop", "web", {CPU: "100m"}),
               workload("StatefulSet", "pay", "ledger"), workload("Deployment", "pay", "batch"),
               workload("Deployment", "pay", "api"))
    yield fake
    fake.close()


def write_file(tmp_path: Path, names: list[tuple[str, str]]) -> str:
    docs = [{"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "spec": {}},
            {"apiVersion": "meshops.dev/v1", "kind": "ProxyResourceAnnotations",
             "workloads": [{"namespace": ns, "name": n, "annotations": annotations_for(f"{10 + i}m")}
                           for i, (ns, n) in enumerate(names)]}]
    path = tmp_path / "tuning.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def engine(tmp_path: Path, kube: FakeKube) -> Engine:
    return Engine(store=LocalStateStore(tmp_path / "state"), drivers=FakeDrivers(kube=kube))


def run(tmp_path: Path, kube: FakeKube, file: str, **params: Any) -> Any:
    loaded = load_playbook(str(ROOT / "playbooks" / "tune-apply.yaml"))
    return engine(tmp_path, kube).start(loaded, resolve_params(loaded.playbook, {"annotations_file": file, **params}))


def template_annotations(kube: FakeKube, kind: str, ns: str, name: str) -> dict[str, str]:
    obj = kube.get("apps/v1", kind, name, ns)
    assert obj is not None
    return dict(obj["spec"]["template"]["metadata"].get("annotations") or {})


def test_annotates_in_waves_and_waits_for_each_rollout(tmp_path: Path, kube: FakeKube) -> None:
    """Five workloads, waves of 2: never more than 2 rolling at once; every template gets the 4 annotations."""
    rollouts = Rollouts(delay=0.2)
    kube.reactors.append(rollouts)
    names = [("shop", "cart"), ("shop", "web"), ("pay", "ledger"), ("pay", "batch"), ("pay", "api")]
    result = run(tmp_path, kube, write_file(tmp_path, names), wave_size=2)
    assert result.status == "succeeded"
    assert rollouts.max_rolling == 2
    assert rollouts.rolling == set()
    ledger = template_annotations(kube, "StatefulSet", "pay", "ledger")
    assert {k: v for k, v in ledger.items() if k != PREVIOUS} == annotations_for("12m")
    marker = json.loads(template_annotations(kube, "Deployment", "shop", "web")[PREVIOUS])
    assert marker["values"][CPU] == "100m" and marker["run"] == result.run_id


def test_missing_workloads_are_skipped_and_reruns_change_nothing(tmp_path: Path, kube: FakeKube) -> None:
    """A workload that no longer exists is reported missing; a second run patches nothing."""
    file = write_file(tmp_path, [("shop", "cart"), ("shop", "gone")])
    assert run(tmp_path, kube, file, wait=False).status == "succeeded"
    writes = len(kube.writes)
    assert run(tmp_path, kube, file, wait=False).status == "succeeded"
    assert len(kube.writes) == writes


def test_rollback_restores_the_previous_annotations(tmp_path: Path, kube: FakeKube) -> None:
    """`meshops rollback`: web gets its 100m back, cart loses the annotations it never had."""
    file = write_file(tmp_path, [("shop", "cart"), ("shop", "web")])
    result = run(tmp_path, kube, file, wait=False)
    assert template_annotations(kube, "Deployment", "shop", "web")[CPU] == "11m"
    back = engine(tmp_path, kube).rollback(result.run_id)
    assert back.status == "rolled_back"
    assert template_annotations(kube, "Deployment", "shop", "web") == {CPU: "100m"}
    assert template_annotations(kube, "Deployment", "shop", "cart") == {}


def test_a_failed_wave_rolls_back_the_earlier_ones(tmp_path: Path, kube: FakeKube) -> None:
    """The third workload cannot be patched: the run fails and the two already annotated are restored."""
    from meshops.domain.errors import DriverError

    kube.faults.append(["patch", "StatefulSet", DriverError("admission webhook denied the request"), 10])
    file = write_file(tmp_path, [("shop", "cart"), ("shop", "web"), ("pay", "ledger")])
    with pytest.raises(RunFailed, match="admission webhook denied"):
        run(tmp_path, kube, file, wave_size=1, wait=False)
    assert template_annotations(kube, "Deployment", "shop", "web") == {CPU: "100m"}
    assert template_annotations(kube, "Deployment", "shop", "cart") == {}


@pytest.mark.parametrize(("body", "message"), [
    ({"kind": "ProxyResourceAnnotations", "apiVersion": "meshops.dev/v1",
      "workloads": [{"namespace": "a", "name": "b", "annotations": {CPU: "1m"}}]}, "expected exactly"),
    ({"kind": "ProxyResourceAnnotations", "apiVersion": "meshops.dev/v1",
      "workloads": [{"namespace": "a", "name": "b", "annotations": annotations_for("fast")}]}, "not a CPU quantity"),
    ({"kind": "ProxyResourceAnnotations", "apiVersion": "v0", "workloads": []}, "apiVersion: expected meshops.dev/v1"),
    ({"kind": "IstioOperator"}, "expected one ProxyResourceAnnotations document, found 0"),
])
def test_bad_annotation_files_are_refused(body: dict[str, Any], message: str) -> None:
    """Only the four proxy annotations, with valid quantities, from a ProxyResourceAnnotations document."""
    with pytest.raises(PermanentStepError, match=message):
        parse_annotations_file(yaml.safe_dump(body), "f.yaml")
