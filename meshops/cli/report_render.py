"""Run reports as one self-contained HTML page, or as Markdown (a PR comment, a CI job summary).

The HTML carries its style inline and its pictures as inline SVG (``report_svg``); it has no
script and loads nothing, so it opens the same from a CI artefact, a mail or a file share.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from meshops import __version__
from meshops.cli.report_svg import TimeAxis, colour, human, nice_step, rel_label, timeline, weights_chart
from meshops.domain.report_model import Report, StepReport, iso

_STATUS_WORDS = {
    "succeeded": "succeeded", "rolled_back": "failed, rolled back", "frozen": "failed, frozen",
    "rollback_failed": "failed, and the rollback failed: a human is needed", "interrupted": "interrupted (resumable)",
    "awaiting_approval": "waiting for approval (resumable)", "running": "running, or its process died",
    "rolling_back": "rolling back, or its process died",
}
_STATUS_COLOUR = {"succeeded": "succeeded", "rolled_back": "failed", "frozen": "failed_continued",
                  "rollback_failed": "failed", "interrupted": "interrupted", "awaiting_approval": "awaiting_approval",
                  "running": "running", "rolling_back": "undo"}


def status_words(status: str) -> str:
    return _STATUS_WORDS.get(status, status.replace("_", " "))


def _counts(rep: Report) -> dict[str, int]:
    work = [s for s in rep.steps if not s.items]  # plain steps and foreach items: what really ran
    top = rep.top_level()
    return {
        "steps": len(top),
        "succeeded": sum(s.status == "succeeded" for s in top),
        "failed": sum(s.status in ("failed", "failed_continued") for s in top),
        "retries": sum(a.outcome == "retried" for s in work for a in s.attempts),
        "skipped": sum(s.status == "skipped" for s in top),
        "undone": sum(s.undo is not None and s.undo.status == "undone" for s in rep.steps),
        "waves": sum(len(g.waves) for g in rep.wave_groups),
    }


def _headline(rep: Report) -> str:
    """Why the run ended as it did. A rollback's own message says only how much it undid; its cause
    (kept on ``rollback_started``) is what a reader wants first."""
    if rep.rollbacks and rep.status in ("rolled_back", "rollback_failed"):
        rb = rep.rollbacks[-1]
        return f"{rb.cause}; {rep.message}" if rb.cause and rb.cause != "requested" else f"rollback requested; {rep.message}"
    return rep.message


# ---- HTML ----------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1d2430;--muted:#6b7482;--line:#e3e7ec;--bg:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1280px;margin:0 auto;padding:22px 26px 40px}
header{display:flex;align-items:center;gap:16px;flex-wrap:wrap}
h1{font-size:21px;margin:0;font-weight:650}
h2{font-size:16px;margin:28px 0 10px;font-weight:650}
.pill{display:inline-block;border-radius:999px;padding:2px 11px;color:#fff;font-weight:600;font-size:13px}
.sub{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(104px,1fr));gap:10px;margin:16px 0 6px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px 14px}
.card b{display:block;font-size:20px;font-weight:650}
.card span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
section.panel{background:#fff;border:1px solid var(--line);border-radius:12px;padding:14px 16px;margin-top:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.nowrap{white-space:nowrap}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
code,pre{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace}
pre{background:var(--bg);padding:8px 10px;border-radius:6px;overflow:auto;max-height:320px;margin:6px 0 0;white-space:pre-wrap}
details summary{cursor:pointer;color:var(--muted)}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:-1px}
.gate{display:inline-block;border-radius:6px;padding:0 7px;margin:1px 4px 1px 0;font-size:12px;border:1px solid}
.gate.ok{color:#1f7a45;border-color:#9bd3b2;background:#eefaf3}.gate.bad{color:#b22f2f;border-color:#efb1b1;background:#fdf0f0}
.gate.unknown{color:var(--muted);border-color:var(--line)}
.gate.warn{color:#9a5b00;border-color:#f0cf94;background:#fff8ea}
.error{color:#b22f2f}
.message{margin:10px 0 0;padding:10px 12px;border-left:4px solid;border-radius:4px;background:#fff}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
svg .label{font-size:13px;fill:#1d2430;font-weight:600}svg .label.sub{font-weight:400}svg .label.muted{fill:#9aa5b1;font-weight:400}
svg .note{font-size:11px;fill:#7a8492}svg .tick{font-size:11px;fill:#7a8492}svg .legend{font-size:12px;fill:#3d4450}
svg .grid{stroke:#e8ebef;stroke-width:1}svg .zebra{fill:#f8f9fb}
svg .rollback{fill:#f4ebfa;stroke:#d9bfe9;stroke-dasharray:4 3}svg .rb-label{font-size:11px;fill:#8e4bb5;font-weight:600}
svg .gap{fill:#eef0f3}svg .gap-label{fill:#5d6673}
svg .span{fill:none;stroke:#9aa5b1;stroke-width:2}svg .bar{stroke:rgba(0,0,0,.18);stroke-width:.6}
svg .waiting{fill-opacity:.55;stroke:#3273c5;stroke-width:1.2}
svg .session{stroke:#3d4450;stroke-width:1.2;stroke-dasharray:2 3}svg .session-label{font-size:11px;fill:#3d4450}
svg .approval circle{fill:#fff;stroke:#2f9e5b;stroke-width:2}svg .approval path{fill:none;stroke:#2f9e5b;stroke-width:2}
svg .retry{stroke-width:2;stroke-dasharray:2 2}
svg .share{fill-opacity:.78}svg .change{stroke:#1d2430;stroke-opacity:.35;stroke-dasharray:3 3}
svg .rollback-change{stroke:#d64545;stroke-opacity:.9;stroke-width:2}
footer{margin-top:26px;color:var(--muted);font-size:12px}
"""


def _pill(text: str, outcome: str) -> str:
    return f'<span class="pill" style="background:{colour(outcome)}">{escape(text)}</span>'


def _dot(outcome: str) -> str:
    return f'<span class="dot" style="background:{colour(outcome)}"></span>'


def _gates_html(gates: list[Any]) -> str:
    out = []
    for g in gates:
        cls, mark = (("warn", "!") if g.warned else ("ok", "✓")) if g.ok else ("unknown", "?") if g.ok is None \
            else ("bad", "✗")
        out.append(f'<span class="gate {cls}" title="{escape(g.detail)}">{mark} {escape(g.name)}</span>')
    return "".join(out) or '<span class="sub">-</span>'


def _list_html(items: list[str], keep: int = 6) -> str:
    if not items:
        return '<span class="sub">-</span>'
    head = ", ".join(escape(i) for i in items[:keep])
    if len(items) <= keep:
        return head
    return (f"{head} <details><summary>and {len(items) - keep} more</summary>"
            f"{', '.join(escape(i) for i in items[keep:])}</details>")


def _rel(rep: Report, ts: float | None) -> str:
    if ts is None or rep.started is None:
        return "-"
    # Offsets as precise as the run is short: "+0.055s" in a quarter-second run, "+12:04" in a long one.
    return rel_label(ts - rep.started, nice_step(max(rep.duration_s or 0.0, 1e-3) / 200))


def _step_row(rep: Report, s: StepReport) -> str:
    dur = None if s.started is None or s.finished is None else s.finished - s.started
    tries = len([a for a in s.attempts if a.outcome != "skipped"])
    undo = "" if s.undo is None else s.undo.status.replace("_", " ")
    detail = ""
    if s.outputs not in (None, {}, []):
        detail = (f"<details><summary>outputs</summary><pre>{escape(json.dumps(s.outputs, indent=2, default=str))}"
                  "</pre></details>")
    err = f'<div class="error">{escape(s.error)}</div>' if s.error else ""
    extra = f'<div class="sub">{escape(s.skipped_reason)}</div>' if s.skipped_reason else ""
    if s.approved_by:
        extra += f'<div class="sub">approved by {escape(s.approved_by)}</div>'
    indent = "&nbsp;&nbsp;&nbsp;&nbsp;" if s.index is not None else ""
    return (f"<tr><td>{indent}<code>{escape(s.key)}</code></td><td>{escape(s.uses or '')}</td>"
            f"<td>{_dot(s.status)}{escape(s.status.replace('_', ' '))}{err}{extra}</td><td>{tries or ''}</td>"
            f"<td>{_rel(rep, s.started)}</td><td>{human(dur) if dur is not None else '-'}</td>"
            f"<td>{escape(undo)}</td><td>{detail}</td></tr>")


def render_html(rep: Report) -> str:
    """The report as one HTML document with inline CSS and SVG."""
    c = _counts(rep)
    title = f"meshops run {rep.run_id}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>",
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<style>{_CSS}</style></head><body><main>",
             f"<header><h1>{escape(rep.playbook or 'run')}</h1>"
             f"{_pill(status_words(rep.status), _STATUS_COLOUR.get(rep.status, rep.status))}"
             f'<span class="sub"><code>{escape(rep.run_id)}</code> · started {escape(iso(rep.started) or "-")}'
             f" · {escape(rep.playbook_path)}</span></header>"]
    if _headline(rep):
        parts.append(f'<div class="message" style="border-color:{colour(_STATUS_COLOUR.get(rep.status, "span"))}">'
                     f"{escape(_headline(rep))}</div>")
    cards = [("wall time", human(rep.duration_s)), ("at work", human(rep.active_s)), ("steps", str(c["steps"])),
             ("succeeded", str(c["succeeded"])), ("failed", str(c["failed"])), ("retries", str(c["retries"])),
             ("waves", str(c["waves"])), ("undone", str(c["undone"])), ("sessions", str(len(rep.sessions)))]
    parts.append('<div class="cards">' + "".join(f"<div class=\"card\"><b>{escape(v)}</b><span>{escape(k)}</span></div>"
                                                  for k, v in cards) + "</div>")
    parts.append(f'<h2>Timeline</h2><section class="panel">{timeline(rep)}</section>')
    if rep.traffic.points or rep.traffic.probes:
        parts.append(f'<h2>Traffic weights and probes</h2><section class="panel">{weights_chart(rep)}'
                     f"{_traffic_table(rep)}</section>")
    for g in rep.wave_groups:
        # Columns only for what the step outputs told: a foreach of log lines has no namespaces.
        cols = [c for c in ("namespaces", "workloads", "gates") if any(getattr(w, c) for w in g.waves)]
        parts.append(f"<h2>Waves: <code>{escape(g.step_id)}</code>"
                     f"{' (concurrency ' + str(g.concurrency) + ')' if g.concurrency else ''}</h2>"
                     '<section class="panel"><table><tr><th>wave</th><th>status</th><th>start</th><th>took</th>'
                     + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
        for w in g.waves:
            took = None if w.started is None or w.finished is None else w.finished - w.started
            cells = {"namespaces": _list_html(w.namespaces), "workloads": _list_html(w.workloads),
                     "gates": _gates_html(w.gates)}
            parts.append(f"<tr><td>{escape(w.label)}</td><td class=\"nowrap\">{_dot(w.status)}"
                         f"{escape(w.status.replace('_', ' '))}</td>"
                         f'<td class="nowrap">{_rel(rep, w.started)}</td><td class="nowrap">{human(took)}</td>'
                         + "".join(f"<td>{cells[c]}</td>" for c in cols) + "</tr>")
        parts.append("</table></section>")
    if rep.failures or rep.rollbacks:
        parts.append('<h2>Failures and rollback</h2><section class="panel">')
        if rep.failures:
            parts.append("<table><tr><th>at</th><th>step</th><th>error</th><th></th></tr>")
            for f in rep.failures:
                kind = "failed the step" if f.final else "retried"
                parts.append(f"<tr><td>{_rel(rep, f.ts)}</td><td><code>{escape(f.step)}</code></td>"
                             f'<td class="error">{escape(f.error)}</td><td class="sub">{kind}</td></tr>')
            parts.append("</table>")
        for rb in rep.rollbacks:
            took = None if rb.finished is None else rb.finished - rb.started
            parts.append(f"<p><b>Rollback</b> at {_rel(rep, rb.started)} ({escape(human(took))}), because: "
                         f"{escape(rb.cause)}. Outcome: {escape((rb.status or 'did not finish').replace('_', ' '))}.</p>"
                         f"<p>Undone, newest first: {_list_html(rb.undone, 12)}</p>")
            if rb.skipped:
                parts.append(f"<p>Passed over (irreversible): {_list_html(rb.skipped, 12)}</p>")
            if rb.failed:
                parts.append(f'<p class="error">Undo failed: {_list_html(rb.failed, 12)}</p>')
        parts.append("</section>")
    parts.append('<h2>Steps</h2><section class="panel"><table><tr><th>step</th><th>uses</th><th>status</th>'
                 "<th>attempts</th><th>start</th><th>took</th><th>undo</th><th></th></tr>")
    parts += [_step_row(rep, s) for s in rep.steps]
    parts.append("</table></section>")
    parts.append(_params_html(rep))
    parts.append(f"<footer>meshops {escape(__version__)} · built from the run's journal only · times are UTC; "
                 "offsets are from the run's start</footer></main></body></html>\n")
    return "".join(parts)


def _params_html(rep: Report) -> str:
    rows = [f"<tr><td><code>{escape(k)}</code></td><td><code>{escape(json.dumps(v, default=str))}</code></td></tr>"
            for k, v in rep.params.items()]
    rows += [f'<tr><td><code>{escape(k)}</code></td><td class="sub">secret: never journaled</td></tr>'
             for k in rep.hidden_params if k not in rep.params]
    if not rows:
        return ""
    return f'<h2>Params</h2><section class="panel"><table>{"".join(rows)}</table></section>'


def _requests_cell(segment: dict[str, Any] | None) -> str:
    """Requests per cluster while one set of weights held: served, failed, share of all."""
    if segment is None:
        return ""
    counts: dict[str, dict[str, int]] = segment["requests"]  # type: ignore[assignment]
    total = sum(v["ok"] + v["failed"] for v in counts.values()) or 1
    return ", ".join(f"{c} {v['ok'] + v['failed']} ({100 * (v['ok'] + v['failed']) / total:.0f}%"
                     f"{', ' + str(v['failed']) + ' failed' if v['failed'] else ''})" for c, v in counts.items()) or "none"


def _segments(rep: Report) -> list[dict[str, Any]] | list[None]:
    tr = rep.traffic
    segments = tr.request_segments(max([r.ts + 1 for r in tr.requests], default=0.0))
    return segments or [None] * len(tr.points)


def _traffic_table(rep: Report) -> str:
    rows = []
    with_requests = bool(rep.traffic.requests)
    for p, seg in zip(rep.traffic.points, _segments(rep), strict=True):
        total = sum(p.weights.values()) or 1
        shares = ", ".join(f"{escape(k)} {w} ({100 * w / total:.0f}%)" for k, w in sorted(p.weights.items()))
        rows.append(f"<tr><td>{_rel(rep, p.ts)}</td><td><code>{escape(p.step)}</code></td><td>{shares}</td>"
                    + (f"<td>{escape(_requests_cell(seg))}</td>" if with_requests else "")
                    + f"<td>{'rollback' if p.rollback else ''}</td></tr>")
    probes = f"<p>{escape(_watch_summary(rep))}</p>"
    head = "<tr><th>at</th><th>step</th><th>weights</th>" + ("<th>requests served meanwhile</th>" if with_requests
                                                               else "") + "<th></th></tr>"
    return "<table>" + head + "".join(rows) + "</table>" + probes


def _watch_summary(rep: Report) -> str:
    """One sentence on what watched the traffic: bakes and their gates, single probe results."""
    tr = rep.traffic
    parts = []
    if tr.bakes:
        evaluations = sum(b.evaluations or 0 for b in tr.bakes)
        tripped = [f"{b.step} ({b.tripped})" for b in tr.bakes if b.tripped]
        parts.append(f"{len(tr.bakes)} bake(s), {evaluations} gate evaluations; "
                     + (f"tripped in {', '.join(tripped)}" if tripped else "no gate tripped"))
    if tr.probes:
        failed = [p for p in tr.probes if not p.ok]
        parts.append(f"{len(tr.probes)} probe results, {len(failed)} failed"
                     + (": " + "; ".join(f"{p.target} at {_rel(rep, p.ts)} ({p.detail})" for p in failed[:5])
                        if failed else ""))
    return ("; ".join(parts) or "no probe or gate results in the journal") + "."


# ---- Markdown ------------------------------------------------------------------------------------


def _mark(g: Any) -> str:
    return ("!" if g.warned else "✓") if g.ok else "?" if g.ok is None else "✗"


def _md_cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _gantt(rep: Report, width: int = 48) -> list[str]:
    """A text timeline for places that show no pictures (a terminal, a CI log)."""
    axis = TimeAxis.for_report(rep)
    axis_width = axis.width
    rows = []
    for s in rep.steps:
        if s.index is not None and len(rep.step(s.step_id).items) > 12:
            continue
        line = [" "] * width
        for a in s.attempts:
            if a.started is None or a.finished is None:
                continue
            c0 = int((axis.x(a.started) - axis.x0) / axis_width * (width - 1))
            c1 = max(c0, int((axis.x(a.finished) - axis.x0) / axis_width * (width - 1)))
            mark = {"succeeded": "█", "failed": "X", "retried": "r", "skipped": "·"}.get(a.outcome, "?")
            for c in range(c0, c1 + 1):
                line[c] = mark
        if s.undo is not None and s.undo.started is not None:
            c = int((axis.x(s.undo.started) - axis.x0) / axis_width * (width - 1))
            line[c] = "↺"
        label = ("  " if s.index is not None else "") + s.key
        rows.append(f"{label[:24]:<24} |{''.join(line)}|")
    end = rel_label(rep.duration_s or 0.0, nice_step(max(rep.duration_s or 0.0, 1e-3) / 200))
    rows.append(f"{'':<24}  {'+0':<{width // 2}}{end:>{width - width // 2}}")
    return rows


def render_markdown(rep: Report) -> str:
    c = _counts(rep)
    out = [f"# {rep.playbook or 'run'}: {status_words(rep.status)}", "",
           f"- run: `{rep.run_id}` ({rep.playbook_path})",
           f"- started {iso(rep.started) or '-'}, finished {iso(rep.finished) or '-'}; wall time "
           f"{human(rep.duration_s)}, at work {human(rep.active_s)} in {len(rep.sessions)} session(s)",
           f"- steps: {c['steps']}; succeeded {c['succeeded']}, failed {c['failed']}, retries {c['retries']}, "
           f"skipped {c['skipped']}, undone {c['undone']}"]
    if _headline(rep):
        out.append(f"- {_headline(rep)}")
    out += ["", "## Timeline", "", "```text", *_gantt(rep), "```", "",
            "| step | uses | status | attempts | start | took | undo |", "|---|---|---|---|---|---|---|"]
    for s in rep.steps:
        took = None if s.started is None or s.finished is None else s.finished - s.started
        tries = len([a for a in s.attempts if a.outcome != "skipped"])
        out.append(f"| `{_md_cell(s.key)}` | {_md_cell(s.uses or '')} | {_md_cell(s.status)} | {tries or ''} | "
                   f"{_rel(rep, s.started)} | {human(took)} | {s.undo.status if s.undo else ''} |")
    for g in rep.wave_groups:
        cols = [c for c in ("namespaces", "workloads", "gates") if any(getattr(w, c) for w in g.waves)]
        out += ["", f"## Waves: `{g.step_id}`", "", "| " + " | ".join(["wave", "status", "start", "took", *cols]) + " |",
                "|" + "---|" * (4 + len(cols))]
        for w in g.waves:
            took = None if w.started is None or w.finished is None else w.finished - w.started
            cells = {"namespaces": ", ".join(w.namespaces) or "-", "workloads": ", ".join(w.workloads) or "-",
                     "gates": ", ".join(f"{_mark(x)} {x.name}" for x in w.gates) or "-"}
            out.append(" | ".join(["", _md_cell(w.label), w.status, _rel(rep, w.started), human(took),
                                   *(_md_cell(cells[c]) for c in cols), ""]).strip())
    if rep.traffic.points or rep.traffic.probes:
        out += ["", "## Traffic", "", "| at | step | weights | requests served meanwhile |", "|---|---|---|---|"]
        for p, seg in zip(rep.traffic.points, _segments(rep), strict=True):
            weights = ", ".join(f"{k} {w}" for k, w in sorted(p.weights.items()))
            out.append(f"| {_rel(rep, p.ts)} | `{p.step}` | {weights}{' (rollback)' if p.rollback else ''} | "
                       f"{_requests_cell(seg) or '-'} |")
        out += ["", _watch_summary(rep)]
    if rep.failures:
        out += ["", "## Failures", ""]
        out += [f"- {_rel(rep, f.ts)} `{f.step}`: {f.error}{'' if f.final else ' (retried)'}" for f in rep.failures]
    for rb in rep.rollbacks:
        out += ["", "## Rollback", "", f"- because: {rb.cause}",
                f"- outcome: {(rb.status or 'did not finish').replace('_', ' ')}",
                f"- undone, newest first: {', '.join(rb.undone) or '-'}"]
        if rb.skipped:
            out.append(f"- passed over (irreversible): {', '.join(rb.skipped)}")
        if rb.failed:
            out.append(f"- undo FAILED: {', '.join(rb.failed)}")
    return "\n".join(out) + "\n"
