"""``meshops report RUN_ID``: a run's story from its journal, as HTML, Markdown or JSON."""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

import click

from meshops.cli.app_light import pass_app
from meshops.domain.errors import BadInput

if TYPE_CHECKING:
    from meshops.cli.app import App

_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}


def step_types(playbook_text: str) -> dict[str, str]:
    """Step id -> ``uses``, in playbook order. Read as plain YAML, not validated: a report must
    still render when a step type the run used is no longer installed here."""
    import yaml

    try:
        data = yaml.safe_load(playbook_text)
    except yaml.YAMLError:
        return {}
    steps = data.get("steps") if isinstance(data, dict) else None
    out: dict[str, str] = {}
    for s in steps if isinstance(steps, list) else []:
        if isinstance(s, dict) and isinstance(s.get("id"), str):
            out[s["id"]] = str(s.get("uses", ""))
    return out


@click.command()
@click.argument("run_id")
@click.option("-o", "--output", type=click.Choice(["html", "md", "json"]), default=None,
              help="Format (default: from --out's suffix, else md).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, writable=True),
              help="Write to FILE instead of stdout (written whole or not at all).")
@click.option("--cluster", is_flag=True, help="Look in the cluster's journal too.")
@click.option("--traffic", "traffic_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON lines {ts, cluster, ok, failed} (requests per cluster per second, e.g. from `meshops "
                   "sandbox traffic`): shown beside the weights.")
@pass_app
def report(app: App, run_id: str, output: str | None, out_file: str | None, cluster: bool,
           traffic_file: str | None) -> None:
    """Render RUN_ID's report: what ran, when and for how long, waves, traffic, failures, rollback.

    The HTML is one self-contained file (inline SVG timeline, no scripts, no external assets).
    """
    from meshops.cli import report_render
    from meshops.domain.report import build

    fmt = output or (_SUFFIXES.get(os.path.splitext(out_file)[1].lower(), "md") if out_file else "md")
    local = app.store(cluster=False)
    store = app.store(cluster=cluster or (app.cluster_configured() and not local.exists(run_id)))
    records = store.records(run_id)
    if not records:
        raise BadInput(f"run {run_id} has an empty journal: nothing to report")
    rep = build(run_id, records, step_types=step_types(store.playbook_text(run_id)))
    if traffic_file is not None:
        rep.traffic.requests = read_requests(traffic_file, since=(rep.started or 0.0) - 1.0,
                                             until=(rep.finished or float("inf")) + 120.0)
    text: str
    if fmt == "json":
        text = json.dumps(rep.to_dict(), indent=2, default=_jsonable) + "\n"
    elif fmt == "html":
        text = report_render.render_html(rep)
    else:
        text = report_render.render_markdown(rep)
    if out_file is None:
        click.echo(text, nl=False)
        return
    _write_atomically(out_file, text)
    click.echo(out_file)


def read_requests(path: str, *, since: float, until: float) -> list[Any]:
    """The samples of a ``--traffic`` file inside the run's time (plus the TTLs after it); BadInput names file:line."""
    from meshops.domain.report_model import RequestSample

    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                sample = RequestSample(ts=float(d["ts"]), cluster=str(d["cluster"]), ok=int(d.get("ok", 0)),
                                       failed=int(d.get("failed", 0)))
            except (ValueError, KeyError, TypeError) as exc:
                raise BadInput(f"{path}:{n}: not a {{ts, cluster, ok, failed}} JSON line ({exc})") from None
            if since <= sample.ts <= until:
                out.append(sample)
    return out


def _jsonable(v: Any) -> Any:
    return str(v)


def _write_atomically(path: str, text: str) -> None:
    # A scheduled job publishes the file as an artefact: never leave a half-written one.
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".report-", suffix=".tmp")
    except OSError as exc:
        raise BadInput(f"--out {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
