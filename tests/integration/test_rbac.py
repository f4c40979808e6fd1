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
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_report_switchover import sandbox_env
from tests.support.rbac import (
    EXTDNS_POLICY,
    POLICY,
    RBAC,
    ROOT,
    Audit,
    Call,
    Request,
    allows,
    check_job,
    check_unused_actions,
    policy_for,
    route53_calls,
    shipped_rules,
)
from tests.support.switchover import Route53Proxy

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
    # per cluster); meshops owns app.example.com and api.example.com. The reconciler reads the
    # clusters inside the sandbox, not over HTTP, so none of its reads reach the audit log: as a real
    # external-dns, it acts under its own identity, never under meshops's roles.
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
        while not any(r["Name"] == "web.example.com." and r["Type"] == "CNAME" and r["TTL"] == 1
                      for r in r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]):
            assert time.monotonic() < deadline, "external-dns did not lower the TTL of web.example.com"
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
