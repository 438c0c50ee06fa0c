"""The router's Prometheus metrics (one registry per router, so tests can run several).

The hot path only bumps plain Python numbers (a dict entry, a bisect into bucket counts);
a custom collector turns them into Prometheus families at scrape time.  That keeps the
per-request cost of metrics to about a microsecond.

Names (all prefixed ``modelpool_router_``, labelled with ``pool`` and ``policy``, the RoutingPolicy
that programs the router; ``policy`` is absent while no policy has pushed a config):

* ``requests_total{variant,tier}``: client requests answered, by the variant that answered;
* ``responses_total{code}``: client responses by HTTP status;
* ``client_disconnects_total{variant,tier}``: requests whose client left before the answer; the
  upstream attempt in flight (``variant``) was cancelled, and nothing else counted them (no
  response, no upstream error, nothing for the breaker).  ``variant`` and ``tier`` are empty for a
  request cut off before any attempt (while a scorer ran in a thread);
* ``upstream_requests_total{variant}`` / ``upstream_errors_total{variant,kind}``: attempts sent
  to variants and their failures (kind: timeout, connect, http_5xx, not_served);
* ``unavailable_requests_total{variant}``: requests the policy meant for a variant that had no
  available endpoint then (none listed, e.g. scaled to zero, or every breaker open); they went to
  another variant or failed, and were never an attempt on it.  The scaler adds them to the
  variant's ``upstream_requests_total`` as its demand, so a tier at zero replicas is seen; created
  at 0 for every configured variant on each config change, so its rate exists before any demand;
* ``upstream_latency_seconds{variant}``: histogram of one attempt's latency;
* ``request_latency_seconds``: histogram of the whole routed request;
* ``complexity_score``: histogram of tiered mode's per-request scores;
* ``cascade_decisions_total{outcome}`` (accepted|escalated|escalation_failed),
  ``cascade_escalations_total`` (drafts the verifier re-answered: ``escalated`` only; an escalation
  that failed kept the draft's answer), ``cascade_acceptance_ratio`` (accepted / every cascade
  decision: the share of drafts confident enough to keep; a draft kept only because its escalation
  failed was not accepted);
* ``large_tier_share``: share of answered requests the large tier answered (collaboration ratio);
* ``cost_spent_total``, ``cost_all_large_total``, ``cost_saved``: cost actually spent, cost had
  everything gone to the large variant, and their difference;
* ``cache_total{result}`` (hit|miss), ``config_generation``, ``endpoint_available{variant,endpoint}``;
* ``client_connections`` (open now), ``client_connections_max`` (the cap: ``--max-connections``, or
  lower when the open-files limit cannot hold it) and ``client_connections_refused_total{reason}``
  (answered 503 at once: ``max_connections``, over the cap; ``out_of_files``, the process had no
  file descriptor for them), once the router serves;
* ``open_files_limit``: the soft ``RLIMIT_NOFILE`` the router runs under (``router serve`` only;
  absent when unlimited).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_P = "modelpool_router_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Hist:
    """A histogram's bucket counts and sum (non-cumulative counts; the last slot is +Inf)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class RouterMetrics:
    """All metrics of one router, kept as plain numbers and exported by a collector."""

    def __init__(
        self,
        pool: str,
        generation: Callable[[], int],
        endpoint_states: Callable[[], list[tuple[str, str, bool]]],
        registry: CollectorRegistry | None = None,
        policy: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.generation = generation
        self.endpoint_states = endpoint_states
        self.registry = registry or CollectorRegistry()
        self.requests: dict[tuple[str, str], int] = {}
        self.responses: dict[int, int] = {}
        self.upstream: dict[str, int] = {}
        self.unavailable: dict[str, int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.upstream_latency: dict[str, Hist] = {}
        self.latency = Hist(LATENCY_BUCKETS)
        self.scores = Hist(SCORE_BUCKETS)
        self.cascade_outcomes: dict[str, int] = {}
        self.cache_results: dict[str, int] = {}
        self.client_disconnects: dict[tuple[str, str], int] = {}
        self.answers = 0
        self.large_answers = 0
        self.cascade_accepted = 0  # drafts at or above acceptThreshold
        self.cascade_escalated = 0  # drafts the verifier re-answered
        self.cascade_decided = 0  # every cascade decision (accepted, escalated, escalation_failed)
        self.cost_spent = 0.0
        self.cost_baseline = 0.0
        self.connections: Callable[[], ConnectionCounts] | None = None  # set once the router serves
        self.open_files_limit: int | None = None  # set by ``router serve`` (None: unlimited or unknown)
        self.registry.register(_Exporter(self))

    def forget_variants(self, keep: Collection[str]) -> None:
        """Drop the per-variant numbers of variants no longer configured (their series leave
        /metrics), so a router whose variants change over its life does not grow without bound."""
        for samples in (self.requests, self.errors, self.client_disconnects):
            for key in [k for k in samples if k[0] and k[0] not in keep]:
                del samples[key]
        for per_variant in (self.upstream, self.unavailable, self.upstream_latency):
            for name in [n for n in per_variant if n not in keep]:
                del per_variant[name]

    def expect_variants(self, names: Collection[str]) -> None:
        """Export ``unavailable_requests_total`` at 0 for each configured variant that has none yet,
        so that Prometheus has a rate for it (0) before the first request it could not take."""
        for name in names:
            self.unavailable.setdefault(name, 0)

    def unavailable_request(self, variant: str) -> None:
        """A request the policy meant for ``variant`` found no available endpoint there."""
        self.unavailable[variant] = self.unavailable.get(variant, 0) + 1

    def attempt(self, variant: str, seconds: float, error_kind: str | None) -> None:
        """One upstream attempt finished."""
        self.upstream[variant] = self.upstream.get(variant, 0) + 1
        hist = self.upstream_latency.get(variant)
        if hist is None:
            hist = self.upstream_latency[variant] = Hist(LATENCY_BUCKETS)
        hist.counts[bisect_left(hist.bounds, seconds)] += 1  # hist.observe(seconds), inline
        hist.total += seconds
        if error_kind is not None:
            key = (variant, error_kind)
            self.errors[key] = self.errors.get(key, 0) + 1

    def answered(self, variant: str, tier: str, cost: float, baseline_cost: float) -> None:
        """A client request got a variant's answer; ``cost`` is what every variant that ran cost."""
        key = (variant, tier)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.answers += 1
        if tier == "large":
            self.large_answers += 1
        self.cost_spent += cost
        self.cost_baseline += baseline_cost

    def response(self, status: int, seconds: float) -> None:
        """A client response went out ``seconds`` after the request was read."""
        self.responses[status] = self.responses.get(status, 0) + 1
        hist = self.latency
        hist.counts[bisect_left(hist.bounds, seconds)] += 1  # hist.observe(seconds), inline
        hist.total += seconds

    def client_disconnect(self, variant: str, tier: str) -> None:
        """A client left while its request was waiting on ``variant`` (``""``: on no upstream)."""
        key = (variant, tier)
        self.client_disconnects[key] = self.client_disconnects.get(key, 0) + 1

    def score(self, value: float) -> None:
        self.scores.observe(value)

    def cascade(self, outcome: str) -> None:
        """accepted, escalated or escalation_failed."""
        self.cascade_outcomes[outcome] = self.cascade_outcomes.get(outcome, 0) + 1
        self.cascade_decided += 1
        if outcome == "accepted":
            self.cascade_accepted += 1
        elif outcome == "escalated":
            self.cascade_escalated += 1

    def cache(self, hit: bool) -> None:
        result = "hit" if hit else "miss"
        self.cache_results[result] = self.cache_results.get(result, 0) + 1


Identity = dict[str, str]  # the labels every series carries: pool, and policy once known
ConnectionCounts = tuple[int, int, dict[str, int]]
"""The HTTP server's client connections: open now, the cap, and those refused by reason."""
REFUSAL_REASONS = ("max_connections", "out_of_files")


def _counter(
    name: str, doc: str, labels: list[str], samples: dict[Any, float], ident: Identity
) -> CounterMetricFamily:
    family = CounterMetricFamily(_P + name, doc, labels=[*ident, *labels])
    for key, value in samples.items():
        parts = key if isinstance(key, tuple) else (key,)
        family.add_metric([*ident.values(), *(str(p) for p in parts)], value)
    return family


def _gauge(name: str, doc: str, value: float, ident: Identity) -> GaugeMetricFamily:
    family = GaugeMetricFamily(_P + name, doc, labels=list(ident))
    family.add_metric(list(ident.values()), value)
    return family


def _histogram(
    name: str, doc: str, labels: list[str], hists: dict[tuple[str, ...], Hist], ident: Identity
) -> Metric:
    family = HistogramMetricFamily(_P + name, doc, labels=[*ident, *labels])
    for key, hist in hists.items():
        family.add_metric([*ident.values(), *key], hist.buckets(), hist.total)
    return family


class _Exporter(Collector):
    """Builds every family from the plain numbers at scrape time."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        policy = m.policy()
        pool = {"pool": m.pool, **({"policy": policy} if policy else {})}
        decided = m.cascade_decided
        yield _counter(
            "requests", "Requests answered, by variant", ["variant", "tier"], dict(m.requests), pool
        )
        yield _counter("responses", "Client responses by status", ["code"], dict(m.responses), pool)
        yield _counter(
            "client_disconnects",
            "Requests whose client left before the answer (their upstream work was cancelled)",
            ["variant", "tier"],
            dict(m.client_disconnects),
            pool,
        )
        yield _counter("upstream_requests", "Attempts sent to variants", ["variant"], dict(m.upstream), pool)
        yield _counter(
            "unavailable_requests",
            "Requests meant for a variant that had no available endpoint (they went elsewhere or failed)",
            ["variant"],
            dict(m.unavailable),
            pool,
        )
        yield _counter(
            "upstream_errors", "Failed attempts by kind", ["variant", "kind"], dict(m.errors), pool
        )
        yield _histogram(
            "upstream_latency_seconds", "One attempt's latency", ["variant"],
            {(v,): h for v, h in m.upstream_latency.items()}, pool,
        )  # fmt: skip
        yield _histogram("request_latency_seconds", "Routed request latency", [], {(): m.latency}, pool)
        yield _histogram("complexity_score", "Complexity scores (tiered mode)", [], {(): m.scores}, pool)
        yield _counter("cascade_decisions", "Cascade outcomes", ["outcome"], dict(m.cascade_outcomes), pool)
        yield _counter(
            "cascade_escalations", "Drafts the verifier re-answered", [], {(): m.cascade_escalated}, pool
        )
        yield _gauge("cascade_acceptance_ratio",
                     "Share of cascade decisions that kept the draft at acceptThreshold (accepted / all)",
                     m.cascade_accepted / decided if decided else 0.0, pool)  # fmt: skip
        yield _gauge("large_tier_share", "Share of answered requests the large tier answered",
                     m.large_answers / m.answers if m.answers else 0.0, pool)  # fmt: skip
        yield _counter("cost_spent", "Cost of the variants that ran", [], {(): m.cost_spent}, pool)
        yield _counter("cost_all_large", "Cost had every request gone to the large variant", [],
                       {(): m.cost_baseline}, pool)  # fmt: skip
        yield _gauge("cost_saved", "Cost saved against sending every request to the large variant",
                     m.cost_baseline - m.cost_spent, pool)  # fmt: skip
        yield _counter("cache", "Response cache lookups", ["result"], dict(m.cache_results), pool)
        yield _gauge("config_generation", "Generation of the active config", float(m.generation()), pool)
        endpoints = GaugeMetricFamily(
            _P + "endpoint_available", "1 when the endpoint's circuit breaker lets requests through",
            labels=[*pool, "variant", "endpoint"],
        )  # fmt: skip
        for variant, url, up in m.endpoint_states():
            endpoints.add_metric([*pool.values(), variant, url], 1.0 if up else 0.0)
        yield endpoints
        if m.connections is not None:
            open_now, cap, refused = m.connections()
            yield _gauge("client_connections", "Client connections open", open_now, pool)
            yield _gauge("client_connections_max",
                         "Client connections served at once (more are answered 503): --max-connections, "
                         "or less when the open-files limit cannot hold it", cap, pool)  # fmt: skip
            yield _counter(
                "client_connections_refused",
                "Client connections answered 503 at once: over the cap, or with no file descriptor left",
                ["reason"], {**dict.fromkeys(REFUSAL_REASONS, 0), **refused}, pool,
            )  # fmt: skip
        if m.open_files_limit is not None:
            yield _gauge("open_files_limit", "The open-files soft limit the router runs under",
                         m.open_files_limit, pool)  # fmt: skip
