"""Hashed n-gram features: stable, weighted, and the numpy bag sum matches torch's EmbeddingBag."""

from __future__ import annotations

import zlib

import numpy as np

from modelpool.models.features import (
    HashingConfig,
    bag_sums,
    featurize,
    hash_text,
    hashing_from_dict,
    ngram_keys,
)


def test_keys_cover_words_bigrams_and_char_ngrams() -> None:
    keys = ngram_keys("Top up!", HashingConfig())
    assert "w top" in keys and "w up" in keys and "b top up" in keys
    assert "<to" in keys and "op>" in keys and "<top>" in keys


def test_hashing_is_stable_and_in_range() -> None:
    config = HashingConfig(buckets=1000)
    first = hash_text("Where is my card?", config)
    assert first.tolist() == hash_text("where is my card", config).tolist()
    assert first.min() >= 0 and first.max() < 1000
    # CRC32 of the key, not Python's per-process salted hash()
    assert hash_text("a", HashingConfig(buckets=1 << 30, char_ngrams=(), word_bigrams=False)).tolist() == [
        zlib.crc32(b"w a") % (1 << 30)
    ]


def test_empty_text_still_has_one_feature() -> None:
    bags = featurize(["", "hello"], HashingConfig(buckets=64))
    assert len(bags) == 2
    assert bags.offsets.tolist()[0] == 0 and bags.offsets[1] == 1


def test_weights_have_unit_l2_mass_per_text() -> None:
    bags = featurize(["one two three", "four"], HashingConfig(buckets=128))
    ends = [*bags.offsets[1:].tolist(), len(bags.indices)]
    for start, end in zip(bags.offsets.tolist(), ends, strict=True):
        assert np.isclose((bags.weights[start:end] ** 2).sum(), 1.0, atol=1e-5)


def test_bag_sums_match_manual_sum() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(256, 4)).astype(np.float32)
    bags = featurize(["card arrived late", "exchange rate"], HashingConfig(buckets=256))
    sums = bag_sums(table, bags)
    manual = np.zeros((2, 4), dtype=np.float32)
    ends = [*bags.offsets[1:].tolist(), len(bags.indices)]
    for row, (start, end) in enumerate(zip(bags.offsets.tolist(), ends, strict=True)):
        for i in range(start, end):
            manual[row] += table[bags.indices[i]] * bags.weights[i]
    assert np.allclose(sums, manual, atol=1e-5)


def test_config_round_trips_through_dict() -> None:
    config = HashingConfig(buckets=512, char_ngrams=(2, 3), word_bigrams=False)
    assert hashing_from_dict({"buckets": 512, "char_ngrams": [2, 3], "word_bigrams": False}) == config
