"""Growing waves in the operator's order, against the sandbox over HTTP (default scenario, bookinfo).

The scenario's namespaces, as the plan sees them (workloads meshops restarts, their pods):
bookinfo-frontend 1 Deployment, 2 pods; bookinfo-ops 1 DaemonSet, 3 pods; bookinfo-data 1 Deployment
and 1 StatefulSet, 3 pods; bookinfo-backend 4 Deployments, 4 pods.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.canary_sandbox import ROOT, Sandbox, mesh_state, wait_for

pytestmark = pytest.mark.slow

WORKLOAD_RESOURCES = {"deployments", "statefulsets", "daemonsets"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("waves"), scenario="default", clusters=["order", "grow", "equal"])
    yield sb
    sb.stop()


def _mark(sb: Sandbox, cluster: str, namespace: str, where: str, key: str, value: str | None) -> None:
    """Label or annotate a namespace, and wait for the audit log to show it (it is written once the
    request is answered), so the write is not counted against the command that follows."""
    def patches() -> int:
        return sum(1 for r in sb.audit(cluster) if r["verb"] == "patch" and r["path"] == f"/api/v1/namespaces/{namespace}")

    seen = patches()
    sb.kube(cluster).patch("v1", "Namespace", namespace, {"metadata": {where: {key: value}}})
    wait_for(lambda: patches() > seen, timeout=10, what="the namespace patch in the audit log")


def _planned_waves(stdout: str) -> list[list[str]]:
    """The namespaces of each `waves[i]` in a printed plan, from its `place` lines."""
    waves: list[list[str]] = []
    for line in stdout.splitlines():
        if line.startswith("- waves["):
            waves.append([])
        elif line.strip().startswith("place ") and waves:
            waves[-1].append(line.split("Namespace/", 1)[1].split()[0])
    return waves


def test_order_risk_in_dry_run(sandbox: Sandbox) -> None:
    """--dry-run prints growing waves (1, then 2, then the rest) in the --order asked (risk: no
    StatefulSet and fewest pods first), each namespace with its reason; nothing is written."""
    mark = len(sandbox.audit("order"))
    out = sandbox.meshops("order", "upgrade", "--to", "1.25.2", "--dry-run", "--order", "risk")
    assert out.returncode == 0, out.stderr[-2000:]
    assert _planned_waves(out.stdout) == [["bookinfo-frontend"], ["bookinfo-ops", "bookinfo-backend"],
                                          ["bookinfo-data"]]
    for reason in ("the first namespace in order, alone", "2 x 1 = 2", "2 x 2 = 4: the last 1 namespace",
                   "Namespace/bookinfo-data  #4 in order (risk: 1 StatefulSet, 3 pods)"):
        assert reason in out.stdout, reason
    assert "3 wave(s) of 1, 2, 1 namespace(s)" in out.stderr
    assert sandbox.writes_since("order", mark) == []


def test_wave_label_and_order_annotation_come_first(sandbox: Sandbox) -> None:
    """meshops.dev/wave pins a namespace to a wave, meshops.dev/order ranks it before unmarked ones
    (then --order size); the run moves the waves as planned and journals why."""
    _mark(sandbox, "order", "bookinfo-ops", "labels", "meshops.dev/wave", "0")
    _mark(sandbox, "order", "bookinfo-backend", "annotations", "meshops.dev/order", "1")
    try:
        out = sandbox.meshops("order", "upgrade", "--to", "1.25.2")
    finally:
        _mark(sandbox, "order", "bookinfo-ops", "labels", "meshops.dev/wave", None)
        _mark(sandbox, "order", "bookinfo-backend", "annotations", "meshops.dev/order", None)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "8 workload(s) restarted in 3 wave(s) of 1, 2, 1 namespace(s)" in out.stdout
    outputs = sandbox.outputs("order", out.stdout.strip().splitlines()[-1])
    expected = [["bookinfo-ops"], ["bookinfo-backend", "bookinfo-frontend"], ["bookinfo-data"]]
    assert [outputs[f"waves[{i}]"]["namespaces"] for i in range(3)] == expected and "waves[3]" not in outputs
    planned = outputs["check"]["plan"]["waves"]
    assert planned[0]["why"] == {"bookinfo-ops": "label meshops.dev/wave=0"}
    assert planned[1]["why"]["bookinfo-backend"] == \
        "#1 in order (annotation meshops.dev/order=1, size: 4 workloads, 4 pods)"
    assert planned[1]["reason"] == "2 x 1 = 2"


def test_bad_wave_marks_exit_2_naming_each_and_write_nothing(sandbox: Sandbox) -> None:
    """Bad wave labels and annotations on several namespaces: exit 2, every one named, no write."""
    bad = [("bookinfo-data", "labels", "meshops.dev/wave", "soon"),
           ("bookinfo-ops", "annotations", "meshops.dev/wave", "-1"),
           ("bookinfo-backend", "labels", "meshops.dev/order", "1"),
           ("bookinfo-backend", "annotations", "meshops.dev/order", "2"),
           ("bookinfo-frontend", "labels", "meshops.dev/wave", "0")]
    for ns, where, key, value in bad:
        _mark(sandbox, "order", ns, where, key, value)
    try:
        mark = len(sandbox.audit("order"))
        out = sandbox.meshops("order", "upgrade", "--to", "1.25.2", "--first", "bookinfo-data")
        assert out.returncode == 2, out.stderr[-2000:]
        for message in ("namespace bookinfo-data: label meshops.dev/wave='soon' is not a whole number",
                        "namespace bookinfo-ops: annotation meshops.dev/wave=-1 is negative",
                        "namespace bookinfo-backend: label meshops.dev/order='1' and annotation "
                        "meshops.dev/order='2' disagree",
                        "namespace bookinfo-frontend: label meshops.dev/wave=0 but --first takes wave 0"):
            assert message in out.stderr, message
        bad_growth = sandbox.meshops("order", "upgrade", "--to", "1.25.2", "--growth", "0.5")
        assert bad_growth.returncode == 2 and "--growth" in bad_growth.stderr
        assert sandbox.writes_since("order", mark) == []
    finally:
        for ns, where, key, _ in bad:
            _mark(sandbox, "order", ns, where, key, None)


def test_broken_revision_is_caught_in_the_small_first_wave(sandbox: Sandbox) -> None:
    """Proxies of the new revision never get ready. Growing waves (the default) fail in wave 0, the
    smallest namespace, having restarted one workload; equal waves of 10 restart all eight before the
    gate fails. Both roll back to the mesh as it was."""
    before = {c: mesh_state(sandbox.kube(c)) for c in ("grow", "equal")}
    marks = {c: len(sandbox.audit(c)) for c in ("grow", "equal")}
    for c in ("grow", "equal"):
        sandbox.fault(c, "proxy-not-ready:revision=1-25-2")
    try:
        runs = {c: subprocess.Popen(sandbox.argv(c, "upgrade", "--to", "1.25.2", "--wave-timeout", "2s", *extra),
                                    cwd=ROOT, env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for c, extra in (("grow", ()), ("equal", ("--wave-size", "10")))}
        results = {c: p.communicate(timeout=240) for c, p in runs.items()}
    finally:
        sandbox.clear_faults()
    restarted = {}
    for c, (_, stderr) in results.items():
        assert runs[c].returncode == 1, stderr[-3000:]
        assert "waves[0] failed" in stderr and "rolled back" in stderr
        assert mesh_state(sandbox.kube(c)) == before[c]
        # The undo restarts the same workloads back: the distinct ones patched are those the wave moved.
        restarted[c] = {(r["namespace"], r["name"]) for r in sandbox.audit(c)[marks[c]:]
                        if r["verb"] == "patch" and r.get("resource") in WORKLOAD_RESOURCES
                        and r["user_agent"].startswith("meshops") and r["namespace"] != "istio-system"}
    assert restarted["grow"] == {("bookinfo-frontend", "productpage-v1")}
    assert len(restarted["equal"]) == 8
