"""An external-dns-like reconciler for the sandbox: each cluster's Services become Route53 records.

Enabled with ``--options-json '{"external_dns": {"interval": 1}}'`` on ``meshops sandbox up``
(``"record": "web.example.com"`` gives external-dns that name instead of the sandbox's record).
It does what external-dns's AWS provider does with ``--policy=sync --registry=txt
--txt-owner-id=<cluster>`` (kubernetes-sigs/external-dns docs: tutorials/aws.md, annotations,
advanced/multi-cluster-shared-records.md; route53-and-engines.md §A4), in our own words:

- every ``interval`` seconds (external-dns's ``--interval``) it reads each cluster's LoadBalancer
  Services; one with ``external-dns.alpha.kubernetes.io/hostname`` (newer releases also read the
  ``external-dns.kubernetes.io/`` prefix) wants a CNAME from each host name to its load balancer,
  weighted when it has ``set-identifier`` (weight from ``aws-weight``, 0 when absent), TTL from
  ``ttl`` (else 60);
- ownership is a TXT record beside each record, at ``cname-<name>`` (the ``<type>-`` prefix of the
  newer TXT format), holding ``heritage=external-dns,external-dns/owner=<owner>,...`` and carrying
  the same SetIdentifier/weight as the record it guards; a controller only changes or deletes
  records whose TXT names its own owner, and never touches one without a TXT;
- changes go out as one ChangeResourceRecordSets per cluster and loop (CREATE, UPSERT, DELETE),
  so two clusters' controllers make two separate changes, as they really do.

At start the seeded app record (a plain CNAME with no owner) is handed over: the Service of the
cluster it points at gets the ``hostname`` annotation, the plain record is removed, and the first
sync creates it again, owned.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("meshops.sandbox.external_dns")

PREFIXES = ("external-dns.alpha.kubernetes.io/", "external-dns.kubernetes.io/")
TTL = 60


def _annotation(annotations: dict[str, str], key: str) -> str | None:
    for prefix in PREFIXES:
        if prefix + key in annotations:
            return annotations[prefix + key]
    return None


def _fq(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


class Reconciler:
    def __init__(self, route53: Any, zone_id: str, zone_name: str, clusters: dict[str, Any], *,
                 interval: float = 1.0) -> None:
        self.route53, self.zone_id, self.zone_name = route53, zone_id, _fq(zone_name)
        self.clusters, self.interval = clusters, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.syncs = 0

    # ---- what the cluster wants -----------------------------------------------------------------

    def desired(self, owner: str, cluster: Any) -> dict[tuple[str, str | None], dict[str, Any]]:
        from meshops.sandbox.apiserver.kinds import SERVICES

        out: dict[tuple[str, str | None], dict[str, Any]] = {}
        services, _ = cluster.store.list(SERVICES)
        for svc in services:
            meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
            ann = meta.get("annotations") or {}
            hosts = [_fq(h) for h in (_annotation(ann, "hostname") or "").split(",") if h.strip()]
            lbs = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if spec.get("type") != "LoadBalancer" or not hosts or not lbs or not lbs[0].get("hostname"):
                continue
            set_id = _annotation(ann, "set-identifier")
            weight = _annotation(ann, "aws-weight")
            ttl = int(_annotation(ann, "ttl") or TTL)
            resource = f"service/{meta.get('namespace')}/{meta.get('name')}"
            for host in hosts:
                if not (host == self.zone_name or host.endswith("." + self.zone_name)):
                    continue
                record: dict[str, Any] = {"Name": host, "Type": "CNAME", "TTL": ttl,
                                          "ResourceRecords": [{"Value": str(lbs[0]["hostname"])}]}
                txt: dict[str, Any] = {"Name": "cname-" + host, "Type": "TXT", "TTL": 300, "ResourceRecords": [
                    {"Value": f'"heritage=external-dns,external-dns/owner={owner},external-dns/resource={resource}"'}]}
                if set_id:
                    for r in (record, txt):
                        r.update(SetIdentifier=set_id, Weight=int(weight or 0))
                out[(host, set_id)] = record
                out[("cname-" + host, set_id)] = txt
        return out

    # ---- what Route53 has, and which of it is ours -----------------------------------------------

    def _all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"HostedZoneId": self.zone_id}
        while True:
            page = self.route53.list_resource_record_sets(**kwargs)
            out += page["ResourceRecordSets"]
            if not page.get("IsTruncated"):
                return out
            kwargs.update(StartRecordName=page["NextRecordName"], StartRecordType=page["NextRecordType"])
            if page.get("NextRecordIdentifier"):
                kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]

    def sync(self, owner: str, cluster: Any) -> int:
        """One loop of one cluster's controller; returns the number of changes sent."""
        records = self._all()
        owned_txt = {(r["Name"].lower(), r.get("SetIdentifier")): r for r in records if r["Type"] == "TXT"
                     and any(f"external-dns/owner={owner}," in v["Value"] for v in r.get("ResourceRecords") or [])}
        owned = dict(owned_txt)
        for r in records:
            key = (r["Name"].lower(), r.get("SetIdentifier"))
            if r["Type"] == "CNAME" and ("cname-" + key[0], key[1]) in owned_txt:
                owned[key] = r
        existing = {(r["Name"].lower(), r.get("SetIdentifier"), r["Type"]) for r in records}
        want = self.desired(owner, cluster)
        changes = []
        for key, r in want.items():
            have = owned.get(key)
            if have is None:
                if (key[0], key[1], r["Type"]) in existing:
                    continue  # someone else's record: external-dns leaves it alone
                changes.append({"Action": "CREATE", "ResourceRecordSet": r})
            elif _comparable(have) != _comparable(r):
                changes.append({"Action": "UPSERT", "ResourceRecordSet": r})
        for key, r in owned.items():
            if key not in want:
                changes.append({"Action": "DELETE", "ResourceRecordSet": r})
        if changes:
            try:
                self.route53.change_resource_record_sets(HostedZoneId=self.zone_id, ChangeBatch={
                    "Comment": f"external-dns sync for {owner}", "Changes": changes})
            except Exception as exc:  # as external-dns: log it and try again on the next loop
                log.warning("external-dns %s: change refused: %s", owner, exc)
                return 0
        return len(changes)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for owner, cluster in self.clusters.items():
                try:
                    self.sync(owner, cluster)
                except Exception:  # a controller keeps looping
                    log.exception("external-dns %s: sync failed", owner)
            self.syncs += 1

    def start(self) -> Reconciler:
        self._thread = threading.Thread(target=self._loop, name="external-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _comparable(r: dict[str, Any]) -> tuple[Any, ...]:
    return (int(r.get("TTL") or 0), tuple(sorted(str(v["Value"]) for v in r.get("ResourceRecords") or [])),
            r.get("SetIdentifier"), None if r.get("Weight") is None else int(r["Weight"]))


def configure(ctx: Any) -> None:
    """Sandbox extension (after the ELB one): hand the app record to external-dns and start the loop."""
    import boto3

    from meshops.sandbox.apiserver.kinds import SERVICES
    from meshops.sandbox.route53 import DUMMY_KEY, DUMMY_REGION

    options = ctx.options.get("external_dns")
    r53 = ctx.state.get("route53") or {}
    if not options or not r53.get("endpoint"):
        return
    interval = float(options.get("interval", 1.0)) if isinstance(options, dict) else 1.0
    client = boto3.client("route53", endpoint_url=r53["endpoint"], region_name=DUMMY_REGION,
                          aws_access_key_id=DUMMY_KEY, aws_secret_access_key=DUMMY_KEY)
    # The name external-dns owns: the sandbox's record (handed over), or another one ("record"),
    # so one sandbox can hold a record meshops owns beside one external-dns owns.
    record = _fq(str((options.get("record") if isinstance(options, dict) else None) or r53["record"]))
    owner_cluster = r53.get("cluster")
    if owner_cluster in ctx.clusters:
        cluster = ctx.clusters[owner_cluster]
        svc = cluster.store.get(SERVICES, "istio-system", "istio-ingressgateway")
        if svc is not None:
            meta = dict(svc["metadata"])
            meta["annotations"] = {**(meta.get("annotations") or {}), PREFIXES[0] + "hostname": record.rstrip(".")}
            cluster.api.update(SERVICES, {**svc, "metadata": meta}, namespace="istio-system")
        plain = [r for r in client.list_resource_record_sets(HostedZoneId=r53["zone_id"])["ResourceRecordSets"]
                 if r["Name"].lower() == record and r["Type"] == "CNAME"]
        if plain:
            client.change_resource_record_sets(HostedZoneId=r53["zone_id"], ChangeBatch={
                "Changes": [{"Action": "DELETE", "ResourceRecordSet": r} for r in plain]})
    reconciler = Reconciler(client, str(r53["zone_id"]), str(r53["zone"]), ctx.clusters, interval=interval)
    for owner, cluster in ctx.clusters.items():
        reconciler.sync(owner, cluster)  # the record exists, owned, before DIR/env is written
    reconciler.start()
    ctx.cleanups.append(reconciler.stop)
    ctx.state["external_dns"] = {"interval": interval, "owners": list(ctx.clusters)}
