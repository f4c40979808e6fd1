"""Secrets of any length, and values derived from them, never leave the process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshops.domain import redact
from meshops.domain.redact import REDACTED, SecretRegistry
from tests.unit.test_cli import cli, write

SHORT = "pw7x"  # shorter than the old 8-character floor


def _pb(tmp_path: Path) -> str:
    return write(tmp_path, f"""params:
  pin: {{type: string, secret: true, required: true}}
steps:
  - id: say
    uses: core.log
    with: {{message: "pin is {{{{ params.pin }}}}"}}
  - id: loud
    uses: test.echo
    with: {{value: "{{{{ params.pin | upper }}}}"}}
  - id: write
    uses: test.write_file
    with: {{path: "{tmp_path}/out", content: "{{{{ params.pin | upper }}}}-{{{{ params.pin }}}}"}}
""")


def _everything_under(path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file())


def test_a_short_secret_and_its_derived_values_never_reach_journal_logs_or_runs_show(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHOPS_PARAM_PIN", SHORT)
    state = tmp_path / "s"
    code, out, err = cli(capsys, "--state-dir", str(state), "--log-format", "json", "run", _pb(tmp_path))
    assert code == 0, err
    run_id = out.strip()
    files = _everything_under(state)
    for leaked in (SHORT, SHORT.upper()):
        assert leaked not in err
        assert leaked not in files
    started = json.loads((state / "runs" / run_id / "journal.jsonl").read_text().splitlines()[0])
    assert started["type"] == "run_started" and "pin" not in started["params"]
    assert started["hidden_params"] == ["pin"]
    for fmt in ("json", "yaml", "text"):
        code, shown, _ = cli(capsys, "--state-dir", str(state), "runs", "show", run_id, "-o", fmt)
        assert SHORT not in shown and SHORT.upper() not in shown
    code, html, _ = cli(capsys, "--state-dir", str(state), "report", run_id, "-o", "json")
    assert SHORT not in html and SHORT.upper() not in html


@pytest.mark.parametrize("argv", [["plan", "-o", "json"], ["plan"], ["run", "--dry-run"]])
def test_plan_and_dry_run_redact_secrets_of_any_length(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    pb = _pb(tmp_path)
    code, out, err = cli(capsys, "--state-dir", str(tmp_path / "s"), argv[0], pb, *argv[1:], "--var", f"pin={SHORT}")
    assert code == 0, err
    assert SHORT not in out and SHORT.upper() not in out and SHORT not in err
    assert REDACTED in out


def test_short_secrets_are_redacted_as_whole_tokens_only() -> None:
    """A 2-character secret must not blank out every '42' inside addresses and names."""
    reg = SecretRegistry()
    reg.add("42")
    assert reg.scrub_text("pin=42") == f"pin={REDACTED}"
    assert reg.scrub_text("the pin is 42.") == f"the pin is {REDACTED}."
    assert reg.scrub("42") == REDACTED
    assert reg.scrub_text("10.42.0.1 istio-1-42 x42") == "10.42.0.1 istio-1-42 x42"
    reg.add("a-long-secret-value")
    assert reg.scrub_text("xa-long-secret-valuey") == f"x{REDACTED}y"


def test_each_run_has_its_own_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run's secrets do not outlive it: nothing is added to a process-wide registry."""
    before = redact.active()
    code, _, err = cli(capsys, "--state-dir", str(tmp_path / "s"), "run", _pb(tmp_path), "--var", "pin=zz9plural")
    assert code == 0, err
    assert redact.active() is before
    assert "zz9plural" not in redact.CREDENTIALS


def test_aws_credentials_of_the_chain_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AWS secret key and session token were never registered (only AKIA-shaped key ids matched)."""
    from meshops.drivers.route53 import Route53Client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testkeyid-not-akia")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEJr-session-token")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    Route53Client(endpoint_url="http://127.0.0.1:9")
    line = "key testkeyid-not-akia secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz token FwoGZXIvYXdzEJr-session-token"
    scrubbed = redact.CREDENTIALS.scrub_text(line)
    assert "wJalrXUtnFEMI" not in scrubbed and "FwoGZXIvYXdzEJr" not in scrubbed and "testkeyid" not in scrubbed
