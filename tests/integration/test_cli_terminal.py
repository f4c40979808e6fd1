"""On a terminal: a y/N question before a change (-y skips it), colour unless NO_COLOR; off one, neither."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.pty_run import meshops_on_pty

ROOT = Path(__file__).resolve().parents[2]
HELLO = str(ROOT / "playbooks/hello.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MESHOPS_STEP_MODULES": "tests.support.teststeps"}
ENV.pop("MESHOPS_LOG_FORMAT", None)
ENV.pop("NO_COLOR", None)


def on_pty(argv: list[str], *, answer: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 30) -> tuple[int, str]:
    """meshops with stdin and stderr on a pseudo-terminal; answers the first [y/N] with ``answer``."""
    return meshops_on_pty(argv, env=env or ENV, answer=answer, timeout=timeout)


def _run(state: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "meshops", "--state-dir", str(state), "run", HELLO], env=ENV,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_a_change_asks_first_on_a_terminal_and_no_means_nothing_changed(tmp_path: Path) -> None:
    state = tmp_path / "s"
    run_id = _run(state)
    code, seen = on_pty(["--state-dir", str(state), "rollback", run_id], answer="n")
    assert code == 2 and f"roll back run {run_id}. Go ahead? [y/N]" in seen and "not confirmed" in seen
    shown = subprocess.run([sys.executable, "-m", "meshops", "--state-dir", str(state), "runs", "show", run_id,
                            "-o", "json"], env=ENV, capture_output=True, text=True, timeout=60, check=True)
    assert '"status": "succeeded"' in shown.stdout
    code, seen = on_pty(["--state-dir", str(state), "rollback", run_id, "-y"])
    assert code == 0 and "[y/N]" not in seen


def test_off_a_terminal_it_never_asks(tmp_path: Path) -> None:
    state = tmp_path / "s"
    run_id = _run(state)
    done = subprocess.run([sys.executable, "-m", "meshops", "--state-dir", str(state), "rollback", run_id],
                          env=ENV, stdin=subprocess.PIPE, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "[y/N]" not in done.stderr


def test_no_color_is_respected_on_a_terminal(tmp_path: Path) -> None:
    code, coloured = on_pty(["--state-dir", str(tmp_path / "a"), "run", HELLO])
    assert code == 0 and "\x1b[" in coloured
    code, plain = on_pty(["--state-dir", str(tmp_path / "b"), "run", HELLO], env={**ENV, "NO_COLOR": "1"})
    assert code == 0 and "\x1b[" not in plain and "run.start" in plain
