"""``meshops install`` (runs ``playbooks/install.yaml``) and ``meshops tune`` (reads Prometheus).

Both check everything they were given before anything is touched: a bad profile, overlay,
``--set`` path, version or revision is exit 2 with the field named.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import click

from meshops.cli.app_light import pass_app
from meshops.domain.errors import BadInput

REVISION = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
VERSION = re.compile(r"^\d+\.\d+\.\d+\S*$")


def playbook_path(name: str) -> str:
    for base in (os.environ.get("MESHOPS_PLAYBOOKS"), str(Path(__file__).resolve().parents[2] / "playbooks")):
        if base and (Path(base) / name).is_file():
            return str(Path(base) / name)
    raise BadInput(f"cannot find playbooks/{name}; set MESHOPS_PLAYBOOKS")


def _duration(text: str, flag: str) -> float:
    from meshops.domain.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise BadInput(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise BadInput(f"{flag}: must be more than 0")
    return seconds


def _default_version(explicit_istioctl: str | None) -> str:
    from meshops.drivers.istioctl import client_version

    path = explicit_istioctl or shutil.which("istioctl")
    found = client_version(path) if path else None
    if not found:
        raise BadInput("--version: not given, and no istioctl on PATH to take it from")
    return found


@click.command()
@click.option("--profile", "profiles", multiple=True, metavar="NAME|FILE",
              help="A profile from profiles/ or an IstioOperator file; repeat to compose, later ones win.")
@click.option("--version", "version", default=None, help="Istio version (default: the istioctl on PATH's).")
@click.option("--revision", default="", help="Install as this revision (canary); default: unrevisioned.")
@click.option("--tuning", type=click.Path(dir_okay=False), default=None,
              help="The overlay `meshops tune -o yaml` wrote, applied after the profiles.")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="Set one IstioOperator field (last wins).")
@click.option("--diff", is_flag=True, help="Show what would change against what is installed; change nothing.")
@click.option("--dry-run", is_flag=True, help="Print the merged overlay; change nothing.")
@click.option("--istioctl", "istioctl_path", default=None, type=click.Path(dir_okay=False, exists=True),
              help="The istioctl binary (default: istioctl-<version>, then istioctl, on PATH).")
@click.option("--readiness-timeout", default="10m", show_default=True, help="How long to wait for the components.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Answer yes to approval gates.")
@pass_app
def install(app: object, profiles: tuple[str, ...], version: str | None, revision: str, tuning: str | None,
            sets: tuple[str, ...], diff: bool, dry_run: bool, istioctl_path: str | None, readiness_timeout: str,
            assume_yes: bool) -> None:
    """Install Istio from composed profiles with the istioctl of that version, and record the overlay."""
    from meshops.cli.app import App, stop_on_signals
    from meshops.engine.playbook import load_playbook, resolve_params
    from meshops.ops.install_overlay import render_install_overlay

    assert isinstance(app, App)
    if revision and (not REVISION.match(revision) or revision == "default"):
        raise BadInput(f"--revision {revision!r}: a revision is a DNS label (a-z, 0-9, '-'; no dots: 1-24-1), "
                       "and 'default' is reserved")
    if version is not None and not VERSION.match(version):
        raise BadInput(f"--version {version!r}: expected an Istio version such as 1.24.1")
    rendered = render_install_overlay(profiles, sets=sets, tuning=tuning)
    timeout = _duration(readiness_timeout, "--readiness-timeout")
    if version is not None:
        _refuse_removed(rendered.spec, version)
    if dry_run and not diff:
        header = (f"profiles: {', '.join(profiles)}" + (f"; tuning: {tuning}" if tuning else "")
                  + f"\nistioctl {version or '<version>'} install -f <this file>"
                  + (f" --revision {revision}" if revision else ""))
        click.echo(header_comment(header) + rendered.text, nl=False)
        return
    if version is None:
        version = _default_version(istioctl_path)
    _refuse_removed(rendered.spec, version)
    from meshops.cli import idempotent, output
    loaded = load_playbook(playbook_path("install.yaml"))
    params = resolve_params(loaded.playbook, {
        "overlay": rendered.text, "profiles": list(profiles) + ([f"tuning:{tuning}"] if tuning else []),
        "version": version, "revision": revision, "readiness_timeout": timeout,
        "istioctl": os.path.abspath(istioctl_path) if istioctl_path else ""})
    if diff:
        # The diff is the plan of the install playbook: its snapshot really runs (read-only) on
        # dry-run drivers and the install step compares the overlay with what it found.
        from meshops.engine.runner import Engine

        planned = {p.step_id: p for p in Engine(store=app.store(cluster=False), drivers=app.drivers).plan(loaded, params)}
        for p in planned.values():
            if p.error:
                click.echo(f"meshops: note: {p.step_id} would fail now: {p.error}", err=True)
        step = planned.get("install")
        if step is None or not step.note:
            raise BadInput(f"cannot diff: {(step.error or step.note) if step else 'no install step'}")
        click.echo(step.note)
        return
    from meshops.drivers.istioctl import find_istioctl

    fmt = output.fmt_of()
    output.run_command(fmt)
    find_istioctl(version, explicit=istioctl_path)  # BadInput (exit 2) before anything runs
    idempotent.refuse_if_unfinished(app, ("install",))
    done = idempotent.install_done(app, overlay=rendered.text, version=version, revision=revision)
    if done is not None:
        output.notice(done, event="install.nothing_to_do")
        output.finish(fmt, run_id=None, status="nothing_to_do", summary=done, table=done)
        return
    output.confirm_change(f"install Istio {version} revision {revision or 'default'} on context "
                          f"{app.kube_context or 'current'}", assume_yes=assume_yes)
    with stop_on_signals() as stop:
        result = app.engine(cluster=True, assume_yes=assume_yes, stop=stop).start(loaded, params)
    summary = (f"Istio {version} revision {revision or 'default'} installed from {', '.join(profiles)}; "
               "overlay recorded in istio-system/meshops-install-overlay")
    output.finish(fmt, run_id=result.run_id, status=result.status, summary=summary,
                  table=f"{result.run_id} {result.status}: {summary}")


def _refuse_removed(spec: dict[str, Any], version: str) -> None:
    """Exit 2 naming each setting the target version removed (reference §7), e.g. first-party-jwt."""
    from meshops.domain.versions import IstioVersion, VersionError
    from meshops.ops.istio_settings import bad_input, removed_settings

    try:
        minor = IstioVersion.parse(version).minor
    except VersionError:
        return
    removed = removed_settings(spec, minor)
    if removed:
        raise bad_input(removed, version)


def header_comment(text: str) -> str:
    return "".join(f"# {line}\n" for line in text.splitlines())


def _until(text: str | None) -> float | None:
    if text is None:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    from datetime import datetime

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"--until {text!r}: expected unix seconds or an ISO 8601 time (2024-05-01T12:00:00Z)") from None
    if dt.tzinfo is None:
        raise BadInput(f"--until {text!r}: give a time zone (Z or +hh:mm)")
    return dt.timestamp()


@click.command()
@click.option("--prometheus", "url", required=True, envvar="MESHOPS_PROMETHEUS", help="Prometheus base URL.")
@click.option("--window", default="7d", show_default=True, help="How far back to look.")
@click.option("--until", default=None, help="End of the window (unix seconds or ISO 8601; default: now).")
@click.option("--percentile", default=95.0, show_default=True, type=float, help="Percentile for requests.")
@click.option("--limit-percentile", default=None, type=float,
              help="Percentile for limits (default: 99, or --percentile if higher).")
@click.option("--min-samples", default=100, show_default=True, type=int,
              help="Fewer usage points (one per --resolution) than this is 'not enough data'.")
@click.option("--resolution", default="auto", show_default=True,
              help="One usage point per this much time (the rate window too); coarser is cheaper, smoother. "
                   "auto: 5m, coarser for windows over 3.5d (about 1000 points: 7d -> 10m).")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Sidecars in this namespace only (repeatable).")
@click.option("--istio-namespace", default="istio-system", show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "text", "json", "yaml"]), default="table", show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Also write tuning-overlay.yaml and proxy-annotations.yaml here.")
@click.option("--timeout", default="60s", show_default=True,
              help="Per-query timeout. A bearer token for Prometheus is read from $MESHOPS_PROMETHEUS_TOKEN.")
def tune(url: str, window: str, until: str | None, percentile: float, limit_percentile: float | None, min_samples: int,
         resolution: str, namespaces: tuple[str, ...], istio_namespace: str, output: str, out_dir: str | None, timeout: str) -> None:
    """Recommend requests and limits for istiod, gateways and sidecars from what Prometheus saw.

    It runs playbooks/tune.yaml: a read-only gather step, then (with --out-dir) a step writing
    the two files."""
    from meshops.cli.app import app_from
    from meshops.domain.tuning import Policy
    from meshops.drivers.live import LiveDrivers
    from meshops.engine.journal import RunState
    from meshops.engine.playbook import load_playbook, resolve_params
    from meshops.engine.runner import Engine
    from meshops.ops.tune_gather import resolution_for
    from meshops.steps.tune_recommend import GatherOutputs

    window_s = _duration(window, "--window")
    step = float(resolution_for(window_s)) if resolution == "auto" else _duration(resolution, "--resolution")
    if step < 60 or step != int(step):
        raise BadInput(f"--resolution {resolution}: a whole number of seconds, at least 1m (rate() needs 2 samples)")
    if window_s < 2 * step:
        shown = f"auto: {int(step) // 60}m" if resolution == "auto" else resolution
        raise BadInput(f"--window {window}: at least twice --resolution ({shown})")
    limit = limit_percentile if limit_percentile is not None else max(99.0, percentile)
    try:
        Policy(percentile=percentile, limit_percentile=limit, min_samples=min_samples)
    except ValueError as exc:
        raise BadInput(f"--percentile/--limit-percentile/--min-samples: {exc}") from None
    loaded = load_playbook(playbook_path("tune.yaml"))
    params = resolve_params(loaded.playbook, {
        "prometheus": url, "window_seconds": window_s, "until": _until(until) or 0, "step_seconds": int(step),
        "namespaces": list(namespaces), "istio_namespace": istio_namespace, "percentile": percentile,
        "limit_percentile": limit, "min_samples": min_samples, "out_dir": out_dir or ""})
    app = app_from(click.get_current_context())
    # The per-query timeout is this command's own; the token comes from the one settings builder.
    drivers = LiveDrivers(app.driver_settings(prometheus_timeout=_duration(timeout, "--timeout")))
    engine = Engine(store=app.store(cluster=False), drivers=drivers)
    result = engine.start(loaded, params)
    state = RunState.replay(result.run_id, engine.store.records(result.run_id))
    gathered = GatherOutputs.model_validate(state.steps["gather"].outputs)
    if output == "json":
        import json

        click.echo(json.dumps([gathered.overlay, gathered.annotations], indent=2, default=str))
    else:
        click.echo(gathered.yaml if output == "yaml" else gathered.table, nl=output != "yaml")
