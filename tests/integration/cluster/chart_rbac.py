"""ServiceAccount ``op`` with the chart's RBAC for one watched namespace, rendered from the chart, so
the tests run an operator with exactly what users grant it (less what a test takes away)."""

from __future__ import annotations

import json
from typing import Any

from integration.delivery.deliverytools import render
from modelpool.devcluster.cluster import DevCluster

RBAC = "rbac.authorization.k8s.io/v1"
ANY_VERB = "*"


def _cluster_name(namespace: str) -> str:
    return f"modelpool-test-{namespace}"


def _without(rules: list[dict[str, Any]], verb: str, resource: str) -> list[dict[str, Any]]:
    """The rules less ``verb`` on ``resource`` (:data:`ANY_VERB`: the resource altogether); the
    other resources of a rule keep all its verbs, and a rule left with no verb goes."""
    kept = []
    for rule in rules:
        if resource not in rule["resources"]:
            kept.append(rule)
            continue
        if others := [r for r in rule["resources"] if r != resource]:
            kept.append({**rule, "resources": others})
        verbs = [] if verb == ANY_VERB else [v for v in rule["verbs"] if v != verb]
        if verbs:
            kept.append({**rule, "resources": [resource], "verbs": verbs})
    return kept


def grant_chart_rbac(cluster: DevCluster, namespace: str, without: tuple[str, str] | None = None) -> None:
    """ServiceAccount ``op`` in ``namespace`` with the chart's RBAC for it, less one ``(verb,
    resource)`` when ``without`` is given; applied again, it grants that back."""
    rendered = render(set_json={"watchNamespaces": json.dumps([namespace])})
    role = next(o for o in rendered if o["kind"] == "Role" and o["metadata"]["namespace"] == namespace)
    rules = role["rules"] if without is None else _without(role["rules"], *without)
    if without is not None:
        assert rules != role["rules"], f"the chart grants no {without}: nothing to take away"
    cluster_rules = next(o for o in rendered if o["kind"] == "ClusterRole")["rules"]
    subjects = [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}]
    name = _cluster_name(namespace)
    items = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op", "namespace": namespace}},
        {
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": {"name": "op", "namespace": namespace},
            "rules": rules,
        },
        {
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": {"name": "op", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
            "subjects": subjects,
        },
        {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name}, "rules": cluster_rules},
        {
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subjects,
        },
    ]
    cluster.kubectl(
        "apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def drop_chart_rbac(cluster: DevCluster, namespace: str) -> None:
    """The cluster-scoped part of :func:`grant_chart_rbac` (the rest goes with the namespace)."""
    name = _cluster_name(namespace)
    cluster.kubectl("delete", f"clusterrole/{name}", f"clusterrolebinding/{name}", check=False)
