"""The tune tests share one Prometheus, backfilled once per session with dataset.build()."""

from __future__ import annotations

import pytest

from tests.integration.prom_fixture import prometheus  # noqa: F401  (the session fixture)
from tests.integration.tune import dataset


@pytest.fixture(scope="session")
def prom_openmetrics() -> str:
    """The OpenMetrics text the session's Prometheus serves."""
    return dataset.build()
