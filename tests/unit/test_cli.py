"""The CLI end to end in-process: exit codes, run listing, approvals, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshops.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "pb.yaml"
    path.write_text("apiVersion: meshops.dev/v1\nkind: Playbook\nmetadata: {name: cli}\n" + body)
    return str(path)


def test_sample_playbook_runs_and_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` exits 0 and prints the run id; `runs list` and `runs show -o json` report it."""
    state = str(tmp_path / "s")
    code, out, _ = cli(capsys, "--state-dir", state, "run", str(ROOT / "playbooks/hello.yaml"), "--var", "greeting=hey")
    assert code == 0
    run_id = out.strip()
    code, out, _ = cli(capsys, "--state-dir", state, "runs", "list")
    assert code == 0 and run_id in out and "succeeded" in out
    code, out, _ = cli(capsys, "--state-dir", state, "runs", "show", run_id, "-o", "json")
    data = json.loads(out)
    assert data["status"] == "succeeded"
    assert data["params"]["greeting"] == "hey"
    assert [s["key"] for s in data["steps"]][:3] == ["announce", "collect", "per-wave"]


def test_failure_exits_1_after_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A failing step rolls back and the CLI exits 1 naming the run and the step."""
    pb = write(tmp_path, f"""steps:
  - id: write
    uses: test.write_file
    with: {{path: "{tmp_path}/f"}}
  - id: boom
    uses: core.fail
    with: {{message: no luck}}
""")
    code, _, err = cli(capsys, "--state-dir", str(tmp_path / "s"), "run", pb)
    assert code == 1
    assert "boom failed: no luck; rolled back" in err
    assert not (tmp_path / "f").exists()


def test_failed_rollback_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An undo that fails makes the exit code 3 (a human is needed)."""
    pb = write(tmp_path, """steps:
  - id: stubborn
    uses: test.undo_fails
  - id: boom
    uses: core.fail
""")
    code, _, err = cli(capsys, "--state-dir", str(tmp_path / "s"), "run", pb)
    assert code == 3
    assert "rollback failed at stubborn" in err


def test_gate_pauses_with_130_and_approve_then_resume_finishes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal a gate pauses the run (130) naming the approve command; approve + resume exit 0."""
    pb = write(tmp_path, """steps:
  - id: ok-to-go
    uses: gate.approve
    with: {message: proceed}
  - id: after
    uses: core.noop
""")
    state = str(tmp_path / "s")
    code, _, err = cli(capsys, "--state-dir", state, "run", pb)
    assert code == 130
    assert "meshops approve" in err and "ok-to-go" in err
    run_id = err.split("meshops approve ")[1].split()[0]
    code, _, err = cli(capsys, "--state-dir", state, "approve", run_id, "nope")
    assert code == 2 and "no approval gate 'nope'" in err
    code, out, _ = cli(capsys, "--state-dir", state, "approve", run_id, "ok-to-go", "--by", "alice")
    assert code == 0 and "approved" in out
    code, out, _ = cli(capsys, "--state-dir", state, "resume", run_id)
    assert code == 0 and "succeeded" in out


def test_yes_answers_gates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--yes approves gates without waiting."""
    pb = write(tmp_path, "steps:\n  - id: gate\n    uses: gate.approve\n")
    code, _, _ = cli(capsys, "--state-dir", str(tmp_path / "s"), "run", pb, "--yes")
    assert code == 0


def test_bad_vars_are_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown or mistyped --var values exit 2 with a did-you-mean, and nothing runs."""
    state = tmp_path / "s"
    code, _, err = cli(capsys, "--state-dir", str(state), "run", str(ROOT / "playbooks/hello.yaml"), "--var", "greting=x")
    assert code == 2 and "did you mean 'greeting'" in err
    code, _, err = cli(capsys, "--state-dir", str(state), "run", str(ROOT / "playbooks/hello.yaml"), "--var", "novalue")
    assert code == 2 and "expected NAME=VALUE" in err
    assert not (state / "runs").exists()


def test_secret_params_are_redacted_in_logs_and_runs_show(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret param from the environment never shows in JSON logs or `runs show`."""
    pb = write(tmp_path, """params:
  api_token: {type: string, secret: true, required: true}
steps:
  - id: say
    uses: core.log
    with: {message: "token is {{ params.api_token }}"}
""")
    monkeypatch.setenv("MESHOPS_PARAM_API_TOKEN", "hunter2-very-secret")
    state = str(tmp_path / "s")
    code, out, err = cli(capsys, "--state-dir", state, "--log-format", "json", "run", pb)
    assert code == 0
    assert "hunter2-very-secret" not in err
    assert any(json.loads(line).get("message") == "token is <redacted>" for line in err.splitlines() if line.startswith("{"))
    code, out, _ = cli(capsys, "--state-dir", state, "runs", "show", out.strip(), "-o", "yaml")
    assert "hunter2-very-secret" not in out


def test_plan_shows_changes_without_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`plan` lists each step's change and creates nothing."""
    pb = write(tmp_path, f"""steps:
  - id: write
    uses: test.write_file
    with: {{path: "{tmp_path}/planned"}}
""")
    code, out, _ = cli(capsys, "--state-dir", str(tmp_path / "s"), "plan", pb)
    assert code == 0
    assert "create" in out and "planned" in out
    assert not (tmp_path / "planned").exists()


def test_schema_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`playbook schema` prints a JSON Schema; `--version` prints the version."""
    code, out, _ = cli(capsys, "playbook", "schema")
    schema = json.loads(out)
    assert code == 0 and "steps" in schema["properties"] and schema["$schema"].startswith("https://json-schema.org/")
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and "meshops" in out


def test_unknown_run_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Asking about a run that does not exist exits 2 with a pointer to `runs list`."""
    code, _, err = cli(capsys, "--state-dir", str(tmp_path), "resume", "no-such-run")
    assert code == 2 and "runs list" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """click usage errors map to exit 2."""
    code, _, _ = cli(capsys, "run")
    assert code == 2
