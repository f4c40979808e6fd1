"""Which cluster to talk to: a kubeconfig (and context), or the Pod's ServiceAccount inside a cluster.

The errors here are the common first-run mistakes, so each says what was tried and what
would work: the kubeconfig paths looked at, the contexts that do exist.

Inside a cluster (a CronJob, say) there is no kubeconfig; the client falls back to the
ServiceAccount as kubectl and client-go do (KUBERNETES_SERVICE_HOST/PORT and the projected
token under /var/run/secrets/kubernetes.io/serviceaccount). The Python client's in-cluster
loader re-reads that token file about once a minute (``try_refresh_token``), so kubelet's
token rotation (about hourly for projected tokens) is followed. A kubeconfig ``tokenFile``
is read only once by the same client, which is why the in-cluster path is preferred there.
"""

from __future__ import annotations

import os
from typing import Any

from meshops.domain.errors import BadInput

# Where kubelet mounts the Pod's ServiceAccount (token, ca.crt).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IN_CLUSTER = "in-cluster"


def kubeconfig_paths(explicit: str | None) -> list[str]:
    """The files the client would read: --kubeconfig, else $KUBECONFIG's list, else ~/.kube/config."""
    if explicit:
        return [p for p in explicit.split(os.pathsep) if p]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [os.path.expanduser("~/.kube/config")]


def in_cluster_available() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(os.path.join(SERVICE_ACCOUNT_DIR, "token"))


def _configuration() -> Any:
    """A fresh client Configuration whose urllib3 layer never retries on its own.

    urllib3 would otherwise sleep out any Retry-After itself, unbounded, before we see the 429:
    retrying (and its cap) is KubeClient's job alone."""
    from kubernetes.client import Configuration
    from urllib3.util.retry import Retry

    conf = type.__call__(Configuration)  # not Configuration(): that copies the process-wide default
    conf.retries = Retry(total=0, respect_retry_after_header=False, raise_on_status=False)
    return conf


def load_api_client(kubeconfig: str | None, context: str | None) -> tuple[Any, str]:
    """An ApiClient and the name of the context it talks to (``in-cluster`` for the ServiceAccount)."""
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    paths = kubeconfig_paths(kubeconfig)
    existing = [p for p in paths if os.path.isfile(p)]
    if not existing:
        if in_cluster_available() and context in (None, "", IN_CLUSTER):
            from kubernetes.config.incluster_config import InClusterConfigLoader

            conf = _configuration()
            # try_refresh_token: the token is re-read before it would go stale (kubelet rotates it).
            InClusterConfigLoader(token_filename=os.path.join(SERVICE_ACCOUNT_DIR, "token"),  # type: ignore[no-untyped-call]
                                  cert_filename=os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt"),
                                  try_refresh_token=True).load_and_set(conf)
            return kclient.ApiClient(conf), IN_CLUSTER
        raise BadInput(f"no kubeconfig found: tried {', '.join(paths)}",
                       hint="pass --kubeconfig PATH or set KUBECONFIG; inside a cluster, mount the Pod's "
                            f"ServiceAccount token ({SERVICE_ACCOUNT_DIR}/token was not there)")
    config_file = existing[0] if len(existing) == 1 else os.pathsep.join(existing)
    try:
        contexts, active = kconfig.list_kube_config_contexts(config_file=config_file)  # type: ignore[no-untyped-call]
    except Exception as exc:  # the loader raises ConfigException, ValueError, yaml errors...
        raise BadInput(f"cannot read kubeconfig {config_file}: {exc}") from None
    names = [c.get("name", "") for c in contexts or []]
    if context and context not in names:
        raise BadInput(f"context {context!r} is not in {config_file}; available: {', '.join(names) or 'none'}")
    if not context and not active:
        raise BadInput(f"{config_file} has no current-context; pass --context (available: {', '.join(names) or 'none'})")
    try:
        api = kconfig.new_client_from_config(config_file=config_file, context=context,  # type: ignore[no-untyped-call]
                                             persist_config=False, client_configuration=_configuration())
    except Exception as exc:
        raise BadInput(f"cannot load kubeconfig {config_file}{f' context {context!r}' if context else ''}: {exc}") from None
    return api, context or str((active or {}).get("name", ""))
