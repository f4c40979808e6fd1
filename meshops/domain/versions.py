"""Istio and Kubernetes versions, the skew rules between them, and revision names.

Pure values and rules, no I/O. Sources: ../shared/reference/istio.md section 2 (skew
policy, the Kubernetes support table) and section 1 (revision naming).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_ISTIO_RE = re.compile(r"^v?1\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")
_KUBE_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class VersionError(ValueError):
    """A version string meshops cannot use; the message says why."""


@dataclass(frozen=True, order=True)
class IstioVersion:
    """An Istio release such as 1.24.1 (pre-releases sort before their release)."""

    minor: int
    patch: int
    # "" sorts after any pre-release tag only by the field below, so keep the flag first.
    is_release: bool = True
    pre: str = ""

    @classmethod
    def parse(cls, text: str) -> IstioVersion:
        m = _ISTIO_RE.match(text.strip())
        if not m:
            raise VersionError(f"{text!r} is not an Istio version (expected 1.MINOR.PATCH, e.g. 1.24.1)")
        pre = m.group(3) or ""
        return cls(int(m.group(1)), int(m.group(2)), is_release=not pre, pre=pre)

    def __str__(self) -> str:
        return f"1.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")

    @property
    def minor_str(self) -> str:
        return f"1.{self.minor}"

    def minors_to(self, other: IstioVersion) -> int:
        """How many minors ``other`` is ahead of this version (negative when behind)."""
        return other.minor - self.minor


@dataclass(frozen=True, order=True)
class KubeVersion:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> KubeVersion:
        """``v1.29.3``, ``v1.29.3-gke.100``, ``1.29``."""
        m = _KUBE_RE.match(text.strip())
        if not m:
            raise VersionError(f"{text!r} is not a Kubernetes version")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True, kw_only=True)
class Support:
    """What one Istio minor supports: the documented Kubernetes range and istioctl's hard minimum."""

    istio_minor: int
    released: str
    k8s_min: int  # documented, minor of 1.x
    k8s_max: int
    code_min: int  # istioctl install/precheck refuse below this (MinK8SVersion)
    verified: bool = True


# The reference's table (istio.io data/compatibility/supportStatus.yml). 1.22's documented
# range is marked there as recalled, not read; it is kept but flagged.
SUPPORT: dict[int, Support] = {s.istio_minor: s for s in (
    Support(istio_minor=20, released="2023-11-14", k8s_min=25, k8s_max=29, code_min=25),
    Support(istio_minor=21, released="2024-02-28", k8s_min=26, k8s_max=29, code_min=26),
    Support(istio_minor=22, released="2024-05-13", k8s_min=27, k8s_max=30, code_min=26, verified=False),
    Support(istio_minor=23, released="2024-08-14", k8s_min=27, k8s_max=30, code_min=26),
    Support(istio_minor=24, released="2024-11-07", k8s_min=28, k8s_max=31, code_min=28),
    Support(istio_minor=25, released="2025-03-03", k8s_min=29, k8s_max=32, code_min=28),
    Support(istio_minor=26, released="2025-05-08", k8s_min=29, k8s_max=33, code_min=29),
    Support(istio_minor=27, released="2025-08-11", k8s_min=29, k8s_max=33, code_min=29),
    Support(istio_minor=28, released="2025-11-05", k8s_min=30, k8s_max=34, code_min=29),
    Support(istio_minor=29, released="2026-02-16", k8s_min=31, k8s_max=35, code_min=30),
    Support(istio_minor=30, released="2026-05-14", k8s_min=32, k8s_max=36, code_min=32),
)}


class Strategy(StrEnum):
    CANARY = "canary"
    INPLACE = "inplace"


# Canary may jump two minors; in-place one (istio.io canary and in-place upgrade docs).
MAX_MINOR_JUMP = {Strategy.CANARY: 2, Strategy.INPLACE: 1}
# A control plane may be at most this many minors ahead of the proxies it serves, never behind.
MAX_CP_AHEAD_OF_DP = 1


def support_for(version: IstioVersion) -> Support:
    s = SUPPORT.get(version.minor)
    if s is None:
        known = f"1.{min(SUPPORT)} to 1.{max(SUPPORT)}"
        raise VersionError(f"Istio {version} is not a release meshops knows (known: {known})")
    return s


def kube_support_problem(target: IstioVersion, kube: KubeVersion) -> str | None:
    """Why ``target`` cannot run on this Kubernetes, or None. Below the documented range but at or
    above istioctl's own minimum is still refused: it is untested territory for production."""
    s = support_for(target)
    if kube.major != 1:
        return f"Kubernetes {kube} is not a 1.x release"
    if kube.minor < s.k8s_min or kube.minor > s.k8s_max:
        return (f"Istio {target.minor_str} supports Kubernetes 1.{s.k8s_min} to 1.{s.k8s_max}; "
                f"this cluster runs {kube}")
    return None


def skew_problem(current: IstioVersion, target: IstioVersion, strategy: Strategy) -> str | None:
    """Why going from ``current`` to ``target`` with ``strategy`` is refused, or None."""
    if target == current:
        return f"Istio {target} is already installed"
    if target < current:
        return (f"{target} is older than the installed {current}: meshops upgrades only forward "
                f"(to go back, roll back the run that upgraded)")
    jump = current.minors_to(target)
    limit = MAX_MINOR_JUMP[strategy]
    if jump > limit:
        how = ("upgrade one minor at a time" if strategy is Strategy.INPLACE
               else "upgrade to an intermediate minor first")
        return (f"{current} -> {target} jumps {jump} minors; a {strategy.value} upgrade allows at most "
                f"{limit} ({how})")
    return None


def proxy_skew_problem(proxy: IstioVersion, control_plane: IstioVersion) -> str | None:
    """Why a proxy at ``proxy`` must not be served by a control plane at ``control_plane``."""
    ahead = proxy.minors_to(control_plane)
    if ahead < 0:
        return f"proxy {proxy} is ahead of its control plane {control_plane}"
    if ahead > MAX_CP_AHEAD_OF_DP:
        return f"control plane {control_plane} is {ahead} minors ahead of proxy {proxy} (at most {MAX_CP_AHEAD_OF_DP})"
    return None


def revision_name(version: IstioVersion) -> str:
    """The revision name meshops gives a version: 1.24.1 -> 1-24-1 (dots are not allowed)."""
    return str(version).replace(".", "-").lower()


def revision_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new revision, or None."""
    if name == "default":
        # istio/istio#48643: a revision named default hijacks istio-injection=enabled.
        return "the revision name 'default' is reserved (it would take over istio-injection=enabled namespaces)"
    if len(name) > 63 or not _DNS1123_LABEL.match(name):
        return f"invalid revision {name!r}: a revision is a DNS-1123 label (lower-case letters, digits, '-')"
    if len(f"istiod-{name}") > 63:
        return f"revision {name!r} is too long: istiod-{name} must fit in 63 characters"
    return None


def tag_problem(name: str) -> str | None:
    if len(name) > 63 or not _DNS1123_LABEL.match(name):
        return f"invalid revision tag {name!r}: a tag is a DNS-1123 label"
    return None


def compatibility_versions(target: IstioVersion) -> list[str]:
    """The ``compatibilityVersion`` profiles the target ships (reference §7): 1.22 has 1.20 and
    1.21; from 1.23 on, the three minors before it."""
    if target.minor <= 22:
        return [f"1.{m}" for m in range(20, target.minor)]
    return [f"1.{m}" for m in range(target.minor - 3, target.minor)]


def compatibility_problem(target: IstioVersion, wanted: str) -> str | None:
    """Why ``--compatibility-version wanted`` cannot be used with ``target``, or None."""
    known = compatibility_versions(target)
    if wanted not in known:
        return (f"--compatibility-version {wanted}: Istio {target.minor_str} ships compatibility versions "
                f"{', '.join(known)} (istioctl fails with 'unknown compatibility version')")
    return None
