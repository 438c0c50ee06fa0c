"""Artifacts that do not fit together are refused when loaded; the embedding cache survives sharing;
reports are strict JSON."""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpool.models.encoder import EmbeddingCache
from unit.models.toy_models import rows, save_large_files, save_small, write_dataset

pytestmark = pytest.mark.models


def _ones(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), 384), dtype=np.float32)


def test_two_caches_of_one_file_keep_each_others_entries(tmp_path: Path) -> None:
    first, second = EmbeddingCache("k", tmp_path), EmbeddingCache("k", tmp_path)  # both read it empty
    first.embed(["a", "b"], _ones)
    second.embed(["c"], _ones)  # used to overwrite the file with its own entries only
    again = EmbeddingCache("k", tmp_path)
    assert again.embed(["a", "b", "c"], lambda texts: pytest.fail(f"re-encoded {texts}")).shape == (3, 384)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # no temporary file left


def _small_vectors(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), 8), dtype=np.float32)


def _saver(directory: str, tag: str, rounds: int, go: Any) -> None:
    cache = EmbeddingCache("k", Path(directory))
    go.wait()  # both processes save at the same time
    for i in range(rounds):
        cache.embed([f"{tag}-{i}-{j}" for j in range(5)], _small_vectors)


def test_processes_saving_one_cache_at_once_neither_fail_nor_lose_entries(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    workers = [context.Process(target=_saver, args=(str(tmp_path), tag, 150, go)) for tag in "pq"]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]  # a shared temporary name made saves fail
    cache = EmbeddingCache("k", tmp_path)
    expected = [f"{tag}-{i}-{j}" for tag in "pq" for i in range(150) for j in range(5)]
    assert cache.embed(expected, lambda texts: pytest.fail(f"lost {len(texts)} entries")).shape[0] == 1500


def test_a_head_trained_on_another_encoder_is_refused_when_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelpool.models.large as large

    monkeypatch.setattr(large, "load_encoder", lambda device="cpu": object())  # never load the real one
    monkeypatch.setattr(large, "encoder_digest", lambda path=None: "1111222233334444")
    save_large_files(tmp_path, ("a", "b"), encoder_digest="aaaabbbbccccdddd")
    with pytest.raises(
        RuntimeError, match=r"digest aaaabbbbccccdddd, but the installed .* has 1111222233334444"
    ):
        large.load_large(tmp_path)
    save_large_files(tmp_path, ("a", "b"), encoder_digest="1111222233334444")
    assert large.load_large(tmp_path).label_names == ("a", "b")


def test_a_scorer_whose_network_does_not_fit_its_small_model_is_refused_when_loaded(tmp_path: Path) -> None:
    import torch

    from modelpool.models.scorer import (
        SCORER_META,
        SCORER_WEIGHTS,
        ScorerNet,
        ScorerTrainingConfig,
        load_scorer,
    )

    save_small(tmp_path, ("a", "b", "c"))  # 3 classes, but the network was fitted on 77
    config = ScorerTrainingConfig()
    torch.save(
        ScorerNet(config.hashing.buckets, 0, 81, config.hidden).state_dict(), tmp_path / SCORER_WEIGHTS
    )
    hashing = {"buckets": config.hashing.buckets, "char_ngrams": [3, 4, 5], "word_bigrams": True}
    meta = {"config": {**config.__dict__, "hashing": hashing}, "dense": 81}
    (tmp_path / SCORER_META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="takes 77 classes but its small model has 3"):
        load_scorer(tmp_path)


class _FakeEmbedder:
    """Embeddings from the text's hash: no encoder in a unit test."""

    def __call__(self, texts: Any) -> np.ndarray:
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=384) for t in texts]).astype(
            np.float32
        )


def test_a_scorer_report_without_an_auc_writes_null_not_nan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelpool.models.train as train
    from modelpool.models.features import HashingConfig
    from modelpool.models.scorer import ScorerTrainingConfig
    from modelpool.models.small import SmallTrainingConfig

    monkeypatch.setattr(train, "Embedder", _FakeEmbedder)
    save_small(tmp_path / "trained", ("a", "b"))
    data = write_dataset(tmp_path / "data", rows(["a", "b"], 6), [("one test row", "a")])  # AUC undefined
    small = SmallTrainingConfig(hashing=HashingConfig(buckets=64), hidden=4, epochs=1)
    head = train.HeadTrainingConfig(epochs=1)
    options = train.TrainOptions(data=data, out=tmp_path / "scorer", folds=2, small=small, head=head)
    scorer = ScorerTrainingConfig(hashing=HashingConfig(buckets=64), epochs=1)
    report = train.train_complexity_scorer(options, tmp_path / "trained", scorer, log=lambda _: None)
    assert report["auc_scorer"] is None and report["auc_one_minus_confidence"] is None
    text = (tmp_path / "scorer" / "scorer-report.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the report"))
    assert '"auc_scorer": null' in text


if sys.platform != "linux":  # fcntl locks: the project runs on Linux
    pytestmark = pytest.mark.skip(reason="Linux only")
