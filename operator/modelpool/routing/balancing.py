"""Deterministic traffic splitting: smooth weighted round robin, per-endpoint picking, and
rendezvous (highest random weight) hashing for requests that must stick to one replica."""

from __future__ import annotations

import hashlib
import math
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


_MASK64 = (1 << 64) - 1


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that every router process computes alike (Python's ``hash`` of a str differs
    between processes), so routers in front of one pool agree on where a sequence goes."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def rendezvous_score(key: int, node: int) -> int:
    """The 64-bit score of ``node`` for ``key`` (both :func:`stable_hash` values): splitmix64's
    finalizer over their xor, a few integer operations instead of a hash per pair."""
    x = key ^ node
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def weighted_rendezvous_score(key: int, node: int, weight: float) -> float:
    """Weighted rendezvous hashing (``weight / -ln(u)``, ``u`` uniform in (0, 1) from the score):
    the highest of these picks each node with probability ``weight / sum(weights)``, and changing
    one node's weight moves only keys to or from that node."""
    u = ((rendezvous_score(key, node) >> 11) + 0.5) / (1 << 53)  # strictly inside (0, 1)
    return weight / -math.log(u)


class Hashed(Protocol):
    """A node with its :func:`stable_hash`."""

    @property
    def hrw(self) -> int: ...


H = TypeVar("H", bound="Hashed")


def rendezvous_order(key: int, nodes: Sequence[H]) -> list[H]:
    """``nodes`` from the one ``key`` goes to first down to the last: the same order for the same
    key wherever and whenever it is computed, and removing a node moves only the keys whose first
    choice it was (each to its own next choice)."""
    if len(nodes) <= 1:
        return list(nodes)
    return sorted(nodes, key=lambda n: rendezvous_score(key, n.hrw), reverse=True)


def weighted_rendezvous_order(key: int, nodes: Sequence[tuple[H, float]]) -> list[H]:
    """:func:`rendezvous_order` with a weight per node (:func:`weighted_rendezvous_score`): the
    first is each node for the share of keys its weight gives it."""
    if len(nodes) <= 1:
        return [n for n, _ in nodes]
    ranked = sorted(nodes, key=lambda nw: weighted_rendezvous_score(key, nw[0].hrw, nw[1]), reverse=True)
    return [n for n, _ in ranked]
