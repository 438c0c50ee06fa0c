"""Odd but possible Prometheus answers, served over HTTP on 127.0.0.1, and odd metric values.

Whatever Prometheus (or a proxy in front of it) answers, the reader returns metrics or a
``problem`` and never raises; whatever the metrics hold, :func:`decide` never raises, and metrics
it cannot trust hold the last decision: never a scale-down (docs/scaling.md, step 1).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpool.scaling import (
    PoolInput,
    RatePoint,
    ScalingInput,
    VariantDecision,
    VariantInput,
    VariantMetrics,
    VariantSettings,
    VariantState,
    decide,
)
from modelpool.scaling.prometheus_reader import PrometheusReader, QueryTemplates, VariantTarget
from unit.scaling.fake_prometheus import FakePrometheus

NOW = 1_700_000_000.0
HELD = 4  # replicas of the last decision and of the Deployment in every case below
TARGET = VariantTarget(model="small", variant="small", pool="bank")


class FuzzPrometheus(FakePrometheus):
    """The fake Prometheus, read through a reader of the scaler's."""

    def read(self, templates: QueryTemplates | None = None, url: str | None = None) -> VariantMetrics:
        """One ``read_variant`` through a reader of its own (its own client and event loop)."""

        async def run() -> VariantMetrics:
            reader = PrometheusReader(url or self.url, templates=templates, timeout_s=5.0)
            try:
                return await reader.read_variant(TARGET, at=NOW)
            finally:
                await reader.aclose()

        return asyncio.run(run())


@pytest.fixture(scope="module")
def prometheus() -> Iterator[FuzzPrometheus]:
    with FuzzPrometheus().serving() as fake:
        yield fake


def is_series_query(query: str) -> bool:
    """The reader reads rates as subqueries ``(<query>)[span:step]``."""
    return query.startswith("(") and query.endswith("]")


def ok(result_type: str, result: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()


def healthy(query: str) -> tuple[int, bytes]:
    """A quiet variant: 1 req/s for 30 s, nothing queued, samples up to now."""
    if is_series_query(query):
        values = [[NOW - 30 + 2 * i, "1"] for i in range(16)]
        return 200, ok("matrix", [{"metric": {}, "values": values}])
    value = str(NOW) if "timestamp" in query else "0.01" if "compute" in query else "0"
    return 200, ok("vector", [{"metric": {}, "value": [NOW, value]}])


def decided(metrics: VariantMetrics) -> VariantDecision:
    """The decision for a variant holding 4 replicas for 10 req/s each."""
    s = VariantSettings(name="small", capacity_per_replica_rps=10.0, max_replicas=20)
    previous = VariantState(replicas=HELD, decided_at=NOW - 10)
    pool = PoolInput("pool", (VariantInput(s, metrics, HELD, previous),))
    return decide(ScalingInput.single(pool), NOW).pools["pool"].variants[0]


def assert_holds(metrics: VariantMetrics, *words: str) -> VariantDecision:
    d = decided(metrics)
    assert d.held, d.reason
    assert d.desired_replicas == HELD, d.reason
    for word in words:
        assert word in d.reason
    return d


def test_a_quiet_variant_scales_down_so_the_cases_below_would_too(prometheus: FuzzPrometheus) -> None:
    prometheus.answer = healthy
    metrics = prometheus.read()
    assert metrics.problem is None
    d = decided(metrics)
    assert not d.held and d.desired_replicas < HELD, d.reason


# --- the reader: one answer of each odd kind (each raised, or was misread, before the fix) ---


def test_several_series_for_a_rate_hold_and_name_the_field(prometheus: FuzzPrometheus) -> None:
    """An override without sum(): one series per Triton pod. The reader took the first pod's rate
    (here 1 of 41 req/s) and the pool scaled down; now it holds and says which field to fix."""

    def answer(query: str) -> tuple[int, bytes]:
        if is_series_query(query) and "nv_inference_request_success" in query:
            pods = [
                {"metric": {"pod": pod}, "values": [[NOW - 30 + 2 * i, rps] for i in range(16)]}
                for pod, rps in (("a", "1"), ("b", "40"))
            ]
            return 200, ok("matrix", pods)
        if is_series_query(query):
            return 200, ok("matrix", [])  # no router in front
        return healthy(query)

    prometheus.answer = answer
    templates = QueryTemplates(served_rate="rate(nv_inference_request_success{$selector}[$window])")
    metrics = prometheus.read(templates)
    assert metrics.problem is not None
    assert "spec.scaling.queries.servedRate" in metrics.problem
    assert "returned 2 series" in metrics.problem and "sum(" in metrics.problem
    assert_holds(metrics, "servedRate")


def test_a_scalar_answer_is_its_value(prometheus: FuzzPrometheus) -> None:
    """``pending: "0"`` (or ``scalar(...)``): Prometheus answers resultType scalar. It raised TypeError."""

    def answer(query: str) -> tuple[int, bytes]:
        return (200, ok("scalar", [NOW, "0"])) if query == "0" else healthy(query)

    prometheus.answer = answer
    metrics = prometheus.read(QueryTemplates(pending="0"))
    assert metrics.problem is None
    assert metrics.pending_requests == 0.0


def test_a_range_vector_where_a_value_is_expected_names_the_field(prometheus: FuzzPrometheus) -> None:
    """``pending: "x{$selector}[1m]"`` returns a matrix to an instant query. It raised KeyError."""

    def answer(query: str) -> tuple[int, bytes]:
        if query.endswith("[1m]") and not is_series_query(query):
            return 200, ok("matrix", [{"metric": {}, "values": [[NOW, "3"]]}])
        return healthy(query)

    prometheus.answer = answer
    metrics = prometheus.read(QueryTemplates(pending="nv_inference_pending_request_count{$selector}[1m]"))
    assert metrics.problem is not None
    assert "spec.scaling.queries.pending" in metrics.problem
    assert "returned a range vector, expected an instant vector" in metrics.problem
    assert_holds(metrics)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[]", "JSON list, not an API response object"),  # AttributeError before
        (b"null", "JSON NoneType"),
        (b'{"status": "success"}', "without a data.result list"),  # KeyError before
        (b'{"status": "success", "data": []}', "without a data.result list"),  # TypeError before
        (b"[" * 100_000 + b"]" * 100_000, "without JSON"),  # RecursionError before
        (ok("vector", [{"metric": {}, "value": [NOW, None]}]), "value None is not a number"),
        (ok("vector", [{"metric": {}, "value": [NOW, True]}]), "value True is not a number"),
        (ok("vector", [{"metric": {}, "value": [NOW]}]), "is not a [timestamp, value] pair"),
        (ok("vector", ["x"]), "a series that is not an object"),
        (ok("string", [NOW, "x"]), "returned 'string'"),
    ],
)
def test_malformed_answers_become_a_problem(prometheus: FuzzPrometheus, body: bytes, words: str) -> None:
    prometheus.answer = lambda q: (200, body) if not is_series_query(q) else healthy(q)
    metrics = prometheus.read()
    assert metrics.problem is not None and words in metrics.problem
    assert_holds(metrics)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:abc", "is invalid"),  # httpx.InvalidURL escaped before
        ("http://127.0.0.1:99999", "unreachable"),  # an ExceptionGroup(OverflowError) escaped before
    ],
)
def test_a_bad_prometheus_url_is_a_problem(prometheus: FuzzPrometheus, url: str, words: str) -> None:
    metrics = prometheus.read(url=url)
    assert metrics.problem is not None and words in metrics.problem
    assert_holds(metrics)


# --- the reader: any answer ---

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0.0, 1.0, 1e308, -1.0]),
)
sample_values = st.one_of(
    numbers.map(repr),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "-0", "", "x"]),
    numbers,
    st.none(),
    st.booleans(),
)
stamps = st.one_of(
    st.floats(NOW - 60, NOW + 60),
    st.sampled_from([NOW, NOW + 1e9, 0.0, -1.0, "1700000000", "x", None]),
)
samples = st.one_of(st.lists(st.one_of(stamps, sample_values), min_size=2, max_size=2), st.just([NOW]))
labels = st.dictionaries(st.sampled_from(["pod", "model", "__name__"]), st.text(max_size=3), max_size=2)
vector_series = st.fixed_dictionaries({"metric": labels, "value": samples})
matrix_series = st.fixed_dictionaries({"metric": labels, "values": st.lists(samples, max_size=6)})
api_bodies = st.one_of(
    st.tuples(st.just("vector"), st.lists(vector_series, max_size=3)),
    st.tuples(st.just("matrix"), st.lists(matrix_series, max_size=3)),
    st.tuples(st.sampled_from(["scalar", "string"]), samples),
).map(lambda t: {"status": "success", "data": {"resultType": t[0], "result": t[1]}})
error_bodies = st.fixed_dictionaries(
    {"status": st.just("error"), "errorType": st.sampled_from(["bad_data", "execution", "timeout"])},
    optional={"error": st.text(max_size=20), "warnings": st.lists(st.text(max_size=5), max_size=2)},
)
json_bodies = st.one_of(api_bodies, error_bodies, st.none(), st.lists(st.integers(), max_size=2))
answers = st.tuples(
    st.sampled_from([200, 200, 200, 400, 422, 500, 503]),
    st.one_of(json_bodies.map(lambda b: json.dumps(b).encode()), st.binary(max_size=20)),
)


@settings(max_examples=60, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series_answer=answers, value_answer=answers, quiet_answers=st.booleans())
def test_any_answer_is_metrics_or_a_problem_and_never_a_scale_down_when_unusable(
    prometheus: FuzzPrometheus,
    series_answer: tuple[int, bytes],
    value_answer: tuple[int, bytes],
    quiet_answers: bool,
) -> None:
    """Rates get one generated answer, the single values another (or the quiet variant's)."""

    def answer(query: str) -> tuple[int, bytes]:
        if is_series_query(query):
            return series_answer
        return healthy(query) if quiet_answers else value_answer

    prometheus.answer = answer
    metrics = prometheus.read()  # never raises
    d = decided(metrics)  # never raises
    if metrics.problem is not None:
        assert d.held and d.desired_replicas == HELD, d.reason
    for value in (metrics.queue_time_s, metrics.compute_time_s, metrics.pending_requests):
        assert value is None or isinstance(value, float)


# --- decide: metric values the health check must catch ---


def series(*points: tuple[float, float]) -> tuple[RatePoint, ...]:
    return tuple(RatePoint(t, rps) for t, rps in points)


QUIET = series(*((NOW - 30 + 2 * i, 1.0) for i in range(16)))


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        # OverflowError in the sizing before: 1e300 s per request makes capacity 1e-300 req/s.
        (VariantMetrics(QUIET, compute_time_s=1e300, newest_sample_t=NOW), "compute time"),
        # OverflowError before: the backlog term overflowed to inf.
        (VariantMetrics(QUIET, pending_requests=1e308, newest_sample_t=NOW), "pending requests"),
        # ZeroDivisionError before: irate points (no rate window) with repeated timestamps.
        (
            VariantMetrics(series((NOW, 50.0), (NOW, 50.0), (NOW, 1.0), (NOW, 1.0)), newest_sample_t=NOW),
            "not forward",
        ),
        # Decided before (NaN ages are never stale): scaled down.
        (VariantMetrics(QUIET, newest_sample_t=math.nan), "timestamp = nan"),
        (VariantMetrics(QUIET, newest_sample_t=math.inf), "timestamp = inf"),
        (VariantMetrics(series((math.nan, 1.0), (NOW, 1.0)), newest_sample_t=NOW), "timestamp = nan"),
        # A clock an hour ahead passes any staleness test: scaled down before.
        (VariantMetrics(QUIET, newest_sample_t=NOW + 3600), "more than staleAfter 30s in the future"),
        # Newest point first: the oldest (1 req/s) was taken as the current rate; scaled down before.
        (VariantMetrics(series((NOW, 40.0), (NOW - 2, 1.0)), newest_sample_t=NOW), "not forward"),
    ],
)
def test_absurd_metrics_hold(metrics: VariantMetrics, words: str) -> None:
    assert_holds(metrics, "metrics absurd", words)


def test_inputs_that_overflow_the_sizing_anyway_hold() -> None:
    """Each value passes its check, but 1e308 req/s moved here on 1000 s requests overflow the
    sizing (OverflowError before): the pass holds instead of failing."""
    s = VariantSettings(name="small", max_replicas=20)  # capacity from the compute time
    metrics = VariantMetrics(QUIET, compute_time_s=1000.0, newest_sample_t=NOW)
    previous = VariantState(replicas=HELD, decided_at=NOW - 10)
    pool = PoolInput("pool", (VariantInput(s, metrics, HELD, previous, expected_extra_rps=1e308),))
    d = decide(ScalingInput.single(pool), NOW).pools["pool"].variants[0]
    assert d.held and d.desired_replicas == HELD
    assert "sizing failed" in d.reason


weird_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 5.0, 1e300, 1e308, -1.0, 1e-300, 5e-324]),
)
weird_stamps = st.one_of(
    st.floats(NOW - 100, NOW + 100), st.sampled_from([NOW, NOW + 1e9, -1e300, math.inf, math.nan, 0.0])
)
any_metrics = st.builds(
    VariantMetrics,
    rate_series=st.lists(st.builds(RatePoint, weird_stamps, weird_floats), max_size=10).map(tuple),
    router_rps=st.none() | weird_floats,
    queue_time_s=st.none() | weird_floats,
    compute_time_s=st.none() | weird_floats,
    pending_requests=st.none() | weird_floats,
    newest_sample_t=st.none() | weird_stamps,
    rate_window_s=st.sampled_from([None, 2.0, 6.0]),
)


def _untrustworthy(m: VariantMetrics) -> bool:
    """Metrics no healthy Prometheus writes: non-finite values or timestamps, time going backwards
    or standing still, samples from the future."""
    values: list[float | None] = [*(p.rps for p in m.rate_series), *(p.t for p in m.rate_series)]
    values += [m.router_rps, m.queue_time_s, m.compute_time_s, m.pending_requests, m.newest_sample_t]
    stamps = [p.t for p in m.rate_series]
    return (
        any(v is not None and not math.isfinite(v) for v in values)
        or any(b <= a for a, b in itertools.pairwise(stamps))
        or max([*stamps, m.newest_sample_t or 0.0]) > NOW + 30
    )


@settings(max_examples=400, database=None, deadline=None)
@given(metrics=any_metrics)
def test_decide_never_raises_and_untrustworthy_metrics_never_scale_down(metrics: VariantMetrics) -> None:
    d = decided(metrics)
    if _untrustworthy(metrics):
        assert d.held and d.desired_replicas == HELD, (metrics, d.reason)
