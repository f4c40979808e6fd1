"""SIGKILL at several points of a canary upgrade, then `meshops resume`: the same end state as a run
that was never interrupted. And two upgrades at once: the second exits 4.

Rollouts take ~0.4 s here and the waves restart one workload at a time, so a kill lands inside
a step. A killed run's Lease stays held until it expires (30 s): resume is retried until then.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from meshops.steps.istio_discover import lock_holder
from tests.support.canary_sandbox import Sandbox, kill, mesh_state, wait_for

pytestmark = pytest.mark.slow

UPGRADE = ("upgrade", "--to", "1.25.2", "--concurrency", "1", "--wave-size", "2")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("resume"), scenario="default", clusters=["ref", "k1", "k2", "k3", "lock"],
                 versions=("1.24.1", "1.25.2"), rollout_seconds=0.4)
    yield sb
    sb.stop()


def _journal(sb: Sandbox, cluster: str) -> list[dict]:
    runs = sb.dir / f"state-{cluster}" / "runs"
    if not runs.exists() or not any(runs.iterdir()):
        return []
    path = next(runs.iterdir()) / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


MARKS: dict[str, int] = {}  # audit log length per cluster when the runs started


def _audit_has(sb: Sandbox, cluster: str, test: Callable[[dict], bool], count: int = 1) -> bool:
    return sum(1 for r in sb.audit(cluster)[MARKS.get(cluster, 0):] if test(r)) >= count


KILL_POINTS: dict[str, Callable[[Sandbox, str], bool]] = {
    # istioctl is creating the new istiod (by server-side apply: a PATCH that creates, as real istioctl)
    "k1": lambda sb, c: _audit_has(sb, c, lambda r: r["verb"] in ("create", "patch") and r.get("resource") == "deployments"
                                   and r.get("user_agent", "").startswith("istioctl")),
    # the first wave has restarted some of its workloads, not all
    "k2": lambda sb, c: _audit_has(sb, c, lambda r: r["verb"] == "patch" and r.get("resource") in ("deployments",
                                                                                                   "statefulsets")
                                   and r.get("user_agent", "").startswith("meshops"), count=2),
    # finalize has started
    "k3": lambda sb, c: any(r.get("type") == "step_started" and r.get("step") == "finalize" for r in _journal(sb, c)),
}


def test_sigkill_then_resume_reaches_the_same_end_state(sandbox: Sandbox) -> None:
    """Killed during install, mid-wave and in finalize, each run resumes to the uninterrupted end state."""
    for cluster in ("ref", *KILL_POINTS):
        sandbox.kube(cluster).delete("v1", "Pod", "debug-shell", "bookinfo-backend")
    MARKS.update({c: len(sandbox.audit(c)) for c in KILL_POINTS})
    reference = sandbox.popen("ref", *UPGRADE)
    procs = {c: sandbox.popen(c, *UPGRADE) for c in KILL_POINTS}
    killed: dict[str, bool] = {}

    def killer(cluster: str) -> None:
        proc = procs[cluster]
        wait_for(lambda: KILL_POINTS[cluster](sandbox, cluster) or proc.poll() is not None, timeout=90,
                 what=f"kill point of {cluster}")
        killed[cluster] = proc.poll() is None
        kill(proc)

    threads = [threading.Thread(target=killer, args=(c,)) for c in KILL_POINTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reference.wait(timeout=180) == 0, reference.stderr.read()[-3000:] if reference.stderr else ""
    assert killed == {c: True for c in KILL_POINTS}, "a run finished before its kill point"
    expected = mesh_state(sandbox.kube("ref"))
    assert expected["revisions"] == {"1-25-2": "1.25.2"}
    for cluster in KILL_POINTS:
        run = sandbox.run_id(cluster)
        deadline = time.monotonic() + 90
        while True:  # the dead run's Lease must expire first (exit 4 until then)
            out = sandbox.meshops(cluster, "resume", run)
            if out.returncode != 4 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert out.returncode == 0, f"{cluster}: {out.stderr[-3000:]}"
        assert mesh_state(sandbox.kube(cluster)) == expected, cluster


def test_second_concurrent_upgrade_exits_4(sandbox: Sandbox) -> None:
    """While one upgrade holds the cluster's lock, a second one exits 4 naming the holder."""
    first = sandbox.popen("lock", *UPGRADE)
    kube = sandbox.kube("lock")
    wait_for(lambda: lock_holder(kube) is not None or first.poll() is not None, timeout=60, what="the first run's lock")
    second = sandbox.meshops("lock", *UPGRADE)
    assert second.returncode == 4, second.stderr[-2000:]
    assert "another run holds the lock" in second.stderr
    assert first.wait(timeout=180) == 0, first.stderr.read()[-3000:] if first.stderr else ""
