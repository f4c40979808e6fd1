"""Running a sandbox as a process: build clusters, run extensions, write DIR, serve until told.

``meshops sandbox up`` starts ``python -m meshops.sandbox serve`` detached; this module is what
that process runs, plus the helpers ``up``/``down``/``status`` use to find and talk to it.

DIR holds:
- ``kubeconfig``: one context per cluster, named after it;
- ``env``: exports KUBECONFIG (and whatever extensions add) for ``source``;
- ``audit-<cluster>.jsonl``: one JSON line per API request;
- ``sandbox.log``: the process's log; ``sandbox.pid``: its pid; ``state.json``: what it serves.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import logging
import os
import re
import secrets
import signal
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .apiserver import Cluster

log = logging.getLogger("meshops.sandbox")

# ---- extension registration point ---------------------------------------------------------
# "module:function" entries called by `serve` after the clusters are started and before DIR's
# files are written, each with a SandboxContext. Part 2 of the sandbox (Istio, Route53, faults)
# registers itself here, e.g. "meshops.sandbox.istio.setup:configure". More can be passed with
# `--extension module:function`.
EXTENSIONS: list[str] = []

PID_FILE = "sandbox.pid"
STATE_FILE = "state.json"
LOG_FILE = "sandbox.log"
KUBECONFIG_FILE = "kubeconfig"
ENV_FILE = "env"


@dataclass(kw_only=True)
class SandboxContext:
    """What an extension gets: the started clusters and the places to leave its marks."""

    directory: Path
    clusters: dict[str, Cluster]
    options: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)  # extra exports for DIR/env
    state: dict[str, Any] = field(default_factory=dict)  # extra facts for state.json / `status`
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run at shutdown, reversed


def load_extension(spec: str) -> Callable[[SandboxContext], None]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"extension {spec!r} must look like 'package.module:function'")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"extension {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


def new_token() -> str:
    return f"sbx-{secrets.token_hex(24)}"


def kubeconfig_document(clusters: dict[str, str], *, current: str | None = None,
                        token: str | None = None, ca: dict[str, bytes] | None = None) -> dict[str, Any]:
    """A kubeconfig with one context per cluster (name -> server URL; `ca`: name -> CA PEM)."""
    names = list(clusters)

    def cluster_entry(name: str, url: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"server": url}
        if ca and name in ca:
            entry["certificate-authority-data"] = base64.b64encode(ca[name]).decode()
        return {"name": name, "cluster": entry}

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [cluster_entry(n, url) for n, url in clusters.items()],
        # The API servers of `sandbox up` require this token (401 otherwise). It is random and
        # long like a real one: meshops scrubs tokens from journals, and a short word would be
        # scrubbed out of every hostname that contains it.
        "users": [{"name": "sandbox", "user": {"token": token or new_token()}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "sandbox", "namespace": "default"}} for n in names],
        "current-context": current or (names[0] if names else ""),
    }


def write_kubeconfig(path: Path, clusters: dict[str, str], *, token: str | None = None,
                     ca: dict[str, bytes] | None = None) -> None:
    _write_atomic(path, yaml.safe_dump(kubeconfig_document(clusters, token=token, ca=ca), sort_keys=False))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# The only expansions an env value may ask for: a search path extended in front of its old value
# (``DIR/bin:$PATH``). Everything else is literal.
_PATH_SUFFIX = re.compile(r":\$(PATH|PYTHONPATH)$")


def _literal(value: str) -> str:
    # Inside double quotes the shell still expands $, ` and \ and ends at "; escaping those four
    # leaves nothing to expand, so a --dir like /tmp/$(rm -rf ~) stays a name.
    return "".join("\\" + c if c in '\\"$`' else c for c in value)


def shell_quote(value: str) -> str:
    """``value`` as one double-quoted shell word, literal except a trailing ``:$PATH`` reference."""
    m = _PATH_SUFFIX.search(value)
    if m is None:
        return '"' + _literal(value) + '"'
    return '"' + _literal(value[:m.start()]) + ":$" + m.group(1) + '"'


def serve(
    directory: Path,
    *,
    cluster_names: list[str],
    k8s_version: str,
    rollout_seconds: float,
    nodes: int,
    options: dict[str, Any],
    extensions: list[str],
    stop_event: threading.Event | None = None,
) -> None:
    """Run the sandbox in this process until SIGTERM/SIGINT (or ``stop_event``)."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    stop = stop_event or threading.Event()
    if stop_event is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    clusters: dict[str, Cluster] = {}
    token = new_token()  # one credential for every cluster of this sandbox, written to DIR/kubeconfig
    ctx = SandboxContext(directory=directory, clusters=clusters, options=options)
    (directory / PID_FILE).write_text(f"{os.getpid()}\n", encoding="utf-8")
    try:
        for name in cluster_names:
            log.info("starting cluster %s", name)
            clusters[name] = Cluster(
                name,
                k8s_version=k8s_version,
                rollout_seconds=rollout_seconds,
                nodes=nodes,
                audit_path=directory / f"audit-{name}.jsonl",
                token=token,
                tls_dir=directory / "pki",
            ).start()
        for spec in [*EXTENSIONS, *extensions]:
            log.info("running extension %s", spec)
            load_extension(spec)(ctx)
        urls = {name: c.url for name, c in clusters.items()}
        write_kubeconfig(directory / KUBECONFIG_FILE, urls, token=token,
                         ca={n: c.serving.ca_pem for n, c in clusters.items() if c.serving})
        exports = {"KUBECONFIG": str(directory / KUBECONFIG_FILE), "MESHOPS_SANDBOX_DIR": str(directory), **ctx.env}
        _write_atomic(directory / ENV_FILE, "".join(f"export {k}={shell_quote(v)}\n" for k, v in exports.items()))
        state = {
            "pid": os.getpid(),
            "ready": True,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "k8s_version": k8s_version,
            "rollout_seconds": rollout_seconds,
            "clusters": urls,
            "options": options,
            **ctx.state,
        }
        _write_atomic(directory / STATE_FILE, json.dumps(state, indent=2) + "\n")
        log.info("sandbox ready: %s", urls)
        stop.wait()
        log.info("stopping")
    finally:
        for cleanup in reversed(ctx.cleanups):
            try:
                cleanup()
            except Exception:
                log.exception("extension cleanup failed")
        for cluster in clusters.values():
            cluster.stop()
        with contextlib.suppress(FileNotFoundError):
            (directory / PID_FILE).unlink()
        state_path = directory / STATE_FILE
        if state_path.exists():
            with contextlib.suppress(ValueError, OSError):
                state = json.loads(state_path.read_text(encoding="utf-8"))
                if state.get("pid") == os.getpid():
                    state["ready"] = False
                    state["stopped"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    _write_atomic(state_path, json.dumps(state, indent=2) + "\n")


# ---- helpers for up/down/status ------------------------------------------------------------


def read_pid(directory: Path) -> int | None:
    try:
        return int((directory / PID_FILE).read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return None


def is_sandbox_process(pid: int) -> bool:
    """Alive and really a sandbox (a recycled pid must not be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc: trust the pid file
    if b" <defunct>" in cmdline or not cmdline:
        return False
    return b"meshops.sandbox" in cmdline or b"meshops sandbox" in cmdline


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def cluster_answers(url: str, timeout: float = 2.0) -> bool:
    # /readyz is public; our own loopback server's self-made CA is not worth loading for a probe.
    context = ssl._create_unverified_context() if url.startswith("https://") else None  # noqa: S323
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False
