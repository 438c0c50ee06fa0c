"""Deterministic traffic splitting: smooth weighted round robin and per-endpoint picking."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin over named items.

    Each pick adds every item's weight to its running score, picks the highest score
    (first in order on ties) and subtracts the total from it.  Over any window of
    ``sum(weights)`` picks each item is chosen exactly ``weight`` times, evenly spread;
    the sequence depends only on the weights, so it is reproducible.
    """

    def __init__(self, weights: Sequence[tuple[str, int]]) -> None:
        if any(w < 0 for _, w in weights):
            raise ValueError("weights must be >= 0")
        self._items = [(name, w) for name, w in weights if w > 0]
        if not self._items:
            raise ValueError("at least one weight must be above 0")
        self._total = sum(w for _, w in self._items)
        self._current = [0] * len(self._items)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self._items]

    def pick(self, allowed: Iterable[str] | None = None) -> str | None:
        """Next item; with ``allowed``, only among those (None if none is allowed)."""
        allow = None if allowed is None else set(allowed)
        best = -1
        total = 0
        for i, (name, weight) in enumerate(self._items):
            if allow is not None and name not in allow:
                continue
            self._current[i] += weight
            total += weight
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        if best < 0:
            return None
        self._current[best] -= total
        return self._items[best][0]


class Pickable(Protocol):
    """What an endpoint picker needs to know of an endpoint."""

    @property
    def outstanding(self) -> int: ...


E = TypeVar("E", bound="Pickable")


def pick_least_outstanding(candidates: Sequence[E], start: int) -> E:
    """The candidate with the fewest requests in flight; ties broken round-robin from ``start``."""
    n = len(candidates)
    best = candidates[start % n]
    for k in range(1, n):
        c = candidates[(start + k) % n]
        if c.outstanding < best.outstanding:
            best = c
    return best
