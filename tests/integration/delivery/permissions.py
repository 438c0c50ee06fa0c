"""What the operator must and must not be allowed to do (checked with `kubectl auth can-i`).

Each entry is ``(verb, resource)``; a resource may name a subresource after a slash.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ALL_VERBS = ("get", "list", "watch", "create", "patch", "update", "delete")


def _each(resources: tuple[str, ...], verbs: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(verb, resource) for resource in resources for verb in verbs]


# Needed in every watched namespace.
NAMESPACED_NEEDED = [
    *_each(("modelpools.modelpool.dev", "routingpolicies.modelpool.dev"), ("get", "list", "watch", "patch")),
    *_each(("modelpools.modelpool.dev/status", "routingpolicies.modelpool.dev/status"), ("patch",)),
    # Children carry blockOwnerDeletion: an API server that enforces owner references' permissions
    # (OpenShift; the local test cluster too) needs this to create them.
    *_each(("modelpools.modelpool.dev/finalizers", "routingpolicies.modelpool.dev/finalizers"), ("update",)),
    *_each(("deployments.apps", "services"), ("get", "list", "watch", "create", "patch", "delete")),
    *_each(("configmaps",), ("get", "create", "patch")),
    *_each(("pods",), ("list", "watch")),
    *_each(("poddisruptionbudgets.policy",), ("get", "list", "create", "patch", "delete")),
    ("get", "secrets"),
    ("create", "events"),
]
# Never granted, in any namespace: the operator reads one Secret by name and never writes
# pods (nor evicts them), its own custom resources' specs, or RBAC.
NAMESPACED_DENIED = [
    *_each(("secrets",), ("list", "watch", "create", "update", "patch", "delete")),
    *_each(("pods",), ("get", "create", "update", "patch", "delete")),
    # Every write is a PATCH (server-side apply, merge patch): no update; no reads it never makes.
    *_each(("deployments.apps", "services", "configmaps"), ("update",)),
    *_each(("configmaps",), ("list", "watch", "delete")),
    *_each(("modelpools.modelpool.dev/status", "routingpolicies.modelpool.dev/status"), ("get", "update")),
    *_each(("events",), ("patch", "update")),
    *_each(("events.events.k8s.io",), ("create", "patch")),
    ("create", "pods/exec"),
    ("create", "pods/eviction"),  # it bounds evictions, it never evicts
    *_each(("poddisruptionbudgets.policy",), ("watch", "update")),  # listed per resync, applied
    *_each(("modelpools.modelpool.dev", "routingpolicies.modelpool.dev"), ("create", "update", "delete")),
    ("delete", "events"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "statefulsets.apps"),
    ("create", "serviceaccounts"),
]
# Cluster-scoped reads kopf needs in every mode (CRD scanning).
CLUSTER_NEEDED = _each(("customresourcedefinitions.apiextensions.k8s.io",), ("list", "watch"))
# Only an operator that serves a list of namespaces observes them (kopf's namespace_observer);
# a cluster-wide one does not.
NAMESPACED_MODE_ONLY = _each(("namespaces",), ("list", "watch"))
CLUSTER_DENIED = [
    *_each(
        ("customresourcedefinitions.apiextensions.k8s.io",), ("get", "create", "patch", "update", "delete")
    ),
    *_each(("namespaces",), ("create", "delete", "patch")),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("list", "nodes"),
]
# With leader election (the chart's default), in the release namespace only: the leader Lease.
LEADER_ELECTION_NEEDED = _each(("leases.coordination.k8s.io",), ("get", "create", "update"))
LEADER_ELECTION_DENIED = _each(("leases.coordination.k8s.io",), ("list", "watch", "patch", "delete"))


def rbac_grants(rbac_rules: Iterable[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    """Whether RBAC PolicyRules (of a Role or ClusterRole) grant ``verb`` on ``resource`` of ``group``."""
    for rule in rbac_rules:
        if rule.get("resourceNames"):
            continue  # grants some objects only
        groups, resources, verbs = (rule.get(k) or [] for k in ("apiGroups", "resources", "verbs"))
        if (
            (group in groups or "*" in groups)
            and (resource in resources or "*" in resources)
            and (verb in verbs or "*" in verbs)
        ):
            return True
    return False
