"""A scheduled `meshops upgrade --to V` is idempotent, and a half-finished run is named, not run over.

Against the sandbox over HTTP, meshops as a subprocess; the cluster's audit log proves "no write".
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.canary_sandbox import Sandbox

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("sched"), scenario="default", clusters=["dev"],
                 versions=("1.24.1", "1.24.2"))
    yield sb
    sb.stop()


def test_upgrade_to_the_running_version_is_nothing_to_do(sandbox: Sandbox) -> None:
    """Every proxy already on 1.24.1, one revision: exit 0, 'nothing to do', no write; -o json says so too."""
    mark = len(sandbox.audit("dev"))
    out = sandbox.meshops("dev", "upgrade", "--to", "1.24.1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nothing to do" in out.stdout
    doc = json.loads(sandbox.meshops("dev", "upgrade", "--to", "1.24.1", "-o", "json").stdout)
    assert doc["status"] == "nothing_to_do" and doc["exit_code"] == 0 and doc["run_id"] is None
    # -n where a namespace is meant, and -o yaml, after the subcommand.
    shown = sandbox.meshops("dev", "status", "-n", "bookinfo-frontend", "-o", "yaml")
    assert shown.returncode == 0 and "bookinfo-frontend:" in shown.stdout and "bookinfo-backend:" not in shown.stdout
    assert sandbox.writes_since("dev", mark) == []


def test_a_half_finished_run_is_named_with_resume_and_rollback(sandbox: Sandbox) -> None:
    """A run paused at a wave's approval; the next scheduled run exits 2 naming it and both ways out,
    writes nothing; `rollback RUN -o json` then prints the rollback's result."""
    paused = sandbox.meshops("dev", "upgrade", "--to", "1.24.2", "--approve-each-wave", "-o", "json")
    assert paused.returncode == 130, paused.stderr[-2000:]
    first = json.loads(paused.stdout)
    run_id = first["run_id"]
    assert first["status"] == "awaiting_approval" and first["exit_code"] == 130
    assert all(line.startswith("{") for line in paused.stderr.splitlines())

    mark = len(sandbox.audit("dev"))
    again = sandbox.meshops("dev", "upgrade", "--to", "1.24.2")
    assert again.returncode == 2, again.stderr[-2000:]
    assert f"meshops resume {run_id}" in again.stderr and f"meshops rollback {run_id}" in again.stderr
    assert sandbox.writes_since("dev", mark) == []

    undone = sandbox.meshops("dev", "rollback", run_id, "-o", "json")
    assert undone.returncode == 0, undone.stderr[-2000:]
    doc = json.loads(undone.stdout)
    assert doc["run_id"] == run_id and doc["status"] == "rolled_back" and doc["exit_code"] == 0
    # Back where it started: at 1.24.1 everywhere, so the schedule is a no-op again.
    assert sandbox.meshops("dev", "upgrade", "--to", "1.24.1").returncode == 0


def test_dry_run_checks_what_the_run_will_need(sandbox: Sandbox) -> None:
    """--dry-run reaches Prometheus (refused: exit 2, URL and cause) and hits each probe (an unresolvable
    host: exit 2); a probe that answers passes. Nothing is written either way."""
    mark = len(sandbox.audit("dev"))
    dead = sandbox.meshops("dev", "upgrade", "--to", "1.24.2", "--dry-run", "--prometheus", "http://127.0.0.1:1",
                           "--max-error-rate", "0.01")
    assert dead.returncode == 2, dead.stderr[-2000:]
    assert "cannot reach Prometheus at http://127.0.0.1:1: connection refused" in dead.stderr
    nohost = sandbox.meshops("dev", "upgrade", "--to", "1.24.2", "--dry-run", "--probe", "http://nohost.invalid/")
    assert nohost.returncode == 2 and "--probe http://nohost.invalid/" in nohost.stderr, nohost.stderr[-2000:]
    ingress = sandbox.env["MESHOPS_SANDBOX_INGRESS_DEV"] + "/productpage"
    ok = sandbox.meshops("dev", "upgrade", "--to", "1.24.2", "--dry-run", "--probe", ingress)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert [json.loads(line)["ok"] for line in ok.stderr.splitlines() if '"dryrun.probe"' in line] == [True]
    assert sandbox.writes_since("dev", mark) == []
