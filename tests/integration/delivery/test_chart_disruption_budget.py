"""The chart's PodDisruptionBudget for the operator's own pods: rendered with a leader and
standbys only, over exactly the Deployment's pods, off by a value, nil-safe for releases upgraded
with --reuse-values, and on a real install filled in by the disruption controller."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from integration.cluster.kubetools import wait_for
from integration.delivery.deliverytools import (
    by_kind,
    helm,
    helm_template,
    install_chart,
    one,
    render,
    uninstall_chart,
)
from modelpool.devcluster.cluster import DevCluster

pytestmark = pytest.mark.cluster


def test_only_a_leader_with_standbys_gets_a_budget() -> None:
    # minAvailable 1 of 1 would refuse every eviction: the drain of the operator's node would hang.
    counts = {
        n: len(by_kind(render(set_json={"replicaCount": str(n)}), "PodDisruptionBudget")) for n in range(4)
    }
    assert counts == {0: 0, 1: 0, 2: 1, 3: 1}


@pytest.mark.parametrize("replicas", ["2", "3"])
def test_a_leader_and_standbys_keep_one_through_drains(replicas: str) -> None:
    objs = render(namespace="ops", set_json={"replicaCount": replicas})
    budget = one(objs, "PodDisruptionBudget")
    deployment = one(objs, "Deployment")
    assert budget["metadata"]["name"] == deployment["metadata"]["name"]
    assert budget["metadata"]["namespace"] == "ops"
    assert budget["metadata"]["labels"] == deployment["metadata"]["labels"]
    assert budget["spec"] == {
        "minAvailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_budget_is_turned_off_by_a_value() -> None:
    for enabled, budgets in (("true", 1), ("false", 0)):
        objs = render(set_json={"replicaCount": "2", "podDisruptionBudget.enabled": enabled})
        assert len(by_kind(objs, "PodDisruptionBudget")) == budgets


def test_a_release_from_before_the_value_upgraded_with_reuse_values_renders_the_default() -> None:
    # `helm upgrade --reuse-values` renders the new templates with the old release's values, which
    # have no podDisruptionBudget key: the render must not fail on it (a nil map), and the default
    # (on) applies, as on a fresh install.
    objs = render(set_json={"podDisruptionBudget": "null", "replicaCount": "2"})
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert by_kind(render(set_json={"podDisruptionBudget": "null"}), "PodDisruptionBudget") == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ('{"enabled": "yes"}', "at '/podDisruptionBudget/enabled': got string, want boolean"),
        (
            '{"enabled": true, "minAvailable": 2}',
            "at '/podDisruptionBudget': additional properties 'minAvailable'",
        ),
        ("true", "at '/podDisruptionBudget': got boolean, want object"),
    ],
)
def test_schema_rejects_bad_values_naming_them(value: str, error: str) -> None:
    proc = helm_template(set_json={"podDisruptionBudget": value})
    assert proc.returncode != 0, f"podDisruptionBudget={value} was accepted"
    assert "schema" in proc.stderr and error in proc.stderr, proc.stderr


def test_installed_with_two_replicas_the_disruption_controller_counts_them(
    cluster: DevCluster, namespaces: Callable[..., str]
) -> None:
    ns = namespaces(**{"pod-security.kubernetes.io/enforce": "restricted"})
    release = f"modelpool-{ns}"
    install_chart(cluster, release, ns, "--skip-crds", "--set", "replicaCount=2")

    def counted() -> dict[str, int] | None:
        proc = cluster.kubectl("get", "pdb", release, "-n", ns, "-o", "json", check=False)
        status = json.loads(proc.stdout).get("status", {}) if proc.returncode == 0 else {}
        return status if status.get("currentHealthy") == 2 else None

    # kube-controller-manager's disruption controller: two healthy, one needed, one may go.
    status = wait_for(counted, 60, "the PodDisruptionBudget's status")
    assert (status["expectedPods"], status["desiredHealthy"], status["disruptionsAllowed"]) == (2, 1, 1)
    uninstall_chart(cluster, release, ns, [f"clusterrole/{release}", f"clusterrolebinding/{release}"])
    assert cluster.kubectl("get", "pdb", "-n", ns, "-o", "name").stdout.strip() == ""
    assert helm("status", release, "-n", ns, cluster=cluster).returncode != 0
