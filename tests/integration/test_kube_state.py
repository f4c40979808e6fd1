"""The journal and the run lock kept in a cluster (the sandbox API server, over HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from meshops.domain.errors import LockHeld
from meshops.drivers.kube import KubeClient
from meshops.drivers.kube_state import ConfigMapStateStore, LeaseLock
from meshops.engine.journal import Journal, LocalStateStore, MirroredStateStore, RunState
from meshops.engine.playbook import load_playbook_text
from meshops.engine.runner import Engine, EngineOptions
from meshops.sandbox.apiserver import Cluster
from tests.support.fakeclock import FakeClock


def write_kubeconfig(path: Path, url: str, name: str = "sandbox") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "sandbox-token-do-not-log"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }))
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster("state-test") as c:
        yield c


@pytest.fixture
def kube(cluster: Cluster, tmp_path: Path) -> KubeClient:
    return KubeClient(kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", cluster.url)))


def test_lease_lock_excludes_a_second_holder_and_expires(kube: KubeClient) -> None:
    """The Lease refuses a second holder while renewed and is taken over after its duration."""
    clock = FakeClock()
    a = LeaseLock(kube, name="t1", duration=30, clock=clock)
    b = LeaseLock(kube, name="t1", duration=30, clock=clock)
    a.acquire("run-a")
    with pytest.raises(LockHeld, match="run-a"):
        b.acquire("run-b")
    clock.sleep(25)
    a.renew()
    clock.sleep(25)
    with pytest.raises(LockHeld):
        b.acquire("run-b")
    clock.sleep(10)
    b.acquire("run-b")
    lease = kube.get("coordination.k8s.io/v1", "Lease", "t1", "meshops-system")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "run-b"
    assert lease["spec"]["leaseTransitions"] == 1
    a.release()  # a lost it: releasing must leave b's lease alone
    assert kube.get("coordination.k8s.io/v1", "Lease", "t1", "meshops-system")["spec"]["holderIdentity"] == "run-b"
    b.release()
    assert kube.get("coordination.k8s.io/v1", "Lease", "t1", "meshops-system")["spec"].get("holderIdentity") is None


def test_a_run_journaled_in_the_cluster_resumes_on_another_machine(kube: KubeClient, tmp_path: Path) -> None:
    """A run mirrored into a ConfigMap is resumed from a second, empty local state dir."""
    text = """
apiVersion: meshops.dev/v1
kind: Playbook
metadata: {name: mirrored}
params:
  token: {type: string, secret: true}
steps:
  - id: gate
    uses: gate.approve
  - id: after
    uses: test.echo
    with: {value: "{{ params.token | length }}"}
"""
    clock = FakeClock()
    first = MirroredStateStore(LocalStateStore(tmp_path / "runner-1"), ConfigMapStateStore(kube))
    engine = Engine(store=first, lock=LeaseLock(kube, name="t2"), options=EngineOptions(clock=clock, sleep=clock.sleep))
    loaded = load_playbook_text(text, path="mirrored.yaml")
    with pytest.raises(Exception, match="needs approval"):
        engine.start(loaded, {"token": "tok-abcdef-123456"}, secret_params={"token"})
    run_id = first.run_ids()[0]

    second = MirroredStateStore(LocalStateStore(tmp_path / "runner-2"), ConfigMapStateStore(kube))
    assert run_id in second.run_ids()
    Journal(second, run_id).write("approved", step="gate", by="ci")
    engine2 = Engine(store=second, lock=LeaseLock(kube, name="t2"), options=EngineOptions(clock=clock, sleep=clock.sleep))
    result = engine2.resume(run_id, secret_values={"token": "tok-abcdef-123456"})
    assert result.status == "succeeded"
    state = RunState.replay(run_id, ConfigMapStateStore(kube).records(run_id))
    assert state.status == "succeeded"
    assert state.steps["after"].outputs["value"] == 17
    cm = kube.get("v1", "ConfigMap", f"meshops-run-{run_id}", "meshops-system")
    assert cm is not None
    assert "tok-abcdef-123456" not in json.dumps(cm)
    assert "sandbox-token-do-not-log" not in json.dumps(cm)
