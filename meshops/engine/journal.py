"""The run journal: an append-only record of everything a run did, durable before the next action.

A run's state is never stored anywhere else: ``RunState.replay`` rebuilds it from the
records, so the journal cannot disagree with itself. Stores are pluggable
(``StateStore``): a local directory, the target cluster, or both (mirrored).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from meshops.domain.errors import BadInput, MeshopsError, StepError
from meshops.domain.redact import CREDENTIALS, SecretRegistry
from meshops.domain.runlog import TERMINAL_STEP, BadRecord, JournalRecord, RunState, StepState, record_digest

log = structlog.get_logger("meshops.journal")

Record = dict[str, Any]


class StateStore(Protocol):
    """Where journals live. ``append`` returns only once the record is durable."""

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str,
                   first: Sequence[Record] = ()) -> None: ...
    def discard_run(self, run_id: str) -> None: ...
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

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str,
                   first: Sequence[Record] = ()) -> None:
        """Create the run whole: its playbook and first records appear together or not at all.

        Built in a hidden directory and renamed into place, so a kill at any moment leaves
        either no run or one whose journal already says how it started (never a run
        directory that ``rollback`` cannot read).
        """
        d = self._dir(run_id)
        runs = d.parent
        runs_existed = runs.exists()
        runs.mkdir(parents=True, exist_ok=True)
        if d.exists():
            raise FileExistsError(f"run {run_id} already exists in {self.root}")
        tmp = runs / f".new-{run_id}"
        shutil.rmtree(tmp, ignore_errors=True)  # a creation killed half-way: never a run
        tmp.mkdir()
        _write_synced(tmp / "playbook.yaml", playbook_text.encode())
        if first:
            _write_synced(tmp / "journal.jsonl", _lines(first))
        _fsync_dir(tmp)
        tmp.rename(d)
        _fsync_dir(runs)
        if not runs_existed:
            _fsync_dir(runs.parent)  # `runs/` itself is a new entry of the state directory

    def discard_run(self, run_id: str) -> None:
        """Remove a run that never held its lock (refused with exit 4): it did nothing."""
        with self._lock:
            fd = self._fds.pop(run_id, None)
            if fd is not None:
                os.close(fd)
        shutil.rmtree(self._dir(run_id), ignore_errors=True)
        _fsync_dir(self._dir(run_id).parent)

    def temp_dir(self, run_id: str) -> Path:
        """The run's private temp directory (0700), for files handed to subprocesses."""
        d = self._dir(run_id) / "tmp"
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def _fd(self, run_id: str) -> tuple[int, list[Record]]:
        """The append descriptor of a run's journal, and records to write first (a repair note)."""
        fd = self._fds.get(run_id)
        if fd is not None:
            return fd, []
        path = self._dir(run_id) / "journal.jsonl"
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        if created:
            _fsync_dir(path.parent)  # the new file's directory entry must survive a crash too
        notes = _trim_torn_tail(fd, path)
        self._fds[run_id] = fd
        return fd, notes

    def append(self, run_id: str, records: list[Record]) -> None:
        # One write per batch with O_APPEND keeps lines whole even when `meshops approve`
        # appends from another process at the same moment.
        with self._lock:
            fd, notes = self._fd(run_id)
            _write_all(fd, _lines([*notes, *records]))
            os.fdatasync(fd)

    def records(self, run_id: str) -> list[Record]:
        path = self._dir(run_id) / "journal.jsonl"
        if not path.exists():
            if not self._dir(run_id).exists():
                raise BadInput(f"no run {run_id} in {self.root} (see: meshops runs list)")
            return []
        out = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(JournalRecord.parse_line(line).to_dict())
                except BadRecord as exc:
                    # A torn line (a crash mid-write) or a damaged one: the records after it
                    # are whole and still count, so skip it rather than stop reading here.
                    log.warning("journal.bad_line", run_id=run_id, line=n, error=str(exc))
        return out

    def playbook_text(self, run_id: str) -> str:
        try:
            return (self._dir(run_id) / "playbook.yaml").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInput(f"no run {run_id} in {self.root} (see: meshops runs list)") from None

    def run_ids(self) -> list[str]:
        runs = self.root / "runs"
        # Hidden directories are runs still being created (or whose creation was killed).
        return sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.exists() else []

    def exists(self, run_id: str) -> bool:
        return (self._dir(run_id) / "playbook.yaml").exists()

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _lines(records: Sequence[Record]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records).encode()


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` may write less than asked (a full disk, a signal): write the rest, or fail loudly."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"journal write made no progress ({len(view)} bytes left)")
        view = view[written:]


def _trim_torn_tail(fd: int, path: Path) -> list[Record]:
    """Cut a last line that has no newline (a crash mid-write) and say so in the journal.

    Left in place, the next append would be glued onto it and both would be unreadable.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return []
    keep, end = 0, size
    while end > 0:
        start = max(0, end - 4096)
        nl = os.pread(fd, end - start, start).rfind(b"\n")
        if nl >= 0:
            keep = start + nl + 1
            break
        end = start
    torn = os.pread(fd, min(size - keep, 200), keep)
    os.ftruncate(fd, keep)
    os.fsync(fd)
    log.warning("journal.torn_tail_trimmed", path=str(path), bytes=size - keep)
    return [{"type": "journal_repaired", "ts": round(time.time(), 3), "trimmed_bytes": size - keep,
             "trimmed_start": torn.decode(errors="replace")[:80]}]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MirrorFailed(StepError):
    """The local journal has the record, the cluster mirror does not (yet): a step failure."""

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=False)


class MirroredStateStore:
    """Writes to every store (local first); reads from the first that knows the run.

    With the cluster as a mirror, a CI job on another runner can resume, approve or roll
    back a run it did not start. The first store is the truth: a record that reached it
    but not a mirror is kept pending and sent with the next append, and on first contact
    with a run in this process the mirror is brought level with it (a resume re-syncs).
    """

    def __init__(self, *stores: StateStore) -> None:
        self.stores = stores
        self._synced: set[tuple[int, str]] = set()
        self._mu = threading.Lock()

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str,
                   first: Sequence[Record] = ()) -> None:
        # Born in the first store only: no cluster write before the run holds its lock. The
        # mirrors are created and brought level with the next append (or ``sync``).
        self.stores[0].create_run(run_id, playbook_text=playbook_text, playbook_path=playbook_path, first=first)
        self._synced.add((0, run_id))

    def discard_run(self, run_id: str) -> None:
        self.stores[0].discard_run(run_id)

    def append(self, run_id: str, records: list[Record]) -> None:
        first, *mirrors = self.stores
        with self._mu:
            if not first.exists(run_id):
                # A run started elsewhere: seed the local store before it takes new records.
                source = self._first(run_id)
                first.create_run(run_id, playbook_text=source.playbook_text(run_id), playbook_path="")
                first.append(run_id, source.records(run_id))
            first.append(run_id, records)
            failures = []
            for i, s in enumerate(mirrors, 1):
                try:
                    self._mirror(i, s, first, run_id, records)
                except (MeshopsError, OSError) as exc:
                    self._synced.discard((i, run_id))  # re-sync from the truth next time
                    failures.append(str(exc))
            if failures:
                raise MirrorFailed(f"journal mirror of run {run_id} is behind: {'; '.join(failures)}")

    def sync(self, run_id: str) -> bool:
        """Bring every mirror level with the first store (on resume, rollback, abandon). True if level."""
        first, *mirrors = self.stores
        if not first.exists(run_id):
            return True
        level = True
        with self._mu:
            for i, s in enumerate(mirrors, 1):
                self._synced.discard((i, run_id))
                try:
                    self._mirror(i, s, first, run_id, [])
                except (MeshopsError, OSError) as exc:
                    log.warning("journal.mirror_behind", run_id=run_id, error=str(exc))
                    level = False
        return level

    def _mirror(self, i: int, s: StateStore, truth: StateStore, run_id: str, records: list[Record]) -> None:
        if (i, run_id) in self._synced:
            s.append(run_id, records)
            return
        if not s.exists(run_id):
            s.create_run(run_id, playbook_text=truth.playbook_text(run_id), playbook_path="")
        have = len(s.records(run_id))
        missing = truth.records(run_id)[have:]
        if missing:
            s.append(run_id, missing)
        self._synced.add((i, run_id))

    def temp_dir(self, run_id: str) -> Path | None:
        first = self.stores[0]
        return first.temp_dir(run_id) if isinstance(first, LocalStateStore) and first.exists(run_id) else None

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


# Fields the engine reads back to replay a run: never scrubbed (they hold no param values).
_STRUCTURAL = frozenset({"type", "ts", "step", "attempt", "status", "temporary", "continued", "items",
                         "concurrency", "hidden_params"})


class Journal:
    """Appends records for one run: typed, timestamped, redacted with the run's secrets, durable."""

    def __init__(self, store: StateStore, run_id: str, *, wall: Callable[[], float] = time.time,
                 secrets: SecretRegistry | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self._wall = wall
        self._lock = threading.Lock()
        self.secrets = secrets or SecretRegistry(parent=CREDENTIALS)
        self.strict = True  # a mirror failure raises (once); then records go on locally

    def record(self, type_: str, **fields: Any) -> Record:
        """A record as ``write`` would append it (redacted, digested, checked), not yet written."""
        record: Record = {"type": type_, "ts": round(self._wall(), 3), **fields}
        record = self.secrets.scrub(record, keep=_STRUCTURAL)
        record["sha"] = record_digest(record)
        JournalRecord.parse(record)  # a record the replay could not read is a bug here, not later
        return record

    def write(self, type_: str, **fields: Any) -> Record:
        record = self.record(type_, **fields)
        with self._lock:
            try:
                self.store.append(self.run_id, [record])
            except MirrorFailed as exc:
                # Durable locally. Going forward that is a step failure (the engine rolls back or
                # freezes); while rolling back or reporting, the local journal is enough.
                if self.strict:
                    self.strict = False
                    raise
                log.warning("journal.mirror_behind", run_id=self.run_id, error=exc.message)
        return record


# ---- replay: one model, in meshops.domain.runlog, shared with the CLI and the reports ---

__all__ = [
    "TERMINAL_STEP",
    "Journal",
    "LocalStateStore",
    "MirrorFailed",
    "MirroredStateStore",
    "RunState",
    "StateStore",
    "StepState",
    "new_run_id",
]
