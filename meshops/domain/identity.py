"""Which cluster a context really is, for ``--protect`` guards.

A context name is whatever the kubeconfig says. EKS names its contexts after the cluster ARN
(``arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu``) and GKE after
``gke_<project>_<zone>_<cluster>``, so a pattern like ``prod*`` must also be tried against the
cluster name inside those, and against the API server URL.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

_EKS_ARN = re.compile(r"^arn:aws[a-z-]*:eks:[a-z0-9-]+:\d+:cluster/(?P<name>[^/]+)$")
# gke_<project>_<zone or region>_<cluster>; project ids have no underscores, cluster names may.
_GKE = re.compile(r"^gke_(?P<project>[^_]+)_(?P<zone>[^_]+)_(?P<name>.+)$")


def identities(context: str, server: str = "") -> list[str]:
    """Every name a pattern may match: the context, the cluster name inside it, the server URL
    (and its host)."""
    out = [context]
    if (m := _EKS_ARN.match(context)) is not None:
        out.append(m.group("name"))
    elif (m := _GKE.match(context)) is not None:
        out += [m.group("name"), m.group("project")]
    if server:
        out.append(server)
        host = re.sub(r"^[a-z]+://", "", server).split("/", 1)[0].split(":", 1)[0]
        if host and host != server:
            out.append(host)
    return out


def protected_by(patterns: Iterable[str], context: str, server: str = "") -> list[str]:
    """The patterns that match this cluster (case-insensitively), as ``pattern (name)``."""
    names = identities(context, server)
    out = []
    for p in patterns:
        hit = next((n for n in names if fnmatch.fnmatch(n.lower(), p.lower())), None)
        if hit is not None:
            out.append(p if hit == context else f"{p} ({hit})")
    return out
