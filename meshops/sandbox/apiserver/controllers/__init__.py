"""The simulated controller-manager and kubelet."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Controller
from .batch import CronJobController, JobController
from .daemonset import DaemonSetController
from .deployment import DeploymentController
from .disruption import DisruptionController
from .kubelet import Kubelet
from .lifecycle import CrdController, GarbageCollector, NamespaceController
from .replicaset import ReplicaSetController
from .service import ServiceController
from .statefulset import StatefulSetController

if TYPE_CHECKING:
    from .host import ControllerHost


def default_controllers(cluster: ControllerHost) -> list[Controller]:
    return [
        Kubelet(cluster),
        NamespaceController(cluster),
        GarbageCollector(cluster),
        CrdController(cluster),
        DeploymentController(cluster),
        ReplicaSetController(cluster),
        StatefulSetController(cluster),
        DaemonSetController(cluster),
        JobController(cluster),
        CronJobController(cluster),
        ServiceController(cluster),
        DisruptionController(cluster),
    ]
