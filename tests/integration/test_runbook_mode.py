"""meshops as an unattended runbook: no prompt off a terminal, JSON logs, a stable `runs show` schema,
and a paused run finished by another runner through the journal kept in the cluster.

Each run is a real `python -m meshops` process, so stdin and stderr are what a CI runner gives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from meshops.sandbox.apiserver import Cluster
from tests.support.pty_run import meshops_on_pty

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "ci" / "runs-show.schema.json").read_text())
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MESHOPS_STEP_MODULES": "tests.support.teststeps"}
ENV.pop("MESHOPS_LOG_FORMAT", None)

GATED = """apiVersion: meshops.dev/v1
kind: Playbook
metadata: {name: gated}
steps:
  - id: before
    uses: test.echo
  - id: ship-it
    uses: gate.approve
    with: {message: ship it}
  - id: after
    uses: test.echo
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def meshops(state: Path, *args: str, stdin: Any = subprocess.DEVNULL, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshops", "--state-dir", str(state), *args], env=env or ENV,
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


def run_on_pty(argv: list[str], *, stdin_tty: bool, answer: str | None = None, timeout: float = 30) -> tuple[int, str]:
    """Run with stderr (and stdin if asked) on a pseudo-terminal; answer a prompt once if one shows."""
    return meshops_on_pty(argv, env=ENV, stdin_tty=stdin_tty, answer=answer, timeout=timeout)


def test_off_a_terminal_a_gate_pauses_at_once_and_names_the_command_that_answers_it(tmp_path: Path) -> None:
    """stdin an open pipe nobody writes to (a CI runner): exit 130 within seconds, naming approve and --yes."""
    state = tmp_path / "s"
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "meshops", "--state-dir", str(state), "run",
                             write(tmp_path, "pb.yaml", GATED)], env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)  # stdin stays open: a prompt would wait forever
    finally:
        proc.kill()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130 and elapsed < 15
    run_id = json.loads(err.splitlines()[0])["run_id"]
    assert f"Approve with `meshops approve {run_id} ship-it`, then `meshops resume {run_id}`; or pass --yes" in err
    assert "[y/N]" not in err
    assert out == f"{run_id}\n"  # stdout carries the run id alone, printed as the run starts
    shown = json.loads(meshops(state, "runs", "show", run_id, "-o", "json").stdout)
    assert (shown["status"], shown["failed_step"], shown["waiting_gate"]) == ("awaiting_approval", "ship-it", "ship-it")


def test_stdin_not_a_terminal_is_enough_to_never_prompt(tmp_path: Path) -> None:
    """With stderr on a terminal but stdin piped (`echo | meshops run`), the gate still pauses, no prompt."""
    code, seen = run_on_pty(["--state-dir", str(tmp_path / "s"), "run", write(tmp_path, "pb.yaml", GATED)],
                            stdin_tty=False, answer="y")
    assert code == 130
    assert "[y/N]" not in seen and "meshops approve" in seen
    assert not seen.lstrip().startswith("{")  # stderr is a terminal: console logs, not JSON


def test_at_a_terminal_the_gate_asks_and_yes_carries_on(tmp_path: Path) -> None:
    """Both on a terminal, the gate asks `[y/N]`; `y` finishes the run (the tests above are not vacuous)."""
    state = tmp_path / "s"
    code, seen = run_on_pty(["--state-dir", str(state), "run", write(tmp_path, "pb.yaml", GATED)],
                            stdin_tty=True, answer="y")
    assert code == 0 and "ship it [ship-it] [y/N]" in seen
    run_id = json.loads(meshops(state, "runs", "list", "-o", "json").stdout)[0]["run_id"]
    shown = json.loads(meshops(state, "runs", "show", run_id, "-o", "json").stdout)
    ship = next(s for s in shown["steps"] if s["key"] == "ship-it")
    assert shown["status"] == "succeeded" and ship["outputs"] == {"approved": True, "by": "terminal"}


def test_logs_are_json_lines_off_a_terminal_ending_with_one_error_event(tmp_path: Path) -> None:
    """Every stderr line is a JSON event bound to the run (so `2>&1 | jq` works); a failure's last
    line is the error event with its exit code, not a plain `meshops:` line."""
    pb = write(tmp_path, "pb.yaml", "apiVersion: meshops.dev/v1\nkind: Playbook\nmetadata: {name: j}\n"
                                    "steps:\n  - {id: a, uses: test.echo}\n  - {id: b, uses: core.fail}\n")
    for playbook, code in ((str(ROOT / "playbooks/hello.yaml"), 0), (pb, 1)):
        done = meshops(tmp_path / "s", "run", playbook)
        assert done.returncode == code
        lines = done.stderr.splitlines()
        assert not [line for line in lines if not line.startswith("{")]
        events = [json.loads(line) for line in lines]
        assert len(events) >= 4
        assert all({"event", "level", "timestamp", "run_id"} <= set(e) for e in events)
        assert len({e["run_id"] for e in events}) == 1
        errors = [e for e in events if e["event"] == "meshops.error"]
        assert errors == ([] if code == 0 else [events[-1]])
        if code:
            assert errors[0]["exit_code"] == 1 and "failed on purpose" in errors[0]["message"]


@pytest.fixture(scope="module")
def runs_of_every_kind(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, int]]]:
    """One run that ended in each status a pipeline branches on, with the exit code it ended with."""
    tmp = tmp_path_factory.mktemp("kinds")
    state = tmp / "s"
    head = "apiVersion: meshops.dev/v1\nkind: Playbook\nmetadata: {name: %s}\n"
    playbooks = {
        "succeeded": str(ROOT / "playbooks/hello.yaml"),
        "rolled_back": write(tmp, "rb.yaml", head % "rb" + "steps:\n  - {id: a, uses: test.echo}\n"
                                                             "  - {id: b, uses: core.fail}\n"),
        "frozen": write(tmp, "fr.yaml", head % "fr" + "on_failure: freeze\nsteps:\n  - {id: a, uses: core.fail}\n"),
        "rollback_failed": write(tmp, "rf.yaml", head % "rf" + "steps:\n  - {id: a, uses: test.undo_fails}\n"
                                                                "  - {id: b, uses: core.fail}\n"),
        "awaiting_approval": write(tmp, "aa.yaml", GATED),
    }
    out: dict[str, tuple[str, int]] = {}
    for status, pb in playbooks.items():
        done = meshops(state, "--log-format", "json", "run", pb)
        out[status] = (json.loads(done.stderr.splitlines()[0])["run_id"], done.returncode)
    # The paused run keeps the lock (exit 130 holds it, marked paused): another run here exits 4
    # naming it. The interrupted run is therefore made in a state directory of its own, then
    # its run directory is copied in beside the others.
    refused = meshops(state, "run", str(ROOT / "playbooks/hello.yaml"))
    assert refused.returncode == 4 and out["awaiting_approval"][0] in refused.stderr, refused.stderr
    # Interrupted: SIGTERM while a step works stops the run at a safe point.
    pb = write(tmp, "in.yaml", head % "in" + f"steps:\n  - id: a\n    uses: test.write_file\n"
                                             f"    with: {{path: '{tmp}/x', pause: 5}}\n")
    other = tmp / "s-interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "meshops", "--state-dir", str(other), "--log-format", "json",
                             "run", pb], env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not (tmp / "x").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    out["interrupted"] = (json.loads(err.splitlines()[0])["run_id"], proc.returncode)
    shutil.copytree(other / "runs" / out["interrupted"][0], state / "runs" / out["interrupted"][0])
    return state, out


def test_runs_show_json_fits_the_documented_schema_for_every_outcome(
        runs_of_every_kind: tuple[Path, dict[str, tuple[str, int]]]) -> None:
    """`runs show -o json` of runs in every status validates against docs/ci/runs-show.schema.json."""
    state, runs = runs_of_every_kind
    exit_codes = {"succeeded": 0, "rolled_back": 1, "frozen": 1, "rollback_failed": 3, "awaiting_approval": 130,
                  "interrupted": 130}
    for status, (run_id, code) in runs.items():
        shown = json.loads(meshops(state, "runs", "show", run_id, "-o", "json").stdout)
        jsonschema.validate(shown, SCHEMA)
        assert shown["status"] == status and code == exit_codes[status]
        if status in ("awaiting_approval", "interrupted", "frozen", "rollback_failed"):
            assert shown["failed_step"] and shown["message"]
    listed = json.loads(meshops(state, "runs", "list", "-o", "json").stdout)
    assert sorted(r["status"] for r in listed) == sorted(runs)
    for row in listed:
        jsonschema.validate(row, {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/summary"})
    with pytest.raises(jsonschema.ValidationError):  # the schema is strict: a renamed field is caught
        jsonschema.validate({**shown, "state": shown.pop("status")}, SCHEMA)


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "rb",
        "clusters": [{"name": "rb", "cluster": {"server": url}}],
        "users": [{"name": "rb", "user": {"token": "runbook-token-not-for-logs"}}],
        "contexts": [{"name": "rb", "context": {"cluster": "rb", "user": "rb"}}]}))
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster("runbook") as c:
        yield c


def test_a_paused_run_is_approved_and_resumed_by_another_runner(cluster: Cluster, tmp_path: Path) -> None:
    """Runner A pauses at a gate; runner B, with an empty state dir, reads, approves, resumes and reports it."""
    pb = write(tmp_path, "pb.yaml", """apiVersion: meshops.dev/v1
kind: Playbook
metadata: {name: cluster-gate}
params:
  api_token: {type: string, secret: true, required: true}
steps:
  - {id: look, uses: istio.discover}
  - {id: ship-it, uses: gate.approve}
  - {id: again, uses: istio.discover}
""")
    kc = str(kubeconfig(tmp_path / "kubeconfig", cluster.url))
    secret = {**ENV, "MESHOPS_PARAM_API_TOKEN": "s3cret-value-of-the-runbook"}
    a = meshops(tmp_path / "runner-a", "--kubeconfig", kc, "run", pb, env=secret)
    assert a.returncode == 130
    run_id = json.loads(a.stderr.splitlines()[0])["run_id"]
    b = tmp_path / "runner-b"
    shown = json.loads(meshops(b, "--kubeconfig", kc, "runs", "show", run_id, "-o", "json").stdout)
    assert (shown["status"], shown["failed_step"]) == ("awaiting_approval", "ship-it")
    assert meshops(b, "--kubeconfig", kc, "approve", run_id, shown["failed_step"], "--by", "ci-bot").returncode == 0
    # The secret param is never journaled: runner B must be given it again, and is told how.
    missing = meshops(b, "--kubeconfig", kc, "resume", run_id)
    assert missing.returncode == 2 and "MESHOPS_PARAM_API_TOKEN" in missing.stderr
    resumed = meshops(b, "--kubeconfig", kc, "resume", run_id, env=secret)
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    report = meshops(b, "--kubeconfig", kc, "report", run_id, "-o", "json")
    data = json.loads(report.stdout)
    assert data["status"] == "succeeded" and [s["kind"] for s in data["sessions"]] == ["run", "resume"]
    assert next(s for s in data["steps"] if s["key"] == "ship-it")["approved_by"] == "ci-bot"
    everything = a.stderr + resumed.stderr + report.stdout + missing.stderr
    assert "s3cret-value-of-the-runbook" not in everything and "runbook-token-not-for-logs" not in everything


# The jq filter the CI templates (and docs/ci/README.md) use to find the gate waiting for a yes.
GATE_FILTER = ".waiting_gate // empty"


def waiting_gate(shown: dict[str, Any]) -> str:
    """GATE_FILTER, run by jq when the machine has it (the CI image does), else its Python twin."""
    import shutil

    if shutil.which("jq"):
        return subprocess.run(["jq", "-r", GATE_FILTER], input=json.dumps(shown), capture_output=True, text=True,
                              check=True).stdout.strip()
    return str(shown.get("waiting_gate") or "")


def test_the_templates_find_a_foreach_gate_to_approve_wave_after_wave(tmp_path: Path) -> None:
    """A gate per wave: failed_step names the foreach, waiting_gate (the templates' filter) the item to approve."""
    for template in ("github/meshops-runbook.yml", "gitlab/.gitlab-ci.yml"):
        assert GATE_FILTER in (ROOT / "docs" / "ci" / template).read_text()
    pb = write(tmp_path, "pb.yaml", """apiVersion: meshops.dev/v1
kind: Playbook
metadata: {name: waves}
steps:
  - id: waves
    uses: gate.approve
    foreach: [frontend, backend]
    concurrency: 1
    with: {message: "move {{ item }}?"}
""")
    state = tmp_path / "s"
    done = meshops(state, "run", pb)
    run_id = json.loads(done.stderr.splitlines()[0])["run_id"]
    for expected in ("waves[0]", "waves[1]"):
        assert done.returncode == 130
        shown = json.loads(meshops(state, "runs", "show", run_id, "-o", "json").stdout)
        assert shown["failed_step"] == "waves" and waiting_gate(shown) == expected
        assert meshops(state, "approve", run_id, waiting_gate(shown)).returncode == 0
        done = meshops(state, "resume", run_id)
    assert done.returncode == 0
