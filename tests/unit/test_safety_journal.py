"""Journal under faults: torn tails, damaged lines, short writes; one typed replay for everyone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.report import build
from meshops.domain.runlog import JournalRecord, RunStatus
from meshops.engine import journal as journal_mod
from meshops.engine.journal import LocalStateStore, RunState
from meshops.engine.playbook import load_playbook_text
from tests.unit.test_engine import Harness, playbook


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def _three_writes(h: Harness) -> str:
    d = h.tmp / "w"
    d.mkdir(exist_ok=True)
    return playbook(f"""
        - id: a
          uses: test.write_file
          with: {{path: "{d}/a"}}
        - id: b
          uses: test.write_file
          with: {{path: "{d}/b"}}
        - id: c
          uses: test.write_file
          with: {{path: "{d}/c"}}
    """)


def _actions(h: Harness) -> list[str]:
    log = h.tmp / "w" / "actions.log"
    return log.read_text().splitlines() if log.exists() else []


def _journal(h: Harness, run_id: str) -> Path:
    return h.tmp / "state" / "runs" / run_id / "journal.jsonl"


def _crash_after(h: Harness, text: str, last_kept: str) -> str:
    """A run killed mid-write: the journal up to ``last_kept`` (type:step), then half a line."""
    h.run(text)
    run_id = h.store.run_ids()[-1]
    path = _journal(h, run_id)
    lines = path.read_text().splitlines(keepends=True)
    kept: list[str] = []
    for line in lines:
        kept.append(line)
        r = json.loads(line)
        if f"{r['type']}:{r.get('step')}" == last_kept:
            break
    torn = lines[len(kept)][: len(lines[len(kept)]) // 2]
    path.write_text("".join(kept) + torn)
    h.store.close()
    (h.tmp / "w" / "actions.log").unlink()
    return run_id


def test_a_torn_tail_is_trimmed_and_journaled_and_resume_runs_only_what_is_left(h: Harness) -> None:
    """Killed while writing c's start: resume runs c once; a and b are not run again, and the
    records the resume writes are all readable (before: they were glued onto the torn line)."""
    run_id = _crash_after(h, _three_writes(h), "step_succeeded:b")
    store = LocalStateStore(h.tmp / "state")
    h.store = store
    result = h.engine().resume(run_id)
    assert result.status == "succeeded"
    assert _actions(h) == ["write c created=False"]
    records = store.records(run_id)
    assert [r["type"] for r in records].count("journal_repaired") == 1
    state = RunState.replay(run_id, LocalStateStore(h.tmp / "state").records(run_id))
    assert state.status == RunStatus.SUCCEEDED
    again = h.engine().resume(run_id)
    assert again.message == "already finished"
    assert _actions(h) == ["write c created=False"]


def test_a_damaged_line_in_the_middle_is_skipped_not_the_end_of_the_journal(h: Harness, caplog: Any) -> None:
    """A bad line is skipped with a warning; every record after it still counts."""
    h.run(_three_writes(h))
    run_id = h.store.run_ids()[-1]
    path = _journal(h, run_id)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(3, '{"type": "step_star\n')
    lines.insert(5, '{"type": "no_such_record", "ts": 1}\n')
    path.write_text("".join(lines))
    state = RunState.replay(run_id, LocalStateStore(h.tmp / "state").records(run_id))
    assert state.status == "succeeded"
    assert all(state.done(k) for k in "abc")


def test_short_writes_are_completed(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write may write less than asked; the journal still ends up whole."""
    real = os.write

    def dribble(fd: int, data: Any) -> int:
        return real(fd, bytes(data)[:7])

    monkeypatch.setattr(journal_mod.os, "write", dribble)
    h.run(_three_writes(h))
    monkeypatch.undo()
    run_id = h.store.run_ids()[-1]
    lines = _journal(h, run_id).read_text().splitlines()
    assert len(lines) >= 8
    assert all(JournalRecord.parse_line(line) for line in lines)


def test_the_report_takes_its_statuses_from_the_same_replay(h: Harness) -> None:
    """Report and engine agree on the run's status even when a bad record sits in the middle."""
    h.run(_three_writes(h))
    run_id = h.store.run_ids()[-1]
    records = h.store.records(run_id)
    records.insert(2, {"type": "run_finished", "ts": records[2]["ts"], "status": "exploded"})
    report = build(run_id, records)
    state = RunState.replay(run_id, records)
    assert report.status == state.status == "succeeded"
    assert {s.key: s.status for s in report.steps} == {k: str(s.status) for k, s in state.steps.items()}


def test_playbook_text_roundtrip_unchanged(h: Harness) -> None:
    loaded = load_playbook_text(_three_writes(h), path="t.yaml")
    assert loaded.playbook.steps[0].id == "a"


def test_an_edited_record_no_longer_matches_its_digest_and_is_not_replayed(h: Harness) -> None:
    h.run(_three_writes(h))
    run_id = h.store.run_ids()[-1]
    path = _journal(h, run_id)
    lines = path.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if '"step_succeeded"' in line and '"step":"b"' in line)
    record = json.loads(lines[i])
    assert "sha" in record
    record["outputs"]["path"] = "/etc/passwd"
    lines[i] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    state = RunState.replay(run_id, LocalStateStore(h.tmp / "state").records(run_id))
    assert state.steps["b"].outputs is None and not state.done("b")
    assert state.done("a") and state.done("c")
