"""The local fleet executor: waves of clusters, each cluster's job its own meshops run.

Each cluster's job runs as a child process (``meshops --context C --state-dir D <job>``)
rather than in this process, because a child is what makes a kill survivable: it has its
own journal, its own Lease on its cluster and its own signal handling, so SIGKILL of the
fleet leaves every cluster run either finished (its journal says how) or resumable by
``meshops resume`` exactly as a single run is. The fleet journal only records which cluster
runs it started (with the child's pid), their run ids and their exit codes; ``resume``
waits for children that outlived the fleet, adopts or resumes runs the journal does not
know the end of, and starts the rest.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from meshops.domain.errors import BadInput
from meshops.engine.journal import Journal, LocalStateStore, RunState, new_run_id
from meshops.engine.lock import FileLock, LockRenewer, holder_identity
from meshops.fleet.model import LoadedFleet, Wave, load_fleet_text
from meshops.fleet.state import EXIT_STATUS, RESUMABLE, FleetState, gate_key

log = structlog.get_logger("meshops.fleet")
FLEETS_DIR = "fleets"
LEASE_GRACE = 45.0  # seconds: a run Lease lasts 30 s unless renewed


@dataclass(kw_only=True)
class FleetOptions:
    meshops: list[str]  # how to run meshops: [sys.executable, "-m", "meshops"]
    kubeconfig: str | None = None
    parallel: int = 0  # cap on every wave's max_parallel (0: the wave's own)
    on_failure: str = "stop"  # stop | rollback-wave
    env: dict[str, str] | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    report: Callable[[str], None] = lambda _msg: None
    on_started: Callable[[str], None] = lambda _fid: None  # told the fleet run id once it exists
    stop: Callable[[], bool] = lambda: False


@dataclass(kw_only=True)
class _Outcome:
    status: str
    run_id: str | None
    run_status: str | None
    exit_code: int


@dataclass(kw_only=True)
class _WaveResult:
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False
    needs_human: bool = False


def store_for(state_dir: str | Path) -> LocalStateStore:
    return LocalStateStore(Path(state_dir) / FLEETS_DIR)


def process_alive(pid: int | None, marker: str) -> bool:
    """A child that outlived a killed fleet: alive, and still that child (its command line names
    ``marker``, its own state dir: pids are recycled, and other meshops processes run too)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ProcessLookupError, PermissionError, FileNotFoundError):
        return False
    except OSError:
        return True
    return marker.encode() in cmdline  # a zombie's is empty


class FleetExecutor:
    def __init__(self, *, state_dir: str | Path, options: FleetOptions) -> None:
        # Absolute: children get paths inside it as their own --state-dir.
        self.store = store_for(Path(state_dir).resolve())
        self.opts = options
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._procs_lock = threading.Lock()
        self._signalled = False

    # ---- entry points -------------------------------------------------------------------

    def start(self, loaded: LoadedFleet) -> FleetState:
        fid = new_run_id(loaded.name, self.opts.clock())
        journal = Journal(self.store, fid, wall=self.opts.clock)
        with self._locked(loaded.name, fid):  # before anything is written: a held lock is exit 4, no run
            self.store.create_run(fid, playbook_text=loaded.source.text, playbook_path=loaded.path)
            self.opts.on_started(fid)
            journal.write("fleet_started", name=loaded.name, path=str(Path(loaded.path).resolve()),
                          options={"parallel": self.opts.parallel, "on_failure": self.opts.on_failure})
            return self._drive(loaded, fid, journal)

    def resume(self, fid: str) -> FleetState:
        loaded, state = self.load(fid)
        if state.status in ("succeeded", "rolled_back"):
            self.opts.report(f"fleet {fid} is {state.status}: nothing to resume")
            return state
        journal = Journal(self.store, fid, wall=self.opts.clock)
        with self._locked(loaded.name, fid):
            journal.write("fleet_resumed")
            return self._drive(loaded, fid, journal)

    def rollback(self, fid: str) -> FleetState:
        """Undo every cluster run the fleet changed, newest first (each by `meshops rollback`)."""
        loaded, state = self.load(fid)
        journal = Journal(self.store, fid, wall=self.opts.clock)
        with self._locked(loaded.name, fid):
            journal.write("fleet_rollback_started")
            changed = [c for c in state.clusters.values()
                       if c.run_id and c.rollback != "rolled_back"
                       and (c.status in ("succeeded", "interrupted", "running") or c.rollback == "started")]
            changed.sort(key=lambda c: c.finished or c.started or 0, reverse=True)
            failed = self._rollback_clusters(loaded, fid, journal, [c.name for c in changed])
            status, code = ("rollback_failed", 3) if failed else ("rolled_back", 0)
            message = f"rollback failed on {', '.join(failed)}" if failed else f"rolled back {len(changed)} cluster(s)"
            journal.write("fleet_finished", status=status, exit_code=code, message=message)
        return self.state(fid)

    def load(self, fid: str) -> tuple[LoadedFleet, FleetState]:
        state = self.state(fid)
        if not state.name:
            raise BadInput(f"{fid} is not a fleet run (see: meshops fleet runs)")
        # The fleet file as it was when the run started; its own path for relative playbook paths.
        loaded = load_fleet_text(self.store.playbook_text(fid), path=state.path or f"{fid}/fleet.yaml")
        return loaded, state

    def state(self, fid: str) -> FleetState:
        return FleetState.replay(fid, self.store.records(fid))

    # ---- the waves ------------------------------------------------------------------------

    def _drive(self, loaded: LoadedFleet, fid: str, journal: Journal) -> FleetState:
        state = self.state(fid)
        for index, wave in enumerate(loaded.waves):
            if all(state.cluster(c).status == "succeeded" for c in wave.clusters):
                if wave.name not in state.waves_finished:
                    journal.write("wave_finished", wave=wave.name)
                continue
            held = self._gate(wave, state, journal, fid)
            if held is not None:
                return held
            if wave.name not in state.waves_started:
                journal.write("wave_started", wave=wave.name, clusters=wave.clusters)
            self.opts.report(f"wave {wave.name}: {', '.join(wave.clusters)}")
            result = self._run_wave(loaded, wave, fid, journal)
            if result.needs_human or result.interrupted or len(result.failures) > wave.spec.max_failures:
                return self._stop_after(loaded, wave, result, fid, journal)
            journal.write("wave_finished", wave=wave.name, failed=result.failures)
            state = self.state(fid)
            if index + 1 < len(loaded.waves) and not self._soak(wave, state):
                journal.write("fleet_finished", status="interrupted", exit_code=130,
                              message=f"stopped while soaking after wave {wave.name}; resume with "
                                      f"`meshops fleet resume {fid}`")
                return self.state(fid)
        state = self.state(fid)
        failed = sorted(n for n, c in state.clusters.items() if c.status != "succeeded")
        if failed:
            journal.write("fleet_finished", status="completed_with_failures", exit_code=1,
                          message=f"within the failure budget, these failed: {', '.join(failed)}; "
                                  f"`meshops fleet resume {fid}` retries them")
        else:
            journal.write("fleet_finished", status="succeeded", exit_code=0,
                          message=f"{len(state.clusters)} cluster(s) done")
        return self.state(fid)

    def _gate(self, wave: Wave, state: FleetState, journal: Journal, fid: str) -> FleetState | None:
        """None when the wave may start; else the paused state (exit 130)."""
        kind = wave.spec.gate
        if kind == "none" or wave.name in state.gates_passed:
            return None
        key = gate_key(wave.name)
        if kind == "approve" and key in state.approvals:
            journal.write("gate_passed", wave=wave.name, by=state.approvals[key])
            return None
        if kind == "pause" and wave.name in state.gates_waiting:
            # The fleet paused here before; a resume is the go-ahead.
            journal.write("gate_passed", wave=wave.name)
            return None
        if wave.name not in state.gates_waiting:
            journal.write("gate_waiting", wave=wave.name, gate=kind)
        how = (f"`meshops approve {fid} {key}`, then `meshops fleet resume {fid}`" if kind == "approve"
               else f"`meshops fleet resume {fid}`")
        status = "awaiting_approval" if kind == "approve" else "paused"
        journal.write("fleet_finished", status=status, exit_code=130, message=f"before wave {wave.name}: continue with {how}")
        return self.state(fid)

    def _soak(self, wave: Wave, state: FleetState) -> bool:
        until = state.waves_finished.get(wave.name, 0) + wave.spec.soak_seconds
        if until > self.opts.clock():
            self.opts.report(f"wave {wave.name}: soaking {until - self.opts.clock():.0f}s")
        while (left := until - self.opts.clock()) > 0:
            if self.opts.stop():
                return False
            self.opts.sleep(min(1.0, left))
        return True

    def _stop_after(self, loaded: LoadedFleet, wave: Wave, result: _WaveResult, fid: str,
                    journal: Journal) -> FleetState:
        if result.needs_human:
            journal.write("fleet_finished", status="rollback_failed", exit_code=3,
                          message=f"wave {wave.name}: a cluster run failed and so did its rollback; "
                                  "a human is needed (see `meshops fleet status`)")
            return self.state(fid)
        if result.interrupted:
            journal.write("fleet_finished", status="interrupted", exit_code=130,
                          message=f"interrupted in wave {wave.name}; resume with `meshops fleet resume {fid}`")
            return self.state(fid)
        message = (f"wave {wave.name}: {len(result.failures)} cluster(s) failed ({', '.join(result.failures)}), "
                   f"over its budget of {wave.spec.max_failures}")
        if all(c.status == "refused" for c in self.state(fid).clusters.values()):
            # Every cluster run so far refused its input before acting: as for one run, exit 2.
            journal.write("fleet_finished", status="refused", exit_code=2, message=f"{message}; nothing changed")
            return self.state(fid)
        if self.opts.on_failure == "rollback-wave":
            state = self.state(fid)
            done = sorted((state.cluster(c) for c in wave.clusters if state.cluster(c).status == "succeeded"),
                          key=lambda c: c.finished or 0, reverse=True)
            failed = self._rollback_clusters(loaded, fid, journal, [c.name for c in done])
            if failed:
                journal.write("fleet_finished", status="rollback_failed", exit_code=3,
                              message=f"{message}; rolling the wave back failed on {', '.join(failed)}")
                return self.state(fid)
            message += f"; the wave's finished clusters were rolled back ({', '.join(c.name for c in done) or 'none'})"
        journal.write("fleet_finished", status="failed", exit_code=1, message=message)
        return self.state(fid)

    def _run_wave(self, loaded: LoadedFleet, wave: Wave, fid: str, journal: Journal) -> _WaveResult:
        state = self.state(fid)
        todo = deque(c for c in wave.clusters if state.cluster(c).status != "succeeded")
        limit = min(wave.spec.max_parallel, self.opts.parallel or wave.spec.max_parallel)
        done: queue.Queue[tuple[str, _Outcome]] = queue.Queue()
        active: dict[str, threading.Thread] = {}
        result, launching = _WaveResult(), True
        while todo or active:
            while launching and todo and len(active) < limit and not self.opts.stop():
                name = todo.popleft()
                prior = state.cluster(name)
                t = threading.Thread(target=lambda n=name, p=prior: done.put((n, self._cluster(loaded, wave, fid, journal, n, p))),
                                     name=f"fleet-{name}", daemon=True)
                active[name] = t
                t.start()
            if not active:
                break
            try:
                name, outcome = done.get(timeout=0.2)
            except queue.Empty:
                if self.opts.stop():
                    launching = False
                    result.interrupted = True
                    self._forward_stop()
                continue
            active.pop(name).join()
            self.opts.report(f"  {name}: {outcome.status}" + (f" ({outcome.run_id})" if outcome.run_id else ""))
            if outcome.status == "succeeded":
                continue
            if outcome.status == "interrupted":
                result.interrupted, launching = True, False
                continue
            result.failures.append(name)
            if outcome.status == "rollback_failed":
                result.needs_human = True
            if result.needs_human or len(result.failures) > wave.spec.max_failures:
                launching = False
        if self.opts.stop():
            result.interrupted = True
        return result

    # ---- one cluster --------------------------------------------------------------------

    def _cluster_dir(self, fid: str, cluster: str) -> Path:
        return self.store.root / "runs" / fid / "clusters" / cluster

    def _argv(self, loaded: LoadedFleet, fid: str, cluster: str, tail: list[str]) -> list[str]:
        return [*self.opts.meshops, *loaded.child_argv(cluster, tail, state_dir=self._cluster_dir(fid, cluster),
                                                       kubeconfig=self.opts.kubeconfig)]

    def _run_ids(self, fid: str, cluster: str) -> list[str]:
        return LocalStateStore(self._cluster_dir(fid, cluster)).run_ids()

    def _cluster(self, loaded: LoadedFleet, wave: Wave, fid: str, journal: Journal, name: str,
                 prior: Any) -> _Outcome:
        # A child that outlived a killed fleet finishes first; its journal then says where it got.
        while process_alive(prior.pid, str(self._cluster_dir(fid, name))) and not self.opts.stop():
            self.opts.sleep(0.5)
        run_id = self._adopt(fid, name, prior)
        if run_id is not None:
            run_status = self._run_status(fid, name, run_id)
            if run_status == "succeeded":
                return self._finish(journal, name, wave, _Outcome(status="succeeded", run_id=run_id,
                                                                  run_status=run_status, exit_code=0))
            if run_status in RESUMABLE:
                return self._resume_own(loaded, wave, fid, journal, name, run_id)
        return self._spawn(loaded, wave, fid, journal, name, loaded.job_argv(name), action="run")

    def _resume_own(self, loaded: LoadedFleet, wave: Wave, fid: str, journal: Journal, name: str,
                    run_id: str) -> _Outcome:
        """Resume a run this fleet started. Its Lease may still name the killed child on another
        host (judged by the lease alone): wait out one lease duration before calling it locked."""
        deadline = self.opts.clock() + LEASE_GRACE
        while True:
            outcome = self._spawn(loaded, wave, fid, journal, name, ["resume", run_id], action="resume", run_id=run_id)
            if outcome.status != "locked" or self.opts.clock() > deadline or self.opts.stop():
                return outcome
            self.opts.sleep(2.0)

    def _adopt(self, fid: str, name: str, prior: Any) -> str | None:
        """The run the last attempt made, if the fleet never learnt how it ended."""
        if prior.status != "running":
            return str(prior.run_id) if prior.status == "interrupted" and prior.run_id else None
        if prior.run_id:
            return str(prior.run_id)
        new = [r for r in self._run_ids(fid, name) if r not in prior.known_runs]
        return new[-1] if new else None

    def _run_status(self, fid: str, name: str, run_id: str) -> str:
        store = LocalStateStore(self._cluster_dir(fid, name))
        try:
            return RunState.replay(run_id, store.records(run_id)).status
        except BadInput:
            return "unknown"

    def _spawn(self, loaded: LoadedFleet, wave: Wave, fid: str, journal: Journal, name: str, tail: list[str], *,
               action: str, run_id: str | None = None) -> _Outcome:
        known = self._run_ids(fid, name)
        argv = self._argv(loaded, fid, name, tail)
        logs = self.store.root / "runs" / fid / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        attempt = len(list(logs.glob(f"{name}.*.log"))) + 1
        with open(logs / f"{name}.{attempt}.log", "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=self.opts.env)
            with self._procs_lock:
                self._procs[name] = proc
                if self._signalled:
                    proc.send_signal(signal.SIGTERM)
            journal.write("cluster_started", cluster=name, wave=wave.name, action=action, run_id=run_id,
                          pid=proc.pid, known_runs=known)
            log.info("fleet.cluster_started", cluster=name, action=action, pid=proc.pid)
            code = proc.wait()
        with self._procs_lock:
            self._procs.pop(name, None)
        if run_id is None:
            new = [r for r in self._run_ids(fid, name) if r not in known]
            run_id = new[-1] if new else None
        run_status = self._run_status(fid, name, run_id) if run_id else None
        status = EXIT_STATUS.get(code, "failed" if code > 0 else "interrupted")
        return self._finish(journal, name, wave, _Outcome(status=status, run_id=run_id, run_status=run_status,
                                                          exit_code=code))

    def _finish(self, journal: Journal, name: str, wave: Wave, outcome: _Outcome) -> _Outcome:
        journal.write("cluster_finished", cluster=name, wave=wave.name, status=outcome.status, run_id=outcome.run_id,
                      run_status=outcome.run_status, exit_code=outcome.exit_code)
        log.info("fleet.cluster_finished", cluster=name, status=outcome.status, run_id=outcome.run_id)
        return outcome

    def _forward_stop(self) -> None:
        # Each child stops at its own safe point (exit 130) and stays resumable.
        with self._procs_lock:
            if self._signalled:
                return
            self._signalled = True
            for proc in self._procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def _rollback_clusters(self, loaded: LoadedFleet, fid: str, journal: Journal, names: list[str]) -> list[str]:
        state, failed = self.state(fid), []
        for name in names:
            run_id = state.cluster(name).run_id
            if not run_id:
                continue
            self.opts.report(f"  {name}: rolling back {run_id}")
            journal.write("cluster_rollback_started", cluster=name, run_id=run_id)
            argv = self._argv(loaded, fid, name, ["rollback", run_id])
            logs = self.store.root / "runs" / fid / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / f"{name}.rollback.log", "ab") as out:
                code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      env=self.opts.env, check=False).returncode
            journal.write("cluster_rollback_finished", cluster=name, run_id=run_id, exit_code=code)
            self.opts.report(f"  {name}: {'rolled back' if code == 0 else f'rollback failed (exit {code})'}")
            if code != 0:
                failed.append(name)
        return failed

    # ---- the fleet's own lock -----------------------------------------------------------

    def _locked(self, name: str, fid: str) -> _Held:
        return _Held(FileLock(self.store.root / "locks" / f"{name}.lock"), holder_identity(fid))


class _Held:
    """One fleet run (run, resume or rollback) of a fleet at a time: the engine's FileLock, renewed."""

    def __init__(self, lock: FileLock, holder: str) -> None:
        self.lock, self.holder = lock, holder
        self.renewer = LockRenewer(lock, on_error=lambda exc: log.warning("fleet.lock_renew_failed", error=str(exc)))

    def __enter__(self) -> None:
        self.lock.acquire(self.holder)
        self.renewer.start()

    def __exit__(self, *exc: object) -> None:
        self.renewer.stop()
        self.lock.release()


def approve(state_dir: str | Path, fid: str, step: str, by: str) -> str:
    """Record approval of a fleet's gate (``wave/NAME`` or ``NAME``), as ``meshops approve`` does for runs."""
    store = store_for(state_dir)
    state = FleetState.replay(fid, store.records(fid))
    loaded = load_fleet_text(store.playbook_text(fid), path=state.path or f"{fid}/fleet.yaml")
    gates = [gate_key(w.name) for w in loaded.waves if w.spec.gate == "approve"]
    key = step if step.startswith("wave/") else gate_key(step)
    if key not in gates:
        raise BadInput(f"fleet run {fid} has no approval gate {step!r}" + (f" (gates: {', '.join(gates)})" if gates else ""))
    if key in state.approvals:
        return f"{fid} {key}: already approved by {state.approvals[key]}"
    Journal(store, fid).write("approved", step=key, by=by)
    return f"{fid} {key}: approved"


def is_fleet_run(state_dir: str | Path, fid: str) -> bool:
    try:
        return store_for(state_dir).exists(fid)
    except BadInput:
        return False
