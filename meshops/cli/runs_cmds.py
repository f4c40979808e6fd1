"""runs list/show, playbook validate/schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from meshops.cli.app_light import pass_app
from meshops.domain.errors import PlaybookInvalid

if TYPE_CHECKING:
    from meshops.engine.journal import StateStore

if TYPE_CHECKING:
    from meshops.cli.app import App



@click.group()
def runs() -> None:
    """List runs and show one."""


def _store(app: App, cluster: bool) -> StateStore:
    return app.store(cluster=cluster)


@runs.command("list")
@click.option("--cluster", is_flag=True, help="Also list runs journaled in the cluster (meshops-system).")
@click.option("-o", "--output", type=click.Choice(["table", "text", "json", "yaml"]), default="table")
@pass_app
def runs_list(app: App, cluster: bool, output: str) -> None:
    """Runs, newest last."""
    from meshops.engine.journal import RunState

    store = _store(app, cluster)
    rows = [RunState.replay(r, store.records(r)).summary() for r in store.run_ids()]
    if output in ("json", "yaml"):
        from meshops.cli.output import render

        click.echo(render(rows, output))
        return
    if not rows:
        click.echo("no runs")
        return
    click.echo(f"{'RUN':<48} {'PLAYBOOK':<24} {'STATUS':<18} {'STARTED':<21} FAILED STEP")
    for r in rows:
        click.echo(f"{r['run_id']:<48} {r['playbook'] or '-':<24} {r['status']:<18} {r['started'] or '-':<21} "
                   f"{r['failed_step'] or ''}")


@runs.command("show")
@click.argument("run_id")
@click.option("-o", "--output", type=click.Choice(["table", "text", "json", "yaml"]), default="text")
@click.option("--cluster", is_flag=True, help="Look in the cluster's journal too.")
@pass_app
def runs_show(app: App, run_id: str, output: str, cluster: bool) -> None:
    """One run: status, params (secrets redacted), and every step with its outcome."""
    from meshops.engine.journal import RunState

    store = _store(app, cluster or (app.cluster_configured() and not app.store(cluster=False).exists(run_id)))
    state = RunState.replay(run_id, store.records(run_id))
    data = state.to_dict()
    if output == "json":
        import json

        click.echo(json.dumps(data, indent=2))
        return
    if output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False))
        return
    click.echo(f"run       {data['run_id']}\nplaybook  {data['playbook']} ({data['playbook_path']})\n"
               f"status    {data['status']}\nstarted   {data['started']}\nfinished  {data['finished'] or '-'}")
    if data["message"]:
        click.echo(f"message   {data['message']}")
    click.echo("steps:")
    for s in data["steps"]:
        extra = f" attempts={s['attempts']}" if s["attempts"] > 1 else ""
        extra += f" undo={s['undo']}" if s["undo"] else ""
        extra += f" ({s['duration_s']}s)" if s["duration_s"] is not None else ""
        click.echo(f"  {s['key']:<32} {s['status']:<16}{extra}")
        if s["error"]:
            click.echo(f"      error: {s['error']}")


@click.group()
def playbook() -> None:
    """Validate playbooks; print the playbook JSON Schema."""


@playbook.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(files: tuple[str, ...]) -> None:
    """Check FILES; every problem is reported with file, line, column and field."""
    # Plain playbooks are proved valid without PyYAML, pydantic or Jinja (start-up); whatever
    # the quick check cannot prove, and every problem, goes through the full validation.
    from meshops.engine.quickcheck import step_count

    problems: list[str] = []
    for f in files:
        try:
            count = step_count(f)
            click.echo(f"{f}: ok ({count} steps)")
        except PlaybookInvalid as exc:
            problems += exc.problems
    if problems:
        raise PlaybookInvalid(problems)


@playbook.command("schema")
def schema() -> None:
    """The playbook JSON Schema (for editors)."""
    import json

    from meshops.engine.playbook import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@runs.command("abandon")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why the run is given up (journaled).")
@click.option("--by", default=None, help="Who abandons it (default: $USER).")
@pass_app
def runs_abandon(app: App, run_id: str, reason: str, by: str | None) -> None:
    """Give up RUN_ID and release the lock it keeps while paused (its changes stay; rollback still works)."""
    import getpass

    from meshops.cli.run_cmds import engine_for_run

    engine = engine_for_run(app, run_id, False, None)
    click.echo(engine.abandon(run_id, reason=reason, by=by or getpass.getuser()))

