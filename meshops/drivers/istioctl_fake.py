"""``FakeIstioctl``: canned istioctl results by argv pattern, for unit tests.

A response is an ``IstioctlResult`` or a callable taking the argv and returning one (so a
test can also change a ``FakeKube`` the way the real command would). A command that no
pattern matches raises ``UnplannedCommand``: a test never runs something it did not plan.
Failures behave like the real driver: an exit code outside ``ok_codes`` raises
``IstioctlFailed`` carrying the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meshops.drivers.istioctl_api import IstioctlFailed, IstioctlResult

Response = IstioctlResult | Callable[[tuple[str, ...]], IstioctlResult]


class UnplannedCommand(AssertionError):
    """The code under test ran an istioctl command the test did not plan for."""


def ok(stdout: str = "", stderr: str = "") -> IstioctlResult:
    return IstioctlResult(argv=(), exit_code=0, stdout=stdout, stderr=stderr)


def fail(code: int = 1, stderr: str = "Error: failed") -> IstioctlResult:
    return IstioctlResult(argv=(), exit_code=code, stdout="", stderr=stderr)


@dataclass
class FakeIstioctl:
    """``responses`` maps a pattern (matched against the space-joined args) to a response.

    A ``str`` pattern matches when the joined args start with it; a compiled regex is
    searched. The first matching entry wins, in insertion order.
    """

    version: str = "1.24.1"
    path: str = "/fake/istioctl"
    responses: dict[str | re.Pattern[str], Response] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def on(self, pattern: str | re.Pattern[str], response: Response) -> FakeIstioctl:
        self.responses[pattern] = response
        return self

    def run(self, args: Sequence[str], *, ok_codes: Sequence[int] = (0,), timeout: float = 600.0,
            stdin: str | None = None) -> IstioctlResult:
        argv = tuple(args)
        self.calls.append(argv)
        joined = " ".join(argv)
        for pattern, response in self.responses.items():
            hit = pattern.search(joined) if isinstance(pattern, re.Pattern) else joined.startswith(pattern)
            if not hit:
                continue
            result = response(argv) if callable(response) else response
            result = IstioctlResult(argv=(self.path, *argv), exit_code=result.exit_code, stdout=result.stdout,
                                    stderr=result.stderr)
            if result.exit_code not in ok_codes:
                raise IstioctlFailed(result)
            return result
        raise UnplannedCommand(f"istioctl {joined!r} was not planned (planned: {[str(p) for p in self.responses]})")

    def ran(self, prefix: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if " ".join(c).startswith(prefix)]
