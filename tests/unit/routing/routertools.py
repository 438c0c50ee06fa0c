"""What the router's tests build again and again: a config (``router_config``, ``tier_variant``), a
router serving one on 127.0.0.1 (``running_router``), fake upstreams serving while a block runs
(``serving``), and a counter's total in a /metrics text (``metric_total``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from modelpool.routing.config import parse_config
from modelpool.routing.server import RunningRouter, start_router
from unit.routing.fake_upstream import FakeUpstream

F = TypeVar("F", bound=FakeUpstream)

TIER_COST = {"small": 1, "quantized": 3, "large": 10}
"""The cost ``tier_variant`` gives a variant of each tier."""


def router_config(mode: str, *variants: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A router config (the JSON the operator pushes) of pool ``p`` serving model ``m``, generation
    1, routing by ``mode`` to ``variants``; ``extra`` adds (or replaces) top-level fields."""
    return {"generation": 1, "pool": "p", "mode": mode, "modelName": "m", "variants": list(variants), **extra}


def tier_variant(name: str, tier: str, urls: list[str], weight: int = 1, **extra: Any) -> dict[str, Any]:
    """A variant of a router config: Triton model ``m_<name>`` at ``urls``, costing its tier's
    :data:`TIER_COST`, a 1 s timeout; ``extra`` adds (or replaces) fields."""
    return {"name": name, "tier": tier, "tritonModel": f"m_{name}", "cost": TIER_COST[tier],
            "weight": weight, "endpoints": urls, "timeoutMs": 1000, **extra}  # fmt: skip


@contextlib.asynccontextmanager
async def running_router(config: dict[str, Any], **kwargs: Any) -> AsyncIterator[RunningRouter]:
    """A router on ``config`` serving on 127.0.0.1 in this event loop (``kwargs`` go to
    ``start_router``), closed after the block."""
    running = await start_router(parse_config(config), **kwargs)
    try:
        yield running
    finally:
        await running.close()


@contextlib.asynccontextmanager
async def serving(*fakes: F) -> AsyncIterator[list[F]]:
    """``fakes`` started (in order) and serving while the block runs, then closed."""
    for fake in fakes:
        await fake.start()
    try:
        yield list(fakes)
    finally:
        for fake in fakes:
            fake.close()


def metric_total(text: str, prefix: str) -> float:
    """The sum of the values of the lines of a /metrics ``text`` that start with ``prefix``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))
