"""Loading labelled texts: a CSV of (text, label) or a data set folder such as Banking77.

A data set folder holds ``train.csv`` and ``test.csv`` (columns ``text`` and ``label`` or ``category``)
and optionally ``categories.json`` (the ordered list of label names). Labels are mapped to indices
in that order; without ``categories.json`` the sorted set of training labels is used.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

TEXT_COLUMN = "text"
LABEL_COLUMNS = ("label", "category", "intent")

IntArray = npt.NDArray[np.int64]


class DatasetError(ValueError):
    """A data file is malformed; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with integer labels indexing ``label_names``."""

    texts: tuple[str, ...]
    labels: IntArray
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DatasetError(
                f"{len(self.texts)} texts but {len(self.labels)} labels: give one label per text"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        """Number of label names (classes)."""
        return len(self.label_names)

    def subset(self, indices: Sequence[int] | IntArray) -> LabelledTexts:
        """The rows at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledTexts(tuple(self.texts[i] for i in idx), self.labels[idx], self.label_names)


@dataclass(frozen=True)
class DatasetSplits:
    """A training and a test split sharing one label set."""

    train: LabelledTexts
    test: LabelledTexts
    name: str


def _read_rows(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; give a CSV with columns '{TEXT_COLUMN}' and 'label'")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if TEXT_COLUMN not in fields:
            raise DatasetError(
                f"{path}: no '{TEXT_COLUMN}' column (found {fields}); add a header row 'text,label'"
            )
        label_column = next((c for c in LABEL_COLUMNS if c in fields), None)
        if label_column is None:
            raise DatasetError(
                f"{path}: no label column (found {fields}); name it one of {list(LABEL_COLUMNS)}"
            )
        texts: list[str] = []
        labels: list[str] = []
        for line, row in enumerate(reader, start=2):
            text = (row.get(TEXT_COLUMN) or "").strip()
            label = (row.get(label_column) or "").strip()
            if not text or not label:
                raise DatasetError(
                    f"{path}:{line}: empty '{TEXT_COLUMN}' or '{label_column}'; fill or remove the row"
                )
            texts.append(text)
            labels.append(label)
    if not texts:
        raise DatasetError(f"{path}: no rows; give at least one (text, label) row")
    return texts, labels


def _index_labels(path: Path, labels: Sequence[str], label_names: Sequence[str]) -> IntArray:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(labels) - index.keys())
    if unknown:
        raise DatasetError(
            f"{path}: labels {unknown[:5]} are not in the label list; add them to categories.json"
        )
    return np.array([index[label] for label in labels], dtype=np.int64)


def load_csv(path: Path, label_names: Sequence[str] | None = None) -> LabelledTexts:
    """Load one CSV of (text, label); ``label_names`` fixes the label order (default: sorted labels)."""
    texts, labels = _read_rows(Path(path))
    names = tuple(label_names) if label_names is not None else tuple(sorted(set(labels)))
    return LabelledTexts(tuple(texts), _index_labels(Path(path), labels, names), names)


def load_label_names(path: Path) -> tuple[str, ...]:
    """Read ``categories.json``: a JSON list of distinct label names."""
    try:
        names = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); give a JSON list of label names") from exc
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or len(set(names)) != len(names)
    ):
        raise DatasetError(f"{path}: must be a JSON list of distinct label-name strings")
    return tuple(names)


def load_dataset(path: Path) -> DatasetSplits:
    """Load a data set folder (``train.csv``, ``test.csv``, optional ``categories.json``) or one CSV.

    A single CSV is split 80/20 (seeded, stratified) into train and test.
    """
    path = Path(path)
    if path.is_file():
        data = load_csv(path)
        train_idx, test_idx = stratified_split(data.labels, 0.2, seed=0)
        return DatasetSplits(data.subset(train_idx), data.subset(test_idx), path.stem)
    if not path.is_dir():
        raise DatasetError(
            f"{path}: no such file or folder; give a CSV or a folder with train.csv and test.csv"
        )
    categories = path / "categories.json"
    if categories.is_file():
        names: Sequence[str] | None = load_label_names(categories)
    else:
        names = tuple(sorted(set(_read_rows(path / "train.csv")[1])))
    return DatasetSplits(load_csv(path / "train.csv", names), load_csv(path / "test.csv", names), path.name)


def stratified_split(labels: IntArray, fraction: float, seed: int) -> tuple[IntArray, IntArray]:
    """Seeded split of row indices: about ``fraction`` of each class goes to the second part."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"split fraction {fraction} must be between 0 and 1 (exclusive)")
    rng = np.random.default_rng(seed)
    first: list[int] = []
    second: list[int] = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(rows) * fraction) if len(rows) > 1 else 0
        second.extend(rows[:cut].tolist())
        first.extend(rows[cut:].tolist())
    return np.array(sorted(first), dtype=np.int64), np.array(sorted(second), dtype=np.int64)


def train_validation_split(
    data: LabelledTexts, fraction: float, seed: int
) -> tuple[LabelledTexts, LabelledTexts]:
    """Seeded stratified split of ``data`` into (train, validation)."""
    train_idx, val_idx = stratified_split(data.labels, fraction, seed)
    return data.subset(train_idx), data.subset(val_idx)


def limit_rows(data: LabelledTexts, limit: int | None, seed: int) -> LabelledTexts:
    """A seeded stratified sample of about ``limit`` rows (all rows when ``limit`` is None): each
    class keeps its share rounded to whole rows, so the total can be a few rows off."""
    if limit is None or limit >= len(data):
        return data
    if limit <= 0:
        raise DatasetError(f"--limit {limit} must be positive")
    _, keep = stratified_split(data.labels, limit / len(data), seed)
    return data.subset(keep)
