"""``meshops completion bash|zsh|fish``, and what its completions offer.

The script is click's own (the shell calls ``meshops`` back with ``_MESHOPS_COMPLETE`` set);
the values come from here: kubeconfig contexts for ``--context`` (and a switchover's ``--from``
and ``--to``), run ids from the state dir, profile names, and playbook files. Each reader is
cheap (YAML files and a directory listing, no client libraries): it runs on every Tab.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
_ROOT = Path(__file__).resolve().parents[2]


def _root_param(ctx: click.Context, name: str) -> Any:
    """A global option's value as typed so far (before or after the subcommand)."""
    while ctx is not None:
        value = ctx.params.get(name)
        if value:
            return value
        ctx = ctx.parent  # type: ignore[assignment]
    return None


def contexts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    import yaml

    from meshops.drivers.kube_config import kubeconfig_paths

    names: list[str] = []
    for path in kubeconfig_paths(_root_param(ctx, "kubeconfig")):
        try:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError):
            continue
        names += [str(c.get("name")) for c in doc.get("contexts") or [] if isinstance(c, dict) and c.get("name")]
    return [CompletionItem(n) for n in sorted(set(names)) if n.startswith(incomplete)]


def _state_dir(ctx: click.Context) -> str:
    explicit = _root_param(ctx, "state_dir") or os.environ.get("MESHOPS_STATE_DIR")
    if explicit:
        return str(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "meshops")


def run_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    directory = _state_dir(ctx)
    try:
        found = sorted(d for d in os.listdir(directory) if os.path.isfile(os.path.join(directory, d, "journal.jsonl")))
    except OSError:
        return []
    # Newest first: the run people mean is usually the last one.
    return [CompletionItem(r) for r in reversed(found) if r.startswith(incomplete)]


def profiles(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    directory = Path(os.environ.get("MESHOPS_PROFILES_DIR") or _ROOT / "profiles")
    names = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)] + [CompletionItem(incomplete, type="file")]


def playbooks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    directory = Path(os.environ.get("MESHOPS_PLAYBOOKS") or _ROOT / "playbooks")
    shipped = sorted(_short(p) for p in directory.glob("*.yaml")) if directory.is_dir() else []
    return [CompletionItem(p) for p in shipped if p.startswith(incomplete)] + [CompletionItem(incomplete, type="file")]


def _short(path: Path) -> str:
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def attach(cmd: click.Command) -> None:
    """Give a command's parameters the completions above, by what they mean."""
    for p in cmd.params:
        opts = set(getattr(p, "opts", []))
        if p.name == "kube_context" or (cmd.name == "switchover" and opts & {"--from", "--to"}):
            p._custom_shell_complete = contexts
        elif p.name == "run_id":
            p._custom_shell_complete = run_ids
        elif p.name == "profiles":
            p._custom_shell_complete = profiles
        elif p.name == "playbook" or (p.name == "files" and cmd.name == "validate"):
            p._custom_shell_complete = playbooks


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """The completion script for SHELL (contexts, run ids, profiles, playbooks).

    \b
    bash:  source <(meshops completion bash)        (or into ~/.bashrc)
    zsh:   source <(meshops completion zsh)         (after compinit)
    fish:  meshops completion fish > ~/.config/fish/completions/meshops.fish
    """
    from click.shell_completion import get_completion_class

    from meshops.cli.main import cli

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "meshops", "_MESHOPS_COMPLETE").source())
