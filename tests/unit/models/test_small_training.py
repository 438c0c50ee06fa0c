"""Small variant training (torch) and distillation on a toy task; numpy serving matches torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelpool.models.features import HashingConfig
from modelpool.models.small import SmallPredictor, SmallTrainingConfig, train_small

pytestmark = pytest.mark.models

WORDS = {0: ["card", "lost", "stolen"], 1: ["transfer", "bank", "sent"], 2: ["rate", "exchange", "currency"]}


def _toy(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    texts = [" ".join(rng.choice(WORDS[int(y)], size=3)) + " please help" for y in labels]
    return texts, labels.astype(np.int64)


def test_learns_toy_task_seeded_and_round_trips(tmp_path: Path) -> None:
    texts, labels = _toy(150, 0)
    config = SmallTrainingConfig(hashing=HashingConfig(buckets=1 << 12), hidden=16, epochs=5)
    model = train_small(texts, labels, None, ("card", "transfer", "rate"), config)
    test_texts, test_labels = _toy(60, 1)
    assert (model.predict_proba(test_texts).argmax(1) == test_labels).mean() > 0.9
    again = train_small(texts, labels, None, ("card", "transfer", "rate"), config)
    assert np.array_equal(model.table, again.table)  # seeded
    model.save(tmp_path)
    loaded = SmallPredictor.load(tmp_path)
    assert np.allclose(loaded.predict_proba(test_texts), model.predict_proba(test_texts))


def test_distillation_follows_the_teacher() -> None:
    texts, labels = _toy(150, 2)
    teacher = np.full((150, 3), 0.05, dtype=np.float32)
    teacher[np.arange(150), (labels + 1) % 3] = 0.9  # a teacher that is consistently "shifted"
    config = SmallTrainingConfig(hashing=HashingConfig(buckets=1 << 12), hidden=16, epochs=8, soft_weight=1.0)
    student = train_small(texts, labels, teacher, ("a", "b", "c"), config)
    test_texts, test_labels = _toy(60, 3)
    predicted = student.predict_proba(test_texts).argmax(1)
    assert (predicted == (test_labels + 1) % 3).mean() > 0.9  # learned the teacher, not the labels


def test_numpy_serving_matches_torch_embedding_bag() -> None:
    import torch

    texts, labels = _toy(40, 4)
    config = SmallTrainingConfig(hashing=HashingConfig(buckets=1 << 10), hidden=8, epochs=1)
    model = train_small(texts, labels, None, ("a", "b", "c"), config)
    from modelpool.models.features import featurize

    bags = featurize(texts, config.hashing)
    bag = torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(model.table), mode="sum")
    hidden = bag(
        torch.from_numpy(bags.indices),
        torch.from_numpy(bags.offsets),
        per_sample_weights=torch.from_numpy(bags.weights),
    )
    logits = hidden.detach().numpy() @ model.weight.T + model.bias
    assert np.allclose(logits, model.logits(texts), atol=1e-4)
