"""Read one variant's live metrics from Prometheus' HTTP API (``/api/v1/query``) with httpx.

The PromQL is a set of templates (:class:`QueryTemplates`) with ``$selector`` (label matchers of
the variant's Triton series, e.g. ``model="small",namespace="prod"``), ``$router_selector`` (label
matchers of the router's series), ``$window`` (the ``rate()`` window) and, for series, ``$span`` and
``$step`` (subquery range and resolution). Defaults read Triton's ``nv_inference_*`` metrics and
the router's ``modelpool_router_upstream_requests_total{variant=...}``; a pool may override any of them.

Query failures never raise out of :meth:`PrometheusReader.read_variant`: they come back as
``VariantMetrics(problem=...)``, which makes :func:`modelpool.scaling.decide` hold the last decision.
Timestamps are Prometheus' (Unix epoch seconds): call ``decide`` with ``now=time.time()``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from string import Template
from typing import Any, TypeVar

import httpx

from modelpool.api.modelpool import PROMQL_PLACEHOLDER_HINT, MetricQueries
from modelpool.scaling.types import RatePoint, VariantMetrics

_T = TypeVar("_T")


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or rejected a query (``rejected``: the query itself was refused)."""

    def __init__(self, message: str, rejected: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected


def query_field(name: str) -> str:
    """The ModelPool field that overrides template ``name``.

    ``served_rate`` -> ``spec.scaling.queries.servedRate``.
    """
    return "spec.scaling.queries." + str(MetricQueries.model_fields[name].alias)


@dataclass(frozen=True)
class QueryTemplates:
    """PromQL templates for one pool (``string.Template`` syntax: ``$selector``, ``$window``, ...)."""

    served_rate: str = "sum(rate(nv_inference_request_success{$selector}[$window]))"
    router_rate: str = "sum(rate(modelpool_router_upstream_requests_total{$router_selector}[$window]))"
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
        "or timestamp(modelpool_router_upstream_requests_total{$router_selector}))"
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


def series_query(instant: str, span: str, step: str) -> str:
    """Turn an instant-vector query into a subquery returning its recent values (a matrix)."""
    return f"({instant})[{span}:{step}]"


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class VariantTarget:
    """Which series belong to one variant: Triton label matchers and router label matchers."""

    model: str
    variant: str
    extra_matchers: str = ""
    pool: str = ""

    @property
    def selector(self) -> str:
        """Label matchers for Triton's series."""
        base = f'model="{self.model}"'
        return f"{base},{self.extra_matchers}" if self.extra_matchers else base

    @property
    def router_selector(self) -> str:
        """Label matchers for the router's series."""
        base = f'variant="{self.variant}"'
        if self.pool:
            base = f'pool="{self.pool}",{base}'
        return f"{base},{self.extra_matchers}" if self.extra_matchers else base


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.templates = templates or QueryTemplates()
        self.rate_window_s = rate_window_s
        self.series_span_s = series_span_s
        self.step_s = step_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None

    async def aclose(self) -> None:
        """Close the HTTP client if this reader created it."""
        if self._own_client:
            await self._client.aclose()

    async def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Run an instant query; return ``data.result`` (raises :class:`PrometheusError`)."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            response = await self._client.get(f"{self.base_url}/api/v1/query", params=params)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"Prometheus at {self.base_url} unreachable: {exc!r}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(f"Prometheus answered HTTP {response.status_code} without JSON") from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"query {promql!r} failed: HTTP {response.status_code} {body.get('errorType', '')} "
                f"{body.get('error', '')}".strip(),
                rejected=response.status_code in (400, 422),  # bad_data, execution
            )
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The single value of an instant-vector query, or ``None`` when it has no series or is NaN."""
        result = await self.query(promql, at)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    async def series(self, promql: str, at: float | None = None) -> tuple[RatePoint, ...]:
        """Recent values of an instant-vector query (via a subquery), oldest first."""
        query = series_query(promql, _duration(self.series_span_s), _duration(self.step_s))
        result = await self.query(query, at)
        if not result:
            return ()
        points = (RatePoint(float(t), float(v)) for t, v in result[0]["values"])
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
            queue, compute, pending, newest = await asyncio.gather(
                *(
                    named(name, self.scalar)
                    for name in ("queue_time_s", "compute_time_s", "pending", "newest_sample")
                )
            )
        except (PrometheusError, ValueError) as exc:
            return VariantMetrics(problem=f"metrics missing: {exc}")
        return VariantMetrics(
            rate_series=router_series or served_series,
            rate_window_s=self.points_window_s(t.router_rate if router_series else t.served_rate),
            router_rps=router_series[-1].rps if router_series else None,
            queue_time_s=queue,
            compute_time_s=compute,
            pending_requests=pending,
            newest_sample_t=newest,
        )
