"""A click group whose subcommands are imported only when invoked, so ``--help`` starts fast."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            _require_extra(cmd_name)
            module, _, attr = self.lazy[cmd_name].partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            assert isinstance(cmd, click.Command)
            attach_globals(cmd)
            return cmd
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lists lazy commands by the one-line summary kept beside their path, so that
        # `meshops --help` imports none of them.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                summary = HELP.get(name, "")
            else:
                cmd = super().get_command(ctx, name)
                summary = cmd.get_short_help_str(70) if cmd else ""
            rows.append((name, summary))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# Commands that need an optional extra, and the modules that extra brings.
EXTRAS = {"sandbox": ("sandbox", ("moto", "flask", "flask_cors")), "demo": ("sandbox", ("moto", "flask", "flask_cors"))}


def _require_extra(cmd_name: str) -> None:
    """Say how to get a missing extra instead of failing later with an ImportError."""
    if cmd_name not in EXTRAS:
        return
    import importlib.util

    extra, modules = EXTRAS[cmd_name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        from meshops.domain.errors import BadInput

        raise BadInput(f"`meshops {cmd_name}` needs the {extra} extra ({', '.join(missing)} not installed)",
                       hint=f"pip install 'meshops[{extra}]' (in a checkout: pip install -e '.[{extra}]')")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Global options given after the subcommand override those given before it (kubectl's rule)."""
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        overrides = ctx.find_root().meta.setdefault("meshops.overrides", {})
        overrides[param.name] = value
        if param.name == "output":
            from meshops.cli import output

            output.SESSION.output = value
        if param.name == "log_format":
            from meshops.cli import output

            output.SESSION.log_format = value
    return value


# The root group's options, accepted after any subcommand too: `meshops status --context blue`.
GLOBAL_OPTIONS: list[Callable[[], click.Option]] = [
    lambda: click.Option(["--context", "kube_context"], hidden=True, expose_value=False, callback=_remember),
    lambda: click.Option(["--kubeconfig"], hidden=True, expose_value=False, callback=_remember),
    lambda: click.Option(["--state-dir"], hidden=True, expose_value=False, callback=_remember),
    lambda: click.Option(["--log-format"], type=click.Choice(["auto", "console", "json"]), hidden=True,
                         expose_value=False, callback=_remember),
    lambda: click.Option(["-v", "--verbose", "verbose"], count=True, hidden=True, expose_value=False,
                         callback=_remember),
    lambda: click.Option(["-q", "--quiet"], is_flag=True, hidden=True, expose_value=False, callback=_remember),
    lambda: click.Option(["-o", "--output"], type=click.Choice(["table", "text", "json", "yaml"]),
                         expose_value=False, callback=_remember,
                         help="Result format on stdout (logs go to stderr)."),
]


def attach_globals(cmd: click.Command) -> None:
    """Add the global options a command does not define itself (its own -o, say, wins)."""
    if getattr(cmd, "_meshops_globals", False):
        return
    taken = {opt for p in cmd.params for opt in (*p.opts, *getattr(p, "secondary_opts", []))}
    for make in GLOBAL_OPTIONS:
        option = make()
        if not (set(option.opts) & taken):
            cmd.params.append(option)
    cmd._meshops_globals = True  # type: ignore[attr-defined]
    # Completions are asked for through this variable (click's protocol, prog name "meshops");
    # any other run never completes, so it does not import the completion code (start-up).
    if os.environ.get("_MESHOPS_COMPLETE"):
        from meshops.cli.completion import attach

        attach(cmd)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            attach_globals(sub)


HELP = {
    "run": "Run a playbook.",
    "plan": "Show what each step of a playbook would do, changing nothing.",
    "playbook": "Validate playbooks; print the playbook JSON Schema.",
    "runs": "List runs and show one.",
    "resume": "Resume an interrupted, paused or frozen run.",
    "rollback": "Undo a run's finished steps, newest first.",
    "approve": "Approve a run's waiting gate.",
    "sandbox": "Start, stop and fault a local sandbox of clusters.",
    "upgrade": "Upgrade Istio (canary or guarded in-place).",
    "switchover": "Move live traffic between clusters with Route53 weights.",
    "install": "Install Istio from composed profiles.",
    "tune": "Recommend requests and limits from Prometheus.",
    "status": "Show the mesh: revisions, tags, proxies, webhooks.",
    "demo": "Rehearse a canary upgrade on a throwaway sandbox.",
    "report": "Render a run report (html, md, json).",
    "completion": "Shell completion script (bash, zsh, fish).",
    "fleet": "Upgrade or switch many clusters in waves; render for Argo/GitHub/GitLab.",
}
