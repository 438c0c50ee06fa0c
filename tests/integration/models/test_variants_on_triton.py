"""The exported variants served by a real tritonserver answer by the model I/O contract and match
the in-process models; reduced-size training reports quantization and cost facts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelpool.models.client import classify_all, http_client, infer_texts
from modelpool.models.export import model_name, read_version
from modelpool.models.runtime import Variant
from modelpool.models.train import load_limited

from .conftest import LIMIT, Built

pytestmark = [pytest.mark.models, pytest.mark.triton]

TEXTS = ["I am still waiting on my card?", "How do I top up with Apple Pay?", "", "¿Dónde está mi tarjeta? ✈"]


def _contract(probs: np.ndarray, labels: np.ndarray, rows: int, classes: int) -> None:
    assert probs.shape == (rows, classes) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert labels.shape == (rows, 1) and labels.dtype == np.int64
    assert labels[:, 0].tolist() == probs.argmax(axis=1).tolist()


@pytest.mark.parametrize("variant", ["small", "quantized", "large"])
def test_variant_answers_by_contract_and_matches_in_process(built: Built, triton: Any, variant: str) -> None:
    import tritonclient.http as httpclient

    from modelpool.models.runtime import load_variant

    name = model_name("banking77", Variant(variant))
    client = http_client(triton.http_url)
    batch = np.array([[t.encode()] for t in TEXTS], dtype=np.object_)
    tensor = httpclient.InferInput("TEXT", list(batch.shape), "BYTES")
    tensor.set_data_from_numpy(batch)
    result = client.infer(name, [tensor])
    probs, labels = result.as_numpy("PROBABILITIES"), result.as_numpy("LABEL")
    _contract(probs, labels, len(TEXTS), 77)
    local = load_variant(variant, built.trained).predict_proba(TEXTS)
    assert np.allclose(probs, local, atol=1e-4)
    config = (built.repository / name / "config.pbtxt").read_text()
    assert read_version(built.repository / name).digest in config
    assert "max_queue_delay_microseconds: 0" in config  # a lone request is not held back


def test_quantized_is_a_different_module_than_large(built: Built, triton: Any) -> None:
    client = http_client(triton.http_url)
    sample = [
        "what is the exchange rate",
        "my card was declined at the shop",
        "cancel my transfer please",
    ] * 4
    large = classify_all(client, "banking77-large", sample, batch_size=8)
    quantized = classify_all(client, "banking77-int8", sample, batch_size=8)
    assert np.abs(large - quantized).max() > 1e-3  # int8 weights really changed the computation
    assert (large.argmax(1) == quantized.argmax(1)).mean() >= 0.75
    modules = built.report["linear_modules"]
    assert modules["large"]["float_linear"] > 30 and modules["large"]["quantized_linear"] == 0
    assert modules["quantized"] == {"float_linear": 0, "quantized_linear": modules["large"]["float_linear"]}
    sizes = built.report["size_bytes"]
    assert sizes["quantized"] < 0.75 * sizes["large"]


def test_reduced_size_accuracy_and_cost(built: Built, triton: Any) -> None:
    from modelpool.models.paths import banking77_dir

    test = load_limited(banking77_dir(), LIMIT, 0).test
    client = http_client(triton.http_url)
    accuracy = {
        v: float(
            (
                classify_all(client, model_name("banking77", Variant(v)), list(test.texts)).argmax(1)
                == test.labels
            ).mean()
        )
        for v in ("small", "quantized", "large")
    }
    chance = 1 / 77
    assert all(a > 20 * chance for a in accuracy.values()), accuracy
    assert accuracy["large"] == pytest.approx(built.report["accuracy"]["large"], abs=0.01)
    assert built.report["large_over_small_cost"] >= 10.0


def test_single_item_requests_and_bad_utf8_are_answered(triton: Any) -> None:
    import tritonclient.http as httpclient

    client = http_client(triton.http_url)
    probs = infer_texts(client, "banking77-small", ["top up failed"])
    assert probs.shape == (1, 77)
    batch = np.array([[b"\xff\xfe broken bytes"]], dtype=np.object_)
    tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(batch)
    assert client.infer("banking77-large", [tensor]).as_numpy("PROBABILITIES").shape == (1, 77)
