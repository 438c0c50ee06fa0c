"""Stabilisation windows, as in the Kubernetes HPA behaviour API (``stabilizeRecommendationWithBehaviors``).

Scaling up goes to the *lowest* recommendation seen within the scale-up window (0 s: at once);
scaling down goes to the *highest* recommendation within the scale-down window, so a short dip
never removes replicas that a burst a moment ago needed.
"""

from __future__ import annotations

History = tuple[tuple[float, int], ...]


def stabilize(
    current: int,
    recommendation: int,
    history: History,
    now: float,
    up_window_s: float,
    down_window_s: float,
) -> tuple[int, History]:
    """Return the stabilised replica count and the history to keep (including this recommendation)."""
    up_cutoff = now - up_window_s
    down_cutoff = now - down_window_s
    up = recommendation
    down = recommendation
    for t, rec in history:
        if t > up_cutoff:
            up = min(up, rec)
        if t > down_cutoff:
            down = max(down, rec)
    stabilized = current
    stabilized = max(stabilized, up)
    stabilized = min(stabilized, down)
    keep_after = now - max(up_window_s, down_window_s)
    kept = (*tuple((t, rec) for t, rec in history if t > keep_after), (now, recommendation))
    return stabilized, kept


def compact(history: History) -> History:
    """The entries that can still decide a window: each one that no newer entry matches from above
    (for the scale-down maximum) or from below (for the scale-up minimum). For every cutoff, the
    maximum and the minimum of the entries newer than it are the same as in ``history``."""
    kept: list[tuple[float, int]] = []
    high: int | None = None
    low: int | None = None
    for t, rec in reversed(history):
        if high is None or low is None or rec > high or rec < low:
            kept.append((t, rec))
        high = rec if high is None else max(high, rec)
        low = rec if low is None else min(low, rec)
    return tuple(reversed(kept))
