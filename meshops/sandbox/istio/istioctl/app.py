"""Command-line front end of the sandbox istioctl: cobra-like parsing, dispatch, exit codes.

Exit codes follow istioctl/cmd/sysexits.go: 0 ok, 1 any error, 64 a usage error (bad flag,
unknown command), 65 a file that does not parse, 79 analyzers found issues.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from meshops.sandbox.istio.istioctl.common import (  # noqa: F401 - re-exported for callers of app
    EXIT_ANALYZE_ISSUES,
    EXIT_DATA,
    EXIT_ERROR,
    EXIT_USAGE,
    CommandError,
    Context,
    Handler,
    UsageError,
    _globals,
    _normalise,
    _Parser,
    bool_flag,
    confirm,
    go_bool,
)
from meshops.sandbox.istio.istioctl.kube import Client, KubeError
from meshops.sandbox.istio.versions import IstioVersion, UnsupportedVersion


def build_parser(version: IstioVersion | None = None) -> argparse.ArgumentParser:
    """The command tree of `version` (reference §1, §7: 1.24 removed `istioctl profile`;
    1.25 removed `analyze --recursive`)."""
    from meshops.sandbox.istio.istioctl import cmd_analyze, cmd_install, cmd_status, cmd_tag, cmd_version

    root = _Parser(prog="istioctl", add_help=True)
    _globals(root)
    sub = root.add_subparsers(dest="command", parser_class=_Parser)

    def add(name: str, handler: Handler, setup: Callable[[argparse.ArgumentParser], None],
            aliases: Sequence[str] = (), parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, aliases=list(aliases))
        _globals(p)
        setup(p)
        p.set_defaults(handler=handler)
        return p

    add("version", cmd_version.run, cmd_version.flags)
    add("install", cmd_install.run_install, cmd_install.install_flags, aliases=["apply"])
    add("upgrade", cmd_install.run_install, cmd_install.install_flags)
    add("uninstall", cmd_install.run_uninstall, cmd_install.uninstall_flags)
    manifest = sub.add_parser("manifest")
    msub = manifest.add_subparsers(dest="subcommand", parser_class=_Parser)
    add("generate", cmd_install.run_manifest_generate, cmd_install.manifest_flags, parent=msub)
    if version is None or version.minor < 24:
        profile = sub.add_parser("profile")
        psub = profile.add_subparsers(dest="subcommand", parser_class=_Parser)
        add("list", cmd_install.run_profile_list, lambda p: None, parent=psub)
    tag = sub.add_parser("tag")
    tsub = tag.add_subparsers(dest="subcommand", parser_class=_Parser)
    add("set", cmd_tag.run_set, cmd_tag.set_flags, parent=tsub)
    add("generate", cmd_tag.run_generate, cmd_tag.set_flags, parent=tsub)
    add("list", cmd_tag.run_list, cmd_tag.list_flags, aliases=["show"], parent=tsub)
    add("remove", cmd_tag.run_remove, cmd_tag.remove_flags, aliases=["delete"], parent=tsub)
    add("proxy-status", cmd_status.run, cmd_status.flags, aliases=["ps"])
    analyze = add("analyze", cmd_analyze.run_analyze, cmd_analyze.analyze_flags)
    if version is None or version.minor < 25:
        bool_flag(analyze, "--recursive")
    experimental = sub.add_parser("experimental", aliases=["x", "exp"])
    xsub = experimental.add_subparsers(dest="subcommand", parser_class=_Parser)
    add("precheck", cmd_analyze.run_precheck, cmd_analyze.precheck_flags, parent=xsub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    version_text = None
    if args_in[:1] == ["--istio-version"] and len(args_in) >= 2:
        version_text, args_in = args_in[1], args_in[2:]
    elif args_in[:1] and args_in[0].startswith("--istio-version="):
        version_text, args_in = args_in[0].split("=", 1)[1], args_in[1:]
    if not version_text:
        print("Error: the sandbox istioctl needs --istio-version X.Y.Z as its first argument", file=sys.stderr)
        return EXIT_USAGE
    try:
        version = IstioVersion.parse(version_text)
    except UnsupportedVersion as e:
        print(f"Error: {e}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(version)
    try:
        args = parser.parse_args(_normalise(args_in))
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 0
        ctx = Context(version=version, kubeconfig=args.kubeconfig, context=args.context,
                      istio_namespace=args.istio_namespace, namespace=args.namespace)
        return handler(ctx, args)
    except CommandError as e:
        print(f"Error: {e.message}", file=sys.stderr)
        return e.code
    except KubeError as e:
        print(f"Error: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def run_in_process(server_url: str, version: str, argv: Sequence[str],
                   token: str | None = None, ca_file: str | None = None) -> tuple[int, str, str]:
    """Run an istioctl command against `server_url` in this process: (exit code, stdout, stderr).

    The sandbox uses it to install Istio at start over the same HTTP API the programs use.
    stdout/stderr are redirected process-wide, so calls must not overlap (they are serialised).
    """
    import contextlib
    import io

    from meshops.sandbox.istio.istioctl.kube import KubeConfig

    out, err = io.StringIO(), io.StringIO()
    with _IN_PROCESS, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = build_parser(IstioVersion.parse(version)).parse_args(_normalise(list(argv)))
            ctx = Context(version=IstioVersion.parse(version), kubeconfig=None, context=None,
                          istio_namespace=args.istio_namespace, namespace=args.namespace,
                          _client=Client(KubeConfig(server=server_url, token=token, ca_file=ca_file)))
            code = args.handler(ctx, args)
        except CommandError as e:
            print(f"Error: {e.message}", file=sys.stderr)
            code = e.code
        except KubeError as e:
            print(f"Error: {e.message}", file=sys.stderr)
            code = EXIT_ERROR
    return code, out.getvalue(), err.getvalue()


_IN_PROCESS = threading.Lock()
