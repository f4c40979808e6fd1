"""The pictures in a run report: a timeline of steps and a weights-over-time chart, as inline SVG.

Plain SVG 1.1 with ``<title>`` tooltips: it needs no script, no font and no file beside it, so
the HTML report is one file that opens anywhere (a CI artefact, a mail attachment). Both
pictures share one time axis, so a weight change lines up with the step that made it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from meshops.domain.durations import format_duration
from meshops.domain.report_model import Report, StepReport
from meshops.domain.report_outputs import label_of

WIDTH = 1240
LABEL_W = 250
RIGHT = 24
ROW_H = 24
BAR_H = 14
AXIS_H = 40
GAP_PX = 46
# Above this many items a foreach is drawn as packed lanes, not one row per item: 200
# namespaces would otherwise make a picture nobody scrolls through.
MAX_ITEM_ROWS = 24

COLOURS = {
    "succeeded": "#2f9e5b", "failed": "#d64545", "retried": "#e9a23b", "retrying": "#e9a23b",
    "skipped": "#b8c0ca", "interrupted": "#7c8594", "awaiting_approval": "#3273c5", "killed": "#3d4450",
    "running": "#6aa9df", "undo": "#8e4bb5", "span": "#9aa5b1", "failed_continued": "#e0873a",
}
SERIES = ["#2f6fd6", "#2f9e5b", "#e9a23b", "#8e4bb5", "#d64545", "#14a3a3"]


def colour(outcome: str) -> str:
    return COLOURS.get(outcome, "#9aa5b1")


# ---- time axis ------------------------------------------------------------------------------


@dataclass
class TimeAxis:
    """Maps times to x. Long idle gaps between sessions (a paused gate, a killed run resumed an
    hour later) are squeezed into a fixed-width break so the work stays readable; what happens
    inside a gap (a resume refused by the lock, an approval) still lands inside its break."""

    origin: float
    segments: list[tuple[float, float]]
    x0: float = LABEL_W
    width: float = WIDTH - LABEL_W - RIGHT
    breaks: list[tuple[float, float, float]] = field(default_factory=list)  # (x, gap start, gap end)

    @classmethod
    def for_report(cls, rep: Report) -> TimeAxis:
        spans = sorted((s.started, s.finished or s.last_seen) for s in rep.sessions)
        if not spans:
            ts = [a.started for s in rep.steps for a in s.attempts if a.started is not None]
            spans = [(min(ts), max(ts))] if ts else [(0.0, 1.0)]
        active = sum(max(0.0, e - s) for s, e in spans)
        merged: list[tuple[float, float]] = []
        for s, e in spans:
            if merged and s - merged[-1][1] <= max(2.0, 0.25 * active):
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((s, e))
        # A session too short to see (a resume refused at once) gets no stretch of its own: it
        # falls inside the break around it, so breaks do not pile up side by side.
        longest = max(e - s for s, e in merged)
        kept = [(s, e) for s, e in merged if e - s >= 0.03 * active or e - s == longest]
        first, last = spans[0][0], max(e for _, e in spans)
        kept[0] = (min(kept[0][0], first), kept[0][1])
        kept[-1] = (kept[-1][0], max(kept[-1][1], last))
        return cls(origin=rep.started if rep.started is not None else first, segments=kept)

    def __post_init__(self) -> None:
        usable = self.width - GAP_PX * (len(self.segments) - 1)
        total = sum(max(e - s, 1e-3) for s, e in self.segments)
        self.scale = usable / total  # px per second
        self._starts: list[float] = []
        x = self.x0
        for n, (s, e) in enumerate(self.segments):
            self._starts.append(x)
            x += max(e - s, 1e-3) * self.scale
            if n + 1 < len(self.segments):
                self.breaks.append((x, e, self.segments[n + 1][0]))
                x += GAP_PX

    def x(self, t: float) -> float:
        for n, ((s, e), sx) in enumerate(zip(self.segments, self._starts, strict=True)):
            if t <= e or n + 1 == len(self.segments):
                return sx + (min(max(t, s), e) - s) * self.scale
            following = self.segments[n + 1][0]
            if t < following:
                # Inside a gap: squeezed linearly into the break (5 px of margin each side).
                bx = sx + max(e - s, 1e-3) * self.scale
                return bx + 5 + (t - e) / (following - e) * (GAP_PX - 10)
        return self.x0 + self.width

    def ticks(self, target_px: float = 95.0) -> list[tuple[float, str]]:
        step = nice_step(target_px / self.scale)
        out = []
        for s, e in self.segments:
            k = math.ceil((s - self.origin) / step - 1e-9)
            while self.origin + k * step <= e + 1e-9:
                rel = k * step
                out.append((self.x(self.origin + rel), rel_label(rel, step)))
                k += 1
        return out


def nice_step(seconds: float) -> float:
    for s in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600,
              900, 1800, 3600, 7200, 14400, 21600, 43200, 86400):
        if s >= seconds:
            return float(s)
    return 86400.0 * math.ceil(seconds / 86400)


def rel_label(seconds: float, step: float = 1.0) -> str:
    """``+0.25s``, ``+12s``, ``+3:05``, ``+1:02:00``: an offset from the run's start."""
    if step < 1 and seconds < 60:
        digits = max(0, -math.floor(math.log10(step) + 1e-9))
        return f"+{seconds:.{digits}f}s"
    if seconds < 60:
        return f"+{seconds:.0f}s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"+{m}:{s:02d}"
    h, m = divmod(m, 60)
    return f"+{h}:{m:02d}:{s:02d}"


def human(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds, spaced=True)


# ---- timeline ---------------------------------------------------------------------------------


@dataclass
class _Bar:
    t0: float
    t1: float
    outcome: str
    title: str
    style: str = "solid"  # solid | undo | span | mark


@dataclass
class _Row:
    label: str
    note: str
    indent: int
    bars: list[_Bar]
    muted: bool = False


def _step_bars(s: StepReport, origin: float) -> list[_Bar]:
    bars = []
    tried = [a for a in s.attempts if a.started is not None and a.finished is not None and a.outcome != "skipped"]
    if len(tried) > 1:
        # A thin line under the attempts: the back-off between them belongs to the step too.
        retried = any(a.outcome == "retried" for a in tried)
        bars.append(_Bar(tried[0].started or 0.0, tried[-1].finished or 0.0, "retried" if retried else "span",
                         f"{s.key}: {len(tried)} attempts" + ("" if retried else " across sessions"), "retry"))
    for a in s.attempts:
        if a.started is None or a.finished is None:
            continue
        what = a.outcome.replace("_", " ")
        title = f"{s.key} attempt {a.number}: {what}, {human(a.finished - a.started)} from {rel_label(a.started - origin)}"
        if a.start_inferred:
            title += " (start inferred: this step writes no start record)"
        if a.error:
            title += f"\n{a.error}"
        bars.append(_Bar(a.started, a.finished, a.outcome, title, "mark" if a.outcome == "skipped" else "solid"))
    if s.undo is not None and s.undo.started is not None:
        end = s.undo.finished or s.undo.started
        label = {"undone": "undone", "undo_failed": "undo FAILED", "undo_skipped": "not undone (irreversible)",
                 "undoing": "undo cut off"}[s.undo.status]
        title = f"{s.key}: {label}" + (f"\n{s.undo.error}" if s.undo.error else "")
        bars.append(_Bar(s.undo.started, end, "undo" if s.undo.status != "undo_failed" else "failed", title,
                         "mark" if s.undo.status == "undo_skipped" else "undo"))
    if s.approved_at is not None:
        bars.append(_Bar(s.approved_at, s.approved_at, "succeeded", f"approved by {s.approved_by}", "approval"))
    return bars


def _rows(rep: Report, origin: float) -> list[_Row]:
    rows = []
    for s in rep.top_level():
        note = s.uses or ""
        if s.status == "not_run":
            rows.append(_Row(s.key, "not reached", 0, [], muted=True))
            continue
        if not s.items:
            rows.append(_Row(s.key, note, 0, _step_bars(s, origin)))
            continue
        items = [rep.step(k) for k in s.items]
        spans = [_Bar(a, b, "span", f"{s.key}: foreach, concurrency {s.concurrency}", "span")
                 for a, b in s.spans if b is not None]
        rows.append(_Row(s.key, f"{note} x{len(items)}", 0, spans))
        if len(items) <= MAX_ITEM_ROWS:
            sizes = _wave_sizes(rep, s.key)
            rows += [_Row(f"[{i.index}]", sizes.get(i.key) or _item_note(i), 1, _step_bars(i, origin)) for i in items]
            continue
        # Greedy interval packing: as many lanes as items ran at once.
        lanes: list[list[_Bar]] = []
        ends: list[float] = []
        for bar in sorted((b for i in items for b in _step_bars(i, origin)), key=lambda b: b.t0):
            lane = next((n for n, e in enumerate(ends) if e <= bar.t0), None)
            if lane is None:
                lanes.append([])
                ends.append(bar.t1)
                lane = len(lanes) - 1
            lanes[lane].append(bar)
            ends[lane] = max(ends[lane], bar.t1)
        rows += [_Row(f"lane {n + 1}", f"{len(b)} bars", 1, b) for n, b in enumerate(lanes)]
    return rows


def _wave_sizes(rep: Report, step_id: str) -> dict[str, str]:
    """Item key -> how many namespaces its wave moved, where that is more than one (a wave of one
    is named instead): a canary's waves grow, 1, 2, 4, ... namespaces, and the rows show it."""
    return {w.key: f"{len(w.namespaces)} namespaces" for g in rep.wave_groups if g.step_id == step_id
            for w in g.waves if len(w.namespaces) > 1}


def _item_note(item: StepReport) -> str:
    return label_of(item.outputs, item.inputs) or _first_text(item.inputs, "message")


def _first_text(data: object, key: str) -> str:
    return str(data.get(key) or "") if isinstance(data, dict) else ""


def _text(x: float, y: float, s: str, *, cls: str = "", anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(s)}</text>'


def _defs() -> str:
    return ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#8e4bb5"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#d9bfe9" stroke-width="2.2"/></pattern>'
            '<pattern id="killed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
            '<rect width="6" height="6" fill="#3d4450"/><line x1="0" y1="0" x2="0" y2="6" stroke="#8a93a0" '
            'stroke-width="2"/></pattern></defs>')


def timeline(rep: Report) -> str:
    """The run as bars on a time axis: one row per step (and per wave), coloured by outcome."""
    axis = TimeAxis.for_report(rep)
    rows = _rows(rep, axis.origin)
    height = AXIS_H + ROW_H * max(len(rows), 1) + 56
    plot_top, plot_bottom = AXIS_H, AXIS_H + ROW_H * len(rows)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
           f'role="img" aria-label="timeline of run {escape(rep.run_id)}" class="timeline">', _defs()]
    for n in range(len(rows)):
        if n % 2:
            out.append(f'<rect x="0" y="{plot_top + n * ROW_H}" width="{WIDTH}" height="{ROW_H}" class="zebra"/>')
    for rb in rep.rollbacks:
        x0, x1 = axis.x(rb.started), axis.x(rb.finished or rep.last_ts or rb.started)
        out.append(f'<rect x="{x0:.1f}" y="{plot_top - 14}" width="{max(x1 - x0, 2):.1f}" '
                   f'height="{plot_bottom - plot_top + 14}" class="rollback"><title>{escape("rollback: " + rb.cause)}'
                   f'</title></rect>')
        near_end = x0 > WIDTH - RIGHT - 60
        out.append(_text(x1 - 4 if near_end else x0 + 4, plot_top - 4, "rollback", cls="rb-label",
                         anchor="end" if near_end else "start"))
    for x, label in axis.ticks():
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_top - 6}" y2="{plot_bottom}" class="grid"/>')
        out.append(_text(x, plot_top - 18, label, cls="tick", anchor="middle"))
    for x, g0, g1 in axis.breaks:
        out.append(f'<rect x="{x + 3:.1f}" y="{plot_top - 30}" width="{GAP_PX - 6}" height="{plot_bottom - plot_top + 30}" '
                   f'class="gap"><title>nothing ran for {escape(human(g1 - g0))}</title></rect>')
        out.append(_text(x + GAP_PX / 2, plot_top - 18, f"⋯{_short(g1 - g0)}", cls="tick gap-label", anchor="middle"))
    for n, row in enumerate(rows):
        y = plot_top + n * ROW_H
        cls = "label muted" if row.muted else "label sub" if row.indent else "label"
        out.append(_text(12 + 16 * row.indent, y + 16, _clip(row.label, 26 - 2 * row.indent), cls=cls))
        if row.note:
            out.append(_text(LABEL_W - 10, y + 16, _clip(_short_type(row.note), 18), cls="note", anchor="end"))
        for bar in row.bars:
            out.append(_bar(axis, bar, y))
    label_end = -1.0
    for s in (s for s in rep.sessions if s.kind != "run"):
        x = axis.x(s.started)
        how = "ended" if s.status else "left no end record (killed, or refused by the lock)"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_top - 8}" y2="{plot_bottom}" class="session">'
                   f'<title>{escape(s.kind)} at {escape(rel_label(s.started - axis.origin))}; {how}'
                   f'{" " + escape(s.status.replace("_", " ")) if s.status else ""}</title></line>')
        if x > label_end:  # labels of sessions close together would overprint each other
            out.append(_text(x + 3, plot_bottom + 12, s.kind, cls="session-label"))
            label_end = x + 8 + 6.5 * len(s.kind)
    out.append(_legend(plot_bottom + 30))
    out.append("</svg>")
    return "".join(out)


def _bar(axis: TimeAxis, bar: _Bar, y: float) -> str:
    x0, x1 = axis.x(bar.t0), axis.x(bar.t1)
    title = f"<title>{escape(bar.title)}</title>"
    if bar.style == "span":
        return (f'<path d="M{x0:.1f},{y + 15} v-6 H{max(x1, x0 + 2):.1f} v6" class="span">{title}</path>')
    if bar.style == "retry":
        return (f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y + ROW_H / 2}" y2="{y + ROW_H / 2}" class="retry" '
                f'stroke="{colour(bar.outcome)}">{title}</line>')
    if bar.style == "approval":
        return (f'<g class="approval"><circle cx="{x0:.1f}" cy="{y + 12}" r="6"/>'
                f'<path d="M{x0 - 3:.1f},{y + 12} l2.2,2.4 l4,-5"/>{title}</g>')
    if bar.style == "mark":
        fill = "#b8c0ca" if bar.outcome == "skipped" else colour(bar.outcome)
        return (f'<path d="M{x0:.1f},{y + 5} l6,7 l-6,7 l-6,-7 z" fill="{fill}" class="mark">{title}</path>')
    fill = "url(#hatch)" if bar.style == "undo" else "url(#killed)" if bar.outcome == "killed" else colour(bar.outcome)
    dash = ' stroke-dasharray="3 2" class="bar waiting"' if bar.outcome in ("awaiting_approval", "running") else ' class="bar"'
    return (f'<rect x="{x0:.1f}" y="{y + (ROW_H - BAR_H) / 2:.1f}" width="{max(x1 - x0, 3):.1f}" height="{BAR_H}" '
            f'rx="3" fill="{fill}"{dash}>{title}</rect>')


def _legend(y: float) -> str:
    items = [("succeeded", "succeeded"), ("failed", "failed"), ("retried", "retried attempt"),
             ("awaiting_approval", "awaiting approval"), ("interrupted", "interrupted"), ("killed", "process died"),
             ("undo", "undone in rollback"), ("skipped", "skipped")]
    out: list[str] = []
    x = float(LABEL_W)
    for outcome, label in items:
        fill = "url(#hatch)" if outcome == "undo" else "url(#killed)" if outcome == "killed" else colour(outcome)
        out.append(f'<rect x="{x}" y="{y - 10}" width="14" height="12" rx="2" fill="{fill}"/>')
        out.append(_text(x + 19, y, label, cls="legend"))
        x += 26 + 7.2 * len(label)
    return "".join(out)


def _short(seconds: float) -> str:
    """A gap's length in at most five characters (a break is 46 px wide): 40s, 12m, 1.5h, 3d."""
    if seconds < 1:
        return "<1s"
    if seconds < 59.5:
        return f"{seconds:.0f}s"
    if seconds < 59.5 * 60:
        return f"{seconds / 60:.0f}m"
    for unit, size in (("h", 3600), ("d", 86400)):
        if unit == "d" or seconds < 23.95 * 3600:
            value = seconds / size
            return f"{value:.1f}".removesuffix(".0") + unit if value < 9.95 else f"{value:.0f}{unit}"
    raise AssertionError("unreachable")


def _short_type(note: str) -> str:
    """``switchover.check_inputs`` -> ``check_inputs`` when the whole name does not fit."""
    return note.split(".", 1)[1] if len(note) > 18 and "." in note.split(" ", 1)[0] else note


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# ---- weights over time ---------------------------------------------------------------------------


def weights_chart(rep: Report) -> str:
    """Each identifier's share of the traffic as stacked steps; beneath, one row per probe or gate
    with its result over each bake (and single probe results as dots, when steps journal them)."""
    tr = rep.traffic
    axis = TimeAxis.for_report(rep)
    ids = tr.identifiers
    rows = sorted({g.name for b in tr.bakes for g in b.gates} | {p.target for p in tr.probes})[:10]
    top, chart_h = 34, 180
    probe_top = top + chart_h + 30
    height = probe_top + 20 * max(len(rows), 1) + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
           f'aria-label="traffic weights over time" class="weights">', _defs()]
    for pct in (0, 25, 50, 75, 100):
        y = top + chart_h * (1 - pct / 100)
        out.append(f'<line x1="{LABEL_W}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(_text(LABEL_W - 8, y + 4, f"{pct}%", cls="tick", anchor="end"))
    out.append(_text(12, top + 14, "share of traffic", cls="label"))
    for x, label in axis.ticks():
        out.append(_text(x, height - 10, label, cls="tick", anchor="middle"))
    out += _shares(rep, axis, ids, top, chart_h)
    for k, ident in enumerate(ids):
        out.append(f'<rect x="{LABEL_W + 130 * k}" y="6" width="14" height="12" rx="2" fill="{SERIES[k % len(SERIES)]}"/>')
        out.append(_text(LABEL_W + 130 * k + 19, 16, ident, cls="legend"))
    if rows:
        out.append(_text(12, probe_top - 10, "probes and gates", cls="label"))
    for n, name in enumerate(rows):
        y = probe_top + 20 * n
        shown = name.replace("https://", "").replace("http://", "")
        out.append(_text(LABEL_W - 8, y + 4, _clip(shown, 36), cls="note", anchor="end"))
        for b in tr.bakes:
            for g in (g for g in b.gates if g.name == name):
                x0, x1 = axis.x(b.started), axis.x(b.ended)
                outcome = "failed" if not g.ok else "retried" if g.warned else "succeeded"
                out.append(f'<rect x="{x0:.1f}" y="{y - 6}" width="{max(x1 - x0, 4):.1f}" height="12" rx="3" '
                           f'fill="{colour(outcome)}" class="bar"><title>{escape(name)} during {escape(b.step)}: '
                           f'{escape(g.detail)}</title></rect>')
        for p in (p for p in tr.probes if p.target == name):
            verdict = "ok" if p.ok else "FAILED"
            out.append(f'<circle cx="{axis.x(p.ts):.1f}" cy="{y}" r="4.5" fill="{colour("succeeded" if p.ok else "failed")}" '
                       f'class="bar"><title>{escape(name)} {verdict} at {escape(rel_label(p.ts - axis.origin))}'
                       f'{escape(" (" + p.detail + ")") if p.detail else ""}</title></circle>')
    if not rows:
        out.append(_text(LABEL_W, probe_top + 4, "no probe or gate results in the journal", cls="note"))
    out.append("</svg>")
    return "".join(out)


def _shares(rep: Report, axis: TimeAxis, ids: list[str], top: float, chart_h: float) -> list[str]:
    # Stacked shares: identifier k's band spans cumulative shares [k-1, k] until the next change.
    points = rep.traffic.points
    end = rep.last_ts or (points[-1].ts if points else 0.0)
    out = []
    for k, ident in enumerate(ids):
        upper, lower = [], []
        for n, p in enumerate(points):
            t1 = points[n + 1].ts if n + 1 < len(points) else end
            total = sum(p.weights.values()) or 1
            below = sum(p.weights.get(i, 0) for i in ids[:k]) / total
            upto = below + p.weights.get(ident, 0) / total
            for t in (p.ts, t1):
                upper.append((axis.x(t), top + chart_h * (1 - upto)))
                lower.append((axis.x(t), top + chart_h * (1 - below)))
        if upper:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in upper + lower[::-1])
            out.append(f'<polygon points="{pts}" fill="{SERIES[k % len(SERIES)]}" class="share">'
                       f"<title>{escape(ident)}</title></polygon>")
    for p in points:
        x = axis.x(p.ts)
        label = " / ".join(f"{i} {p.weights.get(i, 0)}" for i in ids)
        note = " (rollback)" if p.rollback else " (being set when the step failed)" if p.attempted else ""
        cls = "change rollback-change" if p.rollback or p.attempted else "change"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + chart_h}" class="{cls}">'
                   f"<title>{escape(p.step)}: {escape(label)}{note}</title></line>")
        if p.rollback:
            out.append(_text(x + 4, top + 12, "rollback", cls="rb-label"))
    return out
