"""Careless per-pool query overrides against a real Prometheus (Debian's /usr/bin/prometheus).

A tiny exporter on 127.0.0.1 serves Triton's request counter for two pods of one model, and the
counter of one router of several (the others unscraped) that sent them 2 req/s. Without
``sum()`` the served rate comes back as two series: the reader took the first pod's rate (and the
pool scaled down); now the pool holds and the problem names the field. ``pending: "0"`` is a
scalar answer (a TypeError before), a range selector a matrix (a KeyError before). The reader
keeps Triton's 25 req/s beside the router's 2 (it kept the router's alone, and the pool scaled
down to what that one router saw). A pool of another namespace serving the same model name, whose
series carry their namespace, is not read with this pool's (its 100 req/s were added before).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from integration.scaling.promtools import exporting, read_variant
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.scaling import PoolInput, ScalingInput, VariantInput, VariantSettings, decide
from modelpool.scaling.prometheus_reader import QueryTemplates, VariantTarget

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

TARGET = VariantTarget(model="small", variant="small", pool="bank", namespace="team-a")
STARTED = time.time()


def _series() -> list[str]:
    """Two pods serving 5 and 20 req/s, and one router that sent 2 req/s (counters grow with the
    wall clock)."""
    elapsed = time.time() - STARTED
    return [
        "# TYPE nv_inference_request_success counter",
        *(
            f'nv_inference_request_success{{model="small",pod="{pod}"}} {rps * elapsed:.3f}'
            for pod, rps in (("a", 5.0), ("b", 20.0))
        ),
        # Another tenant's pool of the same name and model, its series labelled with its namespace.
        f'nv_inference_request_success{{model="small",namespace="team-b",pod="c"}} {100.0 * elapsed:.3f}',
        "# TYPE nv_inference_pending_request_count gauge",
        'nv_inference_pending_request_count{model="small",pod="a"} 0',
        "# TYPE modelpool_router_upstream_requests_total counter",
        f'modelpool_router_upstream_requests_total{{pool="bank",variant="small"}} {2.0 * elapsed:.3f}',
        f'modelpool_router_upstream_requests_total{{namespace="team-b",pool="bank",variant="small"}} '
        f"{50.0 * elapsed:.3f}",
    ]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusProcess]:
    with exporting(_series) as target, PrometheusProcess({"pods": [target]}, scrape_interval_s=1.0) as prom:
        time.sleep(4.0)  # a few scrapes: rate() needs two samples in its window
        yield prom


async def test_a_served_rate_without_sum_holds_and_names_the_field(prometheus: PrometheusProcess) -> None:
    aggregated = await read_variant(prometheus, TARGET, QueryTemplates())
    assert aggregated.problem is None
    assert aggregated.served_series and aggregated.served_series[-1].rps == pytest.approx(25.0, rel=0.2)
    careless = QueryTemplates(served_rate="rate(nv_inference_request_success{$selector}[$window])")
    metrics = await read_variant(prometheus, TARGET, careless)
    print(f"\n{metrics.problem}")
    assert metrics.problem is not None
    assert "spec.scaling.queries.servedRate" in metrics.problem
    assert "returned 2 series, expected one" in metrics.problem
    assert "'pod'" not in metrics.problem  # other series' labels stay out of a tenant's status


async def test_a_scalar_override_is_read_as_its_value(prometheus: PrometheusProcess) -> None:
    metrics = await read_variant(prometheus, TARGET, QueryTemplates(pending="0"))
    assert metrics.problem is None
    assert metrics.pending_requests == 0.0


async def test_a_range_selector_override_names_the_field(prometheus: PrometheusProcess) -> None:
    metrics = await read_variant(
        prometheus, TARGET, QueryTemplates(pending="nv_inference_pending_request_count{$selector}[5s]")
    )
    print(f"\n{metrics.problem}")
    assert metrics.problem is not None
    assert "spec.scaling.queries.pending" in metrics.problem
    assert "returned a range vector, expected an instant vector" in metrics.problem


async def test_triton_serving_more_than_the_scraped_router_sees_sizes_the_pool(
    prometheus: PrometheusProcess,
) -> None:
    """The router's 2 req/s and Triton's 25 are both read; the pool is sized for 25 (at 10 req/s
    per replica, 4 replicas), where it scaled 4 -> 1 on the router's 2 before."""
    metrics = await read_variant(prometheus, TARGET, QueryTemplates())
    assert metrics.problem is None
    assert metrics.router_rps == pytest.approx(2.0, rel=0.2)
    s = VariantSettings(
        name="small", capacity_per_replica_rps=10.0, scale_down_stabilization_s=0.0, burst_reserve=False
    )
    pool = PoolInput("bank", (VariantInput(s, metrics, 4),))
    d = decide(ScalingInput.single(pool), time.time()).pools["bank"].variants[0]
    print(f"\n{d.reason}")
    assert not d.held, d.reason
    assert d.desired_replicas >= 3, d.reason
    assert metrics.served_series[-1].rps == pytest.approx(25.0, rel=0.2)


async def test_a_pool_reads_its_own_namespace_and_unlabelled_series_only(
    prometheus: PrometheusProcess,
) -> None:
    """team-a's pool reads the unlabelled pods (25 req/s) and router (2), not team-b's 100 and 50;
    team-b's pool reads its own on top of the unlabelled ones; without a namespace, everything."""
    own = await read_variant(prometheus, TARGET, QueryTemplates())
    assert own.served_series[-1].rps == pytest.approx(25.0, rel=0.2)
    assert own.router_rps == pytest.approx(2.0, rel=0.2)
    other = await read_variant(prometheus, replace(TARGET, namespace="team-b"), QueryTemplates())
    assert other.served_series[-1].rps == pytest.approx(125.0, rel=0.2)
    assert other.router_rps == pytest.approx(52.0, rel=0.2)
    everything = await read_variant(prometheus, replace(TARGET, namespace=""), QueryTemplates())
    assert everything.served_series[-1].rps == pytest.approx(125.0, rel=0.2)
