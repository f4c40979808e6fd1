"""docs/ci/gitlab/.gitlab-ci.yml executed by gitlab-ci-local (shell executor) against the sandbox.

The pipeline runs as written: the scheduled `upgrade` job pauses at the first wave's gate and
passes its run id on by dotenv; the manual `rollback` job undoes that same run. A second
scheduled pipeline on the restored mesh is "nothing to do". gitlab-ci-local comes from
.ci/get-gitlab-ci-local.sh (npm) and needs rsync.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.canary_sandbox import ROOT, Sandbox

pytestmark = pytest.mark.slow

GCL = Path(os.environ.get("MESHOPS_GITLAB_CI_LOCAL") or Path(pwd.getpwuid(os.getuid()).pw_dir,
                                                              ".cache/meshops/gitlab-ci-local-4.72.0/node_modules/.bin/gitlab-ci-local"))
if not GCL.exists() or shutil.which("rsync") is None:
    pytest.skip("gitlab-ci-local or rsync missing: run .ci/get-gitlab-ci-local.sh", allow_module_level=True)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("gl"), scenario="default", clusters=["dev"], versions=("1.24.1", "1.24.2"))
    yield sb
    sb.stop()


def _project(tmp: Path) -> Path:
    """A git checkout holding the template and the playbooks, as a project using meshops would."""
    tmp.mkdir()
    shutil.copy(ROOT / "docs/ci/gitlab/.gitlab-ci.yml", tmp / ".gitlab-ci.yml")
    shutil.copytree(ROOT / "playbooks", tmp / "playbooks")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "ci"]):
        subprocess.run(["git", *argv], cwd=tmp, check=True, capture_output=True)
    return tmp


def _pipeline(sandbox: Sandbox, project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(sandbox.env)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # meshops, as the image has it
    env.pop("MESHOPS_STATE_DIR", None)
    return subprocess.run([str(GCL), "--force-shell-executor", "--ignore-predefined-vars", "CI_PIPELINE_SOURCE",
                           "--variable", "CI_PIPELINE_SOURCE=schedule",
                           "--variable", f"KUBECONFIG_PRODUCTION={sandbox.kubeconfig}", *extra],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_gitlab_pipeline_pauses_then_its_manual_rollback_undoes_that_run(sandbox: Sandbox, tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    ran = _pipeline(sandbox, project, "--variable", "ISTIO_VERSION=1.24.2", "--manual", "rollback")
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out[-4000:]
    assert "PASS  upgrade" in out and "PASS  rollback" in out, out[-4000:]
    builds = project / ".gitlab-ci-local"
    env = dict(line.split("=", 1) for line in next(builds.rglob("meshops.env")).read_text().splitlines())
    assert env["STATUS"] == "awaiting_approval" and env["GATE"] == "waves[0]"
    results = {json.loads(p.read_text())["status"]: json.loads(p.read_text()) for p in builds.rglob("result.json")}
    assert results["rolled_back"]["run_id"] == env["RUN_ID"]
    assert list(json.loads(sandbox.meshops("dev", "status", "-o", "json").stdout)["revisions"]) == ["default"]

    again = _pipeline(sandbox, _project(tmp_path / "q"), "--variable", "ISTIO_VERSION=1.24.1")
    assert again.returncode == 0 and "nothing_to_do: Istio 1.24.1 already runs here" in again.stdout, again.stdout[-3000:]
