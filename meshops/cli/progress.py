"""Progress where people wait: JSON heartbeats off a terminal, a live display on one.

Steps report progress through ``ctx.progress`` (restarts: ready x of y) and log events
(``gate.evaluated``, ``bake.heartbeat``, ``route53.change``, ``route53.insync_wait``). This
module turns them into what the watcher needs:

- JSON mode (CI logs): a ``step.progress`` event when a step starts waiting, then at least
  every ``MESHOPS_HEARTBEAT_SECONDS`` (default 10) while it waits, and one when it is done,
  so a silent 2-hour wave is never mistaken for a hung job.
- A terminal: a rich live display of each waiting step (ready x/y, elapsed), the last gate
  results and the last DNS change, kept below the log lines (rich prints those above it, so
  nothing is garbled) and removed cleanly when the command ends, however it ends.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from meshops.cli import output


def heartbeat_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get("MESHOPS_HEARTBEAT_SECONDS", "10")))
    except ValueError:
        return 10.0


@dataclass(kw_only=True)
class _State:
    key: str
    done: int = 0
    total: int = 0
    label: str = ""
    started: float = field(default_factory=time.monotonic)
    last_emit: float = float("-inf")
    finished: bool = False
    deadline: float | None = None  # wall-clock seconds (the engine's clock is time.time in the CLI)


class JsonHeartbeat:
    """One per process: the waiting steps, and a thread that speaks for them every N seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.states: dict[str, _State] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def update(self, key: str, done: int, total: int, label: str, deadline: float | None = None) -> None:
        now = time.monotonic()
        with self.lock:
            st = self.states.setdefault(key, _State(key=key))
            st.done, st.total, st.label, st.deadline = done, total, label, deadline
            st.finished = total > 0 and done >= total
            due = st.finished or now - st.last_emit >= self.every
            if due:
                st.last_emit = now
            if self.thread is None:
                self.thread = threading.Thread(target=self._beat, name="meshops-heartbeat", daemon=True)
                self.thread.start()
        if due:
            self._emit(st)

    def _emit(self, st: _State) -> None:
        left = None if st.deadline is None else round(max(0.0, st.deadline - time.time()), 1)
        click.echo(output.event_line("step.progress", step=st.key, ready=st.done, total=st.total,
                                     elapsed=round(time.monotonic() - st.started, 1), deadline_in=left,
                                     label=st.label, done=st.finished), err=True)

    def _beat(self) -> None:
        # The steps wait on watches and may not call update for minutes; this thread says they live.
        while not self.stop_event.wait(self.every / 2):
            now = time.monotonic()
            with self.lock:
                due = [st for st in self.states.values() if not st.finished and now - st.last_emit >= self.every]
                for st in due:
                    st.last_emit = now
            for st in due:
                self._emit(st)

    def stop(self) -> None:
        self.stop_event.set()


class LiveView:
    """The terminal display: one row per waiting step, and the latest gate and DNS news."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
        self.states: dict[str, _State] = {}
        self.gates: dict[str, str] = {}
        self.dns = ""
        self.bake = ""
        self.lock = threading.Lock()
        # redirect_stderr: log lines written meanwhile are printed above the display, whole.
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True,
                         redirect_stderr=True, redirect_stdout=False, get_renderable=self._render)
        self.live.start()

    def update(self, key: str, done: int, total: int, label: str, deadline: float | None = None) -> None:
        with self.lock:
            st = self.states.setdefault(key, _State(key=key))
            st.done, st.total, st.label, st.deadline = done, total, label, deadline
            st.finished = total > 0 and done >= total

    def observe(self, event: Mapping[str, Any]) -> None:
        name = event.get("event")
        with self.lock:
            if name == "gate.evaluated":
                self.gates[str(event.get("gate"))] = ("ok  " if event.get("ok") else "FAIL") + f" {event.get('detail')}"
            elif name == "bake.heartbeat":
                self.bake = f"bake: {event.get('left')}s left, {event.get('evaluations')} evaluation(s)"
            elif name in ("route53.change", "route53.insync_wait"):
                self.dns = f"DNS: {event.get('batch') or event.get('status')}"

    def _render(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        with self.lock:
            for st in self.states.values():
                width = 24
                filled = int(width * st.done / st.total) if st.total else 0
                bar = "#" * filled + "." * (width - filled)
                table.add_row(st.key, f"[{bar}] {st.done}/{st.total} ready",
                              f"{time.monotonic() - st.started:.0f}s" + (" done" if st.finished else ""))
            for gate, result in list(self.gates.items())[-4:]:
                table.add_row("gate", result[:70], gate[:50])
            for line in (self.bake, self.dns):
                if line:
                    table.add_row("", line[:100], "")
        return table

    def stop(self) -> None:
        self.live.stop()


_SINK: JsonHeartbeat | LiveView | None = None
_SINK_LOCK = threading.Lock()


class _Lazy:
    """A step's reporter: the heartbeat or display starts at its first update, not before (most
    steps never wait, and a display must not sit under a prompt)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def update(self, *, done: int, total: int, label: str = "", deadline: float | None = None) -> None:
        global _SINK
        with _SINK_LOCK:
            if _SINK is None:
                _SINK = JsonHeartbeat(heartbeat_seconds()) if output.json_mode() or not _terminal() else LiveView()
            sink = _SINK
        sink.update(self.key, done, total, label, deadline)


def factory() -> Any:
    """The engine's progress factory for this invocation (JSON heartbeats, or a live display)."""
    return _Lazy


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def observe(event: Mapping[str, Any]) -> None:
    """Fed every log event (a structlog processor); only the live display cares."""
    sink = _SINK
    if isinstance(sink, LiveView):
        sink.observe(event)


def stop() -> None:
    """End the display or heartbeat (the command is over, whatever its outcome)."""
    global _SINK
    with _SINK_LOCK:
        sink, _SINK = _SINK, None
    if sink is not None:
        sink.stop()
