"""The shipped RBAC (docs/rbac/) and the rules that match requests to it: Kubernetes RBAC for the
requests in the sandbox's audit log, IAM for the Route53 calls recorded in front of moto. Used by
tests/integration/test_rbac.py, which runs the jobs."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

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


# ---- the IAM policies against the Route53 calls ----------------------------------------------------

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


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def allows(policy: dict[str, Any], call: Call) -> bool:
    """IAM's Allow matching for the parts this policy uses: actions, resource ARNs with wildcards,
    and ForAllValues:StringEquals on the record names of a change batch (no Deny is used)."""
    for st in policy["Statement"]:
        if st["Effect"] != "Allow" or not any(fnmatchcase(call.action, a) for a in as_list(st["Action"])):
            continue
        if not any(fnmatchcase(call.resource, r) for r in as_list(st["Resource"])):
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
    granted = {a for st in policy["Statement"] for a in as_list(st["Action"])}
    allowed_unused_actions = {a["action"] for a in ALLOWANCES["iam"] if name in a["policies"]}
    assert granted - used <= allowed_unused_actions, granted - used - allowed_unused_actions
    assert allowed_unused_actions <= granted
