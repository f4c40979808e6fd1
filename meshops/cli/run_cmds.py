"""run, plan, resume, rollback, approve."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from meshops.cli import output
from meshops.cli.app_light import pass_app

if TYPE_CHECKING:
    from meshops.cli.app import App
    from meshops.engine.playbook import LoadedPlaybook
    from meshops.engine.runner import Engine, PlannedStep


def _params(loaded: LoadedPlaybook, var: tuple[str, ...], var_file: tuple[str, ...]) -> dict[str, Any]:
    from meshops.cli.app import env_params, parse_vars
    from meshops.engine.playbook import resolve_params

    given: dict[str, Any] = env_params(list(loaded.playbook.params))
    given.update(parse_vars(var, var_file))
    return resolve_params(loaded.playbook, given)


def _print_plan(planned: list[PlannedStep], fmt: str) -> None:
    if fmt in ("json", "yaml"):
        click.echo(output.render([{**p.__dict__, "changes": [c.__dict__ for c in p.changes]} for p in planned], fmt))
        return
    for p in planned:
        head = f"{p.step_id}  ({p.uses})"
        if p.skipped:
            click.echo(f"- {head}: skipped, {p.note}")
            continue
        click.echo(f"- {head}")
        for c in p.changes:
            click.echo(f"    {c.action:<8} {c.target}{'  ' + c.detail if c.detail else ''}")
        if not p.predictable or p.note:
            click.echo(f"    {'(cannot predict) ' if not p.predictable else ''}{p.note}")
        if p.error:
            click.echo(f"    ERROR: {p.error}")


var_option = click.option("--var", multiple=True, metavar="NAME=VALUE", help="Set a param (repeatable).")
var_file_option = click.option("--var-file", multiple=True, type=click.Path(dir_okay=False, exists=True),
                               help="YAML file of params (keeps secrets off the command line).")


@click.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@var_option
@var_file_option
@click.option("--dry-run", is_flag=True, help="Plan only: show what would change, change nothing.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Answer yes to approval gates.")
@pass_app
def run(app: App, playbook: str, var: tuple[str, ...], var_file: tuple[str, ...], dry_run: bool, assume_yes: bool) -> None:
    """Run PLAYBOOK. Prints the run id (-o json|yaml: the result); the journal makes it resumable."""
    from meshops.cli.app import stop_on_signals
    from meshops.engine.playbook import load_playbook
    from meshops.engine.runner import Engine

    fmt = output.fmt_of()
    loaded = load_playbook(playbook)
    params = _params(loaded, var, var_file)
    secret = {n for n, s in loaded.playbook.params.items() if s.secret}
    if dry_run:
        _print_plan(Engine(store=app.store(cluster=False), drivers=app.drivers).plan(loaded, params, secret_params=secret), fmt)
        return
    cluster = "kube" in app.needs(loaded) and loaded.playbook.metadata.lock
    if app.needs(loaded) & {"kube", "route53"}:
        output.confirm_change(f"run {loaded.playbook.metadata.name} ({playbook})", assume_yes=assume_yes)
    with stop_on_signals() as stop:
        # The run id goes to stdout as soon as the run exists, so a pipeline has it whatever the outcome.
        engine = app.engine(cluster=cluster, assume_yes=assume_yes, stop=stop, on_started=output.run_command(fmt))
        result = engine.start(loaded, params, secret_params=secret)
    output.finish(fmt, run_id=result.run_id, status=result.status, summary=result.message)


@click.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@var_option
@var_file_option
@pass_app
def plan(app: App, playbook: str, var: tuple[str, ...], var_file: tuple[str, ...]) -> None:
    """Every step of PLAYBOOK with its resolved inputs and what it would change."""
    from meshops.engine.playbook import load_playbook
    from meshops.engine.runner import Engine, EngineOptions

    loaded = load_playbook(playbook)
    params = _params(loaded, var, var_file)
    engine = Engine(store=app.store(cluster=False), drivers=app.drivers, options=EngineOptions())
    secret = {n for n, s in loaded.playbook.params.items() if s.secret}
    _print_plan(engine.plan(loaded, params, secret_params=secret), output.fmt_of())


def engine_for_run(app: App, run_id: str, assume_yes: bool, stop: Any) -> Engine:
    from meshops.engine.journal import RunState

    local = app.store(cluster=False)
    cluster = (app.cluster_configured() and not local.exists(run_id)) or _run_needs_cluster(app, run_id)
    engine = app.engine(cluster=cluster, assume_yes=assume_yes, stop=stop)
    state = RunState.replay(run_id, engine.store.records(run_id)) if engine.store.exists(run_id) else None
    if state is not None and state.playbook_name == "switchover" and engine.lock is not None:
        from meshops.cli.switchover_cmds import switchover_locks

        # The same locks the switchover took: the source cluster's Lease and the record's lock are
        # released by the rollback or resume, not left behind with a paused mark.
        engine.lock = switchover_locks(app, engine, state.params)
    return engine


def _run_needs_cluster(app: App, run_id: str) -> bool:
    from meshops.engine.playbook import load_playbook_text

    local = app.store(cluster=False)
    if not local.exists(run_id):
        return False
    loaded = load_playbook_text(local.playbook_text(run_id), path=f"{run_id}/playbook.yaml")
    return "kube" in app.needs(loaded) and loaded.playbook.metadata.lock


@click.command()
@click.argument("run_id")
@var_option
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Answer yes to approval gates.")
@pass_app
def resume(app: App, run_id: str, var: tuple[str, ...], assume_yes: bool) -> None:
    """Resume RUN_ID: finished steps are skipped, the interrupted one is checked and continued."""
    from meshops.cli.app import parse_vars, stop_on_signals

    fmt = output.fmt_of()
    output.run_command(fmt)
    output.SESSION.run_id = run_id
    output.confirm_change(f"resume run {run_id}", assume_yes=assume_yes)
    with stop_on_signals() as stop:
        engine = engine_for_run(app, run_id, assume_yes, stop)
        secrets = {**_secret_env(), **parse_vars(var)}
        result = engine.resume(run_id, secret_values=secrets)
    output.finish(fmt, run_id=result.run_id, status=result.status, summary=result.message,
                  table=f"{result.run_id} {result.status}{': ' + result.message if result.message else ''}")


@click.command()
@click.argument("run_id")
@var_option
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@pass_app
def rollback(app: App, run_id: str, var: tuple[str, ...], assume_yes: bool) -> None:
    """Undo RUN_ID's finished steps, newest first (also for a run that succeeded)."""
    from meshops.cli.app import parse_vars, stop_on_signals

    fmt = output.fmt_of()
    output.run_command(fmt)
    output.SESSION.run_id = run_id
    output.confirm_change(f"roll back run {run_id}", assume_yes=assume_yes)
    with stop_on_signals() as stop:
        engine = engine_for_run(app, run_id, False, stop)
        result = engine.rollback(run_id, secret_values={**_secret_env(), **parse_vars(var)})
    output.finish(fmt, run_id=result.run_id, status=result.status, summary=result.message,
                  table=f"{result.run_id} {result.status}: {result.message}")


def _secret_env() -> dict[str, str]:
    import os

    return {k.removeprefix("MESHOPS_PARAM_").lower(): v for k, v in os.environ.items() if k.startswith("MESHOPS_PARAM_")}


@click.command()
@click.argument("run_id")
@click.argument("step")
@click.option("--by", default=None, help="Who approves (default: $USER).")
@pass_app
def approve(app: App, run_id: str, step: str, by: str | None) -> None:
    """Approve gate STEP of RUN_ID (a waiting run goes on; a paused one continues on resume)."""
    import getpass

    from meshops.domain.errors import BadInput
    from meshops.engine.journal import Journal, RunState
    from meshops.fleet.executor import approve as approve_fleet
    from meshops.fleet.executor import is_fleet_run

    if is_fleet_run(app.state_dir, run_id):  # a fleet's gate before a wave: STEP is wave/NAME
        click.echo(approve_fleet(app.state_dir, run_id, step, by or getpass.getuser()))
        return
    engine = engine_for_run(app, run_id, False, None)
    state = RunState.replay(run_id, engine.store.records(run_id))
    gates = _gate_keys(engine, run_id)
    if step not in gates:
        raise BadInput(f"run {run_id} has no approval gate {step!r}" + (f" (gates: {', '.join(gates)})" if gates else ""))
    fmt = output.fmt_of()
    if step in state.approvals:
        output.emit({"run_id": run_id, "step": step, "approved_by": state.approvals[step], "already": True}, fmt,
                    f"{run_id} {step}: already approved by {state.approvals[step]}")
        return
    who = by or getpass.getuser()
    Journal(engine.store, run_id).write("approved", step=step, by=who)
    output.emit({"run_id": run_id, "step": step, "approved_by": who, "already": False}, fmt, f"{run_id} {step}: approved")


def _gate_keys(engine: Engine, run_id: str) -> list[str]:
    from meshops.engine.journal import RunState
    from meshops.engine.playbook import load_playbook_text
    from meshops.steps import registry

    loaded = load_playbook_text(engine.store.playbook_text(run_id), path=f"{run_id}/playbook.yaml")
    # gate.approve, and step types that ask for approval themselves (istio.move_wave's --approve-each-wave).
    keys = [s.id for s in loaded.playbook.steps
            if s.uses == "gate.approve" or getattr(registry.get(s.uses), "approval_gate", False)]
    state = RunState.replay(run_id, engine.store.records(run_id))
    keys += [k for k in state.steps if "[" in k and k.split("[")[0] in keys]
    return keys
