"""Complexity scorers for tiered routing.

A scorer maps each input text to a complexity in [0, 1]; tiered mode sends a request to the
tier whose band holds the highest score of its batch.  Any object with
``score(texts) -> list[float]`` is a :class:`ComplexityScorer`; the torch scorer from
``modelpool.models`` is loaded lazily by :func:`load_scorer`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from modelpool.routing.config import ScorerConfig

_WORD = re.compile(r"\w+")


@runtime_checkable
class ComplexityScorer(Protocol):
    """Scores texts by how hard they look: 0 easy, 1 hard."""

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score in [0, 1] per text."""
        ...


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


class HeuristicScorer:
    """Fast default: long texts with many clauses, long words and digits score higher.

    ``score = 0.6 * min(1, words / words_at_max) + 0.2 * long-word share + 0.1 * min(1, clauses / 4)
    + 0.1 * min(1, digits / 8)``; a few microseconds per short text.
    """

    blocking = False

    def __init__(self, words_at_max: int = 40) -> None:
        self.words_at_max = words_at_max

    def score_one(self, text: str) -> float:
        """Complexity of one text."""
        words = _WORD.findall(text)
        if not words:
            return 0.0
        n = len(words)
        long_share = sum(1 for w in words if len(w) >= 9) / n
        clauses = sum(text.count(c) for c in ",;:?") + text.count(" and ") + text.count(" but ")
        digits = sum(ch.isdigit() for ch in text)
        return _clamp(
            0.6 * min(1.0, n / self.words_at_max)
            + 0.2 * long_share
            + 0.1 * min(1.0, clauses / 4)
            + 0.1 * min(1.0, digits / 8)
        )

    def score(self, texts: Sequence[str]) -> list[float]:
        return [self.score_one(t) for t in texts]


def _import_factory(spec: str) -> Callable[[str], ComplexityScorer]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"scorer.factory: cannot import {module_name!r}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"scorer.factory: {module_name!r} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def load_scorer(config: ScorerConfig) -> ComplexityScorer:
    """Build the scorer a config names (imports torch only for kind ``torch``)."""
    if config.kind == "heuristic":
        return HeuristicScorer()
    assert config.path is not None  # the config validator enforces it
    scorer = _import_factory(config.factory)(config.path)
    if not isinstance(scorer, ComplexityScorer):
        raise ValueError(
            f"scorer.factory: {config.factory} returned {type(scorer).__name__}, which has no score()"
        )
    return scorer


def is_blocking(scorer: ComplexityScorer) -> bool:
    """Should the scorer run in a worker thread (default yes, unless it says ``blocking = False``)?"""
    return bool(getattr(scorer, "blocking", True))
