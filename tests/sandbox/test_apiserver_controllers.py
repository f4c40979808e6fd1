"""The simulated controllers and kubelet, and the plugin hooks the Istio layer uses."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from meshops.sandbox.apiserver import AdmissionDenied, Cluster
from meshops.sandbox.apiserver.kinds import DEPLOYMENTS, PODS, REPLICASETS
from meshops.sandbox.apiserver.store import StoreEvent


def active_pods(cluster: Cluster, app: str) -> list[dict[str, Any]]:
    pods, _ = cluster.store.list(PODS, "default", matcher=lambda p: p["metadata"].get("labels", {}).get("app") == app)
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def rolled_out(apps: client.AppsV1Api, name: str) -> bool:
    """What `kubectl rollout status` checks."""
    d = apps.read_namespaced_deployment(name, "default")
    s, replicas = d.status, d.spec.replicas
    return bool(
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == replicas
        and (s.replicas or 0) == replicas
        and (s.available_replicas or 0) == replicas
    )


def test_deployment_creates_ready_pods_with_status(apps: client.AppsV1Api, core: client.CoreV1Api, manifest: Any, wait: Any) -> None:
    """A Deployment gets a ReplicaSet and Ready pods, and the status and conditions rollout status reads."""
    apps.create_namespaced_deployment("default", manifest("web", replicas=3))
    wait(lambda: rolled_out(apps, "web"), message="rollout")
    d = apps.read_namespaced_deployment("web", "default")
    conditions = {c.type: (c.status, c.reason) for c in d.status.conditions}
    assert conditions == {"Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewReplicaSetAvailable")}
    (rs,) = apps.list_namespaced_replica_set("default").items
    assert rs.metadata.owner_references[0].name == "web"
    assert rs.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert rs.metadata.name == f"web-{rs.metadata.labels['pod-template-hash']}"
    pods = core.list_namespaced_pod("default", label_selector="app=web").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.status.phase == "Running" and pod.status.pod_ip and pod.spec.node_name
        assert {c.type for c in pod.status.conditions} >= {"PodScheduled", "Initialized", "ContainersReady", "Ready"}
        assert pod.metadata.owner_references[0].uid == rs.metadata.uid


@pytest.mark.parametrize(("surge", "unavailable"), [(1, 0), (0, 1), ("50%", "50%")])
def test_rolling_update_respects_surge_and_unavailability(
    cluster: Cluster, apps: client.AppsV1Api, manifest: Any, wait: Any, surge: Any, unavailable: Any
) -> None:
    """During a rollout the pod count never exceeds replicas+maxSurge and Ready pods never drop below replicas-maxUnavailable."""
    replicas = 4
    body = manifest("roll", replicas=replicas, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    apps.create_namespaced_deployment("default", body)
    wait(lambda: rolled_out(apps, "roll"), message="first rollout")
    max_surge = 1 if surge == 1 else 0 if surge == 0 else 2
    max_unavailable = 0 if unavailable == 0 else 1 if unavailable == 1 else 2
    seen: list[tuple[int, int]] = []

    def observe(event: StoreEvent) -> None:
        pods = [p for p in cluster.store.iter_versions(PODS, "default") if p.obj["metadata"]["labels"].get("app") == "roll"]
        live = [p.obj for p in pods if not p.obj["metadata"].get("deletionTimestamp")]
        seen.append((len(live), sum(1 for p in live if is_ready(p))))

    unsubscribe = cluster.store.subscribe(observe, [PODS])
    apps.patch_namespaced_deployment("roll", "default", {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})
    wait(lambda: rolled_out(apps, "roll"), message="second rollout")
    unsubscribe()
    assert seen, "no pod events observed"
    assert max(total for total, _ in seen) <= replicas + max_surge
    assert min(ready for _, ready in seen) >= replicas - max_unavailable
    images = {p["spec"]["containers"][0]["image"] for p in active_pods(cluster, "roll")}
    assert images == {"app:2"}


def test_rollout_restart_revisions_and_history_limit(apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """Restarting through the template annotation makes new revisions; old ReplicaSets beyond the limit go."""
    apps.create_namespaced_deployment("default", manifest("hist", replicas=1, revisionHistoryLimit=1))
    wait(lambda: rolled_out(apps, "hist"))
    for i in range(3):
        patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": f"t{i}"}}}}}
        apps.patch_namespaced_deployment("hist", "default", patch)
        wait(lambda: rolled_out(apps, "hist"), message=f"restart {i}")
    wait(lambda: len(apps.list_namespaced_replica_set("default").items) == 2, message="history trimmed")
    revisions = sorted(int(rs.metadata.annotations["deployment.kubernetes.io/revision"]) for rs in apps.list_namespaced_replica_set("default").items)
    assert revisions == [3, 4]


def test_recreate_never_overlaps(cluster: Cluster, apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """With Recreate, no new pod exists while an old one does."""
    apps.create_namespaced_deployment("default", manifest("rec", replicas=2, strategy={"type": "Recreate"}))
    wait(lambda: rolled_out(apps, "rec"))
    overlap: list[int] = []

    def observe(event: StoreEvent) -> None:
        images = {p.obj["spec"]["containers"][0]["image"] for p in cluster.store.iter_versions(PODS, "default")
                  if p.obj["metadata"]["labels"].get("app") == "rec"}
        overlap.append(len(images))

    unsubscribe = cluster.store.subscribe(observe, [PODS])
    apps.patch_namespaced_deployment("rec", "default", {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})
    wait(lambda: rolled_out(apps, "rec"))
    unsubscribe()
    assert max(overlap) == 1


def test_statefulset_orders_pods_and_rolls_from_the_top(cluster: Cluster, api_client: client.ApiClient, wait: Any) -> None:
    """StatefulSet pods start in ordinal order; a partitioned update replaces the highest ordinals only."""
    apps = client.AppsV1Api(api_client)
    body = {"metadata": {"name": "db"}, "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}}
    created: list[str] = []
    unsubscribe = cluster.store.subscribe(lambda e: created.append(e.name) if e.type == "ADDED" else None, [PODS])
    apps.create_namespaced_stateful_set("default", body)
    wait(lambda: (apps.read_namespaced_stateful_set("db", "default").status.ready_replicas or 0) == 3)
    assert created == ["db-0", "db-1", "db-2"]
    created.clear()
    apps.patch_namespaced_stateful_set("db", "default", {"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "db:2"}]}}}})
    wait(lambda: (apps.read_namespaced_stateful_set("db", "default").status.updated_replicas or 0) == 2
         and apps.read_namespaced_stateful_set("db", "default").status.ready_replicas == 3)
    unsubscribe()
    assert created == ["db-2", "db-1"]
    images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in cluster.store.list(PODS, "default")[0]}
    assert images == {"db-0": "db:1", "db-1": "db:2", "db-2": "db:2"}
    status = apps.read_namespaced_stateful_set("db", "default").status
    assert status.current_revision != status.update_revision


def test_statefulset_on_delete_waits_for_deletion(api_client: client.ApiClient, core: client.CoreV1Api, wait: Any) -> None:
    """With OnDelete, pods take the new template only when deleted."""
    apps = client.AppsV1Api(api_client)
    body = {"metadata": {"name": "od"}, "spec": {"replicas": 2, "serviceName": "od", "selector": {"matchLabels": {"app": "od"}},
            "updateStrategy": {"type": "OnDelete"}, "podManagementPolicy": "Parallel",
            "template": {"metadata": {"labels": {"app": "od"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}}}
    apps.create_namespaced_stateful_set("default", body)
    wait(lambda: (apps.read_namespaced_stateful_set("od", "default").status.ready_replicas or 0) == 2)
    apps.patch_namespaced_stateful_set("od", "default", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}})
    wait(lambda: apps.read_namespaced_stateful_set("od", "default").status.observed_generation == 2)
    assert core.read_namespaced_pod("od-1", "default").spec.containers[0].image == "v1"
    core.delete_namespaced_pod("od-1", "default")
    wait(lambda: _image_of(core, "od-1") == "v2", message="od-1 recreated at the new revision")
    assert core.read_namespaced_pod("od-0", "default").spec.containers[0].image == "v1"


def _image_of(core: client.CoreV1Api, name: str) -> str | None:
    try:
        return str(core.read_namespaced_pod(name, "default").spec.containers[0].image)
    except client.ApiException:
        return None


def test_daemonset_runs_one_pod_per_node_and_rolls(cluster: Cluster, api_client: client.ApiClient, wait: Any) -> None:
    """A DaemonSet has a pod on each of the three nodes, replaced on a template change."""
    apps = client.AppsV1Api(api_client)
    body = {"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "agent:1"}]}}}}
    apps.create_namespaced_daemon_set("default", body)
    wait(lambda: (apps.read_namespaced_daemon_set("agent", "default").status.number_ready or 0) == 3)
    assert sorted(p["spec"]["nodeName"] for p in active_pods(cluster, "agent")) == ["test-node-1", "test-node-2", "test-node-3"]
    apps.patch_namespaced_daemon_set("agent", "default", {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "agent:2"}]}}}})
    wait(lambda: (apps.read_namespaced_daemon_set("agent", "default").status.updated_number_scheduled or 0) == 3
         and apps.read_namespaced_daemon_set("agent", "default").status.number_available == 3)
    wait(lambda: {p["spec"]["containers"][0]["image"] for p in active_pods(cluster, "agent")} == {"agent:2"})


def test_job_and_cronjob_complete(api_client: client.ApiClient, wait: Any) -> None:
    """A Job's pods run and succeed; a CronJob creates Jobs on its (sped-up) schedule."""
    batch = client.BatchV1Api(api_client)
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "j", "image": "job:1"}]}}
    batch.create_namespaced_job("default", {"metadata": {"name": "once"}, "spec": {"completions": 2, "parallelism": 1, "template": template}})
    wait(lambda: (batch.read_namespaced_job("once", "default").status.succeeded or 0) == 2)
    job = batch.read_namespaced_job("once", "default")
    assert {c.type for c in job.status.conditions if c.status == "True"} >= {"Complete"}
    assert job.status.completion_time is not None
    batch.create_namespaced_cron_job("default", {"metadata": {"name": "tick"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}})
    wait(lambda: batch.read_namespaced_cron_job("tick", "default").status.last_schedule_time is not None, timeout=5, message="cron fired")
    wait(lambda: any(j.metadata.name.startswith("tick-") for j in batch.list_namespaced_job("default").items))


def test_services_get_cluster_ips_endpoints_and_lb_hostnames(core: client.CoreV1Api, apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """Services get a ClusterIP, Endpoints of Ready pods, and a LoadBalancer gets an ELB-like hostname."""
    apps.create_namespaced_deployment("default", manifest("svc", replicas=2))
    core.create_namespaced_service("default", {"metadata": {"name": "svc"}, "spec": {"type": "LoadBalancer", "selector": {"app": "svc"},
                                                                                      "ports": [{"port": 80, "targetPort": "http"}]}})
    svc = core.read_namespaced_service("svc", "default")
    assert svc.spec.cluster_ip.startswith("10.96.") and svc.spec.ports[0].node_port >= 30000
    wait(lambda: core.read_namespaced_service("svc", "default").status.load_balancer.ingress)
    hostname = core.read_namespaced_service("svc", "default").status.load_balancer.ingress[0].hostname
    assert hostname.startswith("svc-") and hostname.endswith(".test.elb.sandbox.local")
    wait(lambda: len((core.read_namespaced_endpoints("svc", "default").subsets or [client.V1EndpointSubset()])[0].addresses or []) == 2)
    subset = core.read_namespaced_endpoints("svc", "default").subsets[0]
    assert subset.ports[0].port == 8080  # the named targetPort resolved
    discovery = client.DiscoveryV1Api(core.api_client)
    (endpoint_slice,) = discovery.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=svc").items
    assert sorted(e.addresses[0] for e in endpoint_slice.endpoints) == sorted(a.ip for a in subset.addresses)
    assert all(e.conditions.ready for e in endpoint_slice.endpoints) and endpoint_slice.ports[0].port == 8080


def test_admission_plugins_see_controller_pods(cluster: Cluster, apps: client.AppsV1Api, core: client.CoreV1Api, manifest: Any, wait: Any) -> None:
    """Pods a ReplicaSet creates go through mutating plugins; a refusal is a FailedCreate event and a ReplicaFailure condition."""
    class Injector:
        def mutate(self, req: Any, cluster: Any) -> None:
            if req.kind == "Pod" and req.operation == "CREATE":
                req.obj["spec"]["containers"].append({"name": "istio-proxy", "image": "proxyv2:1.22"})

    class Gate:
        deny = True

        def mutate(self, req: Any, cluster: Any) -> None:
            if req.kind == "Pod" and req.operation == "CREATE" and self.deny:
                raise AdmissionDenied('admission webhook "sidecar-injector.istio.io" denied the request: no', code=500, reason="InternalError")

    gate = Gate()
    cluster.mutating_plugins.extend([Injector(), gate])
    apps.create_namespaced_deployment("default", manifest("adm", replicas=1))
    wait(lambda: any(c.type == "ReplicaFailure" for c in (apps.list_namespaced_replica_set("default").items[0].status.conditions or [])),
         message="ReplicaFailure condition")
    events = core.list_namespaced_event("default", field_selector="reason=FailedCreate").items
    assert events and "denied the request" in events[0].message and events[0].type == "Warning"
    gate.deny = False
    wait(lambda: len(active_pods(cluster, "adm")) == 1, message="pod created after the plugin relented")
    wait(lambda: not apps.list_namespaced_replica_set("default").items[0].status.conditions, message="condition cleared")
    pod = active_pods(cluster, "adm")[0]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "istio-proxy"]


def test_validating_plugin_refuses_http_writes(cluster: Cluster, core: client.CoreV1Api) -> None:
    """A validating plugin's AdmissionDenied reaches HTTP clients as a Status with its code and reason."""
    class NoRed:
        def validate(self, req: Any, cluster: Any) -> None:
            if req.obj and (req.obj.get("data") or {}).get("color") == "red":
                raise AdmissionDenied("red is not allowed", code=403, reason="Forbidden")

    cluster.validating_plugins.append(NoRed())
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"color": "red"}})
    assert e.value.status == 403 and "red is not allowed" in e.value.body


def test_readiness_gates_and_kick(cluster: Cluster, apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """A readiness gate keeps running pods unready until it agrees and the pods are kicked."""
    class ProxyGate:
        ready = False

        def pod_ready(self, pod: Any, cluster: Any) -> bool:
            return self.ready

    gate = ProxyGate()
    cluster.readiness_gates.append(gate)
    apps.create_namespaced_deployment("default", manifest("gated", replicas=2))
    wait(lambda: len([p for p in active_pods(cluster, "gated") if p["status"].get("phase") == "Running"]) == 2)
    cluster.wait_idle()
    assert not any(is_ready(p) for p in active_pods(cluster, "gated"))
    assert not rolled_out(apps, "gated")
    gate.ready = True
    cluster.kick_pods()
    wait(lambda: rolled_out(apps, "gated"), message="pods Ready after the kick")


def test_deployment_controller_is_event_driven(cluster: Cluster, apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """Once a rollout settles, nothing is written: controllers react to changes, they do not poll."""
    apps.create_namespaced_deployment("default", manifest("quiet", replicas=2))
    wait(lambda: rolled_out(apps, "quiet"))
    cluster.wait_idle()
    import time

    time.sleep(0.2)
    rv = cluster.store.resource_version
    time.sleep(0.5)
    assert cluster.store.resource_version == rv
    assert cluster.store.get(DEPLOYMENTS, "default", "quiet") is not None
    assert cluster.store.count(REPLICASETS, "default") == 1


def test_progress_deadline_is_reported(cluster: Cluster, apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """A rollout that cannot finish gets Progressing=False/ProgressDeadlineExceeded after progressDeadlineSeconds."""
    class Never:
        def pod_ready(self, pod: Any, cluster: Any) -> bool:
            return False

    cluster.readiness_gates.append(Never())
    apps.create_namespaced_deployment("default", manifest("stuck", replicas=1, progressDeadlineSeconds=1))

    def reason() -> str | None:
        d = apps.read_namespaced_deployment("stuck", "default")
        return next((c.reason for c in d.status.conditions or [] if c.type == "Progressing"), None)

    wait(lambda: reason() == "ProgressDeadlineExceeded", timeout=6, message="deadline exceeded")


def test_pod_disruption_budget_status(api_client: client.ApiClient, apps: client.AppsV1Api, manifest: Any, wait: Any) -> None:
    """A PodDisruptionBudget reports healthy pods and allowed disruptions."""
    policy = client.PolicyV1Api(api_client)
    apps.create_namespaced_deployment("default", manifest("guarded", replicas=3))
    policy.create_namespaced_pod_disruption_budget("default", {"metadata": {"name": "pdb"}, "spec": {
        "minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}}})
    wait(lambda: (policy.read_namespaced_pod_disruption_budget("pdb", "default").status.current_healthy or 0) == 3)
    status = policy.read_namespaced_pod_disruption_budget("pdb", "default").status
    assert (status.desired_healthy, status.disruptions_allowed, status.expected_pods) == (2, 1, 3)
