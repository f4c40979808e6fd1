"""What steps may ask of istioctl: the ``IstioctlApi`` protocol, its result and its failure.

``Istioctl`` (istioctl.py) runs the real program; ``FakeIstioctl`` (istioctl_fake.py) answers
planned commands. Steps import this module only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from meshops.domain import redact
from meshops.domain.errors import DriverError


@dataclass(frozen=True, kw_only=True)
class IstioctlResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str


class IstioctlFailed(DriverError):
    def __init__(self, result: IstioctlResult, *, temporary: bool = False) -> None:
        self.result = result
        tail = "\n".join((result.stderr.strip() or result.stdout.strip()).splitlines()[-10:])
        cmd = " ".join(result.argv[1:6]) + (" ..." if len(result.argv) > 6 else "")
        super().__init__(f"istioctl {cmd} exited {result.exit_code}:\n{redact.active().scrub_text(tail)}", temporary=temporary)


class IstioctlApi(Protocol):
    path: str
    version: str

    def run(self, args: Sequence[str], *, ok_codes: Sequence[int] = (0,), timeout: float = 600.0,
            stdin: str | None = None) -> IstioctlResult: ...
