"""A fleet run's state, replayed from its journal (never stored anywhere else).

Records (each appended and fsynced through ``meshops.engine.journal.Journal``):
``fleet_started``/``fleet_resumed``/``fleet_finished``; ``gate_waiting``/``gate_passed`` and
``approved`` (written by ``meshops approve``); ``wave_started``/``wave_finished``;
``cluster_started`` (with the child's pid) / ``cluster_finished`` (run id, status, exit code);
``cluster_rollback_started``/``cluster_rollback_finished``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshops.engine.journal import Record

# Outcomes of one cluster's run, from its exit code (the contract every meshops command keeps).
EXIT_STATUS = {0: "succeeded", 1: "failed", 2: "refused", 3: "rollback_failed", 4: "locked", 130: "interrupted"}
# A cluster run in one of these states is continued with `meshops resume`, not started again.
RESUMABLE = {"running", "interrupted", "awaiting_approval", "frozen", "rolling_back"}


def gate_key(wave: str) -> str:
    return f"wave/{wave}"


@dataclass(kw_only=True)
class ClusterState:
    name: str
    wave: str = ""
    status: str = "pending"  # pending|running|succeeded|failed|refused|rollback_failed|locked|interrupted|rolled_back
    run_id: str | None = None
    run_status: str | None = None
    exit_code: int | None = None
    attempts: int = 0
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    known_runs: list[str] = field(default_factory=list)  # run ids seen in this cluster's state dir
    rollback: str | None = None  # None | started | rolled_back | failed


@dataclass(kw_only=True)
class FleetState:
    run_id: str
    name: str = ""
    path: str = ""
    status: str = "unknown"
    exit_code: int | None = None
    message: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    clusters: dict[str, ClusterState] = field(default_factory=dict)
    waves_started: set[str] = field(default_factory=set)
    waves_finished: dict[str, float] = field(default_factory=dict)  # wave -> when it finished
    gates_waiting: set[str] = field(default_factory=set)
    gates_passed: set[str] = field(default_factory=set)
    approvals: dict[str, str] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None

    def cluster(self, name: str) -> ClusterState:
        return self.clusters.setdefault(name, ClusterState(name=name))

    @classmethod
    def replay(cls, run_id: str, records: Iterable[Record]) -> FleetState:
        s = cls(run_id=run_id)
        for r in records:
            t = r.get("type")
            if t == "fleet_started":
                s.name, s.path, s.options = r.get("name", ""), r.get("path", ""), r.get("options", {})
                s.status, s.started = "running", r["ts"]
            elif t == "fleet_resumed":
                s.status, s.finished, s.exit_code, s.message = "running", None, None, ""
            elif t == "fleet_finished":
                s.status, s.exit_code, s.message, s.finished = r["status"], r.get("exit_code"), r.get("message", ""), r["ts"]
            elif t == "gate_waiting":
                s.gates_waiting.add(r["wave"])
            elif t == "gate_passed":
                s.gates_passed.add(r["wave"])
            elif t == "approved":
                s.approvals[str(r.get("step"))] = r.get("by", "")
            elif t == "wave_started":
                s.waves_started.add(r["wave"])
            elif t == "wave_finished":
                s.waves_finished[r["wave"]] = r["ts"]
            elif t == "cluster_started":
                c = s.cluster(r["cluster"])
                c.wave, c.status, c.pid, c.started = r.get("wave", c.wave), "running", r.get("pid"), r["ts"]
                c.attempts += 1
                c.exit_code, c.finished, c.rollback = None, None, None
                c.run_id = r.get("run_id") or (c.run_id if r.get("action") == "resume" else None)
                c.known_runs = list(r.get("known_runs", c.known_runs))
            elif t == "cluster_finished":
                c = s.cluster(r["cluster"])
                c.status, c.run_id, c.run_status = r["status"], r.get("run_id"), r.get("run_status")
                c.exit_code, c.finished, c.pid = r.get("exit_code"), r["ts"], None
                if c.run_id and c.run_id not in c.known_runs:
                    c.known_runs.append(c.run_id)
            elif t == "cluster_rollback_started":
                s.cluster(r["cluster"]).rollback = "started"
            elif t == "cluster_rollback_finished":
                c = s.cluster(r["cluster"])
                c.rollback = "rolled_back" if r.get("exit_code") == 0 else "failed"
                if c.rollback == "rolled_back":
                    c.status = "rolled_back"
        return s

    def summary(self) -> dict[str, Any]:
        return {
            "fleet_run_id": self.run_id, "fleet": self.name, "status": self.status, "exit_code": self.exit_code,
            "message": self.message,
            "clusters": {n: {"wave": c.wave, "status": c.status, "run_id": c.run_id, "run_status": c.run_status,
                             "exit_code": c.exit_code, "attempts": c.attempts, "rollback": c.rollback}
                         for n, c in self.clusters.items()},
        }
