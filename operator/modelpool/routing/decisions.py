"""The router's per-request decisions as pure functions.

The router calls these on every request; the routing-economics benchmark replays them over
recorded answers, so what it measures is exactly what the router does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Band(Protocol):
    """A complexity band of tiered mode (``TierRoute`` in the router's config)."""

    @property
    def max_complexity(self) -> float: ...

    @property
    def target(self) -> str: ...


def keeps_draft(confidence: float | None, accept_threshold: float) -> bool:
    """Cascade: keep the draft's answer when its confidence reaches the threshold.

    A draft answer without readable probabilities cannot be judged and is escalated.
    """
    return confidence is not None and confidence >= accept_threshold


def tier_target(score: float, tiers: Sequence[Band]) -> str:
    """Tiered: the target of the first band (in order) whose ``max_complexity`` holds ``score``."""
    return next((t.target for t in tiers if score <= t.max_complexity), tiers[-1].target)
