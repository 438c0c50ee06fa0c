"""Spreading a variant's replicas over nodes and zones, on the real control plane: the API server
checks spec.topologySpread, the operator puts the constraints on the variant's pods, and the real
kube-scheduler places them on kwok GPU nodes of the test's own.

The nodes are made so that the scheduler alone would pack: a roomy node (1024 CPUs) and a tight
one whose CPU and memory one or two replicas fill. The scheduler's default scoring prefers the
node with the most free CPU and memory, and its built-in spreading (maxSkew 3 per node, 5 per
zone, soft) is weaker than that preference, so without the operator's constraints the replicas
pile onto the roomy node. Each test asserts the replicas per node."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from integration.cluster.kubetools import Kube, wait_for
from modelpool.devcluster.cluster import fake_gpu_node

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
SPREAD_REFUSED = "didn't match pod topology spread constraints"


def _variant(replicas: int, **extra: Any) -> Obj:
    return {
        "name": "small",
        "tier": "small",
        "model": {"name": "small", "repository": "/models"},
        "gpusPerReplica": 1,
        # CPU and memory in the tight nodes' proportion (1 CPU : 4Gi), so that the scheduler's
        # balanced-allocation score is the same on every node and only free room tells them apart.
        "resources": {"cpu": "8", "memory": "32Gi"},
        "minReplicas": replicas,
        "maxReplicas": replicas,
        **extra,
    }


def _pool(kube: Kube, name: str, variant: Obj, **spec: Any) -> Obj:
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": name},
        "spec": {
            "gpuPool": {"gpuBudget": 16, "nodeSelector": {"test-pool": kube.namespace}},
            "variants": [variant],
            "scaling": {"enabled": False},
            **spec,
        },
    }


def _node(kube: Kube, suffix: str, *, cpu: int, zone: str, labels: dict[str, str] | None = None) -> Obj:
    node = fake_gpu_node(f"{kube.namespace}-{suffix}", 8, zone=zone, labels={"test-pool": kube.namespace})
    for amounts in (node["status"]["capacity"], node["status"]["allocatable"]):
        amounts.update({"cpu": str(cpu), "memory": f"{cpu * 4}Gi"})
    for key, value in (labels or {}).items():
        if value:
            node["metadata"]["labels"][key] = value
        else:
            del node["metadata"]["labels"][key]
    return node


@pytest.fixture
def nodes(kube: Kube) -> Iterator[list[Obj]]:
    """Nodes of the test's own (only its pools select them); the test adds them, they go after."""
    added: list[Obj] = []
    yield added
    for node in added:
        kube.cluster.kubectl("delete", "node", node["metadata"]["name"], "--wait=false", check=False)


def _add_nodes(kube: Kube, nodes: list[Obj], *new: Obj) -> list[str]:
    nodes.extend(new)
    kube.cluster.kubectl(
        "apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(new)})
    )
    names = [n["metadata"]["name"] for n in new]

    def ready() -> bool:
        for name in names:
            obj = json.loads(kube.cluster.kubectl("get", "node", name, "-o", "json").stdout)
            conds = obj.get("status", {}).get("conditions", [])
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                return False
        return True

    wait_for(ready, 60, f"kwok to mark {names} Ready")
    return names


def _pods(kube: Kube, pool: str) -> list[Obj]:
    return [
        p
        for p in kube.list("pods", f"modelpool.dev/pool={pool}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def _placed(kube: Kube, pool: str, scheduled: int, pending: int = 0) -> Counter[str] | None:
    """Replicas per node once ``scheduled`` of the pool's pods are bound and ``pending`` are not."""
    pods = _pods(kube, pool)
    bound = Counter(p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName"))
    waiting = [p for p in pods if not p["spec"].get("nodeName")]
    return bound if (sum(bound.values()), len(waiting)) == (scheduled, pending) else None


# --- the API server's checks ----------------------------------------------------------------------

REFUSED = [
    ({"topologyKeys": []}, "spec.topologySpread.topologyKeys", "set enabled: false instead"),
    ({"topologyKeys": [HOSTNAME, HOSTNAME]}, "spec.topologySpread.topologyKeys", "list each key once"),
    ({"topologyKeys": ["bad key"]}, "spec.topologySpread.topologyKeys[0]", "must be a node label key"),
    ({"whenUnsatisfiable": "Never"}, "spec.topologySpread.whenUnsatisfiable", '"DoNotSchedule"'),
    ({"maxSkew": 0}, "spec.topologySpread.maxSkew", "should be greater than or equal to 1"),
]


@pytest.mark.parametrize(("spread", "field", "says"), REFUSED, ids=[str(c[0]) for c in REFUSED])
def test_bad_spreading_is_refused_naming_the_field_and_the_fix(
    kube: Kube, spread: Obj, field: str, says: str
) -> None:
    for manifest, where in (
        (_pool(kube, "refused", _variant(1), topologySpread=spread), field),
        (
            _pool(kube, "refused", _variant(1, topologySpread=spread)),
            field.replace("spec.", "spec.variants[0].", 1),
        ),
    ):
        proc = kube.run("apply", "--dry-run=server", "-f", "-", input_text=json.dumps(manifest), check=False)
        assert proc.returncode != 0, f"{spread}: the API server accepted it"
        assert where in proc.stderr and says in proc.stderr, proc.stderr


# --- the real scheduler ---------------------------------------------------------------------------


def test_the_soft_default_spreads_replicas_the_scheduler_alone_would_pack(
    kube: Kube, nodes: list[Obj]
) -> None:
    """Two replicas, no spreading configured: the default (soft, maxSkew 1, per node)
    puts one on each node. The scheduler's own scoring alone puts both on the roomy node, whose
    free CPU and memory outweigh its built-in spreading (that is what this test sees without the
    operator's constraints: Counter({'<ns>-roomy': 2}))."""
    roomy, tight = _add_nodes(
        kube,
        nodes,
        _node(kube, "roomy", cpu=1024, zone="zone-a"),
        _node(kube, "tight", cpu=8, zone="zone-b"),
    )
    kube.apply(_pool(kube, "soft", _variant(2)))
    placed = wait_for(lambda: _placed(kube, "soft", 2), 60, "both replicas scheduled")
    assert placed == Counter({roomy: 1, tight: 1}), placed

    dep = wait_for(lambda: kube.get("deployment", "soft-small"), 10, "the Deployment")
    constraints = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"], c["maxSkew"]) for c in constraints] == [
        (HOSTNAME, "ScheduleAnyway", 1),
    ]
    # On the pods, the API server has merged matchLabelKeys into the selector (v1.34+): each
    # constraint counts only the pods of the same ReplicaSet (the current rollout).
    pod = _pods(kube, "soft")[0]
    selector = pod["spec"]["topologySpreadConstraints"][0]["labelSelector"]
    assert {
        "key": "pod-template-hash",
        "operator": "In",
        "values": [pod["metadata"]["labels"]["pod-template-hash"]],
    } in selector.get("matchExpressions", []), selector

    # Turned off, the constraints leave the Deployment (a new rollout without them).
    kube.apply(_pool(kube, "soft", _variant(2), topologySpread={"enabled": False}))
    wait_for(
        lambda: (
            "topologySpreadConstraints"
            not in (kube.get("deployment", "soft-small") or {})["spec"]["template"]["spec"]
        ),
        30,
        "the constraints removed from the Deployment",
    )


def test_hard_spreading_leaves_a_replica_pending_rather_than_pack(kube: Kube, nodes: list[Obj]) -> None:
    """DoNotSchedule over nodes only, six replicas, one zone: the tight node holds two, so the
    roomy node may hold three (maxSkew 1) and the sixth replica stays Pending, which the pool
    reports. Soft spreading (ScheduleAnyway) there runs all six, four of them on the roomy node
    (seen on this cluster), and an operator whose constraints were ignored would too."""
    roomy, tight = _add_nodes(
        kube,
        nodes,
        _node(kube, "roomy", cpu=1024, zone="zone-a"),
        _node(kube, "tight", cpu=16, zone="zone-a"),
    )
    spread = {"whenUnsatisfiable": "DoNotSchedule", "topologyKeys": [HOSTNAME]}
    kube.apply(_pool(kube, "hard", _variant(6), topologySpread=spread))
    placed = wait_for(lambda: _placed(kube, "hard", 5, pending=1), 60, "five replicas scheduled, one not")
    assert placed == Counter({roomy: 3, tight: 2}), placed
    time.sleep(3)  # the scheduler retries the pending one: it stays
    assert _placed(kube, "hard", 5, pending=1) == placed
    (waiting,) = [p for p in _pods(kube, "hard") if not p["spec"].get("nodeName")]
    (scheduled,) = [c for c in waiting["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled["status"] == "False" and SPREAD_REFUSED in scheduled["message"], scheduled

    degraded = wait_for(
        lambda: (d := kube.condition("modelpool", "hard", "Degraded")) and d["status"] == "True" and d,
        60,
        "Degraded=True",
    )
    assert degraded["reason"] == "PodsUnschedulable" and SPREAD_REFUSED in degraded["message"], degraded
    assert "set spec.topologySpread.whenUnsatisfiable to ScheduleAnyway" in degraded["message"], degraded
    fits = kube.condition("modelpool", "hard", "GPUBudgetFits")
    assert fits is not None and fits["status"] == "True", fits  # the spread blocks it, not the GPUs


def test_hard_spreading_lets_a_drain_move_the_evicted_replica(kube: Kube, nodes: list[Obj]) -> None:
    """Hard spreading over two nodes, one replica on each. The first node is drained: cordoned,
    its replica deleted. The replacement goes to the other node at once: the cordoned node's
    unschedulable taint, which the pods do not tolerate, leaves it out of the count
    (nodeTaintsPolicy: Honor). Counted as an empty domain, it would keep the replacement Pending
    (skew 2) until the node came back."""
    first, second = _add_nodes(
        kube,
        nodes,
        _node(kube, "first", cpu=64, zone="zone-a"),
        _node(kube, "second", cpu=64, zone="zone-a"),
    )
    spread = {"whenUnsatisfiable": "DoNotSchedule", "topologyKeys": [HOSTNAME]}
    kube.apply(_pool(kube, "drain", _variant(2), topologySpread=spread))
    placed = wait_for(lambda: _placed(kube, "drain", 2), 60, "both replicas scheduled")
    assert placed == Counter({first: 1, second: 1}), placed

    kube.cluster.kubectl("cordon", first)
    wait_for(
        lambda: any(
            t["key"] == "node.kubernetes.io/unschedulable"
            for t in (json.loads(kube.cluster.kubectl("get", "node", first, "-o", "json").stdout))[
                "spec"
            ].get("taints", [])
        ),
        30,
        "the cordoned node's unschedulable taint",
    )
    (evicted,) = [p["metadata"]["name"] for p in _pods(kube, "drain") if p["spec"]["nodeName"] == first]
    kube.run("delete", "pod", evicted, "--wait=false")
    placed = wait_for(
        lambda: (
            (c := _placed(kube, "drain", 2))
            and evicted not in {p["metadata"]["name"] for p in _pods(kube, "drain")}
            and c
        ),
        60,
        "the replacement scheduled",
    )
    assert placed == Counter({second: 2}), placed


def test_on_nodes_without_a_zone_label_the_default_spreads_and_a_zone_key_would_not(
    kube: Kube, nodes: list[Obj]
) -> None:
    """Nodes without topology.kubernetes.io/zone (kind, k3d, many bare-metal clusters). The
    scheduler scores no node that lacks one of a pod's soft topology keys, so with keys hostname and
    zone nothing is spread and both replicas go where the most CPU is free; with the default key
    (hostname only) they spread. That is why zones are not in the default."""
    no_zone = {ZONE: ""}
    roomy, tight = _add_nodes(
        kube,
        nodes,
        _node(kube, "roomy", cpu=1024, zone="", labels=no_zone),
        _node(kube, "tight", cpu=16, zone="", labels=no_zone),
    )
    kube.apply(_pool(kube, "with-zone", _variant(2), topologySpread={"topologyKeys": [HOSTNAME, ZONE]}))
    placed = wait_for(lambda: _placed(kube, "with-zone", 2), 60, "both replicas scheduled")
    assert placed == Counter({roomy: 2}), placed

    kube.apply(_pool(kube, "default-keys", _variant(2)))
    placed = wait_for(lambda: _placed(kube, "default-keys", 2), 60, "both replicas scheduled")
    assert placed == Counter({roomy: 1, tight: 1}), placed
