"""What a command prints, and where: results on stdout (-o table|json|yaml), everything else on stderr.

kubectl's convention, which pipelines already rely on: stdout carries the one document a
command produces (``meshops upgrade -o json | jq .status``), stderr carries logs. In JSON
mode (``--log-format json``, or ``auto`` off a terminal) every stderr line is a JSON event,
so ``2>&1 | jq`` never meets a plain line; plain ``meshops: …`` lines are for terminals.

The error funnel in ``meshops.cli.main`` runs after click has unwound the command, so the
little it needs to know (the output format, the run id once a run exists, how to read that
run's final status) lives in one per-invocation :class:`Session`, reset by ``main``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

FORMATS = ("table", "text", "json", "yaml")  # text: the old name of table, still accepted


@dataclass(kw_only=True)
class Session:
    output: str = "table"
    log_format: str = "auto"
    run_id: str | None = None
    # Set by commands whose result is a run: the funnel prints that run's result document.
    run_command: bool = False
    # Reads (status, message) of a run from its journal; set once a store exists.
    status_of: Callable[[str], tuple[str, str]] | None = field(default=None, repr=False)
    # Events already logged once in this process (see logs.once).
    seen: set[str] = field(default_factory=set)


SESSION = Session()


def reset(argv: list[str] | None) -> None:
    """A fresh session for one ``main()`` call; the log format is guessed from argv until click parses it."""
    global SESSION
    SESSION = Session(log_format=_guess_log_format(argv or sys.argv[1:]))


def _guess_log_format(argv: list[str]) -> str:
    fmt = os.environ.get("MESHOPS_LOG_FORMAT", "auto")
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            fmt = argv[i + 1]
        elif arg.startswith("--log-format="):
            fmt = arg.split("=", 1)[1]
    return fmt


def json_mode() -> bool:
    """Whether stderr is JSON lines: asked for, or ``auto`` with stderr not a terminal."""
    fmt = SESSION.log_format
    if fmt == "auto":
        return not _isatty(sys.stderr)
    return fmt == "json"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def event_line(event: str, level: str = "info", **fields: Any) -> str:
    """One JSON log line in the shape structlog's JSON renderer gives (event, level, timestamp, ...)."""
    from meshops.domain.redact import active

    doc: dict[str, Any] = {"event": event, "level": level, **fields,
                           "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    if SESSION.run_id and "run_id" not in doc:
        doc["run_id"] = SESSION.run_id
    scrubbed: dict[str, Any] = active().scrub(doc)
    import json  # here: most runs print no JSON, and --help none

    return json.dumps(scrubbed, default=str)


def notice(message: str, *, event: str = "meshops.notice", level: str = "info", **fields: Any) -> None:
    """A message for the person or pipeline watching: a JSON event in JSON mode, else a plain line."""
    if json_mode():
        click.echo(event_line(event, level, message=message, **fields), err=True)
    else:
        click.echo(f"meshops: {message}", err=True)


def render(data: Any, fmt: str) -> str:
    if fmt == "json":
        import json

        return json.dumps(data, indent=2, default=str)
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False)).rstrip("\n")


def emit(data: Any, fmt: str, table: Callable[[], str] | str | None = None) -> None:
    """``data`` as JSON or YAML on stdout, or the human table (text or a function making it)."""
    if fmt in ("json", "yaml"):
        click.echo(render(data, fmt))
        return
    text = table() if callable(table) else table
    if text:
        click.echo(text)


def result_doc(*, run_id: str | None, status: str, summary: str, exit_code: int, **extra: Any) -> dict[str, Any]:
    """The result of a command that runs a playbook: the same keys whatever the outcome."""
    return {"run_id": run_id, "status": status, "summary": summary, "exit_code": exit_code, **extra}


def fmt_of(ctx: click.Context | None = None, explicit: str | None = None) -> str:
    """The command's -o: its own option when it has one, else the global one."""
    if explicit:
        return "table" if explicit == "text" else explicit
    return "table" if SESSION.output == "text" else SESSION.output


def started(run_id: str) -> None:
    """Told by the engine once a run exists: remembered for the result, announced on stderr."""
    SESSION.run_id = run_id
    notice(f"run {run_id} started", event="run.created", run_id=run_id)


def failure_result(message: str, exit_code: int) -> dict[str, Any] | None:
    """The result document a run command prints when it ends by an error (None for other commands)."""
    if not SESSION.run_command or fmt_of() not in ("json", "yaml"):
        return None
    status = {2: "refused", 4: "locked", 130: "interrupted"}.get(exit_code, "failed")
    summary = message
    if SESSION.run_id and SESSION.status_of is not None:
        try:
            status, journaled = SESSION.status_of(SESSION.run_id)
            summary = journaled or message
        except Exception as exc:  # the journal may be unreadable; the error message still stands
            summary = f"{message} (journal unreadable: {exc})"
    return result_doc(run_id=SESSION.run_id, status=status, summary=summary, exit_code=exit_code)


def run_command(fmt: str) -> Callable[[str], None]:
    """Mark this command as one whose result is a run; what to do once the run id exists.

    Table mode keeps the old contract (the run id on stdout at once, whatever the outcome);
    JSON/YAML mode keeps stdout for the one result document.
    """
    SESSION.run_command = True
    SESSION.output = fmt

    def on_started(run_id: str) -> None:
        started(run_id)
        if fmt not in ("json", "yaml"):
            click.echo(run_id)

    return on_started


def finish(fmt: str, *, run_id: str | None, status: str, summary: str, table: Callable[[], str] | str | None = None,
           **extra: Any) -> None:
    """A run command's result when it ended without an error (exit 0)."""
    from meshops.cli import progress

    progress.stop()
    emit(result_doc(run_id=run_id, status=status, summary=summary, exit_code=0, **extra), fmt, table)


def confirm_change(what: str, *, assume_yes: bool) -> None:
    """On a terminal, a y/N question before a command changes a cluster or DNS; -y skips it.

    Off a terminal (CI, cron, a pipe) it never asks: a question nobody can answer would hang
    the job, and the pipeline already said yes by running the command.
    """
    if assume_yes or not (_isatty(sys.stdin) and _isatty(sys.stderr)):
        return
    if not click.confirm(f"meshops: {what}. Go ahead?", default=False, err=True):
        from meshops.domain.errors import BadInput

        raise BadInput("not confirmed; nothing was changed")
