"""Fixtures for the sandbox API server tests: an in-process cluster, real clients, real kubectl."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from meshops.sandbox.apiserver import Cluster
from meshops.sandbox.runtime import write_kubeconfig

SDK_BIN = Path("/usr/lib/google-cloud-sdk/bin")
# Where .ci/get-kubectl.sh puts Debian's kubectl 1.20 by default.
KUBECTL_120_DEFAULT = Path.home() / ".cache" / "meshops" / "kubectl-1.20" / "usr" / "bin" / "kubectl"
KUBECTL_VERSIONS = ("1.33", "1.20")


def kubectl_binary(version: str) -> Path:
    """The kubectl for ``version``; a missing one fails the test (never skips it)."""
    if version == "1.20":
        path = Path(os.environ.get("MESHOPS_KUBECTL_120", str(KUBECTL_120_DEFAULT)))
        hint = "run .ci/get-kubectl.sh (or set MESHOPS_KUBECTL_120)"
    else:
        path = SDK_BIN / f"kubectl.{version}"
        hint = "install google-cloud-cli's kubectl builds"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"kubectl {version} not found at {path}: {hint}")
    return path


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster("test", rollout_seconds=0.02, bookmark_interval=0.3, cron_minute_seconds=0.5).start()
    yield c
    c.stop()


@pytest.fixture
def kubeconfig(cluster: Cluster, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, {"test": cluster.url})
    return path


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(kubeconfig))
    yield api
    api.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def wait() -> Callable[..., Any]:
    """wait(predicate, timeout=5) -> the first truthy value of predicate(), or fail."""

    def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.01)
        pytest.fail(f"timed out after {timeout}s waiting for {message} (last: {last!r})")

    return wait_for


@dataclass
class Kubectl:
    binary: Path
    version: str
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {self.version} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


def make_kubectl(version: str, kubeconfig: Path, home: Path) -> Kubectl:
    home.mkdir(parents=True, exist_ok=True)  # a private HOME: kubectl's discovery cache per test
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    return Kubectl(binary=kubectl_binary(version), version=version, env=env)


@pytest.fixture(params=KUBECTL_VERSIONS)
def kubectl(request: pytest.FixtureRequest, kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return make_kubectl(request.param, kubeconfig, tmp_path / f"home-{request.param}")


@pytest.fixture
def kubectl_for(kubeconfig: Path, tmp_path: Path) -> Callable[[str], Kubectl]:
    """kubectl_for("1.29") -> that kubectl, against the test's cluster."""
    return lambda version: make_kubectl(version, kubeconfig, tmp_path / f"home-{version}")


def deployment_manifest(name: str, replicas: int = 2, image: str = "app:1", **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080, "name": "http"}]}]},
            },
        },
    }
    body["spec"].update(spec)
    return body


@pytest.fixture
def manifest() -> Callable[..., dict[str, Any]]:
    return deployment_manifest
