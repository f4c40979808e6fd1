"""Who holds a run lock, and whether that holder can still be alive."""

from __future__ import annotations

import os
import socket


def holder_identity(run_id: str) -> str:
    return f"{run_id}@{socket.gethostname()}/{os.getpid()}"


def holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` names a process on this host that no longer exists.

    Such a holder can never renew again, so waiting out its lease would only delay the
    resume of a killed run; a holder on another host is judged by its lease alone.
    """
    _, _, where = holder.rpartition("@")
    host, _, pid_text = where.partition("/")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A killed process whose parent died too stays a zombie until init reaps it: it still
    # answers kill(0) but can never renew. /proc/PID/stat's third field is its state.
    try:
        with open(f"/proc/{pid_text}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return False
