"""Pure builders: the Triton Deployment, Service and PodDisruptionBudget of a variant, and the
topology spread constraints of its pods."""

from __future__ import annotations

from typing import Any

import pytest

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.builders import triton as b


def _spec(**variant: Any) -> ModelPoolSpec:
    base: dict[str, Any] = {
        "name": "large",
        "tier": "large",
        "model": {"name": "bank-large", "repository": "s3://bucket/repo", "version": 3},
        "gpusPerReplica": 2,
        "triton": {"args": ["--log-verbose=1"], "env": [{"name": "A", "value": "b"}]},
    }
    base.update(variant)
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {
                "gpuBudget": 8,
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
            "variants": [base],
        }
    )


def test_deployment_runs_triton_with_the_model_loaded() -> None:
    spec = _spec()
    dep = b.build_deployment("bank", "ns", "uid-1", spec, spec.variants[0], replicas=3)
    assert dep["metadata"]["name"] == "bank-large"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"][:4] == [
        "tritonserver",
        "--model-repository=s3://bucket/repo",
        "--model-control-mode=explicit",
        "--load-model=bank-large",
    ]
    assert container["args"][-1] == "--log-verbose=1"
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001, 8002}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["env"] == [{"name": "A", "value": "b"}]
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["metadata"]["annotations"][b.ANNOTATION_MODEL_VERSION] == "3"
    labels = pod["metadata"]["labels"]
    assert labels[b.LABEL_POOL] == "bank"
    assert labels[b.LABEL_VARIANT] == "large"
    assert labels[b.LABEL_TIER] == "large"
    # The selector picks exactly this variant's pods.
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    owner = dep["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "name": "bank",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_cpu_only_variant_requests_no_gpu() -> None:
    spec = _spec(gpusPerReplica=0)
    dep = b.build_deployment("bank", "ns", "u", spec, spec.variants[0], replicas=1)
    assert "nvidia.com/gpu" not in dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_service_selects_the_variant() -> None:
    spec = _spec()
    svc = b.build_service("bank", "ns", "u", spec.variants[0])
    assert svc["spec"]["selector"] == {b.LABEL_POOL: "bank", b.LABEL_VARIANT: "large"}
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http", "grpc", "metrics"]


def test_builders_are_pure() -> None:
    spec = _spec()
    one = b.build_deployment("bank", "ns", "u", spec, spec.variants[0], 2)
    two = b.build_deployment("bank", "ns", "u", spec, spec.variants[0], 2)
    assert one == two and one is not two


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "defaulted": "x"}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"cpu": "1000m"}, {"cpu": "1"}, True),
        ({"memory": "1Gi"}, {"memory": "1073741824"}, True),
        ({"memory": "1Gi"}, {"memory": "1G"}, False),
        ({"image": "a"}, {}, False),
        ({"c": [{"name": "x"}]}, {"c": [{"name": "x", "imagePullPolicy": "IfNotPresent"}]}, True),
        # The API server omits an empty list: [] matches an absent field, not a non-empty one.
        ({"a": []}, {}, True),
        ({"a": []}, {"a": []}, True),
        ({"a": []}, {"a": [{"k": 1}]}, False),
        ({"a": [1]}, {}, False),
        ({"a": {}}, {}, False),
    ],
)
def test_is_subset(desired: Any, live: Any, expected: bool) -> None:
    assert b.is_subset(desired, live) is expected


def test_unchanged_live_deployment_is_not_drift() -> None:
    spec = _spec()
    desired = b.build_deployment("bank", "ns", "u", spec, spec.variants[0], 2)
    live: dict[str, Any] = {**desired, "status": {"replicas": 2}}
    live["spec"] = {**desired["spec"], "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}
    assert b.is_subset(desired, live)
    edited = {**live, "spec": {**live["spec"], "replicas": 5}}
    assert not b.is_subset(desired, edited)


def _with_budgets(pool: Any = None, **variant: Any) -> ModelPoolSpec:
    wire = _spec(**variant).to_wire()
    if pool is not None:
        wire["disruptionBudget"] = pool
    return ModelPoolSpec.model_validate(wire)


def test_pod_disruption_budget_bounds_exactly_the_variants_pods_by_default() -> None:
    spec = _spec()
    variant = spec.variants[0]
    pdb = b.build_pod_disruption_budget("bank", "ns", "uid-1", spec, variant)
    dep = b.build_deployment("bank", "ns", "uid-1", spec, variant, replicas=2)
    assert pdb is not None
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    # Named, labelled and owned like the variant's other children (garbage-collected with the pool).
    assert pdb["metadata"] == dep["metadata"]
    # The Deployment's selector, which its pod template carries: this variant's pods, no others.
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pdb["spec"]["maxUnavailable"] == 1  # on by default, one replica at a time
    assert "minAvailable" not in pdb["spec"]  # minAvailable = replicas would block every drain
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


@pytest.mark.parametrize(
    ("pool", "variant", "expected"),
    [
        ({"maxUnavailable": "25%"}, None, "25%"),
        ({"maxUnavailable": 2}, None, 2),
        ({"maxUnavailable": "25%"}, {"maxUnavailable": 3}, 3),  # the variant's own replaces the pool's
        ({"maxUnavailable": "25%"}, {"enabled": True}, 1),  # the whole object: its defaults, not the pool's
        ({"enabled": False}, None, None),
        ({"enabled": False}, {"maxUnavailable": "50%"}, "50%"),
        (None, {"enabled": False}, None),
    ],
)
def test_pod_disruption_budget_follows_the_pool_or_the_variants_own(
    pool: Any, variant: Any, expected: Any
) -> None:
    spec = _with_budgets(pool, **({"disruptionBudget": variant} if variant is not None else {}))
    pdb = b.build_pod_disruption_budget("bank", "ns", "u", spec, spec.variants[0])
    assert (pdb["spec"]["maxUnavailable"] if pdb is not None else None) == expected


def test_unchanged_live_pod_disruption_budget_is_not_drift() -> None:
    spec = _with_budgets({"maxUnavailable": "25%"})
    desired = b.build_pod_disruption_budget("bank", "ns", "u", spec, spec.variants[0])
    assert desired is not None
    live = {
        **desired,
        "metadata": {**desired["metadata"], "generation": 1, "resourceVersion": "7"},
        "status": {"currentHealthy": 2, "desiredHealthy": 1, "disruptionsAllowed": 1, "expectedPods": 2},
    }
    assert b.is_subset(desired, live)
    assert not b.is_subset(desired, {**live, "spec": {**live["spec"], "maxUnavailable": "50%"}})
    assert not b.is_subset(
        desired, {**live, "spec": {**live["spec"], "unhealthyPodEvictionPolicy": "IfHealthyBudget"}}
    )


def _with_spread(pool: Any = None, **variant: Any) -> ModelPoolSpec:
    wire = _spec(**variant).to_wire()
    if pool is not None:
        wire["topologySpread"] = pool
    return ModelPoolSpec.model_validate(wire)


def _constraints(spec: ModelPoolSpec) -> Any:
    dep = b.build_deployment("bank", "ns", "u", spec, spec.variants[0], replicas=2)
    return dep["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_replicas_spread_softly_over_nodes_by_default_and_over_zones_when_asked() -> None:
    spec = _spec()
    dep = b.build_deployment("bank", "ns", "u", spec, spec.variants[0], replicas=2)
    assert [c["topologyKey"] for c in dep["spec"]["template"]["spec"]["topologySpreadConstraints"]] == [
        "kubernetes.io/hostname"
    ]
    wire = spec.to_wire()
    wire["topologySpread"] = {"topologyKeys": ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]}
    zoned = ModelPoolSpec.model_validate(wire)
    dep = b.build_deployment("bank", "ns", "u", zoned, zoned.variants[0], replicas=2)
    pod = dep["spec"]["template"]
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    for c in constraints:
        assert (c["maxSkew"], c["whenUnsatisfiable"]) == (1, "ScheduleAnyway")
        # Exactly this variant's pods (the Deployment's selector, which the template's labels match)...
        assert c["labelSelector"] == dep["spec"]["selector"]
        assert c["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        # ...of the same ReplicaSet: a rollout's old pods do not count against the new ones. The
        # API server refuses a key that is in both matchLabelKeys and the selector.
        assert c["matchLabelKeys"] == ["pod-template-hash"]
        assert "pod-template-hash" not in c["labelSelector"]["matchLabels"]
        # Nodes the pods cannot go to (a cordoned node) are not counted as empty domains.
        assert c["nodeTaintsPolicy"] == "Honor"
        assert "nodeAffinityPolicy" not in c  # Honor, the default: only the GPU pool's nodes count
        assert "minDomains" not in c  # refused by the API server with ScheduleAnyway


@pytest.mark.parametrize(
    ("pool", "variant", "expected"),
    [
        (
            {"whenUnsatisfiable": "DoNotSchedule"},
            None,
            [("kubernetes.io/hostname", 1, "DoNotSchedule")],
        ),
        (
            {"topologyKeys": ["kubernetes.io/hostname"], "maxSkew": 2},
            None,
            [("kubernetes.io/hostname", 2, "ScheduleAnyway")],
        ),
        # The variant's own replaces the pool's as a whole: what it leaves out takes its default.
        (
            {"whenUnsatisfiable": "DoNotSchedule", "maxSkew": 3},
            {"topologyKeys": ["example.com/rack"]},
            [("example.com/rack", 1, "ScheduleAnyway")],
        ),
        ({"enabled": False}, None, []),
        (
            {"enabled": False},
            {"topologyKeys": ["kubernetes.io/hostname"]},
            [("kubernetes.io/hostname", 1, "ScheduleAnyway")],
        ),
        (None, {"enabled": False}, []),
    ],
)
def test_topology_spread_follows_the_pool_or_the_variants_own(pool: Any, variant: Any, expected: Any) -> None:
    spec = _with_spread(pool, **({"topologySpread": variant} if variant is not None else {}))
    got = [(c["topologyKey"], c["maxSkew"], c["whenUnsatisfiable"]) for c in _constraints(spec)]
    assert got == expected


def test_spreading_off_matches_a_deployment_without_constraints_and_removes_live_ones() -> None:
    """Off, the template asks for no constraint: a Deployment the API server stores without the
    field is unchanged (so an upgrade with spreading off does not roll the pods), and one that
    still has the constraints it had while on is corrected."""
    on = _spec()
    off = _with_spread({"enabled": False})
    desired = b.build_deployment("bank", "ns", "u", off, off.variants[0], 2)
    assert desired["spec"]["template"]["spec"]["topologySpreadConstraints"] == []
    stored_spec = {
        k: v for k, v in desired["spec"]["template"]["spec"].items() if k != "topologySpreadConstraints"
    }
    stored = {
        **desired,
        "spec": {**desired["spec"], "template": {**desired["spec"]["template"], "spec": stored_spec}},
    }
    assert b.is_subset(desired, stored)
    was_on = b.build_deployment("bank", "ns", "u", on, on.variants[0], 2)
    assert not b.is_subset(desired, was_on)
    # And the other way: turned on, a Deployment without constraints has drifted.
    assert not b.is_subset(was_on, stored)
    assert b.is_subset(was_on, was_on)
