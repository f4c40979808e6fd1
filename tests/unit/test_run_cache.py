"""The mesh-snapshot memo belongs to the run (ops.context.RunCache), not to the process."""

from __future__ import annotations

from meshops.ops.context import RunCache
from meshops.steps.istio_discover import snapshot
from tests.support.canary_fixtures import FakeWorld


def test_run_cache_keeps_a_value_for_max_age() -> None:
    cache = RunCache()
    assert cache.get("k", now=0.0, max_age=10.0) is None
    cache.put("k", "v", now=100.0)
    assert cache.get("k", now=110.0, max_age=10.0) == "v"
    assert cache.get("k", now=110.1, max_age=10.0) is None
    assert cache.get("other", now=100.0, max_age=10.0) is None


def test_a_run_reuses_its_own_snapshot_and_no_other_run_sees_it() -> None:
    world = FakeWorld(apps=1)
    discover, check = world.ctx("discover"), world.ctx("check")
    check.cache = discover.cache  # the engine hands every step of a run the same cache
    first = snapshot(discover, world.kube)
    reads = world.kube.requests
    assert snapshot(check, world.kube, max_age=15.0) is first
    assert world.kube.requests == reads
    # Negative control: the old module-level memo (keyed by the client) served this from the
    # first run's read; a second run (its own cache) now reads the cluster afresh.
    other_run = world.ctx("check", run_id="run-2")
    assert snapshot(other_run, world.kube, max_age=15.0) is not first
    assert world.kube.requests > reads


def test_max_age_zero_always_reads_afresh() -> None:
    world = FakeWorld(apps=1)
    ctx = world.ctx("discover")
    first = snapshot(ctx, world.kube)
    assert snapshot(ctx, world.kube) is not first
