"""Fencing: a run that lost its lock stops before its next write; a paused run keeps its lock."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.errors import AwaitingApproval, LockHeld, RunFailed
from meshops.domain.locks import Holder, holder_identity, holder_is_dead
from meshops.engine.journal import LocalStateStore, RunState
from meshops.engine.lock import FileLock
from meshops.engine.playbook import load_playbook_text, resolve_params
from meshops.engine.runner import Engine, EngineOptions
from tests.unit.test_engine import playbook


def _writes(tmp: Path, dwell: float) -> str:
    return playbook(f"""
        - id: a
          uses: test.write_file
          with: {{path: "{tmp}/a"}}
        - id: b
          uses: test.write_file
          with: {{path: "{tmp}/b", pause_before: {dwell}}}
    """)


def _engine(tmp: Path, lock: Any) -> Engine:
    return Engine(store=LocalStateStore(tmp / "state"), lock=lock, options=EngineOptions())


def _run(engine: Engine, text: str) -> Any:
    loaded = load_playbook_text(text, path="t.yaml")
    return engine.start(loaded, resolve_params(loaded.playbook, {}))


def _records(tmp: Path) -> list[dict[str, Any]]:
    store = LocalStateStore(tmp / "state")
    return store.records(store.run_ids()[-1])


@pytest.mark.parametrize("duration", [1.5, 30.0])
def test_a_stolen_lock_stops_the_run_before_its_next_write(tmp_path: Path, duration: float) -> None:
    """Another holder takes the lock mid-run: the run stops (exit 1, frozen, says why); b is never written.
    Before: renew() returned quietly and the run went on writing and succeeded. With a 30 s lease
    (renewed every 10 s) the fence's own look at the lock notices within a second."""
    lock_path = tmp_path / "l"
    lock = FileLock(lock_path, duration=duration)

    def steal() -> None:
        while not (tmp_path / "a").exists():
            time.sleep(0.01)
        lock_path.write_text(json.dumps({"holder": "thief@elsewhere/1", "acquired": time.time(),
                                         "renewed": time.time() + 3600, "duration": 3600}))

    thief = threading.Thread(target=steal)
    thief.start()
    with pytest.raises(RunFailed, match="lost its lock"):
        _run(_engine(tmp_path, lock), _writes(tmp_path, 1.5))
    thief.join()
    assert not (tmp_path / "b").exists()
    records = _records(tmp_path)
    lost = [r for r in records if r["type"] == "lock_lost"]
    assert lost and lost[0]["regained"] is False and "thief" in lost[0]["reason"]
    assert records[-1]["type"] == "run_finished" and records[-1]["status"] == "frozen"
    assert json.loads(lock_path.read_text())["holder"] == "thief@elsewhere/1"  # not released from under the thief


class FailingRenewals(FileLock):
    def renew(self) -> None:
        raise OSError("API server unreachable")


def test_failing_renewals_stop_the_run_and_it_rolls_back_once_it_has_the_lock_again(tmp_path: Path) -> None:
    """Renewals fail for longer than the lease allows: stop at the next safe point, retake the
    (still free) lock, and roll back as the playbook says. Before: the run went on."""
    lock = FailingRenewals(tmp_path / "l", duration=1.5)
    with pytest.raises(RunFailed, match="rolled back"):
        _run(_engine(tmp_path, lock), _writes(tmp_path, 1.6))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    records = _records(tmp_path)
    assert any(r["type"] == "lock_lost" and r["regained"] for r in records)
    assert records[-1]["status"] == "rolled_back"


GATED = playbook("""
    - id: approve
      uses: gate.approve
      with: {message: "ship it?", timeout: 1h}
    - id: after
      uses: test.echo
""")


def test_a_paused_run_keeps_its_lock_until_resumed_or_abandoned(tmp_path: Path) -> None:
    """Exit 130 keeps the lock marked paused; another run exits 4 naming the paused run;
    `runs abandon` (journaled, with a reason) releases it. Before: the lock was released."""
    lock = FileLock(tmp_path / "l", duration=30)
    with pytest.raises(AwaitingApproval):
        _run(_engine(tmp_path, lock), GATED)
    paused = LocalStateStore(tmp_path / "state").run_ids()[-1]
    assert json.loads((tmp_path / "l").read_text())["paused_run"] == paused
    with pytest.raises(LockHeld, match=f"run {paused}, paused.*meshops runs abandon {paused}"):
        _run(_engine(tmp_path, FileLock(tmp_path / "l", duration=30)), playbook("- {id: x, uses: test.echo}\n"))
    # The paused run itself may come back (a resume from another process takes it).
    with pytest.raises(AwaitingApproval):
        _engine(tmp_path, FileLock(tmp_path / "l", duration=30)).resume(paused)
    with pytest.raises(Exception, match="reason"):
        _engine(tmp_path, FileLock(tmp_path / "l")).abandon(paused, reason=" ", by="me")
    said = _engine(tmp_path, FileLock(tmp_path / "l")).abandon(paused, reason="superseded", by="alice")
    assert "released" in said
    state = RunState.replay(paused, LocalStateStore(tmp_path / "state").records(paused))
    assert state.status == "abandoned" and "superseded" in state.message
    assert _run(_engine(tmp_path, FileLock(tmp_path / "l", duration=30)),
                playbook("- {id: x, uses: test.echo}\n")).status == "succeeded"


def test_liveness_needs_boot_id_pid_namespace_and_start_time() -> None:
    """hostname + pid alone is no evidence: a holder in another PID namespace is alive to us."""
    me = holder_identity("r")
    h = Holder.parse(me)
    assert h.host == socket.gethostname() and h.boot and h.pidns and h.start
    assert not holder_is_dead(me)
    # The same pid, started at another time: the pid was reused, the holder is dead.
    assert holder_is_dead(me.rsplit("/", 1)[0] + "/1")
    # Another PID namespace on the same host (a container sharing the hostname): not provably dead.
    other_ns = f"r@{h.host}/999999/{h.boot}/1/5"
    assert not holder_is_dead(other_ns)
    # The old form (hostname/pid): judged by its lease only.
    assert not holder_is_dead(f"r@{h.host}/999999")


def test_a_lease_release_that_meets_a_conflict_reads_again_and_still_gives_it_back() -> None:
    """A 409 on the release's update (the Lease changed since it was read) is no reason to keep
    it: read again, and release it while it is still ours (the chaos suite's switchovers left a
    finished run's Lease held until expiry after one conflict). Someone else's Lease is left alone."""
    from meshops.domain.errors import Conflict
    from meshops.drivers.kube_fake import FakeKube
    from meshops.drivers.kube_state import LeaseLock
    from tests.support.fakeclock import FakeClock

    kube, clock = FakeKube(context="c"), FakeClock()
    lock = LeaseLock(kube, name="t", duration=30, clock=clock)
    lock.acquire("run-a")
    kube.faults.append(["replace", "Lease", Conflict("the object has been modified"), 2])
    lock.release()
    lease = kube.get("coordination.k8s.io/v1", "Lease", "t", "meshops-system")
    assert lease is not None and not lease["spec"]["holderIdentity"]

    lock.acquire("run-a")
    other = LeaseLock(kube, name="t", duration=30, clock=clock)
    clock.sleep(31)
    other.acquire("run-b")  # taken over after expiry: run-a's release must leave it be
    lock.release()
    lease = kube.get("coordination.k8s.io/v1", "Lease", "t", "meshops-system")
    assert lease is not None and lease["spec"]["holderIdentity"] == "run-b"


@pytest.mark.parametrize("action", ["rollback", "resume"])
def test_a_run_killed_before_its_first_record_is_refused_not_rolled_back(tmp_path: Path, action: str) -> None:
    """A run whose directory exists but whose journal is empty (killed between creating it and
    writing run_started) has no params: resume and rollback refuse it (exit 2) instead of "rolling
    back" under the default lock only, which left a switchover's record lock and source Lease held
    (found by the chaos suite's switchovers)."""
    from meshops.domain.errors import BadInput

    store = LocalStateStore(tmp_path / "state")
    store.create_run("20260101-000000-switchover-dead", playbook_text=_writes(tmp_path, 0), playbook_path="t.yaml")
    engine = Engine(store=store, options=EngineOptions())
    with pytest.raises(BadInput, match="never started"):
        getattr(engine, action)("20260101-000000-switchover-dead")
    assert store.records("20260101-000000-switchover-dead") == []


def test_a_finished_run_whose_process_was_killed_before_its_release_gives_its_locks_back(tmp_path: Path) -> None:
    """Killed after its last record and before releasing its lock, a finished run leaves the lock
    to a dead holder: `resume` ("already finished") takes it over and releases it (the chaos
    suite's switchovers found a target Lease held so after a kill at the very end)."""
    lock_path = tmp_path / "lock.json"
    engine = _engine(tmp_path, FileLock(lock_path))
    result = _run(engine, _writes(tmp_path, 0))
    assert result.status == "succeeded"
    # As the killed process left it: held, freshly renewed, by this run on a process that is gone
    # (this host, boot and PID namespace; a pid whose start time does not match).
    run, _, ident = holder_identity(result.run_id).partition("@")
    host, _pid, boot, pidns, _start = ident.split("/")
    now = time.time()
    lock_path.write_text(json.dumps({"holder": f"{run}@{host}/{2**22 + 1}/{boot}/{pidns}/1", "acquired": now,
                                     "renewed": now, "duration": 30}))
    assert engine.resume(result.run_id).message == "already finished"
    assert not lock_path.exists()
class _KilledAfterAcquire(BaseException):
    """Stands for SIGKILL: nothing after it runs, no cleanup, no journal record."""


class _LockThenDie(FileLock):
    def acquire(self, holder: str) -> None:
        super().acquire(holder)
        raise _KilledAfterAcquire


def test_a_kill_just_after_the_lock_is_taken_leaves_a_run_rollback_can_finish(tmp_path: Path) -> None:
    """Found by `bench/chaos.py --seed 101` (run 2, SIGKILL after 3 writes): the Lease was held
    but the run directory had no journal yet, so `meshops rollback RUN` said "no run" and the
    Lease stayed with a run no command knew. The run is now born whole before it takes the lock."""
    lock_path = tmp_path / "l"
    with pytest.raises(_KilledAfterAcquire):
        _run(_engine(tmp_path, _LockThenDie(lock_path, duration=0.5)), _writes(tmp_path, 0))
    store = LocalStateStore(tmp_path / "state")
    (run_id,) = store.run_ids()
    records = store.records(run_id)
    assert [r["type"] for r in records] == ["run_started"]
    assert RunState.replay(run_id, records).status == "running"
    time.sleep(0.6)  # the dead holder's lease expires
    result = _engine(tmp_path, FileLock(lock_path, duration=30)).rollback(run_id)
    assert result.status == "rolled_back"
    assert not (tmp_path / "a").exists()
    assert not lock_path.exists() or json.loads(lock_path.read_text()).get("holder") in (None, "")


def test_a_run_refused_by_the_lock_leaves_no_run_behind(tmp_path: Path) -> None:
    lock_path = tmp_path / "l"
    FileLock(lock_path, duration=30).acquire("other@elsewhere/1")
    with pytest.raises(LockHeld, match="other"):
        _run(_engine(tmp_path, FileLock(lock_path, duration=30)), _writes(tmp_path, 0))
    assert LocalStateStore(tmp_path / "state").run_ids() == []


def test_a_run_creation_killed_half_way_is_no_run(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    (tmp_path / "state" / "runs" / ".new-r1").mkdir(parents=True)  # killed before the rename
    assert store.run_ids() == []
    store.create_run("r1", playbook_text="x", playbook_path="p", first=[{"type": "run_started", "ts": 1.0}])
    assert store.run_ids() == ["r1"] and [r["type"] for r in store.records("r1")] == ["run_started"]


def test_asking_a_finished_run_again_frees_the_lock_its_kill_left(tmp_path: Path) -> None:
    """Found by `bench/chaos.py --seed 101` (run 44): killed after its last record, a finished run
    kept its lock (and its mirror lagged). `resume`/`rollback` of it now settle both."""
    lock_path = tmp_path / "l"
    result = _run(_engine(tmp_path, FileLock(lock_path, duration=30)), _writes(tmp_path, 0))
    assert result.status == "succeeded"
    # As if SIGKILLed between `run_finished` and the release: the lock still names the run.
    FileLock(lock_path, duration=30).acquire(f"{result.run_id}@elsewhere/1")
    with pytest.raises(LockHeld):
        _run(_engine(tmp_path, FileLock(lock_path, duration=30)), _writes(tmp_path, 0))
    again = _engine(tmp_path, FileLock(lock_path, duration=30)).resume(result.run_id)
    assert again.status == "succeeded"
    assert _run(_engine(tmp_path, FileLock(lock_path, duration=30)), _writes(tmp_path, 0)).status == "succeeded"
