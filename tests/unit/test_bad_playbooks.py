"""Malformed playbooks: each one is refused with exit 2, naming file, line, column and field, and nothing runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from meshops.cli.main import main

BAD = sorted((Path(__file__).parent.parent / "data" / "bad_playbooks").glob("*.yaml"))


def expected(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    m = re.fullmatch(r"# expect: (\d+:\d+): (.*)", first)
    assert m, f"{path.name} lacks an '# expect: LINE:COL: message' header"
    return m.group(1), m.group(2)


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_there_are_at_least_25_malformed_playbooks() -> None:
    """The issue asks for at least 25 distinct malformed playbooks."""
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_validate_names_the_exact_location(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`playbook validate` exits 2 and prints file:line:col: field: message."""
    where, message = expected(path)
    code = run_cli(["playbook", "validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:{where}: {message}" in err, err


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_run_refuses_before_any_step(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` exits 2, creates no run and performs no step."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = run_cli(["--state-dir", str(tmp_path / "state"), "run", str(path)])
    finally:
        os.chdir(cwd)
    assert code == 2
    assert not (tmp_path / "state" / "runs").exists()
    assert not (tmp_path / "written-by-bad-playbook").exists()
    assert f"{path}:" in capsys.readouterr().err
