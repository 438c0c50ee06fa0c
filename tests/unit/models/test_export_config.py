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


def test_dynamic_batching_does_not_hold_a_lone_request_by_default() -> None:
    text = render_config("m-small", Variant.SMALL, 3, "d", gpu=False, max_batch_size=64)
    assert "dynamic_batching { max_queue_delay_microseconds: 0 }" in text
    delayed = render_config("m", Variant.LARGE, 3, "d", gpu=False, max_batch_size=64, queue_delay_us=500)
    assert "dynamic_batching { max_queue_delay_microseconds: 500 }" in delayed


def test_export_takes_a_queue_delay_per_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelpool.models.cli import main
    from unit.models.toy_models import save_large_files, save_small

    save_small(tmp_path / "trained", ("a", "b"))
    save_large_files(tmp_path / "trained", ("a", "b"))
    argv = ["models", "export", "--trained", str(tmp_path / "trained"), "--out", str(tmp_path / "repo")]
    assert main([*argv, "--queue-delay-us", "large=500", "--queue-delay-us", "int8=200"]) == 0
    models = ("banking77-small", "banking77-int8", "banking77-large")
    delays = {model: _queue_delay(tmp_path / "repo" / model) for model in models}
    assert delays == {"banking77-small": 0, "banking77-int8": 200, "banking77-large": 500}
    assert main([*argv, "--queue-delay-us", "300"]) == 0  # one value: every variant
    assert {_queue_delay(p) for p in (tmp_path / "repo").iterdir()} == {300}
    with pytest.raises(SystemExit):
        main([*argv, "--queue-delay-us", "medium=5"])
    assert "the variant is one of" in capsys.readouterr().err


def _queue_delay(model_dir: Path) -> int:
    text = (model_dir / "config.pbtxt").read_text()
    return int(text.split("max_queue_delay_microseconds: ")[1].split()[0])


def test_export_device_defaults_to_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import modelpool.models.export as export
    from modelpool.models.cli import main
    from unit.models.toy_models import save_large_files, save_small

    monkeypatch.setattr(export, "gpu_available", lambda: True)  # the exporting machine has CUDA
    save_small(tmp_path / "trained", ("a", "b"))
    save_large_files(tmp_path / "trained", ("a", "b"))
    argv = ["models", "export", "--trained", str(tmp_path / "trained"), "--out", str(tmp_path / "repo")]
    assert main(argv) == 0
    assert "KIND_CPU" in (tmp_path / "repo" / "banking77-large" / "config.pbtxt").read_text()
    assert main([*argv, "--device", "auto"]) == 0
    assert "KIND_GPU" in (tmp_path / "repo" / "banking77-large" / "config.pbtxt").read_text()


def test_instance_device_comes_from_config(tmp_path: Path) -> None:
    from modelpool.models.export import read_instance_device

    for kind, device in (("KIND_GPU", "gpu"), ("KIND_CPU", "cpu"), ("KIND_AUTO", "auto")):
        (tmp_path / "config.pbtxt").write_text(f"instance_group [ {{ kind: {kind}, count: 1 }} ]\n")
        assert read_instance_device(tmp_path) == device


def _load_triton_model(monkeypatch: pytest.MonkeyPatch) -> object:
    """``triton_model.py`` imported with a stand-in for Triton's ``triton_python_backend_utils``."""
    import importlib.util
    import sys
    import types

    from modelpool.models.export import PACKAGE_DIR

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("pb_utils"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the module puts its runtime folder first
    spec = importlib.util.spec_from_file_location(
        "modelpool_test_triton_model", PACKAGE_DIR / "triton_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("kind", "device_id", "device"), [("GPU", "1", "cuda:1"), ("GPU", "0", "cuda:0"), ("CPU", "0", "cpu")]
)
def test_each_gpu_instance_loads_on_its_own_device(
    kind: str, device_id: str, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _load_triton_model(monkeypatch)
    loaded: list[tuple[str, str]] = []
    monkeypatch.setattr(module, "load_variant", lambda variant, artifacts, dev: loaded.append((variant, dev)))
    config = {"parameters": {"variant": {"string_value": "small"}}}
    args = {
        "model_config": json.dumps(config),
        "model_instance_kind": kind,
        "model_instance_device_id": device_id,
        "model_instance_name": f"m_{device_id}",
    }
    module.TritonPythonModel().initialize(args)  # type: ignore[attr-defined]
    assert loaded == [("small", device)]


def test_export_records_the_label_names_a_model_answers_with(tmp_path: Path) -> None:
    from modelpool.models.export import read_label_names
    from unit.models.toy_models import save_large_files, save_small

    save_small(tmp_path / "trained", ("a", "b"))
    save_large_files(tmp_path / "trained", ("a", "b"))
    for variant in Variant:
        export_variant(tmp_path / "trained", tmp_path / "repo", variant, "toy")
    assert {read_label_names(p) for p in (tmp_path / "repo").iterdir()} == {("a", "b")}
