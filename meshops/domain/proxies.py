"""Reading Istio proxies right: image references, the sidecar of a pod, istioctl's version and
proxy-status output, for every supported Istio (1.22-1.27).

Pure parsing, no I/O. Facts (../shared/reference/istio-reality.md):
- §5: an injected pod carries annotation ``istio.io/rev`` (the real istiod revision, never a tag)
  and ``sidecar.istio.io/status`` whose ``revision`` key says the same; the pod *label*
  ``istio.io/rev`` only exists if the template has it (istiod, gateways). istioctl reads a pod's
  revision as label first, then the status annotation (pkg/kube/client.go revisionOfPod).
- §5: the proxy image is ``<hub>/<image>:<tag>[-<variant>]`` with variant ``distroless`` or
  ``debug``; a ``proxy.image`` containing ``/`` is used verbatim and may be ``@sha256:`` pinned;
  the digest that actually runs is ``containerStatuses[].imageID``.
- §5: native sidecars (1.27 ``auto``, or by annotation) put ``istio-proxy`` in ``initContainers``
  with ``restartPolicy: Always``.
- §4: ``istioctl version -o json`` uses capitalised keys in ``meshVersion`` / ``dataPlaneVersion``;
  ``proxy-status`` columns changed in 1.27 (``NAME CLUSTER ISTIOD VERSION SUBSCRIBED TYPES``) and
  cells read ``SYNCED (5m)`` from 1.23.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROXY_CONTAINER = "istio-proxy"
STATUS_ANNOTATION = "sidecar.istio.io/status"
REV_KEY = "istio.io/rev"
VARIANTS = ("distroless", "debug")
_VERSION_RE = re.compile(r"^v?1\.\d+\.\d+(?:-(?:alpha|beta|rc)[0-9.]*)?$")


@dataclass(frozen=True, kw_only=True)
class ImageRef:
    """``docker.io/istio/proxyv2:1.24.1-distroless@sha256:ab..`` taken apart."""

    repository: str  # everything before the tag/digest: docker.io/istio/proxyv2
    name: str  # the last path part: proxyv2
    tag: str  # as written: 1.24.1-distroless ("" if none)
    version: str  # the tag without a variant suffix when it is an Istio version, else ""
    variant: str  # distroless | debug | ""
    digest: str  # sha256:... ("" if not pinned)

    @property
    def hub(self) -> str:
        return self.repository.rsplit("/", 1)[0] if "/" in self.repository else ""


def parse_image(image: str) -> ImageRef:
    """Split an image reference; a registry port (``host:5000/x``) is not mistaken for a tag."""
    text = image.strip()
    ref, _, digest = text.partition("@")
    last_slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > last_slash:
        repository, tag = ref[:colon], ref[colon + 1:]
    else:
        repository, tag = ref, ""
    variant = ""
    bare = tag
    for v in VARIANTS:
        if tag.endswith(f"-{v}"):
            variant, bare = v, tag[: -len(v) - 1]
            break
    version = bare.lstrip("v") if _VERSION_RE.match(bare) else ""
    return ImageRef(repository=repository, name=repository.rsplit("/", 1)[-1], tag=tag, version=version,
                    variant=variant, digest=digest)


def image_version(image: str) -> str:
    """The Istio version an image runs: '1.24.1' for proxyv2:1.24.1, :1.24.1-distroless and
    :1.24.1-debug@sha256:..; '' when the reference does not say (digest only, 'auto', 'latest')."""
    return parse_image(image).version


def _image_id_digest(image_id: str) -> str:
    """``docker-pullable://docker.io/istio/proxyv2@sha256:ab`` -> ``sha256:ab``."""
    _, _, digest = image_id.rpartition("@")
    return digest if digest.startswith("sha256:") else ""


@dataclass(frozen=True, kw_only=True)
class Sidecar:
    """The istio-proxy of a pod (or pod template), wherever it sits."""

    image: ImageRef
    native: bool  # in initContainers with restartPolicy Always (native sidecar)
    injected: bool  # has the injection status annotation (not an istioctl-rendered gateway)
    revision: str  # the istiod revision serving it, "default" for the unrevisioned one
    running_digest: str  # from the container status' imageID ("" until it runs)

    @property
    def version(self) -> str:
        return self.image.version


def find_proxy_container(pod_spec: Mapping[str, Any]) -> tuple[dict[str, Any], bool] | None:
    """The ``istio-proxy`` container and whether it is a native sidecar (in initContainers)."""
    for c in pod_spec.get("containers") or []:
        if c.get("name") == PROXY_CONTAINER:
            return dict(c), False
    for c in pod_spec.get("initContainers") or []:
        # A plain init container named istio-proxy would not outlive init; only restartPolicy
        # Always makes it the sidecar (KEP-753, reference §5).
        if c.get("name") == PROXY_CONTAINER and c.get("restartPolicy") == "Always":
            return dict(c), True
    return None


def injection_revision(annotations: Mapping[str, str]) -> str | None:
    """The revision that injected a pod: the status annotation's ``revision``, else the
    ``istio.io/rev`` annotation; None if the pod was not injected."""
    raw = annotations.get(STATUS_ANNOTATION)
    if not raw:
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        status = None
    rev = status.get("revision") if isinstance(status, dict) else None
    return str(rev or annotations.get(REV_KEY) or "default")


def sidecar_of(pod: Mapping[str, Any]) -> Sidecar | None:
    """The proxy of a pod object, or None when it has none."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    found = find_proxy_container(pod.get("spec") or {})
    if found is None:
        return None
    container, native = found
    injected_by = injection_revision(annotations)
    # Label first, then the injection status: istioctl's own order (revisionOfPod).
    revision = str(labels.get(REV_KEY) or injected_by or annotations.get(REV_KEY) or "default")
    status = pod.get("status") or {}
    statuses = [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]
    digest = next((_image_id_digest(str(s.get("imageID") or "")) for s in statuses
                   if s.get("name") == PROXY_CONTAINER), "")
    return Sidecar(image=parse_image(str(container.get("image", ""))), native=native,
                   injected=injected_by is not None, revision=revision, running_digest=digest)


# ---- istioctl version -o json ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ControlPlaneVersion:
    component: str  # the pod's `istio` label: pilot (default revision) or istiod (revisioned)
    revision: str
    version: str


@dataclass(frozen=True, kw_only=True)
class VersionReport:
    client: str
    control_planes: tuple[ControlPlaneVersion, ...]
    data_plane: dict[str, str]  # proxy ID -> IstioVersion

    def revisions(self) -> dict[str, str]:
        return {c.revision: c.version for c in self.control_planes}


def _get(d: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present: istioctl writes ``Component``/``Info`` capitalised but tools
    that re-emit its JSON lower-case them."""
    for k in keys:
        if k in d:
            return d[k]
    return None


def parse_version_json(text: str) -> VersionReport:
    """``istioctl version -o json``. Raises ValueError when it is not that document. An empty
    ``meshVersion`` is valid: istioctl prints no control plane and still exits 0 (§4)."""
    data = json.loads(text)
    if not isinstance(data, dict) or "clientVersion" not in data:
        raise ValueError("not the output of istioctl version -o json (no clientVersion)")
    client = str((data.get("clientVersion") or {}).get("version") or "")
    planes = []
    for entry in data.get("meshVersion") or []:
        info = _get(entry, "Info", "info") or {}
        planes.append(ControlPlaneVersion(component=str(_get(entry, "Component", "component") or ""),
                                          revision=str(_get(entry, "Revision", "revision") or "default"),
                                          version=str(_get(info, "version", "Version") or "")))
    proxies = {str(_get(p, "ID", "id") or ""): str(_get(p, "IstioVersion", "istio_version") or "")
               for p in data.get("dataPlaneVersion") or []}
    return VersionReport(client=client, control_planes=tuple(planes), data_plane=proxies)


# ---- istioctl proxy-status ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProxyStatus:
    name: str  # pod.namespace
    cluster: str
    istiod: str  # the istiod *pod* name
    version: str  # the proxy's own ISTIO_VERSION
    sync: dict[str, str]  # xDS type -> SYNCED | STALE | NOT SENT | IGNORED (1.22-1.26 or 1.27 -v)

    @property
    def pod(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def namespace(self) -> str:
        return self.name.rsplit(".", 1)[1] if "." in self.name else ""

    @property
    def stale(self) -> list[str]:
        return sorted(t for t, s in self.sync.items() if s not in ("SYNCED", "IGNORED", "NOT SENT", ""))


_SYNC_COLUMNS = ("CDS", "LDS", "EDS", "RDS", "ECDS")
# A header column: words joined by single spaces ("SUBSCRIBED TYPES"), columns by two or more.
_HEADER_CELL = re.compile(r"\S+(?: \S+)*")


def parse_proxy_status(text: str) -> list[ProxyStatus]:
    """Every row of ``istioctl proxy-status`` by column *name* (tabwriter aligns cells under the
    header, so the header's offsets cut each row). Works for the 1.22 layout, the 1.23+ ``SYNCED
    (5m)`` cells and the 1.27 ``SUBSCRIBED TYPES`` layout. Raises ValueError without a header."""
    lines = [line for line in text.splitlines() if line.strip()]
    header_at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("NAME")), None)
    if header_at is None:
        raise ValueError("no NAME header in the proxy-status output")
    header = lines[header_at]
    cells = [(m.start(), m.group(0)) for m in _HEADER_CELL.finditer(header)]
    names = [n for _, n in cells]
    for needed in ("NAME", "ISTIOD", "VERSION"):
        if needed not in names:
            raise ValueError(f"proxy-status header has no {needed} column: {header.strip()!r}")
    out = []
    for line in lines[header_at + 1:]:
        row: dict[str, str] = {}
        for i, (start, name) in enumerate(cells):
            end = cells[i + 1][0] if i + 1 < len(cells) else len(line)
            row[name] = line[start:end].strip() if start < len(line) else ""
        sync = {col: re.sub(r"\s*\(.*\)$", "", row[col]) for col in _SYNC_COLUMNS if col in row}
        out.append(ProxyStatus(name=row["NAME"], cluster=row.get("CLUSTER", ""), istiod=row["ISTIOD"],
                               version=row["VERSION"], sync=sync))
    return out
