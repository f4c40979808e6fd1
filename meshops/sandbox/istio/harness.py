"""An in-process sandbox for tests: clusters plus the Istio extension, without `sandbox up`.

It runs the same `IstioSandbox` the extension runs, writes a kubeconfig and DIR/bin, and
runs the istioctl programs as subprocesses with the environment DIR/env would give:

    with MeshHarness(tmp_path, ["blue"], {"istio": "1.25.0"}) as mesh:
        result = mesh.istioctl("1.25.0", "proxy-status")
        mesh.cluster("blue").store.list(...)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from meshops.sandbox.istio.setup import IstioSandbox


class MeshHarness:
    def __init__(self, directory: Path, clusters: list[str], options: dict[str, Any] | None = None,
                 *, rollout_seconds: float = 0.02, k8s_version: str = "1.30.4") -> None:
        self.dir = Path(directory)
        self.names = clusters
        self.options = options or {}
        self.rollout_seconds = rollout_seconds
        self.k8s_version = k8s_version
        self.clusters: dict[str, Any] = {}
        self.sandbox: IstioSandbox | None = None

    def __enter__(self) -> MeshHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> MeshHarness:
        from meshops.sandbox.apiserver import Cluster
        from meshops.sandbox.runtime import new_token

        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = new_token()  # required by the API servers, as `sandbox up` does
        for name in self.names:
            self.clusters[name] = Cluster(name, rollout_seconds=self.rollout_seconds, k8s_version=self.k8s_version,
                                          audit_path=self.dir / f"audit-{name}.jsonl", token=self.token,
                                          tls_dir=self.dir / "pki").start()
        self.kubeconfig.write_text(self._kubeconfig())
        self.sandbox = IstioSandbox(self.dir, self.clusters, self.options)
        try:
            self.sandbox.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
        for c in self.clusters.values():
            c.stop()

    def cluster(self, name: str) -> Any:
        return self.clusters[name]

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def _kubeconfig(self) -> str:
        import yaml

        from meshops.sandbox.runtime import kubeconfig_document

        doc = kubeconfig_document({n: c.url for n, c in self.clusters.items()}, token=self.token,
                                  ca={n: c.serving.ca_pem for n, c in self.clusters.items() if c.serving})
        return yaml.safe_dump(doc, sort_keys=False)

    @property
    def env(self) -> dict[str, str]:
        """The process environment DIR/env would give (PATH with DIR/bin first, KUBECONFIG, ...)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MESHOPS_SANDBOX_"))}
        assert self.sandbox is not None
        for key, value in self.sandbox.env.items():
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def istioctl(self, version: str | None, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `istioctl-<version>` (or plain `istioctl` when version is None) from DIR/bin."""
        program = self.dir / "bin" / ("istioctl" if version is None else f"istioctl-{version}")
        return subprocess.run([str(program), *args], env=self.env, capture_output=True, text=True,
                              input=stdin, timeout=timeout, check=False)
