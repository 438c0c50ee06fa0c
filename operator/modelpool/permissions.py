"""What the operator does on the API server, as RBAC rules: the one list that the startup check
asks the API server about (SelfSubjectAccessReview) and that the chart's rbac.yaml must grant
(tests/unit/operator/test_startup_preflight.py renders the chart and checks each rule).

Where each comes from: kopf's watches and indexes (list, watch) and its finalizer and progress
annotations (patch) in controllers/handlers.py; the reconcile loops' reads and writes through
kube.KubeClient in controllers/pool_reconciler.py, policy_reconciler.py, profiles.py,
routed_slo.py and status_io.py (get, list, server-side apply = create and patch, delete, merge-patch
of /status), and of the variants' PodDisruptionBudgets in controllers/disruption_budgets.py (listed,
not watched: without them the rest is still reconciled); Events posted by kopf and the handlers
(create); kopf's scan of the CRDs and, when it serves a list of namespaces, its namespace observer
(kopf 1.45 _core/reactor/observation.py); with ``--leader-elect``, the leader Lease in the
operator's own namespace (leadership.py: get, create, update).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from modelpool.api.base import GROUP

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@dataclass(frozen=True)
class Rule:
    """Verbs on one resource (``resource/subresource`` for a subresource) of one API group."""

    group: str  # "" is the core group
    resource: str
    verbs: tuple[str, ...]
    why: str
    essential: bool = True
    """Without it nothing (or no pool) is reconciled: the operator waits until it is granted."""
    cluster_scoped: bool = False
    """A cluster-scoped resource: checked once, without a namespace."""
    namespaced_only: bool = False
    """Needed only when the operator serves a list of namespaces (``--namespace``)."""
    leader_election: bool = False
    """Needed only with ``--leader-elect``, and only in the Lease's namespace."""

    @property
    def name(self) -> str:
        """As ``kubectl auth can-i`` spells it: ``deployments.apps``, ``modelpools.modelpool.dev/status``."""
        plural, _, sub = self.resource.partition("/")
        qualified = f"{plural}.{self.group}" if self.group else plural
        return f"{qualified}/{sub}" if sub else qualified


RULES: tuple[Rule, ...] = (
    Rule(GROUP, "modelpools", ("get", "list", "watch", "patch"), "kopf watches pools and adds its finalizer"),
    Rule(GROUP, "modelpools/status", ("patch",), "the pool's status"),
    Rule(
        GROUP,
        "routingpolicies",
        ("get", "list", "watch", "patch"),
        "kopf watches policies and adds its finalizer",
    ),
    Rule(GROUP, "routingpolicies/status", ("patch",), "the policy's status"),
    Rule(
        GROUP,
        "modelpools/finalizers",
        ("update",),
        "where the API server enforces owner references' permissions (OpenShift), no child of a pool "
        "can be created: its ownerReference blocks the pool's deletion",
        essential=False,
    ),
    Rule(
        GROUP,
        "routingpolicies/finalizers",
        ("update",),
        "where the API server enforces owner references' permissions (OpenShift), no policy's router "
        "ConfigMap can be created",
        essential=False,
    ),
    Rule("apps", "deployments", ("get", "list", "watch", "create", "patch"), "the pool's Deployments"),
    Rule("", "services", ("get", "list", "watch", "create", "patch"), "the pool's Services"),
    Rule("", "pods", ("list", "watch"), "kopf's index of the pool's pods, the router pods"),
    Rule("", "configmaps", ("get", "create", "patch"), "the policy's router ConfigMap, profile ConfigMaps"),
    Rule(
        "apps",
        "deployments",
        ("delete",),
        "the Deployment of a variant removed from a pool stays",
        essential=False,
    ),
    Rule("", "services", ("delete",), "the Service of a variant removed from a pool stays", essential=False),
    Rule(
        "policy",
        "poddisruptionbudgets",
        ("get", "list", "create", "patch", "delete"),
        "no PodDisruptionBudgets: node drains are not bounded per variant (the pool's condition "
        "DisruptionBudgetApplied says so)",
        essential=False,
    ),
    Rule("", "secrets", ("get",), "a policy's router admin token cannot be read", essential=False),
    Rule("", "events", ("create",), "no Events on pools and policies", essential=False),
    Rule(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf does not see CRD changes until restarted",
        essential=False,
        cluster_scoped=True,
    ),
    Rule(
        "",
        "namespaces",
        ("list", "watch"),
        "kopf does not notice namespaces created or deleted until restarted",
        essential=False,
        cluster_scoped=True,
        namespaced_only=True,
    ),
    Rule(
        "coordination.k8s.io",
        "leases",
        ("get", "create", "update"),
        "the leader lease (--leader-elect)",
        leader_election=True,
    ),
)


@dataclass(frozen=True)
class Access:
    """One verb of a rule, in one namespace (None: every namespace, or a cluster-scoped resource)."""

    rule: Rule
    verb: str
    namespace: str | None

    def __str__(self) -> str:
        where = ""
        if not self.rule.cluster_scoped:
            where = " in all namespaces" if self.namespace is None else f" in namespace {self.namespace}"
        return f"{self.verb} {self.rule.name}{where}"

    def review(self) -> dict[str, Any]:
        """The SelfSubjectAccessReview that asks for it."""
        plural, _, sub = self.rule.resource.partition("/")
        attributes = {"verb": self.verb, "group": self.rule.group, "resource": plural}
        if sub:
            attributes["subresource"] = sub
        if self.namespace is not None:
            attributes["namespace"] = self.namespace
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }


def accesses(
    namespaces: Sequence[str] | None, rules: Iterable[Rule] = RULES, *, lease_namespace: str | None = None
) -> list[Access]:
    """Every access the operator needs: cluster-wide (``namespaces`` None), else in each namespace;
    with leader election (``lease_namespace``) the Lease's in its namespace only."""
    wanted: list[Access] = []
    for rule in rules:
        if rule.namespaced_only and namespaces is None:
            continue
        places: Sequence[str | None] = [None] if rule.cluster_scoped or namespaces is None else namespaces
        if rule.leader_election:
            if lease_namespace is None:
                continue
            places = [lease_namespace]
        wanted += [Access(rule, verb, ns) for ns in places for verb in rule.verbs]
    return wanted


class ReviewUnavailable(Exception):
    """The API server did not answer a SelfSubjectAccessReview (refused, not served, failed)."""


THROTTLED_TRIES = 5
"""How often one review is asked again after a 429 (API priority and fairness) before the check
gives up."""


def _ask(http: httpx.Client, access: Access, sleep: Callable[[float], None]) -> httpx.Response:
    """One review's answer; a 429 is waited out (its Retry-After, at most 5 s) and asked again."""
    for _ in range(THROTTLED_TRIES):
        try:
            response = http.post(SSAR_PATH, json=access.review())
        except httpx.TransportError as err:
            raise ReviewUnavailable(f"{type(err).__name__}: {err}") from err
        if response.status_code != 429:
            return response
        try:
            wait = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        sleep(min(max(wait, 0.1), 5.0))
    return response


def denied(
    http: httpx.Client, wanted: Iterable[Access], sleep: Callable[[float], None] = time.sleep
) -> list[Access]:
    """Those of ``wanted`` the API server says the operator may not do; :class:`ReviewUnavailable`
    when it cannot be asked."""
    missing: list[Access] = []
    for access in wanted:
        response = _ask(http, access, sleep)
        if response.status_code not in (200, 201):
            raise ReviewUnavailable(f"HTTP {response.status_code} {response.reason_phrase}")
        try:
            allowed = bool(response.json()["status"]["allowed"])
        except (ValueError, KeyError, TypeError) as err:
            raise ReviewUnavailable(f"unexpected answer: {response.text[:200]!r}") from err
        if not allowed:
            missing.append(access)
    return missing
