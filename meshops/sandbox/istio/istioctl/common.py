"""What every sandbox istioctl command shares: exit codes, errors, the run context, flag helpers.

Exit codes follow istioctl/cmd/sysexits.go: 0 ok, 1 any error, 64 a usage error (bad flag,
unknown command), 65 a file that does not parse, 79 analyzers found issues. Kept apart from
``app`` (parsing and dispatch), which imports the commands, so no command imports ``app``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from meshops.sandbox.istio.istioctl.kube import Client, ConfigError, load_kubeconfig
from meshops.sandbox.istio.versions import IstioVersion

EXIT_ERROR = 1
EXIT_USAGE = 64
EXIT_DATA = 65
EXIT_ANALYZE_ISSUES = 79


class CommandError(Exception):
    """Printed as `Error: <message>` on stderr; the process exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CommandError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


@dataclass
class Context:
    version: IstioVersion
    kubeconfig: str | None
    context: str | None
    istio_namespace: str
    namespace: str | None
    _client: Client | None = field(default=None, repr=False)
    _default_ns: str = "default"

    def client(self) -> Client:
        if self._client is None:
            try:
                cfg = load_kubeconfig(self.kubeconfig, self.context)
            except (ConfigError, OSError) as e:
                raise CommandError(f"failed to create Kubernetes client: {e}") from e
            self._default_ns = cfg.namespace
            self._client = Client(cfg)
        return self._client

    @property
    def default_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        self.client()
        return self._default_ns


# Go bool flags accept `--flag`, `--flag=true` and `--flag=false`; argparse needs help.
_BOOL_FLAGS = {
    "--skip-confirmation": None, "-y": "--skip-confirmation", "--remote": None, "--dry-run": None,
    "--purge": None, "--overwrite": None, "--all-namespaces": None, "-A": "--all-namespaces",
    "--short": None, "-s": "--short", "--skip-controlplane": None, "--auto-inject-namespaces": None,
    "--force": None, "--verify": None, "--recursive": None, "-R": "--recursive", "--use-kube": None,
}


def _normalise(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    for tok in argv:
        name, eq, value = tok.partition("=")
        if name in _BOOL_FLAGS:
            long = _BOOL_FLAGS[name] or name
            out.append(f"{long}={value if eq else 'true'}")
        elif eq and len(name) == 2 and name.startswith("-") and name[1] != "-":
            out += [name, value]  # pflag reads `-o=json` as `-o json`
        else:
            out.append(tok)
    return out


def go_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "t"):
        return True
    if lowered in ("false", "0", "f"):
        return False
    raise argparse.ArgumentTypeError(f'invalid argument "{text}" for bool flag: strconv.ParseBool: parsing "{text}": invalid syntax')


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse phrases; cobra would say "unknown flag: --x" - keep the flag name visible.
        if message.startswith("unrecognized arguments:"):
            message = "unknown flag: " + message.split(":", 1)[1].strip()
        elif "invalid choice:" in message:
            bad = message.split("invalid choice:", 1)[1].split("(", 1)[0].strip().strip("'")
            message = f'unknown command "{bad}" for "{self.prog}"'
        raise UsageError(message)


def bool_flag(parser: argparse.ArgumentParser, name: str, help_text: str = "", default: bool = False) -> None:
    parser.add_argument(name, type=go_bool, default=default, metavar="BOOL", help=help_text)


Handler = Callable[[Context, argparse.Namespace], int]


def _globals(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--kubeconfig", default=None)
    p.add_argument("--context", default=None)
    p.add_argument("-i", "--istioNamespace", dest="istio_namespace", default="istio-system")
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("--vklog", default=None)


def confirm(message: str) -> bool:
    """istioctl's util.Confirm: print the question, read a line, anything but y/yes is no."""
    sys.stdout.write(message + " ")
    sys.stdout.flush()
    line = sys.stdin.readline()
    return line.strip().lower() in ("y", "yes")
