"""The variants' PodDisruptionBudgets through whole reconcile passes, against a fake API server:
created with the other children, kept without writes, restored when deleted, removed with their
variant or when turned off, and a missing permission that reconciles the rest all the same."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from modelpool.api import conditions as c
from modelpool.controllers.pool_reconciler import CachedChildReader, pool_path, reconcile_pool
from modelpool.kube import KubeClient, KubeError, Obj, resource_path
from modelpool.permissions import RULES

NS, POOL, UID = "ns", "bank", "uid-1"
PDBS = resource_path("policy/v1", "poddisruptionbudgets", NS)
DEPLOYMENTS = resource_path("apps/v1", "deployments", NS)
SERVICES = resource_path("v1", "services", NS)
FORBIDDEN = (
    'poddisruptionbudgets.policy is forbidden: User "system:serviceaccount:ns:op" cannot {verb} resource '
    '"poddisruptionbudgets" in API group "policy" in the namespace "ns"'
)


def _variant(name: str, **extra: Any) -> Obj:
    return {"name": name, "tier": "small", "model": {"name": name, "repository": "/models"}, **extra}


@dataclass
class FakeKube:
    """Objects by path; every request recorded as (verb, collection); PodDisruptionBudget requests
    refused (403) while ``pdb_forbidden``."""

    objects: dict[str, Obj] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    pdb_forbidden: bool = False

    def _check(self, verb: str, path: str) -> None:
        self.requests.append((verb, path.rsplit("/", 1)[0] if verb != "list" else path))
        if self.pdb_forbidden and path.startswith(PDBS):
            raise KubeError(403, "Forbidden", FORBIDDEN.format(verb=verb))

    async def get(self, path: str) -> Obj | None:
        self._check("get", path)
        return copy.deepcopy(self.objects.get(path))

    async def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
        self._check("list", path)
        wanted = dict(kv.split("=") for kv in (label_selector or "").split(",") if kv)
        return [
            copy.deepcopy(o)
            for p, o in self.objects.items()
            if p.rsplit("/", 1)[0] == path and wanted.items() <= o["metadata"].get("labels", {}).items()
        ]

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        self._check("patch", path)
        stored = copy.deepcopy(body)
        stored["metadata"]["uid"] = f"uid-of-{path}"
        self.objects[path] = stored
        return copy.deepcopy(stored)

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        self._check("patch", path)
        target = self.objects[path.removesuffix("/status")]
        target["status"] = body["status"]
        return copy.deepcopy(target)

    async def delete(self, path: str) -> None:
        self._check("delete", path)
        self.objects.pop(path, None)

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] in ("patch", "delete") and not r[1].endswith(POOL)]

    def pdbs(self) -> dict[str, Obj]:
        return {p.rsplit("/", 1)[1]: o for p, o in self.objects.items() if p.startswith(PDBS + "/")}


@dataclass
class Pass:
    kube: FakeKube
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def pool(self) -> Obj:
        return self.kube.objects[pool_path(NS, POOL)]

    def edit(self, **spec: Any) -> None:
        pool = self.pool()
        pool["spec"].update(spec)
        pool["metadata"]["generation"] += 1

    def condition(self) -> Obj:
        conds = self.pool()["status"]["conditions"]
        return next(cond for cond in conds if cond["type"] == c.DISRUPTION_BUDGET_APPLIED)

    async def run(self, *, cached: bool = False) -> None:
        """One pass: children listed from the API server, or (``cached``) from a watch cache that
        holds what the API server holds, as kopf's indexes would."""
        self.kube.requests.clear()
        reader = None
        if cached:

            def held(collection: str) -> Iterable[Obj]:
                return [o for p, o in self.kube.objects.items() if p.rsplit("/", 1)[0] == collection]

            reader = CachedChildReader(lambda: held(DEPLOYMENTS), lambda: held(SERVICES), lambda: ())
        await reconcile_pool(
            cast(KubeClient, self.kube),
            NS,
            POOL,
            lambda *event: self.events.append(event),
            child_reader=reader,
        )


def _pass(**spec: Any) -> Pass:
    pool = {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"gpuPool": {"gpuBudget": 8}, "variants": [_variant("small"), _variant("large")], **spec},
    }
    return Pass(FakeKube({pool_path(NS, POOL): pool}))


async def test_every_variant_gets_its_budget_with_its_other_children_and_nothing_is_rewritten() -> None:
    run = _pass()
    await run.run()
    pdbs = run.kube.pdbs()
    assert sorted(pdbs) == ["bank-large", "bank-small"]
    small = pdbs["bank-small"]
    assert small["spec"]["maxUnavailable"] == 1
    assert small["spec"]["selector"]["matchLabels"] == {
        "modelpool.dev/pool": POOL,
        "modelpool.dev/variant": "small",
    }
    assert small["metadata"]["ownerReferences"][0]["uid"] == UID
    cond = run.condition()
    assert (cond["status"], cond["reason"]) == ("True", "Applied")
    assert cond["message"] == "PodDisruptionBudgets: small maxUnavailable 1, large maxUnavailable 1"
    assert ("Normal", "Created", "created PodDisruptionBudget bank-small") in run.events
    # Unchanged: one LIST of the budgets per listing pass, no write.
    await run.run()
    assert run.kube.writes() == []
    assert ("list", PDBS) in run.kube.requests


async def test_a_cached_pass_reads_no_budget_unless_the_spec_changed() -> None:
    run = _pass()
    await run.run()
    await run.run(cached=True)
    assert [r for r in run.kube.requests if r[1].startswith(PDBS)] == []
    assert run.condition()["reason"] == "Applied"  # kept as it was
    run.edit(disruptionBudget={"maxUnavailable": "50%"})
    await run.run(cached=True)  # an edit takes effect at once, not at the next listing pass
    assert {n: o["spec"]["maxUnavailable"] for n, o in run.kube.pdbs().items()} == {
        "bank-small": "50%",
        "bank-large": "50%",
    }
    assert run.condition()["observedGeneration"] == 2
    assert (
        "Normal",
        "Updated",
        "updated PodDisruptionBudget bank-small to match the pool's spec",
    ) in run.events
    await run.run(cached=True)
    assert [r for r in run.kube.requests if r[1].startswith(PDBS)] == []


async def test_a_deleted_budget_is_recreated_by_the_next_listing_pass() -> None:
    run = _pass()
    await run.run()
    old = run.kube.objects.pop(f"{PDBS}/bank-small")
    await run.run()
    new = run.kube.pdbs()["bank-small"]
    assert new["spec"] == old["spec"]
    assert run.kube.writes() == [("patch", PDBS)]


async def test_turned_off_for_the_pool_or_a_variant_the_budgets_go() -> None:
    run = _pass(variants=[_variant("small"), _variant("large", disruptionBudget={"enabled": False})])
    await run.run()
    assert sorted(run.kube.pdbs()) == ["bank-small"]
    assert run.condition()["message"] == "PodDisruptionBudgets: small maxUnavailable 1, large off"
    run.edit(disruptionBudget={"enabled": False})
    await run.run()
    assert run.kube.pdbs() == {}
    assert (
        "Normal",
        "Deleted",
        "deleted PodDisruptionBudget bank-small: its disruptionBudget is off",
    ) in run.events
    cond = run.condition()
    assert (cond["status"], cond["reason"]) == ("True", "Disabled")
    assert "spec.disruptionBudget is off" in cond["message"]
    # The Deployments and Services stay.
    assert len([p for p in run.kube.objects if p.startswith(DEPLOYMENTS)]) == 2


async def test_a_removed_variant_takes_its_budget_along() -> None:
    run = _pass()
    await run.run()
    run.edit(variants=[_variant("small")])
    await run.run()
    assert sorted(run.kube.pdbs()) == ["bank-small"]
    assert (
        "Normal",
        "Deleted",
        "deleted PodDisruptionBudget bank-large: variant large left the spec",
    ) in run.events


async def test_a_budget_of_someone_elses_with_the_name_is_left_alone_and_reported() -> None:
    run = _pass()
    theirs = {"metadata": {"name": "bank-small", "namespace": NS, "labels": {}}, "spec": {"minAvailable": 1}}
    run.kube.objects[f"{PDBS}/bank-small"] = copy.deepcopy(theirs)
    await run.run()
    assert run.kube.pdbs()["bank-small"] == theirs
    cond = run.condition()
    assert (cond["status"], cond["reason"]) == ("False", "ChildConflict")
    assert "PodDisruptionBudget bank-small exists and is not owned by this pool" in cond["message"]
    # The pool serves: the conflict is the budget's, not the pool's readiness.
    ready = next(x for x in run.pool()["status"]["conditions"] if x["type"] == c.READY)
    degraded = next(x for x in run.pool()["status"]["conditions"] if x["type"] == c.DEGRADED)
    assert "bank-small" not in ready["message"] and degraded["reason"] != "ChildConflict"


async def test_without_the_permission_the_rest_is_reconciled_and_it_is_said_once() -> None:
    run = _pass()
    run.kube.pdb_forbidden = True
    await run.run()
    assert len([p for p in run.kube.objects if p.startswith(DEPLOYMENTS)]) == 2
    assert len([p for p in run.kube.objects if p.startswith(SERVICES)]) == 2
    cond = run.condition()
    assert (cond["status"], cond["reason"]) == ("False", "PermissionMissing")
    assert 'cannot list resource "poddisruptionbudgets"' in cond["message"]
    assert "grant get, list, create, patch, delete on poddisruptionbudgets.policy" in cond["message"]
    assert "or set spec.disruptionBudget.enabled: false" in cond["message"]
    warnings = [e for e in run.events if e[0] == "Warning"]
    assert warnings == [("Warning", "PermissionMissing", cond["message"])]
    for cached in (False, True, False):  # while it lasts: no new Event, no status write
        await run.run(cached=cached)
        assert run.kube.writes() == []
    assert len([e for e in run.events if e[0] == "Warning"]) == 1
    # Granted: the next listing pass creates the budgets.
    run.kube.pdb_forbidden = False
    await run.run()
    assert sorted(run.kube.pdbs()) == ["bank-large", "bank-small"]
    assert run.condition()["reason"] == "Applied"


async def test_turned_off_without_the_permission_is_no_problem() -> None:
    run = _pass(disruptionBudget={"enabled": False})
    run.kube.pdb_forbidden = True
    await run.run()
    cond = run.condition()
    assert (cond["status"], cond["reason"]) == ("True", "Disabled")
    assert [e for e in run.events if e[0] == "Warning"] == []


def test_the_permission_is_one_the_operator_starts_without() -> None:
    (rule,) = [r for r in RULES if r.resource == "poddisruptionbudgets"]
    assert rule.group == "policy" and not rule.essential
    assert set(rule.verbs) == {"get", "list", "create", "patch", "delete"}  # no watch: never watched
