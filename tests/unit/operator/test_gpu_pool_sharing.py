"""Who shares a named GPU pool (``spec.gpuPool.name``): by default only the pools of one namespace.

Before, any ModelPool in any watched namespace joined a GPU pool by its name: the shared budget is
the smallest any member declares and every member's minimums are kept, so a tenant naming another
tenant's GPU pool with ``gpuBudget: 0`` (or huge minimums) zeroed or starved it, and the status
reasons named other tenants' ``namespace/pool``. Pools of several namespaces share one only where
the operator runs with ``--gpu-pool-sharing=cluster`` (chart ``gpuPoolSharing: cluster``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from modelpool import cli
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.scaling_planner import (
    GPU_POOL_SHARING_ENV,
    GpuPoolMember,
    ScalingPlanner,
    gpu_pool_member,
    gpu_pool_sharing_from_env,
)
from modelpool.startup import Readiness, config_problems
from unit.operator.test_scaling_planner import HELD, FakeReader, _metrics, _planner, _spec

Obj = dict[str, Any]


def _variant(name: str, **extra: Any) -> Obj:
    return {"name": name, "tier": "small", "model": {"name": "m", "repository": "/m"}, **extra}


VICTIM: Obj = {"gpuPool": {"name": "shared", "gpuBudget": 64}, "variants": [_variant("small", minReplicas=1)]}
ATTACKER: Obj = {
    "gpuPool": {"name": "shared", "gpuBudget": 0},
    "variants": [_variant("x", minReplicas=1000, maxReplicas=1000, gpusPerReplica=16)],
}


def _member(namespace: str, name: str, spec: Obj) -> GpuPoolMember:
    entry = gpu_pool_member(namespace, name, spec, {})
    assert entry is not None
    return entry["shared"]


def _index(*members: GpuPoolMember) -> Any:
    return lambda gpu_pool: list(members) if gpu_pool == "shared" else []


def test_pools_of_two_namespaces_with_the_same_gpu_pool_name_do_not_share_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(GPU_POOL_SHARING_ENV, raising=False)
    planner = ScalingPlanner(
        members=_index(_member("team-a", "prod", VICTIM), _member("team-b", "evil", ATTACKER))
    )
    assert planner.gpu_pool_sharing == "namespace"
    shared = planner.shared_gpu_pool("team-a", "prod", ModelPoolSpec.model_validate(VICTIM))
    assert shared is not None
    assert (shared.budget, shared.others_min_gpus) == (64, 0)  # team-b's budget and minimums: not counted


def test_pools_of_one_namespace_share_a_gpu_pool_by_default() -> None:
    planner = ScalingPlanner(
        members=_index(_member("team-a", "prod", VICTIM), _member("team-a", "batch", ATTACKER)),
        gpu_pool_sharing="namespace",
    )
    shared = planner.shared_gpu_pool("team-a", "prod", ModelPoolSpec.model_validate(VICTIM))
    assert shared is not None
    assert (shared.budget, shared.others_min_gpus) == (0, 1000 * 16)


def test_with_cluster_sharing_pools_of_every_namespace_share_as_before() -> None:
    planner = ScalingPlanner(
        members=_index(_member("team-a", "prod", VICTIM), _member("team-b", "evil", ATTACKER)),
        gpu_pool_sharing="cluster",
    )
    shared = planner.shared_gpu_pool("team-a", "prod", ModelPoolSpec.model_validate(VICTIM))
    assert shared is not None
    assert (shared.budget, shared.others_min_gpus) == (0, 1000 * 16)


async def test_a_decision_neither_counts_nor_names_other_namespaces_pools() -> None:
    """Another namespace's pool on a GPU pool of the same name holds 6 of the 8 GPUs: by default the
    pool neither waits for them nor names that pool in its reasons or its MetricsAvailable report."""
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(80.0, now), "m-large": _metrics(40.0, now)})
    wire = _spec().to_wire()
    wire["gpuPool"]["name"] = "shared"
    spec = ModelPoolSpec.model_validate(wire)
    holders = [GpuPoolMember("team-b/holder", 8, 6, 6), GpuPoolMember("team-c/other", 0, 0, 0)]

    planner = _planner(reader)
    planner.gpu_pool_sharing = "namespace"
    planner.members = _index(*holders)
    outcome = await planner.plan("ns", "p", spec, None, {"small": 1, "large": 1}, HELD, now=now)
    assert outcome.metrics is not None
    text = " ".join([p.reason for p in outcome.plans.values()] + [outcome.metrics.message])
    assert "team-b" not in text and "team-c" not in text, text
    assert "no other pool" in text, text
    gpus = {v.name: v.gpus_per_replica for v in spec.variants}
    assert sum(p.replicas * gpus[n] for n, p in outcome.plans.items()) > 8 - 6  # the 8 GPUs are its own

    shared = _planner(reader)
    shared.gpu_pool_sharing = "cluster"
    shared.members = _index(*holders)
    outcome = await shared.plan("ns", "p", spec, None, {"small": 1, "large": 1}, HELD, now=now)
    assert outcome.metrics is not None and "team-b/holder" in outcome.metrics.message
    assert all(p.replicas == 1 for p in outcome.plans.values())  # budget 0 from team-c: minimums only


def test_the_setting_comes_from_the_environment_and_defaults_to_namespace() -> None:
    assert gpu_pool_sharing_from_env({}) == "namespace"
    assert gpu_pool_sharing_from_env({GPU_POOL_SHARING_ENV: "cluster"}) == "cluster"
    assert gpu_pool_sharing_from_env({GPU_POOL_SHARING_ENV: "namespace"}) == "namespace"
    assert gpu_pool_sharing_from_env({GPU_POOL_SHARING_ENV: "Cluster "}) == "namespace"  # refused at start
    assert ScalingPlanner(gpu_pool_sharing="cluster").gpu_pool_sharing == "cluster"


def _problems(*argv: str, **env: str) -> list[str]:
    return config_problems(cli.build_parser().parse_args(["operator", "run", *argv]), env)


def test_the_flag_takes_namespace_or_cluster_and_a_bad_variable_is_named() -> None:
    assert _problems("--gpu-pool-sharing", "cluster") == []
    assert _problems("--gpu-pool-sharing=namespace") == []
    assert _problems(**{GPU_POOL_SHARING_ENV: "cluster"}) == []
    with pytest.raises(SystemExit):
        _problems("--gpu-pool-sharing", "everyone")
    (problem,) = _problems(**{GPU_POOL_SHARING_ENV: "everyone"})
    assert (
        f"${GPU_POOL_SHARING_ENV}='everyone'" in problem and "namespace" in problem and "cluster" in problem
    )
    # the flag wins over the variable, as --prometheus-url does
    assert _problems("--gpu-pool-sharing=cluster", **{GPU_POOL_SHARING_ENV: "everyone"}) == []


def test_the_flag_reaches_the_planner_kopf_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    monkeypatch.setattr(kopf, "run", lambda **_: None)
    monkeypatch.setattr(cli, "use_kopf_logging", lambda verbose: None)
    monkeypatch.setitem(sys.modules, "modelpool.controllers.handlers", types.ModuleType("handlers"))
    # _run_kopf sets the variable: set here first, so that it is unset again after the test
    monkeypatch.setenv(GPU_POOL_SHARING_ENV, "namespace")
    monkeypatch.delenv(GPU_POOL_SHARING_ENV)
    args = cli.build_parser().parse_args(["operator", "run"])
    cli._run_kopf(args, None, Readiness(None, "nothing"))  # type: ignore[arg-type]
    assert ScalingPlanner().gpu_pool_sharing == "namespace"
    args = cli.build_parser().parse_args(["operator", "run", "--gpu-pool-sharing", "cluster"])
    cli._run_kopf(args, None, Readiness(None, "nothing"))  # type: ignore[arg-type]
    assert ScalingPlanner().gpu_pool_sharing == "cluster"
