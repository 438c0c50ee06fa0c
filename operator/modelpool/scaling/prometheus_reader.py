"""Read one variant's live metrics from Prometheus' HTTP API (``/api/v1/query``) with httpx.

The PromQL is a set of templates (:class:`QueryTemplates`) with ``$selector`` (label matchers of
the variant's Triton series, e.g. ``model="small",namespace="prod"``), ``$router_selector`` (label
matchers of the router's series), ``$window`` (the ``rate()`` window) and, for series, ``$span`` and
``$step`` (subquery range and resolution). Defaults read Triton's ``nv_inference_*`` metrics and
the router's ``modelpool_router_upstream_requests_total{variant=...}`` (plus
``modelpool_router_unavailable_requests_total``: a tier at zero); a pool may override any of them.

Query failures never raise out of :meth:`PrometheusReader.read_variant`: they come back as
``VariantMetrics(problem=...)``, which makes :func:`modelpool.scaling.decide` hold the last decision.
So does an answer of the wrong shape (a range vector, several series where one is expected, a
sample that is not a number): the reader never guesses which series was meant.
Timestamps are Prometheus' (Unix epoch seconds): call ``decide`` with ``now=time.time()``.

The URL is a pool author's (``spec.scaling.prometheusURL``), so the server may be anything: an
answer is read up to :data:`MAX_ANSWER_BYTES` and for at most ``timeout_s`` in all, uncompressed,
and what of it reaches the pool's status (which its author reads) is limited: the text of a
Prometheus-shaped error, truncated; of anything else the HTTP status; of a failed connection the
exception's class and a short reason; of several series their count, not their labels.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import re
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from string import Template
from typing import Any, TypeVar

import httpx

from modelpool.api.modelpool import PROMQL_PLACEHOLDER_HINT, MetricQueries
from modelpool.builders.triton import LABEL_POOL, LABEL_VARIANT
from modelpool.scaling.types import RatePoint, VariantMetrics

_T = TypeVar("_T")

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""The most bytes of one answer the reader reads (4 MiB); a longer one is refused unread.

The largest answer the reader asks for is a rate series: one series of ``span / step + 1``
points. The CRD's extremes (``rateWindowSeconds: 2``, so a 0.5 s step, and a 3600 s trend window
or look-ahead) make that about 7,200 points of at most ~45 bytes
(``[1712345678.5,"1.2345678901234567e+308"],``): about 330 KB. 4 MiB is 12 times that, room
for labels and for a custom query's answer, and bounded against a server (a pool's
``prometheusURL`` is its author's choice) that streams without end: before the cap, one grew the
operator by 900 MB in 4 s. Not more: parsed, JSON grows up to ~20 times (4 MiB of ``[],`` is
~90 MiB of Python lists; one answer is parsed at a time, the raw bodies of the queries in flight
are held together), and the chart's memory limit is 512Mi."""
MAX_ERROR_CHARS = 200
"""How much of a Prometheus error text (``"error"``) reaches the pool's status."""
_ERROR_TYPE = re.compile(r"[a-z_]{1,32}")
"""What Prometheus' ``errorType`` looks like (``bad_data``, ``execution``, ``timeout``, ...)."""


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or rejected a query (``rejected``: the query itself was refused)."""

    def __init__(self, message: str, rejected: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected


class UnexpectedResult(PrometheusError):
    """Prometheus ran the query, but its answer is not what the reader asked for (a range vector
    where an instant vector was expected, several series where one was, a value that is no
    number): the query is at fault, so the pool field that overrides it is named."""


def query_field(name: str) -> str:
    """The ModelPool field that overrides template ``name``.

    ``served_rate`` -> ``spec.scaling.queries.servedRate``.
    """
    return "spec.scaling.queries." + str(MetricQueries.model_fields[name].alias)


@dataclass(frozen=True)
class QueryTemplates:
    """PromQL templates for one pool (``string.Template`` syntax: ``$selector``, ``$window``, ...)."""

    served_rate: str = "sum(rate(nv_inference_request_success{$selector}[$window]))"
    router_rate: str = (
        "sum(rate(modelpool_router_upstream_requests_total{$router_selector}[$window])) "
        "+ (sum(rate(modelpool_router_unavailable_requests_total{$router_selector}[$window])) or vector(0)) "
        "or sum(rate(modelpool_router_unavailable_requests_total{$router_selector}[$window]))"
    )
    queue_time_s: str = (
        "sum(rate(nv_inference_queue_duration_us{$selector}[$window])) "
        "/ sum(rate(nv_inference_request_success{$selector}[$window])) / 1e6"
    )
    compute_time_s: str = (
        "sum(rate(nv_inference_compute_infer_duration_us{$selector}[$window])) "
        "/ sum(rate(nv_inference_request_success{$selector}[$window])) / 1e6"
    )
    pending: str = "sum(nv_inference_pending_request_count{$selector})"
    newest_sample: str = (
        "max(timestamp(nv_inference_request_success{$selector}) "
        "or timestamp(modelpool_router_upstream_requests_total{$router_selector}) "
        "or timestamp(modelpool_router_unavailable_requests_total{$router_selector}))"
    )

    def render(self, field: str, **values: str) -> str:
        """The query of ``field`` with the placeholders filled in."""
        template: str = getattr(self, field)
        try:
            return Template(template).substitute(values)
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"{query_field(field)}: unknown or malformed placeholder ({exc}); {PROMQL_PLACEHOLDER_HINT}"
            ) from exc


TRITON_TARGETS = "count(count by (instance) (rate(nv_inference_request_success{$selector}[$window])))"
"""How many scrape targets add to a variant's served rate now: those with two samples in the rate
window, as ``rate()`` needs (an instant vector also counted a target scraped once, a pod that has
just become ready, which adds nothing to the rate yet). Not a pool's to override (it is read only
with the default ``served_rate``, to tell a partial scrape; see :class:`VariantTarget`)."""


def series_query(instant: str, span: str, step: str) -> str:
    """Turn an instant-vector query into a subquery returning its recent values (a matrix)."""
    return f"({instant})[{span}:{step}]"


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _json_object(status: int, raw: bytes | bytearray) -> dict[str, Any]:
    """The answer's JSON object (raises :class:`PrometheusError` for anything else)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested past the parser
        raise PrometheusError(f"Prometheus answered HTTP {status} without JSON") from exc
    if not isinstance(body, dict):
        raise PrometheusError(
            f"Prometheus answered HTTP {status} with JSON {type(body).__name__}, not an API response object"
        )
    return body


def _failure(status: int, body: dict[str, Any]) -> str:
    """What a failed answer says: ``HTTP <status> <errorType> <error>`` when it is shaped as
    Prometheus' errors (``{"status": "error", "errorType": "bad_data", "error": "..."}``), the
    error truncated to :data:`MAX_ERROR_CHARS`; else ``HTTP <status>`` alone: another server's
    text (whatever the URL reached) is not echoed into the pool's status."""
    error_type, error = body.get("errorType"), body.get("error", "")
    if (
        body.get("status") != "error"
        or not isinstance(error_type, str)
        or not _ERROR_TYPE.fullmatch(error_type)
        or not isinstance(error, str)
    ):
        return f"HTTP {status}"
    text = "".join(c if c.isprintable() else " " for c in error[: MAX_ERROR_CHARS + 1])
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    return f"HTTP {status} {error_type} {text}".strip()


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ssl.SSLCertVerificationError, "certificate not trusted"),
    (ssl.SSLError, "TLS failed"),
    (socket.gaierror, "host name not resolved"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (ConnectionAbortedError, "connection aborted"),
    (TimeoutError, "timed out"),
    (httpx.TimeoutException, "timed out"),
    (httpx.RemoteProtocolError, "not an HTTP answer"),
    (httpx.UnsupportedProtocol, "not http:// or https://"),
    (OverflowError, "port out of range"),
)
_ERRNO_REASONS = {
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "timed out",
}


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc``, what caused it, and the exceptions of the groups among them (depth first)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        one = todo.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        yield one
        if isinstance(one, BaseExceptionGroup):
            todo.extend(reversed(one.exceptions))
        todo.extend(e for e in (one.__context__, one.__cause__) if e is not None)


def unreachable_reason(exc: BaseException) -> str:
    """``<exception class> (<short reason>)`` of a failed request: "connection refused", "timed
    out", ...; not the exception's text, which names addresses and the transport's internals
    (in a pool's status, a port-scan oracle for its author)."""
    for cause in _causes(exc):
        for kind, reason in _REASONS:
            if isinstance(cause, kind):
                return f"{type(exc).__name__} ({reason})"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_REASONS:
            return f"{type(exc).__name__} ({_ERRNO_REASONS[cause.errno]})"
    return type(exc).__name__


def base_url_problem(url: str) -> str | None:
    """Why ``url`` is no Prometheus base URL the reader can append ``/api/v1/query`` to (not
    parsed, not http(s), no host, a query or a fragment, which would swallow the suffix), or None."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        return str(exc)
    if parsed.scheme not in ("http", "https"):
        return "it needs http:// or https://"
    if not parsed.host:
        return "it has no host"
    if parsed.query or parsed.fragment or "?" in url or "#" in url:
        return "it has a query (?) or fragment (#): give http(s)://host[:port][/path]"
    return None


def allowed_urls_from(text: str | Iterable[str]) -> tuple[str, ...]:
    """The entries of the operator's Prometheus allowlist: ``text`` (or each string of it) split
    at commas and whitespace, empty entries dropped."""
    parts = [text] if isinstance(text, str) else list(text)
    return tuple(url for part in parts for url in re.split(r"[\s,]+", part) if url)


def _parts(url: str) -> tuple[str, str, int, bytes, tuple[str, ...]] | None:
    """``(scheme, host, port, userinfo, path segments)`` of a base URL, the port filled in and the
    path percent-decoded; None for a URL that is none (or whose path could leave where it looks:
    ``.``/``..`` segments, an encoded ``/`` or ``\\``)."""
    if base_url_problem(url) is not None:
        return None
    parsed = httpx.URL(url)
    if re.search(r"%(2f|5c)|\\", parsed.raw_path.decode("ascii", "replace"), re.IGNORECASE):
        return None
    segments = tuple(s for s in urllib.parse.unquote(parsed.path).split("/") if s)
    if any(s in (".", "..") for s in segments):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, parsed.host, port, parsed.userinfo, segments


def url_allowed(url: str, allowed: Iterable[str]) -> bool:
    """Whether ``url`` is at or below one of the ``allowed`` base URLs: the same scheme, host,
    port and user info, and a path that is the entry's or goes on below it (``/prom`` allows
    ``/prom/x``, not ``/prometheus``). Compared parsed, never as strings: as a string,
    ``http://prom:9090`` is also the start of ``http://prom:9090@vault:8200/`` (host ``vault``)."""
    mine = _parts(url)
    if mine is None:
        return False
    for entry in allowed:
        theirs = _parts(entry)
        if theirs is not None and mine[:4] == theirs[:4] and mine[4][: len(theirs[4])] == theirs[4]:
            return True
    return False


_RESULT_TYPES = ("matrix", "vector", "scalar", "string")


def _one_series(result_type: str, result: list[Any], expected: str, promql: str) -> dict[str, Any] | None:
    """The only series of a result of type ``expected`` (one of another type Prometheus knows is
    refused; the shape of the series decides for an unknown one), None when it has none."""
    if not result:
        return None
    if result_type in _RESULT_TYPES and result_type != expected:
        got = {"matrix": "a range vector", "vector": "an instant vector"}.get(result_type, repr(result_type))
        want = "an instant vector" if expected == "vector" else "a range vector"
        raise UnexpectedResult(f"query {promql!r} returned {got}, expected {want} with one series")
    if len(result) > 1:
        # Their count only: the labels would carry the series (of any namespace: a custom query
        # runs with the operator's access) into the pool's status.
        raise UnexpectedResult(
            f"query {promql!r} returned {len(result)} series, expected one: "
            "aggregate them, e.g. sum(...) or max(...)"
        )
    if not isinstance(result[0], dict):
        raise UnexpectedResult(f"query {promql!r}: a series that is not an object")
    series: dict[str, Any] = result[0]
    return series


def _number(raw: Any, what: str, promql: str) -> float:
    """A sample's timestamp or value: Prometheus writes values as strings ("1.5", "NaN", "+Inf")."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise UnexpectedResult(f"query {promql!r}: {what} {raw!r:.80} is not a number")
    try:
        return float(raw)
    except ValueError as exc:
        raise UnexpectedResult(f"query {promql!r}: {what} {raw!r:.80} is not a number") from exc


def _sample(raw: Any, promql: str) -> tuple[float, float]:
    """``(timestamp, value)`` of one ``[t, "v"]`` sample."""
    if not isinstance(raw, list) or len(raw) != 2:
        raise UnexpectedResult(f"query {promql!r}: sample {raw!r:.80} is not a [timestamp, value] pair")
    return _number(raw[0], "timestamp", promql), _number(raw[1], "value", promql)


def target_label(pod_label: str) -> str:
    """The name a pod label gets as a target label (prometheus-operator's ``podTargetLabels``):
    every character other than a letter, a digit or ``_`` becomes ``_``."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


POOL_LABEL = target_label(LABEL_POOL)
"""``modelpool_dev_pool``: the Triton pods' ``modelpool.dev/pool`` label on their series (the chart's
Triton PodMonitor attaches it)."""
VARIANT_LABEL = target_label(LABEL_VARIANT)
"""``modelpool_dev_variant``: the pods' ``modelpool.dev/variant`` label on their series."""


def _this_or_none(label: str, value: str) -> str:
    """A matcher for series whose ``label`` is ``value`` or that have no such label: a regex, with
    ``value`` taken literally (escaped for RE2, then for the PromQL string)."""
    literal = re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value)
    quoted = literal.replace("\\", "\\\\").replace('"', '\\"')
    return f'{label}=~"{quoted}|"'


@dataclass(frozen=True)
class VariantTarget:
    """Which series belong to one variant: Triton label matchers and router label matchers.

    ``namespace``, when set, adds ``namespace=~"<namespace>|"`` to both selectors: series of that
    namespace (the target label prometheus-operator's PodMonitors attach) or of none (a scrape that
    attaches no ``namespace`` label still works), so that pools of several namespaces serving the
    same model name do not read each other's series; empty adds nothing.

    ``pool``, when set, adds ``modelpool_dev_pool=~"<pool>|",modelpool_dev_variant=~"<variant>|"``
    to the Triton selector the same way: the series of this variant's own pods (the target labels
    the chart's Triton PodMonitor makes of the pods' ``modelpool.dev/pool`` and
    ``modelpool.dev/variant`` labels) or of a scrape that attaches neither, so that two variants (or
    two pools of one namespace) loading the same model name do not read each other's served rate,
    queue, compute time and pending requests. The router's series carry ``pool`` and ``variant``
    of their own.

    ``ready_replicas``, when set, is how many of the variant's pods should export Triton's series
    (the Deployment's ready replicas): the reader then counts the Triton targets it sees, and
    :func:`modelpool.scaling.demand.partial_scrape` says when some are missing (the variant then
    never scales down)."""

    model: str
    variant: str
    extra_matchers: str = ""
    pool: str = ""
    namespace: str = ""
    ready_replicas: int | None = None

    def _with_common(self, base: str) -> str:
        if self.namespace:  # a DNS label: no regex metacharacters to escape
            base = f'{base},namespace=~"{self.namespace}|"'
        return f"{base},{self.extra_matchers}" if self.extra_matchers else base

    @property
    def selector(self) -> str:
        """Label matchers for Triton's series."""
        base = f'model="{self.model}"'
        if self.pool:
            own = (_this_or_none(POOL_LABEL, self.pool), _this_or_none(VARIANT_LABEL, self.variant))
            base = ",".join((base, *own))
        return self._with_common(base)

    @property
    def router_selector(self) -> str:
        """Label matchers for the router's series."""
        base = f'variant="{self.variant}"'
        if self.pool:
            base = f'pool="{self.pool}",{base}'
        return self._with_common(base)


class PrometheusReader:
    """Async reader of variant metrics from one Prometheus server."""

    def __init__(
        self,
        base_url: str,
        *,
        templates: QueryTemplates | None = None,
        rate_window_s: float = 6.0,
        series_span_s: float = 30.0,
        step_s: float = 2.0,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        scrape_interval_s: float | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        """``scrape_interval_s``: the longest scrape interval of the series read; unset, half the
        rate window (``rate()`` needs two samples in its window, so a pool's window is at least two
        scrapes). With ``step_s`` it tells :func:`modelpool.scaling.demand.stale_after_s` how old a
        healthy series' newest sample may be.

        ``timeout_s`` bounds each query as a whole (connecting, sending, every read of the
        answer), whatever ``client``'s own timeouts (per read) are; ``max_answer_bytes`` bounds the
        answer's size."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        self._url_problem = base_url_problem(base_url)
        self.templates = templates or QueryTemplates()
        self.rate_window_s = rate_window_s
        self.series_span_s = series_span_s
        self.step_s = step_s
        self.scrape_interval_s = rate_window_s / 2 if scrape_interval_s is None else scrape_interval_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None

    async def aclose(self) -> None:
        """Close the HTTP client if this reader created it."""
        if self._own_client:
            await self._client.aclose()

    async def query(self, promql: str, at: float | None = None) -> list[Any]:
        """Run an instant query; return ``data.result`` (raises :class:`PrometheusError`)."""
        _, result = await self._query(promql, at)
        return result

    async def _query(self, promql: str, at: float | None) -> tuple[str, list[Any]]:
        """``(data.resultType, data.result)`` of an instant query."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        if self._url_problem is not None:
            raise PrometheusError(f"Prometheus URL {self.base_url!r} is invalid: {self._url_problem}")
        try:
            async with asyncio.timeout(self.timeout_s):
                status, raw = await self._get(params, promql)
        except TimeoutError as exc:  # the deadline (the reads' own timeouts raise httpx's)
            raise PrometheusError(
                f"Prometheus at {self.base_url} did not answer within {self.timeout_s:g}s (timed out)"
            ) from exc
        body = _json_object(status, raw)
        if status != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"query {promql!r} failed: {_failure(status, body)}",
                rejected=status in (400, 422),  # bad_data, execution
            )
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise PrometheusError(f"query {promql!r}: Prometheus answered without a data.result list")
        return str(data.get("resultType", "")), data["result"]

    async def _get(self, params: dict[str, str], promql: str) -> tuple[int, bytearray]:
        """``(HTTP status, body)`` of one GET of ``/api/v1/query``, the body read up to
        ``max_answer_bytes`` (raises :class:`PrometheusError` beyond, and when it fails)."""
        too_large = f"query {promql!r}: answer larger than {self.max_answer_bytes} bytes"
        try:
            async with self._client.stream(
                "GET",
                f"{self.base_url}/api/v1/query",
                params=params,
                headers={"Accept-Encoding": "identity"},  # httpx inflates a body whole, uncounted
            ) as response:
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise PrometheusError(
                        f"Prometheus at {self.base_url} answered HTTP {response.status_code} with a "
                        "compressed body (Content-Encoding), which the operator did not ask for"
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_answer_bytes:
                    raise PrometheusError(f"{too_large} (Content-Length {int(declared)})")
                body = bytearray()
                async for chunk in response.aiter_bytes():  # as sent: no Content-Encoding
                    body += chunk
                    if len(body) > self.max_answer_bytes:
                        raise PrometheusError(too_large)
                return response.status_code, body
        except PrometheusError:
            raise
        except httpx.InvalidURL as exc:
            raise PrometheusError(f"Prometheus URL {self.base_url!r} is invalid: {exc}") from exc
        except Exception as exc:  # httpx errors, and what its transport lets through (a bad port)
            raise PrometheusError(
                f"Prometheus at {self.base_url} unreachable: {unreachable_reason(exc)}"
            ) from exc

    async def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The single value of an instant-vector (or scalar) query, or ``None`` when it has no
        series or is NaN (raises :class:`UnexpectedResult` for a range vector or several series)."""
        result_type, result = await self._query(promql, at)
        if result_type == "scalar":
            value = _sample(result, promql)[1]
        else:
            series = _one_series(result_type, result, "vector", promql)
            if series is None:
                return None
            value = _sample(series.get("value"), promql)[1]
        return None if math.isnan(value) else value

    async def series(self, promql: str, at: float | None = None) -> tuple[RatePoint, ...]:
        """Recent values of an instant-vector query (via a subquery), oldest first."""
        query = series_query(promql, _duration(self.series_span_s), _duration(self.step_s))
        result_type, result = await self._query(query, at)
        series = _one_series(result_type, result, "matrix", promql)
        if series is None:
            return ()
        values = series.get("values")
        if not isinstance(values, list):
            raise UnexpectedResult(f"query {promql!r}: a series without values")
        points = (RatePoint(*_sample(sample, promql)) for sample in values)
        return tuple(p for p in points if not math.isnan(p.rps))

    def points_window_s(self, rate_template: str) -> float | None:
        """Seconds of requests each point of a rate series counts: the ``rate()`` window, or
        ``None`` for ``irate``, whose points count the requests between the last two samples."""
        return None if "irate(" in rate_template else self.rate_window_s

    async def read_variant(self, target: VariantTarget, at: float | None = None) -> VariantMetrics:
        """Everything :func:`decide` needs about one variant; failures become ``problem``.

        A query Prometheus rejects, or a template with an unknown placeholder, is named by the pool
        field that overrides it, with the fix; an unreachable Prometheus is not about any one query.
        """
        values = {
            "selector": target.selector,
            "router_selector": target.router_selector,
            "window": _duration(self.rate_window_s),
        }
        t = self.templates

        async def named(field: str, read: Callable[[str, float | None], Awaitable[_T]]) -> _T:
            try:
                return await read(t.render(field, **values), at)
            except UnexpectedResult as exc:
                raise PrometheusError(
                    f"{query_field(field)}: {exc}; fix the PromQL, or unset the field to use the default",
                    rejected=True,
                ) from exc
            except PrometheusError as exc:
                if not exc.rejected:
                    raise
                raise PrometheusError(
                    f"{query_field(field)}: Prometheus rejected the query ({exc}); fix the PromQL, "
                    "or unset the field to use the default",
                    rejected=True,
                ) from exc

        try:
            router_series, served_series = await asyncio.gather(
                named("router_rate", self.series), named("served_rate", self.series)
            )
            queue, compute, pending, newest, targets = await asyncio.gather(
                *(
                    named(name, self.scalar)
                    for name in ("queue_time_s", "compute_time_s", "pending", "newest_sample")
                ),
                self._triton_targets(target, values, at),
            )
        except (PrometheusError, ValueError) as exc:
            return VariantMetrics(problem=f"metrics missing: {exc}")
        # Both rate series are kept: the router's counts arrivals (it keeps counting when replicas
        # saturate), Triton's counts what was served (it sees traffic that bypasses the router, and
        # all of it when only some routers are scraped). The decision uses the fresh, larger one.
        return VariantMetrics(
            rate_series=router_series or served_series,
            rate_window_s=self.points_window_s(t.router_rate if router_series else t.served_rate),
            router_rps=router_series[-1].rps if router_series else None,
            served_series=served_series if router_series else (),
            served_window_s=self.points_window_s(t.served_rate) if router_series else None,
            queue_time_s=queue,
            compute_time_s=compute,
            pending_requests=pending,
            newest_sample_t=newest,
            step_s=self.step_s,
            scrape_interval_s=self.scrape_interval_s,
            triton_targets=None if targets is None else int(targets),
            expected_targets=target.ready_replicas if targets is not None else None,
        )

    async def _triton_targets(
        self, target: VariantTarget, values: dict[str, str], at: float | None
    ) -> int | None:
        """How many scrape targets add to the variant's served rate, where it can tell a partial
        scrape: with the default served rate (an override may read other series) and two ready
        replicas or more (with one, a target that is down leaves no Triton series at all, which the
        other checks see). ``None`` when not counted, or when no Triton series is there."""
        if (
            target.ready_replicas is None
            or target.ready_replicas < 2
            or self.templates.served_rate != QueryTemplates.served_rate
        ):
            return None
        count = await self.scalar(Template(TRITON_TARGETS).substitute(values), at)
        return None if count is None else round(count)
