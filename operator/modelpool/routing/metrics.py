"""The router's Prometheus metrics (one registry per router, so tests can run several).

Names (all prefixed ``modelpool_router_``, labelled with ``pool``):

* ``requests_total{variant,tier}``: client requests answered, by the variant that answered;
* ``responses_total{code}``: client responses by HTTP status;
* ``upstream_requests_total{variant}`` / ``upstream_errors_total{variant,kind}``: attempts sent
  to variants and their failures (kind: timeout, connect, http_5xx);
* ``upstream_latency_seconds{variant}``: histogram of one attempt's latency;
* ``request_latency_seconds``: histogram of the whole routed request;
* ``complexity_score``: histogram of tiered mode's per-request scores;
* ``cascade_decisions_total{outcome}`` (accepted|escalated|escalation_failed),
  ``cascade_escalations_total``, ``cascade_acceptance_ratio``;
* ``large_tier_share``: share of answered requests the large tier answered (collaboration ratio);
* ``cost_spent_total``, ``cost_all_large_total``, ``cost_saved``: cost actually spent, cost had
  everything gone to the large variant, and their difference;
* ``cache_total{result}`` (hit|miss), ``config_generation``, ``endpoint_available{variant,endpoint}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


class _Ratios(Collector):
    """Gauges computed at scrape time from the counters (nothing extra per request)."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self._m
        share = GaugeMetricFamily(
            "modelpool_router_large_tier_share",
            "Share of answered requests the large tier answered",
            labels=["pool"],
        )
        share.add_metric([m.pool], m.large_answers / m.answers if m.answers else 0.0)
        acceptance = GaugeMetricFamily(
            "modelpool_router_cascade_acceptance_ratio", "Share of cascade drafts kept", labels=["pool"]
        )
        decided = m.cascade_accepted + m.cascade_escalated
        acceptance.add_metric([m.pool], m.cascade_accepted / decided if decided else 0.0)
        saved = GaugeMetricFamily(
            "modelpool_router_cost_saved", "Cost saved against sending every request to the large variant",
            labels=["pool"],
        )  # fmt: skip
        saved.add_metric([m.pool], m.cost_baseline - m.cost_spent)
        generation = GaugeMetricFamily(
            "modelpool_router_config_generation", "Generation of the active config", labels=["pool"]
        )
        generation.add_metric([m.pool], float(m.generation()))
        endpoints = GaugeMetricFamily(
            "modelpool_router_endpoint_available",
            "1 when the endpoint's circuit breaker lets requests through",
            labels=["pool", "variant", "endpoint"],
        )
        for variant, url, up in m.endpoint_states():
            endpoints.add_metric([m.pool, variant, url], 1.0 if up else 0.0)
        yield from (share, acceptance, saved, generation, endpoints)


class RouterMetrics:
    """All metrics of one router; per-variant children are cached for the hot path."""

    def __init__(
        self,
        pool: str,
        generation: Callable[[], int],
        endpoint_states: Callable[[], list[tuple[str, str, bool]]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.pool = pool
        self.generation = generation
        self.endpoint_states = endpoint_states
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "modelpool_router_"
        self._requests = Counter(
            p + "requests", "Requests answered, by variant", ["pool", "variant", "tier"], registry=r
        )
        self._responses = Counter(p + "responses", "Client responses by status", ["pool", "code"], registry=r)
        self._upstream = Counter(
            p + "upstream_requests", "Attempts sent to variants", ["pool", "variant"], registry=r
        )
        self._errors = Counter(
            p + "upstream_errors", "Failed attempts by kind", ["pool", "variant", "kind"], registry=r
        )
        self._upstream_latency = Histogram(
            p + "upstream_latency_seconds", "One attempt's latency", ["pool", "variant"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._latency = Histogram(
            p + "request_latency_seconds",
            "Routed request latency",
            ["pool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(pool)
        self._score = Histogram(
            p + "complexity_score",
            "Complexity scores (tiered mode)",
            ["pool"],
            buckets=_SCORE_BUCKETS,
            registry=r,
        ).labels(pool)
        self._cascade = Counter(p + "cascade_decisions", "Cascade outcomes", ["pool", "outcome"], registry=r)
        self._escalations = Counter(
            p + "cascade_escalations", "Drafts the verifier re-answered", ["pool"], registry=r
        ).labels(pool)
        self._cost_spent = Counter(
            p + "cost_spent", "Cost of the variants that ran", ["pool"], registry=r
        ).labels(pool)
        self._cost_baseline = Counter(
            p + "cost_all_large", "Cost had every request gone to the large variant", ["pool"], registry=r
        ).labels(pool)
        self._cache = Counter(p + "cache", "Response cache lookups", ["pool", "result"], registry=r)
        r.register(_Ratios(self))
        self.answers = 0
        self.large_answers = 0
        self.cascade_accepted = 0
        self.cascade_escalated = 0
        self.cost_spent = 0.0
        self.cost_baseline = 0.0
        self._children: dict[tuple[str, ...], object] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> object:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(self.pool, *labels)
            self._children[key] = child
        return child

    def attempt(self, variant: str, seconds: float, error_kind: str | None) -> None:
        """One upstream attempt finished."""
        self._child(self._upstream, variant).inc()  # type: ignore[attr-defined]
        self._child(self._upstream_latency, variant).observe(seconds)  # type: ignore[attr-defined]
        if error_kind is not None:
            self._child(self._errors, variant, error_kind).inc()  # type: ignore[attr-defined]

    def answered(self, variant: str, tier: str, cost: float, baseline_cost: float) -> None:
        """A client request got a variant's answer; ``cost`` is what every variant that ran cost."""
        self._child(self._requests, variant, tier).inc()  # type: ignore[attr-defined]
        self.answers += 1
        if tier == "large":
            self.large_answers += 1
        self.cost_spent += cost
        self.cost_baseline += baseline_cost
        self._cost_spent.inc(cost)
        self._cost_baseline.inc(baseline_cost)

    def response(self, status: int, seconds: float) -> None:
        """A client response went out ``seconds`` after the request was read."""
        self._child(self._responses, str(status)).inc()  # type: ignore[attr-defined]
        self._latency.observe(seconds)

    def score(self, value: float) -> None:
        self._score.observe(value)

    def cascade(self, outcome: str) -> None:
        """accepted, escalated or escalation_failed."""
        self._child(self._cascade, outcome).inc()  # type: ignore[attr-defined]
        if outcome == "accepted":
            self.cascade_accepted += 1
        else:
            self.cascade_escalated += 1
            self._escalations.inc()

    def cache(self, hit: bool) -> None:
        self._child(self._cache, "hit" if hit else "miss").inc()  # type: ignore[attr-defined]
