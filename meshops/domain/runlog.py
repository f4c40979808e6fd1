"""The typed run model: journal records, run and step statuses, and the one replay.

Every reader of a journal (the engine resuming or rolling back, ``meshops runs``, the
reports) rebuilds a run's state with ``RunState.replay`` from ``JournalRecord`` values, so
they cannot disagree about what happened. A record that does not parse (a torn line, a
hand edit, a record from a newer meshops) is skipped with a warning, never taken to mean
"the journal ends here": records after it still count.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class RunStatus(StrEnum):
    UNKNOWN = "unknown"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FROZEN = "frozen"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    INTERRUPTED = "interrupted"
    AWAITING_APPROVAL = "awaiting_approval"
    REFUSED = "refused"
    ABANDONED = "abandoned"


class StepStatus(StrEnum):
    PENDING = "pending"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"
    FAILED_CONTINUED = "failed_continued"


class RecordType(StrEnum):
    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    RUN_FINISHED = "run_finished"
    RUN_ABANDONED = "run_abandoned"
    ROLLBACK_STARTED = "rollback_started"
    APPROVED = "approved"
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_SKIPPED = "step_skipped"
    STEP_FAILED = "step_failed"
    ATTEMPT_FAILED = "attempt_failed"
    FOREACH_STARTED = "foreach_started"
    UNDO_STARTED = "undo_started"
    UNDONE = "undone"
    UNDO_FAILED = "undo_failed"
    UNDO_SKIPPED = "undo_skipped"
    # What a step recorded about the world, before and after acting (``ctx.record_fact``).
    FACT = "fact"
    # The journal file had a torn last line when it was opened; it was cut off.
    JOURNAL_REPAIRED = "journal_repaired"
    # The run lock was lost (renewal failed, or another holder took it).
    LOCK_LOST = "lock_lost"


TERMINAL_STEP = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.FAILED_CONTINUED})
# Records that must name a step.
_STEP_RECORDS = frozenset({
    RecordType.STEP_STARTED, RecordType.STEP_SUCCEEDED, RecordType.STEP_SKIPPED, RecordType.STEP_FAILED,
    RecordType.ATTEMPT_FAILED, RecordType.FOREACH_STARTED, RecordType.UNDO_STARTED, RecordType.UNDONE,
    RecordType.UNDO_FAILED, RecordType.UNDO_SKIPPED, RecordType.APPROVED, RecordType.FACT,
})


_KNOWN = frozenset(t.value for t in RecordType)


class BadRecord(ValueError):
    """A journal line that is not a record meshops understands."""


@dataclass(frozen=True, kw_only=True)
class JournalRecord:
    """One journal record: its type, when, which step (if any), and the rest of its fields."""

    type: RecordType | str
    ts: float
    step: str | None = None
    fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sha: str | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": str(self.type), "ts": self.ts, **self.fields}
        if self.step is not None:
            out["step"] = self.step
        if self.sha is not None:
            out["sha"] = self.sha
        return out

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> JournalRecord:
        if not isinstance(raw, Mapping):
            raise BadRecord(f"a record is a JSON object, not {type(raw).__name__}")
        name = raw.get("type")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
            raise BadRecord(f"not a record type: {name!r}")
        # Records of other journals kept by the same store (a fleet's) pass through; the run
        # replay ignores types it does not know.
        type_: RecordType | str = RecordType(name) if name in _KNOWN else name
        ts = raw.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            raise BadRecord(f"{type_}: ts must be a number, got {ts!r}")
        step = raw.get("step")
        if step is not None and not isinstance(step, str):
            raise BadRecord(f"{type_}: step must be text, got {step!r}")
        if type_ in _STEP_RECORDS and not step:
            raise BadRecord(f"{type_}: names no step")
        if type_ is RecordType.RUN_FINISHED:
            try:
                RunStatus(str(raw.get("status")))
            except ValueError:
                raise BadRecord(f"run_finished: unknown status {raw.get('status')!r}") from None
        digest = raw.get("sha")
        if digest is not None and digest != record_digest(raw):
            raise BadRecord(f"{type_}: does not match its digest (damaged or edited)")
        rest = {k: v for k, v in raw.items() if k not in ("type", "ts", "step", "sha")}
        return cls(type=type_, ts=ts, step=step, fields=MappingProxyType(rest),
                   sha=digest if isinstance(digest, str) else None)

    @classmethod
    def parse_line(cls, line: str) -> JournalRecord:
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadRecord(f"not JSON: {exc.msg}") from None
        return cls.parse(raw)


def record_digest(raw: Mapping[str, Any]) -> str:
    """A digest of a record (without its own ``sha``): a record changed after it was written
    (a torn write, a hand edit of the cluster mirror) no longer matches and is not replayed."""
    body = {k: v for k, v in raw.items() if k != "sha"}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_records(raws: Iterable[Mapping[str, Any] | JournalRecord],
                  skipped: list[str] | None = None) -> list[JournalRecord]:
    """Typed records; ones that do not parse are left out (and described in ``skipped``)."""
    out: list[JournalRecord] = []
    for n, raw in enumerate(raws, 1):
        if isinstance(raw, JournalRecord):
            out.append(raw)
            continue
        try:
            out.append(JournalRecord.parse(raw))
        except BadRecord as exc:
            if skipped is not None:
                skipped.append(f"record {n}: {exc}")
    return out


@dataclass(kw_only=True)
class StepState:
    key: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    outputs: Any = None
    inputs: Any = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    undo_status: str | None = None
    order: int = -1  # position in success order, for rollback
    # Facts the step recorded (``ctx.record_fact``), latest value per name, across attempts.
    facts: dict[str, Any] = field(default_factory=dict)
    # Whether inputs were journaled as rendered and valid (undo renders nothing else).
    inputs_valid: bool = False


@dataclass(kw_only=True)
class RunState:
    run_id: str
    playbook: str = ""
    playbook_name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    hidden_params: list[str] = field(default_factory=list)
    status: RunStatus = RunStatus.UNKNOWN
    started: float | None = None
    finished: float | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    approvals: dict[str, str] = field(default_factory=dict)
    failed_step: str | None = None
    waiting_gate: str | None = None  # the step key `meshops approve` must name
    message: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def replay(cls, run_id: str, records: Iterable[Mapping[str, Any] | JournalRecord]) -> RunState:
        state = cls(run_id=run_id)
        order = 0
        for r in parse_records(records, state.warnings):
            state.events.append(r.to_dict())
            t, key = r.type, r.step
            if t is RecordType.RUN_STARTED:
                state.playbook = str(r.get("playbook", ""))
                state.playbook_name = str(r.get("name", ""))
                state.params = dict(r.get("params") or {})
                state.hidden_params = list(r.get("hidden_params") or [])
                state.started = r.ts
                state.status = RunStatus.RUNNING
            elif t is RecordType.RUN_RESUMED:
                state.status = RunStatus.RUNNING
                state.finished = None
                state.waiting_gate = None
            elif t is RecordType.RUN_FINISHED:
                state.status = RunStatus(str(r.get("status")))
                state.finished = r.ts
                state.message = str(r.get("message", ""))
                state.failed_step = r.get("failed_step", state.failed_step)
                state.waiting_gate = r.get("waiting_gate")
            elif t is RecordType.RUN_ABANDONED:
                state.status = RunStatus.ABANDONED
                state.finished = r.ts
                state.message = f"abandoned by {r.get('by', '?')}: {r.get('reason', '')}"
            elif t is RecordType.ROLLBACK_STARTED:
                state.status = RunStatus.ROLLING_BACK
            elif t is RecordType.APPROVED and key:
                state.approvals[key] = str(r.get("by", ""))
            elif key is not None and isinstance(t, RecordType):
                order = _step_record(state.steps.setdefault(key, StepState(key=key)), r, order)
                if t is RecordType.STEP_FAILED:
                    state.failed_step = key
        return state

    def done(self, key: str) -> bool:
        s = self.steps.get(key)
        return s is not None and s.status in TERMINAL_STEP

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "playbook": self.playbook_name,
            "status": str(self.status),
            "started": iso(self.started),
            "finished": iso(self.finished),
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
                    "status": str(s.status),
                    "attempts": s.attempts,
                    "started": iso(s.started),
                    "finished": iso(s.finished),
                    "duration_s": None if s.started is None or s.finished is None else round(s.finished - s.started, 3),
                    "error": s.error,
                    "undo": s.undo_status,
                    "outputs": s.outputs,
                }
                for s in self.steps.values()
            ],
        }


def _step_record(s: StepState, r: JournalRecord, order: int) -> int:
    t = r.type
    if t is RecordType.STEP_STARTED:
        s.status, s.attempts = StepStatus.STARTED, int(r.get("attempt", s.attempts + 1))
        if r.get("inputs") is not None:
            s.inputs, s.inputs_valid = r.get("inputs"), True
        s.started = s.started or r.ts
    elif t is RecordType.STEP_SUCCEEDED:
        s.status, s.outputs, s.finished = StepStatus.SUCCEEDED, r.get("outputs"), r.ts
        s.attempts = max(s.attempts, int(r.get("attempt", 1)))
        if r.get("inputs") is not None:
            s.inputs, s.inputs_valid = r.get("inputs"), True
        s.started = s.started or r.ts
        s.order, order = order, order + 1
    elif t is RecordType.STEP_SKIPPED:
        s.status, s.finished = StepStatus.SKIPPED, r.ts
    elif t is RecordType.ATTEMPT_FAILED:
        s.error = r.get("error")
    elif t is RecordType.STEP_FAILED:
        s.status = StepStatus.FAILED_CONTINUED if r.get("continued") else StepStatus.FAILED
        s.error, s.finished = r.get("error"), r.ts
    elif t is RecordType.FACT:
        s.facts[str(r.get("name"))] = r.get("value")
    elif t in (RecordType.UNDONE, RecordType.UNDO_FAILED, RecordType.UNDO_SKIPPED):
        s.undo_status = str(t)
    return order


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
