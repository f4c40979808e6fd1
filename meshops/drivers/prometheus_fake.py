"""An in-memory ``PrometheusApi`` for tests: canned answers, and a loud failure for any other query.

Answers are keyed by the exact expression or by a compiled regex (first match wins, exact
keys first). An answer is a list of ``Sample``s (instant) or ``RangeSeries`` (range), an
exception to raise, or a callable ``(expr, params) -> answer``. ``down=True`` makes every
call fail as an unreachable server does; ``calls`` records every query in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from meshops.domain.errors import DriverError
from meshops.drivers.prometheus_api import NoData, RangeSeries, Sample

Answer = list[Sample] | list[RangeSeries] | BaseException | Callable[[str, dict[str, Any]], Any]


class UnplannedQuery(AssertionError):
    """The code under test sent a query the test did not plan for."""


class FakePrometheus:
    def __init__(self, responses: Mapping[str | re.Pattern[str], Answer] | None = None, *,
                 url: str = "http://prometheus.fake:9090", down: bool = False) -> None:
        self.url = url
        self.down = down
        self.responses: dict[str | re.Pattern[str], Answer] = dict(responses or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @property
    def queries(self) -> int:
        return len(self.calls)

    def add(self, key: str | re.Pattern[str], answer: Answer) -> None:
        self.responses[key] = answer

    def query(self, expr: str, *, at: float | None = None, allow_empty: bool = False) -> list[Sample]:
        result = self._answer(expr, {"at": at})
        out: list[Sample] = []
        for item in result:
            if not isinstance(item, Sample):
                raise UnplannedQuery(f"instant query {expr!r} was given a {type(item).__name__} answer")
            out.append(item)
        if not out and not allow_empty:
            raise NoData(f"no data: Prometheus at {self.url} has no series for {expr!r}")
        return out

    def query_range(self, expr: str, *, start: float, end: float, step: float,
                    allow_empty: bool = False) -> list[RangeSeries]:
        result = self._answer(expr, {"start": start, "end": end, "step": step})
        out: list[RangeSeries] = []
        for item in result:
            if not isinstance(item, RangeSeries):
                raise UnplannedQuery(f"range query {expr!r} was given a {type(item).__name__} answer")
            out.append(item)
        if not out and not allow_empty:
            raise NoData(f"no data: Prometheus at {self.url} has no series for {expr!r}")
        return out

    def ready(self) -> bool:
        return not self.down

    def _answer(self, expr: str, params: dict[str, Any]) -> list[Any]:
        self.calls.append((expr, params))
        if self.down:
            raise DriverError(f"cannot reach Prometheus at {self.url}: connection refused", temporary=True)
        answer: Any = self.responses.get(expr)
        if answer is None:
            for key, value in self.responses.items():
                if isinstance(key, re.Pattern) and key.search(expr):
                    answer = value
                    break
        if answer is None:
            raise UnplannedQuery(f"FakePrometheus has no answer planned for {expr!r}")
        if callable(answer) and not isinstance(answer, BaseException):
            answer = answer(expr, params)
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)
