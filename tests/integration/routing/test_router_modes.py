"""Each routing mode against real tritonservers, through tritonclient and plain HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.router import Router

from .conftest import router_config, text_request

pytestmark = pytest.mark.triton

SHORT = "card lost"  # echo_small is sure of texts up to 40 characters
MIDDLE = (
    "please tell me why my card payment was declined yesterday at the supermarket, and what I should do now"
)
LONG = "why was my transfer of 1,250 EUR reversed after three days, and when will it be refunded?"


def _client_infer(port: int, texts: list[str], binary: bool) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = triton_http.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object), binary_data=binary)
        outputs = [
            triton_http.InferRequestedOutput(n, binary_data=binary) for n in ("PROBABILITIES", "LABEL")
        ]
        result = client.infer("intents", [tensor], outputs=outputs)
        assert client.is_model_ready("intents")
        assert client.get_model_metadata("intents")["name"] == "intents"
        return result.as_numpy("PROBABILITIES"), result.as_numpy("LABEL"), result.get_response()
    finally:
        client.close()


async def test_weighted_split_is_exact_and_tritonclient_works(
    tritons: dict[str, TritonProcess],
    make_router: Any,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The callback hot path (Router.infer_now) must take them all; only a request that finds no
    # warm connection to its replica (the first to each of the three) goes on in a task.
    went_to_a_task: list[int] = []
    answer_later = Router._answer_later

    def counted(self: Router, *args: Any) -> Any:
        went_to_a_task.append(1)
        return answer_later(self, *args)  # the task: what the server cancels if the client leaves

    async def not_expected(self: Router, *args: Any) -> Any:
        raise AssertionError("a weighted request took the task path from the server")

    monkeypatch.setattr(Router, "_answer_later", counted)
    monkeypatch.setattr(Router, "infer", not_expected)
    router = await make_router(router_config(tritons, "weighted"))
    seen = Counter()
    for _ in range(40):
        resp = await http.post(f"{router.url}/v2/models/intents/infer", json=text_request(SHORT))
        assert resp.status_code == 200, resp.text
        seen[resp.headers["x-modelpool-variant"]] += 1
    assert seen == Counter({"small": 30, "large": 10})
    assert len(went_to_a_task) <= 3
    monkeypatch.undo()  # tritonclient below may use binary bodies and other paths
    for replica in ("small_a", "small_b"):  # per-replica balancing: both replicas of small served
        metrics = (await http.get(tritons[replica].metrics_url)).text
        served = [
            ln
            for ln in metrics.splitlines()
            if ln.startswith('nv_inference_request_success{model="echo_small"')
        ]
        assert served, metrics[:500]
        assert float(served[0].rsplit(" ", 1)[1]) >= 5
    for binary in (False, True):
        probs, labels, _ = await asyncio.to_thread(_client_infer, router.port, [SHORT, LONG], binary)
        assert probs.shape == (2, 4)
        assert labels.shape == (2, 1)
    versioned = await http.post(f"{router.url}/v2/models/intents/versions/1/infer", json=text_request(SHORT))
    assert versioned.status_code == 200


async def test_cascade_keeps_confident_drafts_and_escalates_unsure(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient
) -> None:
    router = await make_router(router_config(tritons, "cascade"))
    sure = (await http.post(f"{router.url}/v2/models/intents/infer", json=text_request(SHORT))).json()
    assert sure["parameters"]["modelpool_variant"] == "small"
    assert sure["parameters"]["modelpool_escalated"] is False
    assert sure["model_name"] == "intents"
    unsure = await http.post(f"{router.url}/v2/models/intents/infer", json=text_request(LONG))
    assert unsure.headers["x-modelpool-variant"] == "large"
    params = unsure.json()["parameters"]
    assert params["modelpool_escalated"] is True
    assert params["modelpool_draft_confidence"] == pytest.approx(0.4)
    # the client asked for LABEL only: the router fetches PROBABILITIES to decide, then drops it
    only_label = (
        await http.post(f"{router.url}/v2/models/intents/infer", json=text_request(SHORT, outputs=["LABEL"]))
    ).json()
    assert [o["name"] for o in only_label["outputs"]] == ["LABEL"]
    assert only_label["parameters"]["modelpool_variant"] == "small"
    # binary tensors both ways through tritonclient
    probs, _, response = await asyncio.to_thread(_client_infer, router.port, [LONG], True)
    assert probs.max() == pytest.approx(0.9)
    assert response["parameters"]["modelpool_variant"] == "large"
    metrics = (await http.get(f"{router.url}/metrics")).text
    assert 'modelpool_router_cascade_decisions_total{outcome="accepted",pool="intents"} 2.0' in metrics
    assert 'modelpool_router_cascade_decisions_total{outcome="escalated",pool="intents"} 2.0' in metrics
    assert 'modelpool_router_cascade_acceptance_ratio{pool="intents"} 0.5' in metrics
    # 4 requests: baseline 4 x 10; spent 1 + 1 + (1 + 10) x 2 = 24 -> saved 16
    assert 'modelpool_router_cost_saved{pool="intents"} 16.0' in metrics
    assert 'modelpool_router_large_tier_share{pool="intents"} 0.5' in metrics


def _client_classify(port: int, text: str, binary: bool) -> tuple[np.ndarray, dict[str, Any]]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = triton_http.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object), binary_data=binary)
        top2 = triton_http.InferRequestedOutput("PROBABILITIES", binary_data=binary, class_count=2)
        result = client.infer("intents", [tensor], outputs=[top2])
        return result.as_numpy("PROBABILITIES"), result.get_response()
    finally:
        client.close()


def _score(item: bytes | str) -> float:
    """The score of one classification string (``"0.950000:3"``; bytes when sent binary)."""
    return float((item.decode() if isinstance(item, bytes) else item).split(":")[0])


async def test_cascade_decides_on_classification_outputs_and_an_empty_outputs_list(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient
) -> None:
    """A client that asks for Triton's classification (top-k ``"score:index"`` strings, JSON or
    binary) or lists no outputs gets the same cascade as one asking for the probabilities.

    Until the twelfth session the first answered 500 (the router read the strings as numbers)
    and the second dropped every output (Triton sends all outputs back for an empty list)."""
    router = await make_router(router_config(tritons, "cascade"))
    for binary in (False, True):
        sure, response = await asyncio.to_thread(_client_classify, router.port, SHORT, binary)
        assert response["parameters"]["modelpool_variant"] == "small"
        assert response["parameters"]["modelpool_confidence"] == pytest.approx(0.95)
        assert sure.shape == (1, 2)
        assert _score(sure[0, 0]) == pytest.approx(0.95)
        unsure, response = await asyncio.to_thread(_client_classify, router.port, LONG, binary)
        assert response["parameters"]["modelpool_escalated"] is True
        assert response["parameters"]["modelpool_draft_confidence"] == pytest.approx(0.4)
        assert _score(unsure[0, 0]) == pytest.approx(0.9)
    every = await http.post(
        f"{router.url}/v2/models/intents/infer", json={**text_request(SHORT), "outputs": []}
    )
    assert every.status_code == 200
    assert {o["name"] for o in every.json()["outputs"]} >= {"PROBABILITIES", "LABEL"}
    assert every.json()["parameters"]["modelpool_variant"] == "small"


def _client_compressed(port: int, algorithm: str) -> tuple[np.ndarray, dict[str, Any]]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = triton_http.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[SHORT.encode()]], dtype=object), binary_data=False)
        result = client.infer(
            "intents",
            [tensor],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        return result.as_numpy("PROBABILITIES"), result.get_response()
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["weighted", "cascade"])
async def test_compressed_requests_from_tritonclient(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient, mode: str
) -> None:
    """tritonclient's gzip and deflate request compression work through the router as they do
    against Triton (400 "malformed JSON" until the twelfth session); other encodings get 415."""
    router = await make_router(router_config(tritons, mode))
    for algorithm in ("gzip", "deflate"):
        probs, response = await asyncio.to_thread(_client_compressed, router.port, algorithm)
        assert probs.max() == pytest.approx(0.95)
        if mode == "cascade":
            assert response["parameters"]["modelpool_variant"] == "small"
    brotli = await http.post(
        f"{router.url}/v2/models/intents/infer", content=b"x", headers={"content-encoding": "br"}
    )
    assert brotli.status_code == 415
    assert "'br' is not supported" in brotli.json()["error"]


async def test_tiered_routes_by_complexity(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient
) -> None:
    router = await make_router(router_config(tritons, "tiered"))
    url = f"{router.url}/v2/models/intents/infer"
    easy = (await http.post(url, json=text_request("card lost"))).json()["parameters"]
    assert easy["modelpool_variant"] == "small"
    assert easy["modelpool_complexity"] <= 0.2
    middle = (await http.post(url, json=text_request(MIDDLE))).json()
    assert 0.2 < middle["parameters"]["modelpool_complexity"] <= 0.5
    assert middle["parameters"]["modelpool_variant"] == "large"  # cascade band: small unsure (> 40 chars)
    assert middle["parameters"]["modelpool_escalated"] is True
    hard_text = " ".join(["international transfer reversal investigation, 2024-03-04"] * 5)
    hard = (await http.post(url, json=text_request(hard_text))).json()["parameters"]
    assert hard["modelpool_complexity"] > 0.5
    assert hard["modelpool_variant"] == "large"
    assert "modelpool_escalated" not in hard  # straight to large, no cascade
    metrics = (await http.get(f"{router.url}/metrics")).text
    assert 'modelpool_router_complexity_score_count{pool="intents"} 3.0' in metrics
    # a tiered request without TEXT is the client's error
    bad = await http.post(
        url, json={"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    )
    assert bad.status_code == 400
    assert "TEXT" in bad.json()["error"]


async def test_cache_answers_identical_requests(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient
) -> None:
    router = await make_router(router_config(tritons, "weighted", cache={"enabled": True, "maxEntries": 8}))
    url = f"{router.url}/v2/models/intents/infer"
    first = await http.post(url, json=text_request(SHORT))
    second = await http.post(url, json=text_request(SHORT))
    assert "x-modelpool-cache" not in first.headers
    assert second.headers["x-modelpool-cache"] == "hit"
    assert second.json() == first.json()
    other = await http.post(url, json=text_request(LONG))
    assert "x-modelpool-cache" not in other.headers
