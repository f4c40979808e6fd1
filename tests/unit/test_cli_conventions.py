"""kubectl-style conventions: results on stdout (-o table|json|yaml), JSON-only stderr in JSON mode,
global options after the subcommand, and clear errors for the common kubeconfig mistakes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import structlog

from meshops.cli import logs, output
from meshops.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
HELLO = str(ROOT / "playbooks/hello.yaml")
RUN_ID = re.compile(r"^\d{8}-\d{6}-[a-z0-9-]+-[0-9a-f]{4}$")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def json_lines(err: str) -> list[dict[str, object]]:
    """Every stderr line must be a JSON object (2>&1 | jq works); a plain line fails here."""
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def failing(tmp_path: Path) -> str:
    path = tmp_path / "fail.yaml"
    path.write_text("apiVersion: meshops.dev/v1\nkind: Playbook\nmetadata: {name: f, lock: false}\n"
                    "steps:\n  - {id: a, uses: test.echo}\n  - {id: b, uses: core.fail}\n")
    return str(path)


def test_run_result_is_one_json_document_on_stdout_whatever_the_outcome(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """-o json after the subcommand: success and failure both print {run_id, status, summary, exit_code};
    stderr is JSON lines only, the failure's last one the error event."""
    state = str(tmp_path / "s")
    code, out, err = cli(capsys, "run", HELLO, "--state-dir", state, "-o", "json", "--log-format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "succeeded" and doc["exit_code"] == 0 and RUN_ID.match(doc["run_id"])
    assert {e["run_id"] for e in json_lines(err)} == {doc["run_id"]}

    code, out, err = cli(capsys, "--state-dir", state, "--log-format", "json", "run", failing(tmp_path), "-o", "json")
    doc = json.loads(out)
    assert code == 1 and doc["exit_code"] == 1 and doc["status"] == "rolled_back"
    events = json_lines(err)
    assert events[-1]["event"] == "meshops.error" and events[-1]["exit_code"] == 1
    assert "failed on purpose" in str(events[-1]["message"])

    # rollback of the succeeded run: its result too, as YAML
    code, out, _ = cli(capsys, "rollback", json.loads(cli(capsys, "runs", "list", "--state-dir", state, "-o",
                                                          "json")[1])[0]["run_id"], "--state-dir", state, "-o", "yaml")
    assert code == 0 and "status: rolled_back" in out and "exit_code: 0" in out


def test_table_output_still_prints_the_run_id_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without -o the old contract holds: the run id alone on stdout as soon as the run exists."""
    code, out, _ = cli(capsys, "--state-dir", str(tmp_path), "run", HELLO)
    assert code == 0 and RUN_ID.match(out.strip())


def test_bad_input_of_a_run_command_is_a_result_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refused resume with -o json: exit 2, stdout says refused, stderr one JSON error event."""
    code, out, err = cli(capsys, "resume", "no-such-run", "--state-dir", str(tmp_path), "-o", "json",
                         "--log-format", "json")
    assert code == 2 and json.loads(out)["status"] == "refused" and json.loads(out)["exit_code"] == 2
    assert [e["event"] for e in json_lines(err)] == ["meshops.error"]


def test_global_options_after_the_subcommand_win(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--state-dir given before and after: the one after the subcommand is used (kubectl's rule)."""
    cli(capsys, "--state-dir", str(tmp_path / "b"), "run", HELLO)
    code, out, _ = cli(capsys, "--state-dir", str(tmp_path / "a"), "runs", "list", "--state-dir", str(tmp_path / "b"),
                       "-o", "json")
    assert code == 0 and len(json.loads(out)) == 1
    code, out, _ = cli(capsys, "runs", "list", "--state-dir", str(tmp_path / "a"), "-o", "yaml")
    assert code == 0 and out.strip() == "[]"


def test_dry_run_events_carry_a_real_run_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan's events are bound to a unique dry-run id, not the constant 'plan'."""
    ids = set()
    for _ in range(2):
        code, _, err = cli(capsys, "--state-dir", str(tmp_path), "--log-format", "json", "run", HELLO, "--dry-run")
        assert code == 0
        ids |= {str(e["run_id"]) for e in json_lines(err) if "run_id" in e}
    assert len(ids) == 2 and all(RUN_ID.match(i) and "dry-run" in i for i in ids)


def test_missing_kubeconfig_names_the_paths_tried(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "status", "--kubeconfig", str(tmp_path / "nope"), "--log-format", "json")
    event = json_lines(err)[-1]
    assert code == 2 and str(tmp_path / "nope") in str(event["message"]) and "KUBECONFIG" in str(event["message"])


def _kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
contexts: [{{name: blue, context: {{cluster: c, user: u}}}}, {{name: green, context: {{cluster: c, user: u}}}}]
current-context: blue
users: [{{name: u, user: {{token: t0k3n}}}}]
""")
    return str(path)


def test_unknown_context_lists_the_available_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "--kubeconfig", _kubeconfig(tmp_path, "https://127.0.0.1:1"), "status",
                       "--context", "red", "--log-format", "json")
    assert code == 2 and "context 'red'" in err and "available: blue, green" in err


def test_unreachable_api_server_fails_fast_with_url_and_cause(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Connection refused on first contact: seconds, not 13 s of retries, and the URL and cause named."""
    began = time.monotonic()
    code, _, err = cli(capsys, "status", "--kubeconfig", _kubeconfig(tmp_path, "https://127.0.0.1:1"),
                       "--log-format", "json")
    took = time.monotonic() - began
    message = str(json_lines(err)[-1]["message"])
    assert code == 2 and took < 4, took
    assert "https://127.0.0.1:1" in message and "refused" in message.lower() and "MaxRetryError" not in message


def test_a_blocker_is_logged_once_per_process(capsys: pytest.CaptureFixture[str]) -> None:
    """The upgrade's checks run to plan and again for real; each blocker is logged the first time only."""
    output.reset([])
    logs.configure(fmt="json")
    log = structlog.get_logger("t")
    for run_id in ("plan-id", "real-id"):
        log.warning("upgrade.blocker", run_id=run_id, kind="pdb", ref="ns/a", detail="x")
        log.warning("upgrade.blocker", run_id=run_id, kind="pdb", ref="ns/b", detail="x")
        log.info("other", run_id=run_id)
    events = json_lines(capsys.readouterr().err)
    assert [e["event"] for e in events] == ["upgrade.blocker", "upgrade.blocker", "other", "other"]


def test_no_color_turns_colour_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert logs.no_color()
    monkeypatch.setenv("NO_COLOR", "")
    assert not logs.no_color()


def _complete(words: str, cword: int, **env: str) -> list[str]:
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "meshops"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "COMP_WORDS": words, "COMP_CWORD": str(cword),
                              "_MESHOPS_COMPLETE": "bash_complete", **env})
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if line.startswith("plain,")]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_each_shell(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "completion", shell)
    assert code == 0 and "_MESHOPS_COMPLETE" in out and f"{shell}_complete" in out


def test_completion_offers_contexts_run_ids_profiles_and_playbooks(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path, "https://127.0.0.1:1")
    (tmp_path / "s" / "20261206-000000-hello-abcd").mkdir(parents=True)
    (tmp_path / "s" / "20261206-000000-hello-abcd" / "journal.jsonl").write_text("")
    env = {"KUBECONFIG": kubeconfig, "MESHOPS_STATE_DIR": str(tmp_path / "s")}
    assert _complete("meshops status --context ", 3, **env) == ["blue", "green"]
    assert _complete("meshops switchover --to g", 3, **env) == ["green"]
    assert _complete("meshops rollback ", 2, **env) == ["20261206-000000-hello-abcd"]
    assert _complete("meshops install --profile prod", 3, **env) == ["production"]
    assert "playbooks/canary-upgrade.yaml" in _complete("meshops run playbooks/", 2, **env)


def test_python_warnings_are_json_events_in_json_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's warning (urllib3's InsecureRequestWarning, say) must not break `2>&1 | jq`."""
    import warnings

    output.reset(["--log-format", "json"])
    saved = warnings.showwarning
    try:
        logs.configure(fmt="json")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Unverified HTTPS request", UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = saved
    (event,) = json_lines(capsys.readouterr().err)
    assert event["event"] == "python.warning" and event["message"] == "Unverified HTTPS request"


def test_a_missing_extra_is_named_with_the_pip_command(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`meshops demo` without the sandbox extra says how to get it (exit 2), not an ImportError."""
    from meshops.cli import lazy

    monkeypatch.setitem(lazy.EXTRAS, "demo", ("sandbox", ("meshops_no_such_module",)))
    code, _, err = cli(capsys, "--log-format", "json", "demo", "--help")
    assert code == 2 and "pip install 'meshops[sandbox]'" in err and "meshops_no_such_module" in err


@pytest.mark.parametrize("command", ["upgrade", "switchover", "run", "runs list", "status", "install", "tune", "sandbox",
                                     "report", "approve", "upgrade finalize", "completion"])
def test_help_imports_no_engine_driver_or_step_module(command: str) -> None:
    """What keeps `meshops X --help` within 3x `python -c pass` (bench/startup.py measures it): the
    engine, pydantic, structlog and the clients are imported only when a command runs."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "meshops", *command.split(), "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    modules = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    heavy = {m for m in modules if m.split(".")[0] in ("pydantic", "structlog", "jinja2", "kubernetes", "boto3", "rich")
             or m.startswith(("meshops.engine", "meshops.steps", "meshops.ops", "meshops.drivers.kube",
                              "meshops.sandbox.runtime", "meshops.sandbox.apiserver"))}
    assert not heavy, sorted(heavy)[:10]
