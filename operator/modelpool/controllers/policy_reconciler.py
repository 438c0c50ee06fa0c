"""Level-based reconciliation of one RoutingPolicy: resolve, compute weights, program routers.

Each pass: resolve the pool and the variants the policy names, compute the
effective weights from the policy and the pool's live status, render the
RouterConfig, ask every router pod the selector matches what it runs, choose the
generation (a new one only when the content changed or a router runs other content:
above every generation reported), keep the config in a ConfigMap that router pods
mount (so a restarted router never starts empty), and push it to every ready router
pod that does not run it yet.

The spec's author chooses the pods, the port and the token's Secret, and the operator may read
every Secret: the token goes only to pods that reference its Secret (see
:func:`~modelpool.controllers.router_push.references_secret`), and the ConfigMap is written only
while it is this policy's own (its controller owner reference), never taken over.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from modelpool.api import conditions as c
from modelpool.api.base import API_VERSION, Condition, field_errors
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.api.routingpolicy import RouterStatus, RoutingPolicySpec, RoutingPolicyStatus
from modelpool.api.semantics import (
    POLICY_LABEL,
    child_name_problems,
    policy_name_problems,
    routing_reference_problems,
)
from modelpool.builders.triton import is_subset
from modelpool.controllers.children import owned_by
from modelpool.controllers.pool_reconciler import EventSink, parse_status, pool_path
from modelpool.controllers.profiles import load_profiles
from modelpool.controllers.router_push import (
    Published,
    choose_generation,
    listed_routers,
    live_router_pods,
    program_routers,
    read_routers,
    refused_for_policy,
    router_reports,
)
from modelpool.controllers.routing_config import (
    build_router_config,
    config_digest,
    effective_weights,
    plan_tiers,
    plan_weights,
)
from modelpool.controllers.status_io import parse_stored, write_status
from modelpool.kube import KubeClient, KubeError, Obj, resource_path
from modelpool.routing.config import ConfigError, parse_config_bytes
from modelpool.scaling.metrics import forget_policy_objectives, record_policy_objectives

CONFIG_KEY = "config.json"


def policy_path(namespace: str, name: str) -> str:
    return resource_path(API_VERSION, "routingpolicies", namespace, name)


def config_map_name(policy: str) -> str:
    return f"{policy}-router-config"


def default_token_secret(policy: str) -> str:
    return f"{policy}-router-token"


def build_config_map(namespace: str, policy: str, uid: str, config_json: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(policy),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "modelpool", POLICY_LABEL: policy},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "RoutingPolicy",
                    "name": policy,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {CONFIG_KEY: config_json},
    }


@dataclass(frozen=True)
class AdminToken:
    """The routers' admin token as the policy's Secret holds it: the token, or what is wrong."""

    secret: str
    key: str
    token: str | None = None
    problem: str | None = None  # None with no token: the Secret or its key is missing


def _decode_token(raw: str) -> tuple[str | None, str | None]:
    """The Secret's value as the routers' admin token, or why it cannot be one: (token, problem)."""
    try:
        token = base64.b64decode(raw).decode().strip()
    except ValueError:  # not base64 (binascii.Error), or not UTF-8 (UnicodeDecodeError)
        return None, "is not UTF-8 text"
    if not token:
        return None, "is empty"
    if not (token.isascii() and token.isprintable()):
        # The token travels in an HTTP header ("Authorization: Bearer ..."): printable ASCII only.
        return None, "holds characters an HTTP header cannot carry (only printable ASCII)"
    return token, None


async def _admin_token(kube: KubeClient, namespace: str, policy: str, spec: RoutingPolicySpec) -> AdminToken:
    ref_name = (
        spec.admin_token_secret_ref.name if spec.admin_token_secret_ref else default_token_secret(policy)
    )
    key = spec.admin_token_secret_ref.key if spec.admin_token_secret_ref else "token"
    secret = await kube.get(resource_path("v1", "secrets", namespace, ref_name))
    raw = ((secret or {}).get("data") or {}).get(key)
    if not raw:
        return AdminToken(ref_name, key)
    token, problem = _decode_token(raw) if isinstance(raw, str) else (None, "is not a string")
    return AdminToken(ref_name, key, token=token, problem=problem)


def _status(
    previous: RoutingPolicyStatus | None,
    generation: int,
    now: str,
    settings: list[tuple[str, bool, str, str]],
    **fields: Any,
) -> RoutingPolicyStatus:
    conds: list[Condition] = list(previous.conditions) if previous else []
    for type_, ok, reason, message in settings:
        conds = c.set_condition(conds, type_, "True" if ok else "False", reason, message, generation, now)
    base = previous or RoutingPolicyStatus()
    return base.model_copy(update={"observed_generation": generation, "conditions": conds, **fields})


def _published(previous: RoutingPolicyStatus | None, live_cm: Obj | None) -> list[tuple[int, str | None]]:
    """(generation, content digest) of what this policy published before: the stored status, and
    the ConfigMap (written before the status, so it may be one generation ahead of it)."""
    found: list[tuple[int, str | None]] = []
    if previous is not None:
        found.append((previous.weights_generation, previous.config_digest or None))
    raw = ((live_cm or {}).get("data") or {}).get(CONFIG_KEY)
    if isinstance(raw, str):
        try:
            config = parse_config_bytes(raw)
        except ConfigError:  # edited by hand, or another version's: the status and routers decide
            return found
        found.append((config.generation, config_digest(config)))
    return found


def _programmed(routers: list[RouterStatus], generation: int, cm: str) -> tuple[bool, str, str]:
    if not routers:
        return (
            False,
            "NoRoutersSelected",
            f"no pod matches spec.routerSelector; routers can mount ConfigMap {cm} (generation {generation})",
        )
    failed = [r for r in routers if not r.programmed]
    if failed:
        return (
            False,
            "PushFailed",
            f"{len(failed)}/{len(routers)} routers not programmed: {failed[0].pod}: {failed[0].message}",
        )
    return True, "Programmed", f"{len(routers)} router(s) run generation {generation}"


async def reconcile_policy(
    kube: KubeClient,
    http: httpx.AsyncClient,
    namespace: str,
    name: str,
    emit: EventSink,
    now: Callable[[], str] = c.now_rfc3339,
) -> RoutingPolicyStatus | None:
    obj = await kube.get(policy_path(namespace, name))
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return None
    generation = int(obj["metadata"].get("generation", 0))
    uid = obj["metadata"]["uid"]
    raw_status = obj.get("status")
    previous = parse_stored(RoutingPolicyStatus, raw_status)
    stamp = now()

    async def refuse(
        failed: str, reason: str, message: str, *met: tuple[str, bool, str, str]
    ) -> RoutingPolicyStatus:
        """Report why the policy cannot be acted on (routers keep their last config); ``met``: the
        conditions found true on the way (so none of an earlier pass stays false)."""
        settings = [(c.ACCEPTED, True, "Valid", "spec is valid")] if failed != c.ACCEPTED else []
        settings += [*met, (failed, False, reason, message), (c.READY, False, reason, message)]
        status = _status(previous, generation, stamp, settings)
        if await write_status(kube, policy_path(namespace, name), status, raw_status):
            emit("Warning", reason, message)
        return status

    try:
        spec = RoutingPolicySpec.model_validate(obj.get("spec", {}))
    except ValidationError as err:
        forget_policy_objectives(namespace, name)  # not Accepted: no cap to alert on
        return await refuse(c.ACCEPTED, "InvalidSpec", field_errors(err, "spec") + "; fix that field")
    # The cap ModelPoolLargeShareAboveCap compares the routers' answers with (leader only: passes).
    record_policy_objectives(namespace, name, spec.pool_ref.name, spec.objectives.max_large_share_percent)
    if named := policy_name_problems(name):
        return await refuse(c.ACCEPTED, named[0].reason, named[0].message)
    accepted = (c.ACCEPTED, True, "Valid", "spec is valid")

    pool_obj = await kube.get(pool_path(namespace, spec.pool_ref.name))
    if pool_obj is None:
        message = (
            f"spec.poolRef.name: ModelPool {spec.pool_ref.name!r} not found in namespace {namespace}; "
            "create it or fix the name"
        )
        return await refuse(c.RESOLVED_REFS, "PoolNotFound", message)
    try:
        pool = ModelPoolSpec.model_validate(pool_obj.get("spec", {}))
    except ValidationError as err:
        message = f"ModelPool {spec.pool_ref.name!r} has an invalid spec: {field_errors(err, 'spec')}"
        return await refuse(c.RESOLVED_REFS, "InvalidPool", message)
    if unbuilt := child_name_problems(spec.pool_ref.name, pool):
        message = (
            f"ModelPool {spec.pool_ref.name!r} is not accepted, so it has no Services to route to: "
            f"{unbuilt[0].field}: {unbuilt[0].message}"
        )
        return await refuse(c.RESOLVED_REFS, "InvalidPool", message)
    problems = routing_reference_problems(spec, [v.name for v in pool.variants])
    if problems:
        return await refuse(c.RESOLVED_REFS, "VariantNotFound", "; ".join(p.message for p in problems))
    resolved = (c.RESOLVED_REFS, True, "Resolved", f"pool {spec.pool_ref.name} and every variant named exist")

    profiles = await load_profiles(kube, namespace, pool)
    plan = plan_weights(
        spec,
        pool,
        parse_status(pool_obj.get("status")),
        profiles.accuracy_percent,
        profiles.capacity_rps,
    )
    tiers = plan_tiers(spec, pool, profiles.profiles)
    old_generation = previous.weights_generation if previous else 0
    try:
        candidate = build_router_config(
            namespace, spec.pool_ref.name, spec, pool, plan, old_generation, tiers, policy_name=name
        )
    except ValidationError as err:  # a combination no check above foresaw: reported, not retried
        message = f"{field_errors(err, 'router config')}; fix the policy or pool {spec.pool_ref.name!r}"
        return await refuse(c.PROGRAMMED, "InvalidRouterConfig", message, resolved)
    digest = config_digest(candidate)

    cm_path = resource_path("v1", "configmaps", namespace, config_map_name(name))
    live_cm = await kube.get(cm_path)
    if live_cm is not None and not owned_by(live_cm, uid):
        # Applying would overwrite someone else's ConfigMap, and its owner reference would then
        # have the garbage collector delete it with the policy.
        message = (
            f"ConfigMap {config_map_name(name)} exists and is not controlled by this RoutingPolicy "
            f"(uid {uid}); delete or rename it, or rename the policy (a ConfigMap of a deleted "
            "RoutingPolicy of this name goes once the garbage collector removes it)"
        )
        return await refuse(c.PROGRAMMED, "ConfigMapConflict", message, resolved)
    selector = ",".join(f"{k}={v}" for k, v in sorted(spec.router_selector.match_labels.items()))
    pods = live_router_pods(await kube.list(resource_path("v1", "pods", namespace), selector))
    admin = await _admin_token(kube, namespace, name, spec) if pods else None
    token = admin.token if admin is not None else None
    secret = admin.secret if admin is not None else ""
    views = (
        await read_routers(http, pods, spec.router_port, token, secret=secret) if token is not None else []
    )
    # A pod that refused the last push as another policy's router is not this policy's to rise
    # above, even when its GET names no policy (an older router).
    refused = {r.pod for r in previous.routers if refused_for_policy(r)} if previous else set()
    published = Published(_published(previous, live_cm), refused)
    known = [*published.reports, *router_reports(views, candidate, refused)]
    candidate = candidate.model_copy(update={"generation": choose_generation(digest, known)})
    if candidate.generation != old_generation:
        emit(
            "Normal",
            "NewGeneration",
            f"router config generation {candidate.generation}: "
            + ", ".join(f"{n}={w}" for n, w in sorted(plan.weights.items())),
        )

    config_json = json.dumps(
        candidate.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True
    )
    cm = build_config_map(namespace, name, uid, config_json)
    if live_cm is None or not is_subset(cm, live_cm):
        try:
            await kube.apply(cm_path, cm)
        except KubeError as err:
            if err.namespace_terminating:
                return None  # the policy goes with its namespace: nothing to report or retry
            raise

    if admin is not None and admin.token is None:
        if admin.problem is None:
            why = f"admin token Secret {admin.secret} missing"
            programmed = (
                False,
                "AdminTokenMissing",
                f"Secret {admin.secret} with the routers' admin token (key {admin.key!r}) is missing; "
                "create it or set spec.adminTokenSecretRef",
            )
        else:
            why = f"admin token Secret {admin.secret} key {admin.key!r} {admin.problem}"
            programmed = (
                False,
                "AdminTokenInvalid",
                f"key {admin.key!r} of Secret {admin.secret} with the routers' admin token "
                f"{admin.problem}; store the token as printable ASCII text (the routers read the same "
                "Secret) or set spec.adminTokenSecretRef",
            )
        routers = [RouterStatus(pod=p["metadata"]["name"], message=why) for p in pods]
    else:
        routers = await program_routers(
            http, views, spec.router_port, token or "", candidate, secret=secret, published=published
        )
        programmed = _programmed(routers, candidate.generation, cm["metadata"]["name"])
    ok, reason, message = programmed
    status = _status(
        previous,
        generation,
        stamp,
        [
            accepted,
            resolved,
            (c.PROGRAMMED, ok, reason, message),
            (c.READY, ok, reason if not ok else "Ready", message),
        ],
        weights_generation=candidate.generation,
        config_digest=digest,
        effective_weights=effective_weights(plan),
        effective_tiers=tiers,
        routers=listed_routers(routers),
        routers_selected=len(routers),
        routers_programmed=sum(r.programmed for r in routers),
    )
    if (
        await write_status(kube, policy_path(namespace, name), status, raw_status)
        and not ok
        and reason == "PushFailed"
    ):
        emit("Warning", "PushFailed", message)
    return status
