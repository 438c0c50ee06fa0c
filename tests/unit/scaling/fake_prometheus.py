"""A stand-in for Prometheus' HTTP API on 127.0.0.1: ``/api/v1/query`` (and every other GET) is
answered with ``answer(query)``, so a test says exactly what each PromQL query returns;
:class:`LabelledSeries` is such an answer that selects labelled series as Prometheus does."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Answer = Callable[[str], tuple[int, bytes]]
"""What the fake Prometheus answers to one query: (HTTP status, body)."""


class FakePrometheus:
    """An HTTP server on 127.0.0.1 answering ``/api/v1/query`` (every GET) with ``answer(query)``
    as ``content_type``; serve it with :meth:`serving`."""

    def __init__(
        self, answer: Answer = lambda _q: (200, b"{}"), content_type: str = "application/json"
    ) -> None:
        self.answer = answer
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                status, body = owner.answer(query)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def serving(self) -> Iterator[FakePrometheus]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=5)


@dataclass(frozen=True)
class Series:
    """One scraped series of :class:`LabelledSeries`: a counter growing at ``rps`` (or a gauge at
    ``value``) whose newest sample was taken at ``newest_t``."""

    name: str
    labels: Mapping[str, str]
    rps: float = 0.0
    value: float = 0.0
    newest_t: float = 0.0


_MATCHER = re.compile(r'(\w+)(=~|!=|!~|=)"((?:[^"\\]|\\.)*)"')
_SELECTOR = re.compile(r"(\w+)\{([^}]*)\}")


def _unquote(text: str) -> str:
    """A PromQL double-quoted string's content, unescaped."""
    return re.sub(r"\\(.)", r"\1", text)


def matches(labels: Mapping[str, str], selector: str) -> bool:
    """Whether series ``labels`` match ``selector`` (``a="x",b=~"y|"``) as Prometheus matches them:
    a label a series lacks is the empty string, and a regex must match the whole value."""
    for name, op, raw in _MATCHER.findall(selector):
        value, have = _unquote(raw), labels.get(name, "")
        hit = have == value if op in ("=", "!=") else re.fullmatch(value, have) is not None
        if hit != (op in ("=", "=~")):
            return False
    return True


class LabelledSeries:
    """Answers the reader's default queries over ``series`` at ``now``, selecting series by their
    labels as Prometheus does (a small evaluator for exactly the default templates' shapes): rate
    series are subqueries aligned to multiples of their step, like Prometheus'."""

    def __init__(self, series: Sequence[Series], now: float) -> None:
        self.series = list(series)
        self.now = now
        self.queries: list[str] = []

    def _selected(self, promql: str) -> list[Series]:
        found = []
        for name, selector in _SELECTOR.findall(promql):
            found += [s for s in self.series if s.name == name and matches(s.labels, selector)]
        return found

    def __call__(self, query: str) -> tuple[int, bytes]:
        self.queries.append(query)
        picked = self._selected(query)
        subquery = re.fullmatch(r"\((.*)\)\[(\d+)ms:(\d+)ms\]", query)
        if subquery is not None:
            if not picked:
                return _success("matrix", [])
            span, step = int(subquery[2]) / 1000, int(subquery[3]) / 1000
            newest = math.floor(self.now / step) * step
            count = int(span // step)
            total = sum(s.rps for s in picked)
            values = [[newest - step * (count - 1 - i), str(total)] for i in range(count)]
            return _success("matrix", [{"metric": {}, "values": values}])
        if not picked:
            return _success("vector", [])
        if query.startswith("count(count by (instance)"):
            value = float(len({s.labels.get("instance", "") for s in picked}))
        elif query.startswith("max(timestamp("):
            value = max(s.newest_t for s in picked)
        elif "queue_duration" in query:
            value = 0.001
        elif "compute_infer" in query:
            value = 0.01
        else:  # sum(nv_inference_pending_request_count{...})
            value = sum(s.value for s in picked)
        return _success("vector", [{"metric": {}, "value": [self.now, str(value)]}])


def _success(result_type: str, result: list[Any]) -> tuple[int, bytes]:
    body = {"status": "success", "data": {"resultType": result_type, "result": result}}
    return 200, json.dumps(body).encode()
