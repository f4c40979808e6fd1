"""The run journal: an append-only record of everything a run did, durable before the next action.

A run's state is never stored anywhere else: ``RunState.replay`` rebuilds it from the
records, so the journal cannot disagree with itself. Stores are pluggable
(``StateStore``): a local directory, the target cluster, or both (mirrored).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from meshops.domain.errors import BadInput
from meshops.domain.redact import SECRETS

Record = dict[str, Any]


class StateStore(Protocol):
    """Where journals live. ``append`` returns only once the record is durable."""

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str) -> None: ...
    def append(self, run_id: str, records: list[Record]) -> None: ...
    def records(self, run_id: str) -> list[Record]: ...
    def playbook_text(self, run_id: str) -> str: ...
    def run_ids(self) -> list[str]: ...
    def exists(self, run_id: str) -> bool: ...


def new_run_id(name: str, now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())[:30].strip("-") or "run"
    return f"{stamp}-{slug}-{secrets.token_hex(2)}"


class LocalStateStore:
    """One directory per run: ``journal.jsonl`` (appended, fsynced) and ``playbook.yaml``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def _dir(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise BadInput(f"not a run id: {run_id!r}")
        return self.root / "runs" / run_id

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str) -> None:
        d = self._dir(run_id)
        d.mkdir(parents=True, exist_ok=False)
        tmp = d / "playbook.yaml.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(playbook_text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(d / "playbook.yaml")
        _fsync_dir(d)
        _fsync_dir(d.parent)

    def _fd(self, run_id: str) -> int:
        fd = self._fds.get(run_id)
        if fd is None:
            path = self._dir(run_id) / "journal.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fds[run_id] = fd
        return fd

    def append(self, run_id: str, records: list[Record]) -> None:
        # One write per batch with O_APPEND keeps lines whole even when `meshops approve`
        # appends from another process at the same moment.
        data = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records).encode()
        with self._lock:
            fd = self._fd(run_id)
            os.write(fd, data)
            os.fdatasync(fd)

    def records(self, run_id: str) -> list[Record]:
        path = self._dir(run_id) / "journal.jsonl"
        if not path.exists():
            if not self._dir(run_id).exists():
                raise BadInput(f"no run {run_id} in {self.root} (see: meshops runs list)")
            return []
        out = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    # A torn last line from a crash mid-write: everything before it is whole.
                    break
        return out

    def playbook_text(self, run_id: str) -> str:
        try:
            return (self._dir(run_id) / "playbook.yaml").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInput(f"no run {run_id} in {self.root} (see: meshops runs list)") from None

    def run_ids(self) -> list[str]:
        runs = self.root / "runs"
        return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.exists() else []

    def exists(self, run_id: str) -> bool:
        return (self._dir(run_id) / "playbook.yaml").exists()

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MirroredStateStore:
    """Writes to every store (local first); reads from the first that knows the run.

    With the cluster as a mirror, a CI job on another runner can resume, approve or roll
    back a run it did not start.
    """

    def __init__(self, *stores: StateStore) -> None:
        self.stores = stores

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str) -> None:
        for s in self.stores:
            s.create_run(run_id, playbook_text=playbook_text, playbook_path=playbook_path)

    def append(self, run_id: str, records: list[Record]) -> None:
        for s in self.stores:
            if not s.exists(run_id):
                # A run started elsewhere: seed this store before it takes new records.
                source = self._first(run_id)
                s.create_run(run_id, playbook_text=source.playbook_text(run_id), playbook_path="")
                s.append(run_id, source.records(run_id))
            s.append(run_id, records)

    def _first(self, run_id: str) -> StateStore:
        for s in self.stores:
            if s.exists(run_id):
                return s
        raise BadInput(f"no run {run_id} in any state store (see: meshops runs list)")

    def records(self, run_id: str) -> list[Record]:
        return self._first(run_id).records(run_id)

    def playbook_text(self, run_id: str) -> str:
        return self._first(run_id).playbook_text(run_id)

    def run_ids(self) -> list[str]:
        return sorted({r for s in self.stores for r in s.run_ids()})

    def exists(self, run_id: str) -> bool:
        return any(s.exists(run_id) for s in self.stores)


class Journal:
    """Appends records for one run: timestamped, redacted, durable."""

    def __init__(self, store: StateStore, run_id: str, *, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.run_id = run_id
        self._wall = wall
        self._lock = threading.Lock()

    def write(self, type_: str, **fields: Any) -> Record:
        record: Record = {"type": type_, "ts": round(self._wall(), 3), **fields}
        record = SECRETS.scrub(record)
        with self._lock:
            self.store.append(self.run_id, [record])
        return record


# ---- replay -------------------------------------------------------------------------------

TERMINAL_STEP = {"succeeded", "skipped", "failed_continued"}


@dataclass(kw_only=True)
class StepState:
    key: str
    status: str = "pending"  # pending|started|succeeded|skipped|failed|failed_continued|undone|undo_failed|undo_skipped
    attempts: int = 0
    outputs: Any = None
    inputs: Any = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    undo_status: str | None = None
    order: int = -1  # position in success order, for rollback


@dataclass(kw_only=True)
class RunState:
    run_id: str
    playbook: str = ""
    playbook_name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "unknown"
    started: float | None = None
    finished: float | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    approvals: dict[str, str] = field(default_factory=dict)
    failed_step: str | None = None
    waiting_gate: str | None = None  # the step key `meshops approve` must name
    message: str = ""
    events: list[Record] = field(default_factory=list)

    @classmethod
    def replay(cls, run_id: str, records: Iterable[Record]) -> RunState:
        state = cls(run_id=run_id)
        order = 0
        for r in records:
            state.events.append(r)
            t = r.get("type")
            key = r.get("step")
            if t == "run_started":
                state.playbook = r.get("playbook", "")
                state.playbook_name = r.get("name", "")
                state.params = r.get("params", {})
                state.started = r["ts"]
                state.status = "running"
            elif t == "run_resumed":
                state.status = "running"
                state.finished = None
                state.waiting_gate = None
            elif t == "run_finished":
                state.status = r["status"]
                state.finished = r["ts"]
                state.message = r.get("message", "")
                state.failed_step = r.get("failed_step", state.failed_step)
                state.waiting_gate = r.get("waiting_gate")
            elif t == "rollback_started":
                state.status = "rolling_back"
            elif t == "approved" and key:
                state.approvals[key] = r.get("by", "")
            elif key is not None:
                s = state.steps.setdefault(key, StepState(key=key))
                if t == "step_started":
                    s.status, s.attempts = "started", r.get("attempt", s.attempts + 1)
                    s.inputs = r.get("inputs", s.inputs)
                    s.started = s.started or r["ts"]
                elif t == "step_succeeded":
                    s.status, s.outputs, s.finished = "succeeded", r.get("outputs"), r["ts"]
                    s.attempts = max(s.attempts, r.get("attempt", 1))
                    s.inputs = r.get("inputs", s.inputs)
                    s.started = s.started or r["ts"]
                    s.order, order = order, order + 1
                elif t == "step_skipped":
                    s.status, s.finished = "skipped", r["ts"]
                elif t == "attempt_failed":
                    s.error = r.get("error")
                elif t == "step_failed":
                    s.status, s.error, s.finished = ("failed_continued" if r.get("continued") else "failed"), r.get("error"), r["ts"]
                    state.failed_step = key
                elif t in ("undone", "undo_failed", "undo_skipped"):
                    s.undo_status = t
        return state

    def done(self, key: str) -> bool:
        s = self.steps.get(key)
        return s is not None and s.status in TERMINAL_STEP

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "playbook": self.playbook_name,
            "status": self.status,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "failed_step": self.failed_step,
            "waiting_gate": self.waiting_gate,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "playbook_path": self.playbook,
            "params": self.params,
            "message": self.message,
            "approvals": self.approvals,
            "steps": [
                {
                    "key": s.key,
                    "status": s.status,
                    "attempts": s.attempts,
                    "started": _iso(s.started),
                    "finished": _iso(s.finished),
                    "duration_s": None if s.started is None or s.finished is None else round(s.finished - s.started, 3),
                    "error": s.error,
                    "undo": s.undo_status,
                    "outputs": s.outputs,
                }
                for s in self.steps.values()
            ],
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
