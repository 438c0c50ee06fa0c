"""Complexity scorers for tiered routing.

A scorer maps each input text to a complexity in [0, 1]; tiered mode sends a request to the
tier whose band holds the highest score of its batch.  Any object with
``score(texts) -> list[float]`` is a :class:`ComplexityScorer`; the torch scorer from
``modelpool.models`` is loaded lazily by :func:`load_scorer`, or another factory where the router
is deployed (``--scorer-factory``; a config cannot name one).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from modelpool.routing.config import BUILTIN_SCORER_FACTORY, ScorerConfig

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


ScorerFactory = Callable[[str], ComplexityScorer]
"""Loads a torch scorer from the ``path`` of its config (``modelpool.models.scorer.load_scorer``)."""


def import_factory(spec: str) -> ScorerFactory:
    """The scorer factory ``module:callable`` names, for ``--scorer-factory``: a choice of whoever
    deploys the router, never of a config (see :class:`~modelpool.routing.config.ScorerConfig`)."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(f"{spec!r} is not module:callable (e.g. {BUILTIN_SCORER_FACTORY})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def builtin_factory(path: str) -> ComplexityScorer:
    """:data:`~modelpool.routing.config.BUILTIN_SCORER_FACTORY` (imports torch when first called)."""
    from modelpool.models.scorer import load_scorer as load_torch_scorer

    return load_torch_scorer(path)


def load_scorer(config: ScorerConfig, factory: ScorerFactory | None = None) -> ComplexityScorer:
    """Build the scorer a config describes: kind ``torch`` with ``factory`` (default
    :func:`builtin_factory`, which imports torch only then)."""
    if config.kind == "heuristic":
        return HeuristicScorer()
    assert config.path is not None  # the config validator enforces it
    factory = builtin_factory if factory is None else factory
    scorer = factory(config.path)
    if not isinstance(scorer, ComplexityScorer):
        name = getattr(factory, "__qualname__", repr(factory))
        raise ValueError(f"the scorer factory {name} returned {type(scorer).__name__}, which has no score()")
    return scorer


def is_blocking(scorer: ComplexityScorer) -> bool:
    """Should the scorer run in a worker thread (default yes, unless it says ``blocking = False``)?"""
    return bool(getattr(scorer, "blocking", True))
