"""The pure parts of tests/bench/bench_operator_load.py: reading Prometheus' text format and
turning two probes into rates, so its table counts what it says it counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "bench"))
import bench_operator_load as bench  # noqa: E402

EXPOSITION = """\
# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{group="modelpool.dev",resource="modelpools",subresource="",verb="GET",code="200"} 12
apiserver_request_total{group="modelpool.dev",resource="modelpools",subresource="status",verb="PATCH"} 4
apiserver_request_total{group="apps",resource="deployments",subresource="",verb="LIST",code="200"} 7
prometheus_http_requests_total{code="200",handler="/api/v1/query"} 1.5e+03
process_cpu_seconds_total 3.25
weird_metric{label="a \\"quoted\\" value"} NaN
"""


def test_text_format_is_read_with_labels_and_values() -> None:
    samples = bench.parse_metrics(EXPOSITION)
    assert bench.total(samples, "apiserver_request_total", verb="PATCH", subresource="status") == 4
    assert bench.total(samples, "apiserver_request_total", resource="modelpools") == 16
    assert bench.total(samples, "prometheus_http_requests_total", handler="/api/v1/query") == 1500
    assert bench.total(samples, "process_cpu_seconds_total") == 3.25
    assert bench.total(samples, "apiserver_request_total", verb="DELETE") == 0


def test_two_probes_become_per_second_rates_and_means() -> None:
    before = {
        "t": 10.0,
        "api_GET": 5.0,
        "prom_queries": 100.0,
        "prom_query_s": 1.0,
        "prom_query_n": 100.0,
        "prom_cpu": 2.0,
        "op_cpu": 1.0,
        "decisions": 30.0,
        "reconcile_s": 3.0,
        "reconcile_n": 50.0,
        "policy_s": 0.5,
        "policy_n": 10.0,
    }
    after = {
        "t": 30.0,
        "api_GET": 25.0,
        "prom_queries": 440.0,
        "prom_query_s": 1.034,
        "prom_query_n": 440.0,
        "prom_cpu": 2.4,
        "op_cpu": 1.8,
        "decisions": 90.0,
        "reconcile_s": 4.48,
        "reconcile_n": 70.0,
        "policy_s": 0.6,
        "policy_n": 12.0,
    }
    out = bench.rates(before, after)
    assert out["api_GET"] == pytest.approx(1.0)
    assert out["prom_queries"] == pytest.approx(17.0)
    assert out["prom_query_ms"] == pytest.approx(0.1)
    assert out["prom_cpu"] == pytest.approx(0.02)
    assert out["decisions"] == pytest.approx(3.0)
    assert out["reconcile_ms"] == pytest.approx(74.0)
    assert out["policy_passes"] == pytest.approx(0.1)
    assert out["policy_ms"] == pytest.approx(50.0)


def test_the_pool_is_the_bursty_sample_with_three_variants() -> None:
    pool = bench.pool_manifest(1, "http://127.0.0.1:9090")
    assert [v["tier"] for v in pool["spec"]["variants"]] == ["small", "quantized", "large"]
    assert pool["spec"]["scaling"]["intervalSeconds"] == 1
    assert pool["spec"]["scaling"]["rateWindowSeconds"] == 2  # the sample's
    assert all(v["scaling"]["lookaheadSeconds"] == 4 for v in pool["spec"]["variants"])


def test_the_policy_routes_to_the_pools_variants_and_selects_no_router() -> None:
    from modelpool.api.routingpolicy import RoutingPolicySpec

    policy = bench.policy_manifest()
    spec = RoutingPolicySpec.model_validate(policy["spec"])
    pool = bench.pool_manifest(1, "http://127.0.0.1:9090")
    assert spec.pool_ref.name == pool["metadata"]["name"]
    assert {w.variant for w in spec.weights} == {v["name"] for v in pool["spec"]["variants"]}
    # no pod of the bench carries this label: nothing is pushed to the cluster's fake pod IPs
    assert spec.router_selector.match_labels == {"app.kubernetes.io/name": "modelpool-router-none"}
