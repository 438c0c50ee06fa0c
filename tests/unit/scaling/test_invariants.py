"""Property tests: invariants of decide() over random metrics, settings and budgets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from modelpool.scaling import (
    PoolInput,
    RatePoint,
    ScalingInput,
    VariantInput,
    VariantMetrics,
    VariantSettings,
    VariantState,
    decide,
)

NOW = 5000.0

rates = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)


@st.composite
def variant_inputs(draw: st.DrawFn, name: str) -> VariantInput:
    lo = draw(st.integers(0, 4))
    hi = draw(st.integers(max(lo, 1), 30))
    s = VariantSettings(
        name=name,
        min_replicas=lo,
        max_replicas=hi,
        gpus_per_replica=draw(st.integers(1, 4)),
        capacity_per_replica_rps=draw(st.floats(0.5, 100.0)),
        target_queue_time_s=draw(st.floats(0.01, 5.0)),
        scale_to_zero=draw(st.booleans()),
        priority=draw(st.floats(0.1, 10.0)),
        scale_down_stabilization_s=draw(st.sampled_from([0.0, 60.0, 300.0])),
    )
    series = tuple(
        RatePoint(NOW - 2 * i, r) for i, r in enumerate(reversed(draw(st.lists(rates, max_size=8))))
    )
    metrics = VariantMetrics(
        rate_series=series,
        router_rps=draw(st.none() | rates),
        pending_requests=draw(st.none() | st.floats(0.0, 1000.0)),
        newest_sample_t=draw(st.none() | st.floats(NOW - 100.0, NOW)),
    )
    current = draw(st.integers(0, 30))
    previous = draw(st.none() | st.builds(VariantState, st.integers(0, 30), st.just(NOW - 10.0)))
    return VariantInput(s, metrics, current, previous)


@settings(max_examples=150, deadline=None)
@given(
    a=variant_inputs("a"),
    b=variant_inputs("b"),
    budget=st.none() | st.integers(0, 60),
)
def test_decide_invariants(a: VariantInput, b: VariantInput, budget: int | None) -> None:
    inp = ScalingInput.single(PoolInput("p", (a, b)), budget)
    first = decide(inp, NOW)
    assert repr(decide(inp, NOW)) == repr(first)  # deterministic
    pool = first.pools["p"]
    for vi, d in zip((a, b), pool.variants, strict=True):
        s = vi.settings
        assert d.desired_replicas <= s.max_replicas
        assert d.desired_replicas >= (0 if s.scale_to_zero else s.min_replicas)
        assert d.reason
        if d.held and not d.cut_replicas:  # a budget too small for the held replicas cuts them
            assert d.desired_replicas >= min(vi.current_replicas, s.max_replicas)
        assert d.desired_replicas <= max(d.wished_replicas, s.min_replicas)
    assert any(d.desired_replicas > 0 for d in pool.variants)  # some tier always serves
    used = sum(
        d.desired_replicas * vi.settings.gpus_per_replica for vi, d in zip((a, b), pool.variants, strict=True)
    )
    if budget is not None and "minimums need" not in pool.budget_message:
        assert used <= budget
