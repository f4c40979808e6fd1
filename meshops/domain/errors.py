"""The one error root, and the exit code each kind of failure maps to.

Exit codes are part of meshops's public contract (README, "Exit codes"). They are
decided here and nowhere else: the CLI's error funnel reads ``exit_code`` from the
exception it catches.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # failed and rolled back, or frozen as the playbook says
    BAD_INPUT = 2  # bad input or usage; nothing changed
    NEEDS_HUMAN = 3  # failed and the rollback failed too; the journal says where
    LOCKED = 4  # another run holds the lock
    INTERRUPTED = 130  # interrupted at a safe point; resumable


class MeshopsError(Exception):
    """Root of every error meshops raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class BadInput(MeshopsError):
    """The request cannot be carried out as given. Raised before the first write."""

    exit_code = ExitCode.BAD_INPUT


class PlaybookInvalid(BadInput):
    """A playbook failed validation; ``problems`` lists each location and message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class PreconditionFailed(BadInput):
    """The cluster is not in a state the requested operation can start from."""


class LockHeld(MeshopsError):
    exit_code = ExitCode.LOCKED

    def __init__(self, *, holder: str, since: str, lock: str) -> None:
        self.holder = holder
        self.since = since
        super().__init__(f"another run holds the lock {lock}: {holder} (since {since})")


class RunFailed(MeshopsError):
    """The run failed; it was rolled back or frozen as the playbook says."""

    exit_code = ExitCode.FAILED


class RollbackFailed(MeshopsError):
    """The run failed and so did its rollback: a human is needed."""

    exit_code = ExitCode.NEEDS_HUMAN


class Interrupted(MeshopsError):
    """The run stopped at a safe point and can be resumed."""

    exit_code = ExitCode.INTERRUPTED
    status = "interrupted"


class AwaitingApproval(Interrupted):
    """A gate needs a human's yes; the run is paused, resumable once approved."""

    status = "awaiting_approval"

    def __init__(self, message: str, *, step_key: str) -> None:
        super().__init__(message)
        self.step_key = step_key


class DriverError(MeshopsError):
    """A failure talking to a cluster, a cloud API or a subprocess."""

    def __init__(self, message: str, *, temporary: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.temporary = temporary


class NotFound(DriverError):
    pass


class Conflict(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=True)


class StepError(MeshopsError):
    """Raised by a step. ``temporary`` errors are retried by the engine; permanent ones are not."""

    def __init__(self, message: str, *, temporary: bool = False, delay: float | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.delay = delay


class PermanentStepError(StepError):
    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=False)


class TemporaryStepError(StepError):
    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message, temporary=True, delay=delay)
