"""Who holds a run lock, and whether that holder can still be alive.

A holder identity is ``RUN_ID@HOST/PID/BOOT/PIDNS/START``: the host alone cannot prove a
holder dead (containers share a hostname but not a PID namespace, and a PID is reused),
so a local holder is only judged dead on positive evidence: same host, same boot, same
PID namespace, and its PID gone or now belonging to a process that started at another
time. Anything else is judged by its lease alone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from meshops.domain.errors import MeshopsError

PAUSED_ANNOTATION = "meshops.dev/paused-run"


class LockLost(MeshopsError):
    """The run's lock renewal failed or another holder has it: the run must stop writing."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id").replace("-", "")[:12] or "noboot"


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").rstrip("]") or "nons"
    except OSError:
        return "nons"


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True, kw_only=True)
class Holder:
    run_id: str
    host: str
    pid: int | None
    boot: str | None = None
    pidns: str | None = None
    start: str | None = None

    @classmethod
    def parse(cls, text: str) -> Holder:
        run_id, _, where = text.rpartition("@")
        parts = where.split("/")
        pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        extra = parts[2:5] + [None] * (3 - len(parts[2:5]))
        return cls(run_id=run_id, host=parts[0], pid=pid, boot=extra[0], pidns=extra[1], start=extra[2])


def paused_holder(run_id: str) -> str:
    return (f"run {run_id}, paused (interrupted or awaiting approval): resume it with `meshops resume {run_id}`, "
            f"or release it with `meshops runs abandon {run_id} --reason ...`")


def holder_identity(run_id: str) -> str:
    pid = os.getpid()
    return f"{run_id}@{socket.gethostname()}/{pid}/{boot_id()}/{pid_namespace()}/{process_start(pid) or '0'}"


def run_of(holder: str | None) -> str:
    return "" if not holder else holder.rpartition("@")[0]


def holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` is provably a process that no longer exists (it can never renew again)."""
    h = Holder.parse(holder)
    if h.host != socket.gethostname() or h.pid is None or not h.boot or not h.pidns or not h.start:
        return False  # another host, or an identity without the evidence: the lease decides
    if h.boot != boot_id() or h.pidns != pid_namespace():
        return False  # another machine or container that shares our hostname
    now = process_start(h.pid)
    if now is None or now != h.start:
        return True
    # A killed process whose parent died too stays a zombie until init reaps it: it still
    # has its /proc entry but can never renew. /proc/PID/stat's third field is its state.
    stat = _read(f"/proc/{h.pid}/stat")
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
