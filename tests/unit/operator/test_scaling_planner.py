"""The operator's scaling shell: CRD fields -> scaler settings, pacing, holds (fake metrics reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, VariantStatus
from modelpool.controllers.pool_status import ReplicaPlan
from modelpool.controllers.scaling_planner import (
    GpuPoolMember,
    ScalingPlanner,
    expected_overflow,
    gpu_pool_member,
    memory_from_state,
    settings_for,
    state_from_memory,
    tier_order,
)
from modelpool.scaling.prometheus_reader import QueryTemplates, VariantTarget
from modelpool.scaling.types import BurstHistory, RatePoint, VariantMetrics, VariantState

URL = "http://127.0.0.1:9"


class FakeReader:
    """Returns canned metrics per Triton model name."""

    def __init__(self, by_model: dict[str, VariantMetrics]) -> None:
        self.by_model = by_model
        self.calls = 0
        self.targets: list[VariantTarget] = []

    async def read_variant(self, target: VariantTarget, at: float | None = None) -> VariantMetrics:
        self.calls += 1
        self.targets.append(target)
        return self.by_model[target.model]

    async def aclose(self) -> None:
        return None


def _spec(**scaling: Any) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 8},
            "scaling": {"intervalSeconds": 10, "rateWindowSeconds": 6, "prometheusURL": URL, **scaling},
            "variants": [
                {
                    "name": "large",
                    "tier": "large",
                    "model": {"name": "m-large", "repository": "/m"},
                    "cost": 20,
                    "maxReplicas": 3,
                    "scaling": {"capacityPerReplicaRps": 10},
                },
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "m-small", "repository": "/m"},
                    "minReplicas": 1,
                    "maxReplicas": 6,
                    "scaling": {"capacityPerReplicaRps": 10, "scaleDownStabilizationSeconds": 0},
                },
            ],
        }
    )


def _metrics(rps: float, now: float) -> VariantMetrics:
    series = tuple(RatePoint(now - 10 + i, rps) for i in range(11))
    return VariantMetrics(
        rate_series=series, queue_time_s=0.001, compute_time_s=0.01, pending_requests=0, newest_sample_t=now
    )


HELD = {"small": ReplicaPlan(1, "held"), "large": ReplicaPlan(1, "held")}


def _planner(reader: FakeReader) -> ScalingPlanner:
    planner = ScalingPlanner(default_prometheus_url=None)
    planner._readers[(URL, 6, 21.5, QueryTemplates())] = reader  # type: ignore[assignment]
    return planner


def _cluster_planner(reader: FakeReader) -> ScalingPlanner:
    """A planner of an operator run with ``--gpu-pool-sharing=cluster``: pools of several namespaces
    share a named GPU pool (by default only the pools of one namespace do)."""
    planner = _planner(reader)
    planner.gpu_pool_sharing = "cluster"
    return planner


def test_settings_mapping_and_order() -> None:
    spec = _spec()
    assert [v.name for v in tier_order(spec)] == ["small", "large"]
    small = settings_for(spec.variants[1])
    assert small.capacity_per_replica_rps == 10
    assert small.target_queue_time_s == 0.05
    assert small.tolerance == 0.1
    assert small.scale_down_stabilization_s == 0
    assert (small.lookahead_s, small.burst_reserve, small.burst_memory_s) == (10.0, True, 3600.0)
    assert small.trend_window_s == 20.0
    tuned = settings_for(
        spec.variants[1].model_copy(
            update={
                "scaling": spec.variants[1].scaling.model_copy(
                    update={
                        "lookahead_seconds": 5,
                        "burst_reserve": False,
                        "burst_memory_seconds": 600,
                        "target_latency_ms": 2000,
                        "trend_window_seconds": 2,
                    }
                )
            }
        )
    )
    assert (tuned.lookahead_s, tuned.burst_reserve, tuned.burst_memory_s) == (5.0, False, 600.0)
    assert (small.latency_target_s, tuned.latency_target_s) == (None, 2.0)
    assert tuned.trend_window_s == 2.0
    profiled = settings_for(
        spec.variants[0].model_copy(
            update={"scaling": spec.variants[0].scaling.model_copy(update={"capacity_per_replica_rps": None})}
        ),
        42.0,
    )
    assert profiled.capacity_per_replica_rps == 42.0


def test_overflow_goes_to_the_next_tier() -> None:
    status = ModelPoolStatus(variants=[VariantStatus(name="small", tier="small", capacity_shortfall_rps=12)])
    assert expected_overflow(_spec(), status) == {"small": 0.0, "large": 12.0}


async def test_load_scales_up_and_is_paced_by_the_interval() -> None:
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(45.0, now), "m-large": _metrics(1.0, now)})
    planner = _planner(reader)
    outcome = await planner.plan("ns", "p", _spec(), None, {"small": 1, "large": 1}, HELD, now=now)
    assert outcome.plans["small"].replicas >= 5
    assert outcome.metrics is not None and outcome.metrics.ok
    assert any(line.startswith("small 1->") for line in outcome.scaled)
    calls = reader.calls
    again = await planner.plan("ns", "p", _spec(), None, {"small": 5, "large": 1}, HELD, now=now + 3)
    assert again.plans == outcome.plans and again.metrics is None  # not due: the last decision holds
    assert reader.calls == calls
    assert again.next_decision_in is not None and 6.9 < again.next_decision_in < 7.1


async def test_routed_slo_is_read_only_when_a_decision_is_made() -> None:
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(45.0, now), "m-large": _metrics(1.0, now)})
    planner = _planner(reader)
    reads: list[float] = []

    async def routed_slo() -> float | None:
        reads.append(now)
        return 0.2

    current = {"small": 1, "large": 1}
    first = await planner.plan(
        "ns", "p", _spec(), None, current, HELD, now=now, routed_latency_slo=routed_slo
    )
    assert len(reads) == 1
    assert first.metrics is not None
    assert "plan for the RoutingPolicies' latency SLO 0.2s" in first.metrics.message
    await planner.plan("ns", "p", _spec(), None, current, HELD, now=now + 3, routed_latency_slo=routed_slo)
    assert len(reads) == 1  # not due: no API call either
    await planner.plan("ns", "p", _spec(), None, current, HELD, now=now + 11, routed_latency_slo=routed_slo)
    assert len(reads) == 2
    wire = _spec().to_wire()
    for variant in wire["variants"]:
        variant["scaling"]["targetLatencyMs"] = 500
    own = ModelPoolSpec.model_validate(wire)  # every variant has its own target: no read needed
    await planner.plan("ns", "p", own, None, current, HELD, now=now + 22, routed_latency_slo=routed_slo)
    assert len(reads) == 2


async def test_ready_replicas_reach_the_burst_reserve() -> None:
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(45.0, now), "m-large": _metrics(1.0, now)})
    planner = _planner(reader)
    await planner.plan("ns", "p", _spec(), None, {"small": 3, "large": 1}, HELD, now=now, ready={"small": 0})
    states = planner._states[("ns", "p")]
    assert states["small"].bursts.starts[-1].serving == 0  # 3 in the spec, none ready yet
    assert states["large"].bursts.starts[-1].serving == 1  # no ready count: the spec's


async def test_a_restarted_planner_takes_the_scalers_memory_from_status() -> None:
    now = 1_000.0
    spec = _spec()
    slow = spec.variants[1].scaling.model_copy(update={"scale_down_stabilization_seconds": 300})
    spec = spec.model_copy(
        update={"variants": [spec.variants[0], spec.variants[1].model_copy(update={"scaling": slow})]}
    )
    busy = FakeReader({"m-small": _metrics(45.0, now), "m-large": _metrics(1.0, now)})
    first = await _planner(busy).plan("ns", "p", spec, None, {"small": 1, "large": 1}, HELD, now=now)
    up = first.plans["small"]
    assert up.replicas >= 5 and up.memory is not None
    status = ModelPoolStatus(
        variants=[
            VariantStatus(name=n, tier=n, desired_replicas=p.replicas, scaler=p.memory)  # type: ignore[arg-type]
            for n, p in first.plans.items()
        ]
    )
    quiet = FakeReader({"m-small": _metrics(1.0, now + 30), "m-large": _metrics(1.0, now + 30)})
    current = {"small": up.replicas, "large": 1}
    restarted = await _planner(quiet).plan("ns", "p", spec, status, current, HELD, now=now + 30)
    assert restarted.plans["small"].replicas == up.replicas  # the 300 s window survived the restart
    assert "scale-down stabilised" in restarted.plans["small"].reason
    forgetful = await _planner(quiet).plan("ns", "p", spec, None, current, HELD, now=now + 30)
    assert forgetful.plans["small"].replicas < up.replicas  # what the memory prevents


def test_memory_round_trip_keeps_windows_and_burst_history() -> None:
    state = VariantState(
        replicas=4,
        decided_at=990.0,
        recommendations=((900.0, 3), (950.0, 6), (980.0, 3), (990.0, 4)),
        last_demand_rps=12.5,
        bursts=BurstHistory(updated_at=990.0, arrivals=5000.0, late=((0, 30.0), (1, 12.0), (2, 0.5))),
    )
    stored = {"name": "small", "tier": "small", "scaler": memory_from_state(state).model_dump(by_alias=True)}
    memory = ModelPoolStatus.model_validate({"variants": [stored]}).variants[0].scaler  # through JSON names
    assert memory is not None
    back = state_from_memory(memory, 4)
    assert back.recommendations == ((950.0, 6), (980.0, 3), (990.0, 4))  # (900, 3) is matched by (980, 3)
    assert back.bursts.late == state.bursts.late
    assert (back.bursts.arrivals, back.bursts.updated_at) == (5000.0, 990.0)
    assert (back.decided_at, back.last_demand_rps, back.replicas) == (990.0, 12.5, 4)


def test_memory_from_before_the_replay_is_read_but_its_burst_history_dropped() -> None:
    # An operator before the replayed reserve wrote burstShortfalls (replicas short, weight): other
    # numbers; the status still parses, the windows are kept, the reserve learns anew.
    old = {
        "decidedAt": 990.0,
        "recommendations": [{"t": 990.0, "replicas": 4}],
        "burstsUpdatedAt": 990.0,
        "burstRequests": 5000.0,
        "burstShortfalls": [{"replicasShort": 2.5, "weight": 60.0}],
    }
    stored = {"name": "small", "tier": "small", "scaler": old}
    memory = ModelPoolStatus.model_validate({"variants": [stored]}).variants[0].scaler
    assert memory is not None
    back = state_from_memory(memory, 4)
    assert back.recommendations == ((990.0, 4),)
    assert back.bursts == BurstHistory()


async def test_missing_metrics_hold_and_never_scale_down() -> None:
    now = 1_000.0
    reader = FakeReader(
        {
            "m-small": VariantMetrics(problem="metrics missing: unreachable"),
            "m-large": VariantMetrics(problem="x"),
        }
    )
    outcome = await _planner(reader).plan("ns", "p", _spec(), None, {"small": 4, "large": 2}, HELD, now=now)
    assert outcome.plans["small"].replicas == 4
    assert outcome.plans["large"].replicas == 2
    assert outcome.metrics is not None and not outcome.metrics.ok
    assert outcome.metrics.reason == "MetricsUnavailable"


async def test_a_partial_scrape_is_said_in_the_metrics_condition() -> None:
    """Fewer Triton scrape targets than ready replicas block the small tier's scale-down, but the
    condition said MetricsFresh and nothing of the missing targets."""
    now = 1_000.0
    partial = replace(_metrics(5.0, now), triton_targets=1, expected_targets=4)
    reader = FakeReader({"m-small": partial, "m-large": _metrics(1.0, now)})
    outcome = await _planner(reader).plan(
        "ns", "p", _spec(), None, {"small": 4, "large": 1}, HELD, now=now, ready={"small": 4}
    )
    assert outcome.plans["small"].replicas == 4
    assert "no scale-down: metrics partial" in outcome.plans["small"].reason
    assert outcome.metrics is not None
    assert (outcome.metrics.ok, outcome.metrics.reason) == (True, "MetricsPartial")
    assert outcome.metrics.message.startswith(
        f"decided from {URL}; small: metrics partial: Triton's series come from 1 scrape target(s) "
        "for 4 ready replicas (a target down, or not scraped yet?), so the served rate misses the "
        "others' requests; no scale-down for it until its targets are all scraped; "
    )
    reader.by_model["m-small"] = replace(partial, triton_targets=4)
    complete = await _planner(reader).plan(
        "ns", "p", _spec(), None, {"small": 4, "large": 1}, HELD, now=now, ready={"small": 4}
    )
    assert complete.metrics is not None and complete.metrics.reason == "MetricsFresh"


async def test_disabled_and_unconfigured() -> None:
    planner = ScalingPlanner(default_prometheus_url=None)
    disabled = await planner.plan("ns", "p", _spec(enabled=False), None, {}, HELD, now=1.0)
    assert disabled.plans["small"].replicas == 1 and disabled.metrics is not None
    assert disabled.metrics.reason == "ScalingDisabled"
    spec = ModelPoolSpec.model_validate({**_spec().to_wire(), "scaling": {"intervalSeconds": 10}})
    unconfigured = await planner.plan("ns", "p", spec, None, {}, HELD, now=1.0)
    assert unconfigured.plans == HELD
    assert unconfigured.metrics is not None and unconfigured.metrics.reason == "PrometheusNotConfigured"


def test_queries_from_the_pool_override_the_defaults() -> None:
    custom = "sum(rate(my_requests_total{$selector}[$window]))"
    spec = _spec(queries={"servedRate": custom})
    reader = ScalingPlanner(default_prometheus_url=None).reader(URL, spec)
    assert reader.templates.served_rate == custom
    assert reader.templates.pending == QueryTemplates().pending
    assert reader.rate_window_s == 6


def test_series_reach_back_over_the_longest_lookahead() -> None:
    """The burst reserve counts the last look-ahead's arrivals from the series: they must cover it."""
    planner = ScalingPlanner(default_prometheus_url=None)
    short = planner.reader(URL, _spec())  # look-ahead 10 s (default) < the trend window (20 s)
    assert short.series_span_s == 20 + 1.5 and short.step_s == 1.5
    wire = _spec().to_wire()
    wire["variants"][0]["scaling"]["lookaheadSeconds"] = 62  # a replica that starts in a minute
    slow = planner.reader(URL, ModelPoolSpec.model_validate(wire))
    assert slow.series_span_s == 62 + 2 * 1.5
    assert slow is not short


async def test_readers_of_every_pool_configuration_share_one_http_client() -> None:
    """Each distinct (Prometheus, rate window, span, queries) gets a reader; a client of its own
    per reader kept a connection pool open for every configuration a pool ever had."""
    planner = ScalingPlanner(default_prometheus_url=None)
    readers = [
        planner.reader(URL, _spec()),
        planner.reader(URL, _spec(rateWindowSeconds=2)),
        planner.reader("http://127.0.0.1:9/", _spec(queries={"pending": "sum(x{$selector})"})),
    ]
    assert len({id(r) for r in readers}) == 3
    clients = {id(r._client) for r in readers}
    assert len(clients) == 1
    shared = readers[0]._client
    await planner.close()
    assert shared.is_closed
    await planner.close()  # closing twice is harmless


def test_series_step_is_a_quarter_of_the_rate_window_and_cover_the_trend() -> None:
    """A rate window of four scrapes (Prometheus' rule of thumb) reads one point per scrape; the
    series reach back over the longest trend window, one look-ahead and eight points."""
    planner = ScalingPlanner(default_prometheus_url=None)
    fast = _spec(rateWindowSeconds=2, intervalSeconds=1)  # a 0.5 s scrape
    reader = planner.reader(URL, fast)
    assert reader.step_s == 0.5
    assert reader.series_span_s == 20 + 0.5  # the default 20 s trend window is the longest reach
    wire = fast.to_wire()
    for variant in wire["variants"]:
        variant["scaling"].update(trendWindowSeconds=2, lookaheadSeconds=4)
    short = planner.reader(URL, ModelPoolSpec.model_validate(wire))
    assert short.series_span_s == 4 + 2 * 0.5  # one look-ahead and two steps: ten points
    wire["scaling"]["rateWindowSeconds"] = 8
    sparse = planner.reader(URL, ModelPoolSpec.model_validate(wire))
    assert sparse.step_s == 2 and sparse.series_span_s == 8 * 2  # never fewer than eight points


def _shared_specs(priorities: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Wire specs of pools (``namespace/name``) on the GPU pool "shared", each variant at its priority."""
    specs = {}
    for pool, priority in priorities.items():
        wire = _spec().to_wire()
        wire["gpuPool"]["name"] = "shared"
        for variant in wire["variants"]:
            variant["priority"] = priority
        specs[pool] = wire
    return specs


def _index_of(
    specs: dict[str, dict[str, Any]], held: dict[str, dict[str, int]]
) -> Callable[[str], list[GpuPoolMember]]:
    """The operator's index of pools, read from ``held`` (their statuses' desired replicas) when asked."""

    def index(gpu_pool: str) -> list[GpuPoolMember]:
        members = []
        for pool, wire in specs.items():
            namespace, name = pool.split("/")
            status = {"variants": [{"name": v, "desiredReplicas": n} for v, n in held[pool].items()]}
            entry = gpu_pool_member(namespace, name, wire, status)
            assert entry is not None
            members.append(entry[gpu_pool])
        return members

    return index


async def _planned_gpus(
    planner: ScalingPlanner,
    specs: dict[str, dict[str, Any]],
    held: dict[str, dict[str, int]],
    pool: str,
    now: float,
) -> dict[str, ReplicaPlan]:
    """One pass of ``pool`` (``namespace/name``) from the replicas in ``held``: its plans."""
    namespace, name = pool.split("/")
    spec = ModelPoolSpec.model_validate(specs[pool])
    plans = {v: ReplicaPlan(n, "held") for v, n in held[pool].items()}
    outcome = await planner.plan(namespace, name, spec, None, held[pool], plans, now=now)
    return outcome.plans


def test_index_entry_of_a_pool_on_a_shared_gpu_pool() -> None:
    wire = _spec().to_wire()
    assert gpu_pool_member("ns", "p", wire, {}) is None  # no gpuPool.name: its budget is its own
    wire["gpuPool"]["name"] = "a100"
    wire["variants"][0]["gpusPerReplica"] = 2
    fresh = gpu_pool_member("ns", "p", wire, {})  # no status yet: the minimums it starts with
    assert fresh == {"a100": GpuPoolMember("ns/p", 8, 1 * 2 + 1 * 1, 1 * 2 + 1 * 1)}
    status = {"variants": [{"name": "large", "desiredReplicas": 3}, {"name": "small", "desiredReplicas": 4}]}
    assert gpu_pool_member("ns", "p", wire, status) == {"a100": GpuPoolMember("ns/p", 8, 3 * 2 + 4, 3)}
    wire["gpuPool"]["gpuBudget"] = "eight"  # invalid (the API server's schema would refuse it)
    assert gpu_pool_member("ns", "p", wire, status) is None


async def test_pools_on_a_shared_gpu_pool_share_its_budget_by_value_without_over_committing() -> None:
    """Two ModelPools in different namespaces name one GPU pool of 8 GPUs; both see heavy load.
    Planned in turn, each with the other's latest claims and the GPUs the index says it holds:
    the pool whose variants are worth more ends with more GPUs, and together they never hold more
    than the budget, also on the first pass after a restart (an empty planner, the index full)."""
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(80.0, now), "m-large": _metrics(40.0, now)})
    specs = _shared_specs({"team-a/chat": 0, "team-b/code": 5})
    held = {"team-a/chat": {"small": 5, "large": 3}, "team-b/code": {"small": 1, "large": 1}}
    index = _index_of(specs, held)
    planner = _cluster_planner(reader)
    planner.members = index
    for turn in range(6):
        pool = ("team-a/chat", "team-b/code")[turn % 2]
        if turn == 4:  # an operator restart: memory gone, the index (statuses) still there
            planner = _cluster_planner(reader)
            planner.members = index
        namespace, name = pool.split("/")
        t = now + 10 * turn
        reader.by_model = {"m-small": _metrics(80.0, t), "m-large": _metrics(40.0, t)}
        spec = ModelPoolSpec.model_validate(specs[pool])
        plans = {v: ReplicaPlan(n, "held") for v, n in held[pool].items()}
        outcome = await planner.plan(namespace, name, spec, None, held[pool], plans, now=t)
        held[pool] = {v: plan.replicas for v, plan in outcome.plans.items()}
        assert sum(sum(h.values()) for h in held.values()) <= 8, (turn, held)
        assert outcome.metrics is not None and "shared with" in outcome.metrics.message
    chat, code = sum(held["team-a/chat"].values()), sum(held["team-b/code"].values())
    assert code > chat >= 2  # the minimums stay
    assert chat + code == 8
    planner.forget("team-b", "code")
    assert "team-b/code" not in planner._claims["shared"]


async def test_pools_deciding_before_the_index_shows_the_other_ones_grant_never_over_commit() -> None:
    """Two pools' passes run concurrently in one operator: the second decides before the first's
    status has reached the index of pools, which still shows both at their minimums. Each must
    count what the other's latest decision granted, or both take the same free GPUs (on the real
    cluster the Deployments once went (1, 1) -> (3, 3) on a GPU pool of 4)."""
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(80.0, now), "m-large": _metrics(40.0, now)})
    specs = _shared_specs({"team-a/chat": 0, "team-b/code": 5})  # the second is worth more
    minimums = {pool: {"small": 1, "large": 1} for pool in specs}  # no status written yet
    planner = _cluster_planner(reader)
    planner.members = _index_of(specs, minimums)
    granted = {}
    for pool in specs:  # the second pass runs before the first one's status is written
        plans = await _planned_gpus(planner, specs, minimums, pool, now)
        granted[pool] = sum(plan.replicas for plan in plans.values())
    assert granted["team-a/chat"] > 2  # the first one took free GPUs: the load asks for more than 8
    assert sum(granted.values()) <= 8, granted
    disabled = specs["team-a/chat"]
    disabled["scaling"]["enabled"] = False  # back to its minimums: the index counts it again
    assert (
        sum(p.replicas for p in (await _planned_gpus(planner, specs, minimums, "team-a/chat", now)).values())
        == 2
    )
    plans = await _planned_gpus(planner, specs, minimums, "team-b/code", now + 10)
    assert sum(plan.replicas for plan in plans.values()) == 8 - 2
    disabled["scaling"]["enabled"] = True
    await _planned_gpus(planner, specs, minimums, "team-a/chat", now + 20)
    assert "team-a/chat" in planner._granted["shared"]
    planner.forget("team-a", "chat")  # deleted
    assert "team-a/chat" not in planner._granted["shared"]
    plans = await _planned_gpus(planner, specs, minimums, "team-b/code", now + 30)
    # a forgotten pool (deleted) counts only as the index shows it: its minimums here
    assert sum(plan.replicas for plan in plans.values()) == 8 - 2


async def test_a_pool_grows_into_gpus_another_gives_up_only_once_the_index_shows_them_free() -> None:
    """The other way round: a pool's pass shrinks it, but its status (the index) still shows the old
    size, and its Deployment may not be patched yet. The other pool must not take those GPUs
    before the index shows them free, or both Deployments could hold them at once."""
    now = 1_000.0
    specs = _shared_specs({"team-a/chat": 1, "team-b/code": 1})
    held = {"team-a/chat": {"small": 5, "large": 1}, "team-b/code": {"small": 1, "large": 1}}
    reader = FakeReader({"m-small": _metrics(0.5, now), "m-large": _metrics(0.5, now)})  # chat idles
    planner = _cluster_planner(reader)
    planner.members = _index_of(specs, held)
    chat = await _planned_gpus(planner, specs, held, "team-a/chat", now)
    shrunk = sum(p.replicas for p in chat.values())
    assert shrunk < 6  # it shrinks; its status is not written yet
    reader.by_model = {"m-small": _metrics(80.0, now), "m-large": _metrics(40.0, now)}  # code is busy
    code = await _planned_gpus(planner, specs, held, "team-b/code", now)
    assert sum(p.replicas for p in code.values()) == 8 - 6  # chat's 6 GPUs still count
    held["team-a/chat"] = {v: p.replicas for v, p in chat.items()}  # chat's status lands
    code = await _planned_gpus(planner, specs, held, "team-b/code", now + 10)
    assert sum(p.replicas for p in code.values()) == 8 - shrunk


async def test_a_pass_between_decisions_keeps_the_latest_decision_the_status_does_not_show_yet() -> None:
    """A pass decided 1 -> 5 replicas, applied them, and failed before its status was written (a
    status the API server refused, a conflict): the pass retried within the decision interval read
    the stored status, still at the older decision, and applied 1 again (6 -> 1 -> 6 replicas on
    the next decision). Between decisions the planner's own latest decision holds unless the stored
    status is newer (a status another operator wrote after a change of leader)."""
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(45.0, now), "m-large": _metrics(1.0, now)})
    planner = _planner(reader)
    decided = await planner.plan("ns", "p", _spec(), None, {"small": 1, "large": 1}, HELD, now=now)
    assert decided.plans["small"].replicas >= 5
    stored_before = ModelPoolStatus(
        variants=[VariantStatus(name="small", tier="small", desired_replicas=1, reason="held")]
    )
    retry = await planner.plan("ns", "p", _spec(), stored_before, {"small": 5, "large": 1}, HELD, now=now + 5)
    assert retry.metrics is None  # no decision: the latest one holds
    assert retry.plans["small"] == decided.plans["small"]
    # A spec that lowered maxReplicas since: the held decision is clamped to it.
    lowered = _spec()
    lowered = lowered.model_copy(
        update={"variants": [lowered.variants[0], lowered.variants[1].model_copy(update={"max_replicas": 2})]}
    )
    clamped = await planner.plan(
        "ns", "p", lowered, stored_before, {"small": 5, "large": 1}, HELD, now=now + 6
    )
    assert clamped.plans["small"].replicas == 2 and clamped.plans["small"].reason == "clamped to [1, 2]"
    # A stored status decided after this planner's decision (another operator led meanwhile) wins.
    memory = decided.plans["small"].memory
    assert memory is not None
    newer = memory.model_copy(update={"decided_at": now + 4})
    stored_newer = ModelPoolStatus(
        variants=[VariantStatus(name="small", tier="small", desired_replicas=3, scaler=newer)]
    )
    theirs = {"small": ReplicaPlan(3, "theirs"), "large": ReplicaPlan(1, "held")}
    again = await planner.plan(
        "ns", "p", _spec(), stored_newer, {"small": 3, "large": 1}, theirs, now=now + 7
    )
    assert again.plans == theirs


async def test_a_cut_reason_names_a_few_of_the_pools_sharing_the_gpu_pool_and_counts_the_others() -> None:
    """The reason of a variant waiting for GPUs listed every other pool on the shared GPU pool: 17
    pools made it longer than the 1024 characters the status field takes, and the status write
    failed. It names three and counts the rest, and the MetricsAvailable report does the same."""
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(80.0, now), "m-large": _metrics(40.0, now)})
    planner = _cluster_planner(reader)
    others = [f"team-{i:02d}-inference/customer-support-classifier" for i in range(17)]
    holder = GpuPoolMember("zz/holder", 8, 6)  # holds 6 of the 8 GPUs: the pool must wait for them
    planner.members = lambda _gpu_pool: [*(GpuPoolMember(pool, 8, 0) for pool in others), holder]
    wire = _spec().to_wire()
    wire["gpuPool"]["name"] = "shared"
    spec = ModelPoolSpec.model_validate(wire)
    outcome = await planner.plan("ns", "p", spec, None, {"small": 1, "large": 1}, HELD, now=now)
    cut = [plan.reason for plan in outcome.plans.values() if "once the pools sharing" in plan.reason]
    assert cut, outcome.plans
    for reason in cut:
        assert len(reason) <= 1024
        assert f"({others[0]}, {others[1]}, {others[2]} and 15 more)" in reason, reason
        assert others[3] not in reason
    assert outcome.metrics is not None and "and 15 more" in outcome.metrics.message


async def test_each_pool_reads_the_series_of_its_own_namespace() -> None:
    """Two tenants' pools may serve the same model name: the selectors carry the pool's namespace
    (series of no namespace still match, for scrapes that attach none)."""
    now = 1_000_000.0
    reader = FakeReader({"m-small": _metrics(5, now), "m-large": _metrics(1, now)})
    planner = _planner(reader)
    await planner.plan("team-a", "p", _spec(), None, {"small": 1, "large": 1}, HELD, now=now)
    assert {(t.pool, t.namespace) for t in reader.targets} == {("p", "team-a")}
    assert all('namespace=~"team-a|"' in t.selector for t in reader.targets)
