"""The planner's paths besides a decision on good data: scaling switched off and on again, no
Prometheus, passes between decisions, settings the scaler refuses, the pacing clock, and the
Scaled Events (fake metrics reader, as in test_scaling_planner.py)."""

from __future__ import annotations

import time
from typing import Any

from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus
from modelpool.controllers.pool_reconciler import hold_or_minimum
from modelpool.controllers.pool_status import ReplicaPlan
from modelpool.controllers.scaling_planner import (
    GpuPoolMember,
    ScalingOutcome,
    ScalingPlanner,
    gpu_pool_member,
    memory_from_state,
    state_from_memory,
)
from modelpool.scaling.types import VariantMetrics, VariantState
from unit.operator.test_scaling_planner import FakeReader, _metrics, _spec

NOW = 1_000_000.0
ONE_EACH = {"small": 1, "large": 1}


def _planner(reader: FakeReader) -> ScalingPlanner:
    """A planner whose every reader is ``reader`` (also after a pool released its own)."""
    planner = ScalingPlanner(default_prometheus_url=None)
    planner.reader = lambda *_a, **_k: reader  # type: ignore[method-assign,assignment,return-value]
    return planner


def _replicas(outcome: ScalingOutcome) -> dict[str, int]:
    return {name: plan.replicas for name, plan in outcome.plans.items()}


def _all_min_zero(**scaling: Any) -> ModelPoolSpec:
    """Every variant at minReplicas 0 (the API server's rule: one of them is not scaleToZero)."""
    wire = _spec(**scaling).to_wire()
    for variant in wire["variants"]:
        variant["minReplicas"] = 0
    wire["variants"][1]["scaling"]["scaleToZero"] = True  # small
    return ModelPoolSpec.model_validate(wire)


async def test_every_path_keeps_the_last_tier_serving_when_all_minimums_are_zero() -> None:
    """decide() keeps the last tier at 1; scaling switched off, no Prometheus, and the passes
    before a first decision set every variant to 0: the pool served nothing."""
    planner = _planner(FakeReader({}))
    disabled = await planner.plan(
        "ns", "p", _all_min_zero(enabled=False), None, {}, hold_or_minimum(_all_min_zero(), None), now=NOW
    )
    assert _replicas(disabled) == {"small": 0, "large": 1}
    assert (
        disabled.plans["large"].reason == "scaling disabled: minReplicas; kept at 1 as the last tier serving"
    )
    no_url = _all_min_zero(prometheusURL=None)
    unconfigured = await planner.plan("ns", "p", no_url, None, {}, hold_or_minimum(no_url, None), now=NOW)
    assert _replicas(unconfigured) == {"small": 0, "large": 1}
    assert unconfigured.metrics is not None and unconfigured.metrics.reason == "PrometheusNotConfigured"


async def test_a_pass_between_decisions_keeps_the_last_tier_serving() -> None:
    """Between decisions a pass applies the stored decision: here one with every tier at 0 (written
    by hand, or by an operator before the rule), newer than the planner's own."""
    reader = FakeReader({"m-small": _metrics(0.0, NOW), "m-large": _metrics(0.0, NOW)})
    planner = _planner(reader)
    spec = _all_min_zero()
    decided = await planner.plan("ns", "p", spec, None, ONE_EACH, hold_or_minimum(spec, None), now=NOW)
    assert _replicas(decided) == {"small": 0, "large": 1}  # decide()'s rule
    stored = ModelPoolStatus.model_validate(
        {
            "variants": [
                {"name": n, "tier": n, "desiredReplicas": 0, "scaler": {"decidedAt": NOW + 1}}
                for n in ("small", "large")
            ]
        }
    )
    zero = {"small": 0, "large": 0}
    between = await planner.plan("ns", "p", spec, stored, zero, hold_or_minimum(spec, stored), now=NOW + 2)
    assert between.metrics is None  # no decision due
    assert _replicas(between) == {"small": 0, "large": 1}


def test_the_index_counts_the_last_tier_a_pool_of_zero_minimums_keeps() -> None:
    """Other pools on a shared GPU pool count this one at its minimums until its first status."""
    wire = _all_min_zero().to_wire()
    wire["gpuPool"]["name"] = "a100"
    wire["variants"][0]["gpusPerReplica"] = 2  # large, the last tier
    assert gpu_pool_member("ns", "p", wire, {}) == {"a100": GpuPoolMember("ns/p", 8, 2, 2)}
    status = {"variants": [{"name": "small", "desiredReplicas": 3}, {"name": "large", "desiredReplicas": 1}]}
    assert gpu_pool_member("ns", "p", wire, status) == {"a100": GpuPoolMember("ns/p", 8, 3 + 2, 2)}


async def test_scaling_switched_off_and_on_again_starts_afresh() -> None:
    """Switched off, the planner dropped the pool's grants and latest plans but kept the scaler's
    memory and the time of its last decision: switched on again with Prometheus down, the hold
    restored a decision a day old (6 replicas) where a new operator keeps what runs (1)."""
    now = [NOW]
    busy = FakeReader({"m-small": _metrics(80.0, now[0]), "m-large": _metrics(1.0, now[0])})
    planner = _planner(busy)
    decided = await planner.plan(
        "ns", "p", _spec(), None, ONE_EACH, hold_or_minimum(_spec(), None), now=now[0]
    )
    assert decided.plans["small"].replicas == 6
    now[0] += 20
    off = _spec(enabled=False)
    disabled = await planner.plan(
        "ns", "p", off, None, {"small": 6, "large": 1}, hold_or_minimum(off, None), now=now[0]
    )
    assert _replicas(disabled) == ONE_EACH
    now[0] += 86_400
    down = VariantMetrics(problem="metrics missing: Prometheus unreachable")
    busy.by_model = {"m-small": down, "m-large": down}
    minimums = {"small": ReplicaPlan(1, "min"), "large": ReplicaPlan(1, "min")}
    again = await planner.plan("ns", "p", _spec(), None, ONE_EACH, minimums, now=now[0])
    fresh = await _planner(busy).plan("ns", "p", _spec(), None, ONE_EACH, minimums, now=now[0])
    assert _replicas(again) == _replicas(fresh) == ONE_EACH
    assert again.plans["small"].reason.startswith("holding 1 replicas: metrics missing")


async def test_a_wall_clock_stepped_back_does_not_stop_the_decisions() -> None:
    """The pacing used the wall clock: stepped back an hour (NTP), every pass held for the hour
    while the load rose. The caller here drives one clock (``now``): a time before the last decision
    counts as due."""
    now = [NOW]
    reader = FakeReader({"m-small": _metrics(10.0, now[0]), "m-large": _metrics(1.0, now[0])})
    planner = _planner(reader)
    first = await planner.plan("ns", "p", _spec(), None, ONE_EACH, hold_or_minimum(_spec(), None), now=now[0])
    assert first.plans["small"].replicas == 1
    now[0] -= 3600
    reader.by_model = {"m-small": _metrics(50.0, now[0]), "m-large": _metrics(1.0, now[0])}
    stepped = await planner.plan(
        "ns", "p", _spec(), None, ONE_EACH, hold_or_minimum(_spec(), None), now=now[0]
    )
    assert stepped.metrics is not None and stepped.metrics.ok  # decided
    assert stepped.plans["small"].replicas == 6
    assert stepped.next_decision_in == 10


async def test_decisions_are_paced_on_the_monotonic_clock() -> None:
    """In the operator (no ``now`` given) the wall clock dates the decision (metrics, stored memory)
    and the monotonic clock paces it."""
    ticks = [500.0]
    wall = time.time()
    reader = FakeReader({"m-small": _metrics(45.0, wall), "m-large": _metrics(1.0, wall)})
    planner = _planner(reader)
    planner.monotonic = lambda: ticks[0]
    held = hold_or_minimum(_spec(), None)
    first = await planner.plan("ns", "p", _spec(), None, ONE_EACH, held)
    assert first.metrics is not None
    memory = first.plans["small"].memory
    assert memory is not None and abs(memory.decided_at - wall) < 60  # Unix seconds, not the tick
    ticks[0] += 3
    between = await planner.plan("ns", "p", _spec(), None, ONE_EACH, held)
    assert between.metrics is None and between.next_decision_in == 7
    ticks[0] += 7
    assert (await planner.plan("ns", "p", _spec(), None, ONE_EACH, held)).metrics is not None


def _refused_spec() -> ModelPoolSpec:
    """tolerancePercent 100, as the CRD accepted before (the API model no longer does: built
    without validation, like any value the scaler may refuse)."""
    spec = _spec()
    small = spec.variants[1]
    scaling = small.scaling.model_copy(update={"tolerance_percent": 100})
    return spec.model_copy(
        update={"variants": [spec.variants[0], small.model_copy(update={"scaling": scaling})]}
    )


async def test_settings_the_scaler_refuses_hold_the_replicas_and_say_which_field() -> None:
    """A SettingsError escaped plan(): every pass of the pool failed, its children stopped converging."""
    reader = FakeReader({"m-small": _metrics(80.0, NOW), "m-large": _metrics(1.0, NOW)})
    planner = _planner(reader)
    decided = await planner.plan("ns", "p", _spec(), None, ONE_EACH, hold_or_minimum(_spec(), None), now=NOW)
    assert decided.plans["small"].replicas == 6
    calls = reader.calls
    refused = await planner.plan(
        "ns",
        "p",
        _refused_spec(),
        None,
        {"small": 6, "large": 1},
        hold_or_minimum(_spec(), None),
        now=NOW + 20,
    )
    assert _replicas(refused) == {"small": 6, "large": 1}  # the latest decision holds
    assert refused.metrics is not None and not refused.metrics.ok
    assert refused.metrics.reason == "InvalidSettings"
    assert "variant 'small': tolerancePercent=100 must be in [0, 100)" in refused.metrics.message
    assert "replicas hold their last decision until it is fixed" in refused.metrics.message
    assert reader.calls == calls  # nothing read for a decision that cannot be made
    held = hold_or_minimum(_spec(), None)
    fixed = await planner.plan("ns", "p", _spec(), None, {"small": 6, "large": 1}, held, now=NOW + 21)
    assert fixed.metrics is not None and fixed.metrics.ok  # due at once once fixed


async def test_a_scaled_event_only_when_the_decision_changes() -> None:
    """The Deployment does not reach the decision (current stays 1): each decision, and each hold
    above the current count, emitted another "Scaled small 1->N" Event."""
    wire = _spec().to_wire()
    wire["variants"][1]["scaling"]["burstReserve"] = False  # the same load wishes the same replicas
    spec = ModelPoolSpec.model_validate(wire)
    reader = FakeReader({})
    planner = _planner(reader)
    held = hold_or_minimum(spec, None)
    lines = []
    for step, (rps, problem) in enumerate([(15.0, None), (15.0, None), (15.0, "down"), (50.0, None)]):
        t = NOW + 10 * step
        small = _metrics(rps, t) if problem is None else VariantMetrics(problem=f"metrics missing: {problem}")
        reader.by_model = {"m-small": small, "m-large": _metrics(1.0, t)}
        outcome = await planner.plan("ns", "p", spec, None, ONE_EACH, held, now=t)
        assert outcome.metrics is not None
        lines.append([line.split(":")[0] for line in outcome.scaled])
    assert lines == [["small 1->5"], [], [], ["small 1->6"]]


def test_the_measured_capacity_survives_a_restart_in_the_status() -> None:
    state = VariantState(replicas=0, decided_at=NOW, capacity_rps=12.5)
    stored = {"name": "small", "tier": "small", "scaler": memory_from_state(state).to_wire()}
    memory = ModelPoolStatus.model_validate({"variants": [stored]}).variants[0].scaler
    assert stored["scaler"]["capacityPerReplicaRps"] == 12.5
    assert memory is not None and state_from_memory(memory, 0).capacity_rps == 12.5
    unmeasured = memory_from_state(VariantState(replicas=1, decided_at=NOW))
    assert state_from_memory(unmeasured, 1).capacity_rps is None


def _small_to_zero() -> ModelPoolSpec:
    """The small tier with scaleToZero and the default minReplicas 1."""
    wire = _spec().to_wire()
    wire["variants"][1]["scaling"]["scaleToZero"] = True  # small
    return ModelPoolSpec.model_validate(wire)


def _stored(outcome: ScalingOutcome) -> ModelPoolStatus:
    """The status a decision pass writes: each variant's desired replicas, reason and memory."""
    return ModelPoolStatus.model_validate(
        {
            "variants": [
                {
                    "name": name,
                    "tier": name,
                    "desiredReplicas": plan.replicas,
                    "reason": plan.reason,
                    "scaler": plan.memory.to_wire() if plan.memory else None,
                }
                for name, plan in outcome.plans.items()
            ]
        }
    )


async def test_an_idle_scale_to_zero_tier_stays_at_zero_between_decisions() -> None:
    """A decision scales the idle small tier (scaleToZero, minReplicas 1) to 0; the passes between
    decisions clamped the held plan to [minReplicas, maxReplicas] and put it back at 1, from the
    stored status as from the planner's own latest decision: 0 -> 1 -> 0 at every decision."""
    spec = _small_to_zero()
    reader = FakeReader({"m-small": _metrics(0.0, NOW), "m-large": _metrics(5.0, NOW)})
    planner = _planner(reader)
    decided = await planner.plan("ns", "p", spec, None, ONE_EACH, hold_or_minimum(spec, None), now=NOW)
    assert decided.plans["small"].replicas == 0, decided.plans["small"].reason
    stored = _stored(decided)
    scaled = {"small": 0, "large": 1}
    between = await planner.plan("ns", "p", spec, stored, scaled, hold_or_minimum(spec, stored), now=NOW + 1)
    assert between.metrics is None  # no decision due
    assert _replicas(between) == {"small": 0, "large": 1}, between.plans["small"].reason
    unwritten = await planner.plan("ns", "p", spec, None, scaled, hold_or_minimum(spec, None), now=NOW + 2)
    assert unwritten.metrics is None  # the status write failed: the planner's own decision holds
    assert _replicas(unwritten) == {"small": 0, "large": 1}, unwritten.plans["small"].reason
    # A decision above 0 is still clamped up to a minReplicas the spec raised since.
    raised = _spec().to_wire()
    raised["variants"][1]["scaling"]["scaleToZero"] = True
    raised["variants"][1]["minReplicas"] = 2
    one = stored.model_copy(
        update={"variants": [v.model_copy(update={"desired_replicas": 1}) for v in stored.variants]}
    )
    assert hold_or_minimum(ModelPoolSpec.model_validate(raised), stored)["small"].replicas == 0
    assert hold_or_minimum(ModelPoolSpec.model_validate(raised), one)["small"].replicas == 2


async def test_a_scale_to_zero_tier_is_reported_scaled_once() -> None:
    """With the pass between decisions back at 1, the next decision scaled 1 -> 0 again and
    posted another Scaled Event, at every decision while the tier was idle."""
    spec = _small_to_zero()
    reader = FakeReader({"m-small": _metrics(0.0, NOW), "m-large": _metrics(5.0, NOW)})
    planner = _planner(reader)
    decided = await planner.plan("ns", "p", spec, None, ONE_EACH, hold_or_minimum(spec, None), now=NOW)
    assert [line.split(":")[0] for line in decided.scaled] == ["small 1->0"]
    reader.by_model = {"m-small": _metrics(0.0, NOW + 10), "m-large": _metrics(5.0, NOW + 10)}
    again = await planner.plan("ns", "p", spec, None, ONE_EACH, hold_or_minimum(spec, None), now=NOW + 10)
    assert again.plans["small"].replicas == 0
    assert again.scaled == []
