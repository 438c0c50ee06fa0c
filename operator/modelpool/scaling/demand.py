"""Metric health checks and the demand estimate of one variant (pure functions)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from modelpool.scaling.types import RatePoint, VariantMetrics, VariantSettings

MAX_PLAUSIBLE_SECONDS = 86400.0
"""A queue or compute time per request longer than a day is absurd (and a finite but huge one
would overflow the sizing)."""


def _clock_problem(metrics: VariantMetrics, settings: VariantSettings, now: float) -> str | None:
    """Timestamps no Prometheus writes: not finite, not increasing along a rate series, or
    further in the future than ``stale_after_s`` (the clocks of Prometheus and the caller apart).

    The messages carry no timestamp or age: they become the pool's ``MetricsAvailable`` condition,
    and a number that changes at every decision would rewrite the status at every decision."""
    rate_series = (metrics.rate_series, metrics.served_series)
    stamps = [p.t for series in rate_series for p in series]
    if metrics.newest_sample_t is not None:
        stamps.append(metrics.newest_sample_t)
    for t in stamps:
        if not math.isfinite(t):
            return f"metrics absurd: sample timestamp = {t}"
    for series in rate_series:
        for a, b in itertools.pairwise(p.t for p in series):
            if b <= a:
                return "metrics absurd: rate series timestamps repeat or go back, not forward"
    ahead = max(stamps, default=now) - now
    if ahead > settings.stale_after_s:
        return (
            f"metrics absurd: a sample more than staleAfter {settings.stale_after_s:.0f}s in the "
            "future: are the clocks of Prometheus and the operator apart?"
        )
    return None


CLOCK_HINT_S = 5.0
"""The least a caller's clock must be ahead of Prometheus' (``VariantMetrics.prometheus_now``)
for a stale hold to say so."""


def _clock_ahead(metrics: VariantMetrics, limit: float, now: float) -> str:
    """What a stale hold adds when the caller's clock ``now`` is ahead of Prometheus' own: that
    clock makes every sample look old (a clock behind is :func:`_clock_problem`'s). Said when the
    newest sample is fresh by Prometheus' clock, or the clocks alone are more than ``limit`` apart.
    The distance is rounded to 10 s: the message must not change from one decision to the next."""
    theirs = metrics.prometheus_now
    newest = metrics.newest_sample_t
    if theirs is None or newest is None or not math.isfinite(theirs):
        return ""
    ahead = now - theirs
    fresh_for_them = theirs - newest <= limit
    if ahead < CLOCK_HINT_S or not (fresh_for_them or ahead > limit):
        return ""
    fresh = " (the sample is fresh by Prometheus' clock)" if fresh_for_them else ""
    return (
        f"; the operator's clock is ~{max(10, round(ahead / 10) * 10):.0f}s ahead of Prometheus'"
        f"{fresh}: sync the clocks (NTP)"
    )


def _size_problem(metrics: VariantMetrics, settings: VariantSettings) -> str | None:
    """Finite values too large to size for: a request taking longer than a day, or a backlog
    that would need more than ``max_plausible_rps`` to drain."""
    for label, value in (("queue time", metrics.queue_time_s), ("compute time", metrics.compute_time_s)):
        if value is not None and value > MAX_PLAUSIBLE_SECONDS:
            return f"metrics absurd: {label} ~{value:.0e}s per request (> {MAX_PLAUSIBLE_SECONDS:g}s)"
    pending = metrics.pending_requests
    if pending is not None and pending > settings.max_plausible_rps * settings.backlog_drain_s:
        return (
            f"metrics absurd: ~{pending:.0e} pending requests would need more than maxPlausibleRps "
            f"{settings.max_plausible_rps:.0f} to drain within {settings.backlog_drain_s:g}s"
        )
    return None


def stale_after_s(metrics: VariantMetrics, settings: VariantSettings) -> float:
    """How old the newest sample may be before the metrics are stale: ``settings.stale_after_s``
    (30 s by default), or, where the reader's series are sparser, one scrape interval (the newest
    sample's age at most) plus one step (a margin: a scrape takes time, and the series' newest point
    is up to one step old). So a rate window of 240 s, read every 60 s at a scrape of up to 120 s,
    allows 180 s: a fixed 30 s held every decision made while the newest scrape was older."""
    sampled = (metrics.scrape_interval_s or 0.0) + (metrics.step_s or 0.0)
    return max(settings.stale_after_s, sampled)


def partial_scrape(metrics: VariantMetrics, settings: VariantSettings, now: float) -> str | None:
    """Why Triton's series are partial: fewer of the variant's scrape targets export them than it
    has ready replicas (a target down, or a pod not scraped yet), so their sum undercounts what the
    variant serves. That is a lower bound of the demand: it may still scale the variant up, never
    down (:func:`modelpool.scaling.variant.wish_for`). ``None`` when they are complete or uncounted,
    or when the decision's rate is the router's (its arrivals do not depend on Triton's targets)."""
    targets, expected = metrics.triton_targets, metrics.expected_targets
    if targets is None or expected is None or targets >= expected:
        return None
    if observed_metrics(metrics, settings, now).router_rps is not None:
        return None
    return (
        f"metrics partial: Triton's series come from {targets} scrape target(s) for {expected} ready "
        "replicas (a target down, or not scraped yet?), so the served rate misses the others' requests"
    )


def metrics_problem(metrics: VariantMetrics, settings: VariantSettings, now: float) -> str | None:
    """Why these metrics must not drive a decision (missing, stale or absurd), or ``None`` if usable
    (partial ones may, upwards only: :func:`partial_scrape`)."""
    if metrics.problem:
        return metrics.problem
    if not metrics.rate_series and not metrics.served_series and metrics.router_rps is None:
        return "metrics missing: no request-rate samples from Triton or the router"
    if metrics.newest_sample_t is None:
        return "metrics missing: no sample timestamp"
    clock = _clock_problem(metrics, settings, now)
    if clock is not None:
        return clock
    limit = stale_after_s(metrics, settings)
    if now - metrics.newest_sample_t > limit:
        # No age in the message: it would change at every decision of a lasting outage.
        stale = f"metrics stale: newest sample older than staleAfter {limit:.0f}s"
        return stale + _clock_ahead(metrics, limit, now)
    used = observed_metrics(metrics, settings, now).rate_series
    if used and not _fresh(used, metrics, settings, now):
        # The newest sample is another series' (a counter still scraped, a rate window without two
        # samples): the rate series the decision would use ended long ago.
        return (
            f"metrics stale: the newest point of the rate series is older than staleAfter {limit:.0f}s "
            "plus a step"
        )
    values: dict[str, list[float | None]] = {
        "request rate": [p.rps for p in metrics.rate_series],
        "served rate": [p.rps for p in metrics.served_series],
        "router rate": [metrics.router_rps],
        "queue time": [metrics.queue_time_s],
        "compute time": [metrics.compute_time_s],
        "pending requests": [metrics.pending_requests],
    }
    for label, series in values.items():
        for value in series:
            if value is None:
                continue
            if not math.isfinite(value):
                return f"metrics absurd: {label} = {value}"
            if value < 0:
                return f"metrics absurd: {label} is negative"
    rates = [p.rps for series in (metrics.rate_series, metrics.served_series) for p in series]
    rates.append(metrics.router_rps or 0.0)
    if max(rates) > settings.max_plausible_rps:
        return (
            f"metrics absurd: request rate ~{max(rates):.0e} req/s > maxPlausibleRps "
            f"{settings.max_plausible_rps:.0f}"
        )
    return _size_problem(metrics, settings)


def _fresh(
    series: tuple[RatePoint, ...], metrics: VariantMetrics, settings: VariantSettings, now: float
) -> bool:
    """The series' newest point is at most :func:`stale_after_s` old, plus one step: Prometheus
    aligns a subquery's points to multiples of the step, so its newest point is up to a step older
    than the newest sample."""
    slack = metrics.step_s or 0.0
    return bool(series) and now - series[-1].t <= stale_after_s(metrics, settings) + slack


def observed_metrics(metrics: VariantMetrics, settings: VariantSettings, now: float) -> VariantMetrics:
    """The metrics with the one rate series the decision uses (``served_series`` emptied).

    With both the router's arrival series (``rate_series``) and Triton's served series, a series
    counts only while its own newest point is at most :func:`stale_after_s` plus one step old (a
    router that stopped being scraped leaves its last rate behind), and of the fresh ones the one
    whose newest rate is larger is used, the router's on a tie. The router counts arrivals, so it
    is normally the larger; when it is not, part of the router is unscraped or traffic bypasses
    it, and its rate would size the variant for a fraction of what it serves. With neither fresh
    the router's is kept; :func:`metrics_problem` holds on a series returned here that is not
    fresh (a lone one included), whatever the newest sample of the other counters."""
    if not metrics.served_series:
        return metrics
    router = replace(metrics, served_series=(), served_window_s=None)
    served = replace(
        router,
        rate_series=metrics.served_series,
        rate_window_s=metrics.served_window_s,
        router_rps=None,
    )
    router_fresh = _fresh(metrics.rate_series, metrics, settings, now)
    served_fresh = _fresh(metrics.served_series, metrics, settings, now)
    if router_fresh and served_fresh:
        return served if metrics.served_series[-1].rps > metrics.rate_series[-1].rps else router
    if served_fresh or not metrics.rate_series:
        return served
    return router


def capacity_problem(
    capacity: float | None, metrics: VariantMetrics, settings: VariantSettings
) -> str | None:
    """Why a per-replica capacity must not size the variant: not finite, or above
    ``max_plausible_rps`` (one replica serving more than any plausible rate would size every
    demand to one replica). ``None`` when it is usable or unknown."""
    if capacity is None or (math.isfinite(capacity) and capacity <= settings.max_plausible_rps):
        return None
    limit = f"maxPlausibleRps {settings.max_plausible_rps:.0f}"
    if settings.capacity_per_replica_rps is not None:
        return (
            f"capacity absurd: capacityPerReplicaRps = {capacity:g} req/s, must be a finite number "
            f"<= {limit}; fix the setting or the variant's profile"
        )
    return (
        f"metrics absurd: compute time ~{metrics.compute_time_s or 0.0:.0e}s per request makes one "
        f"replica serve more than {limit} req/s"
    )


def capacity_per_replica(metrics: VariantMetrics, settings: VariantSettings) -> float | None:
    """Requests/s one replica serves at full load: the setting, else instances / compute time
    (check it with :func:`capacity_problem`)."""
    if settings.capacity_per_replica_rps is not None:
        return settings.capacity_per_replica_rps
    if metrics.compute_time_s is not None and metrics.compute_time_s > 0:
        return settings.instances_per_replica / metrics.compute_time_s
    return None


def _line(xs: list[float], ys: list[float]) -> tuple[float, float, float, float] | None:
    """Least-squares line through the points: ``(mean x, mean y, slope, sum of squared x
    deviations)``; None when x never varies."""
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread <= 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    return mean_x, mean_y, slope, spread


Z95 = 1.6449
"""One-sided 95 % quantile of the standard normal distribution."""


def _spacing(xs: list[float]) -> float:
    """The typical gap between the points' timestamps (their median gap)."""
    gaps = sorted(b - a for a, b in itertools.pairwise(xs))
    return gaps[len(gaps) // 2]


def overlap_sum(weights: list[float], xs: list[float], window: float) -> float:
    """``sum(wi * wj * max(0, window - |xi - xj|))`` over every pair of points, the double loop's
    float exactly, in O(n x points per window) for ``xs`` in time order.

    Only pairs less than ``window`` apart add anything; the others' terms are zeros, and adding a
    zero leaves a float sum as it is, so summing the rest in the double loop's order (row by row,
    each row's band left to right) gives the same number to the bit. A row's band is where
    ``window - abs(xi - xj) > 0``: with rounding monotone, a contiguous run of ``j`` around ``i``
    whose ends only move forward with ``i``. The double loop took O(n^2): at the CRD's extremes (a
    0.5 s step over a 3600 s trend window, 7,200 points) 8.6 s per variant on the event loop. Points
    out of time order (which :func:`metrics_problem` refuses) are summed over every pair."""
    n = len(xs)
    if any(b < a for a, b in itertools.pairwise(xs)):
        return sum(
            wi * wj * max(0.0, window - abs(xi - xj))
            for wi, xi in zip(weights, xs, strict=True)
            for wj, xj in zip(weights, xs, strict=True)
        )
    total = 0.0
    lo = hi = 0
    for i in range(n):
        wi, xi = weights[i], xs[i]
        while lo < i and window - abs(xi - xs[lo]) <= 0:
            lo += 1
        hi = max(hi, i)
        while hi < n and window - abs(xi - xs[hi]) > 0:
            hi += 1
        for j in range(lo, hi):
            total += wi * weights[j] * max(0.0, window - abs(xi - xs[j]))
    return total


def trend_slope(
    series: tuple[RatePoint, ...],
    window_s: float,
    rate_window_s: float | None = None,
    dispersion: float | None = None,
) -> float:
    """Least-squares slope (req/s per second) of the points within ``window_s`` of the newest one,
    or 0 when the points do not show a rise: a positive slope counts only when arrivals at a steady
    rate would show one as steep in under 5 % of windows (one-sided test at 95 % confidence).

    The noise the slope is tested against is the arrivals' own: each point counts the requests of
    its rate window (``rate_window_s``; without it, those since the point before), Poisson at the
    points' mean rate and scaled by the measured :func:`dispersion_index` (``dispersion`` when the
    caller has it already), and points whose windows
    overlap share the requests of the overlap. This gives the slope's exact variance under a steady
    load however the windows overlap; the points' own scatter around the line would not (2 s
    rates read every 0.5 s scatter little, so one clump of requests looks like a clean rise).

    A slope is extrapolated over the whole look-ahead, so on clumped arrivals an untested one
    mostly buys replicas for noise: in the benchmark it cost 5-16 % more GPU-hours for at most
    0.4 points of SLO attainment; tested, a real ramp still counts.
    """
    if len(series) < 3:
        return 0.0
    newest = series[-1].t
    points = [p for p in series if p.t >= newest - window_s]
    if len(points) < 3:
        return 0.0
    xs = [p.t for p in points]
    ys = [p.rps for p in points]
    line = _line(xs, ys)
    if line is None:
        return 0.0
    mean_x, mean_y, slope, spread = line
    if slope <= 0:
        return slope
    window = rate_window_s if rate_window_s is not None and rate_window_s > 0 else _spacing(xs)
    rate = max(mean_y, 1.0 / window)  # at least one request per window: a rise from idle is tested too
    weights = [(x - mean_x) / spread for x in xs]
    shared = overlap_sum(weights, xs, window)
    burstiness = dispersion_index(series) if dispersion is None else dispersion
    variance = burstiness * rate * shared / window**2
    return slope if slope >= Z95 * math.sqrt(max(variance, 0.0)) else 0.0


def dispersion_index(series: tuple[RatePoint, ...]) -> float:
    """Burstiness of arrivals: variance / mean of the request counts between series points, at least 1.

    1 for Poisson arrivals; larger when requests come in clumps. The variance is taken around the
    counts' least-squares line, so a steady rise or fall is not mistaken for clumping. It needs four
    points and assumes the points' rate windows do not overlap much (overlap smooths the counts).
    """
    if len(series) < 4:
        return 1.0
    counts = [b.rps * (b.t - a.t) for a, b in itertools.pairwise(series)]
    steps = [float(i) for i in range(len(counts))]
    line = _line(steps, counts)
    if line is None or line[1] <= 0:
        return 1.0
    mean_x, mean, slope, _ = line
    residual = sum((c - mean - slope * (i - mean_x)) ** 2 for i, c in zip(steps, counts, strict=True))
    return max(1.0, residual / (len(counts) - 2) / mean)


@dataclass(frozen=True)
class Demand:
    """The demand estimate and its parts (for the reason line)."""

    total_rps: float
    steady_rps: float
    observed_rps: float
    trend_rps_per_s: float
    backlog_rps: float
    expected_extra_rps: float
    burstiness: float = 1.0
    """:func:`dispersion_index` of the rate series (1 for Poisson arrivals)."""

    def without_backlog(self) -> Demand:
        """The same demand with nothing added for the backlog."""
        return replace(self, total_rps=self.total_rps - self.backlog_rps, backlog_rps=0.0)

    def describe(self) -> str:
        """Short human-readable breakdown, e.g. ``demand 23.4 req/s (rate 18.0, trend +0.6/s)``."""
        parts = [f"rate {self.observed_rps:.1f}"]
        if self.trend_rps_per_s > 0:
            parts.append(f"trend +{self.trend_rps_per_s:.2f}/s")
        if self.backlog_rps > 0:
            parts.append(f"backlog {self.backlog_rps:.1f}")
        if self.expected_extra_rps:
            parts.append(f"routing {self.expected_extra_rps:+.1f}")
        return f"demand {self.total_rps:.1f} req/s ({', '.join(parts)})"


def estimate_demand(metrics: VariantMetrics, settings: VariantSettings, expected_extra_rps: float) -> Demand:
    """Arrival rate to plan for: observed rate, plus the rising trend over the look-ahead, plus the
    backlog to drain within ``backlog_drain_s``, plus load routing is about to move here.

    ``steady_rps`` is the part that was actually seen (observed + routing); the trend and the backlog
    are transient: they scale up at once but are not remembered by the scale-down window.

    The observed rate is the larger of Triton's served rate and the router's arrival rate, since the
    served rate stops growing when replicas saturate. A falling trend is ignored (scale-down is the
    stabilisation window's job), so bursts are met early and never under-provisioned by a dip.
    """
    observed = max(metrics.latest_rps or 0.0, metrics.router_rps or 0.0)
    burstiness = dispersion_index(metrics.rate_series)
    slope = max(
        0.0, trend_slope(metrics.rate_series, settings.trend_window_s, metrics.rate_window_s, burstiness)
    )
    backlog = (metrics.pending_requests or 0.0) / settings.backlog_drain_s
    steady = max(0.0, observed + expected_extra_rps)
    total = steady + slope * settings.lookahead_s + backlog
    return Demand(
        total_rps=total,
        steady_rps=steady,
        observed_rps=observed,
        trend_rps_per_s=slope,
        backlog_rps=backlog,
        expected_extra_rps=expected_extra_rps,
        burstiness=burstiness,
    )
