"""structlog set-up: key/value events, console on a terminal, JSON lines elsewhere, secrets scrubbed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from meshops.domain import redact


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
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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
