"""Kubernetes objects shaped like a real mesh, for unit tests of the canary upgrade.

The webhook configurations come from the sandbox's renderer, which follows Istio's charts
(istio-discovery mutatingwebhook.yaml, revision-tags.yaml): the injection precedence lives
in their selectors, so tests use the real shapes rather than hand-made ones.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import yaml

from meshops.domain.mesh import MeshSnapshot, pod_from_object
from meshops.drivers.kube_fake import FakeKube
from meshops.sandbox.istio import webhooks

Obj = dict[str, Any]


def ns(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def workload(namespace: str, name: str, *, kind: str = "Deployment", replicas: int = 1,
             labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
             strategy: str = "RollingUpdate", gateway: bool = False) -> Obj:
    spec: Obj = {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, **(labels or {})},
                                           "annotations": dict(annotations or {})},
                              "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}
    if kind == "Deployment":
        spec["strategy"] = {"type": strategy}
    else:
        spec["updateStrategy"] = {"type": strategy}
    if kind == "DaemonSet":
        spec.pop("replicas")
    if gateway:
        spec["template"]["metadata"]["labels"].update({"istio": "ingressgateway", "istio.io/rev": "default",
                                                       "sidecar.istio.io/inject": "false",
                                                       "operator.istio.io/component": "IngressGateways"})
        # As istioctl renders it (reference §2): concrete image, CA_ADDR baked in, no PROXY_CONFIG.
        spec["template"]["spec"]["containers"] = [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
                                                   "env": [{"name": "CA_ADDR",
                                                            "value": "istiod.istio-system.svc:15012"}]}]
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def istiod(revision: str, version: str) -> Obj:
    name = "istiod" if revision == "default" else f"istiod-{revision}"
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "istio-system",
                         "labels": {"app": "istiod", "istio.io/rev": revision, "operator.istio.io/component": "Pilot"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": revision}},
                     "template": {"metadata": {"labels": {"app": "istiod", "istio.io/rev": revision,
                                                          "sidecar.istio.io/inject": "false"}},
                                  "spec": {"containers": [{"name": "discovery", "image": f"docker.io/istio/pilot:{version}"}]}}},
            "status": {"readyReplicas": 1, "replicas": 1}}


def service(namespace: str, name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": {}}


def pod(namespace: str, name: str, *, owner: tuple[str, str] | None = None, revision: str | None = None,
        version: str = "1.24.1", phase: str = "Running", labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, ready: bool = True, containers: list[Obj] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                 "annotations": dict(annotations or {})}
    containers = copy.deepcopy(containers) if containers else [{"name": "app", "image": "example/app:1"}]
    if revision is not None:
        meta["annotations"]["sidecar.istio.io/status"] = json.dumps({"containers": ["istio-proxy"], "revision": revision})
        containers.append({"name": "istio-proxy", "image": f"docker.io/istio/proxyv2:{version}"})
    if owner is not None:
        kind, oname = owner
        if kind == "Deployment":
            meta["labels"]["pod-template-hash"] = "abc12"
            kind, oname = "ReplicaSet", f"{oname}-abc12"
        meta["ownerReferences"] = [{"kind": kind, "name": oname, "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": containers},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def config_maps(rev: str, version: str, *, mesh: Obj | None = None) -> list[Obj]:
    """ConfigMaps istio[-R] (mesh) and istio-sidecar-injector[-R] (values), as reference §1 describes."""
    sfx = "" if rev == "default" else f"-{rev}"
    labels = {"istio.io/rev": rev, "operator.istio.io/component": "Pilot"}
    mesh_doc = {"defaultConfig": {"discoveryAddress": f"istiod{sfx}.istio-system.svc:15012"},
                "rootNamespace": "istio-system", "trustDomain": "cluster.local", **(mesh or {})}
    values = {"global": {"hub": "docker.io/istio", "tag": version, "istioNamespace": "istio-system",
                         "proxy": {"image": "proxyv2"}},
              "revision": "" if rev == "default" else rev, "sidecarInjectorWebhook": {}, "pilot": {"cni": {}}}
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"istio{sfx}", "namespace": "istio-system", "labels": labels},
             "data": {"mesh": json.dumps(mesh_doc), "meshNetworks": "networks: {}"}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"istio-sidecar-injector{sfx}", "namespace": "istio-system", "labels": labels},
             "data": {"values": json.dumps(values, indent=2), "config": "policy: enabled\n"}}]


def unrevisioned_control_plane(version: str = "1.24.1") -> list[Obj]:
    """An unrevisioned install as istioctl >= 1.24 leaves it: istiod, its injector, the default tag."""
    return [istiod("default", version), service("istio-system", "istiod"), webhooks.injector_configuration(""),
            webhooks.tag_configuration("default", ""), webhooks.default_validator(""),
            *config_maps("default", version)]


def revision(rev: str, version: str) -> list[Obj]:
    return [istiod(rev, version), service("istio-system", f"istiod-{rev}"), webhooks.injector_configuration(rev),
            *config_maps(rev, version)]


def tag(name: str, rev: str) -> list[Obj]:
    return [webhooks.tag_configuration(name, rev), service("istio-system", f"istiod-revision-tag-{name}")]


def snapshot(objs: list[Obj], kube_version: str = "v1.30.4") -> MeshSnapshot:
    by_kind: dict[str, list[Obj]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    return MeshSnapshot.from_objects(
        kube_version=kube_version, namespaces=by_kind.get("Namespace", []), pods=by_kind.get("Pod", []),
        workloads=by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []) + by_kind.get("DaemonSet", []),
        mutating=by_kind.get("MutatingWebhookConfiguration", []),
        validating=by_kind.get("ValidatingWebhookConfiguration", []), services=by_kind.get("Service", []))


class Rollouts:
    """A FakeKube reactor playing the workload controllers and the injector.

    When a workload's template changes it replaces the workload's pods with new ones, injected
    by whatever the cluster's webhooks select now, after ``delay`` seconds (0: at once). Pods of
    a revision in ``broken`` never get ready. ``max_inflight`` records the most rollouts seen
    running at once.
    """

    def __init__(self, kube: FakeKube, *, delay: float = 0.0, broken: frozenset[str] = frozenset()) -> None:
        self.kube, self.delay, self.broken = kube, delay, broken
        self.inflight: set[str] = set()
        self.max_inflight = 0
        self.lock = threading.Lock()
        kube.reactors.append(self)

    def __call__(self, kube: FakeKube, verb: str, obj: Obj) -> None:
        if obj["kind"] not in ("Deployment", "StatefulSet", "DaemonSet") or verb == "delete":
            return
        status = obj.get("status") or {}
        generation = obj["metadata"].get("generation", 1)
        if status.get("observedGeneration") == generation:
            return
        key = f"{obj['kind']}/{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        with self.lock:
            if key in self.inflight:
                return
            self.inflight.add(key)
            self.max_inflight = max(self.max_inflight, len(self.inflight))
        if self.delay:
            threading.Thread(target=self._finish, args=(key, obj), daemon=True).start()
        else:
            self._finish(key, obj)

    def _finish(self, key: str, obj: Obj) -> None:
        if self.delay:
            time.sleep(self.delay)
        kind, namespace, name = key.split("/")
        current = self.kube.get("apps/v1", kind, name, namespace)
        if current is None:
            return
        template = current["spec"]["template"]
        snap = snapshot([*self.kube.dump("Namespace"), *self.kube.dump("MutatingWebhookConfiguration"),
                         *self.kube.dump("Deployment")])
        ns_labels = snap.namespaces.get(namespace, {})
        rev = snap.injector_for(namespace, ns_labels, template["metadata"].get("labels") or {},
                                template["metadata"].get("annotations") or {})
        version = snap.revisions[rev].version if rev in snap.revisions else None
        for p in self.kube.list("v1", "Pod", namespace).items:
            if _owned(p, kind, name):
                self.kube.delete("v1", "Pod", p["metadata"]["name"], namespace)
        replicas = current["spec"].get("replicas", 3 if kind == "DaemonSet" else 1)
        ready = rev not in self.broken
        for i in range(replicas):
            owner = (kind, name)
            labels = dict(template["metadata"].get("labels") or {})
            p = pod(namespace, f"{name}-{int(time.time() * 1e6) % 10**8}-{i}", owner=owner, revision=rev,
                    version=version or "1.24.1", labels=labels, ready=ready,
                    containers=template["spec"].get("containers"))
            self.kube.create(p)
        new = copy.deepcopy(current)
        generation = new["metadata"].get("generation", 1)
        new["status"] = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                         "readyReplicas": replicas if ready else 0, "availableReplicas": replicas if ready else 0,
                         "desiredNumberScheduled": replicas, "updatedNumberScheduled": replicas,
                         "numberAvailable": replicas if ready else 0, "currentRevision": "r2", "updateRevision": "r2"}
        self.kube.replace(new)
        with self.lock:
            self.inflight.discard(key)


def _owned(p: Obj, kind: str, name: str) -> bool:
    refs = p["metadata"].get("ownerReferences") or []
    if kind == "Deployment":
        return any(r["kind"] == "ReplicaSet" and r["name"].startswith(f"{name}-") for r in refs)
    return any(r["kind"] == kind and r["name"] == name for r in refs)


# ---- a fake world: FakeKube + FakeIstioctl playing istioctl's effects ---------------------------


class FakeWorld:
    """An unrevisioned 1.24.1 mesh with ``apps`` injected namespaces of ``per_ns`` Deployments each,
    an istioctl-installed ingress gateway, and a FakeIstioctl per version whose install, tag and
    uninstall change the FakeKube the way the real commands change a cluster."""

    def __init__(self, *, apps: int = 3, per_ns: int = 2, delay: float = 0.0, broken: frozenset[str] = frozenset(),
                 kube_version: str = "v1.30.4", context: str = "fake", injected_gateway: bool = False) -> None:
        from meshops.drivers.istioctl_fake import FakeIstioctl, ok

        self.kube = FakeKube(context=context, version=kube_version)
        self.kube.apply(*unrevisioned_control_plane(), ns("istio-system"))
        gw = workload("istio-system", "istio-ingressgateway", gateway=True)
        gw["metadata"]["labels"] = {"istio.io/rev": "default", "app": "istio-ingressgateway",
                                    "operator.istio.io/component": "IngressGateways"}
        self.kube.apply(gw)
        for i in range(apps):
            name = f"app-{i}"
            self.kube.apply(ns(name, **{"istio-injection": "enabled"}))
            for j in range(per_ns):
                self.kube.apply(workload(name, f"web-{j}"))
        if injected_gateway:
            # A Helm-style gateway: injected with the gateway template, in its own labelled namespace.
            self.kube.apply(ns("istio-ingress", **{"istio-injection": "enabled"}),
                            workload("istio-ingress", "ingress", labels={"istio": "ingressgateway"},
                                     annotations={"inject.istio.io/templates": "gateway"}))
        self.rollouts = Rollouts(self.kube, delay=delay, broken=broken)
        # Bring every workload up once (pods injected by the current revision).
        for d in self.kube.dump("Deployment"):
            if d["metadata"]["name"] != "istiod":
                self.rollouts(self.kube, "create", d)
        self.istioctl: dict[str, FakeIstioctl] = {}
        for version in ("1.25.2", "1.26.0"):
            fake = FakeIstioctl(version=version, path=f"/fake/istioctl-{version}")
            fake.on("x precheck", ok(stderr="✔ No issues found when checking the cluster."))
            fake.on("install", self._install(version))
            fake.on("tag set", self._tag_set)
            fake.on("uninstall", self._uninstall)
            fake.on("proxy-status", self._proxy_status)
            self.istioctl[version] = fake

    def _install(self, version: str) -> Any:
        from meshops.drivers.istioctl_fake import ok

        def run(argv: tuple[str, ...]) -> Any:
            rev = argv[argv.index("--revision") + 1]
            if self.kube.get("apps/v1", "Deployment", f"istiod-{rev}", "istio-system") is None:
                self.kube.apply(*revision(rev, version))
            if "-f" in argv:
                with open(argv[argv.index("-f") + 1], encoding="utf-8") as f:
                    spec = (yaml.safe_load(f) or {}).get("spec") or {}
                for gw in (spec.get("components") or {}).get("ingressGateways") or []:
                    if gw.get("enabled"):
                        self._rewrite_gateway(gw["name"], rev, version)
            return ok("✔ Istiod installed 🧠\n✔ Installation complete\n")
        return run

    def _rewrite_gateway(self, name: str, rev: str, version: str) -> None:
        """What istioctl's gateways chart renders for revision ``rev``: same objects, new image,
        CA_ADDR and revision labels (reference §2, "in-place upgraded")."""
        dep = self.kube.get("apps/v1", "Deployment", name, "istio-system")
        if dep is None:
            return
        dep["metadata"]["labels"]["istio.io/rev"] = rev
        dep["spec"]["template"]["metadata"]["labels"]["istio.io/rev"] = rev
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "istio-proxy":
                c["image"] = f"docker.io/istio/proxyv2:{version}"
                c["env"] = [{"name": "CA_ADDR", "value": f"istiod-{rev}.istio-system.svc:15012"}]
        self.kube.replace(dep)

    def _proxy_status(self, argv: tuple[str, ...]) -> Any:
        """istioctl 1.25's proxy-status: each proxy on an istiod pod of the revision its CA_ADDR (or
        its injection) names."""
        from meshops.drivers.istioctl_fake import ok

        istiods: dict[str, str] = {}
        for p in self.kube.list("v1", "Pod", "istio-system", label_selector="app=istiod").items:
            istiods.setdefault(p["metadata"]["labels"].get("istio.io/rev", "default"), p["metadata"]["name"])
        rows = ["NAME     CLUSTER     CDS     LDS     EDS     RDS     ECDS     ISTIOD     VERSION"]
        for p in self.kube.list("v1", "Pod").items:
            snap_pod = pod_from_object(p)
            if snap_pod.revision is None:
                continue
            rev = snap_pod.revision
            for c in p["spec"].get("containers") or []:
                for e in c.get("env") or []:
                    if e.get("name") == "CA_ADDR":
                        host = e["value"].split(".", 1)[0]
                        rev = "default" if host == "istiod" else host.removeprefix("istiod-")
            rows.append(f"{p['metadata']['name']}.{p['metadata']['namespace']}     Kubernetes     SYNCED     SYNCED     "
                        f"SYNCED     SYNCED     IGNORED     {istiods.get(rev, '-')}     {snap_pod.proxy_version}")
        width = [max(len(r.split('     ')[i]) for r in rows) for i in range(9)]
        return ok("\n".join("     ".join(cell.ljust(width[i]) for i, cell in enumerate(r.split("     ")))
                            for r in rows) + "\n")

    def _tag_set(self, argv: tuple[str, ...]) -> Any:
        from meshops.drivers.istioctl_fake import ok

        tag_name, rev = argv[2], argv[argv.index("--revision") + 1]
        self.kube.apply(webhooks.tag_configuration(tag_name, rev), service("istio-system", f"istiod-revision-tag-{tag_name}"))
        if tag_name == "default":
            self.kube.apply(webhooks.default_validator(rev))
            injector = self.kube.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                                     "istio-sidecar-injector")
            if injector is not None:
                for w in injector["webhooks"]:
                    if w["name"].startswith(("namespace.", "object.")):
                        w["namespaceSelector"] = webhooks.NEVER_MATCH
                self.kube.replace(injector)
        return ok(f'Revision tag "{tag_name}" created, referencing control plane revision "{rev}".')

    def _uninstall(self, argv: tuple[str, ...]) -> Any:
        from meshops.drivers.istioctl_fake import ok

        rev = argv[argv.index("--revision") + 1]
        name = "istiod" if rev == "default" else f"istiod-{rev}"
        self.kube.delete("apps/v1", "Deployment", name, "istio-system")
        self.kube.delete("v1", "Service", name, "istio-system")
        self.kube.delete("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                         "istio-sidecar-injector" + ("" if rev == "default" else f"-{rev}"))
        return ok("✔ Uninstall complete")

    def ctx(self, step_key: str = "step", *, run_id: str = "run-1", assume_yes: bool = False,
            extra: dict[str, Any] | None = None) -> Any:
        import structlog

        from meshops.steps.base import StepContext
        from meshops.testing import FakeDrivers

        # One driver set for the world, as one command has one: its informers serve every wave.
        if extra:
            drivers = FakeDrivers(kube=self.kube, istioctl=self.istioctl, **extra)
        else:
            if getattr(self, "_drivers", None) is None:
                self._drivers = FakeDrivers(kube=self.kube, istioctl=self.istioctl)
            drivers = self._drivers

        class NoApprovals:
            def is_approved(self, key: str) -> bool:
                return False

            def wait(self, key: str, *, deadline: float, check: Any) -> bool:
                return False

        return StepContext(run_id=run_id, step_id=step_key.split("[")[0], step_key=step_key, attempt=1, item=None,
                           log=structlog.get_logger("test"), clock=time.time, sleep_fn=time.sleep, deadline=None,
                           stop_requested=lambda: False, drivers=drivers, approvals=NoApprovals(),
                           assume_yes=assume_yes)

    def state(self) -> dict[str, Any]:
        """Labels, webhooks, services and which revision each workload's pods run (for before/after)."""
        snap = snapshot([*self.kube.dump("Namespace"), *self.kube.dump("MutatingWebhookConfiguration"),
                         *self.kube.dump("ValidatingWebhookConfiguration"), *self.kube.dump("Deployment"),
                         *self.kube.dump("Service"), *self.kube.dump("Pod")])
        owners: dict[str, set[str]] = {}
        for p in snap.live_proxies():
            owners.setdefault(f"{p.owner_kind}/{p.namespace}/{p.owner_name}", set()).add(p.revision or "")
        hooks = {o["metadata"]["name"]: o["webhooks"] for k in ("MutatingWebhookConfiguration",
                                                                 "ValidatingWebhookConfiguration")
                 for o in self.kube.dump(k)}
        return {"namespaces": snap.namespaces, "hooks": hooks, "revisions": sorted(snap.revisions),
                "services": sorted(snap.services), "workloads": {k: sorted(v) for k, v in owners.items()}}
