"""The run report's values: steps, attempts, sessions, waves, traffic, rollbacks, failures.

Built by ``meshops.domain.report.build`` from a run's journal; rendered by ``meshops report``.
``Report.to_dict`` is the JSON form, versioned by ``SCHEMA``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA = "meshops.dev/report/v1"


@dataclass(kw_only=True)
class Attempt:
    number: int
    started: float | None
    finished: float | None = None
    # succeeded | failed | retried | skipped | interrupted | awaiting_approval | killed | running
    outcome: str = "running"
    error: str | None = None
    start_inferred: bool = False
    end_inferred: bool = False


@dataclass(kw_only=True)
class Undo:
    status: str  # undone | undo_failed | undo_skipped | undoing
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(kw_only=True)
class StepReport:
    key: str
    step_id: str
    index: int | None = None
    uses: str | None = None
    status: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    skipped_reason: str | None = None
    inputs: Any = None
    outputs: Any = None
    undo: Undo | None = None
    approved_by: str | None = None
    approved_at: float | None = None
    # A foreach step: its items' keys, and each time it (re)started iterating.
    items: list[str] = field(default_factory=list)
    concurrency: int | None = None
    spans: list[tuple[float, float | None]] = field(default_factory=list)

    @property
    def started(self) -> float | None:
        starts = [a.started for a in self.attempts if a.started is not None] + [s for s, _ in self.spans]
        return min(starts) if starts else None

    @property
    def finished(self) -> float | None:
        ends = [a.finished for a in self.attempts if a.finished is not None] + [e for _, e in self.spans if e]
        return max(ends) if ends else None

    @property
    def busy_s(self) -> float | None:
        """Time spent in attempts (retry back-off included, gaps between sessions not)."""
        spans = [(a.started, a.finished) for a in self.attempts if a.started is not None and a.finished is not None]
        spans += [(s, e) for s, e in self.spans if e is not None]
        return round(sum(e - s for s, e in spans), 3) if spans else None


@dataclass(kw_only=True)
class Session:
    kind: str  # run | resume | rollback
    started: float
    finished: float | None = None
    status: str | None = None  # None: the process died (no run_finished record)
    last_seen: float = 0.0


@dataclass(kw_only=True)
class Gate:
    name: str
    ok: bool | None  # None: the step did not say
    detail: str = ""
    # Failed some evaluations without tripping (fewer in a row than the failure threshold).
    warned: bool = False


@dataclass(kw_only=True)
class Wave:
    key: str
    label: str
    status: str
    started: float | None
    finished: float | None
    namespaces: list[str] = field(default_factory=list)
    workloads: list[str] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)


@dataclass(kw_only=True)
class WaveGroup:
    step_id: str
    concurrency: int | None
    waves: list[Wave] = field(default_factory=list)


@dataclass(kw_only=True)
class Probe:
    ts: float
    target: str
    ok: bool
    detail: str = ""


@dataclass(kw_only=True)
class WeightPoint:
    ts: float
    weights: dict[str, int]
    step: str
    rollback: bool = False
    # The weights a step was setting when it failed: whether its batch went out is not journaled.
    attempted: bool = False


@dataclass(kw_only=True)
class Bake:
    """A hold after a traffic shift, while probes and gates were evaluated."""

    step: str
    started: float
    ended: float
    evaluations: int | None
    gates: list[Gate] = field(default_factory=list)
    tripped: str | None = None


@dataclass(kw_only=True)
class RequestSample:
    """Requests one cluster served in one second, as a load generator counted them (``--traffic``)."""

    ts: float
    cluster: str
    ok: int
    failed: int


@dataclass(kw_only=True)
class Traffic:
    points: list[WeightPoint] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    bakes: list[Bake] = field(default_factory=list)
    requests: list[RequestSample] = field(default_factory=list)

    def requests_between(self, start: float, end: float) -> dict[str, tuple[int, int]]:
        """cluster -> (ok, failed) of the samples in [start, end)."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.requests:
            if start <= r.ts < end:
                ok, failed = out.get(r.cluster, (0, 0))
                out[r.cluster] = (ok + r.ok, failed + r.failed)
        return out

    def request_segments(self, end: float) -> list[dict[str, object]]:
        """Requests per cluster while each set of weights held (from one weight point to the next)."""
        if not self.requests or not self.points:
            return []
        out: list[dict[str, object]] = []
        for i, p in enumerate(self.points):
            until = self.points[i + 1].ts if i + 1 < len(self.points) else max(end, p.ts)
            counts = self.requests_between(p.ts, until)
            out.append({"step": p.step, "from": p.ts, "until": until, "weights": dict(p.weights),
                        "requests": {c: {"ok": v[0], "failed": v[1]} for c, v in sorted(counts.items())}})
        return out

    @property
    def identifiers(self) -> list[str]:
        return sorted({k for p in self.points for k in p.weights})


@dataclass(kw_only=True)
class Rollback:
    cause: str
    started: float
    finished: float | None = None
    status: str | None = None
    undone: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Failure:
    step: str
    ts: float
    error: str
    final: bool  # False: an attempt that a retry got past


@dataclass(kw_only=True)
class Report:
    run_id: str
    playbook: str = ""
    playbook_path: str = ""
    status: str = "unknown"
    message: str = ""
    failed_step: str | None = None
    started: float | None = None
    finished: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    hidden_params: list[str] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    steps: list[StepReport] = field(default_factory=list)
    wave_groups: list[WaveGroup] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    rollbacks: list[Rollback] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def last_ts(self) -> float | None:
        return max((s.finished or s.last_seen for s in self.sessions), default=self.finished)

    @property
    def duration_s(self) -> float | None:
        end = self.finished or self.last_ts
        return None if self.started is None or end is None else round(end - self.started, 3)

    @property
    def active_s(self) -> float:
        """Wall time the run's processes were at work (the sum of sessions)."""
        return round(sum((s.finished or s.last_seen) - s.started for s in self.sessions), 3)

    def step(self, key: str) -> StepReport:
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)

    def top_level(self) -> list[StepReport]:
        return [s for s in self.steps if s.index is None]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``meshops report -o json``): times as ISO 8601 UTC, plus ``*_ts`` epochs."""
        steps = []
        for s in self.steps:
            d = {k: v for k, v in asdict(s).items() if k not in ("spans",)}
            d.update(started=iso(s.started), finished=iso(s.finished), busy_s=s.busy_s,
                     spans=[[a, b] for a, b in s.spans])
            steps.append(d)
        return {
            "schema": SCHEMA,
            "run_id": self.run_id, "playbook": self.playbook, "playbook_path": self.playbook_path,
            "status": self.status, "message": self.message, "failed_step": self.failed_step,
            "started": iso(self.started), "finished": iso(self.finished),
            "started_ts": self.started, "finished_ts": self.finished,
            "duration_s": self.duration_s, "active_s": self.active_s,
            "params": self.params, "hidden_params": self.hidden_params,
            "sessions": [asdict(s) for s in self.sessions],
            "steps": steps,
            "waves": [asdict(g) for g in self.wave_groups],
            "traffic": {"identifiers": self.traffic.identifiers, "points": [asdict(p) for p in self.traffic.points],
                        "probes": [asdict(p) for p in self.traffic.probes],
                        "bakes": [asdict(b) for b in self.traffic.bakes],
                        "requests": [asdict(r) for r in self.traffic.requests],
                        "request_segments": self.traffic.request_segments(
                            max([r.ts + 1 for r in self.traffic.requests], default=0.0))},
            "rollbacks": [asdict(r) for r in self.rollbacks],
            "failures": [asdict(f) for f in self.failures],
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def split_key(key: str) -> tuple[str, int | None]:
    """``per-wave[3]`` -> (``per-wave``, 3); ``soak`` -> (``soak``, None)."""
    if key.endswith("]") and "[" in key:
        base, _, idx = key[:-1].partition("[")
        if idx.isdigit():
            return base, int(idx)
    return key, None


