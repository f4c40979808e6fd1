"""``meshops sandbox``: start, stop and inspect a local sandbox of simulated clusters.

The main meshops CLI mounts this group lazily (``meshops.sandbox.cli:sandbox``); it also runs
on its own as ``python -m meshops.sandbox``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from .istio.cli_options import ISTIO_EXTENSION, fault_command, fold_istio_flags, istio_flags
from .traffic_cli import traffic_command

# After Istio (it needs the ingress Services and the Route53 endpoint): load balancers in moto's ELB.
ELB_EXTENSION = "meshops.sandbox.elb:configure"
# After ELB (it needs the final hostnames); does nothing unless --options-json has "external_dns".
EXTERNAL_DNS_EXTENSION = "meshops.sandbox.external_dns:configure"
_DEFAULT_CLUSTERS = "blue,green"
_DEFAULT_VERSION = "1.30.4"


def _cluster_names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise click.BadParameter("name at least one cluster")
    for name in names:
        if not name.replace("-", "").isalnum() or not name[0].isalpha() or name.lower() != name:
            raise click.BadParameter(f"{name!r}: cluster names are lower-case letters, digits and '-'")
    if len(set(names)) != len(names):
        raise click.BadParameter("cluster names must be unique")
    return names


def _options(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object")
    return parsed


def _common(fn: Any) -> Any:
    for option in reversed([
        click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Directory for kubeconfig, env, audit logs, log and pid files."),
        click.option("--clusters", default=_DEFAULT_CLUSTERS, show_default=True, help="Comma-separated cluster names (with --scenario, each gets the scenario's mesh)."),
        click.option("--k8s-version", default=_DEFAULT_VERSION, show_default=True, help="Kubernetes version to report."),
        click.option("--rollout-seconds", default=0.05, show_default=True, type=click.FloatRange(min=0),
                     help="Seconds from a pod starting to it being Ready (and from delete to gone)."),
        click.option("--nodes", default=3, show_default=True, type=click.IntRange(min=1), help="Simulated nodes per cluster."),
        click.option("--options-json", default=None, help="JSON object handed to sandbox extensions."),
        click.option("--extension", "extensions", multiple=True, metavar="MODULE:FUNCTION",
                     help="Extra extension to run (repeatable)."),
    ]):
        fn = option(fn)
    return fn


@click.group()
def sandbox() -> None:
    """Local simulated Kubernetes clusters that kubectl and meshops talk to over HTTP."""


@sandbox.command()
@_common
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=1), help="Seconds to wait for readiness.")
@istio_flags
def up(directory: Path, clusters: str, k8s_version: str, rollout_seconds: float, nodes: int,
       options_json: str | None, extensions: tuple[str, ...], timeout: float, **istio: Any) -> None:
    """Start a sandbox in the background; return once every cluster answers."""
    from . import runtime  # here, not at the top: `meshops sandbox --help` stays light

    names = _cluster_names(clusters)
    _options(options_json)
    names, options_json = fold_istio_flags(click.get_current_context(), names, options_json, istio)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pid = runtime.read_pid(directory)
    if pid is not None and runtime.is_sandbox_process(pid):
        raise click.ClickException(f"a sandbox is already running in {directory} (pid {pid}); run `sandbox down --dir {directory}` first")
    for stale in (runtime.PID_FILE, runtime.STATE_FILE):
        (directory / stale).unlink(missing_ok=True)
    command = [sys.executable, "-m", "meshops.sandbox", "serve", "--dir", str(directory), "--clusters", ",".join(names),
               "--k8s-version", k8s_version, "--rollout-seconds", str(rollout_seconds), "--nodes", str(nodes)]
    if options_json:
        command += ["--options-json", options_json]
    for extension in extensions:
        command += ["--extension", extension]
    log_path = directory / runtime.LOG_FILE
    import subprocess  # here, not at the top, like runtime: `meshops sandbox --help` stays light

    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=str(directory),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
            raise click.ClickException("the sandbox exited during startup:\n" + "\n".join(tail))
        state = runtime.read_state(directory)
        if state and state.get("ready") and state.get("pid") == process.pid:
            urls = state.get("clusters") or {}
            if all(runtime.cluster_answers(url) for url in urls.values()):
                click.echo(f"sandbox up in {directory} (pid {process.pid})")
                for name, url in urls.items():
                    click.echo(f"  {name}: {url}  (context {name})")
                click.echo(f"  source {directory / runtime.ENV_FILE}")
                return
        time.sleep(0.05)
    process.terminate()
    raise click.ClickException(f"the sandbox did not become ready within {timeout:g}s; see {log_path}")


@sandbox.command()
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--timeout", default=15.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds to wait for exit.")
def down(directory: Path, timeout: float) -> None:
    """Stop the sandbox running in DIR (by its recorded pid) and wait for it to exit."""
    from . import runtime  # here, not at the top: `meshops sandbox --help` stays light

    directory = directory.resolve()
    pid = runtime.read_pid(directory)
    if pid is None or not runtime.is_sandbox_process(pid):
        (directory / runtime.PID_FILE).unlink(missing_ok=True)
        click.echo(f"no sandbox running in {directory}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not runtime.is_sandbox_process(pid):
            click.echo(f"sandbox stopped (pid {pid})")
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    while runtime.is_sandbox_process(pid):
        time.sleep(0.05)
    (directory / runtime.PID_FILE).unlink(missing_ok=True)
    click.echo(f"sandbox killed after {timeout:g}s (pid {pid})")


@sandbox.command()
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status(directory: Path, as_json: bool) -> None:
    """Report whether a sandbox runs in DIR and whether its clusters answer (exit 1 if not running)."""
    from . import runtime  # here, not at the top: `meshops sandbox --help` stays light

    directory = directory.resolve()
    pid = runtime.read_pid(directory)
    running = pid is not None and runtime.is_sandbox_process(pid)
    state = runtime.read_state(directory) or {}
    clusters = state.get("clusters") or {}
    answering = {name: running and runtime.cluster_answers(url) for name, url in clusters.items()}
    cluster_report = {name: {"url": url, "answering": answering[name]} for name, url in clusters.items()}
    report: dict[str, Any] = {"directory": str(directory), "running": running, "pid": pid if running else None,
                              "clusters": cluster_report}
    extra = {k: v for k, v in state.items() if k not in ("pid", "ready", "clusters")}
    if as_json:
        click.echo(json.dumps({**extra, **report}, indent=2))
    elif not running:
        click.echo(f"no sandbox running in {directory}")
    else:
        click.echo(f"sandbox running in {directory} (pid {pid}, Kubernetes {state.get('k8s_version', '?')})")
        for name, info in cluster_report.items():
            click.echo(f"  {name}: {info['url']}  {'answering' if info['answering'] else 'NOT ANSWERING'}")
    if not running or not all(answering.values()):
        sys.exit(1)


@sandbox.command()
@_common
def serve(directory: Path, clusters: str, k8s_version: str, rollout_seconds: float, nodes: int,
          options_json: str | None, extensions: tuple[str, ...]) -> None:
    """Run the sandbox in the foreground (what `up` starts in the background)."""
    import logging

    from . import runtime  # here, not at the top: `meshops sandbox --help` stays light

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime.serve(
        directory,
        cluster_names=_cluster_names(clusters),
        k8s_version=k8s_version,
        rollout_seconds=rollout_seconds,
        nodes=nodes,
        options=_options(options_json),
        extensions=[ISTIO_EXTENSION, ELB_EXTENSION, EXTERNAL_DNS_EXTENSION, *extensions],
    )


sandbox.add_command(fault_command)
sandbox.add_command(traffic_command)
