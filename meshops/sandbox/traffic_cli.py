"""``meshops sandbox traffic``: live synthetic traffic to the sandbox's record (see traffic.py)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from meshops.sandbox.traffic import (
    MAX_RATE,
    MAX_SECONDS,
    Answerer,
    HealthCheckers,
    LoadGenerator,
    sandbox_ingresses,
)


def generator_for(directory: Path, *, rate: float, duration: float, path: str, clients: int,
                  check_interval: float | None, record: str | None = None, seed: int | None = None) -> LoadGenerator:
    """A LoadGenerator for the sandbox in ``directory``: its moto Route53, its record, its ingresses."""
    import random

    import boto3

    from meshops.sandbox.route53 import DUMMY_KEY, DUMMY_REGION  # here: `meshops sandbox --help` stays light

    facts = json.loads((directory / "sandbox.json").read_text())
    r53: dict[str, Any] = facts.get("route53") or {}
    if not r53.get("endpoint"):
        raise click.ClickException(f"the sandbox in {directory} has no Route53")
    client = boto3.client("route53", endpoint_url=r53["endpoint"], region_name=DUMMY_REGION,
                          aws_access_key_id=DUMMY_KEY, aws_secret_access_key=DUMMY_KEY)
    ingresses = sandbox_ingresses(directory)
    name = record or str(r53["record"])
    answerer = Answerer(client, str(r53["zone_id"]), name, HealthCheckers(client, ingresses, check_interval=check_interval),
                        rng=random.Random(seed))
    return LoadGenerator(answerer, ingresses, rate=rate, host=name.rstrip("."), path=path, clients=clients,
                         max_seconds=duration)


@click.command("traffic")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--rate", type=click.FloatRange(min=0.1, max=MAX_RATE), default=20.0, show_default=True,
              help="Requests per second.")
@click.option("--duration", type=click.FloatRange(min=1, max=MAX_SECONDS), default=60.0, show_default=True,
              help="Seconds to run (SIGINT stops sooner).")
@click.option("--path", default="/productpage", show_default=True, help="Path requested on the record's host.")
@click.option("--record", default=None, help="Record to resolve (default: the sandbox's).")
@click.option("--clients", type=click.IntRange(min=1, max=10000), default=100, show_default=True,
              help="Simulated clients, each caching its answer for the record's TTL.")
@click.option("--check-interval", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between health checker requests (default: each check's RequestInterval).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON lines {ts, cluster, ok, failed} per second (default DIR/traffic.jsonl), rewritten each second.")
def traffic_command(directory: Path, rate: float, duration: float, path: str, record: str | None, clients: int,
                    check_interval: float | None, out: Path | None) -> None:
    """Requests at a fixed rate to the record, resolved by Route53's answer rules; counts per cluster."""
    out = out or directory / "traffic.jsonl"
    gen = generator_for(directory, rate=rate, duration=duration, path=path, clients=clients,
                        check_interval=check_interval, record=record)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    gen.start()
    ends = time.monotonic() + duration
    while not stop.wait(1.0) and time.monotonic() < ends:
        gen.write(out)
    gen.stop()
    gen.write(out)
    totals = gen.counts.total()
    click.echo(" ".join(f"{c}: {v[0]} ok, {v[1]} failed" for c, v in sorted(totals.items())) or "no requests")
