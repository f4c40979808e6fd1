"""Resource requests: one verb on one resource path, its query parameters and its reply."""

from __future__ import annotations

from typing import Any

from . import errors, wire
from .api import APPLY_PATCH, PATCH_TYPES
from .jsonutil import dumps
from .kinds import ResourceType
from .patching import json_patch, merge_patch, strategic_merge_patch
from .routing import RequestInfo, ResourceRoute
from .served import Responder, ServedCluster
from .watch import WatchRequest, stream_watch


class ResourceHandler:
    """One request on a resource path: the verb, its parameters and its reply."""

    def __init__(
        self, http: Responder, cluster: ServedCluster, info: RequestInfo, route: ResourceRoute, rt: ResourceType, body: bytes
    ) -> None:
        self.http = http
        self.info = info
        self.route = route
        self.rt = rt
        self.body = body
        self.cluster = cluster
        self.api = self.cluster.api
        self.warnings: list[str] = []

    def run(self) -> int:
        verb = self.info.verb
        table_ok = verb in ("get", "list", "watch") and self.route.subresource is None
        self.accept = wire.negotiate(self.info.headers.get("accept", ""), table_ok=table_ok)
        handler = getattr(self, f"_{verb}", None)
        if handler is None:
            raise errors.method_not_allowed()
        return int(handler())

    # ---- parameters --------------------------------------------------------------------------

    def param(self, name: str) -> str | None:
        return self.info.param(name)

    def int_param(self, name: str) -> int | None:
        value = self.param(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise errors.bad_request(f"invalid value for {name}: {value!r}") from None

    @property
    def dry_run(self) -> bool:
        values = self.info.query.get("dryRun") or []
        for value in values:
            if value != "All":
                raise errors.bad_request(f'Invalid dry run value: unsupported dry run value "{value}"; supported values: "All"')
        return bool(values)

    def _namespace(self) -> str | None:
        return self.route.namespace if self.rt.namespaced else None

    @property
    def field_validation(self) -> str:
        value = self.param("fieldValidation") or "Warn"  # kube's default when the client says nothing
        if value not in ("Ignore", "Warn", "Strict"):
            raise errors.bad_request(f'fieldValidation must be one of "Ignore", "Warn" or "Strict", got "{value}"')
        return value

    def _warning_headers(self) -> list[tuple[str, str]]:
        return [("Warning", '299 - "' + w.replace('"', '\\"') + '"') for w in self.warnings]

    def _body(self, what: str = "object") -> Any:
        return wire.parse_body(self.body, self.info.content_type, what=what)

    def _reply_object(self, code: int, version: Any) -> int:
        if self.accept.yaml:
            return self.http._send_json(code, wire.object_json(self.rt, version), self.accept)
        return self.http._send(code, wire.object_json(self.rt, version), headers=self._warning_headers())

    # ---- verbs -------------------------------------------------------------------------------

    def _get(self) -> int:
        name = self.route.name
        assert name is not None
        if self.route.subresource == "scale":
            return self.http._send_json(200, self.api.get_scale(self.rt, self._namespace(), name))
        version = self.api.get(self.rt, self._namespace(), name)
        if self.route.subresource == "log":
            return self._log(version.obj)
        if self.accept.table:
            return self.http._send(200, self.cluster.tables.table(self.rt, [version], None, None), wire.TABLE_CONTENT_TYPE)
        return self._reply_object(200, version)

    def _list(self) -> int:
        limit = self.int_param("limit")
        result = self.api.list(
            self.rt,
            self._namespace(),
            label_selector=self.param("labelSelector"),
            field_selector=self.param("fieldSelector"),
            limit=limit if limit and limit > 0 else None,
            continue_token=self.param("continue") or None,
        )
        if self.accept.table:
            body = self.cluster.tables.table(
                self.rt, result.versions, result.resource_version, result.continue_token, remaining=result.remaining
            )
            return self.http._send(200, body, wire.TABLE_CONTENT_TYPE)
        body = wire.list_json(self.rt, result.versions, result.resource_version, result.continue_token, result.remaining)
        if self.accept.yaml:
            return self.http._send_json(200, body, self.accept)
        return self.http._send(200, body)

    def _watch(self) -> int:
        field_selector = self.param("fieldSelector")
        if self.route.name is not None:
            by_name = f"metadata.name={self.route.name}"
            field_selector = f"{field_selector},{by_name}" if field_selector else by_name
        request = WatchRequest(
            rt=self.rt,
            namespace=self._namespace(),
            label_selector=self.param("labelSelector"),
            field_selector=field_selector,
            resource_version=self.param("resourceVersion"),
            timeout_seconds=self.int_param("timeoutSeconds"),
            bookmarks=self.param("allowWatchBookmarks") in ("true", "1"),
            send_initial_events=self.param("sendInitialEvents") in ("true", "1"),
            table=self.accept.table,
        )
        return stream_watch(self.http, self.cluster, self.info, request)

    def _log(self, pod: dict[str, Any]) -> int:
        """Simulated containers write nothing: an empty log, after the checks kube makes."""
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        wanted = self.param("container")
        name = pod["metadata"]["name"]
        if wanted is None and len(containers) > 1:
            raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: {containers}")
        if wanted is not None and wanted not in containers:
            raise errors.bad_request(f"container {wanted} is not valid for pod {name}")
        return self.http._send(200, b"", "text/plain")

    def _create(self) -> int:
        if self.route.name is not None:
            raise errors.method_not_allowed()
        if self.rt.virtual:
            # The sandbox authorizes every request, and says so.
            review = self._body()
            if not isinstance(review, dict):
                raise errors.bad_request("the body of the request must be a JSON object")
            reply = {**review, "apiVersion": self.rt.api_version, "kind": self.rt.kind,
                     "status": {"allowed": True, "reason": "the sandbox authorizes every request"}}
            return self.http._send_json(201, reply)
        version = self.api.create(
            self.rt, self._body(), namespace=self._namespace(), dry_run=self.dry_run, field_manager=self.param("fieldManager"),
            field_validation=self.field_validation, warnings=self.warnings, owned=True,
        )
        return self._reply_object(201, version)

    def _update(self) -> int:
        name = self.route.name
        assert name is not None
        sub = self.route.subresource
        if sub == "scale":
            scale = self._body()
            return self.http._send_json(200, self.api.write_scale(self.rt, self._namespace(), name, lambda _: scale, self.dry_run))
        version = self.api.update(
            self.rt, self._body(), namespace=self._namespace(), name=name, subresource=sub, dry_run=self.dry_run,
            field_validation=self.field_validation, warnings=self.warnings, owned=True,
        )
        return self._reply_object(200, version)

    def _patch(self) -> int:
        name = self.route.name
        assert name is not None
        content_type = wire.media_type(self.info.content_type)
        if content_type not in PATCH_TYPES:
            raise errors.ApiError(
                415, "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}",
            )
        patch = self._body("patch")
        sub = self.route.subresource
        if sub == "scale":
            def change(scale: Any) -> Any:
                if content_type == "application/json-patch+json":
                    return json_patch(scale, patch)
                if content_type == "application/strategic-merge-patch+json":
                    return strategic_merge_patch(scale, patch, "Scale")
                return merge_patch(scale, patch)

            return self.http._send_json(200, self.api.write_scale(self.rt, self._namespace(), name, change, self.dry_run))
        force = self.param("force") in ("true", "1")
        if force and content_type != APPLY_PATCH:
            raise errors.bad_request("force may only be specified with apply patches")
        version, created = self.api.patch(
            self.rt, self._namespace(), name, patch, content_type, subresource=sub, dry_run=self.dry_run,
            field_manager=self.param("fieldManager"), force=force, field_validation=self.field_validation,
            warnings=self.warnings,
        )
        return self._reply_object(201 if created else 200, version)

    def _delete_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.body.strip():
            parsed = wire.parse_body(self.body, self.info.content_type, what="DeleteOptions")
            if not isinstance(parsed, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            options.update(parsed)
        if self.param("propagationPolicy"):
            options["propagationPolicy"] = self.param("propagationPolicy")
        grace = self.int_param("gracePeriodSeconds")
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if self.param("orphanDependents") is not None:
            options["orphanDependents"] = self.param("orphanDependents") == "true"
        if self.dry_run:
            options["dryRun"] = ["All"]
        policy = options.get("propagationPolicy")
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise errors.bad_request(f'invalid propagationPolicy "{policy}": must be Foreground, Background or Orphan')
        return options

    def _delete(self) -> int:
        name = self.route.name
        assert name is not None
        if self.route.subresource is not None:
            raise errors.method_not_allowed()
        options = self._delete_options()
        result = self.api.delete(self.rt, self._namespace(), name, options)
        if result.deleted and not self.rt.returns_deleted_object:
            return self.http._send_json(200, wire.success_status(self.rt, result.obj))
        code = 202 if not result.deleted and options.get("propagationPolicy") == "Foreground" else 200
        return self.http._send(code, dumps({**result.obj, "apiVersion": self.rt.api_version}))

    def _deletecollection(self) -> int:
        options = self._delete_options()
        deleted = self.api.delete_collection(
            self.rt, self._namespace(), label_selector=self.param("labelSelector"),
            field_selector=self.param("fieldSelector"), options=options,
        )
        body = {
            "kind": self.rt.list_kind,
            "apiVersion": self.rt.api_version,
            "metadata": {"resourceVersion": str(self.cluster.store.resource_version)},
            "items": deleted,
        }
        return self.http._send_json(200, body)
