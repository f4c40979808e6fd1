"""A Route53 endpoint for the sandbox: moto's server on 127.0.0.1, seeded with the app's record.

meshops reaches it exactly as it reaches AWS: boto3 or the aws CLI with the endpoint, dummy
credentials and region exported in DIR/env. moto is lax (see the reference: no atomic
batches, no weight range checks, a fake change status); nothing here papers over that, and
meshops must not rely on it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ZONE = "example.com."
DEFAULT_RECORD = "app.example.com"
DEFAULT_TTL = 60
DUMMY_REGION = "us-east-1"
DUMMY_KEY = "testing"


@dataclass
class Route53Sandbox:
    zone: str = DEFAULT_ZONE
    record: str = DEFAULT_RECORD
    ttl: int = DEFAULT_TTL
    endpoint: str = ""
    zone_id: str = ""
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        """Start moto in a thread of this process and return its URL."""
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO to stderr; the sandbox log does not need them.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "route53",
            endpoint_url=self.endpoint,
            region_name=DUMMY_REGION,
            aws_access_key_id=DUMMY_KEY,
            aws_secret_access_key=DUMMY_KEY,
        )

    def seed(self, target_hostname: str) -> str:
        """Create the hosted zone and a simple CNAME `record` -> `target_hostname`; returns the zone id."""
        r53 = self.client()
        zone_name = self.zone if self.zone.endswith(".") else self.zone + "."
        existing = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == zone_name]
        if existing:
            self.zone_id = existing[0]["Id"].split("/")[-1]
        else:
            created = r53.create_hosted_zone(Name=zone_name, CallerReference=str(uuid.uuid4()))
            self.zone_id = created["HostedZone"]["Id"].split("/")[-1]
        record = self.record if self.record.endswith(".") else self.record + "."
        r53.change_resource_record_sets(
            HostedZoneId=self.zone_id,
            ChangeBatch={
                "Comment": "meshops sandbox: the app record starts on the first cluster",
                "Changes": [{
                    "Action": "UPSERT",
                    "ResourceRecordSet": {"Name": record, "Type": "CNAME", "TTL": self.ttl,
                                          "ResourceRecords": [{"Value": target_hostname}]},
                }],
            },
        )
        return self.zone_id

    def env(self) -> dict[str, str]:
        """What boto3 and the aws CLI need (AWS_ENDPOINT_URL_ROUTE_53 is the service-specific override)."""
        return {
            "AWS_ENDPOINT_URL_ROUTE_53": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": DUMMY_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
            "AWS_DEFAULT_REGION": DUMMY_REGION,
            "MESHOPS_SANDBOX_HOSTED_ZONE_ID": self.zone_id,
            "MESHOPS_SANDBOX_RECORD": self.record.rstrip("."),
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
