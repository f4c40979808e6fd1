"""``meshops fleet``: plan, run, resume, roll back, show and render waves of cluster runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from meshops.cli.app_light import pass_app
from meshops.domain.errors import BadInput, Interrupted, PlaybookInvalid, RollbackFailed, RunFailed

# Threads, subprocesses and the app are imported where a command runs, not for `fleet --help`.
if TYPE_CHECKING:
    import subprocess

    from meshops.cli.app import App

MESHOPS = [sys.executable, "-m", "meshops"]


def _load(path: str) -> Any:
    from meshops.fleet.model import load_fleet

    loaded = load_fleet(path)
    _check_args(loaded)
    return loaded


def _check_args(loaded: Any) -> None:
    """A command job's args parsed by that command's own options, so a typo is exit 2 before any run."""
    from meshops.cli.main import cli

    if not loaded.fleet.job.command:
        return
    problems = []
    with click.Context(cli) as root:
        cmd = cli.get_command(root, loaded.fleet.job.command)
        assert cmd is not None
        for cluster in loaded.fleet.clusters:
            args = loaded.job_argv(cluster.name)[1:]
            try:
                with cmd.make_context(loaded.fleet.job.command, list(args), parent=root, resilient_parsing=False):
                    pass
            except click.UsageError as exc:
                where = loaded.source.where(("clusters", loaded.fleet.clusters.index(cluster), "args")
                                            if cluster.args else ("job", "args"))
                problems.append(f"{where}: job.args ({cluster.name}): {exc.format_message()}")
    if problems:
        raise PlaybookInvalid(sorted(set(problems)))


def _executor(app: App, *, parallel: int = 0, on_failure: str = "stop", stop: Any = None) -> Any:
    from meshops.fleet.executor import FleetExecutor, FleetOptions

    return FleetExecutor(state_dir=app.state_dir, options=FleetOptions(
        meshops=MESHOPS, kubeconfig=app.kubeconfig, parallel=parallel, on_failure=on_failure,
        report=lambda msg: click.echo(f"fleet: {msg}", err=True), stop=stop or (lambda: False),
        # The fleet run id goes to stdout at once, so a pipeline has it whatever the outcome.
        on_started=click.echo))


def _finish(state: Any) -> None:
    """Print the clusters' outcomes; exit as a single run would."""
    click.echo(_table(["CLUSTER", "WAVE", "STATUS", "RUN", "EXIT"],
                      [[n, c.wave, c.status + (f" ({c.rollback})" if c.rollback else ""), c.run_id or "-",
                        "-" if c.exit_code is None else str(c.exit_code)] for n, c in state.clusters.items()]))
    click.echo(f"{state.run_id} {state.status}: {state.message}")
    code = state.exit_code or 0
    if code == 2:
        raise BadInput(f"fleet {state.run_id} {state.status}: the job refused its input; nothing changed")
    if code == 1:
        raise RunFailed(f"fleet {state.run_id} {state.status}")
    if code == 3:
        raise RollbackFailed(f"fleet {state.run_id} {state.status}: a human is needed")
    if code == 130:
        raise Interrupted(f"fleet {state.run_id} {state.status}: {state.message}")


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


def _emit(data: Any, output: str) -> bool:
    if output == "json":
        import json

        click.echo(json.dumps(data, indent=2))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False))
    else:
        return False
    return True


@click.group()
def fleet() -> None:
    """Upgrade or switch many clusters in waves (locally, or rendered for Argo/GitHub/GitLab)."""


@fleet.command()
@click.argument("fleet_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(fleet_files: tuple[str, ...]) -> None:
    """Check fleet files: every problem as file:line:column: field: message (exit 2)."""
    problems: list[str] = []
    for path in fleet_files:
        try:
            loaded = _load(path)
            click.echo(f"{path}: ok ({len(loaded.fleet.clusters)} cluster(s) in {len(loaded.waves)} wave(s))")
        except PlaybookInvalid as exc:
            problems += exc.problems
    if problems:
        raise PlaybookInvalid(problems)


@fleet.command()
def schema() -> None:
    """Print the fleet file's JSON Schema (for editors)."""
    import json

    from meshops.fleet.model import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def _child(app: App, loaded: Any, cluster: str, tail: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [*MESHOPS, *loaded.child_argv(cluster, [], state_dir=app.state_dir, kubeconfig=app.kubeconfig)]
    import subprocess

    return subprocess.run([*argv, *tail], capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def _per_cluster(loaded: Any, fn: Any) -> dict[str, Any]:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = {c.name: pool.submit(fn, c.name) for c in loaded.fleet.clusters}
        return {name: f.result() for name, f in futures.items()}


def _cluster_status(app: App, loaded: Any, cluster: str) -> dict[str, Any]:
    out = _child(app, loaded, cluster, ["status", "-o", "json"], timeout=120)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    import json

    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _revisions(s: dict[str, Any]) -> str:
    return ", ".join(f"{n}:{r.get('version') or '?'}" for n, r in (s.get("revisions") or {}).items()) or "-"


def _proxies(s: dict[str, Any]) -> str:
    return ", ".join(f"{v}={n}" for v, n in (s.get("proxies_by_version") or {}).items()) or "-"


@fleet.command()
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@pass_app
def plan(app: App, fleet_file: str, output: str) -> None:
    """The waves with their clusters, each cluster's revisions and proxies, and its job's dry run."""
    loaded = _load(fleet_file)

    def one(cluster: str) -> dict[str, Any]:
        status = _cluster_status(app, loaded, cluster)
        dry = _child(app, loaded, cluster, loaded.dry_run_argv(cluster))
        return {"cluster": cluster, "wave": loaded.wave_of(cluster).name, "context": loaded.fleet.cluster(cluster).kube_context,
                "revisions": status.get("revisions", {}), "default_revision": status.get("default_revision"),
                "proxies_by_version": status.get("proxies_by_version", {}), "status_error": status.get("error"),
                "job": loaded.job_argv(cluster), "dry_run": {"exit_code": dry.returncode, "output": dry.stdout.strip(),
                                                              "error": dry.stderr.strip().splitlines()[-1:] if dry.returncode else []}}

    per = _per_cluster(loaded, one)
    data = {"fleet": loaded.name, "waves": [
        {"name": w.name, "max_parallel": w.spec.max_parallel, "max_failures": w.spec.max_failures, "gate": w.spec.gate,
         "soak": w.spec.soak, "clusters": [per[c] for c in w.clusters]} for w in loaded.waves]}
    if _emit(data, output):
        return
    rows = []
    for w in data["waves"]:
        for c in w["clusters"]:
            dry = c["dry_run"]
            changes = [ln for ln in dry["output"].splitlines() if ln.startswith("    ") and "(cannot predict)" not in ln]
            what = f"{len(changes)} change(s)" if dry["exit_code"] == 0 else f"REFUSED: {' '.join(dry['error']).strip()}"
            rows.append([w["name"], c["cluster"], _revisions(c), c["default_revision"] or "-",
                         _proxies(c), " ".join(c["job"][:3]) + (" ..." if len(c["job"]) > 3 else ""), what[:70]])
    for w in data["waves"]:
        gate = f", {w['gate']} before" if w["gate"] != "none" else ""
        click.echo(f"wave {w['name']}: max_parallel {w['max_parallel']}, failure budget {w['max_failures']}{gate}"
                   f"{', soak ' + w['soak'] if w['soak'] not in ('0s', '0') else ''}")
    click.echo(_table(["WAVE", "CLUSTER", "REVISIONS", "DEFAULT", "PROXIES", "JOB", "DRY RUN"], rows))


@fleet.command()
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.option("--parallel", type=click.IntRange(min=1), default=None,
              help="At most this many clusters at once in any wave (default: each wave's max_parallel).")
@click.option("--on-failure", type=click.Choice(["stop", "rollback-wave"]), default="stop", show_default=True,
              help="Over a wave's failure budget: stop (finished clusters stay) or also roll back the wave's finished clusters.")
@pass_app
def run(app: App, fleet_file: str, parallel: int | None, on_failure: str) -> None:
    """Run the fleet's job on every cluster, wave by wave. Prints the fleet run id first."""
    loaded = _load(fleet_file)
    from meshops.cli.app import stop_on_signals

    with stop_on_signals() as stop:
        state = _executor(app, parallel=parallel or 0, on_failure=on_failure, stop=stop).start(loaded)
    _finish(state)


@fleet.command()
@click.argument("fleet_run_id")
@click.option("--parallel", type=click.IntRange(min=1), default=None)
@click.option("--on-failure", type=click.Choice(["stop", "rollback-wave"]), default=None,
              help="Default: as the run was started.")
@pass_app
def resume(app: App, fleet_run_id: str, parallel: int | None, on_failure: str | None) -> None:
    """Continue FLEET_RUN_ID after a kill, a failure, a pause or an approval."""
    executor = _executor(app)
    opts = executor.state(fleet_run_id).options
    from meshops.cli.app import stop_on_signals

    with stop_on_signals() as stop:
        executor = _executor(app, parallel=parallel or int(opts.get("parallel") or 0),
                             on_failure=on_failure or str(opts.get("on_failure") or "stop"), stop=stop)
        state = executor.resume(fleet_run_id)
    _finish(state)


@fleet.command()
@click.argument("fleet_run_id")
@pass_app
def rollback(app: App, fleet_run_id: str) -> None:
    """Roll back every cluster FLEET_RUN_ID changed, newest first."""
    from meshops.cli.app import stop_on_signals

    with stop_on_signals():
        state = _executor(app).rollback(fleet_run_id)
    _finish(state)


@fleet.command()
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@pass_app
def status(app: App, fleet_file: str, output: str) -> None:
    """Every cluster: revisions, default, tags, proxies by version, stale workloads, dangling webhooks, last run."""
    loaded = _load(fleet_file)
    last = _last_runs(app, loaded.name)
    per = _per_cluster(loaded, lambda c: _cluster_status(app, loaded, c))
    data = {"fleet": loaded.name, "clusters": [
        {"cluster": c.name, "wave": loaded.wave_of(c.name).name, "context": c.kube_context,
         "revisions": per[c.name].get("revisions", {}), "default_revision": per[c.name].get("default_revision"),
         "tags": sorted(t for r in (per[c.name].get("revisions") or {}).values() for t in r.get("tags", [])),
         "proxies_by_version": per[c.name].get("proxies_by_version", {}),
         "workloads_on_old": per[c.name].get("workloads_on_old", {}),
         "dangling_webhooks": per[c.name].get("dangling_webhooks", []), "error": per[c.name].get("error"),
         "last_run": last.get(c.name)} for c in loaded.fleet.clusters]}
    if _emit(data, output):
        return
    rows = [[c["cluster"], c["wave"], _revisions(c), c["default_revision"] or "-", ",".join(c["tags"]) or "-",
             _proxies(c), str(sum(len(v) for v in c["workloads_on_old"].values())), str(len(c["dangling_webhooks"])),
             (c["last_run"] or {}).get("run_id") or "-", (c["last_run"] or {}).get("status") or "-"]
            if not c["error"] else [c["cluster"], c["wave"], f"ERROR: {c['error']}"] + ["-"] * 7
            for c in data["clusters"]]
    click.echo(_table(["CLUSTER", "WAVE", "REVISIONS", "DEFAULT", "TAGS", "PROXIES", "STALE", "DANGLING", "LAST RUN",
                       "OUTCOME"], rows))


def _last_runs(app: App, name: str) -> dict[str, dict[str, Any]]:
    """Each cluster's newest run in any fleet run of this fleet (fleet run ids sort by time)."""
    from meshops.fleet.executor import store_for
    from meshops.fleet.state import FleetState

    store, out = store_for(app.state_dir), {}
    for fid in sorted(store.run_ids()):
        state = FleetState.replay(fid, store.records(fid))
        if state.name != name:
            continue
        for cname, c in state.clusters.items():
            out[cname] = {"fleet_run_id": fid, "run_id": c.run_id, "status": c.status}
    return out


@fleet.command()
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.option("--engine", type=click.Choice(["argo", "github", "gitlab"]), required=True)
@click.option("--fleet-path", default=None, help="The fleet file's path in the repository (github, gitlab).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
def render(fleet_file: str, engine: str, fleet_path: str | None, out_file: str | None) -> None:
    """The same waves for Argo Workflows, GitHub Actions or GitLab CI."""
    import yaml

    loaded = _load(fleet_file)
    if engine == "argo":
        try:
            from meshops.fleet import render_argo
        except ImportError:
            raise BadInput("--engine argo needs hera: pip install 'meshops[argo]'") from None

        text = yaml.safe_dump_all(render_argo.render(loaded), sort_keys=False)
    else:
        from meshops.fleet import render_ci

        doc = (render_ci.github if engine == "github" else render_ci.gitlab)(loaded, fleet_path or fleet_file)
        text = yaml.safe_dump(doc, sort_keys=False, width=200)
    if out_file:
        Path(out_file).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out_file}", err=True)
    else:
        click.echo(text, nl=False)


@fleet.command("exec")
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.option("--cluster", required=True, help="The cluster whose job to run.")
@pass_app
def exec_(app: App, fleet_file: str, cluster: str) -> None:
    """Run one cluster's job as the local executor would (what the rendered CI jobs call); its exit code."""
    from meshops.engine.playbook import suggest

    loaded = _load(fleet_file)
    names = [c.name for c in loaded.fleet.clusters]
    if cluster not in names:
        raise BadInput(f"--cluster {cluster}: not in {fleet_file}{suggest(cluster, names)}")
    import subprocess

    proc = subprocess.run(_argv_for_exec(app, loaded, cluster), check=False)
    if proc.returncode:
        sys.exit(proc.returncode)


def _argv_for_exec(app: App, loaded: Any, cluster: str) -> list[str]:
    return [*MESHOPS, *loaded.child_argv(cluster, loaded.job_argv(cluster), state_dir=app.state_dir,
                                         kubeconfig=app.kubeconfig, json_logs=False)]


@fleet.command()
@click.argument("fleet_run_id")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@pass_app
def show(app: App, fleet_run_id: str, output: str) -> None:
    """FLEET_RUN_ID: its status and every cluster's run (id, status, exit code, attempts, rollback)."""
    state = _executor(app).state(fleet_run_id)
    if not state.name:
        raise BadInput(f"{fleet_run_id} is not a fleet run (see: meshops fleet runs)")
    if _emit(state.summary(), output):
        return
    click.echo(f"{state.run_id} ({state.name}) {state.status}: {state.message}")
    click.echo(_table(["CLUSTER", "WAVE", "STATUS", "RUN", "EXIT", "ATTEMPTS"],
                      [[n, c.wave, c.status, c.run_id or "-", "-" if c.exit_code is None else str(c.exit_code),
                        str(c.attempts)] for n, c in state.clusters.items()]))


@fleet.command()
@pass_app
def runs(app: App) -> None:
    """Fleet runs in the state directory, oldest first."""
    from meshops.fleet.executor import store_for
    from meshops.fleet.state import FleetState

    store = store_for(app.state_dir)
    rows = []
    for fid in store.run_ids():
        s = FleetState.replay(fid, store.records(fid))
        rows.append([fid, s.name, s.status, str(sum(c.status == "succeeded" for c in s.clusters.values()))])
    click.echo(_table(["FLEET RUN", "FLEET", "STATUS", "CLUSTERS DONE"], rows))
