"""Learned complexity scorer: predicts how likely the small variant is to get a text wrong.

Features are cheap (no transformer): from the small variant's probabilities, the top probability,
top-1/top-2 margin, entropy, predicted class (one-hot) and the text length; optionally
(``embedding > 0``) the scorer's own hashed n-gram bag embedding of the text, which overfit on
Banking77 (test AUC 0.77-0.89 against 0.915 without it), so it is off by default. A tiny MLP maps
the features to P(small is wrong). It is trained on
out-of-fold predictions of small models (cross-fitting), never on the small model's own training fit.

A saved scorer is a folder: ``scorer.pt`` (weights), ``scorer.json`` (shape) and the small
variant's files it featurizes with. ``load_scorer(path)`` returns a :class:`TorchComplexityScorer`,
which implements the router's ``ComplexityScorer`` protocol (``score(texts) -> list[float]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelpool.models.features import HashingConfig, featurize, hashing_from_dict
from modelpool.models.small import SmallPredictor, bag_tensors
from modelpool.models.torchutil import module_base, optimizer_step, sparse_and_dense_optimizers

FloatArray = npt.NDArray[np.float32]
SCORER_WEIGHTS = "scorer.pt"
SCORER_META = "scorer.json"
DENSE_STATS = 4  # confidence features before the class one-hot: top, margin, entropy, length


@dataclass(frozen=True)
class ScorerTrainingConfig:
    """Hyper-parameters of the scorer network."""

    hashing: HashingConfig = field(default_factory=lambda: HashingConfig(buckets=1 << 16))
    embedding: int = 0
    hidden: int = 16
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.003
    seed: int = 0


def confidence_features(probs: FloatArray, texts: Sequence[str]) -> FloatArray:
    """Dense features from the small variant's probabilities: [top, margin, entropy, length, class one-hot].

    They mean the same for any small model, so fold models (training) and the final one (serving) agree.
    """
    ordered = np.sort(probs, axis=1)
    top = ordered[:, -1]
    margin = top - ordered[:, -2]
    entropy = -(probs * np.log(np.clip(probs, 1e-9, 1.0))).sum(axis=1) / np.log(probs.shape[1])
    words = np.array([len(t.split()) for t in texts], dtype=np.float32)
    one_hot = np.eye(probs.shape[1], dtype=np.float32)[probs.argmax(axis=1)]
    stats = np.stack([top, margin, entropy, np.log1p(words) / 4.0], axis=1)
    features: FloatArray = np.concatenate([stats, one_hot], axis=1).astype(np.float32)
    return features


class ScorerNet(module_base()):  # type: ignore[misc]
    """Dense confidence features (+ optional hashed n-gram bag) -> MLP -> logit of 'small is wrong'."""

    def __init__(self, buckets: int, embedding: int, dense: int, hidden: int) -> None:
        from torch import nn

        super().__init__()
        self.dense = dense
        self.bag = nn.EmbeddingBag(max(buckets, 1), max(embedding, 1), mode="sum", sparse=True)
        nn.init.normal_(self.bag.weight, std=0.05)
        self.embedding = embedding
        self.mlp = nn.Sequential(
            nn.Linear(max(embedding, 0) + dense, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, indices: Any, offsets: Any, weights: Any, dense: Any) -> Any:
        import torch

        if self.embedding <= 0:
            return self.mlp(dense).squeeze(1)
        bag = self.bag(indices, offsets, per_sample_weights=weights)
        return self.mlp(torch.cat([bag, dense], dim=1)).squeeze(1)


def train_scorer_net(
    texts: Sequence[str],
    small_probs: FloatArray,
    small_wrong: npt.NDArray[np.bool_],
    config: ScorerTrainingConfig,
) -> ScorerNet:
    """Fit the scorer to predict ``small_wrong`` (binary cross-entropy) from texts and small probabilities."""
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    bags = featurize(texts, config.hashing)
    dense = torch.from_numpy(confidence_features(small_probs, texts))
    net = ScorerNet(config.hashing.buckets, config.embedding, dense.shape[1], config.hidden)
    optimizers = sparse_and_dense_optimizers(net.bag, net.mlp, config.learning_rate)
    y = torch.from_numpy(small_wrong.astype(np.float32))
    net.train()
    for _ in range(config.epochs):
        order = rng.permutation(len(texts))
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            indices, offsets, weights = bag_tensors(bags, rows)
            loss = nn.functional.binary_cross_entropy_with_logits(
                net(indices, offsets, weights, dense[rows]), y[rows]
            )
            optimizer_step(optimizers, loss)
    trained: ScorerNet = net.eval()
    return trained


class TorchComplexityScorer:
    """The router's ``ComplexityScorer``: ``score(texts)`` = P(small variant is wrong), in [0, 1]."""

    blocking = True

    def __init__(self, small: SmallPredictor, net: ScorerNet, config: ScorerTrainingConfig) -> None:
        self.small = small
        self.net = net
        self.config = config

    def score(self, texts: Sequence[str]) -> list[float]:
        """One probability of a small-variant error per text."""
        if not texts:
            return []
        return self.score_with_probs(texts, self.small.predict_proba(texts))

    def score_with_probs(self, texts: Sequence[str], small_probs: FloatArray) -> list[float]:
        """Scores given the small variant's probabilities of ``texts`` (e.g. from a Triton response)."""
        import torch

        if not texts:
            return []
        bags = featurize(texts, self.config.hashing)
        dense = torch.from_numpy(confidence_features(small_probs, texts))
        with torch.inference_mode():
            logits = self.net(
                torch.from_numpy(bags.indices),
                torch.from_numpy(bags.offsets),
                torch.from_numpy(bags.weights),
                dense,
            )
            return [float(v) for v in torch.sigmoid(logits).tolist()]

    def save(self, directory: Path) -> None:
        """Write ``scorer.pt``, ``scorer.json`` and the small variant's files into ``directory``."""
        import torch

        directory.mkdir(parents=True, exist_ok=True)
        self.small.save(directory)
        torch.save(self.net.state_dict(), directory / SCORER_WEIGHTS)
        config = asdict(self.config)
        meta = {
            "config": config,
            "dense": self.net.dense,
            "target": "P(small variant is wrong)",
        }
        (directory / SCORER_META).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_scorer(path: str | Path) -> TorchComplexityScorer:
    """Load a scorer folder written by ``modelpool models train-scorer`` (the router's factory)."""
    directory = Path(path)
    if not (directory / SCORER_META).is_file():
        raise FileNotFoundError(
            f"{directory}: no {SCORER_META}; give the folder written by `modelpool models train-scorer --out`"
        )
    import torch

    meta = json.loads((directory / SCORER_META).read_text(encoding="utf-8"))
    raw = meta["config"]
    config = ScorerTrainingConfig(**{**raw, "hashing": hashing_from_dict(raw["hashing"])})
    small = SmallPredictor.load(directory)
    dense = int(meta["dense"])
    if dense != DENSE_STATS + len(small.label_names):
        raise ValueError(
            f"{directory}: the scorer network takes {dense - DENSE_STATS} classes but its small model has "
            f"{len(small.label_names)}: it was trained with --data other than the --trained model's; "
            "retrain it with `modelpool models train-scorer` on the model's own data set"
        )
    net = ScorerNet(config.hashing.buckets, config.embedding, dense, config.hidden)
    net.load_state_dict(torch.load(directory / SCORER_WEIGHTS, map_location="cpu", weights_only=True))
    return TorchComplexityScorer(small, net.eval(), config)


def roc_auc(scores: Sequence[float] | FloatArray, positives: npt.NDArray[np.bool_]) -> float:
    """Area under the ROC curve (rank statistic, ties count half); NaN without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
