"""What the controllers need from the cluster they run in (``Cluster`` fulfils it).

Controllers sit above the store and the verbs and below the cluster that builds them, so
they name the cluster's parts they use here instead of importing ``Cluster``.
"""

from __future__ import annotations

from typing import Protocol

from ..api import ResourceApi
from ..kinds import ResourceTypes
from ..plugins import ReadinessGate
from ..store import Store


class ControllerHost(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def k8s_version(self) -> str: ...
    @property
    def store(self) -> Store: ...
    @property
    def api(self) -> ResourceApi: ...
    @property
    def types(self) -> ResourceTypes: ...
    @property
    def readiness_gates(self) -> list[ReadinessGate]: ...
    @property
    def rollout_seconds(self) -> float: ...
    @property
    def cron_minute_seconds(self) -> float: ...
