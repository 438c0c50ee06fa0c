"""Delivery tests share the session's local cluster with the operator tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from modelpool.devcluster.cluster import DevCluster


@pytest.fixture
def namespaces(cluster: DevCluster) -> Iterator[Callable[..., str]]:
    """Factory of fresh namespaces (``d-<hex>``), deleted after the test.

    The chart's pods are kwok fakes: they are admitted and marked Running, nothing executes.
    The operator fixture is not needed here: these tests install the operator's manifests,
    not the operator process.
    """
    made: list[str] = []

    def make(**labels: str) -> str:
        name = f"d-{uuid.uuid4().hex[:8]}"
        cluster.kubectl("create", "namespace", name)
        if labels:
            cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
        made.append(name)
        return name

    yield make
    for name in made:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
