"""What istiod's validating webhook checks on Istio objects, as a pure function.

Coverage is deliberately the part that upgrade tooling trips over: unknown fields (a typo in
a spec, or a field from a newer release) and the classic VirtualService mistakes (weights
that do not sum to 100, a route without a destination host). Kinds the sandbox does not
model in depth are checked only for unknown top-level spec fields.
"""

from __future__ import annotations

from typing import Any

# A schema is a dict of field -> sub-schema. ANY accepts any value; [schema] is a list of schema.
ANY: Any = None
MAP = ANY  # free-form string maps (labels, headers)

_STRING_MATCH = {"exact": ANY, "prefix": ANY, "regex": ANY}
_PORT_SELECTOR = {"number": ANY}
_DESTINATION = {"host": ANY, "subset": ANY, "port": _PORT_SELECTOR}
_HEADERS = {"request": {"set": MAP, "add": MAP, "remove": ANY}, "response": {"set": MAP, "add": MAP, "remove": ANY}}
_HTTP_MATCH = {
    "name": ANY, "uri": _STRING_MATCH, "scheme": _STRING_MATCH, "method": _STRING_MATCH,
    "authority": _STRING_MATCH, "headers": MAP, "port": ANY, "sourceLabels": MAP, "gateways": ANY,
    "queryParams": MAP, "ignoreUriCase": ANY, "withoutHeaders": MAP, "sourceNamespace": ANY, "statPrefix": ANY,
}
_HTTP_ROUTE_DESTINATION = {"destination": _DESTINATION, "weight": ANY, "headers": _HEADERS}
_HTTP_ROUTE = {
    "name": ANY, "match": [_HTTP_MATCH], "route": [_HTTP_ROUTE_DESTINATION], "redirect": ANY,
    "directResponse": ANY, "delegate": ANY, "rewrite": ANY, "timeout": ANY, "retries": ANY, "fault": ANY,
    "mirror": _DESTINATION, "mirrors": ANY, "mirrorPercentage": ANY, "mirrorPercent": ANY,
    "mirror_percent": ANY, "corsPolicy": ANY, "headers": _HEADERS,
}
_L4_MATCH = {"destinationSubnets": ANY, "port": ANY, "sourceLabels": MAP, "gateways": ANY,
             "sourceNamespace": ANY, "sniHosts": ANY, "sourceSubnet": ANY}
_ROUTE_DESTINATION = {"destination": _DESTINATION, "weight": ANY}
_VIRTUAL_SERVICE = {
    "hosts": ANY, "gateways": ANY, "exportTo": ANY,
    "http": [_HTTP_ROUTE],
    "tcp": [{"match": [_L4_MATCH], "route": [_ROUTE_DESTINATION]}],
    "tls": [{"match": [_L4_MATCH], "route": [_ROUTE_DESTINATION]}],
}
_OUTLIER_DETECTION = {
    "consecutiveErrors": ANY, "consecutive5xxErrors": ANY, "consecutiveGatewayErrors": ANY,
    "consecutiveLocalOriginFailures": ANY, "splitExternalLocalOriginErrors": ANY, "interval": ANY,
    "baseEjectionTime": ANY, "maxEjectionPercent": ANY, "minHealthPercent": ANY,
}
_TRAFFIC_POLICY = {
    "loadBalancer": ANY, "connectionPool": ANY, "outlierDetection": _OUTLIER_DETECTION, "tls": ANY,
    "portLevelSettings": ANY, "tunnel": ANY, "proxyProtocol": ANY, "retryBudget": ANY,
}
_DESTINATION_RULE = {
    "host": ANY, "trafficPolicy": _TRAFFIC_POLICY, "exportTo": ANY, "workloadSelector": ANY,
    "subsets": [{"name": ANY, "labels": MAP, "trafficPolicy": _TRAFFIC_POLICY}],
}
_GATEWAY = {
    "selector": MAP,
    "servers": [{"port": {"number": ANY, "protocol": ANY, "name": ANY, "targetPort": ANY},
                 "hosts": ANY, "tls": ANY, "bind": ANY, "defaultEndpoint": ANY, "name": ANY}],
}
_PEER_AUTHENTICATION = {"selector": {"matchLabels": MAP}, "mtls": {"mode": ANY}, "portLevelMtls": ANY}

SPEC_SCHEMAS: dict[str, Any] = {
    "VirtualService": _VIRTUAL_SERVICE,
    "DestinationRule": _DESTINATION_RULE,
    "Gateway": _GATEWAY,
    "PeerAuthentication": _PEER_AUTHENTICATION,
    "AuthorizationPolicy": dict.fromkeys(("selector", "targetRef", "targetRefs", "rules", "action", "provider")),
    "RequestAuthentication": dict.fromkeys(("selector", "targetRef", "targetRefs", "jwtRules")),
    "ServiceEntry": dict.fromkeys(("hosts", "addresses", "ports", "location", "resolution", "endpoints",
                                   "workloadSelector", "exportTo", "subjectAltNames")),
    "Sidecar": dict.fromkeys(("workloadSelector", "ingress", "egress", "outboundTrafficPolicy", "inboundConnectionPool")),
    "EnvoyFilter": dict.fromkeys(("workloadSelector", "targetRefs", "configPatches", "priority")),
    "WorkloadEntry": dict.fromkeys(("address", "ports", "labels", "network", "locality", "weight", "serviceAccount")),
    "WorkloadGroup": dict.fromkeys(("metadata", "template", "probe")),
    "ProxyConfig": dict.fromkeys(("selector", "concurrency", "environmentVariables", "image")),
    "Telemetry": dict.fromkeys(("selector", "targetRef", "targetRefs", "tracing", "metrics", "accessLogging")),
    "WasmPlugin": dict.fromkeys(("selector", "targetRef", "targetRefs", "url", "sha256", "imagePullPolicy",
                                 "imagePullSecret", "verificationKey", "pluginConfig", "pluginName", "phase",
                                 "priority", "failStrategy", "vmConfig", "match", "type")),
}

_PEER_AUTH_MODES = {"UNSET", "DISABLE", "PERMISSIVE", "STRICT"}


def validate(kind: str, obj: dict[str, Any]) -> list[str]:
    """Problems istiod would report for `obj`; empty when it would admit it."""
    schema = SPEC_SCHEMAS.get(kind)
    if schema is None:
        return []
    spec = obj.get("spec")
    if spec is None:
        return []
    if not isinstance(spec, dict):
        return ["spec: must be an object"]
    problems = _unknown_fields(spec, schema, "spec")
    checker = _SEMANTIC_CHECKS.get(kind)
    if checker:
        problems += checker(spec)
    return problems


def _unknown_fields(value: Any, schema: Any, path: str) -> list[str]:
    if schema is ANY:
        return []
    if isinstance(schema, list):
        if value is None:
            return []
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        out: list[str] = []
        for i, item in enumerate(value):
            out += _unknown_fields(item, schema[0], f"{path}[{i}]")
        return out
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"{path}: expected an object"]
    out = []
    for key, sub in value.items():
        if key not in schema:
            out.append(f'unknown field "{key}" in {path}')
        else:
            out += _unknown_fields(sub, schema[key], f"{path}.{key}")
    return out


def _weights(routes: list[Any], path: str) -> list[str]:
    out: list[str] = []
    total = 0
    explicit = False
    for i, dest in enumerate(routes):
        if not isinstance(dest, dict):
            continue
        if not ((dest.get("destination") or {}).get("host")):
            out.append(f"{path}[{i}].destination.host: host is required")
        weight = dest.get("weight")
        if weight is not None:
            explicit = True
            if not isinstance(weight, int) or weight < 0:
                out.append(f"{path}[{i}].weight: weight {weight} must be a non-negative integer")
                continue
            total += weight
    if (len(routes) > 1 or explicit) and total != 100 and not (len(routes) == 1 and total == 0):
        out.append(f"{path}: total destination weight {total} != 100")
    return out


def _check_virtual_service(spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if not spec.get("hosts"):
        out.append("spec.hosts: virtual service must have at least one host")
    for i, http in enumerate(spec.get("http") or []):
        if not isinstance(http, dict):
            continue
        if not any(http.get(k) for k in ("route", "redirect", "directResponse", "delegate")):
            out.append(f"spec.http[{i}]: HTTP route, redirect or direct response is required")
        out += _weights(http.get("route") or [], f"spec.http[{i}].route")
    for proto in ("tcp", "tls"):
        for i, rule in enumerate(spec.get(proto) or []):
            if isinstance(rule, dict):
                out += _weights(rule.get("route") or [], f"spec.{proto}[{i}].route")
    return out


def _check_destination_rule(spec: dict[str, Any]) -> list[str]:
    out = [] if spec.get("host") else ["spec.host: host is required"]
    names = [s.get("name") for s in spec.get("subsets") or [] if isinstance(s, dict)]
    if any(not n for n in names):
        out.append("spec.subsets: subset name is required")
    if len(set(names)) != len(names):
        out.append("spec.subsets: duplicate subset names")
    od = (spec.get("trafficPolicy") or {}).get("outlierDetection") or {}
    mep = od.get("maxEjectionPercent")
    if mep is not None and not (isinstance(mep, int) and 0 <= mep <= 100):
        out.append("spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100")
    return out


def _check_peer_authentication(spec: dict[str, Any]) -> list[str]:
    mode = (spec.get("mtls") or {}).get("mode")
    if mode is not None and mode not in _PEER_AUTH_MODES:
        return [f'spec.mtls.mode: unknown value "{mode}"']
    return []


def _check_gateway(spec: dict[str, Any]) -> list[str]:
    out = []
    for i, server in enumerate(spec.get("servers") or []):
        if isinstance(server, dict) and not server.get("hosts"):
            out.append(f"spec.servers[{i}].hosts: server config must contain at least one host")
    return out


_SEMANTIC_CHECKS = {
    "VirtualService": _check_virtual_service,
    "DestinationRule": _check_destination_rule,
    "PeerAuthentication": _check_peer_authentication,
    "Gateway": _check_gateway,
}
