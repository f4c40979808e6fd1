"""What the commands share: settings, and building the store, drivers, lock and engine."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from meshops.domain.errors import BadInput

# The engine, drivers and steps are imported where they are used: `meshops X --help` imports
# this module (the commands' shared helpers) and must stay as light as `python -c pass` x3.
if TYPE_CHECKING:
    from meshops.drivers.api import Drivers, DriverSettings
    from meshops.engine.journal import StateStore
    from meshops.engine.lock import RunLock
    from meshops.engine.playbook import LoadedPlaybook
    from meshops.engine.runner import Engine, StopFlag


@dataclass(kw_only=True)
class App:
    kube_context: str | None
    kubeconfig: str | None
    state_dir: str
    qps: float = 50.0
    burst: int = 100
    _drivers: Drivers | None = field(default=None, repr=False)

    def driver_settings(self, **overrides: Any) -> DriverSettings:
        """Everything the drivers need, from the options and the environment: the one place it is read."""
        from meshops.drivers.api import DriverSettings

        env = os.environ
        values: dict[str, Any] = {
            "kubeconfig": self.kubeconfig, "context": self.kube_context, "qps": self.qps, "burst": self.burst,
            "prometheus_token": env.get("MESHOPS_PROMETHEUS_TOKEN") or None,
            "prometheus_tokens": parse_prometheus_tokens(env.get("MESHOPS_PROMETHEUS_TOKENS", "")),
            "aws_profile": env.get("MESHOPS_AWS_PROFILE") or None, "aws_region": env.get("MESHOPS_AWS_REGION") or None,
        }
        values.update(overrides)
        return DriverSettings(**values)

    @property
    def drivers(self) -> Drivers:
        if self._drivers is None:
            from meshops.drivers.live import LiveDrivers

            self._drivers = LiveDrivers(self.driver_settings())
        return self._drivers

    def run_status(self, run_id: str) -> tuple[str, str]:
        """A run's (status, message) from whichever journal holds it (for the result document)."""
        from meshops.engine.journal import RunState

        local = self.store(cluster=False)
        store = local if local.exists(run_id) or not self.cluster_configured() else self.store(cluster=True)
        state = RunState.replay(run_id, store.records(run_id))
        return state.status, state.message or ""

    def cluster_configured(self) -> bool:
        """Whether a cluster was named: a context or kubeconfig given, or a default kubeconfig exists."""
        if self.kube_context or self.kubeconfig:
            return True
        return os.path.exists(os.path.expanduser("~/.kube/config"))

    @staticmethod
    def needs(loaded: LoadedPlaybook) -> set[str]:
        from meshops.steps import registry

        out: set[str] = set()
        for spec in loaded.playbook.steps:
            cls = registry.get(spec.uses)
            if cls is not None:
                out |= set(cls.needs)
        return out

    def store(self, *, cluster: bool) -> StateStore:
        from meshops.engine.journal import LocalStateStore, MirroredStateStore

        local = LocalStateStore(self.state_dir)
        if not cluster:
            return local
        from meshops.drivers.kube_state import ConfigMapStateStore

        return MirroredStateStore(local, ConfigMapStateStore(self.drivers.kube))

    def lock(self, *, cluster: bool) -> RunLock:
        from meshops.engine.lock import FileLock

        if cluster:
            from meshops.drivers.kube_state import LeaseLock

            return LeaseLock(self.drivers.kube)
        return FileLock(os.path.join(self.state_dir, "local.lock"))

    def engine(self, *, cluster: bool, assume_yes: bool = False, stop: StopFlag | None = None,
               on_started: Callable[[str], None] | None = None) -> Engine:
        from meshops.cli import progress
        from meshops.engine.runner import Engine, EngineOptions

        interactive = sys.stdin.isatty() and sys.stderr.isatty()
        def ask(msg: str) -> bool:
            progress.stop()  # a live display must not redraw over the question
            return click.confirm(msg, default=False, err=True)

        confirm: Callable[[str], bool] | None = ask if interactive else None
        return Engine(store=self.store(cluster=cluster), drivers=self.drivers, lock=self.lock(cluster=cluster),
                      options=EngineOptions(assume_yes=assume_yes, interactive=interactive, confirm=confirm,
                                            progress=progress.factory(), on_started=on_started or _announce),
                      stop=stop)


def app_from(ctx: click.Context) -> App:
    root = ctx.find_root()
    app = root.meta.get("meshops.app")
    if app is None:
        from meshops.cli import logs, output
        from meshops.cli.main import settings_of

        settings = settings_of(ctx)
        logs.configure(fmt=settings.log_format, verbosity=settings.verbosity)
        app = App(kube_context=settings.kube_context, kubeconfig=settings.kubeconfig, state_dir=settings.state_dir)
        root.meta["meshops.app"] = app
        output.SESSION.status_of = app.run_status
    assert isinstance(app, App)
    return app


def _announce(run_id: str) -> None:
    # On stderr so that it shows whatever the outcome, without mixing into a command's output.
    from meshops.cli import output

    output.started(run_id)


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """SIGINT/SIGTERM ask the engine to stop at a safe point; a second SIGINT stops at once."""
    from meshops.engine.runtypes import StopFlag

    stop = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if stop() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        from meshops.cli import output

        output.notice(f"{signal.Signals(signum).name}: stopping at the next safe point (Ctrl-C again to stop at once)",
                      event="meshops.stopping", level="warning", signal=signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def parse_vars(pairs: tuple[str, ...], var_files: tuple[str, ...] = ()) -> dict[str, Any]:
    """--var k=v pairs, --var-file YAML files, and MESHOPS_PARAM_<NAME> environment variables."""
    out: dict[str, Any] = {}
    from meshops.domain.errors import PlaybookInvalid
    from meshops.engine.yamlsource import load_yaml_file

    for path in var_files:
        try:
            # Bounded like a playbook: size, depth, and aliases expanded (no alias bombs).
            data = load_yaml_file(path).data or {}
        except PlaybookInvalid as exc:
            raise BadInput(f"--var-file {path}: {exc.message}") from None
        if not isinstance(data, dict):
            raise BadInput(f"--var-file {path}: expected a mapping of param names to values")
        out.update(data)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--var {pair!r}: expected NAME=VALUE")
        out[key.strip()] = value
    return out


def env_params(names: list[str]) -> dict[str, str]:
    return {n: os.environ[f"MESHOPS_PARAM_{n.upper()}"] for n in names if f"MESHOPS_PARAM_{n.upper()}" in os.environ}


def parse_prometheus_tokens(text: str) -> dict[str, str]:
    """``$MESHOPS_PROMETHEUS_TOKENS``: ``URL=TOKEN`` entries separated by spaces, commas or newlines."""
    out: dict[str, str] = {}
    for entry in text.replace(",", " ").split():
        url, sep, token = entry.partition("=")
        if not sep or not url or not token:
            raise BadInput("$MESHOPS_PROMETHEUS_TOKENS: expected URL=TOKEN entries separated by spaces or commas")
        out[url] = token
    return out
