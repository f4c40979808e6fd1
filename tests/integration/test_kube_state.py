"""The journal and the run lock kept in a cluster (the sandbox API server, over HTTP)."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def conflict_once(cluster: Cluster, resource: str, verb: str) -> Iterator[list[int]]:
    """The next ``verb`` on ``resource`` is answered 409 (as a proxy or an injected fault would);
    yields a list that holds one item once it was."""
    seen: list[int] = []

    def inject(info):  # type: ignore[no-untyped-def]
        if info.resource == resource and info.verb == verb and not seen:
            seen.append(1)
            return 409, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                         "reason": "Conflict", "message": "injected"}, {}
        return None

    cluster.request_filters.append(inject)
    try:
        yield seen
    finally:
        cluster.request_filters.remove(inject)


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


# ---- issue 15: fencing, paused Leases, a mirror that cannot outgrow a ConfigMap ---------------


def test_the_sandbox_refuses_a_configmap_over_1_mib_as_the_api_server_does(kube: KubeClient) -> None:
    """422 Invalid, TooLong on the root path (ValidateConfigMap, core.MaxSecretSize): a negative
    control for the old single-ConfigMap mirror, which would hit this after ~130 waves."""
    from meshops.domain.errors import DriverError

    big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "too-big", "namespace": "default"},
           "data": {"journal.jsonl": "x" * (1024 * 1024 + 1)}}
    with pytest.raises(DriverError, match=r"Too long: must have at most 1048576 bytes"):
        kube.create(big)
    big["data"] = {"journal.jsonl": "x" * (1024 * 1024)}
    kube.create(big)  # exactly 1 MiB is allowed
    kube.delete("v1", "ConfigMap", "too-big", "default")


def test_the_mirror_grows_past_1_mib_in_chunks(kube: KubeClient) -> None:
    """~1.3 MiB of 32 KB records: every chunk stays under the limit; records come back in order."""
    store = ConfigMapStateStore(kube)
    store.create_run("chunky", playbook_text="x", playbook_path="p")
    blob = "w" * 32000
    for i in range(42):
        store.append("chunky", [{"type": "step_succeeded", "ts": float(i), "step": f"wave[{i}]", "outputs": {"b": blob}}])
    records = store.records("chunky")
    assert [r["step"] for r in records] == [f"wave[{i}]" for i in range(42)]
    chunks = [kube.get("v1", "ConfigMap", f"meshops-run-chunky-j{n}", "meshops-system") for n in range(3)]
    assert all(c is not None for c in chunks)
    assert all(len(c["data"]["journal.jsonl"].encode()) <= 512 * 1024 for c in chunks if c)
    assert store.run_ids().count("chunky") == 1


def test_a_mirror_write_failure_is_a_step_failure_rolled_back_and_resynced(
        cluster: Cluster, kube: KubeClient, tmp_path: Path) -> None:
    """A 503 on the journal ConfigMap mid-run: the step fails, the run rolls back (exit 1, not
    `running`), and the next rollback/resume brings the mirror level with the local journal."""
    import threading
    import time

    from meshops.domain.errors import RunFailed

    failing = threading.Event()

    def configmap_writes_fail(info):  # type: ignore[no-untyped-def]
        if failing.is_set() and info.resource == "configmaps" and info.verb in ("create", "update", "patch"):
            return 503, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                         "reason": "ServiceUnavailable", "message": "etcd is slow"}, {}
        return None

    cluster.request_filters.append(configmap_writes_fail)
    try:
        mirror_kube = KubeClient(kubeconfig=str(tmp_path / "kubeconfig"), max_retries=0)
        local = LocalStateStore(tmp_path / "runner")
        store = MirroredStateStore(local, ConfigMapStateStore(mirror_kube))
        engine = Engine(store=store, lock=LeaseLock(kube, name="t-mirror"), options=EngineOptions())
        text = f"""
apiVersion: meshops.dev/v1
kind: Playbook
metadata: {{name: mirror-fail}}
steps:
  - {{id: a, uses: test.write_file, with: {{path: "{tmp_path}/a"}}}}
  - {{id: b, uses: test.write_file, with: {{path: "{tmp_path}/b", pause_before: 0.3}}}}
"""

        def fail_after_a() -> None:
            while not (tmp_path / "a").exists():
                time.sleep(0.01)
            failing.set()

        t = threading.Thread(target=fail_after_a)
        t.start()
        with pytest.raises(RunFailed, match="rolled back"):
            engine.start(load_playbook_text(text, path="mf.yaml"), {})
        t.join()
        run_id = local.run_ids()[-1]
        assert RunState.replay(run_id, local.records(run_id)).status == "rolled_back"
        assert not (tmp_path / "a").exists()
        assert len(ConfigMapStateStore(kube).records(run_id)) < len(local.records(run_id))
        failing.clear()
        again = Engine(store=store, lock=LeaseLock(kube, name="t-mirror"), options=EngineOptions()).rollback(run_id)
        assert again.status == "rolled_back"
        assert ConfigMapStateStore(kube).records(run_id) == local.records(run_id)
    finally:
        cluster.request_filters.remove(configmap_writes_fail)


def test_a_lease_taken_by_another_holder_is_noticed_and_a_paused_lease_is_kept(kube: KubeClient) -> None:
    from meshops.domain.locks import LockLost

    a = LeaseLock(kube, name="t-fence", duration=30)
    a.acquire("run-a@h/1")
    lease = kube.get("coordination.k8s.io/v1", "Lease", "t-fence", "meshops-system")
    lease["spec"]["holderIdentity"] = "run-x@elsewhere/9"
    kube.replace(lease)
    with pytest.raises(LockLost, match="run-x"):
        a.renew()  # before: returned quietly
    b = LeaseLock(kube, name="t-fence2", duration=30)
    b.acquire("run-b@h/1")
    b.pause("run-b")
    with pytest.raises(LockHeld, match="run run-b, paused"):
        LeaseLock(kube, name="t-fence2", duration=30).acquire("run-c@h/2")
    LeaseLock(kube, name="t-fence2", duration=30).acquire("run-b@h/3")  # its own resume takes it
    assert LeaseLock(kube, name="t-fence2").abandon("run-b")
    LeaseLock(kube, name="t-fence2", duration=30).acquire("run-c@h/2")


def test_retry_after_is_capped(cluster: Cluster, tmp_path: Path) -> None:
    """A 429 asking for a day's wait is retried after the cap, not after a day (before: it hung)."""
    import threading
    import time

    seen = []

    def throttle(info):  # type: ignore[no-untyped-def]
        if info.resource == "configmaps" and info.verb == "get" and len(seen) < 2:
            seen.append(1)
            return 429, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 429,
                         "reason": "TooManyRequests", "message": "slow down"}, {"Retry-After": "86400"}
        return None

    cluster.request_filters.append(throttle)
    try:
        kube = KubeClient(kubeconfig=str(write_kubeconfig(tmp_path / "kc", cluster.url)), max_retry_after=0.2)
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(kube.get("v1", "ConfigMap", "nope", "default")), daemon=True)
        started = time.monotonic()
        t.start()
        t.join(timeout=10)
        assert not t.is_alive(), "the client honoured a day-long Retry-After"
        assert result == [None] and len(seen) == 2 and time.monotonic() - started < 5
    finally:
        cluster.request_filters.remove(throttle)


def test_a_conflict_on_creating_the_namespace_is_not_taken_as_its_existence(tmp_path: Path) -> None:
    """Found by bench/chaos.py: an injected 409 on the namespace create was read as "a concurrent run
    made it", and the Lease create then failed with 404 (the run never started)."""
    with Cluster("ns-conflict") as c, conflict_once(c, "namespaces", "create") as conflicts:
        kube = KubeClient(kubeconfig=str(write_kubeconfig(tmp_path / "kc", c.url)))
        LeaseLock(kube, name="t-ns").acquire("run-a@h/1")
        assert conflicts and kube.get("coordination.k8s.io/v1", "Lease", "t-ns", "meshops-system") is not None


def test_a_conflict_while_renewing_is_not_a_lost_lock(cluster: Cluster, kube: KubeClient) -> None:
    """Found by bench/chaos.py: a 409 on the renewal was taken for another holder, and a rollback
    then stopped half-way (exit 3). Only a read showing another holder loses the lock."""
    a = LeaseLock(kube, name="t-renew409", duration=30)
    a.acquire("run-a@h/1")
    with conflict_once(cluster, "leases", "update") as seen:
        a.renew()
    assert seen
    assert kube.get("coordination.k8s.io/v1", "Lease", "t-renew409", "meshops-system")["spec"]["holderIdentity"] == "run-a@h/1"


def test_a_conflict_on_creating_the_journal_index_is_retried(cluster: Cluster, kube: KubeClient) -> None:
    """Found by bench/chaos.py: a 409 on the index ConfigMap's create ended the run before it began."""
    with conflict_once(cluster, "configmaps", "create") as seen:
        ConfigMapStateStore(kube).create_run("conflicted", playbook_text="x", playbook_path="p")
    assert seen and ConfigMapStateStore(kube).exists("conflicted")


@pytest.mark.parametrize("how", ["release", "pause", "abandon"])
def test_a_conflict_while_letting_go_is_retried(cluster: Cluster, kube: KubeClient, how: str) -> None:
    """Found by bench/chaos.py (seed 101, run 46): a 409 on the release was taken for "someone
    took it after expiry" and a run that had ended with exit 1 left its Lease held."""
    name = f"t-{how}409"
    a = LeaseLock(kube, name=name, duration=30)
    a.acquire("run-a@h/1")
    with conflict_once(cluster, "leases", "update") as seen:
        if how == "release":
            a.release()
        elif how == "pause":
            a.pause("run-a")
        else:
            assert a.abandon("run-a")
    lease = kube.get("coordination.k8s.io/v1", "Lease", name, "meshops-system")
    assert seen and lease is not None
    annotations = lease["metadata"].get("annotations") or {}
    if how == "pause":
        assert lease["spec"]["holderIdentity"] == "run-a@h/1" and annotations.get("meshops.dev/paused-run") == "run-a"
    else:
        assert not lease["spec"].get("holderIdentity")
