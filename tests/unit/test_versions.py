"""Istio/Kubernetes versions, skew rules, the support table and revision names (meshops.domain.versions)."""

from __future__ import annotations

import pytest

from meshops.domain.versions import (
    IstioVersion,
    KubeVersion,
    Strategy,
    VersionError,
    kube_support_problem,
    proxy_skew_problem,
    revision_name,
    revision_problem,
    skew_problem,
    support_for,
    tag_problem,
)

V = IstioVersion.parse


def test_parse_and_order() -> None:
    """Versions parse with or without v, and order by minor, patch, then release after its pre-releases."""
    assert V("1.24.1") == V("v1.24.1")
    assert str(V("1.25.0-rc.0")) == "1.25.0-rc.0"
    assert V("1.23.9") < V("1.24.0-rc.0") < V("1.24.0") < V("1.24.1")


@pytest.mark.parametrize("text", ["1.24", "2.0.0", "banana", "1.24.x", ""])
def test_parse_refuses_what_is_not_a_version(text: str) -> None:
    """Anything but 1.MINOR.PATCH is a VersionError naming the expected form."""
    with pytest.raises(VersionError, match=r"1\.MINOR\.PATCH"):
        V(text)


def test_kube_versions_parse_vendor_suffixes() -> None:
    """gitVersion strings with vendor suffixes give their major and minor."""
    assert KubeVersion.parse("v1.29.3-gke.100") == KubeVersion(1, 29, 3)
    assert KubeVersion.parse("1.30") == KubeVersion(1, 30, 0)


@pytest.mark.parametrize(("current", "target", "strategy", "ok"), [
    ("1.24.1", "1.26.0", Strategy.CANARY, True),
    ("1.24.1", "1.27.0", Strategy.CANARY, False),
    ("1.24.1", "1.25.2", Strategy.INPLACE, True),
    ("1.24.1", "1.26.0", Strategy.INPLACE, False),
    ("1.24.1", "1.24.2", Strategy.INPLACE, True),
])
def test_skew_limits_per_strategy(current: str, target: str, strategy: Strategy, ok: bool) -> None:
    """Canary may jump two minors, in place one."""
    assert (skew_problem(V(current), V(target), strategy) is None) is ok


def test_skew_refuses_same_and_older() -> None:
    """Upgrading to the installed version or backwards is refused with a reason."""
    assert "already installed" in (skew_problem(V("1.24.1"), V("1.24.1"), Strategy.CANARY) or "")
    assert "older" in (skew_problem(V("1.25.0"), V("1.24.1"), Strategy.CANARY) or "")


def test_proxy_skew() -> None:
    """A proxy may trail its control plane by one minor, never lead it."""
    assert proxy_skew_problem(V("1.24.1"), V("1.25.0")) is None
    assert "ahead" in (proxy_skew_problem(V("1.26.0"), V("1.25.0")) or "")
    assert "2 minors ahead" in (proxy_skew_problem(V("1.23.0"), V("1.25.0")) or "")


def test_kubernetes_support_table() -> None:
    """The documented range of each Istio minor is enforced at both ends."""
    assert kube_support_problem(V("1.24.1"), KubeVersion(1, 30)) is None
    assert "1.28 to 1.31" in (kube_support_problem(V("1.24.1"), KubeVersion(1, 27)) or "")
    assert kube_support_problem(V("1.24.1"), KubeVersion(1, 32)) is not None
    assert support_for(V("1.22.0")).verified is False  # the reference marks 1.22's range as recalled
    with pytest.raises(VersionError, match="not a release meshops knows"):
        support_for(V("1.99.0"))


def test_revision_names() -> None:
    """Revisions are DNS labels named after the version; 'default' is reserved (istio/istio#48643)."""
    assert revision_name(V("1.25.2")) == "1-25-2"
    assert revision_problem("1-25-2") is None
    assert "reserved" in (revision_problem("default") or "")
    assert "DNS-1123" in (revision_problem("1.25.2") or "")
    assert "DNS-1123" in (revision_problem("Canary") or "")
    assert "too long" in (revision_problem("a" * 60) or "")
    assert tag_problem("prod-stable") is None and tag_problem("Prod") is not None
