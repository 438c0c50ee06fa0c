"""The ModelPool operator on a real control plane (kube-apiserver, etcd, controller-manager,
scheduler) with kwok's fake GPU nodes, the operator running as ``modelpool operator run``."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.cluster.kubetools import Kube, OperatorProcess, wait_for
from unit.api.promql_cases import PROMQL_CASES

pytestmark = pytest.mark.cluster

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"
Obj = dict[str, Any]


def pool_manifest(name: str = "bank", **overrides: Any) -> Obj:
    spec: Obj = {
        "gpuPool": {"gpuBudget": 8, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
        "variants": [
            {"name": "small", "tier": "small", "model": {"name": "bank-small", "repository": "/models"}},
            {
                "name": "large",
                "tier": "large",
                "model": {"name": "bank-large", "repository": "/models"},
                "gpusPerReplica": 2,
            },
        ],
    }
    spec.update(overrides)
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def ready(kube: Kube, name: str) -> Obj | None:
    cond = kube.condition("modelpool", name, "Ready")
    pool = kube.get("modelpool", name)
    if (
        cond
        and cond["status"] == "True"
        and pool
        and pool["status"]["observedGeneration"] == pool["metadata"]["generation"]
    ):
        return pool
    return None


def test_every_sample_applies_and_converges(kube: Kube) -> None:
    for path in sorted(SAMPLES.glob("*.yaml")):
        kube.run("apply", "-f", str(path))
    pool = wait_for(lambda: ready(kube, "banking77"), 90, "sample pool Ready")
    status = pool["status"]
    assert status["gpusInUse"] == 4  # small 1 + int8 1 + large 2 GPUs, one replica each
    assert status["gpuBudget"] == 12
    assert {v["name"]: (v["desiredReplicas"], v["readyReplicas"]) for v in status["variants"]} == {
        "small": (1, 1),
        "int8": (1, 1),
        "large": (1, 1),
    }
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Accepted"]["status"] == "True"
    assert conds["GPUBudgetFits"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False"
    assert conds["Progressing"]["status"] == "False"

    dep = kube.get("deployment", "banking77-large")
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--load-model=banking77-large" in container["args"]
    assert "--model-control-mode=explicit" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelPool"
    svc = kube.get("service", "banking77-large")
    assert svc is not None
    assert {p["port"] for p in svc["spec"]["ports"]} == {8000, 8001, 8002}

    pods = kube.list("pods", "modelpool.dev/pool=banking77")
    assert len(pods) == 3
    assert all(p["spec"]["nodeName"].startswith("gpu-node-") for p in pods)
    # Every RoutingPolicy sample was accepted by the API server too.
    names = json.loads(kube.run("get", "routingpolicies", "-o", "json").stdout)["items"]
    assert len(names) == len(list(SAMPLES.glob("routingpolicy-*.yaml")))
    # The operator said what it did.
    reasons = {e["reason"] for e in kube.events("banking77")}
    assert "Created" in reasons


def test_more_gpus_than_nodes_have_shows_pending_pods_and_budget_condition(kube: Kube) -> None:
    # Two nodes of its own (8 GPUs each), so other tests' pods cannot take their GPUs.
    try:
        kube.cluster.ensure_nodes(2, 8, prefix=f"{kube.namespace}-node", labels={"test-pool": kube.namespace})
        # 3 large replicas x 8 GPUs = 24 GPUs; the two nodes have 16.
        manifest = pool_manifest(
            "big",
            gpuPool={"gpuBudget": 32, "nodeSelector": {"test-pool": kube.namespace}},
            variants=[
                {
                    "name": "large",
                    "tier": "large",
                    "model": {"name": "m", "repository": "/models"},
                    "gpusPerReplica": 8,
                    "minReplicas": 3,
                    "maxReplicas": 3,
                }
            ],
        )
        kube.apply(manifest)

        def budget_false() -> Obj | None:
            cond = kube.condition("modelpool", "big", "GPUBudgetFits")
            return cond if cond and cond["status"] == "False" else None

        cond = wait_for(budget_false, 90, "GPUBudgetFits=False")
        assert cond["reason"] == "InsufficientNodeGPUs"
        assert "nvidia.com/gpu" in cond["message"]
        pods = kube.list("pods", "modelpool.dev/pool=big")
        pending = [p for p in pods if not p["spec"].get("nodeName")]
        assert len(pods) == 3 and len(pending) == 1
        degraded = kube.condition("modelpool", "big", "Degraded")
        assert degraded is not None and degraded["reason"] == "PodsUnschedulable"
        pool = kube.get("modelpool", "big")
        assert pool is not None and pool["status"]["gpusInUse"] == 16
    finally:  # the shared cluster keeps no nodes of a test, failed or not
        kube.cluster.kubectl("delete", "nodes", "-l", f"test-pool={kube.namespace}", "--wait=false")


def test_crashing_triton_containers_are_degraded_with_the_field_to_fix(kube: Kube) -> None:
    """A replica that keeps crashing says why in Degraded (OOMKilled: raise the memory) and in one
    Warning Event, and Degraded clears once it runs. kwok plays the kubelet here, so the test writes
    the container status a kubelet writes for a container killed for memory; kwok leaves a
    Running pod's status alone."""
    kube.apply(
        pool_manifest(
            "crash",
            variants=[{"name": "small", "tier": "small", "model": {"name": "s", "repository": "/models"}}],
        )
    )
    wait_for(lambda: ready(kube, "crash"), 90, "pool crash Ready")
    pod = kube.list("pods", "modelpool.dev/pool=crash")[0]
    name, image = pod["metadata"]["name"], pod["spec"]["containers"][0]["image"]

    def container_status(state: Obj, ready: bool, last: Obj | None = None) -> str:
        status: Obj = {
            "name": "triton",
            "image": image,
            "imageID": "",
            "ready": ready,
            "restartCount": 3 if last else 0,
            "state": state,
        }
        if last:
            status["lastState"] = last
        conditions = [{"type": t, "status": str(ready)} for t in ("Ready", "ContainersReady")]
        return json.dumps(
            {"status": {"phase": "Running", "conditions": conditions, "containerStatuses": [status]}}
        )

    oom = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "message": "I1124 loading model s\n"}}
    crashing = container_status({"waiting": {"reason": "CrashLoopBackOff"}}, False, oom)
    kube.run("patch", "pod", name, "--subresource=status", "--type=merge", "-p", crashing)

    def degraded(reason: str) -> Obj | None:
        cond = kube.condition("modelpool", "crash", "Degraded")
        return cond if cond and cond["reason"] == reason else None

    cond = wait_for(lambda: degraded("ContainersCrashing"), 60, "Degraded=ContainersCrashing")
    assert cond["status"] == "True"
    assert f"small: pod {name} container triton CrashLoopBackOff (OOMKilled)" in cond["message"]
    assert "exit code 137, 3 restart(s), last log: I1124 loading model s" in cond["message"]
    assert "raise spec.variants[0].resources.memory" in cond["message"]
    assert kube.condition("modelpool", "crash", "Ready")["status"] == "False"  # type: ignore[index]
    warnings = wait_for(
        lambda: [e for e in kube.events("crash") if e["reason"] == "ContainersCrashing"] or None,
        30,
        "a ContainersCrashing Event",
    )
    assert warnings[0]["type"] == "Warning" and "resources.memory" in warnings[0]["message"]

    kube.run(
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        container_status({"running": {}}, True),
    )
    wait_for(lambda: degraded("AsExpected"), 60, "Degraded=AsExpected after the container runs")
    wait_for(lambda: ready(kube, "crash"), 60, "pool crash Ready again")
    repeated = [e for e in kube.events("crash") if e["reason"] == "ContainersCrashing"]
    assert len(repeated) == 1 and repeated[0].get("count", 1) == 1  # one Event, not one per pass


def test_fields_the_spec_stops_setting_leave_the_deployment(kube: Kube) -> None:
    """A nodeSelector key and the only toleration removed from the pool are removed from the
    Deployment too (before the spec hash, the drift check saw nothing missing and kept them)."""
    selector = {"nvidia.com/gpu.present": "true", "gpu-class": "a100"}
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    variant = {"name": "small", "tier": "small", "model": {"name": "s", "repository": "/models"}}
    gpu_pool = {"gpuBudget": 4, "nodeSelector": selector, "tolerations": [toleration]}
    kube.apply(pool_manifest("trim", gpuPool=gpu_pool, variants=[variant]))

    def template() -> Obj | None:
        dep = kube.get("deployment", "trim-small")
        return dep["spec"]["template"]["spec"] if dep else None

    pod = wait_for(lambda: (t := template()) and "tolerations" in t and t, 60, "the Deployment")
    assert pod["nodeSelector"] == selector and pod["tolerations"] == [toleration]
    kube.apply(
        pool_manifest(
            "trim",
            gpuPool={"gpuBudget": 4, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
            variants=[variant],
        )
    )
    pod = wait_for(
        lambda: (t := template()) and "tolerations" not in t and "gpu-class" not in t["nodeSelector"] and t,
        60,
        "the removed key and toleration gone from the Deployment",
    )
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    wait_for(lambda: ready(kube, "trim"), 90, "pool trim Ready on the nodes it selects now")


def test_minimums_over_budget_report_the_condition(kube: Kube) -> None:
    kube.apply(pool_manifest("tight", gpuPool={"gpuBudget": 2}))
    cond = wait_for(
        lambda: (c := kube.condition("modelpool", "tight", "GPUBudgetFits")) and c["status"] == "False" and c,
        60,
        "budget condition",
    )
    assert cond["reason"] == "MinReplicasExceedBudget"
    assert "gpuBudget is 2" in cond["message"]


def test_editing_a_variant_rolls_its_deployment(kube: Kube) -> None:
    manifest = pool_manifest()
    kube.apply(manifest)
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")
    before = kube.get("deployment", "bank-large")
    assert before is not None
    edited = copy.deepcopy(manifest)
    edited["spec"]["variants"][1]["triton"] = {
        "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
        "args": ["--log-verbose=1"],
    }
    kube.apply(edited)

    def rolled() -> Obj | None:
        dep = kube.get("deployment", "bank-large")
        c = (dep or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
        return (
            dep
            if c.get("image", "").endswith(":25.01-py3") and "--log-verbose=1" in c.get("args", [])
            else None
        )

    after = wait_for(rolled, 60, "the new image in the Deployment")
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready after the roll")
    rs = kube.list("replicasets", "modelpool.dev/variant=large")
    assert len(rs) >= 2  # a new ReplicaSet: a real rollout happened
    # The untouched variant was not rewritten.
    small = kube.get("deployment", "bank-small")
    assert small is not None and small["metadata"]["generation"] == 1
    assert "Updated" in {e["reason"] for e in kube.events("bank")}


def test_deleted_children_come_back(kube: Kube) -> None:
    kube.apply(pool_manifest())
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")
    old_dep = kube.get("deployment", "bank-small")
    old_svc = kube.get("service", "bank-small")
    assert old_dep is not None and old_svc is not None
    kube.run("delete", "deployment", "bank-small", "--wait=true")
    kube.run("delete", "service", "bank-small", "--wait=true")
    new_dep = wait_for(lambda: kube.get("deployment", "bank-small"), 30, "Deployment recreated")
    new_svc = wait_for(lambda: kube.get("service", "bank-small"), 30, "Service recreated")
    assert new_dep["metadata"]["uid"] != old_dep["metadata"]["uid"]
    assert new_svc["metadata"]["uid"] != old_svc["metadata"]["uid"]
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready again")


def test_hand_edits_to_children_are_corrected(kube: Kube) -> None:
    kube.apply(pool_manifest())
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")
    kube.run("scale", "deployment", "bank-small", "--replicas=4")
    kube.run("set", "image", "deployment/bank-small", "triton=example.invalid/other:1")

    def corrected() -> Obj | None:
        dep = kube.get("deployment", "bank-small")
        if not dep:
            return None
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        return dep if dep["spec"]["replicas"] == 1 and "tritonserver" in image else None

    wait_for(corrected, 30, "hand edits undone")


def test_deleting_the_pool_removes_its_children(kube: Kube) -> None:
    kube.apply(pool_manifest())
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")
    kube.run("delete", "modelpool", "bank", "--wait=true", "--timeout=60s")
    wait_for(
        lambda: not kube.list("deployments", "modelpool.dev/pool=bank") or None,
        60,
        "Deployments garbage-collected",
    )
    wait_for(
        lambda: not kube.list("services", "modelpool.dev/pool=bank") or None, 60, "Services garbage-collected"
    )


def test_removing_a_variant_removes_only_its_children(kube: Kube) -> None:
    manifest = pool_manifest()
    kube.apply(manifest)
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")
    manifest["spec"]["variants"] = manifest["spec"]["variants"][:1]
    kube.apply(manifest)
    wait_for(lambda: kube.get("deployment", "bank-large") is None or None, 30, "large Deployment removed")
    assert kube.get("deployment", "bank-small") is not None


def test_semantic_error_keeps_running_children(kube: Kube) -> None:
    manifest = pool_manifest()
    kube.apply(manifest)
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")
    uid = kube.get("deployment", "bank-small")["metadata"]["uid"]  # type: ignore[index]
    bad = copy.deepcopy(manifest)
    bad["spec"]["variants"].append(
        {"name": "x" * 60, "tier": "large", "model": {"name": "m", "repository": "/models"}}
    )
    kube.apply(bad)

    def rejected() -> Obj | None:
        cond = kube.condition("modelpool", "bank", "Accepted")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_for(rejected, 30, "Accepted=False")
    assert cond["reason"] == "ChildNameTooLong"
    assert "spec.variants[2].name" in cond["message"]
    # Nothing was torn down; the operator keeps running.
    dep = kube.get("deployment", "bank-small")
    assert dep is not None and dep["metadata"]["uid"] == uid
    assert "ChildNameTooLong" in {e["reason"] for e in kube.events("bank")}
    kube.apply(manifest)
    wait_for(lambda: ready(kube, "bank"), 60, "pool Ready after the fix")


def test_a_foreign_deployment_with_our_name_is_not_taken_over(kube: Kube) -> None:
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bank-small"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {
                "metadata": {"labels": {"app": "theirs"}},
                "spec": {"containers": [{"name": "c", "image": "theirs:1"}]},
            },
        },
    }
    kube.apply(foreign)
    kube.apply(pool_manifest())
    cond = wait_for(
        lambda: (c := kube.condition("modelpool", "bank", "Degraded")) and c["status"] == "True" and c,
        60,
        "Degraded",
    )
    assert cond["reason"] == "ChildConflict"
    dep = kube.get("deployment", "bank-small")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["image"] == "theirs:1"


def test_nothing_is_written_when_nothing_changed(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(pool_manifest())
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")

    def settled() -> tuple[str, ...]:
        objs = [
            kube.get("modelpool", "bank"),
            kube.get("deployment", "bank-small"),
            kube.get("service", "bank-small"),
        ]
        return tuple(o["metadata"]["resourceVersion"] for o in objs if o)

    def updates() -> int:
        return sum(int(e.get("count", 1) or 1) for e in kube.events("bank") if e["reason"] == "Updated")

    first, updated = settled(), updates()
    # Three resync periods of the operator with nothing to do: no write, no correction.
    time.sleep(operator.resync_seconds * 3 + 1)
    assert settled() == first
    assert updates() == updated == 0


def test_restarted_operator_converges(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(pool_manifest())
    wait_for(lambda: ready(kube, "bank"), 90, "pool Ready")
    operator.kill()
    try:
        kube.run("delete", "deployment", "bank-large", "--wait=true")
        kube.apply(pool_manifest(gpuPool={"gpuBudget": 9}))
    finally:
        operator.start()
    wait_for(lambda: kube.get("deployment", "bank-large"), 60, "Deployment recreated after restart")
    pool = wait_for(lambda: ready(kube, "bank"), 90, "pool Ready after restart")
    assert pool["status"]["gpuBudget"] == 9


INVALID: list[tuple[str, Any, str]] = [
    (
        "min above max",
        {"minReplicas": 5, "maxReplicas": 2},
        "minReplicas must be less than or equal to maxReplicas",
    ),
    ("unknown tier", {"tier": "huge"}, "spec.variants[0].tier"),
    ("negative gpus", {"gpusPerReplica": -1}, "spec.variants[0].gpusPerReplica"),
    ("too many gpus", {"gpusPerReplica": 17}, "spec.variants[0].gpusPerReplica"),
    ("bad variant name", {"name": "Bad_Name"}, "spec.variants[0].name"),
    ("bad quantity", {"resources": {"cpu": "lots"}}, "spec.variants[0].resources.cpu"),
    ("bad model name", {"model": {"name": "a b", "repository": "/m"}}, "spec.variants[0].model.name"),
    ("missing model", {"model": None}, "spec.variants[0].model"),
    ("zero max", {"maxReplicas": 0, "minReplicas": 0}, "spec.variants[0].maxReplicas"),
    ("unknown field", {"replicaz": 3}, 'unknown field "spec.variants[0].replicaz"'),
    (
        "a flag ModelPool sets",
        {"triton": {"args": ["--log-verbose=1", "--http-p=9000"]}},  # an abbreviation tritonserver takes
        "spec.variants[0].triton.args: Invalid value: triton.args may not set a flag ModelPool sets itself",
    ),
]


@pytest.mark.parametrize(("case", "variant_patch", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_pools_are_rejected_naming_the_field(
    kube: Kube, case: str, variant_patch: Obj, expected: str
) -> None:
    manifest = pool_manifest("invalid")
    variant = manifest["spec"]["variants"][0]
    for key, value in variant_patch.items():
        if value is None:
            variant.pop(key)
        else:
            variant[key] = value
    proc = kube.apply(manifest, check=False)
    assert proc.returncode != 0, f"{case}: the API server accepted it"
    assert expected in proc.stderr, proc.stderr


def test_the_users_own_triton_flags_pass_the_api_server(kube: Kube) -> None:
    """The CEL rule for reserved flags refuses abbreviations (above), not flags that only begin
    like a reserved one, nor an argument that is no option."""
    manifest = pool_manifest("own-flags")
    args = ["--log-verbose=1", "--http-thread-count=8", "--strict-model-config=false", " --http-port=1"]
    manifest["spec"]["variants"][0]["triton"] = {"args": args}
    proc = kube.run("apply", "--dry-run=server", "-f", "-", input_text=json.dumps(manifest), check=False)
    assert proc.returncode == 0, proc.stderr


def test_pool_level_invalid_manifests(kube: Kube) -> None:
    dup = pool_manifest("dup")
    dup["spec"]["variants"][1]["name"] = "small"
    proc = kube.apply(dup, check=False)
    assert proc.returncode != 0 and 'spec.variants[1]: Duplicate value: {"name":"small"}' in proc.stderr

    none = pool_manifest("none", variants=[])
    proc = kube.apply(none, check=False)
    assert proc.returncode != 0 and "spec.variants" in proc.stderr

    budget = pool_manifest("neg", gpuPool={"gpuBudget": -1})
    proc = kube.apply(budget, check=False)
    assert proc.returncode != 0 and "spec.gpuPool.gpuBudget" in proc.stderr

    nobody = pool_manifest("nobody")
    for v in nobody["spec"]["variants"]:
        v.update({"minReplicas": 0, "scaling": {"scaleToZero": True}})
    proc = kube.apply(nobody, check=False)
    assert proc.returncode != 0 and "at least one variant must keep a replica" in proc.stderr


@pytest.mark.parametrize(("query", "valid"), PROMQL_CASES, ids=[q for q, _ in PROMQL_CASES])
def test_the_api_server_checks_query_placeholders(kube: Kube, query: str, valid: bool) -> None:
    """The CRD's CEL rule (RE2) accepts the same templates as the API model and the reader (Python)."""
    manifest = pool_manifest("promql", scaling={"queries": {"servedRate": query}})
    proc = kube.run("apply", "--dry-run=server", "-f", "-", input_text=json.dumps(manifest), check=False)
    if valid:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode != 0, f"{query!r}: the API server accepted it"
    assert "spec.scaling.queries.servedRate" in proc.stderr, proc.stderr
    assert "use $selector, $router_selector or $window" in proc.stderr, proc.stderr


def _policy(**spec: Any) -> Obj:
    base: Obj = {"poolRef": {"name": "bank"}, "routerSelector": {"matchLabels": {"app": "router"}}}
    base.update(spec)
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "p"},
        "spec": base,
    }


POLICY_INVALID: list[tuple[str, Obj, str]] = [
    ("weighted without weights", {"mode": "weighted"}, "mode weighted needs spec.weights"),
    (
        "all-zero weights",
        {"mode": "weighted", "weights": [{"variant": "a", "weight": 0}]},
        "at least one weight above 0",
    ),
    ("cascade without cascade", {"mode": "cascade"}, "mode cascade needs spec.cascade"),
    (
        "draft is verifier",
        {"mode": "cascade", "cascade": {"draft": "a", "verifier": "a"}},
        "spec.cascade.verifier",
    ),
    (
        "tiers out of order",
        {
            "mode": "tiered",
            "tiered": {
                "tiers": [
                    {"maxComplexityPercent": 80, "target": "a"},
                    {"maxComplexityPercent": 40, "target": "b"},
                ]
            },
        },
        "strictly ascending",
    ),
    (
        "last tier not 100",
        {"mode": "tiered", "tiered": {"tiers": [{"maxComplexityPercent": 40, "target": "a"}]}},
        "the last tier must have maxComplexityPercent 100",
    ),
    (
        "cascade tier without cascade",
        {"mode": "tiered", "tiered": {"tiers": [{"maxComplexityPercent": 100, "target": "cascade"}]}},
        "a tier with target cascade needs spec.cascade",
    ),
    (
        "threshold over 100",
        {"mode": "cascade", "cascade": {"draft": "a", "verifier": "b", "acceptThresholdPercent": 101}},
        "spec.cascade.acceptThresholdPercent",
    ),
    ("bad mode", {"mode": "random"}, "spec.mode"),
    (
        "torch scorer without path",
        {
            "mode": "tiered",
            "tiered": {"scorer": {"kind": "torch"}, "tiers": [{"maxComplexityPercent": 100, "target": "a"}]},
        },
        "a torch scorer needs path",
    ),
]


@pytest.mark.parametrize(("case", "spec", "expected"), POLICY_INVALID, ids=[c[0] for c in POLICY_INVALID])
def test_invalid_policies_are_rejected_naming_the_field(
    kube: Kube, case: str, spec: Obj, expected: str
) -> None:
    proc = kube.apply(_policy(**spec), check=False)
    assert proc.returncode != 0, f"{case}: the API server accepted it"
    assert expected in proc.stderr, proc.stderr


def test_kubectl_explain_describes_fields(kube: Kube) -> None:
    out = kube.run("explain", "modelpool.spec.variants.gpusPerReplica").stdout
    assert "GPUs each replica requests" in out
    printed = yaml.safe_dump(kube.run("get", "crd", "modelpools.modelpool.dev", "-o", "yaml").stdout)
    assert "shortNames" in printed
