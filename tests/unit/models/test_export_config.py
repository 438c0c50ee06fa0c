"""Triton config rendering by the model I/O contract, and export of a trained small variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpool.models.export import export_variant, read_version, render_config
from modelpool.models.features import HashingConfig
from modelpool.models.runtime import Variant, load_variant, parse_variant
from modelpool.models.small import SmallPredictor


def test_config_follows_contract() -> None:
    text = render_config("m-small", Variant.SMALL, 77, "d1g", gpu=False, max_batch_size=64)
    assert 'name: "m-small"' in text and 'backend: "python"' in text and "max_batch_size: 64" in text
    assert 'name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ]' in text
    assert 'name: "PROBABILITIES", data_type: TYPE_FP32, dims: [ 77 ]' in text
    assert 'name: "LABEL", data_type: TYPE_INT64, dims: [ 1 ]' in text
    assert "dynamic_batching" in text and "KIND_CPU" in text
    assert 'string_value: "small"' in text and 'string_value: "d1g"' in text


def test_gpu_kind_only_where_the_variant_can_use_it() -> None:
    assert "KIND_GPU" in render_config("l", Variant.LARGE, 3, "d", gpu=True, max_batch_size=8)
    for variant in (Variant.SMALL, Variant.QUANTIZED):  # numpy / int8 dynamic quantization run on CPU
        assert "KIND_CPU" in render_config("x", variant, 3, "d", gpu=True, max_batch_size=8)


def test_unknown_variant_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="small"):
        parse_variant("medium")


def test_export_small_writes_self_contained_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hashing = HashingConfig(buckets=64)
    small = SmallPredictor(
        rng.normal(size=(64, 4)).astype(np.float32),
        rng.normal(size=(3, 4)).astype(np.float32),
        np.zeros(3, dtype=np.float32),
        hashing,
        ("a", "b", "c"),
    )
    small.save(tmp_path / "trained")
    version = export_variant(tmp_path / "trained", tmp_path / "repo", Variant.SMALL, "toy")
    model = tmp_path / "repo" / "toy-small"
    assert (model / "config.pbtxt").is_file() and (model / "1" / "model.py").is_file()
    assert (model / "1" / "runtime" / "modelpool" / "models" / "small.py").is_file()
    assert read_version(model) == version and version.num_classes == 3
    assert json.loads((model / "1" / "artifacts" / "VERSION.json").read_text())["digest"] == version.digest
    loaded = load_variant("small", model / "1" / "artifacts")
    texts = ["hello world", ""]
    assert np.allclose(loaded.predict_proba(texts), small.predict_proba(texts))
    again = export_variant(tmp_path / "trained", tmp_path / "repo", Variant.SMALL, "toy")
    assert again.digest == version.digest  # same artifacts, same digest


def test_export_without_training_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="models train"):
        export_variant(tmp_path, tmp_path / "repo", Variant.LARGE, "toy")
