"""Real tritonserver processes and router helpers for the router's integration tests."""

from __future__ import annotations

import copy
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.config import RouterConfig, parse_config
from modelpool.routing.server import RunningRouter, start_router

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "triton_models"
TOKEN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def tritons() -> Iterator[dict[str, TritonProcess]]:
    """Two replicas serving echo_small and one serving echo_large."""
    procs = {
        "small_a": TritonProcess(MODELS, ["echo_small"]),
        "small_b": TritonProcess(MODELS, ["echo_small"]),
        "large": TritonProcess(MODELS, ["echo_large"]),
    }
    try:
        for p in procs.values():
            p.start()
        yield procs
    finally:
        stop_all(procs.values())


def stop_all(procs: Iterable[TritonProcess]) -> None:
    """Stop several tritonservers at once (each waits a few seconds for its models to unload)."""
    threads = [threading.Thread(target=p.stop) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def router_config(tritons: dict[str, TritonProcess], mode: str = "weighted", **changes: Any) -> RouterConfig:
    data: dict[str, Any] = {
        "generation": 1,
        "pool": "intents",
        "mode": mode,
        "modelName": "intents",
        "variants": [
            {"name": "small", "tier": "small", "tritonModel": "echo_small", "cost": 1.0, "weight": 3,
             "endpoints": [tritons["small_a"].http_url, tritons["small_b"].http_url], "timeoutMs": 3000},
            {"name": "large", "tier": "large", "tritonModel": "echo_large", "cost": 10.0, "weight": 1,
             "endpoints": [tritons["large"].http_url], "timeoutMs": 3000},
        ],
        "cascade": {"draft": "small", "verifier": "large", "acceptThreshold": 0.7},
        "tiers": [
            {"maxComplexity": 0.2, "target": "small"},
            {"maxComplexity": 0.5, "target": "cascade"},
            {"maxComplexity": 1.0, "target": "large"},
        ],
        "breaker": {"failureThreshold": 2, "openSeconds": 0.3, "maxOpenSeconds": 2.0},
    }  # fmt: skip
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = copy.deepcopy(value)
    return parse_config(data)


@pytest.fixture
async def make_router() -> AsyncIterator[Any]:
    """Factory: ``await make_router(config)`` -> RunningRouter, closed after the test."""
    running: list[RunningRouter] = []

    async def _make(config: RouterConfig, **kwargs: Any) -> RunningRouter:
        r = await start_router(config, admin_token=TOKEN, **kwargs)
        running.append(r)
        return r

    yield _make
    for r in running:
        await r.close()


def text_request(*texts: str, outputs: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [len(texts), 1], "data": list(texts)}]
    }
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client
