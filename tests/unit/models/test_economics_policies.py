"""The economics bench's replay of router decisions: rules, latency sums and cost accounting."""

from __future__ import annotations

import numpy as np
import pytest

from bench.economics_policies import (
    Recorded,
    cascade,
    cascade_keeps,
    oracle,
    pick_threshold,
    single,
    tier_choice,
    tiered,
    validation_choice,
)


def _one_hot(labels: list[int], confidence: list[float], classes: int = 3) -> np.ndarray:
    probs = np.zeros((len(labels), classes), dtype=np.float32)
    for i, (label, top) in enumerate(zip(labels, confidence, strict=True)):
        probs[i, :] = (1 - top) / (classes - 1)
        probs[i, label] = top
    return probs


def _recorded() -> Recorded:
    labels = np.array([0, 1, 2, 0])
    return Recorded(
        labels=labels,
        probs={
            "small": _one_hot([0, 2, 2, 1], [0.9, 0.5, 0.8, 0.6]),  # right, wrong, right, wrong
            "quantized": _one_hot([0, 1, 2, 1], [0.9] * 4),
            "large": _one_hot([0, 1, 1, 0], [0.9] * 4),  # right, right, wrong, right
        },
        latency_ms={
            "small": np.array([1.0, 1.0, 1.0, 1.0]),
            "quantized": np.array([5.0, 5.0, 5.0, 5.0]),
            "large": np.array([10.0, 10.0, 10.0, 10.0]),
        },
        scores=np.array([0.1, 0.8, 0.2, 0.3]),
        scorer_ms=np.array([0.5, 0.5, 0.5, 0.5]),
        timed=np.ones(4, dtype=bool),
    )


def test_cascade_keeps_at_or_above_threshold() -> None:
    assert cascade_keeps(np.array([0.69, 0.7, 0.71], dtype=np.float64), 0.7).tolist() == [False, True, True]


def test_cascade_compares_fp32_confidence_as_the_router_does() -> None:
    # Triton's FP32 0.7 reaches the router as the double 0.699999988..., which is under 0.7:
    # the replay must decide as the router does, not as a float32 comparison would.
    assert cascade_keeps(np.array([0.7], dtype=np.float32), 0.7).tolist() == [False]


def test_tier_choice_takes_first_band_that_holds_the_score() -> None:
    tiers = [(0.3, "small"), (0.7, "cascade"), (1.0, "large")]
    assert tier_choice(np.array([0.0, 0.3, 0.31, 0.7, 1.0]), tiers).tolist() == [
        "small",
        "small",
        "cascade",
        "cascade",
        "large",
    ]


def test_single_variant_accuracy_and_cost() -> None:
    large = single(_recorded(), "large")
    assert large.accuracy == 0.75 and large.share_large == 1.0 and large.cost_rel == 1.0
    small = single(_recorded(), "small")
    assert small.accuracy == 0.5 and small.cost_rel == pytest.approx(0.1) and small.mean_ms == 1.0


def test_cascade_escalates_unsure_items_and_pays_both_calls() -> None:
    outcome = cascade(_recorded(), 0.7)  # small keeps items 0 and 2
    assert outcome.share_large == 0.5
    assert outcome.accuracy == 1.0  # 0 small right, 1 large right, 2 small right, 3 large right
    assert outcome.mean_ms == pytest.approx((1 + 11 + 1 + 11) / 4)
    assert outcome.cost_rel == pytest.approx((4 * 1 + 2 * 10) / 40)


def test_tiered_routes_by_score_and_pays_the_scorer() -> None:
    outcome = tiered(_recorded(), 0.25)  # items 0, 2 small; 1, 3 large
    assert outcome.share_large == 0.5 and outcome.accuracy == 1.0
    assert outcome.mean_ms == pytest.approx(0.5 + (1 + 10 + 1 + 10) / 4)


def test_oracle_uses_large_only_where_small_is_wrong() -> None:
    outcome = oracle(_recorded())
    assert outcome.share_large == 0.5 and outcome.accuracy == 1.0


def test_threshold_picking() -> None:
    assert (
        pick_threshold([0.5, 0.7, 0.9], {0.5: 0.8, 0.7: 0.9, 0.9: 0.95}, {0.5: 0.1, 0.7: 0.2, 0.9: 0.3}, 0.9)
        == 0.7
    )
    assert pick_threshold([0.5], {0.5: 0.8}, {0.5: 0.1}, 0.9) is None
    r = _recorded()
    chosen = validation_choice(
        r.probs["small"],
        r.probs["large"],
        r.labels,
        r.confidence("small").astype(float),
        True,
        [0.55, 0.7, 0.95],
        1.0,
    )
    assert chosen == 0.55  # 75% = large-only accuracy with 25% escalated; 0.7 escalates 50%
