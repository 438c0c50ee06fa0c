"""The small variant: hashed n-gram bag -> embedding -> linear layer, distilled from the large one.

Training (torch) minimises a mix of the KL divergence to the teacher's softened probabilities and
the cross-entropy to the true labels. Serving needs only numpy (``SmallPredictor``): an embedding
lookup-and-sum and one matrix product, far cheaper than a transformer forward pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from modelpool.models.features import FeatureBags, HashingConfig, bag_sums, featurize, hashing_from_dict
from modelpool.models.torchutil import optimizer_step, sparse_and_dense_optimizers

FloatArray = npt.NDArray[np.float32]
SMALL_WEIGHTS = "small.npz"
SMALL_META = "small.json"


@dataclass(frozen=True)
class SmallTrainingConfig:
    """Hyper-parameters of the small variant and its distillation."""

    hashing: HashingConfig = field(default_factory=HashingConfig)
    hidden: int = 128
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.003
    temperature: float = 2.0
    soft_weight: float = 0.7
    seed: int = 0


def softmax(logits: FloatArray, axis: int = -1) -> FloatArray:
    """Numerically stable softmax."""
    exp = np.exp(logits - logits.max(axis=axis, keepdims=True))
    result: FloatArray = (exp / exp.sum(axis=axis, keepdims=True)).astype(np.float32)
    return result


@dataclass(frozen=True)
class SmallPredictor:
    """Numpy inference of the small variant."""

    table: FloatArray
    weight: FloatArray
    bias: FloatArray
    hashing: HashingConfig
    label_names: tuple[str, ...]

    def hidden(self, texts: Sequence[str]) -> FloatArray:
        """The bag embedding of each text (before the output layer)."""
        return bag_sums(self.table, featurize(texts, self.hashing))

    def logits(self, texts: Sequence[str]) -> FloatArray:
        """Class scores before softmax."""
        return (self.hidden(texts) @ self.weight.T + self.bias).astype(np.float32)

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        """Class probabilities, one row per text."""
        return softmax(self.logits(texts))

    def save(self, directory: Path) -> None:
        """Write ``small.npz`` and ``small.json`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / SMALL_WEIGHTS, table=self.table, weight=self.weight, bias=self.bias)
        meta = {"hashing": asdict(self.hashing), "label_names": list(self.label_names)}
        (directory / SMALL_META).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> SmallPredictor:
        """Read a predictor written by ``save``."""
        meta = json.loads((directory / SMALL_META).read_text(encoding="utf-8"))
        config = hashing_from_dict(meta["hashing"])
        with np.load(directory / SMALL_WEIGHTS) as weights:
            return cls(
                weights["table"].astype(np.float32),
                weights["weight"].astype(np.float32),
                weights["bias"].astype(np.float32),
                config,
                tuple(meta["label_names"]),
            )


def bag_tensors(bags: FeatureBags, rows: npt.NDArray[np.int64]) -> tuple[object, object, object]:
    """EmbeddingBag inputs (indices, offsets, weights) for the texts at ``rows``."""
    import torch

    ends = np.append(bags.offsets[1:], len(bags.indices))
    pieces = [np.arange(bags.offsets[r], ends[r]) for r in rows]
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    flat = np.concatenate(pieces)
    offsets = np.zeros(len(rows), dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)[:-1]
    return (
        torch.from_numpy(bags.indices[flat]),
        torch.from_numpy(offsets),
        torch.from_numpy(bags.weights[flat]),
    )


def train_small(
    texts: Sequence[str],
    labels: npt.NDArray[np.int64],
    teacher_probs: FloatArray | None,
    label_names: Sequence[str],
    config: SmallTrainingConfig = SmallTrainingConfig(),
) -> SmallPredictor:
    """Train the small variant; with ``teacher_probs`` it is distilled from them, else plain supervised."""
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    num_classes = len(label_names)
    bags = featurize(texts, config.hashing)
    embedding = nn.EmbeddingBag(config.hashing.buckets, config.hidden, mode="sum", sparse=True)
    nn.init.normal_(embedding.weight, std=0.05)
    output = nn.Linear(config.hidden, num_classes)
    optimizers = sparse_and_dense_optimizers(embedding, output, config.learning_rate)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    soft_targets = None if teacher_probs is None else _soften(teacher_probs, config.temperature)
    for _ in range(config.epochs):
        order = rng.permutation(len(texts))
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            indices, offsets, weights = bag_tensors(bags, rows)
            logits = output(embedding(indices, offsets, per_sample_weights=weights))
            loss = nn.functional.cross_entropy(logits, y[rows])
            if soft_targets is not None:
                log_p = nn.functional.log_softmax(logits / config.temperature, dim=1)
                kl = nn.functional.kl_div(log_p, torch.from_numpy(soft_targets[rows]), reduction="batchmean")
                loss = (1 - config.soft_weight) * loss + config.soft_weight * config.temperature**2 * kl
            optimizer_step(optimizers, loss)
    return SmallPredictor(
        embedding.weight.detach().numpy().astype(np.float32),
        output.weight.detach().numpy().astype(np.float32),
        output.bias.detach().numpy().astype(np.float32),
        config.hashing,
        tuple(label_names),
    )


def _soften(probs: FloatArray, temperature: float) -> FloatArray:
    """Teacher probabilities re-tempered: ``softmax(log p / T)``."""
    return softmax(np.log(np.clip(probs, 1e-8, 1.0)) / temperature)
