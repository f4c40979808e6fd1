"""The sandbox extension for Istio, ingress, Route53, faults and scenarios (`runtime.EXTENSIONS`).

`configure(ctx)` runs in the sandbox process after the clusters start and before DIR's files
are written. Options come from `meshops sandbox up` (JSON): istio, istio_versions,
revision, unrevisioned, scenario, faults_file, route53_zone, route53_record, fault_seed,
ready_timeout. Everything started here is stopped by the cleanups it registers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import meshops
from meshops.sandbox import faults as faults_mod
from meshops.sandbox import scenarios
from meshops.sandbox.istio import admission, readiness
from meshops.sandbox.istio.ingress import GATEWAY_NAMESPACE, GATEWAY_SERVICE, IngressServer
from meshops.sandbox.istio.istioctl.app import run_in_process
from meshops.sandbox.istio.versions import IstioVersion
from meshops.sandbox.route53 import Route53Sandbox

log = logging.getLogger("meshops.sandbox.istio")

Obj = dict[str, Any]


class SetupError(RuntimeError):
    pass


def env_suffix(cluster: str) -> str:
    """'blue' -> 'BLUE', 'eu-west.a' -> 'EU_WEST_A' (for MESHOPS_SANDBOX_INGRESS_<CLUSTER>)."""
    return re.sub(r"[^A-Za-z0-9]", "_", cluster).upper()


def write_istioctl(bin_dir: Path, versions: list[str]) -> dict[str, str]:
    """`istioctl` for the first version plus `istioctl-<v>` for each: sh wrappers around this Python."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    root = Path(meshops.__file__).resolve().parent.parent
    written = {}
    for name, version in [("istioctl", versions[0]), *((f"istioctl-{v}", v) for v in versions)]:
        path = bin_dir / name
        path.write_text(
            "#!/bin/sh\n"
            f"# istioctl {version} for the meshops sandbox: a client of the sandbox's Kubernetes API.\n"
            f'PYTHONPATH="{root}${{PYTHONPATH:+:$PYTHONPATH}}" '
            f'exec "{sys.executable}" -m meshops.sandbox.istio.istioctl --istio-version {version} "$@"\n'
        )
        path.chmod(0o755)
        written[name] = str(path)
    return written


def istioctl(cluster: Any, version: str, *argv: str) -> str:
    serving = getattr(cluster, "serving", None)
    code, out, err = run_in_process(cluster.url, version, argv, getattr(cluster, "token", None),
                                    str(serving.ca_file) if serving else None)
    log.info("istioctl %s %s on %s -> %d\n%s%s", version, " ".join(argv), cluster.name, code, out, err)
    if code != 0:
        raise SetupError(f"istioctl {' '.join(argv)} failed on cluster {cluster.name}: {err.strip() or out.strip()}")
    return out


def apply_objects(cluster: Any, objects: list[Obj]) -> None:
    """Create objects through the cluster's API (admission included), skipping those that exist."""
    from meshops.sandbox.apiserver.errors import ApiError

    for obj in objects:
        t = cluster.types.for_kind(obj.get("apiVersion", "v1"), obj["kind"])
        if t is None:
            raise SetupError(f"cluster {cluster.name} does not serve {obj.get('apiVersion')}/{obj['kind']}")
        try:
            cluster.api.create(t, obj, namespace=(obj.get("metadata") or {}).get("namespace"))
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise SetupError(f"creating {obj['kind']} {obj['metadata'].get('name')} on {cluster.name}: "
                                 f"{e.message}") from e


def _workloads_ready(cluster: Any) -> list[str]:
    """Names of scenario workloads not ready yet (Deployments, StatefulSets, DaemonSets, Jobs)."""
    pending = []
    store = cluster.store
    deps, _ = store.list(("apps", "deployments"))
    for d in deps:
        st, want = d.get("status") or {}, (d.get("spec") or {}).get("replicas", 1)
        if st.get("availableReplicas", 0) < want or st.get("updatedReplicas", 0) < want:
            pending.append(f"deployment/{d['metadata']['namespace']}/{d['metadata']['name']}")
    sets, _ = store.list(("apps", "statefulsets"))
    for s in sets:
        if (s.get("status") or {}).get("readyReplicas", 0) < (s.get("spec") or {}).get("replicas", 1):
            pending.append(f"statefulset/{s['metadata']['namespace']}/{s['metadata']['name']}")
    daemons, _ = store.list(("apps", "daemonsets"))
    for ds in daemons:
        st = ds.get("status") or {}
        if st.get("desiredNumberScheduled", 0) == 0 or st.get("numberReady", 0) < st.get("desiredNumberScheduled", 0):
            pending.append(f"daemonset/{ds['metadata']['namespace']}/{ds['metadata']['name']}")
    jobs, _ = store.list(("batch", "jobs"))
    for j in jobs:
        st = j.get("status") or {}
        if not st.get("succeeded") and not st.get("failed"):
            pending.append(f"job/{j['metadata']['namespace']}/{j['metadata']['name']}")
    return pending


def wait_ready(clusters: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pending = [f"{c.name}:{w}" for c in clusters for w in _workloads_ready(c)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise SetupError(f"scenario not ready after {timeout:.0f}s: {', '.join(pending[:10])}"
                             + (f" and {len(pending) - 10} more" if len(pending) > 10 else ""))
        time.sleep(0.1)


def ingress_hostname(cluster: Any, timeout: float = 10.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        svc = cluster.store.get(("", "services"), GATEWAY_NAMESPACE, GATEWAY_SERVICE)
        if svc is None:
            return None
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if ing.get("hostname") or ing.get("ip"):
                return str(ing.get("hostname") or ing.get("ip"))
        time.sleep(0.05)
    return None


class IstioSandbox:
    def __init__(self, directory: Path, clusters: dict[str, Any], options: dict[str, Any]) -> None:
        self.dir = Path(directory)
        self.clusters = clusters
        self.opts = options or {}
        self.env: dict[str, str] = {}
        self.state: dict[str, Any] = {}
        self.book = faults_mod.FaultBook(seed=self.opts.get("fault_seed"))
        self._stoppers: list[Any] = []

    def _plan(self) -> tuple[scenarios.Scenario | None, list[str], str]:
        scenario = scenarios.load(self.opts["scenario"]) if self.opts.get("scenario") else None
        first = self.opts.get("istio") or (scenario.istio_version if scenario else None)
        versions = [v for v in [first, *(self.opts.get("istio_versions") or [])] if v]
        versions = list(dict.fromkeys(versions))
        for v in versions:
            IstioVersion.parse(v)  # raises UnsupportedVersion with a clear message
        if self.opts.get("unrevisioned"):
            revision = ""
        elif self.opts.get("revision") is not None:
            revision = str(self.opts["revision"])
        elif scenario is not None and first:
            revision = scenario.revision_for(first)
        else:
            revision = ""
        return scenario, versions, revision

    def start(self) -> None:
        scenario, versions, revision = self._plan()
        clusters = list(self.clusters.values())
        for cluster in clusters:
            admission.register(cluster)
            self._stoppers.append(readiness.register(cluster).stop)
            faults_mod.ClusterFaults(self.book, cluster)
            server = IngressServer(cluster.name, cluster.store, self.book).start()
            self._stoppers.append(server.stop)
            self.env[f"MESHOPS_SANDBOX_INGRESS_{env_suffix(cluster.name)}"] = server.url
            self.state.setdefault("ingress", {})[cluster.name] = {"url": server.url}
        if versions:
            programs = write_istioctl(self.dir / "bin", versions)
            self.env["PATH"] = f"{self.dir / 'bin'}:$PATH"
            self.env["MESHOPS_SANDBOX_ISTIO_VERSION"] = versions[0]
            self.state["istio"] = {"version": versions[0], "versions": versions, "revision": revision,
                                   "istioctl": programs}
            self._install(clusters, versions[0], revision, scenario)
        if scenario is not None:
            self._deploy(clusters, scenario, installed=bool(versions))
            self.state["scenario"] = scenario.name
        for cluster in clusters:
            host = ingress_hostname(cluster, timeout=5.0 if versions else 0.0)
            if host:
                self.state["ingress"][cluster.name]["hostname"] = host
                self.env[f"MESHOPS_SANDBOX_INGRESS_HOST_{env_suffix(cluster.name)}"] = host
        self._route53(scenario)
        self._faults()
        (self.dir / "sandbox.json").write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def _install(self, clusters: list[Any], version: str, revision: str, scenario: scenarios.Scenario | None) -> None:
        argv = ["install", "-y", "--readiness-timeout", f"{int(self.opts.get('ready_timeout', 60))}s"]
        if revision:
            argv += ["--revision", revision]
        if scenario is not None and scenario.profile != "default":
            argv += ["--set", f"profile={scenario.profile}"]
        if scenario is not None and scenario.operator:
            # As a user of plain istioctl would: an IstioOperator file, nothing recorded elsewhere.
            iop = self.dir / f"{scenario.name}-iop.yaml"
            iop.write_text(yaml.safe_dump(scenario.operator, sort_keys=False))
            argv += ["-f", str(iop)]
        for s in self.opts.get("istio_set") or []:
            argv += ["--set", s]
        for cluster in clusters:
            t0 = time.monotonic()
            istioctl(cluster, version, *argv)
            for tag in scenario.tags if scenario else []:
                istioctl(cluster, version, "tag", "set", tag, "--revision", revision or "default", "--overwrite")
            log.info("installed Istio %s (revision %r) on %s in %.2fs", version, revision, cluster.name,
                     time.monotonic() - t0)

    def _deploy(self, clusters: list[Any], scenario: scenarios.Scenario, *, installed: bool) -> None:
        plain, istio_config = scenarios.objects(scenario)
        if istio_config and not installed:
            raise SetupError(f"scenario {scenario.name} has Istio config but no Istio version was given (--istio)")
        t0 = time.monotonic()
        for cluster in clusters:
            apply_objects(cluster, plain)
            apply_objects(cluster, istio_config)
        wait_ready(clusters, float(self.opts.get("ready_timeout", 60)))
        log.info("scenario %s ready on %d cluster(s) in %.2fs", scenario.name, len(clusters), time.monotonic() - t0)

    def _route53(self, scenario: scenarios.Scenario | None) -> None:
        if self.opts.get("route53") is False:
            return
        r53 = Route53Sandbox(zone=self.opts.get("route53_zone") or "example.com.",
                             record=self.opts.get("route53_record") or "app.example.com")
        r53.start()
        self._stoppers.append(r53.stop)
        name = (scenario.route53_cluster if scenario and scenario.route53_cluster in self.clusters
                else next(iter(self.clusters)))
        target = self.state.get("ingress", {}).get(name, {}).get("hostname")
        if target:
            r53.seed(target)
        else:
            # No ingress gateway (no Istio asked for): the zone exists, the record waits for one.
            r53.zone_id = r53.client().create_hosted_zone(
                Name=r53.zone, CallerReference=f"meshops-{time.time()}")["HostedZone"]["Id"].split("/")[-1]
        self.env.update(r53.env())
        self.state["route53"] = {"endpoint": r53.endpoint, "zone": r53.zone, "zone_id": r53.zone_id,
                                 "record": r53.record, "target": target, "cluster": name if target else None}

    def _faults(self) -> None:
        control = faults_mod.ControlServer(self.book, list(self.clusters)).start()
        self._stoppers.append(control.stop)
        self.env["MESHOPS_SANDBOX_FAULTS_URL"] = control.url
        self.state["faults"] = {"url": control.url}
        if self.opts.get("faults_file"):
            for fault in faults_mod.load_file(Path(self.opts["faults_file"]), default_cluster=next(iter(self.clusters))):
                if fault.cluster not in self.clusters:
                    raise SetupError(f"faults file names cluster {fault.cluster!r}; this sandbox has "
                                     f"{', '.join(self.clusters)}")
                self.book.add(fault)

    def stop(self) -> None:
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception:  # shutting down: keep stopping the rest
                log.exception("stopping %r", stop)


def configure(ctx: Any) -> None:
    """The registration point part 1 calls (`meshops.sandbox.istio.setup:configure`)."""
    sandbox = IstioSandbox(ctx.directory, ctx.clusters, ctx.options)
    ctx.cleanups.append(sandbox.stop)
    sandbox.start()
    ctx.env.update(sandbox.env)
    ctx.state.update(sandbox.state)
