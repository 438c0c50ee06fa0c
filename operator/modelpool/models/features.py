"""Hashed word and character n-gram features: cheap to compute, no vocabulary to ship.

A text becomes a bag of bucket indices (word unigrams and bigrams, character 3- to 5-grams of each
word with boundary marks) with weights ``1/sqrt(n)``, so every text has unit weight mass in L2.
Hashing uses CRC32, which is stable across processes (Python's ``hash`` of str is not).
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

IndexArray = npt.NDArray[np.int64]
WeightArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class HashingConfig:
    """How texts are hashed into ``buckets`` feature indices."""

    buckets: int = 1 << 18
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    word_bigrams: bool = True

    def __post_init__(self) -> None:
        if self.buckets < 2:
            raise ValueError(f"buckets={self.buckets}: give at least 2 hash buckets")


def hashing_from_dict(data: dict[str, object]) -> HashingConfig:
    """``HashingConfig`` from its ``dataclasses.asdict`` form (as stored in JSON)."""
    char_ngrams = data.get("char_ngrams", (3, 4, 5))
    assert isinstance(char_ngrams, list | tuple)
    return HashingConfig(
        buckets=int(str(data["buckets"])),
        char_ngrams=tuple(int(n) for n in char_ngrams),
        word_bigrams=bool(data.get("word_bigrams", True)),
    )


def ngram_keys(text: str, config: HashingConfig) -> list[str]:
    """The n-gram strings of ``text`` (lower-cased) that get hashed."""
    words = _WORD.findall(text.lower())
    keys = [f"w {w}" for w in words]
    if config.word_bigrams:
        keys.extend(f"b {a} {b}" for a, b in itertools.pairwise(words))
    for word in words:
        marked = f"<{word}>"
        for n in config.char_ngrams:
            keys.extend(marked[i : i + n] for i in range(len(marked) - n + 1))
    return keys or ["<empty>"]


def hash_text(text: str, config: HashingConfig) -> IndexArray:
    """Bucket indices of the n-grams of one text (with repeats)."""
    buckets = config.buckets
    return np.fromiter(
        (zlib.crc32(key.encode("utf-8")) % buckets for key in ngram_keys(text, config)), dtype=np.int64
    )


@dataclass(frozen=True)
class FeatureBags:
    """Flat bag-of-features of many texts in EmbeddingBag layout: ``offsets[i]`` starts text ``i``."""

    indices: IndexArray
    offsets: IndexArray
    weights: WeightArray

    def __len__(self) -> int:
        return len(self.offsets)


def featurize(texts: Sequence[str], config: HashingConfig) -> FeatureBags:
    """Hash ``texts`` into bags with ``1/sqrt(n)`` weights per text."""
    parts = [hash_text(t, config) for t in texts]
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    offsets = np.zeros(len(parts), dtype=np.int64)
    if len(parts) > 1:
        offsets[1:] = np.cumsum(lengths)[:-1]
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    weights = np.repeat((1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32), lengths)
    return FeatureBags(indices, offsets, weights)


def bag_sums(table: npt.NDArray[np.float32], bags: FeatureBags) -> npt.NDArray[np.float32]:
    """Weighted sum of ``table`` rows per bag (numpy EmbeddingBag, mode ``sum``)."""
    rows = table[bags.indices] * bags.weights[:, None]
    if len(bags) == 0:
        return np.zeros((0, table.shape[1]), dtype=np.float32)
    return np.add.reduceat(rows, bags.offsets, axis=0).astype(np.float32, copy=False)
