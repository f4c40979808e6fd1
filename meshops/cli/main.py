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
    output: str = "table"


def _complete_contexts(ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
    from meshops.cli.completion import contexts

    return contexts(ctx, param, incomplete)


def settings_of(ctx: click.Context) -> Settings:
    """The root group's settings with any global option given after the subcommand applied."""
    import dataclasses

    settings = ctx.find_object(Settings)
    if settings is None:
        raise click.UsageError("meshops commands run under the meshops group")
    over = dict(ctx.find_root().meta.get("meshops.overrides") or {})
    if "quiet" in over:
        over["verbosity"] = -1 if over.pop("quiet") else settings.verbosity
    if "verbose" in over:
        over["verbosity"] = over.pop("verbose")
    if over.get("kubeconfig"):
        over["kubeconfig"] = str(over["kubeconfig"])
    return dataclasses.replace(settings, **{k: v for k, v in over.items() if k in _FIELDS})


_FIELDS = {"kube_context", "kubeconfig", "state_dir", "log_format", "verbosity", "output"}


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
    "completion": "meshops.cli.completion:completion",
    "fleet": "meshops.cli.fleet_cmds:fleet",
    # The sandbox is its own package; the CLI mounts it by name and never imports it otherwise.
    "sandbox": "meshops.sandbox.cli:sandbox",
}


HELP_WIDTH = 110


def _help_width() -> int | None:
    """The help text width click would compute, without the import of shutil it makes for it.

    shutil.get_terminal_size's rule: $COLUMNS, else the terminal of stdout, else 80; click then
    caps it at max_content_width and keeps 2 columns spare (at least 50). None under click's
    test runner, which forces its own width.
    """
    from click import formatting

    if formatting.FORCED_WIDTH is not None:
        return None
    text = os.environ.get("COLUMNS", "")
    columns = int(text) if text.isdigit() else 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return max(min(columns or 80, HELP_WIDTH) - 2, 50)


@click.group(cls=LazyGroup, lazy=LAZY, context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": HELP_WIDTH})
@click.option("--context", "kube_context", envvar="MESHOPS_CONTEXT", help="Kubernetes context (default: current).",
              shell_complete=lambda c, p, i: _complete_contexts(c, p, i))
@click.option("--kubeconfig", envvar="KUBECONFIG", type=click.Path(dir_okay=False), help="Kubeconfig file.")
@click.option("--state-dir", envvar="MESHOPS_STATE_DIR", type=click.Path(file_okay=False),
              help="Where run journals live (default: $XDG_STATE_HOME/meshops).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto", show_default=True,
              envvar="MESHOPS_LOG_FORMAT", help="auto: console on a terminal, JSON lines otherwise.")
@click.option("-v", "--verbose", count=True, help="More detail (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.option("-o", "--output", type=click.Choice(["table", "text", "json", "yaml"]), default="table",
              help="Result format on stdout; logs go to stderr.")
@click.version_option(__version__, prog_name="meshops")
@click.pass_context
def cli(ctx: click.Context, kube_context: str | None, kubeconfig: str | None, state_dir: str | None,
        log_format: str, verbose: int, quiet: bool, output: str) -> None:
    """Install, tune and upgrade Istio, and move live traffic between clusters.

    \b
    Global options may also follow the subcommand (meshops status --context blue).
    Exit codes: 0 done; 1 failed and rolled back (or frozen); 2 bad input, nothing
    changed; 3 failed and the rollback failed too (a human is needed); 4 another run
    holds the lock; 130 interrupted or waiting for approval (resumable).
    """
    from meshops.cli import output as out

    out.SESSION.output = output
    out.SESSION.log_format = log_format
    if state_dir is None:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        state_dir = os.path.join(base, "meshops")
    # Only settings here: logging, drivers and the engine are built by the commands that
    # need them (meshops.cli.app.pass_app), so `--help` and `playbook validate` stay light.
    ctx.obj = Settings(kube_context=kube_context, kubeconfig=kubeconfig or None, state_dir=state_dir,
                       log_format=log_format, verbosity=-1 if quiet else verbose, output=output)


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; map every outcome to a documented exit code."""
    from meshops.cli import output

    output.reset(argv)
    try:
        cli.main(args=argv, prog_name="meshops", standalone_mode=False, terminal_width=_help_width())
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _fail("aborted", ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        if output.json_mode():
            _fail(exc.format_message(), ExitCode.BAD_INPUT, usage=True)
        exc.show()
        sys.exit(ExitCode.BAD_INPUT)
    except MeshopsError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED)
    except Exception:
        # A bug, not a refusal: the run's journal (if any) says how far it got.
        import traceback

        from meshops.cli import progress

        progress.stop()
        if output.json_mode():
            _fail("internal error (a bug); a human is needed. See `meshops runs list`.", ExitCode.NEEDS_HUMAN,
                  traceback=traceback.format_exc())
        traceback.print_exc()
        _fail("internal error (a bug); a human is needed. See `meshops runs list`.", ExitCode.NEEDS_HUMAN)
    shown = sys.modules.get("meshops.cli.progress")  # only when a run showed progress (--help did not)
    if shown is not None:
        shown.stop()
    sys.exit(ExitCode.OK)


def _fail(message: str, code: int, **fields: Any) -> None:
    """The last word of a failed command: its result on stdout (-o json|yaml), the error on stderr."""
    from meshops.cli import output, progress

    progress.stop()  # the live display goes before the last words are printed
    doc = output.failure_result(message, int(code))
    if doc is not None:
        click.echo(output.render(doc, output.fmt_of()))
    output.notice(message, event="meshops.error", level="error", exit_code=int(code), **fields)
    sys.exit(code)


if __name__ == "__main__":
    main()
