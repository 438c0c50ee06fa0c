"""Which Triton series a variant reads, against a real Prometheus (Debian's /usr/bin/prometheus).

Tiny exporters on 127.0.0.1 stand in for Triton pods that all load the model ``llama``: two pods
of pool ``chat``'s variant ``small`` (20 req/s each), one of its variant ``large`` (2 req/s),
scraped with the target labels the chart's Triton PodMonitor attaches (``modelpool_dev_pool``,
``modelpool_dev_variant``, ``namespace``), and one pod scraped by a static job without them
(5 req/s). Selected by model name alone, large read 47 req/s and small 47; now each reads its own
pods' series and the unlabelled pod's (which a setup without the labels still counts, as before).

Then one of small's two scrape targets goes down: Triton's sum drops to the other pod's 20 req/s
while the newest sample stays fresh, so without a router the variant would scale down on half of
its data. With its two ready replicas counted, ``decide`` holds and says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from integration.scaling.promtools import Exporter, read_variant
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.scaling import PoolInput, ScalingInput, VariantInput, VariantSettings, VariantState, decide
from modelpool.scaling.prometheus_reader import VariantTarget
from modelpool.scaling.types import VariantMetrics

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

STARTED = time.time()
SMALL = VariantTarget(model="llama", variant="small", pool="chat", namespace="prod")
LARGE = replace(SMALL, variant="large")


def pod(rps: float) -> Exporter:
    """One Triton pod's exporter: ``nv_inference_request_success{model="llama"}`` growing at ``rps``."""
    return Exporter(
        lambda: [
            "# TYPE nv_inference_request_success counter",
            f'nv_inference_request_success{{model="llama",version="1"}} {rps * (time.time() - STARTED):.3f}',
            "# TYPE nv_inference_pending_request_count gauge",
            'nv_inference_pending_request_count{model="llama",version="1"} 0',
        ]
    )


def own_labels(variant: str) -> dict[str, str]:
    """The target labels the chart's Triton PodMonitor attaches to a pod of pool chat's ``variant``."""
    return {"modelpool_dev_pool": "chat", "modelpool_dev_variant": variant, "namespace": "prod"}


@dataclass
class Setup:
    prometheus: PrometheusProcess
    small_b: Exporter


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    small_a, small_b, large, static = pod(20.0), pod(20.0), pod(2.0), pod(5.0)
    jobs = {
        "small": [small_a.start(), small_b.start()],
        "large": [large.start()],
        "static": [static.start()],
    }
    prom = PrometheusProcess(
        jobs, scrape_interval_s=1.0, labels={"small": own_labels("small"), "large": own_labels("large")}
    )
    try:
        prom.start()
        time.sleep(4.0)  # a few scrapes: rate() needs two samples in its window
        yield Setup(prom, small_b)
    finally:
        prom.stop()
        for exporter in (small_a, small_b, large, static):
            exporter.stop()


def _rate(metrics: VariantMetrics) -> float:
    assert metrics.problem is None, metrics.problem
    assert metrics.rate_series, metrics
    return metrics.rate_series[-1].rps


async def test_two_variants_of_one_model_read_their_own_pods_and_unlabelled_ones(setup: Setup) -> None:
    """small: its two pods (40) and the unlabelled one (5); large: its pod (2) and the unlabelled
    one. Selected by model and namespace alone (the target as the operator built it before), both
    read all 47 req/s."""
    small, large = await asyncio.gather(
        read_variant(setup.prometheus, SMALL), read_variant(setup.prometheus, LARGE)
    )
    print(f"\nsmall {_rate(small):.1f} req/s, large {_rate(large):.1f} req/s")
    assert _rate(small) == pytest.approx(45.0, abs=1.0)
    assert _rate(large) == pytest.approx(7.0, abs=1.0)
    model_wide = await read_variant(setup.prometheus, replace(LARGE, pool=""))
    assert _rate(model_wide) == pytest.approx(47.0, abs=1.0)
    # Another pool of the namespace with a variant of the same name reads the unlabelled pod only.
    other_pool = await read_variant(setup.prometheus, replace(SMALL, pool="code"))
    assert _rate(other_pool) == pytest.approx(5.0, abs=1.0)


async def test_a_partial_scrape_of_a_variants_pods_does_not_scale_it_down(setup: Setup) -> None:
    """small has two ready replicas; one's scrape target goes down. Triton's sum (the other pod's
    20 req/s) stays fresh: sized on it the variant scaled down; counted against its two ready
    replicas, it is a lower bound, which keeps the replicas (and could only scale up). (The
    unlabelled pod is left out with ``job="small"``: a series without the
    labels counts as one of every variant's targets, and would hide the missing one.)"""
    s = VariantSettings(
        name="small",
        capacity_per_replica_rps=10.0,
        target_queue_time_s=1.0,
        scale_down_stabilization_s=0.0,
        burst_reserve=False,
    )
    counted = replace(SMALL, ready_replicas=2, extra_matchers='job="small"')
    before = await read_variant(setup.prometheus, counted)
    assert (before.triton_targets, before.expected_targets) == (2, 2)
    setup.small_b.stop()
    await asyncio.sleep(5.0)  # the failed scrape marks its series stale; the 3 s window forgets it
    metrics = await read_variant(setup.prometheus, counted)
    now = time.time()
    print(f"\nafter: {_rate(metrics):.1f} req/s from {metrics.triton_targets} target(s)")
    assert _rate(before) == pytest.approx(40.0, abs=1.0)
    assert _rate(metrics) == pytest.approx(20.0, abs=1.0)
    assert metrics.newest_sample_t is not None and now - metrics.newest_sample_t < 3.0
    assert (metrics.triton_targets, metrics.expected_targets) == (1, 2)

    def decided(m: VariantMetrics) -> Any:
        previous = VariantState(replicas=5, decided_at=now - 10)
        pool = PoolInput("chat", (VariantInput(s, m, 5, previous, ready_replicas=2),))
        return decide(ScalingInput.single(pool), now).pools["chat"].variants[0]

    uncounted = decided(replace(metrics, triton_targets=None, expected_targets=None))
    print(uncounted.reason)
    assert not uncounted.held and uncounted.desired_replicas < 5, uncounted.reason  # the bug
    kept = decided(metrics)
    print(kept.reason)
    assert not kept.held and kept.desired_replicas == 5, kept.reason
    assert "no scale-down: metrics partial" in kept.reason
