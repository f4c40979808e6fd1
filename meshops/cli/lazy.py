"""A click group whose subcommands are imported only when invoked, so ``--help`` starts fast."""

from __future__ import annotations

import importlib
from typing import Any

import click


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name].partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            assert isinstance(cmd, click.Command)
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
    "fleet": "Upgrade or switch many clusters in waves; render for Argo/GitHub/GitLab.",
}
