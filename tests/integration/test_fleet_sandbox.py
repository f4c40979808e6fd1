"""`meshops fleet` against a three-cluster sandbox: waves, an approval gate, a fault, SIGKILL
mid-wave, resume and status, in one sequence (each upgrade costs seconds). Clusters are
checked with kubectl per context, not through meshops.

The issue's six-cluster version (three waves, the fault on c4, SIGKILL of `fleet run` itself)
runs in `bench/fleet.py --done-means`: six clusters take too long for the test suite here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshops.fleet.executor import store_for
from meshops.fleet.state import FleetState
from tests.support.canary_sandbox import MESHOPS, ROOT, Sandbox

CLUSTERS = ["c1", "c2", "c3"]
KUBECTL = Path(os.environ.get("MESHOPS_KUBECTL_120", str(Path.home() / ".cache/meshops/kubectl-1.20/usr/bin/kubectl")))
JOB = {"command": "upgrade", "args": ["--to", "1.25.2", "--wave-size", "50", "--concurrency", "50", "--wave-timeout", "60s"]}
# c2 gets the fault: its own override (appended, so it wins) makes it fail in 10 s rather than 60.
FAULTED = {"c2": ["--wave-timeout", "10s"]}


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    # The `fleet` scenario gives each cluster named by --clusters the default mesh.
    sandbox = Sandbox(tmp_path_factory.mktemp("fleet"), scenario="fleet", clusters=CLUSTERS, versions=("1.24.1", "1.25.2"))
    try:
        yield sandbox
    finally:
        sandbox.stop()


def fleet_file(sb: Sandbox, name: str, waves: list[dict[str, Any]]) -> Path:
    path = sb.dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "meshops.dev/v1", "kind": "Fleet", "metadata": {"name": name},
        "clusters": [{"name": c, "labels": {"tier": "canary" if c == "c1" else "prod"}, "args": FAULTED.get(c, [])}
                     for c in CLUSTERS],
        "job": JOB, "waves": waves}))
    return path


def meshops(sb: Sandbox, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MESHOPS, "--state-dir", str(sb.dir / "state"), *args], cwd=ROOT, env=sb.env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def kubectl(sb: Sandbox, cluster: str, *args: str) -> str:
    assert KUBECTL.is_file(), f"kubectl 1.20 not at {KUBECTL}: run .ci/get-kubectl.sh"
    out = subprocess.run([str(KUBECTL), "--context", cluster, *args], env={**sb.env, "HOME": str(sb.dir)},
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def proxy_versions(sb: Sandbox, cluster: str) -> set[str]:
    """The proxyv2 tags of the pods of a Deployment-run, injected namespace (naked pods stay put by design)."""
    images = kubectl(sb, cluster, "-n", "bookinfo-frontend", "get", "pods", "-o",
                     "jsonpath={range .items[*]}{.spec.containers[*].image}{' '}{end}").split()
    return {i.rsplit(":", 1)[1] for i in images if "/proxyv2:" in i}


def istiods(sb: Sandbox, cluster: str) -> set[str]:
    return set(kubectl(sb, cluster, "-n", "istio-system", "get", "deploy", "-o",
                       "jsonpath={.items[*].metadata.name}").split()) - {"istio-ingressgateway"}


def upgraded(sb: Sandbox, cluster: str) -> bool:
    return proxy_versions(sb, cluster) == {"1.25.2"} and "istiod-1-25-2" in istiods(sb, cluster)


def untouched(sb: Sandbox, cluster: str) -> bool:
    return proxy_versions(sb, cluster) == {"1.24.1"} and istiods(sb, cluster) == {"istiod"}


def fid_of(out: subprocess.CompletedProcess[str]) -> str:
    return out.stdout.splitlines()[0].strip()


def kill_mid_wave(sb: Sandbox, fid: str, cluster: str) -> None:
    """`fleet resume FID` killed with SIGKILL (with its children) once CLUSTER's own run is in its waves."""
    proc = subprocess.Popen([*MESHOPS, "--state-dir", str(sb.dir / "state"), "fleet", "resume", fid], cwd=ROOT,
                            env=sb.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = store_for(sb.dir / "state")
    before = FleetState.replay(fid, store.records(fid)).cluster(cluster).attempts
    runs = store.root / "runs" / fid / "clusters" / cluster / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = FleetState.replay(fid, store.records(fid))
        journals = [p.read_text() for p in sorted(runs.glob("*/journal.jsonl"))] if runs.exists() else []
        if (state.cluster(cluster).status == "running" and state.cluster(cluster).attempts > before
                and journals and '"step_started"' in journals[-1] and '"waves' in journals[-1]
                and '"run_finished"' not in journals[-1]):
            break
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{cluster}'s run never reached its waves")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_gate_fault_kill_resume_and_status(sb: Sandbox) -> None:
    path = fleet_file(sb, "gated", [{"name": "canary", "selector": {"tier": "canary"}},
                                    {"name": "prod", "selector": {"tier": "prod"}, "gate": "approve"}])
    plan = meshops(sb, "fleet", "plan", str(path), "-o", "json")
    assert plan.returncode == 0, plan.stderr[-2000:]
    planned = {c["cluster"]: (w["name"], c["default_revision"], c["dry_run"]["exit_code"])
               for w in json.loads(plan.stdout)["waves"] for c in w["clusters"]}
    assert planned == {"c1": ("canary", "default", 0), "c2": ("prod", "default", 0), "c3": ("prod", "default", 0)}
    sb.fault("c2", "proxy-not-ready:revision=1-25-2")
    run = meshops(sb, "fleet", "run", str(path))
    assert run.returncode == 130, run.stderr[-2000:]  # paused at the gate before prod
    fid = fid_of(run)
    assert upgraded(sb, "c1") and untouched(sb, "c2") and untouched(sb, "c3")
    assert meshops(sb, "approve", fid, "wave/prod").returncode == 0
    failed = meshops(sb, "fleet", "resume", fid)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert upgraded(sb, "c1") and untouched(sb, "c2"), "c2 rolled back by its own run"
    assert untouched(sb, "c3"), "the fleet stopped before c3"
    sb.clear_faults()
    # SIGKILL mid-wave (the fleet and the cluster runs it started), then resume: same end state.
    kill_mid_wave(sb, fid, "c2")
    done = meshops(sb, "fleet", "resume", fid)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(upgraded(sb, c) for c in CLUSTERS)
    final = FleetState.replay(fid, store_for(sb.dir / "state").records(fid))
    c2_runs = [r for r in store_for(sb.dir / "state").records(fid) if r["type"] == "cluster_started" and r["cluster"] == "c2"]
    assert [r["action"] for r in c2_runs] == ["run", "run", "resume"]  # the killed run resumed, not started again
    assert final.cluster("c2").run_id == c2_runs[-1]["run_id"]
    status = meshops(sb, "fleet", "status", str(path), "-o", "json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["clusters"]
    assert {r["cluster"]: (r["default_revision"], r["last_run"]["status"]) for r in rows} == {
        c: ("1-25-2", "succeeded") for c in CLUSTERS}
    # `fleet rollback` with real clusters (newest first, kubectl-checked) runs in bench/fleet.py --done-means;
    # its order and idempotence are tested against a fake child in tests/fleet/.


def gitlab_ci_local() -> str | None:
    """gitlab-ci-local (npm) if installed here: $MESHOPS_GITLAB_CI_LOCAL, the CI cache, or PATH."""
    import pwd
    import shutil

    for candidate in (os.environ.get("MESHOPS_GITLAB_CI_LOCAL", ""),
                      str(Path.home() / ".cache/meshops/gitlab-ci-local/node_modules/.bin/gitlab-ci-local"),
                      # where .ci/get-gitlab-ci-local.sh installs it (the account's home: tests may move $HOME)
                      str(Path(pwd.getpwuid(os.getuid()).pw_dir,
                               ".cache/meshops/gitlab-ci-local-4.72.0/node_modules/.bin/gitlab-ci-local")),
                      shutil.which("gitlab-ci-local") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.skipif(gitlab_ci_local() is None, reason="gitlab-ci-local (npm) not installed here")
def test_rendered_gitlab_pipeline_runs_on_gitlab_ci_local(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The rendered pipeline on gitlab-ci-local's shell executor: held at its manual gate, then run."""
    sandbox = Sandbox(tmp_path_factory.mktemp("fleet-gl"), scenario="fleet", clusters=["g1", "g2"],
                      versions=("1.24.1", "1.25.2"))
    try:
        repo = sandbox.dir / "repo"
        repo.mkdir()
        (repo / "fleet.yaml").write_text(yaml.safe_dump({
            "apiVersion": "meshops.dev/v1", "kind": "Fleet", "metadata": {"name": "gl"}, "image": "",
            "clusters": [{"name": "g1", "labels": {"tier": "canary"}}, {"name": "g2", "labels": {"tier": "prod"}}],
            "job": JOB, "waves": [{"name": "canary", "selector": {"tier": "canary"}},
                                  {"name": "prod", "selector": {"tier": "prod"}, "gate": "approve"}]}))
        rendered = subprocess.run([*MESHOPS, "fleet", "render", "fleet.yaml", "--engine", "gitlab", "--out", ".gitlab-ci.yml"],
                                  cwd=repo, env=sandbox.env, capture_output=True, text=True, timeout=60, check=False)
        assert rendered.returncode == 0, rendered.stderr
        git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
        for argv in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", "fleet"]):
            subprocess.run(argv, cwd=repo, check=True, capture_output=True)
        env = {**sandbox.env, "PATH": f"{Path(sys.executable).parent}:{sandbox.env['PATH']}"}
        argv = [str(gitlab_ci_local()), "--shell-executor-no-image",
                *[a for c in ("G1", "G2") for a in ("--variable", f"KUBECONFIG_{c}={sandbox.kubeconfig}")]]
        held = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert held.returncode != 0 and "approve prod is when:manual" in held.stdout + held.stderr
        assert untouched(sandbox, "g1") and untouched(sandbox, "g2")  # nothing ran past a held gate
        run = subprocess.run([*argv, "--manual", "approve prod"], cwd=repo, env=env, capture_output=True, text=True,
                             timeout=300, check=False)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        assert upgraded(sandbox, "g1") and upgraded(sandbox, "g2")
        assert (repo / "state" / "g2" / "runs").is_dir()  # each job's journal, kept as its artifact
    finally:
        sandbox.stop()
