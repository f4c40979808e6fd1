"""`meshops report` on journals of real runs: sample playbooks and test steps, run through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshops.cli.main import main
from meshops.engine.journal import LocalStateStore, RunState

ROOT = Path(__file__).resolve().parents[2]

RICH = """apiVersion: meshops.dev/v1
kind: Playbook
metadata: {name: rich}
params:
  dir: {type: string, required: true}
steps:
  - id: prepare
    uses: test.write_file
    with: {path: "{{ params.dir }}/prepare"}
  - id: flaky-api
    uses: test.flaky
    retries: {count: 3, backoff: 0.01}
    with: {failures: 2}
  - id: move
    uses: test.write_file
    foreach: [bookinfo, payments, search]
    concurrency: 2
    with: {path: "{{ params.dir }}/{{ item }}", pause: 0.03}
  - id: one-way
    uses: test.one_way
  - id: verify
    uses: test.flaky
    retries: {count: 1, backoff: 0.01}
    with: {failures: 5}
  - id: never
    uses: core.noop
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def run_playbook(capsys: pytest.CaptureFixture[str], state: Path, playbook: str | Path, *args: str) -> tuple[int, str]:
    code, out, _ = cli(capsys, "--state-dir", str(state), "--log-format", "json", "run", str(playbook), *args)
    run_id = out.strip() or LocalStateStore(state).run_ids()[-1]
    return code, run_id


def report_json(capsys: pytest.CaptureFixture[str], state: Path, run_id: str) -> dict:  # type: ignore[type-arg]
    code, out, _ = cli(capsys, "--state-dir", str(state), "report", run_id, "-o", "json")
    assert code == 0
    return json.loads(out)  # type: ignore[no-any-return]


def test_hello_report_tells_what_ran_in_order_and_agrees_with_runs_show(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Every step of hello.yaml, its type, status and times; the same statuses as `runs show`."""
    state = tmp_path / "s"
    code, run_id = run_playbook(capsys, state, ROOT / "playbooks/hello.yaml")
    assert code == 0
    data = report_json(capsys, state, run_id)
    replayed = RunState.replay(run_id, LocalStateStore(state).records(run_id))
    assert data["status"] == replayed.status == "succeeded"
    top = [s for s in data["steps"] if s["index"] is None]
    assert [(s["key"], s["uses"]) for s in top] == [("announce", "core.log"), ("collect", "core.noop"),
                                                     ("per-wave", "core.log"), ("soak", "core.wait"), ("done", "core.log")]
    assert {s["key"]: s["status"] for s in data["steps"]} == {k: s.status for k, s in replayed.steps.items()}
    soak = next(s for s in top if s["key"] == "soak")
    assert soak["busy_s"] >= 0.2  # a 0.2 s wait, measured from the journal's own times
    assert data["duration_s"] >= soak["busy_s"]
    (group,) = data["waves"]
    assert group["step_id"] == "per-wave" and group["concurrency"] == 2 and len(group["waves"]) == 4


def test_a_failed_run_reports_retries_the_failure_and_the_rollback(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Retried attempts, the final failure, what was undone (newest first), what was passed over."""
    pb = tmp_path / "rich.yaml"
    pb.write_text(RICH)
    state = tmp_path / "s"
    code, run_id = run_playbook(capsys, state, pb, "--var", f"dir={tmp_path}")
    assert code == 1
    records = LocalStateStore(state).records(run_id)
    data = report_json(capsys, state, run_id)
    assert data["status"] == "rolled_back" and data["failed_step"] is None
    steps = {s["key"]: s for s in data["steps"]}
    assert [a["outcome"] for a in steps["flaky-api"]["attempts"]] == ["retried", "retried", "succeeded"]
    assert [a["outcome"] for a in steps["verify"]["attempts"]] == ["retried", "failed"]
    assert steps["never"]["status"] == "not_run"
    (rb,) = data["rollbacks"]
    undone_in_journal = [r["step"] for r in records if r["type"] == "undone"]
    assert rb["undone"] == undone_in_journal and rb["undone"][0] == "verify" and rb["undone"][-1] == "prepare"
    assert rb["skipped"] == ["one-way"] and rb["status"] == "rolled_back"
    finals = [f for f in data["failures"] if f["final"]]
    assert [f["step"] for f in finals] == ["verify"] and "after 2 attempts" in finals[0]["error"]
    code, md, _ = cli(capsys, "--state-dir", str(state), "report", run_id)
    assert code == 0 and md.startswith("# rich: failed, rolled back")
    assert "- verify failed: temporary failure on attempt 2 (after 2 attempts); undid" in md
    assert "- passed over (irreversible): one-way" in md


def test_a_paused_killed_and_resumed_run_shows_each_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Paused at a gate, approved, resumed and SIGKILLed mid-step, resumed again: four sessions, one report."""
    pb = tmp_path / "gated.yaml"
    pb.write_text(f"""apiVersion: meshops.dev/v1
kind: Playbook
metadata: {{name: gated}}
steps:
  - id: gate
    uses: gate.approve
  - id: slow
    uses: test.write_file
    with: {{path: "{tmp_path}/slow", pause: 1}}
""")
    state = tmp_path / "s"
    code, run_id = run_playbook(capsys, state, pb)
    assert code == 130
    assert cli(capsys, "--state-dir", str(state), "approve", run_id, "gate", "--by", "carol")[0] == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHOPS_STEP_MODULES": "tests.support.teststeps"}
    proc = subprocess.Popen([sys.executable, "-m", "meshops", "--state-dir", str(state), "resume", run_id],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not (tmp_path / "slow").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The killed holder never released its lock: age it rather than wait out its 30 s lease.
    lock = state / "local.lock"
    held = json.loads(lock.read_text())
    held["renewed"] = 0
    lock.write_text(json.dumps(held))
    records = LocalStateStore(state).records(run_id)
    code, _, _ = cli(capsys, "--state-dir", str(state), "resume", run_id)
    assert code == 0
    data = report_json(capsys, state, run_id)
    assert [(s["kind"], s["status"]) for s in data["sessions"]] == [
        ("run", "awaiting_approval"), ("resume", None), ("resume", "succeeded")]
    steps = {s["key"]: s for s in data["steps"]}
    assert steps["gate"]["approved_by"] == "carol"
    assert [a["outcome"] for a in steps["gate"]["attempts"]] == ["awaiting_approval", "succeeded"]
    killed, done = steps["slow"]["attempts"]
    assert killed["outcome"] == "killed" and killed["end_inferred"] and done["outcome"] == "succeeded"
    assert killed["started"] == next(r["ts"] for r in records if r["type"] == "step_started" and r["step"] == "slow")
    assert data["active_s"] < data["duration_s"]


def test_out_file_format_follows_its_suffix_and_bad_runs_are_bad_input(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--out x.html writes HTML (and prints the path), --out x.json JSON; an unknown run exits 2."""
    state = tmp_path / "s"
    _, run_id = run_playbook(capsys, state, ROOT / "playbooks/hello.yaml")
    for name, head in (("r.html", "<!DOCTYPE html>"), ("r.json", "{"), ("r.md", "# hello: succeeded")):
        code, out, _ = cli(capsys, "--state-dir", str(state), "report", run_id, "--out", str(tmp_path / name))
        assert code == 0 and out.strip() == str(tmp_path / name)
        assert (tmp_path / name).read_text().startswith(head)
    assert not list(tmp_path.glob(".report-*"))
    code, _, err = cli(capsys, "--state-dir", str(state), "report", "no-such-run")
    assert code == 2 and "no run no-such-run" in err
    code, _, err = cli(capsys, "--state-dir", str(state), "report", run_id, "-o", "pdf")
    assert code == 2 and "'pdf' is not one of" in err
