"""The operator's push against a real router process-in-test (admin API on 127.0.0.1)."""

from __future__ import annotations

from typing import Any

import httpx

from modelpool.controllers.router_push import push_all, push_one
from modelpool.routing.config import RouterConfig
from modelpool.routing.server import start_router

TOKEN = "s3cret-token"


def _config(generation: int, small: int = 1) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "generation": generation,
            "pool": "bank",
            "mode": "weighted",
            "modelName": "bank",
            # Endpoints on loopback where nothing listens: no request is sent in this test.
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "tritonModel": "s",
                    "weight": small,
                    "endpoints": ["http://127.0.0.1:9"],
                },
                {
                    "name": "large",
                    "tier": "large",
                    "tritonModel": "l",
                    "weight": 1,
                    "endpoints": ["http://127.0.0.1:9"],
                },
            ],
        }
    )


def _pod(port_ip: str = "127.0.0.1", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": "router-0"},
        "status": {
            "podIP": port_ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


async def test_push_programs_and_is_idempotent() -> None:
    running = await start_router(_config(1), admin_token=TOKEN)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, TOKEN, _config(2, small=9))
            assert status.programmed and status.generation == 2 and status.message == "pushed"
            assert running.app.router.config.variant("small").weight == 9
            again = await push_one(client, _pod(), running.port, TOKEN, _config(2, small=9))
            assert again.programmed and again.message == "running this generation"
    finally:
        await running.close()


async def test_wrong_token_is_reported_and_old_config_stays() -> None:
    running = await start_router(_config(1), admin_token=TOKEN)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, "wrong", _config(2))
            assert not status.programmed
            assert "401" in status.message
            assert running.app.router.config.generation == 1
    finally:
        await running.close()


async def test_unready_pods_are_not_contacted() -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        results = await push_all(client, [_pod(ready=False)], 9, TOKEN, _config(1))
    assert len(results) == 1 and not results[0].programmed
    assert "waiting" in results[0].message
