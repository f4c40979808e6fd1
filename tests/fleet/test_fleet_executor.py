"""The local fleet executor against a fake meshops child: waves, budgets, gates, kills, rollback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from meshops.fleet.executor import FleetExecutor, FleetOptions, store_for
from meshops.fleet.state import FleetState

from .conftest import FAKE, ROOT, Harness, fleet_doc

SIX = {f"c{i}": {"tier": t} for i, t in enumerate(["canary", "staging", "staging", "prod", "prod", "prod"], 1)}
WAVES = [{"name": "canary", "selector": {"tier": "canary"}},
         {"name": "staging", "selector": {"tier": "staging"}, "max_parallel": 2},
         {"name": "prod", "selector": {"tier": "prod"}}]


def test_waves_in_order_each_cluster_its_own_run(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    state = harness.executor().start(loaded)
    assert state.status == "succeeded" and state.exit_code == 0
    order = [c for verb, c in harness.effects()]
    assert order[0] == "c1" and set(order[1:3]) == {"c2", "c3"} and order[3:] == ["c4", "c5", "c6"]
    run_ids = {c.run_id for c in state.clusters.values()}
    assert len(run_ids) == 6 and None not in run_ids


def test_failure_over_budget_stops_the_fleet_and_resume_finishes(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    harness.plan({"c4": {"exit": 1}})
    state = harness.executor().start(loaded)
    assert (state.status, state.exit_code) == ("failed", 1)
    assert {n: c.status for n, c in state.clusters.items()} == {
        "c1": "succeeded", "c2": "succeeded", "c3": "succeeded", "c4": "failed"}  # c5, c6 never started
    harness.plan({})
    before = len(harness.effects())
    state = harness.executor().resume(state.run_id)
    assert state.status == "succeeded"
    assert [c for _, c in harness.effects()[before:]] == ["c4", "c5", "c6"]  # finished clusters not run again
    assert state.cluster("c4").attempts == 2


def test_budget_lets_the_wave_go_on(harness: Harness) -> None:
    waves = [*WAVES[:2], {**WAVES[2], "max_failures": 1}]
    loaded = harness.write(fleet_doc(SIX, waves))
    harness.plan({"c4": {"exit": 1}})
    state = harness.executor().start(loaded)
    assert state.cluster("c6").status == "succeeded"
    assert (state.status, state.exit_code) == ("completed_with_failures", 1)


def test_refused_everywhere_is_exit_2(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    harness.plan({"c1": {"exit": 2}})
    state = harness.executor().start(loaded)
    assert (state.status, state.exit_code) == ("refused", 2)
    harness.plan({"c4": {"exit": 2}})
    assert harness.executor().start(loaded).exit_code == 1  # c1-c3 changed before c4 refused


def test_rollback_failed_child_is_exit_3(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    harness.plan({"c1": {"exit": 3}})
    state = harness.executor().start(loaded)
    assert (state.status, state.exit_code) == ("rollback_failed", 3)


def test_rollback_wave_undoes_the_waves_finished_clusters(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    harness.plan({"c5": {"exit": 1}})
    state = harness.executor(on_failure="rollback-wave").start(loaded)
    assert state.exit_code == 1
    assert state.cluster("c4").status == "rolled_back" and state.cluster("c2").status == "succeeded"
    assert ("rollback", "c4") in harness.effects() and ("rollback", "c2") not in harness.effects()


def test_fleet_rollback_newest_first_and_idempotent(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    state = harness.executor().start(loaded)
    mark = len(harness.effects())
    state = harness.executor().rollback(state.run_id)
    undone = [c for verb, c in harness.effects()[mark:] if verb == "rollback"]
    assert undone[:3] == ["c6", "c5", "c4"] and set(undone[3:5]) == {"c2", "c3"} and undone[5] == "c1"
    assert (state.status, state.exit_code) == ("rolled_back", 0)
    mark = len(harness.effects())
    harness.executor().rollback(state.run_id)
    assert harness.effects()[mark:] == []


def test_pause_gate_is_exit_130_and_resume_continues(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, [*WAVES[:2], {**WAVES[2], "gate": "pause"}]))
    state = harness.executor().start(loaded)
    assert (state.status, state.exit_code) == ("paused", 130)
    assert "c4" not in state.clusters
    assert harness.executor().resume(state.run_id).status == "succeeded"


def test_approval_gate_needs_meshops_approve(harness: Harness) -> None:
    from meshops.cli.main import cli

    loaded = harness.write(fleet_doc(SIX, [*WAVES[:2], {**WAVES[2], "gate": "approve"}]))
    state = harness.executor().start(loaded)
    assert (state.status, state.exit_code) == ("awaiting_approval", 130)
    assert harness.executor().resume(state.run_id).exit_code == 130  # not approved: still waiting
    runner = CliRunner()
    state_dir = str(harness.tmp / "state")
    bad = runner.invoke(cli, ["--state-dir", state_dir, "approve", state.run_id, "wave/prd"])
    assert getattr(bad.exception, "exit_code", None) == 2 and "gates: wave/prod" in str(bad.exception)
    ok = runner.invoke(cli, ["--state-dir", state_dir, "approve", state.run_id, "wave/prod"])
    assert ok.exit_code == 0, ok.output
    assert harness.executor().resume(state.run_id).status == "succeeded"
    shown = runner.invoke(cli, ["--state-dir", state_dir, "fleet", "show", state.run_id, "-o", "json"])
    summary = json.loads(shown.output)
    assert summary["status"] == "succeeded" and summary["clusters"]["c4"]["exit_code"] == 0
    listed = runner.invoke(cli, ["--state-dir", state_dir, "fleet", "runs"])
    assert state.run_id in listed.output and "succeeded" in listed.output


def test_sigterm_stops_children_at_a_safe_point(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    harness.plan({"c2": {"sleep": 30}, "c3": {"sleep": 30}})
    # Stop once both wave-2 children have journaled their runs (a fixed delay raced their start on a busy box).
    give_up = time.monotonic() + 30

    def stop() -> bool:
        started = {("upgrade", "c2"), ("upgrade", "c3")} <= set(harness.effects())
        return started or time.monotonic() > give_up

    state = harness.executor(stop=stop).start(loaded)
    assert (state.status, state.exit_code) == ("interrupted", 130)
    assert state.cluster("c2").status == "interrupted" and state.cluster("c2").run_id
    harness.plan({})
    state = harness.executor().resume(state.run_id)
    assert state.status == "succeeded"
    assert ("resume", "c2") in harness.effects() and ("resume", "c3") in harness.effects()


DRIVER = """
import sys
from meshops.fleet.executor import FleetExecutor, FleetOptions
from meshops.fleet.model import load_fleet
ex = FleetExecutor(state_dir=sys.argv[1], options=FleetOptions(meshops=sys.argv[3:], on_started=print))
ex.start(load_fleet(sys.argv[2]))
"""


def test_sigkill_mid_wave_then_resume_reaches_the_same_end(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(SIX, WAVES))
    harness.plan({"c2": {"sleep": 1.5}, "c3": {"sleep": 1.5}})
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(harness.tmp / "state"), loaded.path, *FAKE],
                            env=harness.env(), cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, text=True)
    fid = proc.stdout.readline().strip() if proc.stdout else ""
    store = store_for(harness.tmp / "state")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = FleetState.replay(fid, store.records(fid))
        if state.cluster("c2").status == "running" and ("upgrade", "c2") in harness.effects():
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the fleet and its children, mid-wave
    proc.wait(timeout=10)
    harness.plan({})
    state = harness.executor().resume(fid)
    assert state.status == "succeeded"
    assert all(c.status == "succeeded" for c in state.clusters.values()) and len(state.clusters) == 6
    # The killed cluster runs were resumed, not started again.
    assert ("resume", "c2") in harness.effects()
    assert sum(1 for verb, c in harness.effects() if c == "c2" and verb == "upgrade") == 1


def test_a_second_fleet_run_of_the_same_fleet_is_locked(harness: Harness, tmp_path: Path) -> None:
    from meshops.domain.errors import LockHeld
    from meshops.engine.lock import FileLock

    loaded = harness.write(fleet_doc(SIX, WAVES))
    FileLock(store_for(tmp_path / "state").root / "locks" / "test-fleet.lock").acquire("other@elsewhere/1")
    try:
        harness.executor().start(loaded)
    except LockHeld as exc:
        assert exc.exit_code == 4
    else:
        raise AssertionError("expected LockHeld")


def test_options_type_is_plain() -> None:
    assert FleetOptions(meshops=["x"]).on_failure == "stop" and FleetExecutor


def test_resume_waits_for_a_child_that_outlived_the_fleet(harness: Harness) -> None:
    """Only the fleet process killed: its children go on; resume adopts their outcome, runs nothing twice."""
    loaded = harness.write(fleet_doc(SIX, WAVES))
    harness.plan({"c2": {"sleep": 2}, "c3": {"sleep": 2}})
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(harness.tmp / "state"), loaded.path, *FAKE],
                            env=harness.env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    fid = proc.stdout.readline().strip() if proc.stdout else ""
    store = store_for(harness.tmp / "state")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            FleetState.replay(fid, store.records(fid)).cluster("c3").status == "running"
            and ("upgrade", "c3") in harness.effects()):
        time.sleep(0.05)
    proc.kill()  # the fleet alone
    proc.wait(timeout=10)
    state = harness.executor().resume(fid)
    assert state.status == "succeeded"
    assert [verb for verb, c in harness.effects() if c in ("c2", "c3")] == ["upgrade", "upgrade"]
