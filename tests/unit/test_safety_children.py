"""istioctl as a child: killed with meshops, in its own process group, with an allow-listed environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _fake_istioctl(tmp: Path) -> Path:
    script = tmp / "istioctl-fake"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo $$ > {tmp}/child.pid
        env > {tmp}/child.env
        echo ready > {tmp}/child.ready
        exec sleep 30
    """))
    script.chmod(0o755)
    return script


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2] != "Z"


def test_sigkill_of_meshops_takes_istioctl_with_it_and_secrets_stay_out_of_its_env(tmp_path: Path) -> None:
    """Before: the istioctl child ran on with PPID 1 after SIGKILL, and inherited every variable."""
    script = _fake_istioctl(tmp_path)
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys; from meshops.drivers.istioctl import Istioctl; "
                               "Istioctl(sys.argv[1], version='1.0.0').run(['install'], timeout=60)", str(script)],
        env={**os.environ, "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-not-for-children", "MESHOPS_PARAM_TOKEN": "tok"},
        start_new_session=True)
    deadline = time.time() + 20
    while not (tmp_path / "child.ready").exists() and time.time() < deadline:
        time.sleep(0.02)
    child = int((tmp_path / "child.pid").read_text())
    assert _alive(child)
    assert os.getpgid(child) == child != os.getpgid(parent.pid)  # its own process group
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.time() + 5
    while _alive(child) and time.time() < deadline:
        time.sleep(0.02)
    try:
        assert not _alive(child), "istioctl outlived meshops"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    env = (tmp_path / "child.env").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in env and "MESHOPS_PARAM_TOKEN" not in env
    assert "PATH=" in env


def test_temp_files_live_under_the_run_and_are_emptied_on_resume(tmp_path: Path) -> None:
    """Files handed to subprocesses go in the run's own tmp/ (not /tmp), and what a killed session
    left there is gone when the run resumes (before: an overlay file stayed in /tmp for good)."""
    import pytest

    from meshops.domain.errors import AwaitingApproval
    from meshops.engine.journal import LocalStateStore
    from meshops.engine.playbook import load_playbook_text
    from meshops.engine.runner import Engine, EngineOptions
    from tests.unit.test_engine import playbook

    text = playbook("""
        - id: approve
          uses: gate.approve
        - id: after
          uses: test.echo
    """)
    store = LocalStateStore(tmp_path / "state")
    with pytest.raises(AwaitingApproval):
        Engine(store=store, options=EngineOptions()).start(load_playbook_text(text, path="t.yaml"), {})
    run_id = store.run_ids()[-1]
    tmp = tmp_path / "state" / "runs" / run_id / "tmp"
    assert tmp.is_dir() and oct(tmp.stat().st_mode & 0o777) == "0o700"
    (tmp / "meshops-overlay-left.yaml").write_text("from a killed session")
    with pytest.raises(AwaitingApproval):
        Engine(store=store, options=EngineOptions()).resume(run_id)
    assert list(tmp.iterdir()) == []
