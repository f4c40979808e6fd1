"""``meshops demo``: a canary upgrade rehearsed end to end on a throwaway sandbox, told as a story.

It starts a sandbox (the ``default`` scenario: one cluster, unrevisioned Istio, a bookinfo
spread over namespaces with the awkward cases a real mesh has), shows the mesh, upgrades
it, shows it again, and stops the sandbox. It is a script over public commands, run as a
user would run them (``meshops sandbox up``, ``meshops status``, ``meshops upgrade``): the
sandbox's environment (its istioctl programs on PATH) goes to those child processes only,
never into this process's ``os.environ``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from meshops.cli.app_light import pass_app

# Imported where the demo runs, not for `meshops demo --help`.
if TYPE_CHECKING:
    import subprocess

    from meshops.cli.app import App

_EXPORT = re.compile(r'^export ([A-Z0-9_]+)="(.*)"$')
def _say(text: str) -> None:
    click.echo(click.style(f"\n== {text}", bold=True))


def _sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    import subprocess

    return subprocess.run([sys.executable, "-m", "meshops", "sandbox", *args], capture_output=True, text=True,
                          check=False, timeout=300)


def _sandbox_env(path: Path) -> dict[str, str]:
    """This process's environment plus the sandbox's exports, for the child commands."""
    env = dict(os.environ)
    for line in path.read_text().splitlines():
        m = _EXPORT.match(line.strip())
        if m:
            env[m.group(1)] = m.group(2).replace("$PATH", env.get("PATH", ""))
    return env


def _meshops(env: dict[str, str], app: App, *args: str) -> subprocess.CompletedProcess[str]:
    """One public meshops command against the sandbox, quiet unless it fails."""
    argv = [sys.executable, "-m", "meshops", "--kubeconfig", str(app.kubeconfig), "--state-dir", app.state_dir,
            "--quiet", *args]
    import subprocess

    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode not in (0, 130):
        raise click.ClickException(f"meshops {' '.join(args)} exited {proc.returncode}:\n{proc.stderr or proc.stdout}")
    return proc


@click.command()
@click.option("--from-version", default="1.24.1", show_default=True, help="Istio the sandbox starts with.")
@click.option("--to", "to_version", default="1.25.2", show_default=True, help="Istio to upgrade to.")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False),
              help="Sandbox directory (default: a new temporary one).")
@click.option("--keep", is_flag=True, help="Leave the sandbox running afterwards.")
@pass_app
def demo(app: App, from_version: str, to_version: str, directory: str | None, keep: bool) -> None:
    """Start a sandbox, canary-upgrade its Istio, show the mesh before and after, stop the sandbox."""
    import tempfile

    from meshops.cli.app import App
    from meshops.cli.upgrade_cmds import outputs_of, waves_of
    from meshops.engine.journal import RunState
    from meshops.steps.istio_finalize import FinalizeOutputs

    d = Path(directory or tempfile.mkdtemp(prefix="meshops-demo-"))
    _say(f"Starting a sandbox cluster with Istio {from_version} in {d}")
    up = _sandbox("up", "--dir", str(d), "--scenario", "default", "--istio", from_version,
                  "--istio-versions", f"{from_version},{to_version}")
    if up.returncode != 0:
        raise click.ClickException(f"the sandbox did not start:\n{up.stderr or up.stdout}")
    try:
        env = _sandbox_env(d / "env")
        demo_app = App(kube_context=None, kubeconfig=str(d / "kubeconfig"), state_dir=str(d / "state"))
        click.echo("It is a local Kubernetes API with Istio's webhooks and istioctl programs for both versions.\n"
                   "The app is bookinfo over four namespaces labelled istio-injection=enabled, with what real\n"
                   "meshes have: a StatefulSet, a DaemonSet, a finished Job, a naked pod, a pod that opts out.")
        _say("The mesh before (meshops status)")
        click.echo(_meshops(env, demo_app, "status").stdout, nl=False)
        _say(f"meshops upgrade --strategy canary --to {to_version}")
        click.echo(f"Checks first, before any write: skew, Kubernetes support, istioctl {to_version}, `istioctl x "
                   "precheck`,\nthe lock. Then istiod of the new revision beside the old one, the default tag moved, "
                   "every\nworkload restarted (K at a time, waited on through watches) and verified, the ingress "
                   "gateway\nmoved, and the old revision removed once nothing runs on it.")
        upgraded = _meshops(env, demo_app, "upgrade", "--strategy", "canary", "--to", to_version,
                            "--concurrency", "20", "--yes", "-o", "json")
        # The result document on stdout names the run (-o json), whatever the log format.
        run_id = json.loads(upgraded.stdout or "{}").get("run_id")
        if not run_id:
            raise click.ClickException(f"meshops upgrade named no run:\n{upgraded.stdout}{upgraded.stderr}")
        state = RunState.replay(run_id, demo_app.store(cluster=False).records(run_id))
        moved = [w for wave in waves_of(state) for w in wave.restarted]
        click.echo(f"run {state.run_id}: {state.status}; {len(moved)} workload(s) moved: {', '.join(moved)}")
        fin = outputs_of(state, "finalize", FinalizeOutputs)
        click.echo(fin.message if fin else "")
        if fin is not None and not fin.complete:
            holders = fin.holders
            _say("What meshops will not do for you")
            click.echo(f"{', '.join(holders)} still run(s) the old proxy. meshops does not delete pods that no "
                       "controller would\nrecreate, so the old revision stays, and the run said exactly why. The "
                       "owner deletes them\n(here the demo plays the owner), then finishes with `meshops upgrade "
                       f"finalize {state.run_id}`.")
            kube = demo_app.drivers.kube
            for ref in holders:
                ns, name = ref.split("/", 1)
                kube.delete("v1", "Pod", name, ns)
            click.echo(_meshops(env, demo_app, "upgrade", "finalize", state.run_id).stdout, nl=False)
        _say("The mesh after (meshops status)")
        click.echo(_meshops(env, demo_app, "status").stdout, nl=False)
        click.echo(f"\nEverything meshops did is in the journal: meshops --state-dir {d / 'state'} runs show "
                   f"{state.run_id}")
    finally:
        if keep:
            _say(f"The sandbox keeps running: source {d / 'env'}; stop it with meshops sandbox down --dir {d}")
        else:
            _sandbox("down", "--dir", str(d))
            _say("Sandbox stopped")
