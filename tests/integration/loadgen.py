"""Open-loop load for the integration tests: requests sent at a fixed pace to 127.0.0.1 whatever
the answers so far (a slow server gets more requests in flight, as from real clients, instead of
fewer), and bounded (``int(rps * seconds)`` of them at the most)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def echo_body(text: str) -> dict[str, Any]:
    """The KServe v2 body of one request to the echo fixture models: their one BYTES input
    ``TEXT`` (``sleep:<ms>:`` in front makes the request take that long)."""
    return {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}


async def paced_load(
    rps: float,
    seconds: float,
    send: Callable[[httpx.AsyncClient, int], Coroutine[Any, Any, T]],
    stop: asyncio.Event | None = None,
) -> list[T]:
    """``send(client, i)`` for i = 0 .. int(rps * seconds) - 1, the i-th started ``i / rps`` seconds
    after the first, each in its own task on one client; none started once ``stop`` is set. Returns
    what each send returned, in order, once all are answered."""
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=30.0) as client:
        tasks = []
        for i in range(int(rps * seconds)):
            if stop is not None and stop.is_set():
                break
            await asyncio.sleep(max(0.0, start + i / rps - time.monotonic()))
            tasks.append(asyncio.create_task(send(client, i)))
        return list(await asyncio.gather(*tasks))
