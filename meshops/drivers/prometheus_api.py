"""What steps may ask of Prometheus: the ``PrometheusApi`` protocol, samples and its errors.

``PrometheusClient`` (prometheus.py) implements it over HTTP, ``FakePrometheus``
(prometheus_fake.py) from planned answers. Steps import this module only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from meshops.domain.errors import DriverError


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector (or a scalar, with empty labels) at one instant."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: (unix seconds, value) points in ascending time."""

    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]


class BadQuery(DriverError):
    """Prometheus rejected the expression (``bad_data``) or could not execute it (``execution``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=False)


class NoData(DriverError):
    """The query was valid but matched no series."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, temporary=False, hint=hint)


class PrometheusApi(Protocol):
    """What meshops asks of Prometheus. ``FakePrometheus`` (prometheus_fake.py) implements it."""

    url: str
    queries: int

    def query(self, expr: str, *, at: float | None = None, allow_empty: bool = False) -> list[Sample]: ...

    def query_range(self, expr: str, *, start: float, end: float, step: float,
                    allow_empty: bool = False) -> list[RangeSeries]: ...

    def ready(self) -> bool: ...


def finite(samples: Sequence[Sample]) -> list[Sample]:
    """The samples whose value is a real number (Prometheus answers NaN and ±Inf in edge cases)."""
    return [s for s in samples if math.isfinite(s.value)]
