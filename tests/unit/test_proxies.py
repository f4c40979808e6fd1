"""Versions and proxies read right: image variants and digests, native sidecars, the injection
status, istioctl version -o json and proxy-status of every supported layout (reference §4, §5)."""

from __future__ import annotations

import json

import pytest

from meshops.domain.mesh import MeshSnapshot, pod_from_object
from meshops.domain.proxies import parse_image, parse_proxy_status, parse_version_json, sidecar_of

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("image", "version", "variant", "digest", "hub"), [
    ("docker.io/istio/proxyv2:1.24.1", "1.24.1", "", "", "docker.io/istio"),
    ("docker.io/istio/proxyv2:1.24.1-distroless", "1.24.1", "distroless", "", "docker.io/istio"),
    ("gcr.io/istio-release/proxyv2:1.27.0-debug", "1.27.0", "debug", "", "gcr.io/istio-release"),
    (f"registry:5000/istio/proxyv2:1.25.2-distroless@{DIGEST}", "1.25.2", "distroless", DIGEST, "registry:5000/istio"),
    (f"registry:5000/istio/proxyv2@{DIGEST}", "", "", DIGEST, "registry:5000/istio"),
    ("registry:5000/proxyv2", "", "", "", "registry:5000"),
    ("auto", "", "", "", ""),
    ("docker.io/istio/proxyv2:latest", "", "", "", "docker.io/istio"),
])
def test_parse_image(image: str, version: str, variant: str, digest: str, hub: str) -> None:
    ref = parse_image(image)
    assert (ref.version, ref.variant, ref.digest, ref.hub) == (version, variant, digest, hub)
    assert ref.name in ("proxyv2", "auto")


def _pod(*, native: bool = False, image: str = "docker.io/istio/proxyv2:1.25.2-distroless",
         annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
         image_id: str = "") -> dict:
    proxy = {"name": "istio-proxy", "image": image}
    spec: dict = {"containers": [{"name": "app", "image": "app:1"}]}
    if native:
        spec["initContainers"] = [{"name": "istio-init", "image": image},
                                  {**proxy, "restartPolicy": "Always"}]
    else:
        spec["containers"].append(proxy)
    statuses = [{"name": "istio-proxy", "imageID": image_id}] if image_id else []
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": labels or {},
                         "annotations": annotations if annotations is not None else {
                             "sidecar.istio.io/status": json.dumps({"initContainers": ["istio-init"],
                                                                   "containers": ["istio-proxy"], "volumes": [],
                                                                   "imagePullSecrets": None, "revision": "1-25-2"}),
                             "istio.io/rev": "1-25-2"}},
            "spec": spec, "status": {"phase": "Running",
                                     ("initContainerStatuses" if native else "containerStatuses"): statuses}}


def test_revision_from_injection_status_not_a_label() -> None:
    sc = sidecar_of(_pod())
    assert sc is not None and sc.revision == "1-25-2" and sc.injected and not sc.native
    # The status annotation without a revision key falls back to the istio.io/rev annotation.
    pod = _pod(annotations={"sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"]}),
                            "istio.io/rev": "canary"})
    assert pod_from_object(pod).revision == "canary"


def test_native_sidecar_in_init_containers() -> None:
    pod = pod_from_object(_pod(native=True))
    assert pod.native_sidecar and pod.revision == "1-25-2" and pod.proxy_version == "1.25.2"
    # An ordinary init container named istio-proxy (no restartPolicy Always) is not a sidecar.
    obj = _pod(native=True)
    obj["spec"]["initContainers"][1].pop("restartPolicy")
    assert pod_from_object(obj).proxy_version is None


def test_debug_and_distroless_compare_equal() -> None:
    a = pod_from_object(_pod(image="docker.io/istio/proxyv2:1.25.2-debug"))
    b = pod_from_object(_pod(image="docker.io/istio/proxyv2:1.25.2"))
    assert a.proxy_version == b.proxy_version == "1.25.2"


def test_digest_pinned_proxy_takes_its_revisions_version() -> None:
    pod = _pod(image=f"my.registry/istio/proxyv2@{DIGEST}", image_id=f"docker-pullable://my.registry/p@{DIGEST}")
    p = pod_from_object(pod)
    assert p.proxy_version is None and p.proxy_digest == DIGEST
    istiod = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "istiod-1-25-2", "namespace": "istio-system", "labels": {"istio.io/rev": "1-25-2"}},
              "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "istiod", "istio.io/rev": "1-25-2"}},
                                                   "spec": {"containers": [
                                                       {"name": "discovery",
                                                        "image": "docker.io/istio/pilot:1.25.2-distroless"}]}}},
              "status": {"readyReplicas": 1}}
    snap = MeshSnapshot.from_objects(kube_version="v1.30.0", namespaces=[], pods=[pod], workloads=[istiod],
                                     mutating=[], validating=[])
    assert snap.revisions["1-25-2"].version == "1.25.2"
    assert snap.proxies_by_version() == {"1.25.2": 1}


def test_version_json_capitalised_keys() -> None:
    text = json.dumps({
        "clientVersion": {"version": "1.27.0", "revision": "abc", "golang_version": "go1.24", "status": "Clean",
                          "tag": "1.27.0"},
        "meshVersion": [{"Component": "pilot", "Revision": "default", "Info": {"version": "1.26.0"}},
                        {"Component": "istiod", "Revision": "1-27-0", "Info": {"version": "1.27.0"}}],
        "dataPlaneVersion": [{"ID": "productpage-v1-x.bookinfo", "IstioVersion": "1.26.0", "Type": "sidecar"}]})
    report = parse_version_json(text)
    assert report.client == "1.27.0"
    assert report.revisions() == {"default": "1.26.0", "1-27-0": "1.27.0"}
    assert [c.component for c in report.control_planes] == ["pilot", "istiod"]
    assert report.data_plane == {"productpage-v1-x.bookinfo": "1.26.0"}
    # No control plane: istioctl still exits 0 with an empty meshVersion.
    assert parse_version_json(json.dumps({"clientVersion": {"version": "1.22.0"}})).control_planes == ()
    with pytest.raises(ValueError):
        parse_version_json("[]")


PS_122 = """\
NAME                                    CLUSTER        CDS        LDS        EDS        RDS          ECDS         ISTIOD                      VERSION
details-v1-7d4d9d5fcb-2nsbk.bookinfo    Kubernetes     SYNCED     SYNCED     SYNCED     SYNCED       NOT SENT     istiod-6cf8d4f9cb-wm7x6     1.22.0
istio-ingressgateway-77.istio-system    Kubernetes     SYNCED     SYNCED     SYNCED     NOT SENT     NOT SENT     istiod-6cf8d4f9cb-wm7x6     1.22.0
"""
PS_124 = """\
NAME                                  CLUSTER        CDS                LDS                EDS                RDS                ECDS            ISTIOD                             VERSION
details-v1-7d4d9d5fcb-2nsbk.bkinfo    Kubernetes     SYNCED (2m1s)      SYNCED (2m1s)      STALE (3s)         SYNCED (2m1s)      IGNORED         istiod-1-24-1-6cf8d4f9cb-wm7x6     1.24.1
"""
PS_127 = """\
NAME                                   CLUSTER        ISTIOD                             VERSION     SUBSCRIBED TYPES
details-v1-7d4d9d5fcb-2nsbk.bookinfo   Kubernetes     istiod-1-27-0-7c9b5d8f6d-abcde     1.26.0      4 (CDS,LDS,EDS,RDS)
ratings-v1-5d9c8f7b6d-xyz12.bookinfo   Kubernetes     istiod-1-27-0-7c9b5d8f6d-abcde     1.27.0      4 (CDS,LDS,EDS,RDS)
"""


def test_proxy_status_every_layout() -> None:
    rows = parse_proxy_status(PS_122)
    assert [(r.pod, r.namespace, r.istiod, r.version) for r in rows] == [
        ("details-v1-7d4d9d5fcb-2nsbk", "bookinfo", "istiod-6cf8d4f9cb-wm7x6", "1.22.0"),
        ("istio-ingressgateway-77", "istio-system", "istiod-6cf8d4f9cb-wm7x6", "1.22.0")]
    assert rows[1].sync["RDS"] == "NOT SENT" and rows[0].stale == []
    rows = parse_proxy_status(PS_124)
    assert rows[0].istiod == "istiod-1-24-1-6cf8d4f9cb-wm7x6" and rows[0].version == "1.24.1"
    assert rows[0].sync["CDS"] == "SYNCED" and rows[0].stale == ["EDS"]
    rows = parse_proxy_status(PS_127)
    assert [(r.istiod, r.version, r.sync) for r in rows] == [
        ("istiod-1-27-0-7c9b5d8f6d-abcde", "1.26.0", {}), ("istiod-1-27-0-7c9b5d8f6d-abcde", "1.27.0", {})]
    with pytest.raises(ValueError):
        parse_proxy_status("error: no istiod\n")
