"""Progress where people wait: gate events and bake heartbeats from `watch`, JSON heartbeats for
waiting steps, and a live display on a terminal that keeps log lines whole."""

from __future__ import annotations

import itertools
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from meshops.cli import output, progress
from meshops.ops.health import GateResult, watch

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kv: Any) -> None:
        self.seen.append((event, kv))


class Flaky:
    name = "promql errors < 0.01"
    window = 0.0
    critical = False

    def __init__(self) -> None:
        self.calls = 0

    def check(self, now: float) -> GateResult:
        self.calls += 1
        return GateResult(name=self.name, ok=self.calls % 2 == 1, detail=f"call {self.calls}", at=now, critical=False)


def test_a_bake_logs_each_gate_evaluation_and_a_heartbeat_at_least_every_n_seconds() -> None:
    """65 s bake, gates every 30 s (and at the end), heartbeat 10 s: one gate event per evaluation, a
    heartbeat at least every 10 s with the time left counting down and the results so far."""
    clock, log, gate = Clock(), Events(), Flaky()
    report = watch([gate], duration=65, interval=30, clock=clock, sleep=clock.sleep, log=log, heartbeat=10)
    assert report.evaluations == 4  # at 0, 30, 60 and the end (65)
    gates = [kv for e, kv in log.seen if e == "gate.evaluated"]
    assert [g["ok"] for g in gates] == [True, False, True, False] and gates[1]["detail"] == "call 2"
    beats = [kv for e, kv in log.seen if e == "bake.heartbeat"]
    lefts = [b["left"] for b in beats]
    assert len(beats) >= 6 and lefts == sorted(lefts, reverse=True) and lefts[0] == 65.0
    assert all(b2["elapsed"] - b1["elapsed"] <= 10.0 for b1, b2 in itertools.pairwise(beats))
    assert beats[-1]["failures"] == {gate.name: 1}  # the last heartbeat came before the final evaluation


def test_json_heartbeats_while_a_step_waits_and_one_when_done(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHOPS_HEARTBEAT_SECONDS", "0.1")
    output.reset(["--log-format", "json"])
    output.SESSION.run_id = "20261206-000000-x-abcd"
    make = progress.factory()
    reporter = make("waves[0]")
    try:
        reporter.update(done=1, total=4, label="restart", deadline=time.time() + 600)
        time.sleep(0.45)  # the step waits on a watch without news: the heartbeat speaks for it
        reporter.update(done=4, total=4, label="restart")
    finally:
        progress.stop()
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert all(e["event"] == "step.progress" and e["run_id"] == output.SESSION.run_id for e in events)
    waiting = [e for e in events if not e["done"]]
    assert len(waiting) >= 3 and {(e["ready"], e["total"]) for e in waiting} == {(1, 4)}
    assert all(590 < e["deadline_in"] <= 600 for e in waiting)  # wave: ready x/y, elapsed, time to the deadline
    assert events[-1]["done"] is True and events[-1]["ready"] == 4


def test_the_live_display_keeps_log_lines_whole_and_leaves_cleanly() -> None:
    """On a terminal: log lines written while the display runs come out whole, and after stop() the
    display is gone (transient) with the cursor back."""
    script = ("import sys, time\nfrom meshops.cli import progress\n"
              "make = progress.factory()\nr = make('waves[0]')\n"
              "for i in range(5):\n    r.update(done=i, total=4)\n"
              "    sys.stderr.write(f'LOGLINE-{i} the whole line\\n')\n    time.sleep(0.1)\n"
              "progress.stop()\nsys.stderr.write('AFTER\\n')\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "MESHOPS_LOG_FORMAT": "console"})
    os.close(slave)
    seen = b""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=10)
    os.close(master)
    text = seen.decode(errors="replace")
    for i in range(5):
        assert f"LOGLINE-{i} the whole line" in text
    assert "waves[0]" in text and "ready" in text  # the display was there
    assert text.rstrip().endswith("AFTER")
