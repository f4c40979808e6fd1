"""`meshops upgrade` refusals, `status` and `--dry-run` against the sandbox: exit codes and the audit log.

The sandbox reports Kubernetes 1.28 (Istio 1.25 needs 1.29) and has istioctl 1.24.1, 1.24.2, 1.25.2
and 1.27.0 but no 1.24.3. A refusal must exit 2 and leave no write at all in the cluster's audit log
(no Lease, no journal ConfigMap, nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.canary_sandbox import MESHOPS, ROOT, Sandbox

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("cli"), scenario="default", clusters=["dev", "prod-east"],
                 versions=("1.24.1", "1.24.2", "1.25.2", "1.27.0"), k8s_version="1.28.5")
    yield sb
    sb.stop()


@pytest.mark.parametrize(("args", "message"), [
    (("--to", "1.99.0"), "not a release meshops knows"),
    (("--to", "one.two"), "not an Istio version"),
    (("--to", "1.27.0"), "jumps 3 minors"),
    (("--to", "1.25.2"), "supports Kubernetes 1.29 to 1.32; this cluster runs 1.28"),
    (("--to", "1.24.3"), "no istioctl 1.24.3 found"),
    (("--to", "1.24.2", "--revision", "default"), "reserved"),
    (("--to", "1.24.2", "--istioctl", "/nonexistent/istioctl"), "/nonexistent/istioctl"),
    (("--to", "1.24.2", "--istioctl", "istioctl-1.25.2"), "is 1.25.2"),
    (("--to", "1.24.2", "--concurrency", "0"), "--concurrency"),
    (("--to", "1.24.2", "--wave-size", "0"), "--wave-size"),
    (("--to", "1.24.2", "--soak", "soon"), "--soak"),
    (("--to", "1.25.2", "--strategy", "inplace"), "supports Kubernetes"),
])
def test_bad_input_exits_2_and_writes_nothing(sandbox: Sandbox, args: tuple[str, ...], message: str) -> None:
    """Each bad request exits 2 with its reason, and the cluster's audit log shows no write."""
    mark = len(sandbox.audit("dev"))
    out = sandbox.meshops("dev", "upgrade", *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr
    assert sandbox.writes_since("dev", mark) == []


def test_inplace_refused_on_a_protected_context(sandbox: Sandbox) -> None:
    """In place is refused on a context matching --protect (default prod*), exit 2, no write."""
    mark = len(sandbox.audit("prod-east"))
    out = sandbox.meshops("prod-east", "upgrade", "--strategy", "inplace", "--to", "1.24.2")
    assert out.returncode == 2
    assert "matches --protect prod*" in out.stderr
    assert sandbox.writes_since("prod-east", mark) == []


def test_dry_run_plans_without_writing(sandbox: Sandbox) -> None:
    """--dry-run prints every step's plan (install, tags, waves, finalize) and writes nothing."""
    mark = len(sandbox.audit("dev"))
    out = sandbox.meshops("dev", "upgrade", "--to", "1.24.2", "--dry-run", "--first", "bookinfo-ops")
    assert out.returncode == 0, out.stderr[-2000:]
    for expected in ("istioctl 1.24.2 install --revision 1-24-2", "waves[0]", "tag set prod-canary",
                     "Namespace/bookinfo-ops", "waves[1]", "tag set default", "uninstall --revision default"):
        assert expected in out.stdout, expected
    assert sandbox.writes_since("dev", mark) == []


def test_status(sandbox: Sandbox) -> None:
    """`meshops status -o json` shows revisions, default, namespaces, proxies and gateways; text too."""
    out = sandbox.meshops("dev", "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["revisions"] == {"default": {"version": "1.24.1", "ready": True, "replicas": 1,
                                             "tags": ["default"], "default": True}}
    assert data["namespaces"]["bookinfo-frontend"] == {"injection": "enabled", "rev": None, "selects": "default",
                                                       "proxies": {"default": 2}}
    assert data["proxies_by_version"] == {"1.24.1": 14} and data["dangling_webhooks"] == []
    assert data["gateways"][0]["name"] == "istio-ingressgateway" and data["runs_in_progress"] == []
    text = sandbox.meshops("dev", "status")
    assert "default revision: default" in text.stdout and "bookinfo-ops" in text.stdout


def test_demo_tells_the_story_and_cleans_up(tmp_path: Path) -> None:
    """`meshops demo` starts a sandbox, upgrades it, shows the mesh before and after, and stops it."""
    d = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "MESHOPS_STEP_MODULES"}
    out = subprocess.run([*MESHOPS, "-q", "demo", "--dir", str(d)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    before, after = out.stdout.split("== The mesh after")
    assert "default          1.24.1     ready, default" in before
    assert "1-25-2           1.25.2     ready, default" in after and "1.24.1" not in after
    assert "bookinfo-backend/debug-shell" in before.split("== What meshops will not do for you")[1]
    assert "revision default uninstalled" in out.stdout and "Sandbox stopped" in out.stdout
    pid = (d / "sandbox.pid").read_text().strip() if (d / "sandbox.pid").exists() else ""
    assert not pid or not Path(f"/proc/{pid}").exists()
