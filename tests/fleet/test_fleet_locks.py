"""A killed cluster run's Lease is taken over at once on resume, even while the child is a zombie."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from meshops.domain.locks import boot_id, holder_is_dead, pid_namespace, process_start


def _holder_of(pid: int) -> str:
    """The identity a run in process ``pid`` would write (positive evidence: boot, PID namespace, start)."""
    return f"run@{socket.gethostname()}/{pid}/{boot_id()}/{pid_namespace()}/{process_start(pid)}"


def test_a_zombie_holder_is_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    holder = _holder_of(proc.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited but not reaped: a zombie, as after `kill -9` of the fleet
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rpartition(")")[2].split()[0] == "Z":
                break
        time.sleep(0.02)
    assert holder_is_dead(holder)
    proc.wait()
    assert holder_is_dead(holder)


def test_a_live_holder_is_not_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not holder_is_dead(_holder_of(proc.pid))
    finally:
        proc.kill()
        proc.wait()
