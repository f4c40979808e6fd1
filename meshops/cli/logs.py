"""structlog set-up: key/value events, console on a terminal, JSON lines elsewhere, secrets scrubbed."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from meshops.domain import redact

# Events that say the same thing about the same object whenever a step re-reads the mesh
# (the upgrade's checks run once to plan and once for real): logged once per process.
ONCE = frozenset({"upgrade.blocker"})
_IDENTITY_SKIP = frozenset({"timestamp", "run_id", "level", "playbook", "step", "attempt"})


def _once(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    if event_dict.get("event") in ONCE:
        from meshops.cli import output

        key = repr(sorted((k, str(v)) for k, v in event_dict.items() if k not in _IDENTITY_SKIP))
        if key in output.SESSION.seen:
            raise structlog.DropEvent
        output.SESSION.seen.add(key)
    return event_dict


def _feed_progress(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    # The live display shows gate results and DNS changes as they are logged.
    from meshops.cli import progress

    progress.observe(event_dict)
    return event_dict


def no_color() -> bool:
    """https://no-color.org: any non-empty NO_COLOR turns colour off."""
    return bool(os.environ.get("NO_COLOR"))


def _scrub(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    scrubbed: dict[str, Any] = redact.active().scrub(event_dict)
    return scrubbed


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the moment of writing (tests and progress bars swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, fmt: str = "auto", verbosity: int = 0) -> None:
    """``fmt`` is auto|console|json; ``verbosity`` -1 quiet, 0 normal, 1+ debug."""
    stream = sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty() and not no_color())
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _once,
            _feed_progress,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    if fmt == "json":
        # Python warnings (urllib3's InsecureRequestWarning, deprecations in a library) print plain
        # text to stderr; in JSON mode they become events too, so every stderr line parses.
        import warnings

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            structlog.get_logger("meshops.warnings").warning("python.warning", category=category.__name__,
                                                            message=str(message), where=f"{filename}:{lineno}")

        warnings.showwarning = show
