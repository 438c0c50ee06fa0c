"""Manifests shared by the operator's unit and integration tests, and what its unit tests read of
its log."""

from __future__ import annotations

from typing import Any

import pytest


def routing_policy(pool: str, slo_ms: int | None = None, name: str = "p") -> dict[str, Any]:
    """A minimal valid weighted RoutingPolicy for ``pool``, with ``latencySLOMs`` when given."""
    spec: dict[str, Any] = {
        "poolRef": {"name": pool},
        "mode": "weighted",
        "weights": [{"variant": "small", "weight": 1}],
        "routerSelector": {"matchLabels": {"app": "router"}},
    }
    if slo_ms is not None:
        spec["objectives"] = {"latencySLOMs": slo_ms}
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def operator_lines(caplog: pytest.LogCaptureFixture, level: str) -> list[str]:
    """The messages the operator's logger (``modelpool.operator``) wrote at ``level`` (a level name)."""
    return [r.getMessage() for r in caplog.records if r.levelname == level and r.name == "modelpool.operator"]
