"""Data loading: CSV and folder layouts, clear errors, seeded stratified splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpool.models.data import (
    DatasetError,
    LabelledTexts,
    limit_rows,
    load_csv,
    load_dataset,
    stratified_split,
    train_validation_split,
)
from modelpool.models.paths import banking77_dir
from modelpool.models.train import load_limited


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_label_column_maps_sorted_names(tmp_path: Path) -> None:
    data = load_csv(_write(tmp_path / "d.csv", "text,label\nhello there,b\nbye now,a\nhi,b\n"))
    assert data.label_names == ("a", "b")
    assert data.texts == ("hello there", "bye now", "hi")
    assert data.labels.tolist() == [1, 0, 1]


def test_missing_text_column_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="'text' column"):
        load_csv(_write(tmp_path / "d.csv", "sentence,label\nx,a\n"))


def test_missing_label_column_lists_accepted_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="category"):
        load_csv(_write(tmp_path / "d.csv", "text,klass\nx,a\n"))


def test_empty_cell_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"d\.csv:3"):
        load_csv(_write(tmp_path / "d.csv", "text,label\nx,a\n,b\n"))


def test_folder_with_categories_keeps_their_order(tmp_path: Path) -> None:
    _write(tmp_path / "categories.json", json.dumps(["z", "a"]))
    _write(tmp_path / "train.csv", "text,category\none,a\ntwo,z\n")
    _write(tmp_path / "test.csv", "text,category\nthree,z\n")
    splits = load_dataset(tmp_path)
    assert splits.train.label_names == ("z", "a")
    assert splits.train.labels.tolist() == [1, 0]
    assert splits.test.labels.tolist() == [0]


def test_label_outside_categories_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "categories.json", json.dumps(["a"]))
    _write(tmp_path / "train.csv", "text,category\none,a\n")
    _write(tmp_path / "test.csv", "text,category\nthree,q\n")
    with pytest.raises(DatasetError, match=r"categories\.json"):
        load_dataset(tmp_path)


def test_single_csv_is_split_into_train_and_test(tmp_path: Path) -> None:
    rows = "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(50))
    splits = load_dataset(_write(tmp_path / "all.csv", "text,label\n" + rows))
    assert len(splits.train) + len(splits.test) == 50
    assert set(splits.train.texts).isdisjoint(splits.test.texts)


def test_stratified_split_is_seeded_and_keeps_classes() -> None:
    labels = np.repeat(np.arange(4), 25)
    first_a, second_a = stratified_split(labels, 0.2, seed=3)
    first_b, second_b = stratified_split(labels, 0.2, seed=3)
    assert first_a.tolist() == first_b.tolist() and second_a.tolist() == second_b.tolist()
    assert sorted(first_a.tolist() + second_a.tolist()) == list(range(100))
    assert np.bincount(labels[second_a]).tolist() == [5, 5, 5, 5]
    _, other = stratified_split(labels, 0.2, seed=4)
    assert other.tolist() != second_a.tolist()


def test_bad_fraction_and_limit_are_rejected(tmp_path: Path) -> None:
    data = load_csv(_write(tmp_path / "d.csv", "text,label\na,x\nb,y\n"))
    with pytest.raises(DatasetError, match="fraction"):
        train_validation_split(data, 1.5, seed=0)
    with pytest.raises(DatasetError, match="--limit"):
        limit_rows(data, -1, seed=0)
    assert limit_rows(data, None, seed=0) is data


def test_banking77_shape() -> None:
    splits = load_dataset(banking77_dir())
    assert (len(splits.train), len(splits.test), splits.train.num_classes) == (10003, 3080, 77)
    small = limit_rows(splits.train, 770, seed=0)
    assert 700 <= len(small) <= 840
    assert len(np.unique(small.labels)) == 77


def test_the_model_cache_lives_under_the_projects_cache_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$MODELPOOL_CACHE`` is one root for everything cached (binaries, venv, models): the model
    cache is its ``models/`` folder, not the root itself."""
    from modelpool.devcluster.toolchain import cache_dir as cache_root
    from modelpool.models.paths import cache_dir

    monkeypatch.setenv("MODELPOOL_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert cache_dir() == tmp_path / "models" and cache_dir().is_dir()


def test_a_bom_at_the_start_of_a_csv_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhello,a\nbye,b\n")  # as spreadsheet programs save UTF-8
    assert load_csv(path).texts == ("hello", "bye")


def test_a_csv_that_is_not_utf8_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncafé,a\nbye,b\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.csv: not UTF-8 text .*0xe9.*save the file as UTF-8"):
        load_csv(path)


def test_limit_keeps_a_row_of_every_label_where_it_can() -> None:
    labels = np.array([0] * 40 + [1] * 40 + [2] * 40 + [3] * 40 + [4] * 40 + [5] * 2, dtype=np.int64)
    data = LabelledTexts(tuple(f"t{i}" for i in range(len(labels))), labels, tuple("abcdef"))
    sample = limit_rows(data, 20, seed=0)  # label 5's share is 0.2 of a row: it still keeps one
    assert sorted(set(sample.labels.tolist())) == [0, 1, 2, 3, 4, 5] and 20 <= len(sample) <= 26
    fewer = limit_rows(data, 3, seed=0)  # fewer rows than labels: one row each of 3 labels
    assert len(fewer) == 3 and len(set(fewer.labels.tolist())) == 3
    assert limit_rows(data, 3, seed=0).texts == fewer.texts  # seeded


def test_limit_600_keeps_the_documented_banking77_sample() -> None:
    splits = load_limited(banking77_dir(), 600, 0)  # docs/models.md: 603 training and 231 test rows
    assert (len(splits.train), len(splits.test)) == (603, 231)


def test_a_limit_that_leaves_a_split_empty_is_refused_or_fixed() -> None:
    with pytest.raises(
        DatasetError, match=r"--limit 20 is fewer than the 77 labels .* give --limit 77 or more"
    ):
        load_limited(banking77_dir(), 20, 0)
    splits = load_limited(banking77_dir(), 100, 0)  # was: 99 training rows, 0 test rows
    assert len(np.unique(splits.train.labels)) == 77 and len(splits.test) == 34
    profile_only = load_limited(banking77_dir(), 20, 0, training=False)  # profile needs test rows only
    assert len(profile_only.test) == 7


def test_a_csv_too_small_for_a_test_split_is_refused_with_the_minimum(tmp_path: Path) -> None:
    rows = "".join(f"text {i},{label}\n" for i in range(2) for label in ("card", "transfer", "fx"))
    path = _write(tmp_path / "tiny.csv", "text,label\n" + rows)
    with pytest.raises(DatasetError, match=r"tiny\.csv: 6 rows leave the test split empty.*at least 3 rows"):
        load_dataset(path)
    _write(path, "text,label\n" + rows + "text 2,card\n")  # a label with 3 rows gives one to test
    splits = load_dataset(path)
    assert (len(splits.train), len(splits.test)) == (6, 1)
