"""Crash safety: a run SIGKILLed at step boundaries and inside steps resumes to the same end state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PLAYBOOK = """
apiVersion: meshops.dev/v1
kind: Playbook
metadata: {name: crashy, lock: true}
params:
  dir: {type: string, required: true}
steps:
  - id: one
    uses: test.write_file
    with: {path: "{{ params.dir }}/one", content: "1", pause_before: 0.15, pause: 0.15}
  - id: two
    uses: test.write_file
    with: {path: "{{ params.dir }}/two", content: "{{ steps.one.outputs.path }}", pause_before: 0.15, pause: 0.15}
  - id: waves
    uses: test.write_file
    foreach: [w0, w1, w2]
    concurrency: 1
    with: {path: "{{ params.dir }}/{{ item }}", content: "{{ index }}", pause_before: 0.15, pause: 0.15}
  - id: last
    uses: test.write_file
    with: {path: "{{ params.dir }}/last", content: "{{ steps.waves.outputs['items'] | length }}", pause_before: 0.15}
"""


def meshops(state: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHOPS_STEP_MODULES": "tests.support.teststeps"}
    return subprocess.Popen([sys.executable, "-m", "meshops", "--state-dir", str(state), "--log-format", "json", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal(state: Path) -> list[dict]:
    runs = list((state / "runs").glob("*/journal.jsonl"))
    if not runs:
        return []
    lines = runs[0].read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def end_state(work: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(work.iterdir()) if p.name != "actions.log"}


def step_outcomes(records: list[dict]) -> dict[str, dict]:
    out = {}
    for r in records:
        if r["type"] == "step_succeeded":
            outputs = r.get("outputs") or {}
            # `created` says whether this attempt wrote the file: it differs by design after a crash.
            if "items" in outputs:
                outputs = {"items": [{k: v for k, v in i.items() if k != "created"} for i in outputs["items"]]}
            else:
                outputs = {k: v for k, v in outputs.items() if k != "created"}
            out[r["step"]] = outputs
    return out


def reference(tmp_path: Path) -> tuple[dict[str, str], dict[str, dict]]:
    work, state = tmp_path / "ref-work", tmp_path / "ref-state"
    work.mkdir()
    pb = tmp_path / "crashy.yaml"
    pb.write_text(PLAYBOOK)
    proc = meshops(state, "run", str(pb), "--var", f"dir={work}")
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    ref_files = {k: v.replace(str(work), "WORK") for k, v in end_state(work).items()}
    ref_steps = json.loads(json.dumps(step_outcomes(journal(state))).replace(str(work), "WORK"))
    return ref_files, ref_steps


# Each kill point: the journal record that, once seen, triggers SIGKILL, plus an optional
# file whose appearance triggers it instead (inside a step, after its side effect).
KILL_POINTS = [
    ("step_started", "one", None),        # inside `one`, before it acts
    (None, None, "one"),                  # inside `one`, after writing, before its outcome is journaled
    ("step_succeeded", "one", None),      # at the boundary between one and two
    (None, None, "two"),
    ("step_succeeded", "waves[0]", None),  # between foreach items
    (None, None, "w1"),
    ("step_succeeded", "waves", None),    # boundary after the whole foreach
    ("step_started", "last", None),
]


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, dict]]:
    return reference(tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("record_type,step,file", KILL_POINTS,
                         ids=[f"{t or 'file'}-{s or f}" for t, s, f in KILL_POINTS])
def test_sigkill_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, ref: tuple[dict[str, str], dict[str, dict]], record_type: str | None, step: str | None, file: str | None
) -> None:
    """Kill -9 at the point, resume, and compare files, outcomes and side effects with the reference."""
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    pb = tmp_path / "crashy.yaml"
    pb.write_text(PLAYBOOK)
    proc = meshops(state, "run", str(pb), "--var", f"dir={work}")
    deadline = time.time() + 30
    while time.time() < deadline:
        if file is not None and (work / file).exists():
            break
        if record_type is not None and any(r["type"] == record_type and r.get("step") == step for r in journal(state)):
            break
        assert proc.poll() is None, "the run finished before the kill point"
        time.sleep(0.002)
    else:
        pytest.fail("kill point never reached")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    records = journal(state)
    assert not any(r["type"] == "run_finished" for r in records)
    run_id = next((state / "runs").iterdir()).name

    # The killed run never released its lock; its holder is a dead process on this host,
    # so resume takes the lock over at once instead of waiting out the lease.
    assert json.loads((state / "local.lock").read_text())["holder"].startswith(run_id)

    resumed = meshops(state, "resume", run_id)
    _out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    files = {k: v.replace(str(work), "WORK") for k, v in end_state(work).items()}
    steps = json.loads(json.dumps(step_outcomes(journal(state))).replace(str(work), "WORK"))
    assert files == ref[0]
    assert steps == ref[1]
    assert journal(state)[-1]["type"] == "run_finished" and journal(state)[-1]["status"] == "succeeded"
    # Idempotency: every file was created exactly once, however often its step ran.
    actions = (work / "actions.log").read_text().splitlines()
    for name in ref[0]:
        assert actions.count(f"write {name} created=True") == 1, actions


def test_a_second_run_is_refused_while_the_lock_is_held(tmp_path: Path) -> None:
    """A killed run's lock is not stolen before it expires: a new run exits 4 naming the holder."""
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    pb = tmp_path / "crashy.yaml"
    pb.write_text(PLAYBOOK)
    first = meshops(state, "run", str(pb), "--var", f"dir={work}")
    deadline = time.time() + 30
    while not any(r["type"] == "step_started" for r in journal(state)) and time.time() < deadline:
        time.sleep(0.005)
    assert any(r["type"] == "step_started" for r in journal(state)), "the first run never started a step"
    # The first run holds the lock now. Freeze it there: it stays a live holder that has renewed
    # within the lock's 30 s for as long as the second run takes to start and check, however
    # loaded the machine (left running, it used to finish its ~1.6 s of steps and release the
    # lock before a slow second interpreter got to it, which then ran and exited 0).
    first.send_signal(signal.SIGSTOP)
    try:
        second = meshops(state, "run", str(pb), "--var", f"dir={work}")
        _, err = second.communicate(timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 4
    assert "holds the lock" in err and "crashy" in err
    assert len(list((state / "runs").iterdir())) == 1  # the refused run left no journal
