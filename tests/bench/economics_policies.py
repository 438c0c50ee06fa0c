"""Routing policies replayed on recorded Triton answers (pure logic of the economics bench).

Every item's answer from every variant is known, and for the ``timed`` items (all, or a seeded
sample) also the latency of a single-item request to each variant. A policy only decides, per
item, which variants it calls, with the router's rules: cascade keeps the draft when
``confidence >= acceptThreshold`` (else the verifier answers), tiered sends the item to the first
tier whose ``maxComplexity`` is ``>=`` its score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelpool.routing.config import TierRoute
from modelpool.routing.decisions import keeps_draft, tier_target

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
VARIANTS = ("small", "quantized", "large")


@dataclass(frozen=True)
class Recorded:
    """What every variant answered for every item, and how long it took."""

    labels: npt.NDArray[np.int64]
    probs: dict[str, npt.NDArray[np.float32]]
    latency_ms: dict[str, FloatArray]
    scores: FloatArray
    scorer_ms: FloatArray
    timed: BoolArray  # items whose latencies were measured with single-item requests (the rest: NaN)

    def predictions(self, variant: str) -> npt.NDArray[np.int64]:
        """Argmax label of ``variant`` per item."""
        return self.probs[variant].argmax(axis=1)

    def confidence(self, variant: str) -> npt.NDArray[np.float32]:
        """max(PROBABILITIES) of ``variant`` per item (what the router reads)."""
        return self.probs[variant].max(axis=1)


@dataclass(frozen=True)
class Outcome:
    """One policy's result over all items."""

    name: str
    accuracy: float
    share_large: float
    mean_ms: float
    p95_ms: float
    cost_rel: float


def cascade_keeps(confidence: npt.NDArray[np.float32], accept_threshold: float) -> BoolArray:
    """Items whose draft answer the cascade keeps (the rest go to the verifier): the router's rule."""
    return np.array([keeps_draft(float(c), accept_threshold) for c in confidence], dtype=bool)


def tier_choice(scores: FloatArray, tiers: Sequence[tuple[float, str]]) -> npt.NDArray[np.str_]:
    """Target of each item under tiered mode: the router's rule, item by item."""
    bands = [TierRoute(max_complexity=m, target=t) for m, t in tiers]
    return np.array([tier_target(float(s), bands) for s in scores], dtype=np.str_)


def unit_costs(recorded: Recorded) -> dict[str, float]:
    """Cost of one call to each variant: its mean single-item latency (ms) on Triton."""
    return {v: float(recorded.latency_ms[v][recorded.timed].mean()) for v in VARIANTS}


def outcome(
    name: str,
    recorded: Recorded,
    predictions: npt.NDArray[np.int64],
    calls: dict[str, BoolArray],
    extra_ms: FloatArray | None = None,
) -> Outcome:
    """Summarise a policy from its final predictions and which variants it called per item (in sequence)."""
    n = len(recorded.labels)
    latency = np.zeros(n) if extra_ms is None else extra_ms.astype(np.float64).copy()
    costs = unit_costs(recorded)
    cost = latency.sum()
    for variant, called in calls.items():
        latency += np.where(called, recorded.latency_ms[variant], 0.0)
        cost += costs[variant] * called.sum()
    latency = latency[recorded.timed]
    return Outcome(
        name=name,
        accuracy=float((predictions == recorded.labels).mean()),
        share_large=float(calls.get("large", np.zeros(n, dtype=bool)).mean()),
        mean_ms=float(latency.mean()),
        p95_ms=float(np.percentile(latency, 95)),
        cost_rel=float(cost / (costs["large"] * n)),
    )


def single(recorded: Recorded, variant: str) -> Outcome:
    """Every item to one variant."""
    everyone = np.ones(len(recorded.labels), dtype=bool)
    return outcome(f"{variant} only", recorded, recorded.predictions(variant), {variant: everyone})


def cascade(recorded: Recorded, threshold: float, name: str | None = None) -> Outcome:
    """Small drafts every item; under ``threshold`` confidence large answers it too (and wins)."""
    keeps = cascade_keeps(recorded.confidence("small"), threshold)
    predictions = np.where(keeps, recorded.predictions("small"), recorded.predictions("large"))
    everyone = np.ones(len(keeps), dtype=bool)
    return outcome(
        name or f"cascade @{threshold:.2f}", recorded, predictions, {"small": everyone, "large": ~keeps}
    )


def tiered(recorded: Recorded, max_small: float, name: str | None = None) -> Outcome:
    """Tiers [(max_small, small), (1.0, large)] on the scorer's score; the scorer runs for every item."""
    target = tier_choice(recorded.scores, [(max_small, "small"), (1.0, "large")])
    to_small = target == "small"
    predictions = np.where(to_small, recorded.predictions("small"), recorded.predictions("large"))
    return outcome(
        name or f"tiered @{max_small:.3f}",
        recorded,
        predictions,
        {"small": to_small, "large": ~to_small},
        extra_ms=recorded.scorer_ms,
    )


def oracle(recorded: Recorded) -> Outcome:
    """Small where it is right, large elsewhere (knows the labels: a bound, not a policy)."""
    right = recorded.predictions("small") == recorded.labels
    predictions = np.where(right, recorded.predictions("small"), recorded.predictions("large"))
    return outcome("oracle", recorded, predictions, {"small": right, "large": ~right})


def pick_threshold(
    candidates: Sequence[float],
    accuracy_of: dict[float, float],
    share_of: dict[float, float],
    target_accuracy: float,
) -> float | None:
    """The candidate with the smallest share to large whose accuracy reaches ``target_accuracy``."""
    good = [c for c in candidates if accuracy_of[c] >= target_accuracy]
    return min(good, key=lambda c: (share_of[c], c)) if good else None


def validation_choice(
    small: npt.NDArray[np.float32],
    large: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    gate: FloatArray,
    keep_if_at_least: bool,
    candidates: Sequence[float],
    relative_target: float,
) -> float | None:
    """Pick a threshold on validation data: keep small where ``gate >= t`` (cascade, gate = confidence) or
    ``gate <= t`` (tiered, gate = score); reach ``relative_target`` x large accuracy with least escalation."""
    target = relative_target * float((large.argmax(1) == labels).mean())
    accuracy_of: dict[float, float] = {}
    share_of: dict[float, float] = {}
    for t in candidates:
        keep = gate >= t if keep_if_at_least else gate <= t
        final = np.where(keep, small.argmax(1), large.argmax(1))
        accuracy_of[t] = float((final == labels).mean())
        share_of[t] = float((~keep).mean())
    return pick_threshold(candidates, accuracy_of, share_of, target)


def render(outcomes: Sequence[Outcome], large_accuracy: float) -> str:
    """Fixed-width table of the outcomes."""
    header = f"{'policy':<26} {'acc':>7} {'% of large':>10} {'to large':>9} "
    header += f"{'mean ms':>8} {'p95 ms':>8} {'cost':>6}"
    lines = [header, "-" * len(header)]
    for o in outcomes:
        lines.append(
            f"{o.name:<26} {o.accuracy:>7.4f} {100 * o.accuracy / large_accuracy:>9.2f}% "
            f"{100 * o.share_large:>8.1f}% {o.mean_ms:>8.2f} {o.p95_ms:>8.2f} {o.cost_rel:>6.3f}"
        )
    return "\n".join(lines)
