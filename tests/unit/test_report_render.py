"""Report rendering: the time axis, the SVG pictures, the self-contained HTML and the Markdown."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from meshops.cli.report_render import render_html, render_markdown
from meshops.cli.report_svg import (
    GAP_PX,
    LABEL_W,
    MAX_ITEM_ROWS,
    TimeAxis,
    rel_label,
    timeline,
    weights_chart,
)
from meshops.domain.report import build
from tests.unit.test_report_model import T0, _shift, rec, started

SVG = "{http://www.w3.org/2000/svg}"


def paused_run() -> list[dict[str, Any]]:
    """Work, an hour's pause at a gate, a resume refused at once, then more work."""
    return [
        started(),
        rec("step_started", 0.0, step="a", attempt=1, inputs={}),
        rec("step_succeeded", 10.0, step="a", attempt=1, outputs={}),
        rec("step_started", 10.0, step="gate", attempt=1, inputs={}),
        rec("run_finished", 10.5, status="awaiting_approval", failed_step="gate", message="approve"),
        rec("approved", 1800.0, step="gate", by="bob"),
        rec("run_resumed", 3000.0, previous_status="awaiting_approval"),  # refused by the lock: no more records
        rec("run_resumed", 3600.0, previous_status="awaiting_approval"),
        rec("step_started", 3600.0, step="gate", attempt=2, inputs={}),
        rec("step_succeeded", 3600.1, step="gate", attempt=2, outputs={"approved": True, "by": "meshops approve"}),
        rec("step_started", 3600.1, step="b", attempt=1, inputs={}),
        rec("step_succeeded", 3620.0, step="b", attempt=1, outputs={}),
        rec("run_finished", 3620.0, status="succeeded"),
    ]


def test_the_time_axis_squeezes_idle_gaps_and_keeps_order() -> None:
    """An hour's pause becomes one fixed-width break; x stays monotone through it and within the plot."""
    rep = build("r", paused_run(), step_types={"gate": "gate.approve"})
    axis = TimeAxis.for_report(rep)
    assert len(axis.segments) == 2 and len(axis.breaks) == 1
    bx, g0, g1 = axis.breaks[0]
    assert (g0 - T0, g1 - T0) == (10.5, 3600.0)
    assert axis.x(T0 + 3600.0) - bx == pytest.approx(GAP_PX)
    # The work gets the plot's width minus the break, shared in proportion to time worked.
    assert axis.x(T0 + 10.5) - axis.x(T0) == pytest.approx((axis.width - GAP_PX) * 10.5 / 30.5)
    times = [T0 + t for t in (0, 5, 10.5, 1800, 3000, 3600, 3610, 3620)]
    xs = [axis.x(t) for t in times]
    assert xs == sorted(xs) and xs[0] == LABEL_W and xs[-1] == pytest.approx(LABEL_W + axis.width)
    assert bx < axis.x(T0 + 1800) < bx + GAP_PX  # the approval lands inside the break


def test_ticks_are_round_offsets_from_the_run_start() -> None:
    """Tick labels are evenly spaced round offsets, none inside a break."""
    rep = build("r", [started(), rec("step_started", 0, step="a", attempt=1, inputs={}),
                      rec("step_succeeded", 125, step="a", attempt=1, outputs={}),
                      rec("run_finished", 125, status="succeeded")])
    labels = [label for _, label in TimeAxis.for_report(rep).ticks()]
    assert labels == ["+0s", "+15s", "+30s", "+45s", "+1:00", "+1:15", "+1:30", "+1:45", "+2:00"]
    assert rel_label(0.25, 0.05) == "+0.25s" and rel_label(3725) == "+1:02:05"


def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_the_timeline_has_a_row_per_step_and_a_bar_per_attempt() -> None:
    """Well-formed SVG; each attempt a bar with a tooltip; the undo hatched; the gap labelled."""
    rep = build("r", paused_run(), step_types={"a": "t.a", "gate": "gate.approve", "b": "t.b", "c": "t.c"})
    root = _svg(timeline(rep))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"a", "gate", "b", "c", "not reached"} <= set(texts)
    assert "⋯1h" in texts  # 10.5 s -> 3600 s: the break's label
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert any(t.startswith("gate attempt 1: awaiting approval") for t in titles)
    assert any(t == "approved by bob" for t in titles)
    bars = [r for r in root.iter(f"{SVG}rect") if "bar" in (r.get("class") or "")]
    assert len(bars) == 4  # a, gate x2, b


def test_a_large_foreach_is_packed_into_lanes() -> None:
    """More items than MAX_ITEM_ROWS are drawn in as many lanes as ran at once, not a row each."""
    n = MAX_ITEM_ROWS + 6
    records = [started(), rec("foreach_started", 0, step="w", items=n, concurrency=3)]
    for i in range(n):
        records += [rec("step_started", (i // 3) * 1.0, step=f"w[{i}]", attempt=1, inputs={}),
                    rec("step_succeeded", (i // 3) * 1.0 + 0.9, step=f"w[{i}]", attempt=1, outputs={})]
    records += [rec("step_succeeded", 11.0, step="w", outputs={}), rec("run_finished", 11, status="succeeded")]
    texts = [t.text for t in _svg(timeline(build("r", records))).iter(f"{SVG}text")]
    assert [t for t in texts if t and t.startswith("lane ")] == ["lane 1", "lane 2", "lane 3"]
    assert not any(t and t.startswith("[") for t in texts)


def test_growing_canary_waves_show_their_size_on_the_timeline() -> None:
    """A canary's waves of 1, 2 and 4 namespaces: each row says how big its wave was (a wave of one
    names its namespace); a wave that failed takes its namespaces from its planned inputs."""
    waves = [["ns-0"], ["ns-1", "ns-2"], ["ns-3", "ns-4", "ns-5", "ns-6"]]
    records = [started(), rec("foreach_started", 0, step="waves", items=3, concurrency=1)]
    for i, names in enumerate(waves):
        records.append(rec("step_started", i * 2.0, step=f"waves[{i}]", attempt=1,
                           inputs={"wave": {"index": i, "namespaces": names, "workloads": 10 * len(names)}}))
        if i < 2:
            records.append(rec("step_succeeded", i * 2.0 + 1.5, step=f"waves[{i}]", attempt=1,
                               outputs={"namespaces": names, "restarted": [f"Deployment/{n}/web" for n in names]}))
    records += [rec("attempt_failed", 5.5, step="waves[2]", attempt=1, error="not ready", temporary=False),
                rec("step_failed", 5.5, step="waves", error="not ready"),
                rec("run_finished", 6.0, status="failed", failed_step="waves", message="failed")]
    rep = build("r", records, step_types={"waves": "istio.move_wave"})
    assert [w.namespaces for w in rep.wave_groups[0].waves] == waves
    assert rep.wave_groups[0].waves[2].workloads == []  # the planned count is not a workload name
    texts = [t.text for t in _svg(timeline(rep)).iter(f"{SVG}text")]
    sizes = ["ns-0", "2 namespaces", "4 namespaces"]
    assert [t for t in texts if t in sizes] == sizes


def test_the_weights_chart_stacks_shares_and_draws_each_bake() -> None:
    """One band per identifier, a rollback line, and a bar per gate per bake coloured by its result."""
    records = [started(), rec("foreach_started", 1.0, step="shift", items=2, concurrency=1),
               *_shift(0, 1.0, 10, [90, 10]), *_shift(1, 4.0, 50, None, failed="probe green: HTTP 503"),
               rec("rollback_started", 5.1, cause="shift[1] failed"),
               rec("undo_started", 5.2, step="shift[1]"), rec("undone", 6.0, step="shift[1]"),
               rec("run_finished", 6.6, status="rolled_back", message="undid 1 step(s)")]
    root = _svg(weights_chart(build("r", records)))
    bands = [p for p in root.iter(f"{SVG}polygon") if p.get("class") == "share"]
    assert [b.find(f"{SVG}title").text for b in bands] == ["blue", "green"]  # type: ignore[union-attr]
    changes = [line for line in root.iter(f"{SVG}line") if "change" in (line.get("class") or "")]
    assert len(changes) == 4 and sum("rollback-change" in (c.get("class") or "") for c in changes) == 2
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert fills.count("#2f9e5b") == 1 and fills.count("#e9a23b") == 1 and fills.count("#d64545") == 1


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_html_is_one_file_with_no_script_and_nothing_to_fetch() -> None:
    """No <script>, no <link>, no src/href to anywhere; the SVGs inline; user text escaped."""
    records = paused_run()
    records[0]["params"] = {"note": "<script>alert(1)</script>"}
    page = render_html(build("r", records))
    parser = _Tags()
    parser.feed(page)
    names = [t for t, _ in parser.tags]
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    refs = [v for _, a in parser.tags for k, v in a.items() if k in ("src", "href") and v]
    assert refs == []
    assert "url(" not in re.sub(r"url\(#\w+\)", "", page)  # only in-document patterns
    assert names.count("svg") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_markdown_has_a_text_timeline_and_tables_that_survive_pipes() -> None:
    """The Markdown carries a text gantt, a steps table with one row per step, and escapes pipes."""
    records = [started(), rec("step_started", 0, step="a", attempt=1, inputs={}),
               rec("attempt_failed", 1, step="a", attempt=1, error="bad | worse", temporary=False),
               rec("step_failed", 1, step="a", error="bad | worse"),
               rec("rollback_started", 1, cause="a failed: bad | worse"),
               rec("run_finished", 1.5, status="rolled_back", message="undid 0 step(s)")]
    md = render_markdown(build("r", records))
    assert md.startswith("# pb: failed, rolled back\n")
    assert "a                        |X" in md
    rows = [line for line in md.splitlines() if line.startswith("| `a`")]
    assert rows == ["| `a` |  | failed | 1 | +0.00s | 1.0 s |  |"]
    assert "- a failed: bad | worse; undid 0 step(s)" in md and "## Rollback" in md


def test_requests_per_cluster_are_shown_beside_each_set_of_weights() -> None:
    """`meshops report --traffic`: the requests each cluster served while each set of weights held, in
    JSON, Markdown and HTML."""
    from meshops.domain.report_model import RequestSample
    from tests.unit.test_report_model import T0

    rep = build("r", [started(), rec("foreach_started", 1.0, step="shift", items=1, concurrency=1),
                      *_shift(0, 1.0, 10, [90, 10]), rec("run_finished", 4.0, status="succeeded")])
    rep.traffic.requests = [RequestSample(ts=T0 + 0.5, cluster="blue", ok=50, failed=0),
                            RequestSample(ts=T0 + 2.0, cluster="blue", ok=45, failed=0),
                            RequestSample(ts=T0 + 2.0, cluster="green", ok=4, failed=1)]
    segments = rep.to_dict()["traffic"]["request_segments"]
    assert [(s["step"], s["requests"]) for s in segments] == [
        ("before", {"blue": {"ok": 50, "failed": 0}}),
        ("shift[0]", {"blue": {"ok": 45, "failed": 0}, "green": {"ok": 4, "failed": 1}})]
    assert "| blue 45 (90%), green 5 (10%, 1 failed) |" in render_markdown(rep)
    assert "requests served meanwhile" in render_html(rep) and "green 5 (10%, 1 failed)" in render_html(rep)
