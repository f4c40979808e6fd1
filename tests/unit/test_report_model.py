"""The report model built from journal records: times, attempts, sessions, waves, traffic, rollback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshops.domain.report import build

T0 = 1_800_000_000.0


def rec(type_: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "ts": T0 + ts, **fields}


def started(ts: float = 0.0, **params: Any) -> dict[str, Any]:
    return rec("run_started", ts, name="pb", playbook="pb.yaml", params=params, hidden_params=[])


def test_side_effect_free_steps_start_where_the_previous_record_ended() -> None:
    """A step with no start record begins at the previous boundary and is flagged as inferred."""
    rep = build("r", [
        started(),
        rec("step_started", 0.1, step="a", attempt=1, inputs={}),
        rec("step_succeeded", 0.5, step="a", attempt=1, outputs={}),
        rec("step_succeeded", 0.7, step="log", attempt=1, outputs={}, inputs={"message": "hi"}),
        rec("run_finished", 0.8, status="succeeded"),
    ])
    a, log = rep.step("a"), rep.step("log")
    assert (a.attempts[0].started, a.attempts[0].start_inferred) == (T0 + 0.1, False)
    assert (log.attempts[0].started, log.attempts[0].finished) == (T0 + 0.5, T0 + 0.7)
    assert log.attempts[0].start_inferred and log.inputs == {"message": "hi"}
    assert rep.status == "succeeded" and rep.duration_s == pytest.approx(0.8)


def test_foreach_items_without_start_records_take_free_slots_in_item_order() -> None:
    """Items start at the foreach's start for the first `concurrency`, then at each earlier completion."""
    rep = build("r", [
        started(),
        rec("foreach_started", 1.0, step="w", items=4, concurrency=2),
        rec("step_succeeded", 2.0, step="w[0]", attempt=1, outputs={}),
        rec("step_succeeded", 3.0, step="w[2]", attempt=1, outputs={}),
        rec("step_succeeded", 3.5, step="w[1]", attempt=1, outputs={}),
        rec("step_succeeded", 4.0, step="w[3]", attempt=1, outputs={}),
        rec("step_succeeded", 4.1, step="w", outputs={"items": [{}, {}, {}, {}]}),
        rec("run_finished", 4.2, status="succeeded"),
    ])
    starts = [rep.step(f"w[{i}]").attempts[0].started - T0 for i in range(4)]
    assert starts == pytest.approx([1.0, 1.0, 2.0, 3.0])
    parent = rep.step("w")
    assert parent.items == ["w[0]", "w[1]", "w[2]", "w[3]"]
    assert parent.spans == [(T0 + 1.0, T0 + 4.1)] and parent.concurrency == 2
    assert [s.key for s in rep.steps] == ["w", "w[0]", "w[1]", "w[2]", "w[3]"]


def test_retries_then_failure_and_rollback_are_told_apart() -> None:
    """Retried attempts, the final failure, undone and irreversible steps each get their own outcome."""
    rep = build("r", [
        started(),
        rec("step_started", 0.0, step="prep", attempt=1, inputs={}),
        rec("step_succeeded", 1.0, step="prep", attempt=1, outputs={}),
        rec("step_started", 1.0, step="oneway", attempt=1, inputs={}),
        rec("step_succeeded", 1.5, step="oneway", attempt=1, outputs={}),
        rec("step_started", 2.0, step="api", attempt=1, inputs={}),
        rec("attempt_failed", 2.1, step="api", attempt=1, error="503", temporary=True),
        rec("step_started", 3.0, step="api", attempt=2, inputs={}),
        rec("attempt_failed", 3.1, step="api", attempt=2, error="503 again", temporary=True),
        rec("step_failed", 3.1, step="api", error="503 again (after 2 attempts)"),
        rec("rollback_started", 3.2, cause="api failed: 503 again (after 2 attempts)"),
        rec("undo_started", 3.3, step="api"),
        rec("undone", 3.4, step="api"),
        rec("undo_skipped", 3.4, step="oneway", reason="irreversible"),
        rec("undo_started", 3.5, step="prep"),
        rec("undone", 3.9, step="prep"),
        rec("run_finished", 4.0, status="rolled_back", message="undid 2 step(s)"),
    ], step_types={"prep": "t.a", "oneway": "t.b", "api": "t.c", "never": "t.d"})
    api = rep.step("api")
    assert [a.outcome for a in api.attempts] == ["retried", "failed"]
    assert api.status == "failed" and api.undo is not None and api.undo.status == "undone"
    assert [(f.step, f.final) for f in rep.failures] == [("api", False), ("api", True)]
    rb = rep.rollbacks[0]
    assert rb.undone == ["api", "prep"] and rb.skipped == ["oneway"] and rb.status == "rolled_back"
    assert (rb.finished or 0) - rb.started == pytest.approx(0.8)
    assert rep.step("oneway").undo.status == "undo_skipped"  # type: ignore[union-attr]
    assert rep.step("never").status == "not_run" and rep.steps[-1].key == "never"


def test_a_killed_session_is_closed_where_its_records_stop_and_the_resume_continues() -> None:
    """No run_finished: the open attempt ends (inferred) at the last record; the resume is a new session."""
    rep = build("r", [
        started(),
        rec("step_started", 1.0, step="slow", attempt=1, inputs={}),
        rec("run_resumed", 60.0, previous_status="running"),
        rec("step_started", 61.0, step="slow", attempt=2, inputs={}),
        rec("step_succeeded", 62.0, step="slow", attempt=2, outputs={}),
        rec("run_finished", 62.5, status="succeeded"),
    ])
    slow = rep.step("slow")
    first, second = slow.attempts
    assert (first.outcome, first.end_inferred, first.finished) == ("killed", True, T0 + 1.0)
    assert second.outcome == "succeeded" and slow.status == "succeeded"
    assert [(s.kind, s.status) for s in rep.sessions] == [("run", None), ("resume", "succeeded")]
    assert rep.active_s == pytest.approx(1.0 + 2.5)
    assert rep.duration_s == pytest.approx(62.5)


def test_a_gate_paused_then_approved_shows_who_approved_and_when() -> None:
    """An awaiting gate attempt, the approval record and the approved attempt on resume."""
    rep = build("r", [
        started(),
        rec("step_started", 0.5, step="gate", attempt=1, inputs={}),
        rec("run_finished", 0.6, status="awaiting_approval", failed_step="gate", message="approve with ..."),
        rec("approved", 30.0, step="gate", by="alice"),
        rec("run_resumed", 40.0, previous_status="awaiting_approval"),
        rec("step_started", 40.1, step="gate", attempt=2, inputs={}),
        rec("step_succeeded", 40.2, step="gate", attempt=2, outputs={"approved": True, "by": "meshops approve"}),
        rec("run_finished", 40.3, status="succeeded"),
    ], step_types={"gate": "gate.approve"})
    gate = rep.step("gate")
    assert [a.outcome for a in gate.attempts] == ["awaiting_approval", "succeeded"]
    assert (gate.approved_by, gate.approved_at) == ("alice", T0 + 30.0)
    assert rep.message == "" and rep.status == "succeeded"


def test_a_step_whose_inputs_fail_to_render_gets_a_zero_length_failure() -> None:
    """step_failed with no attempt at all still shows where the run stopped."""
    rep = build("r", [
        started(),
        rec("step_failed", 0.2, step="bad", error="inputs: 'x' is undefined"),
        rec("rollback_started", 0.2, cause="bad failed"),
        rec("run_finished", 0.3, status="rolled_back", message="undid 0 step(s)"),
    ])
    bad = rep.step("bad")
    assert [(a.outcome, a.started, a.finished) for a in bad.attempts] == [("failed", T0 + 0.2, T0 + 0.2)]
    assert rep.failures[-1].final and rep.failures[-1].error == "inputs: 'x' is undefined"


def test_a_failing_foreach_item_is_the_failure_not_only_its_parent() -> None:
    """The item whose attempt ended the foreach is marked failed, with the step_failed message."""
    rep = build("r", [
        started(),
        rec("foreach_started", 0.0, step="w", items=2, concurrency=1),
        rec("step_started", 0.0, step="w[0]", attempt=1, inputs={}),
        rec("step_succeeded", 1.0, step="w[0]", attempt=1, outputs={}),
        rec("step_started", 1.0, step="w[1]", attempt=1, inputs={}),
        rec("attempt_failed", 2.0, step="w[1]", attempt=1, error="boom", temporary=False),
        rec("step_failed", 2.0, step="w", error="boom"),
        rec("run_finished", 2.1, status="frozen", failed_step="w", message="frozen"),
    ])
    assert rep.step("w").status == "failed" and rep.step("w[1]").status == "failed"
    assert [(f.step, f.final) for f in rep.failures] == [("w[1]", True)]
    assert rep.step("w").spans == [(T0, T0 + 2.0)]


def test_waves_take_namespaces_workloads_and_gates_from_item_outputs() -> None:
    """Per wave: namespaces, workloads (strings or objects) and gates in list and mapping forms."""
    rep = build("r", [
        started(),
        rec("foreach_started", 0.0, step="move", items=2, concurrency=2),
        rec("step_started", 0.0, step="move[0]", attempt=1, inputs={"namespace": "bookinfo"}),
        rec("step_started", 0.0, step="move[1]", attempt=1, inputs={"namespace": "shop"}),
        rec("step_succeeded", 5.0, step="move[0]", attempt=1, outputs={
            "namespaces": ["bookinfo"], "restarted": [{"kind": "Deployment", "namespace": "bookinfo", "name": "web"}],
            "gates": [{"name": "ready", "ok": True}, {"query": "p99 < 0.5", "passed": False, "value": 0.7}]}),
        rec("step_succeeded", 6.0, step="move[1]", attempt=1, outputs={
            "workloads": ["shop/api"], "gates": {"ready": True, "errors": {"ok": True, "detail": "0.1%"}}}),
        rec("step_succeeded", 6.0, step="move", outputs={"items": [{}, {}]}),
        rec("step_started", 6.0, step="mover", attempt=1, inputs={}),
        rec("step_succeeded", 9.0, step="mover", attempt=1, outputs={"waves": [
            {"name": "first", "namespaces": ["a", "b"], "started": T0 + 6.5, "finished": T0 + 7.0}]}),
        rec("run_finished", 9.0, status="succeeded"),
    ])
    move, mover = rep.wave_groups
    w0, w1 = move.waves
    assert (w0.label, w0.namespaces, w0.workloads) == ("bookinfo", ["bookinfo"], ["Deployment/bookinfo/web"])
    assert [(g.name, g.ok, g.detail) for g in w0.gates] == [("ready", True, ""), ("p99 < 0.5", False, "value=0.7")]
    assert (w1.label, w1.workloads) == ("shop", ["shop/api"])
    assert [(g.name, g.ok, g.detail) for g in w1.gates] == [("ready", True, ""), ("errors", True, "0.1%")]
    assert mover.step_id == "mover" and mover.waves[0].namespaces == ["a", "b"]
    assert (mover.waves[0].started, mover.waves[0].finished) == (T0 + 6.5, T0 + 7.0)


def _shift(i: int, ts: float, pct: int, weights: list[int] | None, *, failed: str | None = None) -> list[dict[str, Any]]:
    inputs = {"source_id": "blue", "target_id": "green", "percent": pct, "source_weight": 100 - pct,
              "target_weight": pct, "initial_weights": [100, 0]}
    out = [rec("step_started", ts, step=f"shift[{i}]", attempt=1, inputs=inputs)]
    if failed:
        return [*out, rec("attempt_failed", ts + 1, step=f"shift[{i}]", attempt=1, error=failed, temporary=False),
                rec("step_failed", ts + 1, step="shift", error=failed)]
    report = {"started": T0 + ts + 0.2, "ended": T0 + ts + 2, "evaluations": 4, "failures": {"probe green": 1},
              "failed_gate": None, "last": {"probe green": "HTTP 200", "probe blue": "HTTP 200"}}
    return [*out, rec("step_succeeded", ts + 2, step=f"shift[{i}]", attempt=1,
                      outputs={"percent": pct, "weights": weights, "changed": True, "report": report})]


def test_a_switchover_gives_weights_over_time_bakes_and_the_rollback_batch() -> None:
    """Initial weights from the run's start, one point per shift, the failed shift, one rollback point."""
    rep = build("r", [
        started(),
        rec("foreach_started", 1.0, step="shift", items=3, concurrency=1),
        *_shift(0, 1.0, 10, [90, 10]),
        *_shift(1, 4.0, 50, None, failed="probe green: HTTP 503"),
        rec("rollback_started", 5.1, cause="shift[1] failed"),
        rec("undo_started", 5.2, step="shift[1]"), rec("undone", 6.0, step="shift[1]"),
        rec("undo_started", 6.0, step="shift[0]"), rec("undone", 6.5, step="shift[0]"),
        rec("run_finished", 6.6, status="rolled_back", message="undid 2 step(s)"),
    ])
    tr = rep.traffic
    assert tr.identifiers == ["blue", "green"]
    assert [(p.ts - T0, p.weights, p.rollback, p.attempted) for p in tr.points] == [
        (0.0, {"blue": 100, "green": 0}, False, False),
        (pytest.approx(1.2), {"blue": 90, "green": 10}, False, False),
        (4.0, {"blue": 50, "green": 50}, False, True),
        (6.0, {"blue": 100, "green": 0}, True, False),
    ]
    ok, bad = tr.bakes
    assert [(g.name, g.ok, g.warned) for g in ok.gates] == [("probe blue", True, False), ("probe green", True, True)]
    assert "1 failed of 4 evaluations; last: HTTP 200" in ok.gates[1].detail and ok.tripped is None
    assert bad.tripped == "step failed" and bad.gates[0].detail == "probe green: HTTP 503"
    assert rep.wave_groups[0].waves[0].label == "10%"


def test_to_dict_is_json_with_a_schema_and_iso_times() -> None:
    """The JSON form carries the schema id, ISO times and epoch times, and serialises as is."""
    rep = build("r", [started(greeting="hi"), rec("step_succeeded", 1.0, step="a", attempt=1, outputs={"x": 1}),
                      rec("run_finished", 2.0, status="succeeded")])
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["schema"] == "meshops.dev/report/v1"
    assert data["started"] == "2027-01-15T08:00:00.000Z" and data["finished_ts"] == T0 + 2.0
    assert data["params"] == {"greeting": "hi"} and data["steps"][0]["outputs"] == {"x": 1}
    assert data["steps"][0]["attempts"][0]["start_inferred"] is True


def test_a_wave_whose_gates_are_a_watch_report_lists_each_gate() -> None:
    """The canary keeps its wave gates as a watch report under `gates`: one gate per name, none named `started`;
    a gate that failed now and then without tripping passed, with a warning."""
    watch = {"started": T0 + 1, "ended": T0 + 3, "evaluations": 5, "failures": {"p99 < 0.5": 2},
             "failed_gate": None, "last": {"p99 < 0.5": "0.4", "errors < 0.01": "0.002"}}
    rep = build("r", [started(), rec("foreach_started", 0, step="waves", items=1, concurrency=1),
                      rec("step_started", 0, step="waves[0]", attempt=1, inputs={}),
                      rec("step_succeeded", 3, step="waves[0]", attempt=1,
                          outputs={"namespaces": ["shop"], "restarted": ["Deployment/shop/web"],
                                   "already": ["Deployment/shop/api"], "gates": watch}),
                      rec("step_succeeded", 3, step="waves", outputs={}), rec("run_finished", 3, status="succeeded")])
    (wave,) = rep.wave_groups[0].waves
    assert [(g.name, g.ok, g.warned) for g in wave.gates] == [("errors < 0.01", True, False), ("p99 < 0.5", True, True)]
    assert wave.gates[1].detail == "2 failed of 5 evaluations; last: 0.4"
    assert wave.workloads == ["Deployment/shop/web", "Deployment/shop/api"]  # "already": moved before a resume


def test_the_gate_a_watch_tripped_on_is_the_failed_one() -> None:
    """failed_gate marks that gate failed; the bake records what tripped it."""
    watch = {"started": T0 + 1, "ended": T0 + 2, "evaluations": 2, "failures": {"probe green": 1},
             "failed_gate": "probe green", "last": {"probe green": "HTTP 503", "probe blue": "HTTP 200"}}
    rep = build("r", [started(), rec("step_started", 0, step="shift", attempt=1, inputs={}),
                      rec("step_succeeded", 2, step="shift", attempt=1, outputs={"weights": {"a": 1}, "report": watch}),
                      rec("run_finished", 2, status="succeeded")])
    (bake,) = rep.traffic.bakes
    assert bake.tripped == "probe green"
    assert [(g.name, g.ok, g.warned) for g in bake.gates] == [("probe blue", True, False), ("probe green", False, False)]
