"""Profiles resolved to files, composed into the one overlay istioctl installs, and diffed.

A profile is a name (``profiles/<name>.yaml`` beside the package, or in
``$MESHOPS_PROFILES_DIR``) or a path to a user's IstioOperator file. The rendered overlay
is what meshops hands istioctl (``-f``), prints for ``--dry-run`` and records in the
cluster; the revision and the version travel beside it as flags, so the same settings can
be installed again under a new revision.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshops.domain import overlays
from meshops.domain.overlays import Overlay, OverlayInvalid, Spec

# The tuning file from `meshops tune -o yaml` also carries the per-workload annotations.
TUNING_SIDE_KINDS = ("ProxyResourceAnnotations",)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def profiles_dir() -> Path:
    env = os.environ.get("MESHOPS_PROFILES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "profiles"


def available_profiles() -> list[str]:
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_profile(ref: str) -> Overlay:
    """A profile by name, or a user's overlay by path. Raises OverlayInvalid naming what is wrong."""
    if _NAME.match(ref) and not os.path.exists(ref):
        path = profiles_dir() / f"{ref}.yaml"
        if not path.is_file():
            known = ", ".join(available_profiles()) or "none found in " + str(profiles_dir())
            raise OverlayInvalid([f"--profile {ref}: unknown profile (available: {known}); "
                                  "a user profile is a path to an IstioOperator file"])
        return overlays.parse_overlay(path.read_text(encoding="utf-8"), f"profile {ref} ({path.name})")
    return _load_file(ref, f"--profile {ref}")


def load_tuning(path: str) -> Overlay:
    return _load_file(path, f"--tuning {path}", skip_kinds=TUNING_SIDE_KINDS)


def _load_file(path: str, label: str, *, skip_kinds: Sequence[str] = ()) -> Overlay:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OverlayInvalid([f"{label}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OverlayInvalid([f"{label}: cannot read it: {exc}"]) from None
    return overlays.parse_overlay(text, path, skip_kinds=skip_kinds)


@dataclass(frozen=True, kw_only=True)
class RenderedOverlay:
    spec: Spec
    text: str
    sha256: str
    profiles: tuple[str, ...]


def render_install_overlay(profiles: Sequence[str], *, sets: Sequence[str] = (), tuning: str | None = None) -> RenderedOverlay:
    """Profiles in order, then the tuning overlay, then ``--set``: checked, merged, rendered.

    Every problem of every input is collected before raising, so one run shows them all.
    """
    if not profiles:
        raise OverlayInvalid(["--profile: give at least one profile (e.g. --profile default)"])
    loaded: list[Overlay] = []
    problems: list[str] = []
    for ref in profiles:
        try:
            loaded.append(load_profile(ref))
        except OverlayInvalid as exc:
            problems += exc.problems
    if tuning:
        try:
            loaded.append(load_tuning(tuning))
        except OverlayInvalid as exc:
            problems += exc.problems
    try:
        spec = overlays.compose(loaded, sets)
    except OverlayInvalid as exc:
        problems += exc.problems
        spec = {}
    if problems:
        raise OverlayInvalid(problems)
    text = overlays.render(spec, name="meshops-install")
    return RenderedOverlay(spec=spec, text=text, sha256=sha256(text), profiles=tuple(profiles))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- diff against what is installed ---------------------------------------------------------


def diff_text(new: RenderedOverlay, *, version: str, revision: str, recorded: Any | None,
              installed_spec: Spec | None) -> str:
    """What installing ``new`` would change, in words a reviewer can check.

    With a recorded overlay (an earlier ``meshops install``): a unified diff of the two
    overlays, plus version and revision changes. Without one but with istioctl's
    installed-state: each field the new overlay sets, installed value against new. With
    neither: nothing of Istio is installed for this revision.
    """
    if recorded is not None:
        head = []
        if recorded.version != version:
            head.append(f"version: {recorded.version} -> {version}")
        if recorded.revision != revision:
            head.append(f"revision: {recorded.revision or 'default'} -> {revision or 'default'}")
        if list(recorded.profiles) != list(new.profiles):
            head.append(f"profiles: {', '.join(recorded.profiles)} -> {', '.join(new.profiles)}")
        lines = list(difflib.unified_diff(recorded.overlay.splitlines(), new.text.splitlines(),
                                          fromfile=f"installed ({overlays.RECORD_CONFIGMAP})",
                                          tofile="new", lineterm=""))
        if not head and not lines:
            return "no changes: the installed overlay, version and revision are the ones asked for"
        return "\n".join(head + lines)
    if installed_spec is not None:
        rows = []
        for path, value in sorted(overlays.leaves(new.spec).items()):
            found, current = overlays.leaf_at(installed_spec, path)
            if not found or current != value:
                shown = _show(current) if found else "(not set)"
                rows.append(f"  {path}: {shown} -> {_show(value)}")
        tag = installed_spec.get("tag")
        head = [f"version: {tag} -> {version}"] if tag and str(tag) != version else []
        head.append("no meshops record of the last install; compared with istioctl's installed-state:")
        return "\n".join(head + (rows or ["  every field the overlay sets already has that value"]))
    return (f"nothing installed for revision {revision or 'default'}: everything is new\n"
            + "\n".join("+" + line for line in new.text.splitlines()))


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
