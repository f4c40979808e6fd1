"""``meshops``: the entry point and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

# meshops uses no pydantic plugins; looking them up costs every invocation an
# importlib.metadata scan of site-packages.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import click

from meshops import __version__
from meshops.cli.lazy import LazyGroup
from meshops.domain.errors import ExitCode, MeshopsError


@dataclass(frozen=True, kw_only=True)
class Settings:
    kube_context: str | None
    kubeconfig: str | None
    state_dir: str
    log_format: str = "auto"
    verbosity: int = 0


LAZY = {
    "run": "meshops.cli.run_cmds:run",
    "plan": "meshops.cli.run_cmds:plan",
    "resume": "meshops.cli.run_cmds:resume",
    "rollback": "meshops.cli.run_cmds:rollback",
    "approve": "meshops.cli.run_cmds:approve",
    "runs": "meshops.cli.runs_cmds:runs",
    "playbook": "meshops.cli.runs_cmds:playbook",
    "report": "meshops.cli.report_cmds:report",
    "switchover": "meshops.cli.switchover_cmds:switchover",
    "install": "meshops.cli.install_cmds:install",
    "tune": "meshops.cli.install_cmds:tune",
    "upgrade": "meshops.cli.upgrade_cmds:upgrade",
    "status": "meshops.cli.upgrade_cmds:status",
    "demo": "meshops.cli.upgrade_demo:demo",
    "fleet": "meshops.cli.fleet_cmds:fleet",
    # The sandbox is its own package; the CLI mounts it by name and never imports it otherwise.
    "sandbox": "meshops.sandbox.cli:sandbox",
}


@click.group(cls=LazyGroup, lazy=LAZY, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--context", "kube_context", envvar="MESHOPS_CONTEXT", help="Kubernetes context (default: current).")
@click.option("--kubeconfig", envvar="KUBECONFIG", type=click.Path(dir_okay=False), help="Kubeconfig file.")
@click.option("--state-dir", envvar="MESHOPS_STATE_DIR", type=click.Path(file_okay=False),
              help="Where run journals live (default: $XDG_STATE_HOME/meshops).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto", show_default=True,
              envvar="MESHOPS_LOG_FORMAT", help="auto: console on a terminal, JSON lines otherwise.")
@click.option("-v", "--verbose", count=True, help="More detail (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.version_option(__version__, prog_name="meshops")
@click.pass_context
def cli(ctx: click.Context, kube_context: str | None, kubeconfig: str | None, state_dir: str | None,
        log_format: str, verbose: int, quiet: bool) -> None:
    """Install, tune and upgrade Istio, and move live traffic between clusters.

    \b
    Exit codes: 0 done; 1 failed and rolled back (or frozen); 2 bad input, nothing
    changed; 3 failed and the rollback failed too (a human is needed); 4 another run
    holds the lock; 130 interrupted or waiting for approval (resumable).
    """
    if state_dir is None:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        state_dir = os.path.join(base, "meshops")
    # Only settings here: logging, drivers and the engine are built by the commands that
    # need them (meshops.cli.app.pass_app), so `--help` and `playbook validate` stay light.
    ctx.obj = Settings(kube_context=kube_context, kubeconfig=kubeconfig or None, state_dir=state_dir,
                       log_format=log_format, verbosity=-1 if quiet else verbose)


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; map every outcome to a documented exit code."""
    try:
        cli.main(args=argv, prog_name="meshops", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.BAD_INPUT)
    except MeshopsError as exc:
        click.echo(f"meshops: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except Exception:
        # A bug, not a refusal: the run's journal (if any) says how far it got.
        import traceback

        traceback.print_exc()
        click.echo("meshops: internal error (a bug); a human is needed. See `meshops runs list`.", err=True)
        sys.exit(ExitCode.NEEDS_HUMAN)
    sys.exit(ExitCode.OK)


if __name__ == "__main__":
    main()
