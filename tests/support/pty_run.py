"""meshops on a pseudo-terminal, for the tests of what it does (and does not do) on one."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from typing import Any

import pytest


def meshops_on_pty(argv: list[str], *, env: dict[str, str], stdin_tty: bool = True, answer: str | None = None,
                   timeout: float = 30) -> tuple[int, str]:
    """meshops with stderr (and stdin, when ``stdin_tty``) on a pseudo-terminal; answers the first
    ``[y/N]`` with ``answer``. Returns the exit code and what the terminal showed."""
    master, slave = pty.openpty()
    stdin: Any = slave if stdin_tty else subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-m", "meshops", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=slave, stdin=stdin)
    os.close(slave)
    seen, deadline, answered = b"", time.time() + timeout, False
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if answer is not None and not answered and b"[y/N]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
        pytest.fail(f"meshops hung for {timeout}s: {seen.decode(errors='replace')[-500:]}")
    os.close(master)
    return proc.wait(timeout=10), seen.decode(errors="replace")
