"""The recommendation math of meshops.domain.tuning, against hand-computed values."""

from __future__ import annotations

import pytest

from meshops.domain import tuning
from meshops.domain.tuning import MIB, NotEnoughData, Policy, Recommendation, Resources, Usage


def usage(cpu: float, mem_mib: float, *, cpu_l: float | None = None, mem_l: float | None = None,
          n: int = 200) -> Usage:
    return Usage(cpu_p=cpu, cpu_lp=cpu if cpu_l is None else cpu_l, cpu_samples=n,
                 memory_p=mem_mib * MIB, memory_lp=(mem_mib if mem_l is None else mem_l) * MIB, memory_samples=n)


def test_request_is_percentile_times_margin_rounded_up() -> None:
    """p95 0.114 cores x 1.15 = 131.1m -> 132m; 177.05 MiB x 1.15 = 203.6 -> 204Mi."""
    rec = tuning.recommend(usage(0.11405, 177.05, cpu_l=0.11881, mem_l=181.81), "sidecar", Policy())
    assert isinstance(rec, Recommendation)
    assert rec.resources == Resources(cpu_request_m=132, cpu_limit_m=155, memory_request_mi=204, memory_limit_mi=237)


def test_float_noise_does_not_round_up_a_whole_millicore() -> None:
    """0.3 x 1.15 is 0.34500000000000003 in floating point: still 345m, not 346m."""
    rec = tuning.recommend(usage(0.3, 80), "gateway", Policy())
    assert isinstance(rec, Recommendation)
    assert rec.resources.cpu_request_m == 345
    assert rec.resources.memory_request_mi == 92


def test_floor_lifts_tiny_usage() -> None:
    """A sidecar using 1m CPU and 5 MiB gets the 10m / 32Mi floor, for requests and limits."""
    rec = tuning.recommend(usage(0.001, 5), "sidecar", Policy())
    assert isinstance(rec, Recommendation)
    assert rec.resources == Resources(cpu_request_m=10, cpu_limit_m=10, memory_request_mi=32, memory_limit_mi=32)
    assert rec.capped == ()


def test_cap_bounds_and_is_reported() -> None:
    """3 cores of usage is capped at the sidecar's 2000m, and the cap is named."""
    rec = tuning.recommend(usage(3.0, 100), "sidecar", Policy())
    assert isinstance(rec, Recommendation)
    assert rec.resources.cpu_request_m == 2000
    assert "cpu request" in rec.capped and "cpu limit" in rec.capped


def test_limit_never_below_request() -> None:
    """With no headroom and a flat series, the limit equals the request, never less."""
    policy = Policy(cpu_margin=0.5, limit_headroom=0.0)
    rec = tuning.recommend(usage(0.1, 100), "sidecar", policy)
    assert isinstance(rec, Recommendation)
    assert rec.resources.cpu_limit_m == rec.resources.cpu_request_m == 150


def test_below_min_samples_is_not_enough_data() -> None:
    """99 samples with a minimum of 100 gives no number at all, and says why."""
    rec = tuning.recommend(usage(0.1, 100, n=99), "sidecar", Policy())
    assert isinstance(rec, NotEnoughData)
    assert "cpu: 99 samples < 100" in rec.reason and "memory: 99 samples < 100" in rec.reason


def test_missing_series_is_not_enough_data() -> None:
    """CPU without any memory series is not a recommendation."""
    rec = tuning.recommend(Usage(cpu_p=0.1, cpu_lp=0.1, cpu_samples=500), "sidecar", Policy())
    assert isinstance(rec, NotEnoughData)
    assert rec.reason == "not enough data (no memory series)"


def test_nan_usage_is_not_a_number() -> None:
    """A NaN percentile never becomes a recommendation."""
    u = Usage(cpu_p=float("nan"), cpu_lp=0.1, cpu_samples=500, memory_p=MIB, memory_lp=MIB, memory_samples=500)
    rec = tuning.recommend(u, "sidecar", Policy())
    assert isinstance(rec, NotEnoughData)
    assert "not a finite number" in rec.reason


def test_quantile_interpolates_like_promql() -> None:
    """quantile(0.95) of 1..120 is rank 113.05: 114 + 0.05 = 114.05."""
    assert tuning.quantile([float(i) for i in range(1, 121)], 0.95) == pytest.approx(114.05)
    assert tuning.quantile([5.0], 0.5) == 5.0


def test_nearest_rank_picks_an_observed_value() -> None:
    """The median of 5 values is the 3rd; p90 of 5 values is the 5th."""
    values = [23.0, 29.0, 35.0, 132.0, 575.0]
    assert tuning.nearest_rank(values, 0.5) == 35.0
    assert tuning.nearest_rank(values, 0.9) == 575.0


def test_proxy_default_and_outliers() -> None:
    """Median requests, p90 limits; outliers are beyond 30% of the default or above its limits."""
    recs = {
        "web": Resources(cpu_request_m=23, cpu_limit_m=26, memory_request_mi=46, memory_limit_mi=52),
        "ledger": Resources(cpu_request_m=29, cpu_limit_m=33, memory_request_mi=52, memory_limit_mi=59),
        "api": Resources(cpu_request_m=35, cpu_limit_m=39, memory_request_mi=58, memory_limit_mi=65),
        "cart": Resources(cpu_request_m=132, cpu_limit_m=155, memory_request_mi=204, memory_limit_mi=237),
        "batch": Resources(cpu_request_m=575, cpu_limit_m=650, memory_request_mi=460, memory_limit_mi=520),
    }
    policy = Policy()
    default = tuning.proxy_default(list(recs.values()), policy)
    assert default == Resources(cpu_request_m=35, cpu_limit_m=650, memory_request_mi=58, memory_limit_mi=520)
    outliers = {name for name, r in recs.items() if tuning.is_outlier(r, default, policy)}
    assert outliers == {"web", "cart", "batch"}  # web: |23-35| = 12 > 10.5


def test_proxy_default_of_nothing_is_none() -> None:
    """No sidecar with enough data: no global default is invented."""
    assert tuning.proxy_default([], Policy()) is None


def test_assess_saving_and_risk() -> None:
    """Over-provisioned: the saving times pods; usage above the request or limit: a risk."""
    rec = Resources(cpu_request_m=23, cpu_limit_m=26, memory_request_mi=46, memory_limit_mi=52)
    current = Resources(cpu_request_m=100, cpu_limit_m=2000, memory_request_mi=128, memory_limit_mi=1024)
    v = tuning.assess(current, rec, usage(0.02, 40), pods=3)
    assert (v.kind, v.cpu_saving_m, v.memory_saving_mi) == ("saving", 231, 246)
    tight = Resources(cpu_request_m=100, cpu_limit_m=2000, memory_request_mi=128, memory_limit_mi=256)
    risk = tuning.assess(tight, rec, usage(0.5, 400), pods=1)
    assert risk.kind == "risk"
    assert "cpu p-usage 500m > request 100m" in risk.text and "memory peak 400Mi > limit 256Mi (OOM)" in risk.text


def test_assess_unknown_current() -> None:
    """Without kube-state-metrics there is no claim of a saving."""
    rec = Resources(cpu_request_m=23, cpu_limit_m=26, memory_request_mi=46, memory_limit_mi=52)
    v = tuning.assess(Resources(), rec, usage(0.02, 40), pods=1)
    assert (v.kind, v.cpu_saving_m) == ("unknown", 0)


@pytest.mark.parametrize(("pod", "workload"), [
    ("cart-7d9f8c6b5-bcdfg", "cart"),
    ("log-shipper-x7k2p", "log-shipper"),  # a DaemonSet pod
    ("ledger-0", "ledger"),  # a StatefulSet pod
    ("istiod-1-24-1-5d8f7c9b6-kzx4t", "istiod-1-24-1"),
    ("my-app-agent", "my-app-agent"),  # vowels: a word, not a generated suffix
])
def test_workload_of(pod: str, workload: str) -> None:
    """Generated pod-name suffixes (no vowels) are stripped; words are kept."""
    assert tuning.workload_of(pod) == workload


@pytest.mark.parametrize(("text", "cores"), [("250m", 0.25), ("0.5", 0.5), ("2", 2.0)])
def test_parse_cpu(text: str, cores: float) -> None:
    """CPU quantities in cores."""
    assert tuning.parse_cpu(text) == cores


@pytest.mark.parametrize(("text", "nbytes"), [("128Mi", 128 * MIB), ("1Gi", 1024 * MIB), ("500M", 5e8), ("42", 42)])
def test_parse_memory(text: str, nbytes: float) -> None:
    """Memory quantities in bytes."""
    assert tuning.parse_memory(text) == nbytes


def test_bad_quantities_are_refused() -> None:
    """'lots' is neither CPU nor memory."""
    with pytest.raises(ValueError, match="not a CPU quantity"):
        tuning.parse_cpu("lots")
    with pytest.raises(ValueError, match="not a memory quantity"):
        tuning.parse_memory("12 GB")


def test_policy_rejects_limit_percentile_below_request_percentile() -> None:
    """Limits come from a higher percentile than requests."""
    with pytest.raises(ValueError, match="limit percentile"):
        Policy(percentile=95, limit_percentile=90)
