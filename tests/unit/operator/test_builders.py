"""Pure builders: the Triton Deployment and Service of a variant."""

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
