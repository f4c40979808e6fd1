"""Which step types exist, and where each one lives.

Step modules are imported only when a playbook uses them, so validating a playbook or
printing ``--help`` never pays for the Kubernetes or AWS clients. ``MESHOPS_STEP_MODULES``
(comma-separated module names) adds step types from outside meshops.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from meshops.domain.errors import BadInput
from meshops.steps.base import Step

# name -> module that defines it (the module registers the class when imported)
CATALOG: dict[str, str] = {
    "core.noop": "meshops.steps.core",
    "core.log": "meshops.steps.core",
    "core.wait": "meshops.steps.core",
    "core.fail": "meshops.steps.core",
    "gate.approve": "meshops.steps.gates",
    "istio.install_snapshot": "meshops.steps.install",
    "istio.precheck": "meshops.steps.install",
    "istio.install": "meshops.steps.install",
    "istio.record_overlay": "meshops.steps.install",
    "istio.analyze": "meshops.steps.install",
    "tune.load_annotations": "meshops.steps.tune_apply",
    "tune.annotate_workload": "meshops.steps.tune_apply",
    "health.http_probe": "meshops.steps.health",
    "health.promql": "meshops.steps.health",
    "switchover.check_inputs": "meshops.steps.switchover_preflight",
    "switchover.find_ingress": "meshops.steps.switchover_preflight",
    "switchover.read_dns": "meshops.steps.switchover_preflight",
    "switchover.prove_target": "meshops.steps.switchover_prove",
    "switchover.lower_ttl": "meshops.steps.switchover_dns",
    "switchover.prepare_dns": "meshops.steps.switchover_dns",
    "switchover.shift": "meshops.steps.switchover_dns",
    "switchover.extdns_read": "meshops.steps.switchover_extdns",
    "switchover.extdns_prepare": "meshops.steps.switchover_extdns",
    "switchover.extdns_shift": "meshops.steps.switchover_extdns",
    "istio.discover": "meshops.steps.istio_discover",
    "istio.upgrade_check": "meshops.steps.istio_precheck",
    "istio.install_revision": "meshops.steps.istio_install_revision",
    "istio.parity": "meshops.steps.istio_parity",
    "istio.move_wave": "meshops.steps.istio_waves",
    "istio.restart_back": "meshops.steps.istio_waves",
    "istio.gateways": "meshops.steps.istio_gateways",
    "istio.finalize": "meshops.steps.istio_finalize",
}

_LOADED: dict[str, type[Step[Any, Any]]] = {}
_EXTRAS_DONE = False


def register(cls: type[Step[Any, Any]]) -> type[Step[Any, Any]]:
    """Class decorator: make a step type available under ``cls.name``."""
    existing = _LOADED.get(cls.name)
    if existing is not None and existing is not cls:
        raise RuntimeError(f"step type {cls.name} is defined twice: {existing.__module__} and {cls.__module__}")
    _LOADED[cls.name] = cls
    return cls


def _load_extras() -> None:
    global _EXTRAS_DONE
    if _EXTRAS_DONE:
        return
    _EXTRAS_DONE = True
    for module in filter(None, (m.strip() for m in os.environ.get("MESHOPS_STEP_MODULES", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BadInput(f"MESHOPS_STEP_MODULES names {module!r}, which cannot be imported: {exc}") from None


def known_names() -> list[str]:
    _load_extras()
    return sorted(set(CATALOG) | set(_LOADED))


def get(name: str) -> type[Step[Any, Any]] | None:
    if name in _LOADED:
        return _LOADED[name]
    module = CATALOG.get(name)
    if module is not None:
        importlib.import_module(module)
    else:
        _load_extras()
    return _LOADED.get(name)


def load_all() -> dict[str, type[Step[Any, Any]]]:
    for name in known_names():
        get(name)
    return dict(_LOADED)
