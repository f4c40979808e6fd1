"""The API server through the official kubernetes client: CRUD, patches, selectors, conflicts, watch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client import ApiException

from meshops.sandbox.apiserver import Cluster


def reason(e: ApiException) -> str:
    return str(json.loads(e.body)["reason"])


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or None)


def test_version_and_discovery(api_client: client.ApiClient) -> None:
    """/version and discovery answer the client's trailing-slash paths with what its models require."""
    version = client.VersionApi(api_client).get_code()
    assert version.git_version == "v1.30.4" and version.major == "1" and version.minor == "30"
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    groups = {g.name: g.preferred_version.version for g in client.ApisApi(api_client).get_api_versions().groups}
    assert groups["apps"] == "v1" and groups["apiextensions.k8s.io"] == "v1"
    resources = {r.name: r for r in client.AppsV1Api(api_client).get_api_resources().resources}
    assert resources["deployments"].short_names == ["deploy"]
    assert resources["deployments"].categories == ["all"]
    assert resources["deployments/scale"].kind == "Scale"
    core = {r.name: r for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert core["namespaces"].namespaced is False and core["pods"].namespaced is True


def test_server_owns_uid_resource_version_and_timestamps(core: client.CoreV1Api, api_client: client.ApiClient) -> None:
    """uid, resourceVersion and creationTimestamp are set by the server, whatever the client sends."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "uid": "mine", "creationTimestamp": None}}
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid != "mine" and len(created.metadata.uid) == 36
    assert created.metadata.creation_timestamp is not None
    first_rv = int(created.metadata.resource_version)
    updated = core.patch_namespaced_config_map("c1", "default", {"data": {"a": "1"}})
    assert int(updated.metadata.resource_version) > first_rv
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.creation_timestamp == created.metadata.creation_timestamp
    listed = core.list_namespaced_config_map("default")
    assert int(listed.metadata.resource_version) >= int(updated.metadata.resource_version)


def test_create_with_resource_version_is_refused(core: client.CoreV1Api) -> None:
    """A create that carries a resourceVersion fails as on a real server."""
    body = {"metadata": {"name": "c1", "resourceVersion": "12"}}
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", body)
    assert "resourceVersion should not be set" in json.loads(e.value.body)["message"]


def test_not_found_and_already_exists_reasons(core: client.CoreV1Api) -> None:
    """404 NotFound and 409 AlreadyExists carry Status bodies the client can read."""
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("nope", "default")
    assert missing.value.status == 404 and reason(missing.value) == "NotFound"
    assert json.loads(missing.value.body)["details"] == {"name": "nope", "kind": "configmaps"}
    core.create_namespaced_config_map("default", configmap("dup"))
    with pytest.raises(ApiException) as dup:
        core.create_namespaced_config_map("default", configmap("dup"))
    assert dup.value.status == 409 and reason(dup.value) == "AlreadyExists"


def test_stale_resource_version_conflicts(core: client.CoreV1Api) -> None:
    """Writes carrying an old resourceVersion get 409 Conflict, for PUT and for PATCH."""
    cm = core.create_namespaced_config_map("default", configmap("c", a="1"))
    core.patch_namespaced_config_map("c", "default", {"data": {"a": "2"}})
    cm.data = {"a": "3"}
    with pytest.raises(ApiException) as put:
        core.replace_namespaced_config_map("c", "default", cm)
    assert put.value.status == 409 and reason(put.value) == "Conflict"
    stale = {"metadata": {"resourceVersion": cm.metadata.resource_version}, "data": {"a": "4"}}
    with pytest.raises(ApiException) as patch:
        core.patch_namespaced_config_map("c", "default", stale)
    assert reason(patch.value) == "Conflict"
    assert core.read_namespaced_config_map("c", "default").data == {"a": "2"}


def test_delete_return_types(core: client.CoreV1Api, apps: client.AppsV1Api, manifest: Any) -> None:
    """DELETE answers with the object for pods and services and with a Status elsewhere, as typed."""
    apps.create_namespaced_deployment("default", manifest("web"))
    status = apps.delete_namespaced_deployment("web", "default")
    assert status["kind"] == "Status" and status["status"] == "Success" and status["details"]["name"] == "web"
    pod = core.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    deleted = core.delete_namespaced_pod("p", "default", grace_period_seconds=0)
    assert isinstance(deleted, client.V1Pod) and deleted.metadata.uid == pod.metadata.uid
    svc = core.create_namespaced_service("default", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
    assert core.delete_namespaced_service("s", "default").metadata.uid == svc.metadata.uid


def test_merge_patch(core: client.CoreV1Api) -> None:
    """A JSON merge patch merges maps and deletes keys set to null."""
    core.create_namespaced_config_map("default", configmap("c", labels={"a": "1", "b": "2"}, x="1"))
    patched = core.patch_namespaced_config_map(
        "c", "default", {"metadata": {"labels": {"a": None, "c": "3"}}, "data": {"y": "2"}},
        _content_type="application/merge-patch+json",
    )
    assert patched.metadata.labels == {"b": "2", "c": "3"}
    assert patched.data == {"x": "1", "y": "2"}


def test_json_patch(core: client.CoreV1Api) -> None:
    """JSON patch operations apply in order; a failing test op refuses the whole patch."""
    core.create_namespaced_config_map("default", configmap("c", x="1"))
    ops = [{"op": "add", "path": "/data/y", "value": "2"}, {"op": "replace", "path": "/data/x", "value": "9"},
           {"op": "remove", "path": "/data/y"}, {"op": "add", "path": "/metadata/labels", "value": {"k": "v"}}]
    patched = core.patch_namespaced_config_map("c", "default", ops)
    assert patched.data == {"x": "9"} and patched.metadata.labels == {"k": "v"}
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map("c", "default", [{"op": "test", "path": "/data/x", "value": "0"}, {"op": "remove", "path": "/data"}])
    assert e.value.status == 422
    assert core.read_namespaced_config_map("c", "default").data == {"x": "9"}


def test_strategic_merge_patch_merges_lists_by_key(apps: client.AppsV1Api, manifest: Any) -> None:
    """Strategic merge patch merges containers and env by name, ports by containerPort, honours $patch."""
    body = manifest("web")
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "side:1", "env": [{"name": "A", "value": "1"}]})
    apps.create_namespaced_deployment("default", body)
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "env": [{"name": "B", "value": "2"}]},
        {"name": "app", "ports": [{"containerPort": 9090, "name": "metrics"}]},
    ]}}}}
    d = apps.patch_namespaced_deployment("web", "default", patch)  # a dict body is sent as SMP
    containers = {c.name: c for c in d.spec.template.spec.containers}
    assert [c.name for c in d.spec.template.spec.containers] == ["app", "side"]
    assert [e.name for e in containers["side"].env] == ["A", "B"]
    assert [p.container_port for p in containers["app"].ports] == [8080, 9090]
    assert containers["app"].image == "app:1"
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}
    d = apps.patch_namespaced_deployment("web", "default", delete)
    assert [c.name for c in d.spec.template.spec.containers] == ["app"]
    replace = {"spec": {"template": {"metadata": {"labels": {"$patch": "replace", "app": "web"}}}}}
    assert apps.patch_namespaced_deployment("web", "default", replace).spec.template.metadata.labels == {"app": "web"}


def test_server_side_apply_creates_and_prunes(api_client: client.ApiClient, core: client.CoreV1Api) -> None:
    """Apply patches create the object, record managedFields, and drop fields the manager stopped applying."""
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}}
    path = "/api/v1/namespaces/default/configmaps/ssa"

    def apply(body: dict[str, Any], manager: str | None = "me") -> int:
        query = [("fieldManager", manager)] if manager else []
        method, url, headers, data, _ = api_client.param_serialize(
            "PATCH", path, query_params=query, body=body, header_params={"Content-Type": "application/apply-patch+yaml"},
            auth_settings=["BearerToken"],
        )
        return int(api_client.call_api(method, url, headers, data).status)

    assert apply(config) == 201
    assert apply({**config, "data": {"x": "1"}}) == 200
    cm = core.read_namespaced_config_map("ssa", "default")
    assert cm.data == {"x": "1"} and cm.metadata.labels == {"a": "1"}
    assert [(m.manager, m.operation) for m in cm.metadata.managed_fields] == [("me", "Apply")]
    assert apply(config, manager=None) == 400  # fieldManager is required for apply


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    """Label selectors (=, !=, in, notin, exists, !) and field selectors filter lists."""
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db", "env": "prod"}), ("c", {"tier": "web"})):
        core.create_namespaced_config_map("default", configmap(name, labels=labels))

    def names(**kwargs: Any) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map("default", **kwargs).items if c.metadata.name in "abc"]

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier!=web") == ["b"]
    assert names(label_selector="tier in (db,cache)") == ["b"]
    assert names(label_selector="tier notin (db),env") == ["a"]
    assert names(label_selector="!env") == ["c"]
    assert names(label_selector="tier=web,env=prod") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b", label_selector="tier") == ["a", "c"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map("default", label_selector="tier in (web")
    assert e.value.status == 400


def test_limit_and_continue(core: client.CoreV1Api) -> None:
    """limit/continue pages through a list without repeating or skipping objects."""
    for i in range(7):
        core.create_namespaced_config_map("default", configmap(f"page-{i}", labels={"paged": "yes"}))
    seen, token = [], None
    while True:
        page = core.list_namespaced_config_map("default", label_selector="paged", limit=3, _continue=token)
        seen += [c.metadata.name for c in page.items]
        assert len(page.items) <= 3
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"page-{i}" for i in range(7)]
    first = core.list_namespaced_config_map("default", limit=2)
    assert first.metadata.remaining_item_count == len(core.list_namespaced_config_map("default").items) - 2


def test_watch_sends_initial_state_then_changes(core: client.CoreV1Api) -> None:
    """A watch without resourceVersion starts with ADDED for what exists, then live events, then ends on time."""
    core.create_namespaced_config_map("default", configmap("w1", labels={"w": "1"}))
    stream = watch.Watch().stream(core.list_namespaced_config_map, "default", label_selector="w", timeout_seconds=2)
    events = []
    for event in stream:
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 1:
            core.create_namespaced_config_map("default", configmap("w2", labels={"w": "1"}))
            core.patch_namespaced_config_map("w1", "default", {"data": {"a": "1"}})
            core.delete_namespaced_config_map("w2", "default")
    assert events == [("ADDED", "w1"), ("ADDED", "w2"), ("MODIFIED", "w1"), ("DELETED", "w2")]


def test_watch_resumes_from_resource_version(core: client.CoreV1Api) -> None:
    """A watch from a resourceVersion replays only what happened after it."""
    core.create_namespaced_config_map("default", configmap("r1"))
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", configmap("r2"))
    core.patch_namespaced_config_map("r1", "default", {"data": {"a": "1"}})
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1)]
    assert events == [("ADDED", "r2"), ("MODIFIED", "r1")]


def test_watch_selector_transitions(core: client.CoreV1Api) -> None:
    """Objects leaving or entering a selector arrive as DELETED or ADDED, as from kube's watch cache."""
    core.create_namespaced_config_map("default", configmap("t", labels={"sel": "yes"}))
    rv = core.read_namespaced_config_map("t", "default").metadata.resource_version
    core.patch_namespaced_config_map("t", "default", {"metadata": {"labels": {"sel": "no"}}})
    core.patch_namespaced_config_map("t", "default", {"metadata": {"labels": {"sel": "yes"}}})
    events = [e["type"] for e in watch.Watch().stream(
        core.list_namespaced_config_map, "default", label_selector="sel=yes", resource_version=rv, timeout_seconds=1)]
    assert events == ["DELETED", "ADDED"]


def test_watch_bookmarks_when_asked(core: client.CoreV1Api, cluster: Cluster) -> None:
    """allowWatchBookmarks brings BOOKMARK events carrying the current resourceVersion."""
    stream = watch.Watch().stream(core.list_namespaced_config_map, "default", allow_watch_bookmarks=True, timeout_seconds=1)
    bookmarks = [e["raw_object"] for e in stream if e["type"] == "BOOKMARK"]
    assert bookmarks
    assert bookmarks[-1]["kind"] == "ConfigMap"
    assert int(bookmarks[-1]["metadata"]["resourceVersion"]) <= cluster.store.resource_version


def test_watch_from_trimmed_history_is_expired(api_client: client.ApiClient) -> None:
    """A resourceVersion older than the kept history gets a 410 Expired ERROR event."""
    small = Cluster("small", history_size=3).start()
    try:
        cfg = client.Configuration()
        cfg.host = small.url
        with client.ApiClient(cfg) as api:
            core = client.CoreV1Api(api)
            rv = core.create_namespaced_config_map("default", configmap("x")).metadata.resource_version
            for i in range(5):
                core.patch_namespaced_config_map("x", "default", {"data": {"i": str(i)}})
            response = core.list_namespaced_config_map("default", watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False)
            events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
            assert events[0]["type"] == "ERROR"
            assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
            with pytest.raises(ApiException) as e:
                for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1):
                    pass
            assert e.value.status == 410
    finally:
        small.stop()


def test_dynamic_client(api_client: client.ApiClient, manifest: Any) -> None:
    """DynamicClient discovers resources and performs CRUD with unstructured objects."""
    dc = dynamic.DynamicClient(api_client)
    deployments = dc.resources.get(api_version="apps/v1", kind="Deployment")
    deployments.create(body=manifest("dyn"), namespace="default")
    got = deployments.get(name="dyn", namespace="default")
    assert got.spec.replicas == 2
    deployments.patch(name="dyn", namespace="default", body={"spec": {"replicas": 3}}, content_type="application/merge-patch+json")
    assert deployments.get(name="dyn", namespace="default").spec.replicas == 3
    assert [d.metadata.name for d in deployments.get(namespace="default").items] == ["dyn"]
    deployments.delete(name="dyn", namespace="default")
    with pytest.raises(dynamic.exceptions.NotFoundError):
        deployments.get(name="dyn", namespace="default")


def test_status_and_scale_subresources(apps: client.AppsV1Api, manifest: Any, cluster: Cluster, wait: Any) -> None:
    """Status changes only through /status, replicas through /scale, generation only on spec changes."""
    apps.create_namespaced_deployment("default", manifest("sub", replicas=1))
    wait(lambda: (apps.read_namespaced_deployment("sub", "default").status.available_replicas or 0) == 1)
    d = apps.read_namespaced_deployment("sub", "default")
    d.status.replicas = 42
    d.metadata.labels["touched"] = "yes"
    d = apps.replace_namespaced_deployment("sub", "default", d)
    assert d.status.replicas != 42 and d.metadata.generation == 1
    scale = apps.read_namespaced_deployment_scale("sub", "default")
    assert scale.spec.replicas == 1 and scale.status.selector == "app=sub"
    scale.spec.replicas = 3
    assert apps.replace_namespaced_deployment_scale("sub", "default", scale).spec.replicas == 3
    assert apps.patch_namespaced_deployment_scale("sub", "default", {"spec": {"replicas": 2}}).spec.replicas == 2
    d = apps.read_namespaced_deployment("sub", "default")
    assert d.spec.replicas == 2 and d.metadata.generation == 3
    wait(lambda: apps.read_namespaced_deployment("sub", "default").status.ready_replicas == 2)


def test_namespace_deletion_cascades(core: client.CoreV1Api, apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """Deleting a namespace deletes everything in it, refuses new content meanwhile, then goes."""
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", configmap("c"))
    apps.create_namespaced_deployment("doomed", manifest("web"))
    wait(lambda: len(core.list_namespaced_pod("doomed").items) == 2)
    ns = core.delete_namespace("doomed")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("doomed", configmap("late"))
    assert e.value.status in (403, 404)

    def gone() -> bool:
        try:
            core.read_namespace("doomed")
        except ApiException as err:
            return err.status == 404
        return False

    wait(gone, message="namespace removal")
    assert not core.list_namespaced_pod("doomed").items
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_config_map("doomed", configmap("c"))
    assert missing.value.status == 404


def test_finalizers_hold_deletion(core: client.CoreV1Api) -> None:
    """An object with finalizers gets a deletionTimestamp and stays until they are removed."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("f", "default")
    held = core.read_namespaced_config_map("f", "default")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", "default", [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("f", "default")
    assert e.value.status == 404


def _owned_configmap(core: client.CoreV1Api, name: str, owner: client.V1ConfigMap) -> None:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid, "blockOwnerDeletion": True}
    core.create_namespaced_config_map("default", {"metadata": {"name": name, "ownerReferences": [ref]}})


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
def test_garbage_collection(core: client.CoreV1Api, wait: Any, policy: str) -> None:
    """Dependents go with their owner (background or before it, foreground) or are released (orphan)."""
    owner = core.create_namespaced_config_map("default", configmap("owner"))
    _owned_configmap(core, "dep", owner)

    def exists(name: str) -> bool:
        try:
            core.read_namespaced_config_map(name, "default")
        except ApiException:
            return False
        return True

    core.delete_namespaced_config_map("owner", "default", propagation_policy=policy)
    wait(lambda: not exists("owner"), message="owner deleted")
    if policy == "Orphan":
        dep = core.read_namespaced_config_map("dep", "default")
        assert not dep.metadata.owner_references
    else:
        wait(lambda: not exists("dep"), message="dependent deleted")


def test_custom_resources_follow_their_crd(api_client: client.ApiClient, wait: Any) -> None:
    """A CRD makes its custom resources servable, listed in discovery, and takes them when deleted."""
    ext = client.ApiextensionsV1Api(api_client)
    crd = {
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                              "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}],
        },
    }
    ext.create_custom_resource_definition(crd)
    wait(lambda: any(c.type == "Established" and c.status == "True"
                     for c in (ext.read_custom_resource_definition("gadgets.example.com").status.conditions or [])),
         message="CRD established")
    custom = client.CustomObjectsApi(api_client)
    body = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"size": 1}}
    created = custom.create_namespaced_custom_object("example.com", "v1", "default", "gadgets", body)
    assert created["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object("example.com", "v1", "default", "gadgets", "g1", {"spec": {"size": 2}},
                                                    _content_type="application/merge-patch+json")
    assert patched["spec"]["size"] == 2 and patched["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as smp:
        custom.patch_namespaced_custom_object("example.com", "v1", "default", "gadgets", "g1", {"spec": {"size": 3}},
                                              _content_type="application/strategic-merge-patch+json")
    assert smp.value.status == 415  # as kube: no strategic merge patch for custom resources
    with pytest.raises(ApiException) as bad:
        custom.patch_namespaced_custom_object("example.com", "v1", "default", "gadgets", "g1", {"spec": {"size": "big"}},
                                              _content_type="application/merge-patch+json")
    assert bad.value.status == 422 and "spec.size" in bad.value.body
    dc = dynamic.DynamicClient(api_client)
    assert dc.resources.get(api_version="example.com/v1", kind="Gadget").short_names == ["gd"]
    ext.delete_custom_resource_definition("gadgets.example.com")

    def served() -> bool:
        try:
            custom.list_namespaced_custom_object("example.com", "v1", "default", "gadgets")
        except ApiException as e:
            return e.status != 404
        return True

    wait(lambda: not served(), message="custom resources gone with the CRD")


def test_delete_collection_by_selector(core: client.CoreV1Api) -> None:
    """deletecollection removes exactly the objects the selector matches."""
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        core.create_namespaced_config_map("default", configmap(name, labels={"tier": tier}))
    core.delete_collection_namespaced_config_map("default", label_selector="tier=web")
    left = [c.metadata.name for c in core.list_namespaced_config_map("default", label_selector="tier").items]
    assert left == ["c"]


def test_cluster_scoped_and_namespaced_paths(core: client.CoreV1Api, api_client: client.ApiClient) -> None:
    """Cluster-scoped kinds ignore namespaces; namespaced kinds list across all of them."""
    node = core.read_node("test-node-1")
    assert node.metadata.namespace is None and node.status.node_info.kubelet_version == "v1.30.4"
    core.create_namespace({"metadata": {"name": "elsewhere"}})
    core.create_namespaced_config_map("elsewhere", configmap("x"))
    everywhere = {(c.metadata.namespace, c.metadata.name) for c in core.list_config_map_for_all_namespaces().items}
    assert ("elsewhere", "x") in everywhere and ("default", "kube-root-ca.crt") in everywhere
    auth = {"Authorization": api_client.configuration.api_key["BearerToken"]}
    response = api_client.call_api("GET", api_client.configuration.host + "/api/v1/namespaces/default/nodes/test-node-1",
                                   header_params=auth)
    assert response.status == 404  # nodes have no namespaced path
