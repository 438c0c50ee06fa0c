"""The Helm chart: lint, render, schema validation, and a real install on the local cluster."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.delivery import permissions as perm
from integration.delivery.deliverytools import (
    CHART,
    by_kind,
    can_i,
    documents,
    helm,
    helm_template,
    install_chart,
    one,
    operator_container,
    render,
    uninstall_chart,
)
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.builders.triton import LABEL_POOL, LABEL_VARIANT, build_deployment
from modelpool.controllers.handlers import ROUTER_LABEL
from modelpool.devcluster.cluster import DevCluster

pytestmark = pytest.mark.cluster

SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
SCENARIO_IDS = [p.name.removesuffix("-values.yaml") for p in SCENARIOS]


def scenario(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


def test_scenarios_exist() -> None:
    assert SCENARIO_IDS == ["default", "namespaced", "with-prometheus"]


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_lint_strict(values: Path) -> None:
    proc = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_default_render_is_cluster_wide_operator() -> None:
    objs = render()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Leader election is on by default: a new pod waits as a standby during a rollout.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(objs)
    assert container["image"] == "ghcr.io/modelpool/modelpool:0.1.0"
    assert container["args"] == [
        "--log-level=INFO",
        "operator",
        "run",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--readiness=http://0.0.0.0:8082/readyz",
        "--metrics-port=9090",
        "--leader-elect",
        "--leader-election-id=modelpool",
    ]
    # The liveness probe hits kopf's liveness endpoint named in --liveness, the readiness probe the
    # operator's own readiness endpoint named in --readiness (not Ready while it waits).
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8081, "readyz": 8082, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "readyz"}
    service = one(objs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # A cluster-wide kopf never lists namespaces: no access to them.
    assert all("namespaces" not in rule["resources"] for rule in one(objs, "ClusterRole")["rules"])
    # RBAC binds the ServiceAccount the pod runs as.
    sa = one(objs, "ServiceAccount")["metadata"]
    pod_sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    subject = one(objs, "ClusterRoleBinding")["subjects"][0]
    assert pod_sa == sa["name"] == subject["name"] and subject["namespace"] == sa["namespace"]


def test_security_defaults() -> None:
    objs = render()
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    sc = operator_container(objs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = operator_container(objs)["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in mounts


def test_namespaced_render_uses_roles_per_namespace() -> None:
    objs = render(values_file=scenario("namespaced"))
    roles = [r for r in by_kind(objs, "Role") if r["metadata"]["name"] == "modelpool"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = [b for b in by_kind(objs, "RoleBinding") if b["metadata"]["name"] == "modelpool"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # Besides, the leader Lease's Role in the release namespace (leader election is on by default).
    assert sorted(
        (o["kind"], o["metadata"]["name"], o["metadata"]["namespace"])
        for o in objs
        if "Role" in o["kind"] and o["metadata"].get("namespace") == "modelpool-system"
    ) == [
        ("Role", "modelpool-leader-election", "modelpool-system"),
        ("RoleBinding", "modelpool-leader-election", "modelpool-system"),
    ]
    # Cluster-scoped: only the CRD reads and kopf's namespace observation (list/watch).
    cluster_role = one(objs, "ClusterRole")
    assert [(r["resources"], r["verbs"]) for r in cluster_role["rules"]] == [
        (["customresourcedefinitions"], ["list", "watch"]),
        (["namespaces"], ["list", "watch"]),
    ]
    assert all("namespaces" not in r["resources"] for role in roles for r in role["rules"])
    args = operator_container(objs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert by_kind(objs, "Service") == []
    assert one(objs, "ServiceAccount")["metadata"]["name"] == "modelpool-namespaced"


def test_prometheus_render_sets_url_and_service_monitor() -> None:
    objs = render(values_file=scenario("with-prometheus"))
    args = operator_container(objs)["args"]
    assert "--prometheus-url=http://prometheus-operated.monitoring:9090" in args
    assert "--verbose" in args
    monitor = one(objs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == one(objs, "Service")["spec"]["selector"]


def test_pod_monitors_select_the_pods_whose_metrics_the_scaler_reads() -> None:
    """The Triton PodMonitor's selector and port match the pods the operator builds; the router
    PodMonitor's those of the router pods docs/router.md describes; both scrape at the chosen
    interval, in all namespaces or the listed ones."""
    assert by_kind(render(), "PodMonitor") == []  # off by default (needs prometheus-operator)
    variant = {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/models"}}
    spec = ModelPoolSpec.model_validate({"gpuPool": {"gpuBudget": 1}, "variants": [variant]})
    pod = build_deployment("pool", "team-a", "uid-1", spec, spec.variants[0], 1)["spec"]["template"]
    monitors = by_kind(
        render(
            set_json={
                "podMonitors.triton.enabled": "true",
                "podMonitors.triton.interval": '"500ms"',
                "podMonitors.router.enabled": "true",
                "podMonitors.router.interval": '"500ms"',
                "podMonitors.router.namespaces": '["team-a"]',
            }
        ),
        "PodMonitor",
    )
    triton, router = sorted(monitors, key=lambda m: m["metadata"]["name"], reverse=True)
    assert triton["metadata"]["name"].endswith("-triton") and router["metadata"]["name"].endswith("-router")
    assert triton["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    port = triton["spec"]["podMetricsEndpoints"][0]["port"]
    assert port in {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert triton["spec"]["namespaceSelector"] == {"any": True}
    # The pods' pool and variant become target labels (modelpool_dev_pool, modelpool_dev_variant),
    # which the scaler's Triton selector names (scaling/prometheus_reader.py): two variants loading
    # one model name read only their own pods' series.
    assert triton["spec"]["podTargetLabels"] == [LABEL_POOL, LABEL_VARIANT]
    assert {LABEL_POOL, LABEL_VARIANT} <= pod["metadata"]["labels"].keys()
    assert "podTargetLabels" not in router["spec"]  # the router's series carry pool and variant
    assert router["spec"]["selector"]["matchLabels"] == {ROUTER_LABEL: "true"}
    assert router["spec"]["podMetricsEndpoints"][0]["port"] == "http"  # the port docs/router.md names
    assert router["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert {m["spec"]["podMetricsEndpoints"][0]["interval"] for m in monitors} == {"500ms"}


def test_digest_pins_the_image() -> None:
    digest = "sha256:" + "ab" * 32
    objs = render(set_json={"image.digest": json.dumps(digest), "image.tag": '"9.9.9"'})
    assert operator_container(objs)["image"] == f"ghcr.io/modelpool/modelpool@{digest}"


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("replicaCount", "-1", "replicaCount"),
        ("leaderElection.enabled", '"yes"', "enabled"),
        ("leaderElection.id", '"x"', "id"),
        ("replicaCount", '"1"', "replicaCount"),
        ("replicas", "1", "replicas"),
        ("image.pullPolicy", '"Sometimes"', "pullPolicy"),
        ("image.digest", '"latest"', "digest"),
        ("image.extra", "true", "extra"),
        ("watchNamespaces", '["Team_A"]', "watchNamespaces"),
        ("prometheusUrl", '"prometheus:9090"', "prometheusUrl"),
        ("metrics.port", "70000", "port"),
        ("liveness.path", '"healthz"', "path"),
        ("readiness.path", '"readyz"', "path"),
        ("readiness.port", "0", "port"),
        ("readiness.port", '"8082"', "port"),
        ("readiness.probe", "{}", "probe"),
        ("resources.requests.cpu", '"lots"', "cpu"),
        ("rbac.create", '"yes"', "create"),
    ],
)
def test_schema_rejects_bad_value(key: str, value: str, named: str) -> None:
    proc = helm_template(set_json={key: value})
    assert proc.returncode != 0, f"{key}={value} was accepted"
    assert "schema" in proc.stderr, proc.stderr
    assert named in proc.stderr, proc.stderr


def test_the_lease_name_does_not_follow_name_overrides() -> None:
    """An upgrade that renames the objects keeps the Lease: old and new pods never lead at once."""

    def name_and_lease(release: str, **overrides: str) -> tuple[str, list[str]]:
        objs = render(release=release, set_json={"replicaCount": "2", **overrides})
        args = operator_container(objs)["args"]
        lease = [
            a.removeprefix("--leader-election-id=") for a in args if a.startswith("--leader-election-id=")
        ]
        return one(objs, "Deployment")["metadata"]["name"], lease

    renamed = {"fullnameOverride": '"ops-operator"'}
    assert name_and_lease("modelpool") == ("modelpool", ["modelpool"])
    assert name_and_lease("modelpool", **renamed) == ("ops-operator", ["modelpool"])
    assert name_and_lease("prod") == ("prod-modelpool", ["prod-modelpool"])
    assert name_and_lease("prod", nameOverride='"mp"') == ("prod-mp", ["prod-modelpool"])


def test_leader_election_renders_the_lease_role_the_flag_and_a_rolling_update() -> None:
    objs = render(namespace="ops", set_json={"replicaCount": "3"})
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(objs)
    assert "--leader-elect" in container["args"]
    assert "--leader-election-id=modelpool" in container["args"]  # the release's: one Lease each
    # The Lease's namespace is the pod's, through the downward API.
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in (
        container["env"]
    )
    role, binding = one(objs, "Role"), one(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": one(objs, "ServiceAccount")["metadata"]["name"],
            "namespace": "ops",
        }
    ]


def test_a_release_from_before_leader_election_upgraded_with_reuse_values_stays_as_it_was() -> None:
    # `helm upgrade --reuse-values` renders the new templates with the old release's values, which
    # have no leaderElection key: the render must not fail on it, and must not switch the running
    # operator to leader election by itself (its old pod, without a Lease, would run beside the new).
    objs = render(set_json={"leaderElection": "null"})
    assert one(objs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [a for a in operator_container(objs)["args"] if a.startswith("--leader-elect")]
    assert by_kind(objs, "Role") == []
    refused = helm_template(set_json={"leaderElection": "null", "replicaCount": "2"})
    assert refused.returncode != 0 and "leaderElection.enabled is false" in refused.stderr, refused.stderr


def _readiness(objs: list[dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, int]]:
    """The operator container's --readiness flag, readinessProbe and ports by name."""
    container = operator_container(objs)
    (flag,) = [a for a in container["args"] if a.startswith("--readiness=")]
    return flag, container["readinessProbe"], {p["name"]: p["containerPort"] for p in container["ports"]}


def test_the_readiness_probe_asks_the_operators_readiness_endpoint() -> None:
    flag, probe, ports = _readiness(
        render(
            set_json={
                "readiness.port": "9100",
                "readiness.path": '"/ready"',
                "liveness.readinessProbe.periodSeconds": "3",
            }
        )
    )
    assert flag == "--readiness=http://0.0.0.0:9100/ready"
    assert ports["readyz"] == 9100
    assert probe["httpGet"] == {"path": "/ready", "port": "readyz"}
    assert probe["periodSeconds"] == 3  # the timing stays under liveness.readinessProbe


@pytest.mark.parametrize(
    "readiness", ["null", '{"path": "/ready"}', '{"port": 9100}'], ids=["absent", "no-port", "no-path"]
)
def test_a_release_from_before_the_readiness_endpoint_upgraded_with_reuse_values_gets_it(
    readiness: str,
) -> None:
    # `helm upgrade --reuse-values` renders the new templates with the old release's values, which
    # have no readiness key (or only what --set gave it): each missing key reads as its default.
    flag, probe, ports = _readiness(render(set_json={"readiness": readiness}))
    given = json.loads(readiness) or {}
    port, path = given.get("port", 8082), given.get("path", "/readyz")
    assert flag == f"--readiness=http://0.0.0.0:{port}{path}"
    assert ports["readyz"] == port
    assert probe["httpGet"] == {"path": path, "port": "readyz"}


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"readiness.port": "8081"}, "readiness.port and liveness.port are both 8081"),
        ({"readiness.port": "9090"}, "readiness.port and metrics.port are both 9090"),
        ({"readiness": "null", "liveness.port": "8082"}, "readiness.port and liveness.port are both 8082"),
        ({"readiness": "null", "metrics.port": "8082"}, "readiness.port and metrics.port are both 8082"),
    ],
)
def test_a_readiness_port_shared_with_another_is_refused_naming_the_values(
    values: dict[str, str], refusal: str
) -> None:
    proc = helm_template(set_json=values)
    assert proc.returncode != 0 and refusal in proc.stderr, proc.stderr


def test_the_readiness_port_may_be_the_metrics_port_when_metrics_are_off() -> None:
    flag, _, _ = _readiness(render(set_json={"metrics.enabled": "false", "readiness.port": "9090"}))
    assert flag == "--readiness=http://0.0.0.0:9090/readyz"


def test_a_real_reuse_values_upgrade_of_a_release_without_readiness_values_gets_the_endpoint(
    cluster: DevCluster, namespaces: Callable[..., str], tmp_path: Path
) -> None:
    # What the render tests above stand for, with Helm itself: a release installed from a chart
    # whose values.yaml has no readiness key (this chart before --readiness), upgraded to this one
    # with --reuse-values, which renders with the old chart's values, not this one's defaults.
    old = tmp_path / "modelpool"
    shutil.copytree(CHART, old)
    values = yaml.safe_load((old / "values.yaml").read_text())
    values.pop("readiness", None)
    (old / "values.yaml").write_text(yaml.safe_dump(values))
    schema = json.loads((old / "values.schema.json").read_text())
    schema["properties"].pop("readiness", None)
    (old / "values.schema.json").write_text(json.dumps(schema))
    ns = namespaces()
    release = f"modelpool-{ns}"
    proc = helm("install", release, str(old), "-n", ns, "--skip-crds", cluster=cluster)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        proc = helm("upgrade", release, str(CHART), "-n", ns, "--reuse-values", cluster=cluster)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        manifest = helm("get", "manifest", release, "-n", ns, cluster=cluster)
        assert manifest.returncode == 0, manifest.stderr
        flag, probe, ports = _readiness(documents(manifest.stdout))
        assert flag == "--readiness=http://0.0.0.0:8082/readyz"
        assert ports["readyz"] == 8082
        assert probe["httpGet"] == {"path": "/readyz", "port": "readyz"}
        assert probe["periodSeconds"] == values["liveness"]["readinessProbe"]["periodSeconds"]
    finally:
        helm("uninstall", release, "-n", ns, "--wait", "--timeout", "60s", cluster=cluster)


def test_without_leader_election_one_replica_recreated() -> None:
    objs = render(set_json={"leaderElection.enabled": "false"})
    assert one(objs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(objs)
    assert not [a for a in container["args"] if a.startswith("--leader-elect")]
    assert [e["name"] for e in container["env"]] == ["MODELPOOL_RESYNC_SECONDS"]
    assert by_kind(objs, "Role") == [] and by_kind(objs, "RoleBinding") == []
    for replicas in ("0", "1"):
        assert (
            helm_template(set_json={"leaderElection.enabled": "false", "replicaCount": replicas}).returncode
            == 0
        )


@pytest.mark.parametrize("replicas", [2, 5])
def test_replicas_without_leader_election_are_refused_naming_the_values(replicas: int) -> None:
    proc = helm_template(set_json={"leaderElection.enabled": "false", "replicaCount": str(replicas)})
    assert proc.returncode != 0
    assert f"replicaCount is {replicas} but leaderElection.enabled is false" in proc.stderr, proc.stderr


def test_service_monitor_without_service_is_refused() -> None:
    proc = helm_template(
        set_json={"metrics.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"}
    )
    assert proc.returncode != 0
    assert "metrics.service.enabled" in proc.stderr, proc.stderr


def _assert_permissions(
    cluster: DevCluster, sa: str, checks: list[tuple[str, str]], namespace: str | None, allowed: bool
) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda check: can_i(cluster, sa, *check, namespace), checks))
    wrong = [
        f"{verb} {resource}" for (verb, resource), yes in zip(checks, answers, strict=True) if yes != allowed
    ]
    assert not wrong, (
        f"{sa} in {namespace or 'cluster scope'}: expected {'yes' if allowed else 'no'} for {wrong}"
    )


def test_install_cluster_wide_rbac_is_sufficient_and_minimal(
    cluster: DevCluster, namespaces: Callable[..., str]
) -> None:
    # The release's namespace enforces the "restricted" Pod Security Standard: the operator
    # pod is only admitted (and the Deployment only becomes available) if it complies.
    ns = namespaces(**{"pod-security.kubernetes.io/enforce": "restricted"})
    other = namespaces()
    release = f"modelpool-{ns}"  # contains the chart name: objects are named after it
    # The chart's crds/ are the CRDs already installed: Helm skips them, nothing conflicts.
    install_chart(cluster, release, ns)
    deployment = json.loads(cluster.kubectl("get", "deployment", release, "-n", ns, "-o", "json").stdout)
    assert deployment["status"].get("availableReplicas") == 1
    assert cluster.kubectl("get", "serviceaccount", release, "-n", ns, check=False).returncode == 0
    for obj in (f"clusterrole/{release}", f"clusterrolebinding/{release}"):
        assert cluster.kubectl("get", obj, check=False).returncode == 0, obj

    sa = f"{ns}:{release}"
    for namespace in (ns, other):
        _assert_permissions(cluster, sa, perm.NAMESPACED_NEEDED, namespace, allowed=True)
        _assert_permissions(cluster, sa, perm.NAMESPACED_DENIED, namespace, allowed=False)
    _assert_permissions(cluster, sa, perm.CLUSTER_NEEDED, None, allowed=True)
    _assert_permissions(cluster, sa, perm.NAMESPACED_MODE_ONLY + perm.CLUSTER_DENIED, None, allowed=False)
    # The leader Lease: in the release namespace only.
    _assert_permissions(cluster, sa, perm.LEADER_ELECTION_NEEDED, ns, allowed=True)
    _assert_permissions(cluster, sa, perm.LEADER_ELECTION_NEEDED, other, allowed=False)
    _assert_permissions(cluster, sa, perm.LEADER_ELECTION_DENIED, ns, allowed=False)

    uninstall_chart(cluster, release, ns, [f"clusterrole/{release}", f"clusterrolebinding/{release}"])
    assert not can_i(cluster, sa, "get", "modelpools.modelpool.dev", other)


def test_install_namespaced_rbac_is_confined(cluster: DevCluster, namespaces: Callable[..., str]) -> None:
    ns = namespaces(**{"pod-security.kubernetes.io/enforce": "restricted"})
    team_a, team_b, outside = namespaces(), namespaces(), namespaces()
    release = f"modelpool-{ns}"  # contains the chart name: objects are named after it
    install_chart(
        cluster,
        release,
        ns,
        "--skip-crds",
        "--set-json",
        json.dumps([team_a, team_b]).join(("watchNamespaces=", "")),
    )
    for team in (team_a, team_b):
        assert cluster.kubectl("get", "role,rolebinding", release, "-n", team, check=False).returncode == 0
    sa = f"{ns}:{release}"
    for team in (team_a, team_b):
        _assert_permissions(cluster, sa, perm.NAMESPACED_NEEDED, team, allowed=True)
        _assert_permissions(cluster, sa, perm.NAMESPACED_DENIED, team, allowed=False)
    # Nothing outside the watched namespaces, not even in its own: there only the leader Lease.
    for namespace in (ns, outside):
        _assert_permissions(cluster, sa, perm.NAMESPACED_NEEDED, namespace, allowed=False)
    _assert_permissions(cluster, sa, perm.LEADER_ELECTION_NEEDED, ns, allowed=True)
    _assert_permissions(cluster, sa, perm.LEADER_ELECTION_NEEDED, outside, allowed=False)
    _assert_permissions(cluster, sa, perm.CLUSTER_NEEDED + perm.NAMESPACED_MODE_ONLY, None, allowed=True)
    _assert_permissions(cluster, sa, perm.CLUSTER_DENIED, None, allowed=False)

    uninstall_chart(
        cluster,
        release,
        ns,
        [f"clusterrole/{release}-{ns}-cluster", f"clusterrolebinding/{release}-{ns}-cluster"],
    )
