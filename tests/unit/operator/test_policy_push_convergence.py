"""A RoutingPolicy's passes converge on what the routers really run: the generation it publishes
is above every generation a router or the stored status reports whenever a router runs other
content, so a lost status write, a recreated policy or a router left on other content never leaves
a router behind while the status says it is programmed. Routers are real router servers on
127.0.0.1; the API server is a dict."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml

from modelpool.api.routingpolicy import MAX_LISTED_ROUTERS
from modelpool.controllers import policy_reconciler
from modelpool.controllers.router_push import choose_generation
from modelpool.controllers.routing_config import build_router_config, config_digest, plan_weights
from modelpool.kube import KubeClient, Obj
from modelpool.routing.config import RouterConfig, parse_config_bytes
from modelpool.routing.server import RunningRouter, start_router
from unit.operator import test_routing_config as rc
from unit.operator import test_routing_weights as rw
from unit.operator.test_spec_edge_cases import API

TOKEN = "s3cret"
NS = "ns"
REPO_ROOT = Path(__file__).resolve().parents[3]


def _variant(name: str, tier: str) -> dict[str, Any]:
    return {"name": name, "tier": tier, "model": {"name": f"m_{name}", "repository": "/m"}}


def _pool_spec() -> dict[str, Any]:
    return {"gpuPool": {"gpuBudget": 8}, "variants": [_variant("small", "small"), _variant("large", "large")]}


def _policy_spec(port: int, pool: str = "bank") -> dict[str, Any]:
    return {
        "poolRef": {"name": pool},
        "mode": "weighted",
        "weights": [{"variant": "small", "weight": 3}, {"variant": "large", "weight": 1}],
        "routerSelector": {"matchLabels": {"app": "router"}},
        "routerPort": port,
    }


def _config(generation: int, small: int, pool: str = "bank", policy: str | None = "p") -> RouterConfig:
    """A router's own config (endpoints where nothing listens: no request is routed here)."""
    variants = [
        {"name": n, "tier": n, "tritonModel": n[0], "weight": w, "endpoints": ["http://127.0.0.1:9"]}
        for n, w in (("small", small), ("large", 1))
    ]
    body = {
        "generation": generation,
        "pool": pool,
        "mode": "weighted",
        "modelName": pool,
        "variants": variants,
    }
    if policy is not None:
        body["policy"] = policy
    return RouterConfig.model_validate(body)


def _pod(name: str = "router-0", ready: bool = True, phase: str = "Running", ip: str = "127.0.0.1") -> Obj:
    """A router pod that mounts the policy's token Secret (the token is sent to no other pod)."""
    return {
        "metadata": {"name": name, "labels": {"app": "router"}},
        "spec": {
            "containers": [{"name": "router"}],
            "volumes": [{"name": "token", "secret": {"secretName": "p-router-token"}}],
        },
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class Kube:
    """An API server as a dict by path that keeps what is applied and patched (the status too)."""

    def __init__(self, objects: dict[str, Obj], pods: list[Obj]) -> None:
        self.objects, self.pods = objects, pods
        self.patched: list[Obj] = []

    async def get(self, path: str) -> Obj | None:
        return copy.deepcopy(self.objects.get(path))

    async def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
        return copy.deepcopy(self.pods) if path.endswith("/pods") else []

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        self.objects[path] = copy.deepcopy(body)
        return body

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        self.patched.append(body)
        self.objects[path.removesuffix("/status")]["status"] = copy.deepcopy(body["status"])
        return body


POLICY = policy_reconciler.policy_path(NS, "p")


def _world(policy_spec: dict[str, Any], pods: list[Obj], pool: str = "bank") -> Kube:
    token = base64.b64encode(TOKEN.encode()).decode()
    return Kube(
        {
            POLICY: {"metadata": {"name": "p", "uid": "u2", "generation": 1}, "spec": policy_spec},
            policy_reconciler.pool_path(NS, pool): {
                "apiVersion": API,
                "kind": "ModelPool",
                "metadata": {"name": pool, "uid": "u1"},
                "spec": _pool_spec(),
            },
            f"/api/v1/namespaces/{NS}/secrets/p-router-token": {"data": {"token": token}},
        },
        pods,
    )


async def _pass(kube: Kube, client: httpx.AsyncClient | None = None) -> Obj:
    """One reconcile pass; the policy's stored status after it."""
    if client is None:
        async with httpx.AsyncClient(timeout=5) as http:
            await policy_reconciler.reconcile_policy(cast(KubeClient, kube), http, NS, "p", lambda *_: None)
    else:
        await policy_reconciler.reconcile_policy(cast(KubeClient, kube), client, NS, "p", lambda *_: None)
    status: Obj = kube.objects[POLICY]["status"]
    return status


def _cond(status: Obj, type_: str) -> Obj:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _config_map_generation(kube: Kube) -> int:
    cm = kube.objects[f"/api/v1/namespaces/{NS}/configmaps/p-router-config"]
    return int(json.loads(cm["data"]["config.json"])["generation"])


async def _router(config: RouterConfig) -> RunningRouter:
    return await start_router(config, admin_token=TOKEN)


# --- D1: a lost status write, then a change: the routers get the change -------------------------


async def test_a_change_after_a_lost_status_write_reaches_the_router_under_a_new_generation() -> None:
    """The push of generation 1 landed but its status write failed; the next change was rendered
    as generation 1 again (stored status: none), push_one saw generation 1 on the router, skipped
    the PUT and reported it programmed: the router never got the change."""
    running = await _router(_config(0, small=1))
    try:
        kube = _world(_policy_spec(running.port), [_pod()])
        real_patch = kube.merge_patch
        calls = 0

        async def lost_once(path: str, body: Obj) -> Obj:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("API server unavailable after the push")
            return await real_patch(path, body)

        kube.merge_patch = lost_once  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await _pass(kube)
        assert running.app.router.config.generation == 1 and "status" not in kube.objects[POLICY]
        pool = kube.objects[policy_reconciler.pool_path(NS, "bank")]
        pool["spec"]["variants"][1]["cost"] = 50  # the change: the large variant costs 50x
        status = await _pass(kube)
        live = running.app.router.config
        assert live.variant("large").cost == 50.0
        assert status["weightsGeneration"] == live.generation == 2 == _config_map_generation(kube)
        assert _cond(status, "Programmed")["status"] == "True"
    finally:
        await running.close()


async def test_a_router_on_other_content_at_the_same_generation_is_pushed_a_higher_one() -> None:
    """Whatever put it there, a router that runs other content under the generation the status
    holds gets the policy's content under a generation above it."""
    running = await _router(_config(0, small=1))
    try:
        kube = _world(_policy_spec(running.port), [_pod()])
        first = await _pass(kube)
        assert first["weightsGeneration"] == 1 and running.app.router.config.generation == 1
        running.app.apply(_config(1, small=7))  # same generation, other weights
        status = await _pass(kube)
        assert status["weightsGeneration"] == running.app.router.config.generation == 2
        assert running.app.router.config.variant("small").weight == 3
        assert _cond(status, "Programmed")["status"] == "True"
        again = await _pass(kube)
        assert again["weightsGeneration"] == 2, "no new generation while nothing changes"
    finally:
        await running.close()


async def test_a_status_write_lost_without_a_change_keeps_the_generation() -> None:
    running = await _router(_config(0, small=1))
    try:
        kube = _world(_policy_spec(running.port), [_pod()])
        await _pass(kube)
        del kube.objects[POLICY]["status"]  # lost, or wiped: the routers and the ConfigMap say 1
        status = await _pass(kube)
        assert status["weightsGeneration"] == running.app.router.config.generation == 1
        assert _cond(status, "Programmed")["status"] == "True"
    finally:
        await running.close()


# --- D2: a recreated policy starts above what the routers run ------------------------------------


async def test_a_recreated_policy_programs_routers_that_run_a_higher_generation() -> None:
    """A recreated policy (or a lost status) started at generation 1, which routers at generation 7
    refuse as older (409) on every pass, for ever."""
    running = await _router(_config(7, small=1))
    try:
        kube = _world(_policy_spec(running.port), [_pod()])
        status = await _pass(kube)
        assert status["weightsGeneration"] == 8 == running.app.router.config.generation
        assert running.app.router.config.variant("small").weight == 3
        assert _cond(status, "Programmed")["status"] == "True"
        assert (await _pass(kube))["weightsGeneration"] == 8
    finally:
        await running.close()


# --- D3: a router bound to another pool: the message names the fix -------------------------------


async def test_a_router_serving_another_pool_is_reported_with_the_fix() -> None:
    running = await _router(_config(3, small=1, pool="bank"))
    try:
        kube = _world(_policy_spec(running.port, pool="bank2"), [_pod()], pool="bank2")
        status = await _pass(kube)
        programmed = _cond(status, "Programmed")
        assert (programmed["status"], programmed["reason"]) == ("False", "PushFailed")
        assert "serves pool 'bank'" in programmed["message"]
        assert "create a new RoutingPolicy" in programmed["message"]
        assert running.app.router.config.pool == "bank"
        assert status["weightsGeneration"] == 1, "another pool's generations are not this policy's"
    finally:
        await running.close()


def test_the_crd_refuses_a_changed_pool_ref() -> None:
    """spec.poolRef could be edited, but every router it programs is bound to one pool."""
    for folder in ("crds", "charts/modelpool/crds"):
        crd = yaml.safe_load((REPO_ROOT / folder / "modelpool.dev_routingpolicies.yaml").read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        rules = spec["properties"]["poolRef"]["x-kubernetes-validations"]
        assert [r["rule"] for r in rules] == ["self == oldSelf"], folder
        assert "spec.poolRef is immutable" in rules[0]["message"]
        assert "create a new RoutingPolicy" in rules[0]["message"]


# --- D4: ended pods the selector still matches are neither counted nor pushed --------------------


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
async def test_an_ended_pod_is_neither_counted_nor_pushed(phase: str) -> None:
    """An evicted router pod that still matched routerSelector kept Programmed False for ever
    ("waiting for the pod to be Ready")."""
    running = await _router(_config(0, small=1))
    try:
        kube = _world(_policy_spec(running.port), [_pod(), _pod("router-old", ready=False, phase=phase)])
        status = await _pass(kube)
        assert [r["pod"] for r in status["routers"]] == ["router-0"]
        programmed = _cond(status, "Programmed")
        assert programmed["status"] == "True", programmed
        assert programmed["message"] == "1 router(s) run generation 1"
    finally:
        await running.close()


# --- another policy's router: its 409 is reported, with no new generation each pass ---------------


def _answering(get: Obj, put: httpx.Response) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=get) if request.method == "GET" else put

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_a_router_of_another_policy_is_reported_and_the_generation_stays() -> None:
    theirs = _config(9, small=1, policy="other")
    refusal = (
        "config rejected, the active one stays: policy: this router is programmed by RoutingPolicy "
        "'other', the push is from 'p'"
    )
    get = {"generation": 9, "pool": "bank", "config": theirs.to_json()}
    kube = _world(_policy_spec(8080), [_pod(ip="10.0.0.1")])
    async with _answering(get, httpx.Response(409, json={"error": refusal})) as client:
        for _ in range(3):
            status = await _pass(kube, client)
    programmed = _cond(status, "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "PushFailed")
    assert "RoutingPolicy 'other'" in programmed["message"] and "409" in programmed["message"]
    assert status["weightsGeneration"] == 1


# --- S1: InvalidRouterConfig also says the references resolve ------------------------------------


async def test_an_unbuildable_router_config_clears_a_stale_pool_not_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The InvalidRouterConfig refusal set Programmed and Ready only: a ResolvedRefs False
    PoolNotFound of an earlier pass stayed although the pool had been created since."""
    kube = _world(_policy_spec(8080), [])
    pool = kube.objects.pop(policy_reconciler.pool_path(NS, "bank"))
    status = await _pass(kube)
    assert _cond(status, "ResolvedRefs")["reason"] == "PoolNotFound"
    kube.objects[policy_reconciler.pool_path(NS, "bank")] = pool

    def unbuildable(*_: Any, **__: Any) -> RouterConfig:
        return RouterConfig.model_validate({"generation": -1})  # raises ValidationError

    monkeypatch.setattr(policy_reconciler, "build_router_config", unbuildable)
    status = await _pass(kube)
    assert _cond(status, "Programmed")["reason"] == "InvalidRouterConfig"
    resolved = _cond(status, "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("True", "Resolved")


# --- S4: status.routers stays bounded ------------------------------------------------------------


async def test_the_listed_routers_are_capped_problems_first_and_the_rest_counted() -> None:
    pods = [_pod(f"r-{i:03d}", ip=f"10.0.{i // 200}.{i % 200 + 1}") for i in range(120)]
    pods += [_pod(f"z-{i}", ready=False) for i in range(3)]
    pods.append(_pod("a-ended", ready=False, phase="Failed"))
    get = {"generation": 0, "pool": "bank"}
    kube = _world(_policy_spec(8080), pods)
    async with _answering(get, httpx.Response(200, json={"generation": 1, "changed": True})) as client:
        status = await _pass(kube, client)
    listed = [r["pod"] for r in status["routers"]]
    assert len(listed) == MAX_LISTED_ROUTERS == 50
    assert listed[:3] == ["z-0", "z-1", "z-2"]
    assert listed[3:] == [f"r-{i:03d}" for i in range(47)]
    assert (status["routersSelected"], status["routersProgrammed"]) == (123, 120)
    assert _cond(status, "Programmed")["message"].startswith("3/123 routers not programmed: z-0: waiting")


# --- what a router answers compares equal to what was pushed: no new generation every pass --------


@pytest.mark.parametrize("mode", ["weighted", "cascade", "tiered"])
def test_a_pushed_config_reads_back_with_the_same_digest(mode: str) -> None:
    """A router whose GET answer digested differently from what it was pushed would get a new
    generation on every pass."""
    specs = {
        "weighted": rc._policy(),
        "cascade": rc._policy(mode="cascade", cascade={"draft": "small", "verifier": "large"}),
        "tiered": rc._policy(
            mode="tiered",
            tiered={
                "scorer": {"kind": "torch", "path": "/s.pt"},
                "tiers": [
                    {"maxComplexityPercent": 33, "target": "small"},
                    {"maxComplexityPercent": 100, "target": "cascade"},
                ],
            },
            cascade={"draft": "int8", "verifier": "large", "acceptThresholdPercent": 67},
            objectives={"latencySLOMs": 333},
        ),
    }
    pool = rc._pool()
    spec = specs[mode]
    plan = plan_weights(spec, pool, None)
    config = build_router_config("ns", "bank", spec, pool, plan, 3, policy_name="p")
    pushed = parse_config_bytes(json.dumps(config.model_dump(mode="json", by_alias=True, exclude_none=True)))
    answered = RouterConfig.model_validate(json.loads(json.dumps(pushed.to_json())))
    assert config_digest(answered) == config_digest(config)
    assert choose_generation(config_digest(config), [(3, config_digest(answered))]) == 3


# --- the pass plans with the profiles' capacity -------------------------------------------------


async def test_a_pass_moves_a_shortfall_by_the_capacity_of_the_variants_profile() -> None:
    """The policy's pass hands the profiles' capacity per replica to the weight planner: without
    it a variant whose capacity only its profile knows moved nothing ("capacity per replica is
    unknown") however short it was."""
    running = await _router(_config(0, small=1))
    try:
        spec = _policy_spec(running.port)
        spec["weights"] = [{"variant": "small", "weight": 100}, {"variant": "large", "weight": 1}]
        kube = _world(spec, [_pod()])
        pool = kube.objects[policy_reconciler.pool_path(NS, "bank")]
        profile = json.loads(rc._profile("small", [(0.0, 1.0, 10, 0.9)]).to_json())
        profile["modelName"] = "m_small"  # the model the variant serves: the profile is current
        pool["spec"]["variants"][0].update(profile={"inline": profile}, maxReplicas=10)
        short = rw._one_short()  # small: 10 replicas, 1 req/s short
        pool["status"] = short.model_dump(mode="json", by_alias=True, exclude_none=True)
        await _pass(kube)
        live = running.app.router.config
        assert (live.variant("small").weight, live.variant("large").weight) == (99, 2)
    finally:
        await running.close()


# --- routers whose config this operator cannot read: no ping-pong, no PUT every pass ---------------


class _OtherVersionRouter:
    """A router of another version behind a mock transport, by pod IP: a newer one answers GET with
    a config that has a field this operator does not know (RouterConfig forbids extra fields), an
    older one with its generation and pool only. It refuses pushes as the real router does: of
    another policy than the one that programmed it, or older than what it runs (409)."""

    def __init__(self, configs: dict[str, Obj], newer: bool) -> None:
        self.configs, self.newer = configs, newer
        self.puts = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        active = self.configs[request.url.host]
        if request.method == "GET":
            body: Obj = {"generation": active["generation"], "pool": active["pool"]}
            if self.newer:
                body["config"] = {**active, "futureField": True}
            return httpx.Response(200, json=body)
        self.puts += 1
        pushed = json.loads(request.content)
        if active.get("policy") is not None and pushed.get("policy") != active["policy"]:
            error = (
                "config rejected, the active one stays: policy: this router is programmed by "
                f"RoutingPolicy {active['policy']!r}, this config comes from another RoutingPolicy"
            )
            return httpx.Response(409, json={"error": error})
        if pushed["generation"] < active["generation"]:
            return httpx.Response(409, json={"error": "config rejected, the active one stays: generation"})
        self.configs[request.url.host] = pushed
        return httpx.Response(200, json={"generation": pushed["generation"], "changed": True})


def _pod_of_both(name: str, ip: str) -> Obj:
    pod = _pod(name, ip=ip)
    pod["spec"]["volumes"] = [
        {"name": f"token-{p}", "secret": {"secretName": f"{p}-router-token"}} for p in ("p1", "p2")
    ]
    return pod


@pytest.mark.parametrize("newer", [True, False], ids=["newer-router", "older-router"])
async def test_two_policies_selecting_each_others_router_do_not_raise_each_others_generation(
    newer: bool,
) -> None:
    """Two policies of one pool whose routerSelectors overlap, each with a router it programmed:
    when this operator could not read those routers' configs it could not tell the other policy's
    router from its own, counted its generation, and each pass published one above the other's
    (a NewGeneration Event, a ConfigMap write and a PUT each pass, for ever)."""
    token = base64.b64encode(TOKEN.encode()).decode()
    kube = Kube(
        {
            policy_reconciler.pool_path(NS, "bank"): {
                "apiVersion": API,
                "kind": "ModelPool",
                "metadata": {"name": "bank", "uid": "u1"},
                "spec": _pool_spec(),
            },
        },
        [_pod_of_both("router-a", "10.0.0.1"), _pod_of_both("router-b", "10.0.0.2")],
    )
    for i, name in enumerate(("p1", "p2")):
        spec = _policy_spec(8080)
        spec["weights"][0]["weight"] = 3 + i  # each policy its own content
        kube.objects[policy_reconciler.policy_path(NS, name)] = {
            "metadata": {"name": name, "uid": f"u-{name}", "generation": 1},
            "spec": spec,
        }
        kube.objects[f"/api/v1/namespaces/{NS}/secrets/{name}-router-token"] = {"data": {"token": token}}
    router = _OtherVersionRouter(
        {
            "10.0.0.1": {"generation": 1, "pool": "bank", "policy": "p1"},
            "10.0.0.2": {"generation": 1, "pool": "bank", "policy": "p2"},
        },
        newer,
    )
    events: list[str] = []
    generations: list[list[int]] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.handle)) as client:
        for _ in range(5):
            generations.append([])
            for name in ("p1", "p2"):
                status = await policy_reconciler.reconcile_policy(
                    cast(KubeClient, kube), client, NS, name, lambda _t, reason, _m: events.append(reason)
                )
                assert status is not None
                generations[-1].append(status.weights_generation)
    assert generations[-1] == generations[-2] == generations[-3], generations
    # One first generation each: a newer router names its policy, an older one shows it by refusing
    # the push (409), after which it no longer counts.
    assert events.count("NewGeneration") == 2, events
    for name in ("p1", "p2"):
        status = kube.objects[policy_reconciler.policy_path(NS, name)]["status"]
        other = next(r for r in status["routers"] if not r["programmed"])
        assert "409" in other["message"] and "programmed by RoutingPolicy" in other["message"]


@pytest.mark.parametrize("newer", [True, False], ids=["newer-router", "older-router"])
async def test_a_router_whose_config_cannot_be_read_is_pushed_once(newer: bool) -> None:
    """A router whose GET config this operator cannot read (an older router's has none, a newer
    one's has fields it does not know) was PUT on every pass: whether it ran the content was
    unknown. It runs it when it reports the generation under which the status or the ConfigMap say
    this content was published."""
    router = _OtherVersionRouter({"127.0.0.1": {"generation": 0, "pool": "bank"}}, newer)
    kube = _world(_policy_spec(8080), [_pod()])
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.handle)) as client:
        statuses = [await _pass(kube, client) for _ in range(4)]
        assert [s["weightsGeneration"] for s in statuses] == [1, 1, 1, 1]
        assert router.puts == 1, f"{router.puts} PUTs in 4 passes with nothing changed"
        assert statuses[-1]["routers"][0]["message"] == "running this generation"
        assert _cond(statuses[-1], "Programmed")["status"] == "True"
        del kube.objects[POLICY]["status"]  # lost: the ConfigMap still says so
        assert (await _pass(kube, client))["weightsGeneration"] == 1 and router.puts == 1
