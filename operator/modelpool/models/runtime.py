"""Loading a trained variant from its artifacts folder for serving (used inside Triton's Python stub)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Variant(StrEnum):
    """The three tiers of one model."""

    SMALL = "small"
    QUANTIZED = "quantized"
    LARGE = "large"


class Predictor(Protocol):
    """Anything that maps texts to class probabilities."""

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Class probabilities, one row per text."""
        ...


def parse_variant(value: str) -> Variant:
    """``Variant`` from its name, with an error that lists the valid names."""
    try:
        return Variant(value)
    except ValueError:
        raise ValueError(f"variant {value!r} is unknown; use one of {[v.value for v in Variant]}") from None


def load_variant(variant: Variant | str, artifacts: Path, device: str = "cpu") -> Predictor:
    """The predictor of ``variant`` from the artifacts folder written by training."""
    kind = parse_variant(str(variant))
    if kind is Variant.SMALL:
        from modelpool.models.small import SmallPredictor

        return SmallPredictor.load(artifacts)
    from modelpool.models.large import load_large

    predictor: Predictor = load_large(artifacts, quantized=kind is Variant.QUANTIZED, device=device)
    return predictor
