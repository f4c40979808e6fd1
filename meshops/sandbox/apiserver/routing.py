"""URL paths to API routes, and the request description handed to request filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .kinds import ResourceType, ResourceTypes


@dataclass(frozen=True, kw_only=True)
class RequestInfo:
    """What a request is about; request filters and the audit log read it.

    ``verb`` is the Kubernetes verb (get, list, watch, create, update, patch, delete,
    deletecollection) for resource requests, else the lower-case HTTP method.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    verb: str
    group: str | None = None
    version: str | None = None
    resource: str | None = None  # plural
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    resource_type: ResourceType | None = field(default=None, compare=False)

    @property
    def user_agent(self) -> str:
        return self.headers.get("user-agent", "")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def is_resource_request(self) -> bool:
        return self.resource is not None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(frozen=True, kw_only=True)
class ResourceRoute:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None
    resource_type: ResourceType | None  # None: the group/version/resource is not served


def parse_resource_path(parts: list[str], types: ResourceTypes) -> ResourceRoute | None:
    """``parts`` is the path split on "/" with the leading "api"/"apis" prefix still on."""
    if not parts:
        return None
    if parts[0] == "api":
        if len(parts) < 3:
            return None
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) < 4:
            return None
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # /namespaces/{ns}/{resource}... is namespaced; /namespaces and /namespaces/{name}[/sub] are
    # the Namespace resource itself.
    namespace_subresource = len(rest) == 3 and rest[2] in ("status", "finalize")
    if len(rest) >= 3 and rest[0] == "namespaces" and not namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if len(rest) > 3:
        return ResourceRoute(
            group=group, version=version, plural=plural, namespace=namespace, name=name,
            subresource="/".join(rest[2:]), resource_type=None,
        )
    return ResourceRoute(
        group=group,
        version=version,
        plural=plural,
        namespace=namespace,
        name=name,
        subresource=subresource,
        resource_type=types.lookup(group, version, plural),
    )


def resource_verb(method: str, route: ResourceRoute, query: dict[str, list[str]]) -> str:
    watch = (query.get("watch") or [""])[-1] in ("true", "1")
    if method == "GET":
        if route.name is None:
            return "watch" if watch else "list"
        return "watch" if watch else "get"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if route.name is not None else "deletecollection",
    }.get(method, method.lower())


def describe(
    method: str, path: str, query: dict[str, list[str]], headers: dict[str, Any], types: ResourceTypes
) -> tuple[RequestInfo, ResourceRoute | None]:
    parts = [p for p in path.split("/") if p]
    route = parse_resource_path(parts, types)
    lower_headers = {k.lower(): str(v) for k, v in headers.items()}
    if route is None:
        return RequestInfo(method=method, path=path, query=query, headers=lower_headers, verb=method.lower()), None
    info = RequestInfo(
        method=method,
        path=path,
        query=query,
        headers=lower_headers,
        verb=resource_verb(method, route, query),
        group=route.group,
        version=route.version,
        resource=route.plural,
        subresource=route.subresource,
        namespace=route.namespace,
        name=route.name,
        resource_type=route.resource_type,
    )
    return info, route
