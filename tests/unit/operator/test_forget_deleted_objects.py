"""An operator that runs for long while pools and policies come and go keeps nothing of the gone
ones: no wake-up flag, no Prometheus reader, no per-GPU-pool map (found by a soak on the real
cluster: each of these grew by one per deleted object or per configuration ever seen)."""

from __future__ import annotations

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.handlers import _reconcile_loop
from modelpool.controllers.pool_status import ReplicaPlan
from modelpool.controllers.scaling_planner import ScalingPlanner
from modelpool.controllers.triggers import Triggers
from modelpool.scaling.types import VariantMetrics


class _Stopped:
    set = False

    def __bool__(self) -> bool:
        return self.set


class _Logger:
    def info(self, *args: object) -> None: ...
    def warning(self, *args: object) -> None: ...
    def exception(self, *args: object) -> None: ...
    def log(self, *args: object) -> None: ...


async def test_watch_events_after_an_objects_loop_ended_leave_no_flag_behind() -> None:
    """The loop of a deleted pool ends (its pass finds the pool gone); the watch events of its
    children that the garbage collector deletes afterwards still poke the pool's name."""
    triggers = Triggers()
    stopped = _Stopped()

    async def gone(_emit: object) -> float | None:
        stopped.set = True  # kopf stops the daemon of the deleted pool
        return None

    await _reconcile_loop(triggers, "ns", "pool", {}, _Logger(), stopped, gone)  # type: ignore[arg-type]
    triggers.poke("ns", "pool")  # the Deployment's DELETED event
    triggers.poke("ns", "never-had-a-loop")
    assert triggers._events == {}


async def test_a_poke_still_wakes_a_running_loop_and_an_old_loop_leaves_a_new_ones_flag() -> None:
    triggers = Triggers()
    old = triggers.get("ns", "pool")
    triggers.forget("ns", "pool", old)
    new = triggers.get("ns", "pool")  # a loop started since, for an object of the same name
    triggers.forget("ns", "pool", old)  # the old loop ending late
    triggers.poke("ns", "pool")
    assert new.is_set()
    assert await triggers.wait(new, stopped_flag=_Stopped(), seconds=0.1)
    triggers.forget("ns", "pool", new)
    assert triggers._events == {}


def _spec(url: str, gpu_pool: str | None = None, enabled: bool = True) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 8, **({"name": gpu_pool} if gpu_pool else {})},
            "scaling": {"enabled": enabled, "intervalSeconds": 1, "prometheusURL": url},
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "m", "repository": "/m"},
                    "gpusPerReplica": 1,
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "scaling": {"capacityPerReplicaRps": 10},
                }
            ],
        }
    )


async def _plan(planner: ScalingPlanner, ns: str, name: str, spec: ModelPoolSpec, now: float) -> None:
    async def no_metrics(*_: object, **__: object) -> VariantMetrics:
        return VariantMetrics(problem="no data")

    reader = planner.reader(spec.scaling.prometheus_url or "", spec)
    reader.read_variant = no_metrics  # type: ignore[method-assign]
    await planner.plan(ns, name, spec, None, {"small": 1}, {"small": ReplicaPlan(1, "held")}, now=now)


async def test_pools_that_come_and_go_leave_no_readers_or_gpu_pool_maps_behind() -> None:
    planner = ScalingPlanner(default_prometheus_url=None)
    try:
        for i in range(20):  # each pool with its own Prometheus and its own GPU pool, then deleted
            spec = _spec(f"http://127.0.0.1:{20000 + i}", gpu_pool=f"gpus-{i}")
            await _plan(planner, f"ns-{i}", "pool", spec, 1000.0 + i)
            assert len(planner._readers) == 1
            assert planner._claims and planner._granted
            planner.forget(f"ns-{i}", "pool")
        assert planner._readers == {}
        assert planner._claims == {} and planner._granted == {}
    finally:
        await planner.close()


async def test_a_reader_another_pool_uses_is_kept_and_a_changed_url_drops_the_old_one() -> None:
    planner = ScalingPlanner(default_prometheus_url=None)
    try:
        shared = _spec("http://127.0.0.1:9090", gpu_pool="gpus")
        await _plan(planner, "a", "one", shared, 1000.0)
        await _plan(planner, "b", "two", shared, 1000.0)
        planner.forget("a", "one")
        assert len(planner._readers) == 1  # b/two still reads with it
        assert list(planner._claims) == ["gpus"]
        await _plan(planner, "b", "two", _spec("http://127.0.0.1:9091", gpu_pool="gpus"), 1010.0)
        assert [key[0] for key in planner._readers] == ["http://127.0.0.1:9091"]
        await _plan(planner, "b", "two", _spec("http://127.0.0.1:9091", enabled=False), 1020.0)
        assert planner._readers == {}  # it no longer decides
        assert planner._claims == {} and planner._granted == {}  # nor claims beyond its minimums
    finally:
        await planner.close()


def test_nothing_is_kept_for_a_pool_never_planned() -> None:
    planner = ScalingPlanner(default_prometheus_url=None)
    planner.forget("ns", "never")
    assert (planner._readers, planner._claims, planner._granted) == ({}, {}, {})
