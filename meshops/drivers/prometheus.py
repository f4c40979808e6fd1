"""Prometheus over its HTTP API (``/api/v1/query`` and ``/api/v1/query_range``).

Results are plain values: an instant query gives ``Sample``s, a range query gives
``RangeSeries``. Every failure is a ``DriverError`` whose message says what went wrong in
operator terms: the server refused the connection or timed out (temporary), the query is
malformed (``BadQuery``, permanent, with Prometheus's own message), or the query matched
nothing (``NoData``, raised unless the caller passes ``allow_empty=True``). An empty
answer is never turned into a zero: callers that treat "no series" as meaningful must
say so.

Queries are sent as form-encoded POSTs, so long PromQL (regex matchers over many
namespaces) never meets a URL length limit. One connection pool per client.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3

from meshops.domain.errors import DriverError
from meshops.domain.redact import register_credential
from meshops.drivers.prometheus_api import BadQuery as BadQuery
from meshops.drivers.prometheus_api import NoData as NoData
from meshops.drivers.prometheus_api import PrometheusApi as PrometheusApi
from meshops.drivers.prometheus_api import RangeSeries as RangeSeries
from meshops.drivers.prometheus_api import Sample as Sample
from meshops.drivers.prometheus_api import finite as finite

# How much of a non-JSON error body goes into a message: enough for a proxy's error page
# title, not a whole HTML document.
_BODY_SNIPPET = 300


class PrometheusClient:
    """A Prometheus server at ``url`` (``http://host:9090``, optionally with a path prefix)."""

    def __init__(self, url: str, *, timeout: float = 30.0, bearer_token: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DriverError(f"not a Prometheus URL: {url!r} (expected http://host:port)")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.queries = 0
        self._headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if bearer_token:
            register_credential(bearer_token)
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._http = urllib3.PoolManager(num_pools=2, maxsize=4, retries=False,
                                         timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout))

    # ---- queries ------------------------------------------------------------------------

    def query(self, expr: str, *, at: float | None = None, allow_empty: bool = False) -> list[Sample]:
        """An instant query, evaluated at ``at`` (unix seconds; now when None)."""
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = _fmt_time(at)
        data = self._post("/api/v1/query", params, expr)
        rtype, result = data.get("resultType"), data.get("result")
        samples: list[Sample]
        if rtype == "vector" and isinstance(result, list):
            samples = [Sample(labels=dict(r.get("metric") or {}), value=_value(r.get("value"), expr)) for r in result]
        elif rtype == "scalar":
            samples = [Sample(labels={}, value=_value(result, expr))]
        elif rtype == "matrix":
            raise BadQuery(f"Prometheus query {_short(expr)!r} returned a range vector; use query_range, "
                           "or wrap the range in a function such as rate() or quantile_over_time()")
        else:
            raise DriverError(f"Prometheus at {self.url} answered {_short(expr)!r} with an unexpected "
                              f"result type {rtype!r}")
        if not samples and not allow_empty:
            raise NoData(f"no data: Prometheus at {self.url} has no series for {_short(expr)!r}"
                         + (f" at {_fmt_time(at)}" if at is not None else ""),
                         hint="check the metric and label names, and that the time lies inside the retention")
        return samples

    def query_range(self, expr: str, *, start: float, end: float, step: float,
                    allow_empty: bool = False) -> list[RangeSeries]:
        """A range query from ``start`` to ``end`` (unix seconds) every ``step`` seconds."""
        if end < start:
            raise BadQuery(f"query_range: end {end} is before start {start}")
        if step <= 0:
            raise BadQuery(f"query_range: step must be > 0, not {step}")
        params = {"query": expr, "start": _fmt_time(start), "end": _fmt_time(end), "step": _fmt_time(step)}
        data = self._post("/api/v1/query_range", params, expr)
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise DriverError(f"Prometheus at {self.url} answered range query {_short(expr)!r} with "
                              f"result type {data.get('resultType')!r}")
        series = [RangeSeries(labels=dict(r.get("metric") or {}),
                              points=tuple((float(t), _num(v, expr)) for t, v in r.get("values") or []))
                  for r in data["result"]]
        if not series and not allow_empty:
            raise NoData(f"no data: Prometheus at {self.url} has no series for {_short(expr)!r} between "
                         f"{_fmt_time(start)} and {_fmt_time(end)}",
                         hint="check the metric and label names, and that the window lies inside the retention")
        return series

    def ready(self) -> bool:
        """Whether the server answers ``/-/ready`` with 200 (False when it cannot be reached)."""
        try:
            resp = self._http.request("GET", self.url + "/-/ready", timeout=min(5.0, self.timeout),
                                      headers={k: v for k, v in self._headers.items() if k == "Authorization"})
        except urllib3.exceptions.HTTPError:
            return False
        return resp.status == 200

    def close(self) -> None:
        self._http.clear()

    # ---- transport ----------------------------------------------------------------------

    def _post(self, path: str, params: dict[str, str], expr: str) -> dict[str, Any]:
        self.queries += 1
        try:
            resp = self._http.request("POST", self.url + path, body=urlencode(params), headers=self._headers)
        except urllib3.exceptions.NewConnectionError as exc:
            refused = "refused" in str(exc).lower()
            raise DriverError(
                f"cannot reach Prometheus at {self.url}: " + ("connection refused" if refused else _reason(exc)),
                temporary=True, hint="is Prometheus running, and is --prometheus the right URL?") from None
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError):
            raise DriverError(f"Prometheus at {self.url} did not answer {_short(expr)!r} within {self.timeout:g}s",
                              temporary=True) from None
        except urllib3.exceptions.HTTPError as exc:
            raise DriverError(f"cannot reach Prometheus at {self.url}: {_reason(exc)}", temporary=True) from None
        body = resp.data
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            snippet = body[:_BODY_SNIPPET].decode(errors="replace").strip()
            raise DriverError(f"{self.url}{path} answered HTTP {resp.status} with a body that is not Prometheus "
                              f"JSON: {snippet!r}", temporary=resp.status >= 500)
        if resp.status == 200 and doc.get("status") == "success":
            data = doc.get("data")
            if not isinstance(data, dict):
                raise DriverError(f"Prometheus at {self.url} sent no data object for {_short(expr)!r}")
            return data
        etype, error = str(doc.get("errorType", "")), str(doc.get("error", ""))
        if resp.status in (400, 422) or etype in ("bad_data", "execution"):
            raise BadQuery(f"Prometheus rejected the query {_short(expr)!r}: {etype or resp.status}: {error}")
        raise DriverError(f"Prometheus at {self.url} failed the query {_short(expr)!r}: HTTP {resp.status} "
                          f"{etype}: {error}", temporary=resp.status >= 500 or etype in ("timeout", "unavailable"))


def _fmt_time(t: float) -> str:
    return f"{t:.3f}".rstrip("0").rstrip(".")


def _num(raw: Any, expr: str) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise DriverError(f"Prometheus sent a value that is not a number for {_short(expr)!r}: {raw!r}") from None


def _value(pair: Any, expr: str) -> float:
    if not isinstance(pair, Sequence) or len(pair) != 2:
        raise DriverError(f"Prometheus sent a malformed sample for {_short(expr)!r}: {pair!r}")
    return _num(pair[1], expr)


def _short(expr: str, limit: int = 160) -> str:
    one_line = " ".join(expr.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:_BODY_SNIPPET]
