"""Facts about Istio releases that change what the sandbox and its istioctl programs do.

Everything version-dependent lives here so the command modules ask one question
("does this release print emoji?") instead of comparing version numbers themselves.
Sources: ../shared/reference/istio.md (support table, output changes per release).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Minor -> minimum Kubernetes minor that `istioctl install` / `x precheck` accept
# (`MinK8SVersion` in istioctl/pkg/install/k8sversion, per the reference's table).
_MIN_K8S_MINOR = {21: 26, 22: 26, 23: 26, 24: 28, 25: 28, 26: 29, 27: 29, 28: 29, 29: 30, 30: 32, 31: 32}

# Go toolchain each release line was built with; only shown in `version -o json`.
_GO_VERSION = {
    21: "go1.22.0", 22: "go1.22.3", 23: "go1.22.7", 24: "go1.23.2", 25: "go1.24.0",
    26: "go1.24.2", 27: "go1.24.5", 28: "go1.25.3", 29: "go1.25.6", 30: "go1.26.2", 31: "go1.26.2",
}

SUPPORTED_MINORS = range(21, 32)
_VERSION_RE = re.compile(r"^1\.(\d+)\.(\d+)$")


class UnsupportedVersion(ValueError):
    pass


@dataclass(frozen=True, order=True)
class IstioVersion:
    """One Istio release, e.g. 1.24.1."""

    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> IstioVersion:
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise UnsupportedVersion(f"invalid Istio version {text!r}: expected 1.MINOR.PATCH")
        minor, patch = int(m.group(1)), int(m.group(2))
        if minor not in SUPPORTED_MINORS:
            raise UnsupportedVersion(
                f"Istio {text} is not modelled by the sandbox (supported: 1.{SUPPORTED_MINORS.start}"
                f" to 1.{SUPPORTED_MINORS.stop - 1})"
            )
        return cls(minor, patch)

    def __str__(self) -> str:
        return f"1.{self.minor}.{self.patch}"

    @property
    def minor_str(self) -> str:
        return f"1.{self.minor}"

    @property
    def min_k8s_minor(self) -> int:
        return _MIN_K8S_MINOR[self.minor]

    @property
    def go_version(self) -> str:
        return _GO_VERSION[self.minor]

    @property
    def default_revision_name(self) -> str:
        """The revision name the docs suggest for this release: 1.23.2 -> 1-23-2."""
        return str(self).replace(".", "-")

    # --- output changes between releases -------------------------------------------------

    @property
    def install_emoji(self) -> bool:
        """`✔ Istio core installed ⛵️`: icons appear from 1.23 on."""
        return self.minor >= 23

    @property
    def prompt_lists_components(self) -> bool:
        """<=1.23 prompts 'Istio 1.23.0 "default" profile (with components: ...)'."""
        return self.minor <= 23

    @property
    def proxy_status_subscriptions(self) -> bool:
        """>=1.27 (PR #56441): NAME CLUSTER ISTIOD VERSION SUBSCRIBED TYPES."""
        return self.minor >= 27

    @property
    def proxy_status_ages(self) -> bool:
        """From 1.23 sync cells may carry an age, e.g. `SYNCED (29s)`."""
        return self.minor >= 23

    @property
    def docs_url(self) -> str:
        return f"https://istio.io/v{self.minor_str}/docs"


def build_sha(version: str) -> str:
    """The build's git revision as `istioctl version -o json` shows it.

    Real builds carry their release commit; a digest of the version keeps the shape (40 hex
    digits, stable per release) without pretending to know the real one.
    """
    return hashlib.sha1(f"istio-{version}".encode(), usedforsecurity=False).hexdigest()


def image_tag(image: str) -> str:
    """'docker.io/istio/proxyv2:1.24.1-distroless@sha256:..' -> '1.24.1' (no tag -> '').

    Reference §5: parsers strip `-distroless`, `-debug` and `@sha256:`; the running digest is in
    containerStatuses[].imageID.
    """
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    if ":" not in last:
        return ""
    tag = last.rsplit(":", 1)[1]
    for variant in ("-distroless", "-debug"):
        tag = tag.removesuffix(variant)
    return tag


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def valid_revision(name: str) -> bool:
    """Revision names are DNS-1123 labels (operator/cmd/mesh/install.go)."""
    return len(name) <= 63 and bool(_DNS1123_LABEL.match(name))


def istiod_service_name(revision: str) -> str:
    """The Service (and Deployment) of a revision; the unrevisioned install is `istiod`."""
    return "istiod" if revision in ("", "default") else f"istiod-{revision}"
