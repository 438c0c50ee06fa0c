"""PromQL templates and reader error handling (HTTP faked with httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest

from modelpool.devcluster.prometheus import prometheus_config
from modelpool.scaling.prometheus_reader import (
    POOL_LABEL,
    VARIANT_LABEL,
    PrometheusReader,
    QueryTemplates,
    VariantTarget,
    series_query,
    target_label,
)

TARGET = VariantTarget(model="small", variant="small", extra_matchers='namespace="prod"')


def test_default_templates_render_triton_and_router_queries() -> None:
    t = QueryTemplates()
    values = {"selector": TARGET.selector, "router_selector": TARGET.router_selector, "window": "6000ms"}
    assert t.render("served_rate", **values) == (
        'sum(rate(nv_inference_request_success{model="small",namespace="prod"}[6000ms]))'
    )
    assert 'modelpool_router_upstream_requests_total{variant="small",namespace="prod"}' in t.render(
        "router_rate", **values
    )
    assert "nv_inference_queue_duration_us" in t.render("queue_time_s", **values)
    assert "nv_inference_compute_infer_duration_us" in t.render("compute_time_s", **values)
    assert (
        t.render("pending", **values)
        == 'sum(nv_inference_pending_request_count{model="small",namespace="prod"})'
    )
    assert series_query("up", "30000ms", "2000ms") == "(up)[30000ms:2000ms]"


def test_a_target_with_a_namespace_selects_only_that_namespace() -> None:
    """Pools of several namespaces serving one model name: the operator passes the pool's namespace
    (controllers/scaling_planner.py); series of no namespace (a scrape that attaches none) match too."""
    plain = VariantTarget(model="small", variant="small")
    assert plain.selector == 'model="small"'
    assert plain.router_selector == 'variant="small"'
    scoped = VariantTarget(
        model="small", variant="small", pool="bank", namespace="prod", extra_matchers='x="y"'
    )
    assert scoped.selector == (
        'model="small",modelpool_dev_pool=~"bank|",modelpool_dev_variant=~"small|",namespace=~"prod|",x="y"'
    )
    assert scoped.router_selector == 'pool="bank",variant="small",namespace=~"prod|",x="y"'


def test_a_target_with_a_pool_selects_its_own_pods_series_or_unlabelled_ones() -> None:
    """Two variants (or two pools of one namespace) loading one model name: each reads the series
    its own pods' target labels name (the chart's Triton PodMonitor attaches modelpool.dev/pool and
    modelpool.dev/variant, sanitized), or series with neither label (a static scrape config)."""
    small = VariantTarget(model="llama", variant="small", pool="chat")
    large = VariantTarget(model="llama", variant="large", pool="chat")
    assert (POOL_LABEL, VARIANT_LABEL) == ("modelpool_dev_pool", "modelpool_dev_variant")
    assert small.selector == 'model="llama",modelpool_dev_pool=~"chat|",modelpool_dev_variant=~"small|"'
    assert large.selector == 'model="llama",modelpool_dev_pool=~"chat|",modelpool_dev_variant=~"large|"'
    # The router's series carry pool and variant of their own.
    assert large.router_selector == 'pool="chat",variant="large"'
    # A name is matched literally: a dot (allowed in object names) is not a wildcard.
    dotted = VariantTarget(model="llama", variant="small", pool="chat.v2")
    assert r'modelpool_dev_pool=~"chat\\.v2|"' in dotted.selector  # PromQL "\\." is RE2 "\."
    assert target_label("modelpool.dev/pool") == "modelpool_dev_pool"


async def test_the_reader_reports_its_step_and_scrape_interval() -> None:
    """How old a healthy sample may be: the step and the longest scrape interval, half the rate
    window unless given (docs/scaling.md, Prometheus queries)."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": {"result": []}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    default = PrometheusReader("http://prom.invalid", client=client, rate_window_s=240.0, step_s=60.0)
    m = await default.read_variant(TARGET)
    assert (m.step_s, m.scrape_interval_s) == (60.0, 120.0)
    given = PrometheusReader("http://prom.invalid", client=client, step_s=0.5, scrape_interval_s=0.5)
    assert (await given.read_variant(TARGET)).scrape_interval_s == 0.5


@pytest.mark.parametrize(("count", "targets"), [("2", 2), (None, None)])
async def test_the_reader_counts_the_triton_targets_of_two_ready_replicas_or_more(
    count: str | None, targets: int | None
) -> None:
    queries: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        queries.append(q)
        result = [{"metric": {}, "value": [104, count]}] if q.startswith("count(") and count else []
        return httpx.Response(200, json={"status": "success", "data": {"result": result}})

    reader = _prometheus(httpx.MockTransport(answer))
    target = VariantTarget(model="llama", variant="small", pool="chat", ready_replicas=3)
    m = await reader.read_variant(target)
    assert (m.triton_targets, m.expected_targets) == (targets, 3 if targets is not None else None)
    assert (
        'count(count by (instance) (rate(nv_inference_request_success{model="llama",'
        'modelpool_dev_pool=~"chat|",modelpool_dev_variant=~"small|"}[6000ms])))'
    ) in queries


def test_bad_template_placeholder_names_the_field() -> None:
    t = QueryTemplates(pending="sum(x{$selectr})")
    with pytest.raises(
        ValueError, match=r"spec\.scaling\.queries\.pending: unknown or malformed placeholder"
    ):
        t.render("pending", selector="a", router_selector="b", window="1s")


async def test_bad_template_placeholder_is_a_problem_naming_the_field() -> None:
    """An object from before the CRD checked placeholders holds the pool instead of crashing the pass."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": {"result": []}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    reader = PrometheusReader(
        "http://prom.invalid", client=client, templates=QueryTemplates(pending="x{$selectr}")
    )
    m = await reader.read_variant(TARGET)
    assert m.problem is not None
    assert "spec.scaling.queries.pending: unknown or malformed placeholder" in m.problem


def _prometheus(handler: httpx.MockTransport) -> PrometheusReader:
    return PrometheusReader("http://prom.invalid", client=httpx.AsyncClient(transport=handler))


async def test_reader_assembles_metrics_and_prefers_router_series() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        if q.startswith("(sum(rate(modelpool_router_upstream_requests_total"):
            result = [{"metric": {}, "values": [[100, "4"], [102, "6"], [104, "NaN"]]}]
        elif q.startswith("(sum(rate(nv_inference_request_success"):
            result = [{"metric": {}, "values": [[100, "3"], [102, "5"]]}]
        elif "queue_duration" in q:
            result = [{"metric": {}, "value": [104, "0.25"]}]
        elif "compute_infer" in q:
            result = [{"metric": {}, "value": [104, "0.05"]}]
        elif "pending" in q:
            result = [{"metric": {}, "value": [104, "7"]}]
        elif "timestamp" in q:
            result = [{"metric": {}, "value": [104, "103.5"]}]
        else:
            raise AssertionError(q)
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "x", "result": result}})

    reader = _prometheus(httpx.MockTransport(answer))
    m = await reader.read_variant(TARGET)
    assert m.problem is None
    assert [p.rps for p in m.rate_series] == [4.0, 6.0]
    assert m.router_rps == 6.0
    assert (m.queue_time_s, m.compute_time_s, m.pending_requests, m.newest_sample_t) == (
        0.25,
        0.05,
        7.0,
        103.5,
    )


async def test_reader_falls_back_to_served_rate_without_router() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        result = (
            [{"metric": {}, "values": [[100, "3"], [102, "5"]]}]
            if "nv_inference_request_success" in q and q.startswith("(")
            else []
        )
        return httpx.Response(200, json={"status": "success", "data": {"result": result}})

    m = await _prometheus(httpx.MockTransport(answer)).read_variant(TARGET)
    assert m.router_rps is None
    assert m.latest_rps == 5.0
    assert m.newest_sample_t is None  # -> decide() holds with "no sample timestamp"


async def test_reader_says_how_many_seconds_each_rate_point_counts() -> None:
    """The trend test needs each point's window: rate()'s window, or none for irate (one scrape)."""

    def answer(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        result = [{"metric": {}, "values": [[100, "3"], [102, "5"]]}] if q.startswith("(") else []
        return httpx.Response(200, json={"status": "success", "data": {"result": result}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    rate = PrometheusReader("http://prom.invalid", client=client, rate_window_s=2.0)
    assert (await rate.read_variant(TARGET)).rate_window_s == 2.0
    irate = QueryTemplates(
        served_rate="sum(irate(nv_inference_request_success{$selector}[$window]))",
        router_rate="sum(irate(modelpool_router_upstream_requests_total{$router_selector}[$window]))",
    )
    one_scrape = PrometheusReader("http://prom.invalid", client=client, rate_window_s=8.0, templates=irate)
    assert (await one_scrape.read_variant(TARGET)).rate_window_s is None


async def test_query_error_becomes_problem() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}
        return httpx.Response(400, content=json.dumps(body))

    m = await _prometheus(httpx.MockTransport(answer)).read_variant(TARGET)
    assert m.problem is not None
    assert "bad_data parse error at char 5" in m.problem


@pytest.mark.parametrize(
    ("status", "error_type", "named"),
    [(400, "bad_data", True), (422, "execution", True), (503, "timeout", False)],
)
async def test_a_rejected_query_names_the_field_that_overrides_it(
    status: int, error_type: str, named: bool
) -> None:
    """Prometheus refusing one query (400/422) names the pool field and the fix; an overloaded
    Prometheus (503) is not about the query, so no field is blamed."""

    def answer(request: httpx.Request) -> httpx.Response:
        if "queue_duration" in request.url.params["query"]:
            body = {"status": "error", "errorType": error_type, "error": "boom"}
            return httpx.Response(status, content=json.dumps(body))
        return httpx.Response(200, json={"status": "success", "data": {"result": []}})

    m = await _prometheus(httpx.MockTransport(answer)).read_variant(TARGET)
    assert m.problem is not None
    assert f"HTTP {status} {error_type} boom" in m.problem
    assert ("spec.scaling.queries.queueTimeS: Prometheus rejected the query" in m.problem) == named
    assert ("unset the field to use the default" in m.problem) == named


def test_prometheus_config_and_bad_target() -> None:
    cfg = prometheus_config({"triton": ["127.0.0.1:8002"]}, 0.5)
    assert cfg["global"] == {
        "scrape_interval": "500ms",
        "evaluation_interval": "500ms",
        "scrape_timeout": "500ms",
    }
    assert cfg["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8002"]}]  # type: ignore[index]
    with pytest.raises(ValueError, match="must be host:port"):
        prometheus_config({"triton": ["localhost"]}, 1.0)


def test_prometheus_config_attaches_a_jobs_target_labels() -> None:
    """A local Triton can carry the labels the chart's PodMonitor attaches to a pod's series."""
    own = {"modelpool_dev_pool": "chat", "modelpool_dev_variant": "small", "namespace": "prod"}
    cfg = prometheus_config(
        {"small": ["127.0.0.1:8002"], "static": ["127.0.0.1:8003"]}, 1.0, labels={"small": own}
    )
    small, static = cfg["scrape_configs"]  # type: ignore[misc]
    assert small["static_configs"] == [{"targets": ["127.0.0.1:8002"], "labels": own}]
    assert static["static_configs"] == [{"targets": ["127.0.0.1:8003"]}]
    with pytest.raises(ValueError, match="labels for job 'large'"):
        prometheus_config({"small": ["127.0.0.1:8002"]}, 1.0, labels={"large": own})
