"""A run report, built from the run's journal records and nothing else.

The journal is the only account of a run that survives the process (and the runner: it is
mirrored into the cluster), so a report written from it tells the same story wherever it
is rendered. Some times are not in the journal: steps that touch nothing outside the
process (log, no-op, wait) write no ``step_started`` record, so their start is *inferred*
from the record before them (or, inside a ``foreach``, from when a slot became free). Such
times are flagged ``inferred`` and drawn as such; the report never pretends to know more.

What a step's outputs mean is the step's business. The report looks for a few keys that
the mesh steps use (documented in ``docs/ci/README.md``): ``namespaces``/``namespace``,
``workloads``/``restarted``, ``gates``, ``probes``, ``weights`` and ``weights_before``,
and ``waves`` (a list of per-wave dicts for a step that moves waves itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshops.domain.report_model import (
    SCHEMA,
    Attempt,
    Failure,
    Report,
    Rollback,
    Session,
    StepReport,
    Undo,
    iso,
    split_key,
)
from meshops.domain.report_outputs import traffic_of, waves_of
from meshops.domain.runlog import TERMINAL_STEP, RecordType, RunState, StepStatus, parse_records

__all__ = ["SCHEMA", "Report", "build", "iso", "split_key"]

# ---- building ---------------------------------------------------------------------------


def build(run_id: str, records: Iterable[Mapping[str, Any]], *, step_types: Mapping[str, str] | None = None) -> Report:
    """The report of one run. ``step_types`` (step id -> ``uses``) only labels steps."""
    # Records that do not parse are skipped, as by the engine; so are other journals' types.
    typed = [r for r in parse_records(records) if isinstance(r.type, RecordType)]
    b = _Builder(run_id, dict(step_types or {}))
    for r in typed:
        b.feed(r.to_dict())
    rep = b.finish()
    # The run's and each step's status come from the one replay the engine resumes from; the
    # builder only adds the timeline (sessions, attempts, spans) around them.
    state = RunState.replay(run_id, typed)
    rep.status = str(state.status)
    if state.started is not None:
        rep.finished = state.finished
    for s in rep.steps:
        known = state.steps.get(s.key)
        if known is not None and known.status in TERMINAL_STEP | {StepStatus.FAILED}:
            s.status = str(known.status)
    return rep


class _Builder:
    def __init__(self, run_id: str, step_types: dict[str, str]) -> None:
        self.report = Report(run_id=run_id)
        self.types = step_types
        self.steps: dict[str, StepReport] = {}
        self.last_ts: float | None = None
        # The ts of the latest record that marks where the next top-level step could begin.
        self.boundary: float | None = None
        self.session: Session | None = None
        self.rollback: Rollback | None = None
        # foreach step id -> (ts it started iterating, concurrency, item keys finished since)
        self.foreach_open: dict[str, tuple[float, int]] = {}
        # The step whose attempt failed last: the next step_failed is about it (or its foreach).
        self.last_failed: StepReport | None = None

    def _step(self, key: str) -> StepReport:
        s = self.steps.get(key)
        if s is None:
            base, index = split_key(key)
            parent = self._step(base) if index is not None else None  # the parent first: it sorts first
            s = StepReport(key=key, step_id=base, index=index, uses=self.types.get(base))
            self.steps[key] = s
            if parent is not None:
                parent.items.append(key)
        return s

    def _open_session(self, kind: str, ts: float) -> None:
        if self.session is not None and self.session.finished is None:
            self._settle_foreach_starts()
            self._close_open_attempts(self.session.last_seen, "killed", inferred=True)
        self.session = Session(kind=kind, started=ts, last_seen=ts)
        self.report.sessions.append(self.session)
        self.boundary = ts

    def _close_open_attempts(self, ts: float, outcome: str, *, inferred: bool = False) -> None:
        for s in self.steps.values():
            for a in s.attempts:
                if a.finished is None:
                    a.finished, a.outcome, a.end_inferred = ts, outcome, inferred
                    if s.status in ("started", "pending"):
                        s.status = outcome
            s.spans = [(b, e if e is not None else ts) for b, e in s.spans]
            if s.undo is not None and s.undo.status == "undoing" and s.undo.finished is None:
                s.undo.finished = ts
        self.foreach_open.clear()

    def _attempt(self, s: StepReport, number: int | None, ts: float) -> Attempt:
        """The open attempt ``number`` of ``s``, created (with an inferred start) if it has no start record."""
        n = number if number is not None else (s.attempts[-1].number + 1 if s.attempts else 1)
        for a in s.attempts:
            if a.number == n and a.finished is None:
                return a
        a = Attempt(number=n, started=self._inferred_start(s, ts), start_inferred=True)
        s.attempts.append(a)
        return a

    def _inferred_start(self, s: StepReport, end: float) -> float | None:
        prev = [a.finished for a in s.attempts if a.finished is not None]
        if prev:
            return max(prev)  # a retry starts after the failed attempt (its back-off included)
        if s.index is not None and s.step_id in self.foreach_open:
            return None  # filled in from the slots when the foreach ends
        return min(self.boundary, end) if self.boundary is not None else end

    def feed(self, r: Mapping[str, Any]) -> None:
        t, ts, key = r.get("type"), float(r.get("ts", 0.0)), r.get("step")
        rep = self.report
        self.last_ts = ts
        if t == "run_started":
            rep.playbook, rep.playbook_path = r.get("name", ""), r.get("playbook", "")
            rep.params, rep.hidden_params = dict(r.get("params") or {}), list(r.get("hidden_params") or [])
            rep.started, rep.status = ts, "running"
            self._open_session("run", ts)
        elif t == "run_resumed":
            rep.status, rep.finished = "running", None
            self._open_session("resume", ts)
        elif t == "rollback_started":
            if self.session is None or self.session.finished is not None:
                self._open_session("rollback", ts)
            rep.status = "rolling_back"
            self.rollback = Rollback(cause=str(r.get("cause", "")), started=ts)
            rep.rollbacks.append(self.rollback)
        elif t == "run_finished":
            status = str(r.get("status", "unknown"))
            rep.status, rep.finished, rep.message = status, ts, str(r.get("message", ""))
            rep.failed_step = r.get("failed_step", rep.failed_step)
            outcome = status if status in ("interrupted", "awaiting_approval") else "interrupted"
            self._settle_foreach_starts()
            self._close_open_attempts(ts, outcome)
            if self.session is not None:
                self.session.finished, self.session.status = ts, status
            if self.rollback is not None and self.rollback.finished is None:
                self.rollback.finished, self.rollback.status = ts, status
        elif t == "approved" and key:
            approved = self._step(str(key))
            approved.approved_by, approved.approved_at = str(r.get("by", "")), ts
        elif key is not None:
            self._step_record(str(t), str(key), ts, r)
        if self.session is not None:
            self.session.last_seen = max(self.session.last_seen, ts)

    def _step_record(self, t: str, key: str, ts: float, r: Mapping[str, Any]) -> None:
        s = self._step(key)
        top = s.index is None
        if t == "step_started":
            number = int(r.get("attempt", len(s.attempts) + 1))
            s.attempts.append(Attempt(number=number, started=ts))
            s.status = "started"
            s.inputs = r.get("inputs", s.inputs)
        elif t == "foreach_started":
            self.foreach_open[key] = (ts, int(r.get("concurrency", 1)))
            s.concurrency = int(r.get("concurrency", 1))
            s.spans.append((ts, None))
            s.status = "started"
        elif t == "step_succeeded":
            if key in self.foreach_open or (s.spans and s.spans[-1][1] is None):
                self._end_foreach(s, ts)
            else:
                a = self._attempt(s, r.get("attempt"), ts)
                a.finished, a.outcome = ts, "succeeded"
                if r.get("inputs") is not None:
                    s.inputs = r["inputs"]
            s.status, s.outputs, s.error = "succeeded", r.get("outputs"), None
        elif t == "attempt_failed":
            a = self._attempt(s, r.get("attempt"), ts)
            a.finished, a.error = ts, str(r.get("error", ""))
            a.outcome = "retried" if r.get("temporary") else "failed"
            s.status, s.error = ("retrying" if r.get("temporary") else "failed"), a.error
            self.report.failures.append(Failure(step=key, ts=ts, error=a.error, final=False))
            self.last_failed = s
        elif t == "step_failed":
            s.status = "failed_continued" if r.get("continued") else "failed"
            s.error = str(r.get("error", ""))
            culprit = self.last_failed
            if key in self.foreach_open or (s.spans and s.spans[-1][1] is None):
                self._end_foreach(s, ts)
            elif culprit is not s:
                # Failed before any attempt (its inputs did not render): a zero-length mark.
                s.attempts.append(Attempt(number=len(s.attempts) + 1, started=ts, finished=ts, outcome="failed",
                                          error=s.error))
                culprit = s
            if culprit is not None and (culprit is s or culprit.step_id == s.key):
                # The attempt that ended the step (a foreach item's, for a foreach) failed for good.
                last = culprit.attempts[-1]
                last.outcome, culprit.status = "failed", "failed" if not r.get("continued") else "failed_continued"
                self.report.failures = [f for f in self.report.failures
                                        if not (f.step == culprit.key and f.ts == last.finished)]
                self.report.failures.append(Failure(step=culprit.key, ts=ts, error=s.error, final=True))
            self.last_failed = None
        elif t == "step_skipped":
            s.status, s.skipped_reason = "skipped", str(r.get("reason", ""))
            s.attempts.append(Attempt(number=0, started=ts, finished=ts, outcome="skipped"))
        elif t == "undo_started":
            s.undo = Undo(status="undoing", started=ts)
        elif t in ("undone", "undo_failed", "undo_skipped"):
            u = s.undo if s.undo is not None and s.undo.status == "undoing" else Undo(status=t, started=ts)
            u.status, u.finished = t, ts
            u.error = r.get("error")
            u.reason = r.get("reason")
            s.undo = u
            if self.rollback is not None:
                {"undone": self.rollback.undone, "undo_failed": self.rollback.failed,
                 "undo_skipped": self.rollback.skipped}[t].append(key)
        if top and t in ("step_succeeded", "step_failed", "step_skipped", "foreach_started", "undone",
                         "undo_failed", "undo_skipped"):
            self.boundary = ts

    def _end_foreach(self, s: StepReport, ts: float) -> None:
        self._settle_foreach_starts(only=s.key)
        self.foreach_open.pop(s.key, None)
        if s.spans and s.spans[-1][1] is None:
            s.spans[-1] = (s.spans[-1][0], ts)

    def _settle_foreach_starts(self, only: str | None = None) -> None:
        """Items without a start record began when a slot became free: the foreach's start for the
        first ``concurrency`` items, then each earlier completion, in item order (as the engine
        submits them)."""
        for step_id, (begun, concurrency) in list(self.foreach_open.items()):
            if only is not None and step_id != only:
                continue
            items = [self.steps[k] for k in self.steps[step_id].items]
            this_session = [(i, a) for i in items for a in i.attempts
                            if (a.started is None or a.started >= begun) and (a.finished or begun) >= begun]
            ends = sorted(a.finished for _, a in this_session if a.finished is not None)
            free = [begun] * concurrency + ends
            firsts = sorted({i.index or 0: i for i, _ in this_session}.items())
            for n, (_, item) in enumerate(firsts):
                first = next(a for a in item.attempts if (a.finished or begun) >= begun)
                if first.started is None:
                    first.started = free[n] if n < len(free) else begun
                    if first.finished is not None and first.started > first.finished:
                        first.started = first.finished

    def finish(self) -> Report:
        rep = self.report
        if rep.status in ("running", "rolling_back") and self.session is not None:
            # No run_finished: the process died (or is still running) after its last record.
            self._settle_foreach_starts()
            self._close_open_attempts(self.session.last_seen, "running" if rep.status == "running" else "killed",
                                      inferred=True)
        for step_id, uses in self.types.items():
            if step_id not in self.steps:
                self.steps[step_id] = StepReport(key=step_id, step_id=step_id, uses=uses, status="not_run")
        # Playbook order when the playbook is known, else the order the journal met them.
        rank: dict[str, int] = {}
        for k in [*self.types, *self.steps]:
            rank.setdefault(k, len(rank))
        rep.steps = sorted(self.steps.values(), key=lambda s: (rank[s.step_id], -1 if s.index is None else s.index))
        for s in rep.steps:
            s.items.sort(key=lambda k: split_key(k)[1] or 0)
            if s.uses == "gate.approve" and isinstance(s.outputs, Mapping) and not s.approved_by:
                s.approved_by = str(s.outputs.get("by", "")) or None
        rep.wave_groups = waves_of(rep)
        rep.traffic = traffic_of(rep)
        return rep


