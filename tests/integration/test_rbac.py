"""The shipped RBAC (docs/rbac/) against what each meshops job really did on the sandbox.

Each job (status, canary and in-place upgrade, install, switchover with DNS owned by meshops or by
external-dns, tune, and a fleet run) runs for real, forward and back, including the CI path
(another runner approves and resumes from the journal in the cluster). Its requests
are read from the sandbox audit log (DIR/audit-<cluster>.jsonl). The test fails when a request
is not granted by the roles bound for that job, or when a role grants a verb on a resource no
request of that job used, unless docs/rbac/allowances.yaml says why. The IAM policy is held to
the same rule against the Route53 calls recorded in front of moto (one policy per DNS owner).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_report_switchover import sandbox_env
from tests.support.switchover import Route53Proxy, parse_change_batch

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "docs" / "rbac"
ALLOWANCES = yaml.safe_load((RBAC / "allowances.yaml").read_text())


@dataclass(frozen=True)
class Request:
    cluster: str
    client: str  # meshops | istioctl
    verb: str
    group: str | None  # None: a non-resource URL
    resource: str  # "deployments", "pods/status", or the URL path
    namespace: str | None
    name: str | None


def parse_audit(cluster: str, entry: dict[str, Any]) -> Request:
    path = urllib.parse.urlsplit(entry["path"]).path.rstrip("/")
    parts = [p for p in path.split("/") if p]
    client = entry["user_agent"].split("/")[0]
    resource_path = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else []
    if not resource_path:
        return Request(cluster, client, entry["verb"], None, path, None, None)
    group = "" if parts[0] == "api" else parts[1]
    namespace = None
    if resource_path[0] == "namespaces" and len(resource_path) >= 3:
        namespace, resource_path = resource_path[1], resource_path[2:]
    resource = resource_path[0] + (f"/{resource_path[2]}" if len(resource_path) > 2 else "")
    name = resource_path[1] if len(resource_path) > 1 else None
    return Request(cluster, client, entry["verb"], group, resource, namespace, name)


# ---- the shipped roles, and RBAC's rule matching ---------------------------------------------------


@dataclass(frozen=True)
class Rule:
    role: str  # Kind/name
    client: str
    namespace: str | None  # a Role's namespace; None for a ClusterRole
    group: str
    resource: str
    verb: str
    names: tuple[str, ...]  # resourceNames ((): any)
    shared: bool = False  # bound for several jobs: held to what they used together

    def grants(self, r: Request) -> bool:
        if r.group is None or (self.namespace is not None and r.namespace != self.namespace):
            return False
        if (self.group, self.resource, self.verb) != (r.group, r.resource, r.verb):
            return False
        # resourceNames cannot limit create or a list/watch of the whole collection.
        return not self.names or (r.name in self.names and r.verb not in ("create", "list", "watch"))


def shipped_rules(*jobs: str) -> list[Rule]:
    """Every rule of the roles docs/rbac/ binds for any of ``jobs`` (the `meshops.dev/jobs` annotation)."""
    rules = []
    for path in sorted(RBAC.glob("*.yaml")):
        if path.name == "allowances.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] not in ("Role", "ClusterRole"):
                continue
            meta = doc["metadata"]
            if not set(jobs) & set(meta["annotations"]["meshops.dev/jobs"].split(",")):
                continue
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            rules.append(Rule(f"{doc['kind']}/{meta['name']}", meta["labels"]["meshops.dev/client"],
                                              meta.get("namespace") if doc["kind"] == "Role" else None, group,
                                              resource, verb, tuple(rule.get("resourceNames", ())),
                                              meta["annotations"].get("meshops.dev/shared") == "true"))
    return rules


def allowed_unused(*jobs: str) -> dict[tuple[str, str, str, str], str]:
    """(client, group, resource, verb) a job's roles may grant although the sandbox run never used it -> why."""
    out = {}
    for a in ALLOWANCES["kubernetes"]:
        if set(jobs) & set(a["jobs"]):
            for resource in a["resources"]:
                for verb in a["verbs"]:
                    out[(a["client"], a["group"], resource, verb)] = a["why"]
    return out


def check_job(job: str, requests: list[Request], *, also: tuple[str, ...] = ()) -> None:
    """Fail when a request of ``job`` is not granted, or a grant is unused and not allowed for.

    ``also``: other jobs whose roles are bound with this one's (a fleet's: the job it runs).
    Rules of shared roles (the run state) are held to what all their jobs used together, in
    test_the_shared_run_state_roles_are_used_by_the_jobs_together."""
    rules = shipped_rules(job, *also)
    assert rules, f"no role in docs/rbac is annotated for job {job}"
    # Discovery (/version, /api, /apis/...) is granted to every authenticated user by the
    # built-in system:discovery role; nothing shipped needs to grant it.
    resource_requests = [r for r in requests if r.group is not None]
    assert resource_requests, f"{job}: the audit log recorded no request: the job did not run"
    missing = sorted({f"{r.client}: {r.verb} {r.group or 'core'}/{r.resource}"
                      f"{' in ' + r.namespace if r.namespace else ''}{' ' + r.name if r.name else ''}"
                      for r in resource_requests
                      if not any(rule.client in (r.client, "any") and rule.grants(r) for rule in rules)})
    assert not missing, f"{job}: the shipped roles lack:\n  " + "\n  ".join(missing)
    allowances = allowed_unused(job, *also)
    excess = sorted({f"{rule.role} ({rule.client}): {rule.verb} {rule.group or 'core'}/{rule.resource}"
                     for rule in rules if not rule.shared
                     if not any(rule.client in (r.client, "any") and rule.grants(r) for r in resource_requests)
                     and (rule.client, rule.group, rule.resource, rule.verb) not in allowances})
    assert not excess, f"{job}: the shipped roles grant what the job never used (and no allowance says why):\n  " \
        + "\n  ".join(excess)


# ---- running the jobs on the sandbox ----------------------------------------------------------------


def meshops(env: dict[str, str], *args: str, state: str = "a") -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "meshops", "--state-dir", f"{env['SANDBOX_DIR']}/state-{state}", *args],
                          env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=180)
    return done


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    """The run's id from its `run.start` log event (a command may plan first, under the id `plan`)."""
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return str(next(e["run_id"] for e in events if e.get("event") == "run.start"))


class Audit:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.marks: dict[Path, int] = {}

    def mark(self) -> None:
        self.marks = {f: len(f.read_text().splitlines()) for f in self.directory.glob("audit-*.jsonl")}

    def since_mark(self) -> list[Request]:
        out = []
        for f in sorted(self.directory.glob("audit-*.jsonl")):
            cluster = f.stem.removeprefix("audit-")
            out += [parse_audit(cluster, json.loads(line)) for line in f.read_text().splitlines()[self.marks.get(f, 0):]]
        return out


def start_sandbox(directory: Path, *args: str) -> dict[str, str]:
    up = subprocess.run([sys.executable, "-m", "meshops", "sandbox", "up", "--dir", str(directory), *args],
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    env = sandbox_env(directory)
    env["SANDBOX_DIR"] = str(directory)
    # As docs/rbac/README.md asks: meshops-system exists before meshops runs, so no role needs
    # to create namespaces.
    for cluster in ("blue", "green"):
        if f"MESHOPS_SANDBOX_INGRESS_{cluster.upper()}" in env:
            created = subprocess.run([sys.executable, "-c", _CREATE_NS, cluster], env={**env, "PYTHONPATH": str(ROOT)},
                                     capture_output=True, text=True, timeout=60)
            assert created.returncode == 0, created.stderr
    return env


_CREATE_NS = """
import sys
from meshops.drivers.kube import KubeClient
kube = KubeClient(context=sys.argv[1])
kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshops-system"}})
"""


def stop_sandbox(directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "meshops", "sandbox", "down", "--dir", str(directory)],
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Request]]]:
    """status, the canary upgrade and tune on the `default` scenario: the requests of each job."""
    directory = tmp_path_factory.mktemp("rbac-default")
    env = start_sandbox(directory, "--scenario", "default", "--istio-versions", "1.24.1,1.25.2")
    audit, jobs = Audit(directory), {}
    try:
        audit.mark()
        assert meshops(env, "status", "-o", "json").returncode == 0
        jobs["status"] = audit.since_mark()

        # `meshops fleet` (issue 17): a one-cluster fleet whose job is the in-place upgrade. `fleet
        # plan` runs `meshops status` and the job's dry run on each cluster (`fleet status` runs the
        # same `meshops status`, so it is not run again here); `fleet run` and `fleet rollback` run
        # the job and its rollback there, and so are the in-place upgrade's requests too. The
        # fleet's own journal stays in the runner's state dir.
        fleet = directory / "fleet.yaml"
        fleet.write_text(yaml.safe_dump({
            "apiVersion": "meshops.dev/v1", "kind": "Fleet", "metadata": {"name": "rbac"}, "clusters": [{"name": "blue"}],
            "job": {"command": "upgrade", "args": ["--strategy", "inplace", "--to", "1.25.2", "--wave-size", "10"]},
            "waves": [{"name": "all", "selector": {}}]}))
        audit.mark()
        planned = meshops(env, "fleet", "plan", str(fleet), "-o", "json")
        assert planned.returncode == 0, planned.stderr[-1500:]
        assert json.loads(planned.stdout)["waves"][0]["clusters"][0]["dry_run"]["exit_code"] == 0, planned.stdout
        fleet_requests = audit.since_mark()
        audit.mark()
        ran = meshops(env, "fleet", "run", str(fleet))
        assert ran.returncode == 0, ran.stdout[-1500:] + ran.stderr[-1500:]
        back = meshops(env, "fleet", "rollback", ran.stdout.split()[0])
        assert back.returncode == 0, back.stdout[-1500:] + back.stderr[-1500:]
        jobs["inplace-upgrade"] = audit.since_mark()
        jobs["fleet"] = fleet_requests + jobs["inplace-upgrade"]

        audit.mark()
        first = meshops(env, "upgrade", "--strategy", "canary", "--to", "1.25.2", "--wave-size", "2", "--soak", "1h")
        assert first.returncode == 0, first.stderr[-1500:]
        back = meshops(env, "rollback", run_id_of(first))
        assert back.returncode == 0, back.stderr[-1500:]
        second = meshops(env, "upgrade", "--strategy", "canary", "--to", "1.25.2", "--wave-size", "10",
                         "--mode", "relabel", "--gateways", "canary", "--approve-each-wave")
        assert second.returncode == 130, second.stderr[-1500:]
        run_id = run_id_of(second)
        # The CI path: another runner (an empty state dir) reads, approves, resumes and reports.
        shown = json.loads(meshops(env, "runs", "show", run_id, "-o", "json", state="b").stdout)
        gate = [s["key"] for s in shown["steps"] if s["status"] == "started"][-1]
        assert meshops(env, "approve", run_id, gate, state="b").returncode == 0
        resumed = meshops(env, "resume", run_id, state="b")
        assert resumed.returncode == 0, resumed.stderr[-1500:]
        assert meshops(env, "report", run_id, "-o", "json", state="c").returncode == 0
        assert meshops(env, "runs", "list", "--cluster", "-o", "json", state="c").returncode == 0
        final = meshops(env, "upgrade", "finalize", run_id, "--force", state="b")
        assert final.returncode == 0, final.stderr[-1500:]
        jobs["canary-upgrade"] = audit.since_mark()

        # meshops install (issue 17): a revision from a profile, then its rollback (an uninstall).
        audit.mark()
        installed = meshops(env, "install", "--profile", "minimal", "--version", "1.25.2", "--revision", "rbac-install",
                            "-y")
        assert installed.returncode == 0, installed.stderr[-1500:]
        assert meshops(env, "rollback", run_id_of(installed), "-y").returncode == 0
        jobs["install"] = audit.since_mark()

        annotations = directory / "annotations.yaml"
        annotations.write_text(yaml.safe_dump({"apiVersion": "meshops.dev/v1", "kind": "ProxyResourceAnnotations",
                                               "workloads": [{"namespace": ns, "name": name, "annotations": {
                                                   "sidecar.istio.io/proxyCPU": "50m",
                                                   "sidecar.istio.io/proxyCPULimit": "200m",
                                                   "sidecar.istio.io/proxyMemory": "64Mi",
                                                   "sidecar.istio.io/proxyMemoryLimit": "128Mi"}}
                                                   for ns, name in (("bookinfo-frontend", "productpage-v1"),
                                                                    ("bookinfo-data", "ratings-db"),
                                                                    ("bookinfo-ops", "log-shipper"))]}))
        audit.mark()
        tuned = meshops(env, "run", str(ROOT / "playbooks" / "tune-apply.yaml"), "--var",
                        f"annotations_file={annotations}")
        assert tuned.returncode == 0, tuned.stderr[-1500:]
        assert meshops(env, "rollback", run_id_of(tuned)).returncode == 0
        jobs["tune"] = audit.since_mark()
        yield jobs
    finally:
        stop_sandbox(directory)


@dataclass(frozen=True)
class Traffic:
    env: dict[str, str]
    requests: list[Request]  # the two switchovers DNS-owned by meshops
    proxy: Route53Proxy  # their Route53 calls
    extdns_requests: list[Request]  # the switchover with --dns-owner external-dns
    extdns_proxy: Route53Proxy  # its Route53 calls


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """A switchover that fails and rolls back, then one that succeeds, then one through external-dns:
    kube requests and Route53 calls."""
    import boto3

    directory = tmp_path_factory.mktemp("rbac-blue-green")
    # The sandbox's external-dns-like reconciler owns web.example.com (its TXT registry, one owner
    # per cluster); meshops owns app.example.com and api.example.com.
    env = start_sandbox(directory, "--scenario", "blue-green", "--options-json",
                        json.dumps({"external_dns": {"interval": 0.3, "record": "web.example.com"}}))
    audit = Audit(directory)
    proxy = Route53Proxy(upstream=env["AWS_ENDPOINT_URL_ROUTE_53"])
    extdns_proxy = Route53Proxy(upstream=env["AWS_ENDPOINT_URL_ROUTE_53"])
    try:
        r53 = boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL_ROUTE_53"], region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        zone = env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]
        app = next(r for r in r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
                   if r["Name"] == "app.example.com.")
        # Two records, so the failing switchover (which creates health checks and deletes them on
        # rollback) and the successful one each start from a simple record. TTL 1: short bakes.
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
            {"Action": "UPSERT", "ResourceRecordSet": {**app, "TTL": 1}},
            {"Action": "CREATE", "ResourceRecordSet": {**app, "Name": "api.example.com.", "TTL": 1}}]})
        # Route53 through the recording proxy; ELB (alias zone IDs, listener ports) straight to moto.
        env = {**env, "AWS_ENDPOINT_URL_ROUTE_53": proxy.url}
        hosts = {c: env[f"MESHOPS_SANDBOX_INGRESS_HOST_{c.upper()}"] for c in ("blue", "green")}
        ports = {c: env[f"MESHOPS_SANDBOX_INGRESS_{c.upper()}"].rsplit(":", 1)[1] for c in ("blue", "green")}
        common = ["--from", "blue", "--to", "green", "--zone", "example.com", "--steps", "50,100", "--bake", "0.2s",
                  "--propagation-allowance", "0s", "--probe-interval", "0.1s",
                  *[a for c in ("blue", "green") for a in ("--connect-to", f"{hosts[c]}:80:127.0.0.1:{ports[c]}")]]
        audit.mark()
        # The target passes at 0 %, then its ingress answers 503 once it has traffic: rollback.
        fault = [sys.executable, "-m", "meshops", "sandbox", "fault", "--dir", str(directory)]

        def break_green(batch: dict[str, Any]) -> None:
            if any(c["ResourceRecordSet"].get("SetIdentifier") == "green" and c["ResourceRecordSet"].get("Weight")
                   for c in batch["Changes"]):
                subprocess.run([*fault, "--cluster", "green", "ingress-503"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                               capture_output=True, timeout=30, check=True)

        proxy.on_change = break_green
        failed = meshops(env, "switchover", *common, "--record", "api.example.com", "--probe",
                         "http://api.example.com/productpage")
        assert failed.returncode == 1, failed.stderr[-1500:]
        proxy.on_change = None
        subprocess.run([*fault, "--clear"], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                       timeout=30, check=True)
        done = meshops(env, "switchover", *common, "--record", "app.example.com", "--probe",
                       "http://app.example.com/productpage")
        assert done.returncode == 0, done.stderr[-1500:]
        requests = audit.since_mark()

        # --dns-owner external-dns. First, as an operator would before a switchover, lower the TTL
        # through external-dns's own annotation (not meshops's doing: before the mark).
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=env["KUBECONFIG"], context="blue"))
        api.patch_namespaced_service("istio-ingressgateway", "istio-system", {"metadata": {"annotations": {
            "external-dns.alpha.kubernetes.io/ttl": "1"}}})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                r["Name"] == "web.example.com." and r["Type"] == "CNAME" and r["TTL"] == 1
                for r in r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]):
            time.sleep(0.2)
        audit.mark()
        # One step (100 %): each step is only more of the same annotation patches and Route53 reads.
        extdns = meshops({**env, "AWS_ENDPOINT_URL_ROUTE_53": extdns_proxy.url}, "switchover", "--dns-owner",
                         "external-dns", *common, "--steps", "100", "--record", "web.example.com", "--probe",
                         "http://app.example.com/productpage")
        assert extdns.returncode == 0, extdns.stderr[-1500:]
        # Its rollback puts both Services' annotations back as they were (external-dns follows).
        undone = meshops({**env, "AWS_ENDPOINT_URL_ROUTE_53": extdns_proxy.url}, "rollback", run_id_of(extdns))
        assert undone.returncode == 0, undone.stderr[-1500:]
        yield Traffic(env=env, requests=requests, proxy=proxy, extdns_requests=audit.since_mark(),
                      extdns_proxy=extdns_proxy)
    finally:
        proxy.close()
        extdns_proxy.close()
        stop_sandbox(directory)


@pytest.mark.parametrize("job", ["status", "canary-upgrade", "inplace-upgrade", "tune", "install"])
def test_the_shipped_roles_grant_exactly_what_each_job_used(mesh: dict[str, list[Request]], job: str) -> None:
    """Every request of the job is granted by its roles; every grant was used or has a documented allowance."""
    check_job(job, mesh[job])


def test_a_fleet_runner_needs_its_jobs_roles_and_the_status_roles(mesh: dict[str, list[Request]]) -> None:
    """`fleet plan`, `run` and `rollback` of a fleet whose job is the in-place upgrade: the job's
    roles and those annotated for `fleet` (`meshops status`, which plan and `fleet status` run on
    each cluster) grant every request, and nothing unused. The fleet writes nothing of its own to
    the clusters: plan only reads, and run and rollback make only the job's requests."""
    check_job("fleet", mesh["fleet"], also=("inplace-upgrade",))
    assert not [r for r in mesh["fleet"] if r.verb not in ("get", "list", "watch")
                and r not in mesh["inplace-upgrade"]], "fleet plan/status wrote to a cluster"


def test_the_switchover_roles_grant_exactly_what_it_used_on_both_clusters(traffic: Traffic) -> None:
    """Both clusters' audit logs, against the switchover's roles (bound on each cluster)."""
    assert {r.cluster for r in traffic.requests} == {"blue", "green"}
    check_job("switchover", traffic.requests)


def test_the_external_dns_switchover_roles_grant_exactly_what_it_used(traffic: Traffic) -> None:
    """--dns-owner external-dns: the same reads, plus a patch of each gateway Service's annotations."""
    assert {r.cluster for r in traffic.extdns_requests} == {"blue", "green"}
    patched = {(r.cluster, r.namespace, r.name) for r in traffic.extdns_requests
               if (r.verb, r.resource) == ("patch", "services")}
    assert patched == {(c, "istio-system", "istio-ingressgateway") for c in ("blue", "green")}
    check_job("switchover-external-dns", traffic.extdns_requests)


def test_the_shared_run_state_roles_are_used_by_the_jobs_together(mesh: dict[str, list[Request]],
                                                                  traffic: Traffic) -> None:
    """The run-state roles, bound for every job, grant nothing the jobs did not use between them."""
    everything = [r for requests in mesh.values() for r in requests] + traffic.requests + traffic.extdns_requests
    for job in ("canary-upgrade", "inplace-upgrade", "switchover", "switchover-external-dns", "tune", "fleet"):
        shared = [rule for rule in shipped_rules(job) if rule.shared]
        assert shared
        unused = sorted({f"{rule.role}: {rule.verb} {rule.resource}" for rule in shared
                         if not any(rule.client == r.client and rule.grants(r) for r in everything)})
        assert not unused, unused


def test_the_rbac_check_is_not_vacuous() -> None:
    """A role missing a verb, and a role granting an unused one, are both reported."""
    request = Request("c", "meshops", "patch", "apps", "deployments", "shop", "web")
    with pytest.raises(AssertionError, match=r"lack:\s+meshops: patch apps/deployments in shop web"):
        check_job("status", [request])
    with pytest.raises(AssertionError, match="grant what the job never used"):
        check_job("status", [Request("c", "meshops", "list", "", "pods", None, None)])
    # The external-dns role reaches the gateway Service only (resourceNames), not any Service.
    other = Request("c", "meshops", "patch", "", "services", "istio-system", "some-other-service")
    with pytest.raises(AssertionError, match=r"lack:\s+meshops: patch core/services in istio-system some-other-service"):
        check_job("switchover-external-dns", [other])


# ---- the IAM policy against the Route53 calls ------------------------------------------------------

_ROUTE53 = [  # (method, path pattern) -> (action, resource ARN template); paths of the 2013-04-01 API
    ("GET", r"/hostedzonesbyname", "ListHostedZonesByName", "*"),
    ("GET", r"/hostedzone", "ListHostedZones", "*"),
    ("GET", r"/hostedzone/(?P<id>[^/]+)", "GetHostedZone", "hostedzone/{id}"),
    ("GET", r"/hostedzone/(?P<id>[^/]+)/rrset", "ListResourceRecordSets", "hostedzone/{id}"),
    ("POST", r"/hostedzone/(?P<id>[^/]+)/rrset", "ChangeResourceRecordSets", "hostedzone/{id}"),
    ("GET", r"/change/(?P<id>[^/]+)", "GetChange", "change/{id}"),
    ("POST", r"/healthcheck", "CreateHealthCheck", "*"),
    ("GET", r"/healthcheck", "ListHealthChecks", "*"),
    ("GET", r"/healthcheck/(?P<id>[^/]+)", "GetHealthCheck", "healthcheck/{id}"),
    ("POST", r"/healthcheck/(?P<id>[^/]+)", "UpdateHealthCheck", "healthcheck/{id}"),
    ("DELETE", r"/healthcheck/(?P<id>[^/]+)", "DeleteHealthCheck", "healthcheck/{id}"),
    ("GET", r"/healthcheck/(?P<id>[^/]+)/status", "GetHealthCheckStatus", "healthcheck/{id}"),
    ("POST", r"/tags/healthcheck/(?P<id>[^/]+)", "ChangeTagsForResource", "healthcheck/{id}"),
    ("GET", r"/tags/healthcheck/(?P<id>[^/]+)", "ListTagsForResource", "healthcheck/{id}"),
]


@dataclass(frozen=True)
class Call:
    action: str
    resource: str
    record_names: tuple[str, ...] = ()  # ChangeResourceRecordSets: normalised names in the batch


def route53_call(method: str, path: str, body: bytes) -> Call:
    path = urllib.parse.urlsplit(path).path.removeprefix("/2013-04-01").rstrip("/")
    for verb, pattern, action, resource in _ROUTE53:
        m = re.fullmatch(pattern, path)
        if m and verb == method:
            arn = resource if resource == "*" else "arn:aws:route53:::" + resource.format(**m.groupdict())
            names: tuple[str, ...] = ()
            if action == "ChangeResourceRecordSets":
                names = tuple(sorted({c["ResourceRecordSet"]["Name"].lower().rstrip(".")
                                      for c in parse_change_batch(body)["Changes"]}))
            return Call(f"route53:{action}", arn, names)
    raise AssertionError(f"a Route53 call this test cannot name: {method} {path}")


POLICY, EXTDNS_POLICY = "route53-switchover-policy.json", "route53-switchover-external-dns-policy.json"


def policy_for(zone_id: str, record: str, policy: str = POLICY) -> dict[str, Any]:
    text = (RBAC / policy).read_text()
    return json.loads(text.replace("HOSTED_ZONE_ID", zone_id).replace("RECORD_NAME", record))  # type: ignore[no-any-return]


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def allows(policy: dict[str, Any], call: Call) -> bool:
    """IAM's Allow matching for the parts this policy uses: actions, resource ARNs with wildcards,
    and ForAllValues:StringEquals on the record names of a change batch (no Deny is used)."""
    for st in policy["Statement"]:
        if st["Effect"] != "Allow" or not any(fnmatchcase(call.action, a) for a in _list(st["Action"])):
            continue
        if not any(fnmatchcase(call.resource, r) for r in _list(st["Resource"])):
            continue
        ok = True
        for op, conditions in st.get("Condition", {}).items():
            assert op == "ForAllValues:StringEquals", op
            for key, values in conditions.items():
                assert key == "route53:ChangeResourceRecordSetsNormalizedRecordNames", key
                ok = ok and bool(call.record_names) and set(call.record_names) <= set(values)
        if ok:
            return True
    return False


def route53_calls(proxy: Route53Proxy) -> list[Call]:
    # The pre-change `sts get-caller-identity` (POST / with Action=GetCallerIdentity) passes this proxy
    # when AWS_ENDPOINT_URL points at it; AWS requires no permission for it, so no policy names it.
    sts = [e for e in proxy.exchanges if b"GetCallerIdentity" in e.body]
    assert all(e.method == "POST" and urllib.parse.urlsplit(e.path).path == "/" for e in sts)
    return [route53_call(e.method, e.path, e.body) for e in proxy.exchanges if e not in sts]


def check_unused_actions(policy: dict[str, Any], name: str, used: set[str]) -> None:
    """Every action the policy grants was called, or allowances.yaml says why not (for this policy)."""
    granted = {a for st in policy["Statement"] for a in _list(st["Action"])}
    allowed_unused_actions = {a["action"] for a in ALLOWANCES["iam"] if name in a["policies"]}
    assert granted - used <= allowed_unused_actions, granted - used - allowed_unused_actions
    assert allowed_unused_actions <= granted


def test_the_iam_policy_allows_exactly_the_route53_calls_a_switchover_makes(traffic: Traffic) -> None:
    """Each recorded call is allowed by the policy for its zone and record; each allowed action was called."""
    zone = traffic.env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]
    calls = route53_calls(traffic.proxy)
    changes = [c for c in calls if c.action == "route53:ChangeResourceRecordSets"]
    # Each record's changes and those of its lock record (_meshops-lock.<record>).
    assert {c.record_names for c in changes} == {("api.example.com",), ("app.example.com",),
                                                 ("_meshops-lock.api.example.com",),
                                                 ("_meshops-lock.app.example.com",)}
    for call in calls:
        # Each switchover runs under the policy made for its own record.
        record = call.record_names[0].removeprefix("_meshops-lock.") if call.record_names else "app.example.com"
        assert allows(policy_for(zone, record), call), f"the policy does not allow {call}"
    used = {c.action for c in calls}
    assert "route53:DeleteHealthCheck" in used  # the failed switchover removed the checks it created
    check_unused_actions(policy_for(zone, "app.example.com"), POLICY, used)


def test_the_external_dns_iam_policy_allows_exactly_what_meshops_calls_there(traffic: Traffic) -> None:
    """With --dns-owner external-dns meshops writes only its lock record; external-dns writes the
    record under its own policy. Each recorded call is allowed; each allowed action was called."""
    zone = traffic.env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]
    calls = route53_calls(traffic.extdns_proxy)
    policy = policy_for(zone, "web.example.com", EXTDNS_POLICY)
    assert {c.record_names for c in calls if c.action == "route53:ChangeResourceRecordSets"} == {
        ("_meshops-lock.web.example.com",)}
    for call in calls:
        assert allows(policy, call), f"the policy does not allow {call}"
    check_unused_actions(policy, EXTDNS_POLICY, {c.action for c in calls})
    # Nothing to write the record itself with, nor health checks: those are external-dns's (or nobody's).
    assert not allows(policy, Call("route53:ChangeResourceRecordSets", f"arn:aws:route53:::hostedzone/{zone}",
                                   ("web.example.com",)))
    assert not allows(policy, Call("route53:CreateHealthCheck", "*"))


def test_the_iam_policy_keeps_to_one_zone_and_one_record() -> None:
    """Another zone, another record, or a batch that touches a second name is not allowed."""
    policy = policy_for("Z1", "app.example.com")
    own = Call("route53:ChangeResourceRecordSets", "arn:aws:route53:::hostedzone/Z1", ("app.example.com",))
    assert allows(policy, own)
    assert not allows(policy, Call(own.action, "arn:aws:route53:::hostedzone/Z2", own.record_names))
    assert not allows(policy, Call(own.action, own.resource, ("app.example.com", "www.example.com")))
    assert not allows(policy, Call("route53:ListResourceRecordSets", "arn:aws:route53:::hostedzone/Z2"))
    assert not allows(policy, Call("route53:DeleteHostedZone", "arn:aws:route53:::hostedzone/Z1"))
    assert allows(policy, Call("route53:GetChange", "arn:aws:route53:::change/C2682N5HXP0BZ4"))


def test_the_shipped_manifests_fit_the_kubernetes_schemas_and_name_their_jobs() -> None:
    """Every object validates strictly against Kubernetes 1.30; every role names its client and jobs."""
    import kubernetes_validate

    jobs = set()
    for path in sorted(RBAC.glob("*.yaml")):
        if path.name == "allowances.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, "1.30", strict=True)
            if doc["kind"] in ("Role", "ClusterRole"):
                assert doc["metadata"]["labels"]["meshops.dev/client"] in ("meshops", "istioctl")
                jobs |= set(doc["metadata"]["annotations"]["meshops.dev/jobs"].split(","))
    assert jobs == {"status", "canary-upgrade", "inplace-upgrade", "switchover", "switchover-external-dns", "tune",
                    "install", "fleet"}
