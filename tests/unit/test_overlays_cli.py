"""`meshops install` input checks: bad input exits 2 before any run starts; --dry-run prints the overlay."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshops.cli.main import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_dry_run_prints_the_merged_overlay(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--dry-run prints the composed IstioOperator, with the profiles in a header comment."""
    code, out, _ = cli(capsys, "--state-dir", str(tmp_path), "install", "--profile", "demo", "--profile", "minikube",
                       "--set", "values.pilot.traceSampling=1", "--version", "1.23.2", "--dry-run")
    assert code == 0
    assert out.startswith("# profiles: demo, minikube\n# istioctl 1.23.2 install -f <this file>\n")
    spec = yaml.safe_load(out)["spec"]
    assert spec["profile"] == "demo" and spec["values"]["pilot"] == {"autoscaleEnabled": False, "traceSampling": 1}


@pytest.mark.parametrize(("argv", "message"), [
    (["--profile", "nope"], "--profile nope: unknown profile (available: default, demo, minikube, minimal, production)"),
    (["--profile", "default", "--set", "values.pilot.traceSamplin=1"], "no field spec.values.pilot.traceSamplin"),
    (["--profile", "default", "--revision", "1.24.1"], "a revision is a DNS label"),
    (["--profile", "default", "--revision", "default"], "'default' is reserved"),
    (["--profile", "default", "--version", "latest"], "expected an Istio version"),
    (["--profile", "default", "--tuning", "/nonexistent/tuning.yaml"], "--tuning /nonexistent/tuning.yaml: no such file"),
    (["--profile", "default", "--version", "9.9.9"], "no istioctl 9.9.9 found"),
    (["--profile", "default", "--set", "values.global.jwtPolicy=first-party-jwt", "--version", "1.23.2", "--dry-run"],
     "values.global.jwtPolicy: first-party-jwt was dropped in Istio 1.22"),
])
def test_bad_input_exits_2_and_starts_no_run(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             argv: list[str], message: str) -> None:
    """Each bad input names the problem, exits 2, and leaves no run journal behind."""
    state = tmp_path / "state"
    code, _, err = cli(capsys, "--state-dir", str(state), "install", *argv)
    assert code == 2
    assert message in err
    assert not state.exists() or not any(state.rglob("*.jsonl"))


def test_malformed_user_profile_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A user file with an unknown field: exit 2, the file and the field path named."""
    ours = tmp_path / "ours.yaml"
    ours.write_text("spec:\n  values:\n    global:\n      proxy:\n        resource: {}\n")
    code, _, err = cli(capsys, "--state-dir", str(tmp_path), "install", "--profile", str(ours), "--dry-run")
    assert code == 2
    assert f"{ours}: spec.values.global.proxy.resource: unknown field (did you mean 'resources'?)" in err


def test_tune_rejects_a_bad_window(capsys: pytest.CaptureFixture[str]) -> None:
    """`meshops tune --window 1m` is refused before any query (usage is sampled every 5m)."""
    code, _, err = cli(capsys, "tune", "--prometheus", "http://127.0.0.1:1", "--window", "1m")
    assert code == 2
    assert "--window 1m: at least twice --resolution (auto: 5m)" in err
