"""One contract, two implementations: every case runs against ``FakeKube`` (what unit tests use)
and against the sandbox API server over HTTP through ``KubeClient`` (what meshops really uses), so
the fake cannot drift from the API it stands for. A case that fails on one side only is a drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.errors import Conflict, DriverError, NotFound
from meshops.drivers.kube import KubeClient
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.drivers.kube_fake import FakeKube
from meshops.sandbox.apiserver import Cluster
from meshops.sandbox.runtime import write_kubeconfig


@pytest.fixture(params=["fake", "sandbox"])
def kube(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeApi]:
    if request.param == "fake":
        fake = FakeKube(context="contract")
        yield fake
        fake.close()
        return
    cluster = Cluster("contract", rollout_seconds=0.02, bookmark_interval=0.3).start()
    try:
        write_kubeconfig(tmp_path / "kubeconfig", {"contract": cluster.url})
        yield KubeClient(kubeconfig=str(tmp_path / "kubeconfig"), context="contract")
    finally:
        cluster.stop()


def cm(name: str, ns: str = "default", labels: dict[str, str] | None = None, **data: str) -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment(name: str, containers: list[dict[str, Any]]) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}}


def names(kube: KubeApi, selector: str | None = None, ns: str | None = "default", fields: str | None = None) -> list[str]:
    items = kube.list("v1", "ConfigMap", ns, label_selector=selector, field_selector=fields).items
    # A real cluster (and the sandbox) publishes kube-root-ca.crt into every namespace; the fake
    # has no controllers, and the cases are about the test's own objects.
    return sorted(o["metadata"]["name"] for o in items if o["metadata"]["name"] != "kube-root-ca.crt")


def test_create_get_and_server_owned_metadata(kube: KubeApi) -> None:
    created = kube.create(cm("a", x="1"))
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    got = kube.get("v1", "ConfigMap", "a", "default")
    assert got is not None and got["data"] == {"x": "1"} and got["metadata"]["uid"] == meta["uid"]
    assert kube.get("v1", "ConfigMap", "missing", "default") is None
    with pytest.raises(Conflict):
        kube.create(cm("a"))
    ns = kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "contract-ns"}})
    assert "namespace" not in ns["metadata"]  # cluster-scoped
    assert kube.get("v1", "Namespace", "contract-ns") is not None


@pytest.mark.parametrize(("selector", "expected"), [
    ("tier=web", ["a", "b"]), ("tier==web,env!=prod", ["b"]), ("tier!=web", ["c", "d"]),
    ("env in (prod, dev)", ["a", "c"]), ("env notin (prod)", ["b", "c", "d"]), ("env", ["a", "c"]),
    ("!env", ["b", "d"]), ("tier=web,env", ["a"]), ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(kube: KubeApi, selector: str, expected: list[str]) -> None:
    kube.create(cm("a", labels={"tier": "web", "env": "prod"}))
    kube.create(cm("b", labels={"tier": "web"}))
    kube.create(cm("c", labels={"tier": "db", "env": "dev"}))
    kube.create(cm("d"))
    assert names(kube, selector or None) == expected


def test_list_across_namespaces_and_by_field(kube: KubeApi) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    kube.create(cm("a", labels={"k": "v"}))
    kube.create(cm("a", ns="other", labels={"k": "v"}))
    kube.create(cm("b", ns="other"))
    assert names(kube, "k=v") == ["a"]
    everywhere = kube.list("v1", "ConfigMap", None, label_selector="k=v").items
    assert sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in everywhere) == [
        ("default", "a"), ("other", "a")]
    assert names(kube, ns="other", fields="metadata.name=b") == ["b"]
    assert names(kube, ns="other", fields="metadata.name!=b") == ["a"]
    assert int(kube.list("v1", "ConfigMap", "other").resource_version) > 0


def test_merge_patch(kube: KubeApi) -> None:
    first = kube.create(cm("a", x="1", y="2"))
    patched = kube.patch("v1", "ConfigMap", "a", {"data": {"x": "9", "y": None, "z": "3"},
                                                 "metadata": {"annotations": {"n": "1"}}}, "default")
    assert patched["data"] == {"x": "9", "z": "3"}
    assert patched["metadata"]["annotations"] == {"n": "1"}
    assert int(patched["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert kube.get("v1", "ConfigMap", "a", "default") == patched
    with pytest.raises(NotFound):
        kube.patch("v1", "ConfigMap", "missing", {"data": {}}, "default")


def test_a_stale_resource_version_in_a_patch_is_a_conflict(kube: KubeApi) -> None:
    first = kube.create(cm("a", x="1"))
    kube.patch("v1", "ConfigMap", "a", {"data": {"x": "2"}}, "default")
    stale = {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "data": {"x": "3"}}
    with pytest.raises(Conflict):
        kube.patch("v1", "ConfigMap", "a", stale, "default")
    assert (kube.get("v1", "ConfigMap", "a", "default") or {})["data"] == {"x": "2"}


def test_strategic_patch_merges_named_list_items(kube: KubeApi) -> None:
    kube.create(deployment("web", [{"name": "app", "image": "app:1"}, {"name": "side", "image": "side:1"}]))
    patched = kube.patch("apps/v1", "Deployment", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "app:2"}]}}}}, "default", patch_type="strategic")
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("app", "app:2"), ("side", "side:1")]
    dropped = kube.patch("apps/v1", "Deployment", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}}}}, "default", patch_type="strategic")
    assert [c["name"] for c in dropped["spec"]["template"]["spec"]["containers"]] == ["app"]


def test_generation_counts_spec_changes_only(kube: KubeApi) -> None:
    created = kube.create(deployment("web", [{"name": "app", "image": "app:1"}]))
    assert created["metadata"]["generation"] == 1
    labelled = kube.patch("apps/v1", "Deployment", "web", {"metadata": {"labels": {"x": "y"}}}, "default")
    assert labelled["metadata"]["generation"] == 1
    changed = kube.patch("apps/v1", "Deployment", "web", {"spec": {"replicas": 1}}, "default")
    assert changed["metadata"]["generation"] == 2


def test_json_patch(kube: KubeApi) -> None:
    kube.create(cm("a", x="1", y="2", labels={"l": "1"}))
    patched = kube.patch("v1", "ConfigMap", "a", [
        {"op": "test", "path": "/data/x", "value": "1"},
        {"op": "replace", "path": "/data/x", "value": "9"},
        {"op": "remove", "path": "/data/y"},
        {"op": "add", "path": "/metadata/labels/team~1name", "value": "ops"},
    ], "default", patch_type="json")
    assert patched["data"] == {"x": "9"}
    assert patched["metadata"]["labels"] == {"l": "1", "team/name": "ops"}
    for bad in ([{"op": "test", "path": "/data/x", "value": "1"}, {"op": "replace", "path": "/data/x", "value": "0"}],
                [{"op": "remove", "path": "/data/missing"}],
                [{"op": "add", "path": "/no/such/parent", "value": 1}]):
        with pytest.raises(DriverError) as err:
            kube.patch("v1", "ConfigMap", "a", bad, "default", patch_type="json")
        assert not err.value.temporary
    assert (kube.get("v1", "ConfigMap", "a", "default") or {})["data"] == {"x": "9"}  # all or nothing


def test_delete(kube: KubeApi) -> None:
    kube.create(cm("a"))
    assert kube.delete("v1", "ConfigMap", "a", "default") is True
    assert kube.get("v1", "ConfigMap", "a", "default") is None
    assert kube.delete("v1", "ConfigMap", "a", "default") is False


def test_watch_from_a_resource_version_with_a_selector(kube: KubeApi) -> None:
    kube.create(cm("before", labels={"w": "1"}))
    rv = kube.list("v1", "ConfigMap", "default").resource_version
    kube.create(cm("a", labels={"w": "1"}))
    kube.create(cm("ignored", labels={"w": "2"}))
    kube.patch("v1", "ConfigMap", "a", {"data": {"x": "1"}}, "default")
    kube.delete("v1", "ConfigMap", "a", "default")
    seen: list[tuple[str, str]] = []
    for event in kube.watch("v1", "ConfigMap", "default", label_selector="w=1", resource_version=rv, timeout=5):
        if event.type == "BOOKMARK":
            continue
        seen.append((event.type, event.object["metadata"]["name"]))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
