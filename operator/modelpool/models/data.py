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
TEST_FRACTION = 0.2  # of each label's rows, when one CSV is split into train and test
MIN_ROWS_FOR_TEST = 3  # rows a label needs for round(rows * TEST_FRACTION) >= 1


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
    try:
        return _parse_rows(path)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} cannot be decoded); "
            "save the file as UTF-8"
        ) from None


def _parse_rows(path: Path) -> tuple[list[str], list[str]]:
    # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of the first header
    with path.open(newline="", encoding="utf-8-sig") as handle:
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
        names = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
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
        train_idx, test_idx = stratified_split(data.labels, TEST_FRACTION, seed=0)
        if len(test_idx) == 0:
            largest = int(np.bincount(data.labels).max())
            raise DatasetError(
                f"{path}: {len(data)} rows leave the test split empty (each label gives "
                f"{TEST_FRACTION:.0%} of its rows, rounded, to the test split; the largest label has "
                f"{largest}); give at least {MIN_ROWS_FOR_TEST} rows of some label, or a folder with "
                "train.csv and test.csv"
            )
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
    """A seeded stratified sample of about ``limit`` rows (all rows when ``limit`` is None).

    Each label keeps its share rounded to whole rows, but at least one row, so the total can be a
    few rows off and no label present in ``data`` is lost while ``limit`` is at least the number of
    labels. With fewer rows than labels, ``limit`` labels (chosen by ``seed``) keep one row each.
    """
    if limit is None or limit >= len(data):
        return data
    if limit <= 0:
        raise DatasetError(f"--limit {limit} must be positive")
    rng = np.random.default_rng(seed)
    present = np.unique(data.labels)
    if limit < len(present):
        chosen = np.sort(rng.choice(present, size=limit, replace=False))
        keep = [int(rng.choice(np.flatnonzero(data.labels == label))) for label in chosen]
        return data.subset(sorted(keep))
    fraction = limit / len(data)
    kept: list[int] = []
    for label in present:  # the same draws as ``stratified_split``: the same rows where both keep some
        rows = rng.permutation(np.flatnonzero(data.labels == label))
        kept.extend(rows[: max(1, round(len(rows) * fraction))].tolist())
    return data.subset(sorted(kept))


def describe_labels(names: Sequence[str], shown: int = 3) -> str:
    """``"77 labels ['a', 'b', 'c', ...]"``: a label list short enough for a one-line message."""
    head = ", ".join(repr(n) for n in names[:shown])
    return f"{len(names)} labels [{head}{', ...' if len(names) > shown else ''}]"


def label_mismatch(model: Sequence[str], data: Sequence[str]) -> str | None:
    """How a model's label list differs from a data set's (None when equal, order included): label
    ``i`` of a model means label ``i`` of the data only when both lists are the same."""
    model, data = tuple(model), tuple(data)
    if model == data:
        return None
    if set(model) == set(data) and len(model) == len(data):
        i = next(i for i, (a, b) in enumerate(zip(model, data, strict=True)) if a != b)
        return f"the same {len(model)} labels in another order (label {i}: {model[i]!r} vs {data[i]!r})"
    only = sorted(set(model) - set(data)) or sorted(set(data) - set(model))
    side = "the model" if set(model) - set(data) else "the data"
    return f"{describe_labels(model)} vs {describe_labels(data)} ({only[0]!r} only in {side})"


def labels_present(data: LabelledTexts) -> int:
    """Number of distinct labels that have at least one row in ``data``."""
    return len(np.unique(data.labels))
