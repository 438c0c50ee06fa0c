"""A Triton pod scraped once, against a real Prometheus (Debian's /usr/bin/prometheus).

``rate()`` needs two samples in its window, so a pod that has been scraped once (a pod that has
just become ready, between its first and its second scrape) adds nothing to the variant's served
rate yet. The partial-scrape check counted the targets in an instant vector, where one sample
suffices: such a pod counted as a scraped target, the sum looked complete, and the variant scaled
down on the rate of the others alone (during a rollout, on every pod just replaced).

One exporter stands in for such a pod for the whole test: it exposes its counter with the
timestamp of its first scrape, so Prometheus keeps that one sample (a later scrape of the same
timestamp adds none) and the instant vector keeps it for the 5-minute lookback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from string import Template

import pytest

from integration.scaling.promtools import Exporter, read_variant
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.scaling import PoolInput, ScalingInput, VariantInput, VariantSettings, VariantState, decide
from modelpool.scaling.prometheus_reader import PrometheusReader, VariantTarget

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

STARTED = time.time()
SMALL = VariantTarget(model="llama", variant="small", pool="chat", namespace="prod", ready_replicas=2)
COUNTER = "nv_inference_request_success"


def serving(rps: float) -> Exporter:
    """A pod serving ``rps``, scraped as usual."""
    return Exporter(
        lambda: [
            f"# TYPE {COUNTER} counter",
            f'{COUNTER}{{model="llama",version="1"}} {rps * (time.time() - STARTED):.3f}',
        ]
    )


def scraped_once() -> Exporter:
    """A pod whose counter keeps the timestamp of its first scrape: one sample in Prometheus."""
    first: list[int] = []

    def lines() -> list[str]:
        if not first:
            first.append(int(time.time() * 1000))
        return [f"# TYPE {COUNTER} counter", f'{COUNTER}{{model="llama",version="1"}} 0 {first[0]}']

    return Exporter(lines)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusProcess]:
    pods = (serving(20.0), scraped_once())
    labels = {"modelpool_dev_pool": "chat", "modelpool_dev_variant": "small", "namespace": "prod"}
    prom = PrometheusProcess(
        {"small": [p.start() for p in pods]}, scrape_interval_s=1.0, labels={"small": labels}
    )
    try:
        prom.start()
        time.sleep(4.0)  # a few scrapes: rate() needs two samples in its window
        yield prom
    finally:
        prom.stop()
        for pod in pods:
            pod.stop()


async def test_a_target_scraped_once_is_not_counted_as_serving(prometheus: PrometheusProcess) -> None:
    """Both targets are in the instant vector, but the served rate is the first pod's 20 req/s:
    counted as two targets for two ready replicas, ``decide`` scaled 5 -> 2 on it; counted as the
    one that adds to the rate, it keeps 5 (and would still scale up)."""
    reader = PrometheusReader(prometheus.url, rate_window_s=3.0)
    values = {"selector": SMALL.selector, "router_selector": SMALL.router_selector, "window": "3000ms"}
    try:
        present = await reader.scalar(
            Template("count(count by (instance) ($COUNTER{$selector}))").substitute(values, COUNTER=COUNTER)
        )
    finally:
        await reader.aclose()
    assert present == 2  # the pod scraped once is there, as one sample
    metrics = await read_variant(prometheus, SMALL)
    now = time.time()
    assert metrics.problem is None, metrics.problem
    print(f"\n{metrics.rate_series[-1].rps:.1f} req/s from {metrics.triton_targets} target(s)")
    assert metrics.rate_series[-1].rps == pytest.approx(20.0, abs=1.0)
    assert (metrics.triton_targets, metrics.expected_targets) == (1, 2)
    s = VariantSettings(
        name="small",
        capacity_per_replica_rps=10.0,
        target_queue_time_s=1.0,
        scale_down_stabilization_s=0.0,
        burst_reserve=False,
        lookahead_s=0.0,  # the series starts at 0 req/s within its 6 s: no trend to extrapolate
    )
    previous = VariantState(replicas=5, decided_at=now - 10)
    pool = PoolInput("chat", (VariantInput(s, metrics, 5, previous, ready_replicas=2),))
    kept = decide(ScalingInput.single(pool), now).pools["chat"].variants[0]
    print(kept.reason)
    assert not kept.held and kept.desired_replicas == 5, kept.reason
    assert "no scale-down: metrics partial" in kept.reason
    counted = replace(metrics, triton_targets=2)  # what the instant vector counts
    pool = PoolInput("chat", (VariantInput(s, counted, 5, previous, ready_replicas=2),))
    assert decide(ScalingInput.single(pool), now).pools["chat"].variants[0].desired_replicas < 5
