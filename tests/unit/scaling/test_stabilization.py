"""Stabilisation windows: compacting the history keeps every window's answer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from modelpool.scaling.stabilization import compact, stabilize


def test_compact_keeps_only_entries_that_can_decide() -> None:
    history = ((0.0, 5), (1.0, 3), (2.0, 4), (3.0, 4), (4.0, 2), (5.0, 3))
    # Of equal values the newest is kept; 3 at t=1 and 4 at t=2 are matched by newer entries.
    assert compact(history) == ((0.0, 5), (3.0, 4), (4.0, 2), (5.0, 3))
    assert compact(()) == ()


@settings(max_examples=300, deadline=None)
@given(
    recs=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=40),
    current=st.integers(min_value=0, max_value=20),
    recommendation=st.integers(min_value=0, max_value=20),
    up=st.sampled_from([0.0, 3.0, 10.0, 60.0]),
    down=st.sampled_from([0.0, 5.0, 30.0, 300.0]),
)
def test_compacted_history_stabilises_like_the_full_one(
    recs: list[int], current: int, recommendation: int, up: float, down: float
) -> None:
    history = tuple((float(2 * i), r) for i, r in enumerate(recs))
    now = 2.0 * len(recs)
    full, _ = stabilize(current, recommendation, history, now, up, down)
    short, _ = stabilize(current, recommendation, compact(history), now, up, down)
    assert short == full
    assert len(compact(history)) <= len(history)
