"""What a variant's Triton pods get beyond the model: shared memory and a writable /tmp for the
Python backend, probe budgets, credentials for a remote model repository, and the refusal of
arguments that would leave the pods unreachable to their probes, the router or the scaler."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from pydantic import ValidationError

from modelpool.api.crdgen import KINDS, build_crd
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.builders.triton import build_deployment, is_subset
from modelpool.controllers.children import stamped
from modelpool.controllers.pool_reconciler import pool_path
from unit.operator.test_builder_drift import FOREIGN_MOUNT, FOREIGN_VOLUME, Events, _passes, _pool
from unit.operator.test_disruption_budgets import DEPLOYMENTS, POOL, FakeKube, _variant

Obj = dict[str, Any]

SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}
TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def _spec(**triton: Any) -> ModelPoolSpec:
    variant: Obj = {"name": "small", "tier": "small", "model": {"name": "m", "repository": "s3://b/r"}}
    if triton:
        variant["triton"] = triton
    return ModelPoolSpec.model_validate({"gpuPool": {"gpuBudget": 4}, "variants": [variant]})


def _pod(**triton: Any) -> Obj:
    spec = _spec(**triton)
    deployment = build_deployment("bank", "ns", "u", spec, spec.variants[0], replicas=1)
    pod: Obj = deployment["spec"]["template"]["spec"]
    return pod


def _refused(**triton: Any) -> str:
    with pytest.raises(ValidationError) as err:
        _spec(**triton)
    return str(err.value)


def _triton_schema() -> Obj:
    pools = build_crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    schema: Obj = pools["properties"]["variants"]["items"]["properties"]["triton"]
    return schema


# --- S1: /dev/shm --------------------------------------------------------------------------------


def test_the_python_backend_gets_a_memory_backed_dev_shm_of_1gi_by_default() -> None:
    """The container runtime's /dev/shm is 64 MiB: the Python backend's shared-memory regions
    outgrow it with a few large tensors, and its stubs then fail to start or to answer."""
    pod = _pod()
    assert pod["volumes"] == [SHM_VOLUME, TMP_VOLUME]
    assert pod["containers"][0]["volumeMounts"] == [SHM_MOUNT, TMP_MOUNT]
    assert _pod(sharedMemorySize="8Gi")["volumes"][0]["emptyDir"]["sizeLimit"] == "8Gi"
    described = _triton_schema()["properties"]["sharedMemorySize"]
    assert described["default"] == "1Gi" and "memory limit" in described["description"]


@pytest.mark.parametrize("size", ["0", "0.0", "00Mi", "lots", "-1Gi"])
def test_a_shared_memory_size_that_is_no_positive_quantity_is_refused(size: str) -> None:
    assert "triton.sharedMemorySize" in _refused(sharedMemorySize=size)


# --- S1b: /tmp -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "triton",
    [{}, {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000}}, {"sharedMemorySize": "8Gi"}],
    ids=["image-user", "non-root", "shm"],
)
def test_the_pod_brings_its_own_tmp_on_the_nodes_disk(triton: Obj) -> None:
    """Triton's Python backend makes /tmp/python_env_XXXXXX as it loads a model (a fixed path:
    TMPDIR is not read) and aborts the server where it cannot: the pod mounts an emptyDir there
    instead of relying on the image's /tmp (world-writable in the stock images only, and read-only
    under readOnlyRootFilesystem). On the node's disk and without a sizeLimit: a remote model
    repository is downloaded there, as large as the model (a memory-backed one would count
    against resources.memory, a fixed limit would evict the pods of a large model)."""
    pod = _pod(**triton)
    assert TMP_VOLUME in pod["volumes"]
    assert TMP_MOUNT in pod["containers"][0]["volumeMounts"]
    mounted = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert mounted == [TMP_MOUNT], "one mount at /tmp, read-write"


def _deployment_path() -> str:
    return f"{DEPLOYMENTS}/{POOL}-small"


async def _applied(kube: FakeKube) -> Obj:
    await _passes(kube, [], 1)
    return kube.objects[_deployment_path()]


def _template(deployment: Obj) -> Obj:
    return cast(Obj, deployment["spec"]["template"]["spec"])


async def test_a_deployment_that_lost_the_tmp_volume_is_corrected_like_dev_shm() -> None:
    """A hand edit (``kubectl edit``, which keeps the spec-hash annotation) that removes the /tmp
    volume or its mount, repoints the mount or swaps the volume's source is drift: the next pass
    applies the Deployment again and the volume is back. The mount is matched by its path, the
    volume by its name, as for /dev/shm; another field manager's volume beside them is no drift."""
    kube = FakeKube(
        {pool_path("ns", POOL): _pool({"gpuPool": {"gpuBudget": 8}, "variants": [_variant("small")]})}
    )
    built = copy.deepcopy(await _applied(kube))

    edits = {
        "volume removed": lambda pod: pod.update(volumes=[v for v in pod["volumes"] if v["name"] != "tmp"]),
        "mount removed": lambda pod: pod["containers"][0].update(
            volumeMounts=[m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] != "/tmp"]
        ),
        "mount repointed": lambda pod: pod["containers"][0]["volumeMounts"][1].update(name="scratch"),
        "another source": lambda pod: pod["volumes"].__setitem__(
            1, {"name": "tmp", "hostPath": {"path": "/t"}}
        ),
    }
    for edit in edits.values():
        edit(_template(kube.objects[_deployment_path()]))
        assert not is_subset(built, kube.objects[_deployment_path()])
        events: Events = []
        await _passes(kube, events, 1)
        assert [e[1] for e in events] == ["Updated"]
        assert kube.objects[_deployment_path()] == built

    pod = _template(kube.objects[_deployment_path()])
    pod["volumes"].append(FOREIGN_VOLUME)
    pod["containers"][0]["volumeMounts"].insert(0, FOREIGN_MOUNT)
    assert is_subset(built, kube.objects[_deployment_path()])


# --- S2: probe budgets ---------------------------------------------------------------------------


def test_probes_keep_their_old_budgets_by_default() -> None:
    """A pool from before these fields gets the same probes (no rollout for them on upgrade)."""
    container = _pod()["containers"][0]
    assert container["startupProbe"] == {
        "httpGet": {"path": "/v2/health/ready", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 60,
    }
    assert container["readinessProbe"]["timeoutSeconds"] == container["livenessProbe"]["timeoutSeconds"] == 2


@pytest.mark.parametrize(("seconds", "failures"), [(1800, 180), (605, 61), (10, 1), (86_400, 8640)])
def test_the_startup_budget_is_the_startup_timeout(seconds: int, failures: int) -> None:
    probe = _pod(startupTimeoutSeconds=seconds)["containers"][0]["startupProbe"]
    assert (probe["periodSeconds"], probe["failureThreshold"]) == (10, failures)


def test_the_probe_timeout_applies_to_every_probe() -> None:
    container = _pod(probeTimeoutSeconds=10)["containers"][0]
    probes = ("startupProbe", "readinessProbe", "livenessProbe")
    assert {container[p]["timeoutSeconds"] for p in probes} == {10}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("startupTimeoutSeconds", 9),
        ("startupTimeoutSeconds", 86_401),
        ("probeTimeoutSeconds", 0),
        ("probeTimeoutSeconds", 61),
    ],
)
def test_probe_fields_out_of_bounds_are_refused(field: str, value: int) -> None:
    assert f"triton.{field}" in _refused(**{field: value})
    bounds = _triton_schema()["properties"][field]
    assert {"minimum", "maximum", "default", "description"} <= bounds.keys()


# --- S3: credentials for a remote model repository -----------------------------------------------


def test_environment_from_a_secret_or_a_config_map_key() -> None:
    env = [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "id"}}},
        {
            "name": "AWS_DEFAULT_REGION",
            "valueFrom": {"configMapKeyRef": {"name": "s3.cfg", "key": "region", "optional": True}},
        },
        {"name": "PLAIN", "value": "1"},
        {"name": "EMPTY"},
    ]
    assert _pod(env=env)["containers"][0]["env"] == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "id"}}},
        {
            "name": "AWS_DEFAULT_REGION",
            "valueFrom": {"configMapKeyRef": {"name": "s3.cfg", "key": "region", "optional": True}},
        },
        {"name": "PLAIN", "value": "1"},
        {"name": "EMPTY"},
    ]


@pytest.mark.parametrize(
    ("var", "expected"),
    [
        (
            {"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            "value or valueFrom, not both",
        ),
        ({"name": "A", "valueFrom": {}}, "exactly one of secretKeyRef and configMapKeyRef"),
        (
            {
                "name": "A",
                "valueFrom": {
                    "secretKeyRef": {"name": "s", "key": "k"},
                    "configMapKeyRef": {"name": "c", "key": "k"},
                },
            },
            "exactly one of secretKeyRef and configMapKeyRef",
        ),
        ({"name": "A", "valueFrom": {"secretKeyRef": {"name": "S", "key": "k"}}}, "secretKeyRef.name"),
        ({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a/b"}}}, "secretKeyRef.key"),
        ({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}, "fieldRef"),
    ],
)
def test_invalid_environment_sources_are_refused_naming_the_fix(var: Obj, expected: str) -> None:
    message = _refused(env=[var])
    assert "triton.env" in message and expected in message, message


def test_the_crd_checks_environment_sources_as_the_model_does() -> None:
    env = _triton_schema()["properties"]["env"]["items"]
    assert any("valueFrom" in r["rule"] for r in env["x-kubernetes-validations"])
    source = env["properties"]["valueFrom"]
    assert set(source["properties"]) == {"secretKeyRef", "configMapKeyRef"}
    assert any("secretKeyRef" in r["rule"] for r in source["x-kubernetes-validations"])


def test_a_service_account_for_workload_identity() -> None:
    assert _pod(serviceAccountName="triton-s3")["serviceAccountName"] == "triton-s3"
    assert "serviceAccountName" not in _pod()  # unset: the namespace's default, as before
    assert "triton.serviceAccountName" in _refused(serviceAccountName="Not_A_Name")


def test_the_repository_field_names_only_what_the_spec_can_express() -> None:
    pools = build_crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    described = pools["properties"]["variants"]["items"]["properties"]["model"]["properties"]["repository"]
    assert "mounted volume" not in described["description"]
    assert "valueFrom" in described["description"] and "serviceAccountName" in described["description"]


# --- S4: arguments that leave the pods unreachable ---------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--http-address=127.0.0.1", "--http-address must be an all-interfaces address"),
        ("--http-addr=127.0.0.1", "--http-addr, an abbreviation of --http-address,"),
        ("--http-address", "--http-address must be an all-interfaces address"),
        ("--metrics-address=127.0.0.1", "--metrics-address must be an all-interfaces address"),
        ("--http-restricted-api=health:k=v", "may not restrict health or inference"),
        ("--http-restricted-api=model-repository,health:k=v", "may not restrict health or inference"),
        ("--http-restricted=inference:k=v", "may not restrict health or inference"),
        ("--http-restricted-api", "may not restrict health or inference"),
    ],
)
def test_arguments_that_break_the_probes_router_or_scaler_are_refused(arg: str, expected: str) -> None:
    message = _refused(args=["--log-verbose=1", arg])
    assert "variants.0.triton.args" in message and expected in message, message


@pytest.mark.parametrize(
    "arg",
    [
        "--http-address=0.0.0.0",
        "--http-address=::",
        "--metrics-address=0.0.0.0",
        "--http-restricted-api=model-repository,statistics:admin-key=s3cr3t",
        "--http-restricted-api=model-repository:x=health",
        "--http-header-forward-pattern=.*",
        "--grpc-address=127.0.0.1",
    ],
)
def test_arguments_that_keep_the_pods_reachable_pass(arg: str) -> None:
    assert _spec(args=[arg]).variants[0].triton.args == [arg]


def test_the_crd_refuses_the_same_arguments() -> None:
    rules = _triton_schema()["properties"]["args"]["x-kubernetes-validations"]
    text = " ".join(r["rule"] for r in rules)
    assert "--http-address" in text and "--http-restricted-api" in text and "--metrics-address" in text


# --- spec hash ------------------------------------------------------------------------------------


def test_the_new_defaults_hash_as_an_explicit_spec_does() -> None:
    """The API server fills the CRD's defaults into a pool from before these fields: the pod
    template, and so the spec hash, is the same as for the spec the operator defaulted itself."""
    explicit = _spec(sharedMemorySize="1Gi", startupTimeoutSeconds=600, probeTimeoutSeconds=2)
    implicit = _spec()
    one = build_deployment("bank", "ns", "u", explicit, explicit.variants[0], replicas=1)
    two = build_deployment("bank", "ns", "u", implicit, implicit.variants[0], replicas=1)
    assert stamped(one) == stamped(two)
