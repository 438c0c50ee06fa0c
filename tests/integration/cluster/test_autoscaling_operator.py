"""Live-metrics autoscaling end to end on the real parts: a real tritonserver under a bounded
load, a real Prometheus scraping it, and the operator (as users run it) patching the
Deployment of the variant on the real local cluster."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from integration.cluster.kubetools import Kube, OperatorProcess, parse_metrics, wait_for
from integration.loadgen import echo_body, paced_load
from modelpool.controllers.pool_status import MEMORY_REFRESH_SECONDS
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.devcluster.triton import TritonProcess
from unit.operator.helpers import routing_policy

pytestmark = [pytest.mark.cluster, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.timeout(300)]

SERVICE_MS = 5
LOAD_RPS = 40.0
LOAD_SECONDS = 15.0


def pool(prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "scaled"},
        "spec": {
            "gpuPool": {"gpuBudget": 8},
            "scaling": {"intervalSeconds": 1, "rateWindowSeconds": 3, "prometheusURL": prometheus_url},
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "echo_small", "repository": "/models"},
                    "gpusPerReplica": 0,
                    "minReplicas": 1,
                    "maxReplicas": 6,
                    "scaling": {"capacityPerReplicaRps": 10, "targetQueueTimeMs": 100},
                }
            ],
        },
    }


async def _paced_load(url: str, rps: float, seconds: float) -> list[int]:
    """Open loop, bounded: int(rps * seconds) requests to 127.0.0.1."""
    body = echo_body(f"sleep:{SERVICE_MS}:hello")

    async def send(client: httpx.AsyncClient, i: int) -> int:
        return (await client.post(f"{url}/v2/models/echo_small/infer", json=body)).status_code

    return await paced_load(rps, seconds, send)


def _assert_own_metrics_count_the_scale_up(operator: OperatorProcess, namespace: str) -> None:
    """The operator's /metrics (as the chart's metrics Service scrapes it) carry its decisions,
    reconcile times and process CPU, not only the client library's defaults."""
    ups = operator.metric(
        "modelpool_scaling_decisions_total", namespace=namespace, pool="scaled", variant="small", action="up"
    )
    assert ups >= 1
    assert operator.metric("modelpool_reconcile_duration_seconds_count", controller="modelpool") >= 1
    assert operator.metric("process_cpu_seconds_total") > 0


def _first_scale_up_logged(operator: OperatorProcess, pool: str, after: float) -> float | None:
    """Wall time of the operator's first ``Scaled ... up`` log line for ``pool`` after ``after``."""
    for line in operator.log_path.read_text(errors="replace").splitlines():
        match = re.match(  # kopf's format: "[2026-11-24 00:39:15,371] logger [INFO    ] message"
            r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] .*Scaled [^ ]+/" + pool + r": \w+ 1->", line
        )
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
            if stamp >= after:
                return stamp
    return None


def _replicas(kube: Kube) -> int:
    dep = kube.get("deployment", "scaled-small")
    return int(dep["spec"]["replicas"]) if dep else 0


def test_variants_without_a_latency_target_plan_for_the_routing_policies_slo(
    kube: Kube, operator: OperatorProcess, echo_triton: TritonProcess, echo_prometheus: PrometheusProcess
) -> None:
    """The operator keeps the RoutingPolicies' latency SLOs in an index fed by its watch (no LIST
    per decision): a policy routing to the pool sets the target, a stricter one lowers it."""
    manifest = pool(echo_prometheus.url)
    manifest["metadata"]["name"] = "routed"
    kube.apply(manifest)  # its variant sets no targetLatencyMs

    def message_with(text: str) -> Any:
        def check() -> Any:
            c = kube.condition("modelpool", "routed", "MetricsAvailable")
            return c if c and c["status"] == "True" and text in c["message"] else None

        return check

    wait_for(message_with("decided from"), 60, "a first decision")
    kube.apply(routing_policy("routed", 800, "relaxed"))
    cond = wait_for(message_with("latency SLO 0.8s"), 30, "the policy's SLO in the decision")
    kube.apply(routing_policy("routed", 250, "strict"))
    kube.apply(routing_policy("another-pool", 50, "elsewhere"))
    cond = wait_for(message_with("latency SLO 0.25s"), 30, "the stricter policy's SLO")
    print(f"\n{cond['message']}")
    kube.run("delete", "routingpolicy", "strict")
    wait_for(message_with("latency SLO 0.8s"), 30, "the SLO once the stricter policy is gone")


def test_a_steady_pool_decides_every_second_writes_rarely_and_wakes_only_to_decide(
    kube: Kube, operator: OperatorProcess, echo_triton: TritonProcess, echo_prometheus: PrometheusProcess
) -> None:
    """Each decision rewrites only the reasons and the scaler's memory when nothing moves: the pool
    is written (a new resourceVersion, an etcd write) once its stored memory is 10 s old, not at
    every decision. Nor does a write that leaves the spec alone (the operator's own status writes,
    here a label the test changes every second) wake a pass: only the decisions' timer does
    (before ``triggers.GenerationFilter`` every such write woke one more pass). And a pass reads
    the pool's children from the operator's watch cache: no LIST per decision (three before), only
    one pass per resync period lists them."""
    manifest = pool(echo_prometheus.url)
    manifest["metadata"]["name"] = "quiet"
    kube.apply(manifest)
    wait_for(
        lambda: (c := kube.condition("modelpool", "quiet", "Ready")) and c["status"] == "True", 60, "Ready"
    )
    time.sleep(3)  # the first decisions and the Deployment's readiness are written

    def counters() -> tuple[float, float]:
        """(variant decisions of this pool, ModelPool reconcile passes of the whole operator)."""
        return (
            operator.metric("modelpool_scaling_decisions_total", namespace=kube.namespace, pool="quiet"),
            operator.metric("modelpool_reconcile_duration_seconds_count", controller="modelpool"),
        )

    def child_lists() -> float:
        """LISTs of Deployments and Services the operator's own client sent (other clients, such as
        the namespace controller clearing earlier tests' namespaces, list them too; pods are also
        listed by the RoutingPolicy reconciler, for its router pods)."""
        return sum(
            operator.metric("modelpool_kube_requests_total", verb="list", resource=kind)
            for kind in ("deployments", "services")
        )

    def all_pools() -> set[str]:
        out = kube.cluster.kubectl(
            "get", "modelpools", "-A", "-o", "jsonpath={.items[*].metadata.uid}"
        ).stdout
        return set(out.split())

    # Other tests' pools list their children too: wait until their namespaces are gone.
    quiet_uid = kube.get("modelpool", "quiet")["metadata"]["uid"]  # type: ignore[index]
    wait_for(lambda: all_pools() == {quiet_uid}, 120, "the other tests' pools to be deleted")

    def status_writes() -> float:
        """Status writes the operator's own client sent (the only pool left: this one's)."""
        return operator.metric("modelpool_kube_requests_total", verb="patch", resource="modelpools/status")

    started = time.monotonic()  # the window of the counts below: from before their first reads...
    first, _ = counters()
    first_lists = child_lists()
    first_writes = status_writes()
    stored: dict[str, float] = {}  # each version of the pool seen -> its stored decision's time

    def twelve_decisions() -> bool:
        obj = kube.get("modelpool", "quiet")
        assert obj is not None
        scaler = obj["status"]["variants"][0]["scaler"]
        stored[obj["metadata"]["resourceVersion"]] = scaler["decidedAt"]
        return counters()[0] - first >= 12

    # It keeps deciding (intervalSeconds 1): the limit only catches a pool that stopped.
    wait_for(twelve_decisions, 60, "twelve decisions", interval=0.5)
    decided = counters()[0] - first
    writes = status_writes() - first_writes
    lists = child_lists() - first_lists
    elapsed = time.monotonic() - started  # ...to after their last
    alone = all_pools() == {quiet_uid}
    print(
        f"\n{elapsed:.1f} s at intervalSeconds 1: {decided:.0f} variant decisions, {writes:.0f} status "
        f"writes, {len(stored)} pool versions seen, {lists:.0f} LISTs of Deployments and Services"
    )
    assert alone
    # Each decision changes only the reasons and the memory: the status is written once the stored
    # memory is MEMORY_REFRESH_SECONDS old (by the operator's own decision times), not each time.
    times = sorted(set(stored.values()))
    assert all(b - a >= MEMORY_REFRESH_SECONDS for a, b in itertools.pairwise(times)), times
    assert writes <= elapsed // MEMORY_REFRESH_SECONDS + 1, (writes, elapsed)
    assert writes < decided
    # The pool lists both kinds from the API server once per resync period (5 s for the tests'
    # operator, 30 s by default) and reads the watch cache in between; a LIST per pass was 24.
    assert lists <= 2 * (elapsed // operator.resync_seconds + 1), (lists, elapsed)

    first, first_passes = counters()
    for touches in range(1, 12):  # a label change a second, each a write that leaves the spec alone
        kube.run("label", "modelpool", "quiet", f"touched={touches}", "--overwrite")
        time.sleep(1.0)
    last, last_passes = counters()
    decided, passes = last - first, last_passes - first_passes
    print(f"then {touches} label changes: {decided:.0f} variant decisions, {passes:.0f} reconcile passes")
    # One variant, alone in the cluster: one decision per pass. The slack is for a pass that runs
    # between the two reads of the counters; a pass per label change would add about ten.
    assert passes <= decided + 3


def test_load_step_scales_the_deployment_and_lost_metrics_hold(
    kube: Kube, operator: OperatorProcess, echo_triton: TritonProcess, echo_prometheus: PrometheusProcess
) -> None:
    kube.apply(pool(echo_prometheus.url))
    wait_for(
        lambda: (c := kube.condition("modelpool", "scaled", "MetricsAvailable")) and c, 60, "a first decision"
    )
    assert _replicas(kube) == 1

    reaction: dict[str, float] = {}
    step_at = time.time()

    async def load_and_watch() -> list[int]:
        load = asyncio.create_task(_paced_load(echo_triton.http_url, LOAD_RPS, LOAD_SECONDS))
        started = time.monotonic()
        while not load.done():
            if "t" not in reaction and await asyncio.to_thread(_replicas, kube) > 1:
                reaction["t"] = time.monotonic() - started
            await asyncio.sleep(0.25)
        return await load

    codes = asyncio.run(load_and_watch())
    assert codes.count(200) == len(codes), "every request of the bounded load was served"
    assert "t" in reaction, f"no scale-up during {LOAD_SECONDS:.0f} s of {LOAD_RPS:.0f} req/s"
    scaled_to = _replicas(kube)
    decided = _first_scale_up_logged(operator, "scaled", after=step_at)
    assert decided is not None, operator.log_tail()
    print(
        f"\nload step 0 -> {LOAD_RPS:.0f} req/s: the operator scaled up after {decided - step_at:.2f} s "
        f"(its log), the Deployment was seen patched after {reaction['t']:.1f} s (kubectl every "
        f"0.25 s), now {scaled_to} replicas"
    )
    assert decided - step_at <= reaction["t"] + 0.5  # the log line is the same action, seen sooner
    # 40 req/s at a declared 10 req/s per replica needs at least 4 replicas.
    assert scaled_to >= 4
    status = kube.get("modelpool", "scaled")["status"]  # type: ignore[index]
    small = status["variants"][0]
    assert small["desiredReplicas"] == scaled_to
    # The decision that brought the Deployment to scaled_to scaled it up: its Scaled Event says so.
    # (The stored reason is whichever decision was stored last, a scale-up, a keep or a hold
    # depending on when the memory was last written: no one expected value to check.)
    scaled = [e["message"] for e in kube.events("scaled") if e["reason"] == "Scaled"]
    assert any(re.match(rf"small \d+->{scaled_to}: scale up \d+->{scaled_to}: ", m) for m in scaled), scaled
    memory = small["scaler"]
    assert memory["recommendations"] and max(r["replicas"] for r in memory["recommendations"]) >= 4
    _assert_own_metrics_count_the_scale_up(operator, kube.namespace)

    # The load is over. Without its memory a restarted operator would scale down at once; with the
    # memory in status the 300 s scale-down window still holds the replicas the load needed.
    operator.kill()
    time.sleep(3 + 2 * 1.0 + 1)  # the 3 s rate window and two scrapes: the load is gone from the rate
    # The last decision the killed operator wrote (it may have decided again after the read above).
    decided = kube.get("modelpool", "scaled")["status"]["variants"][0]["scaler"]["decidedAt"]  # type: ignore[index]
    operator.start()
    after = wait_for(
        lambda: (
            (v := kube.get("modelpool", "scaled")["status"]["variants"][0])  # type: ignore[index]
            and v["scaler"]["decidedAt"] > decided
            and v
        ),
        60,
        "a decision by the restarted operator",
    )
    print(f"after restart: {after['desiredReplicas']} replicas: {after['reason']}")
    assert after["desiredReplicas"] == scaled_to
    assert _replicas(kube) == scaled_to
    assert "scale-down stabilised" in after["reason"]

    # Metrics vanish (Triton gone): the pool holds its last decision and says so; no scale-down.
    echo_triton.kill()
    cond = wait_for(
        lambda: (
            (c := kube.condition("modelpool", "scaled", "MetricsAvailable")) and c["status"] == "False" and c
        ),
        60,
        "MetricsAvailable=False",
    )
    assert "hold" in cond["message"]
    assert _replicas(kube) == scaled_to


def test_a_query_prometheus_refuses_holds_the_pool_and_names_its_field(
    kube: Kube, operator: OperatorProcess, echo_prometheus: PrometheusProcess
) -> None:
    """PromQL that passes the CRD's placeholder check but that Prometheus cannot parse: the pool
    holds its replicas and its condition names the field and the fix; nothing crashes or retries
    in a loop."""
    manifest = pool(echo_prometheus.url)
    manifest["metadata"]["name"] = "badquery"
    manifest["spec"]["scaling"]["queries"] = {"pending": "sum(nv_inference_pending_request_count{$selector}"}
    kube.apply(manifest)
    condition = wait_for(
        lambda: (c := kube.condition("modelpool", "badquery", "MetricsAvailable")) and c,
        60,
        "a first decision",
    )
    print(f"\n{condition['reason']}: {condition['message']}")
    assert condition["status"] == "False"
    assert condition["reason"] == "MetricsUnavailable"
    assert "spec.scaling.queries.pending: Prometheus rejected the query" in condition["message"]
    assert "bad_data" in condition["message"]
    assert "unset the field to use the default" in condition["message"]
    deployment = kube.get("deployment", "badquery-small")
    assert deployment is not None and deployment["spec"]["replicas"] == 1  # held at its minimum


def test_a_pool_that_stops_scaling_or_is_deleted_leaves_no_series(
    kube: Kube, operator: OperatorProcess, echo_prometheus: PrometheusProcess
) -> None:
    """The operator's per-variant series are labelled with the pool's namespace, and go when the
    pool no longer decides: with scaling switched off, and when it is deleted. Before, a deleted
    pool's gauges stayed at their last values for the operator's lifetime."""
    manifest = pool(echo_prometheus.url)
    manifest["metadata"]["name"] = "ephemeral"
    labels = {"namespace": kube.namespace, "pool": "ephemeral"}

    def series() -> list[str]:
        assert operator.metrics_url is not None
        samples = parse_metrics(httpx.get(operator.metrics_url, timeout=10).text)
        return [n for n, found, _ in samples if all(found.get(k) == v for k, v in labels.items())]

    kube.apply(manifest)
    wait_for(lambda: "modelpool_scaling_desired_replicas" in series(), 60, "the pool's gauges")
    assert operator.metric("modelpool_scaling_decisions_total", **labels) >= 1
    manifest["spec"]["scaling"]["enabled"] = False
    kube.apply(manifest)
    wait_for(lambda: not series(), 30, "the series to go once scaling is off")
    manifest["spec"]["scaling"]["enabled"] = True
    kube.apply(manifest)
    wait_for(lambda: "modelpool_scaling_desired_replicas" in series(), 60, "the gauges back")
    kube.run("delete", "modelpool", "ephemeral")
    wait_for(lambda: not series(), 30, "the deleted pool's series to go")
