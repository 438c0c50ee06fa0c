"""Training of the three variants and of the complexity scorer (seeded; embeddings cached).

``train_variants`` writes into one folder:

* ``head.pt`` + ``large.json``: the large variant's head (the quantized variant is the same module
  after whole-module dynamic int8 quantization, so it needs no files of its own);
* ``small.npz`` + ``small.json``: the small variant, distilled from out-of-fold large probabilities;
* ``train-report.json``: test accuracies, sizes and in-process single-item cost of each variant.

``train_complexity_scorer`` writes the scorer folder (see ``modelpool.models.scorer``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelpool.models.data import (
    DatasetError,
    DatasetSplits,
    LabelledTexts,
    label_mismatch,
    labels_present,
    limit_rows,
    load_dataset,
)
from modelpool.models.encoder import (
    EmbeddingCache,
    count_modules,
    encoder_digest,
    load_encoder,
    quantize_dynamic_int8,
    serialized_size_bytes,
)
from modelpool.models.large import (
    HeadTrainingConfig,
    cross_fitted_probabilities,
    head_probabilities,
    load_large,
    save_large,
    train_head,
)
from modelpool.models.scorer import ScorerTrainingConfig, TorchComplexityScorer, roc_auc, train_scorer_net
from modelpool.models.small import SmallPredictor, SmallTrainingConfig, train_small

FloatArray = npt.NDArray[np.float32]
REPORT_FILE = "train-report.json"
VALIDATION_FILE = "validation.npz"


@dataclass(frozen=True)
class TrainOptions:
    """What to train on and how."""

    data: Path
    out: Path
    seed: int = 0
    limit: int | None = None
    folds: int = 5
    small: SmallTrainingConfig = field(default_factory=SmallTrainingConfig)
    head: HeadTrainingConfig = field(default_factory=HeadTrainingConfig)


def load_limited(data: Path, limit: int | None, seed: int, *, training: bool = True) -> DatasetSplits:
    """The data set, with about ``limit`` training rows and ``ceil(limit/3)`` test rows when given.

    Refused with a ``DatasetError`` before any work: a split left empty, and, when ``training``,
    a ``limit`` below the number of training labels (some label would have no training row).
    """
    splits = load_dataset(data)
    if limit is not None:
        labels = labels_present(splits.train)
        if training and limit < labels:
            raise DatasetError(
                f"--limit {limit} is fewer than the {labels} labels of {splits.name}'s training split: "
                f"give --limit {labels} or more (one training row per label), or leave it out"
            )
        splits = DatasetSplits(
            limit_rows(splits.train, limit, seed),
            limit_rows(splits.test, math.ceil(limit / 3), seed),
            splits.name,
        )
    for part, rows in (("training", splits.train), ("test", splits.test)):
        if len(rows) == 0:  # not reachable through load_dataset and limit_rows; kept as the contract
            raise DatasetError(f"{data}: the {part} split has no rows; give a data set with some")
    return splits


def finite_or_none(value: float) -> float | None:
    """``value``, or None (JSON null) when it is NaN or infinite: JSON has no NaN."""
    return value if math.isfinite(value) else None


def write_json_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as strict JSON (a NaN or infinity left in it raises instead of being written)."""
    path.write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")


class Embedder:
    """Cached sentence embeddings by the fp32 encoder (the encoder loads only when a text is missing)."""

    def __init__(self) -> None:
        self._encoder: Any = None
        self.cache = EmbeddingCache(f"{encoder_digest()}-fp32")

    def _encode(self, texts: list[str]) -> FloatArray:
        if self._encoder is None:
            self._encoder = load_encoder()
        return np.asarray(
            self._encoder.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False),
            dtype=np.float32,
        )

    def __call__(self, texts: Sequence[str]) -> FloatArray:
        return self.cache.embed(texts, self._encode)


def accuracy(probs: FloatArray, labels: npt.NDArray[np.int64]) -> float:
    """Share of rows whose argmax equals the label."""
    return float((probs.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def single_item_ms(predict: Callable[[list[str]], Any], texts: Sequence[str], repeats: int = 50) -> float:
    """Median wall time (ms) of ``predict([text])`` over the first ``repeats`` texts, after one warm-up."""
    predict([texts[0]])
    times = []
    for text in list(texts)[:repeats]:
        start = time.perf_counter()
        predict([text])
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def distill_small(
    train: LabelledTexts, teacher: FloatArray | None, config: SmallTrainingConfig
) -> SmallPredictor:
    """The small variant trained on ``train`` (distilled from ``teacher`` probabilities when given)."""
    return train_small(train.texts, train.labels, teacher, train.label_names, config)


def train_variants(options: TrainOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train large head and distilled small variant; evaluate all three on the test split."""
    import torch

    torch.manual_seed(options.seed)
    splits = load_limited(options.data, options.limit, options.seed)
    train, test = splits.train, splits.test
    log(f"data {splits.name}: train {len(train)}, test {len(test)}, classes {train.num_classes}")
    embed = Embedder()
    x_train = embed(train.texts)
    head_config = HeadTrainingConfig(**{**options.head.__dict__, "seed": options.seed})
    head = train_head(x_train, train.labels, train.num_classes, head_config)
    save_large(options.out, head, train.label_names, head_config)
    teacher = cross_fitted_probabilities(x_train, train.labels, train.num_classes, head_config, options.folds)
    small_config = SmallTrainingConfig(**{**options.small.__dict__, "seed": options.seed})
    small = distill_small(train, teacher, small_config)
    small.save(options.out)
    log("trained large head and small variant; evaluating")

    large = load_large(options.out)
    quantized = quantize_dynamic_int8(load_large(options.out))
    test_texts = list(test.texts)
    p_small = small.predict_proba(test_texts)
    p_large = head_probabilities(head, embed(test_texts))
    p_quant = quantized.predict_proba(test_texts)
    costs = {
        "small": single_item_ms(small.predict_proba, test_texts),
        "quantized": single_item_ms(quantized.predict_proba, test_texts),
        "large": single_item_ms(large.predict_proba, test_texts),
    }
    report: dict[str, Any] = {
        "data": splits.name,
        "seed": options.seed,
        "train_rows": len(train),
        "test_rows": len(test),
        "accuracy": {
            "small": finite_or_none(accuracy(p_small, test.labels)),
            "quantized": finite_or_none(accuracy(p_quant, test.labels)),
            "large": finite_or_none(accuracy(p_large, test.labels)),
            "teacher_out_of_fold_train": finite_or_none(accuracy(teacher, train.labels)),
        },
        "small_agrees_with_large": finite_or_none(float((p_small.argmax(1) == p_large.argmax(1)).mean())),
        "single_item_ms_in_process": costs,
        "large_over_small_cost": costs["large"] / max(costs["small"], 1e-9),
        "size_bytes": {
            "small": int(small.table.nbytes + small.weight.nbytes + small.bias.nbytes),
            "quantized": serialized_size_bytes(quantized),
            "large": serialized_size_bytes(large),
        },
        "linear_modules": {"large": count_modules(large), "quantized": count_modules(quantized)},
        "max_abs_probability_change_int8": float(np.abs(p_quant - p_large).max()) if len(test) else 0.0,
    }
    write_json_report(options.out / REPORT_FILE, report)
    return report


def out_of_fold_small(
    train: LabelledTexts, teacher: FloatArray | None, config: SmallTrainingConfig, folds: int
) -> FloatArray:
    """Each training row's probabilities from a small model that did not see it."""
    rng = np.random.default_rng(config.seed + 2)
    fold_of = rng.permutation(len(train)) % folds
    probs = np.zeros((len(train), train.num_classes), dtype=np.float32)
    for fold in range(folds):
        held = np.flatnonzero(fold_of == fold)
        kept = np.flatnonzero(fold_of != fold)
        model = distill_small(train.subset(kept), None if teacher is None else teacher[kept], config)
        probs[held] = model.predict_proba([train.texts[i] for i in held])
    return probs


def train_complexity_scorer(
    options: TrainOptions,
    trained: Path,
    config: ScorerTrainingConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the scorer on out-of-fold small-model errors; report AUC on the test split.

    Also writes ``validation.npz``: out-of-fold small and large probabilities of the training rows,
    their labels and scores, for choosing routing thresholds without looking at the test split.
    """
    splits = load_limited(options.data, options.limit, options.seed)
    train, test = splits.train, splits.test
    small = SmallPredictor.load(trained)
    mismatch = label_mismatch(small.label_names, train.label_names)
    if mismatch:  # checked before minutes of cross-fitting and before anything is saved
        raise DatasetError(
            f"--trained {trained} and --data {options.data} disagree on the labels: {mismatch}; "
            f"give the --data it was trained on, or train it on this data first "
            f"(`modelpool models train --data {options.data}`)"
        )
    embed = Embedder()
    head_config = HeadTrainingConfig(**{**options.head.__dict__, "seed": options.seed})
    x_train = embed(train.texts)
    teacher = cross_fitted_probabilities(x_train, train.labels, train.num_classes, head_config, options.folds)
    small_config = SmallTrainingConfig(**{**options.small.__dict__, "seed": options.seed})
    log(f"cross-fitting {options.folds} small models on {len(train)} rows")
    oof = out_of_fold_small(train, teacher, small_config, options.folds)
    wrong = oof.argmax(axis=1) != train.labels
    scorer_config = ScorerTrainingConfig(
        **{**(config or ScorerTrainingConfig()).__dict__, "seed": options.seed}
    )
    net = train_scorer_net(train.texts, oof, wrong, scorer_config)
    scorer = TorchComplexityScorer(small, net, scorer_config)
    scorer.save(options.out)
    test_texts = list(test.texts)
    p_small = small.predict_proba(test_texts)
    test_wrong = p_small.argmax(axis=1) != test.labels
    scores = scorer.score(test_texts)
    report = {
        "train_rows": len(train),
        "test_rows": len(test),
        "out_of_fold_small_error": float(wrong.mean()),
        "test_small_error": float(test_wrong.mean()),
        # null when the test split holds only right (or only wrong) small answers: AUC is undefined
        "auc_scorer": finite_or_none(roc_auc(scores, test_wrong)),
        "auc_one_minus_confidence": finite_or_none(roc_auc(1.0 - p_small.max(axis=1), test_wrong)),
    }
    write_json_report(options.out / "scorer-report.json", report)
    np.savez(
        options.out / VALIDATION_FILE,
        small=oof,
        large=teacher,
        labels=train.labels,
        scores=np.asarray(scorer.score_with_probs(train.texts, oof), dtype=np.float32),
    )
    return report
