"""The RoutingPolicy controller on the real local cluster: references, the router ConfigMap,
and weights pushed to a router pod that really answers at its pod IP (a test host)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.cluster.kubetools import Kube, wait_for
from integration.cluster.netnshost import NetnsHost
from modelpool.routing.config import RouterConfig

pytestmark = pytest.mark.cluster
Obj = dict[str, Any]
TOKEN = "router-admin-token-for-tests"
ROUTER_PORT = 8080


def pool() -> Obj:
    variants = [
        {"name": "small", "tier": "small", "model": {"name": "bank-small", "repository": "/m"}, "cost": 1},
        {"name": "large", "tier": "large", "model": {"name": "bank-large", "repository": "/m"}, "cost": 20},
    ]
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "bank"},
        "spec": {"gpuPool": {"gpuBudget": 8}, "variants": variants},
    }


def policy(weights: dict[str, int], **spec: Any) -> Obj:
    body: Obj = {
        "poolRef": {"name": "bank"},
        "mode": "weighted",
        "weights": [{"variant": k, "weight": v} for k, v in weights.items()],
        "routerSelector": {"matchLabels": {"app": "bank-router"}},
        "routerPort": ROUTER_PORT,
    }
    body.update(spec)
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "route"},
        "spec": body,
    }


def cond(kube: Kube, type_: str, status: str) -> Obj | None:
    found = kube.condition("routingpolicy", "route", type_)
    return found if found and found["status"] == status else None


def test_unresolved_references_are_reported(kube: Kube) -> None:
    kube.apply(policy({"small": 1}))
    found = wait_for(lambda: cond(kube, "ResolvedRefs", "False"), 30, "ResolvedRefs=False")
    assert found["reason"] == "PoolNotFound"
    assert "spec.poolRef.name" in found["message"]
    kube.apply(pool())
    kube.apply(policy({"small": 1, "medium": 2}))
    found = wait_for(
        lambda: (f := cond(kube, "ResolvedRefs", "False")) and f["reason"] == "VariantNotFound" and f,
        30,
        "VariantNotFound",
    )
    assert "spec.weights[1].variant" in found["message"] and "medium" in found["message"]


def test_config_map_holds_a_valid_router_config_without_routers(kube: Kube) -> None:
    kube.apply(pool())
    kube.apply(policy({"small": 3, "large": 1}))
    found = wait_for(lambda: cond(kube, "Programmed", "False"), 30, "Programmed=False")
    assert found["reason"] == "NoRoutersSelected"
    assert cond(kube, "ResolvedRefs", "True") is not None
    cm = wait_for(lambda: kube.get("configmap", "route-router-config"), 30, "router ConfigMap")
    config = RouterConfig.model_validate_json(cm["data"]["config.json"])
    assert config.generation == 1
    assert {v.name: v.weight for v in config.variants} == {"small": 3, "large": 1}
    assert config.variant("large").endpoint_slice.service == "bank-large"  # type: ignore[union-attr]
    status = kube.get("routingpolicy", "route")["status"]  # type: ignore[index]
    assert status["weightsGeneration"] == 1
    assert {w["variant"]: w["weight"] for w in status["effectiveWeights"]} == {"small": 3, "large": 1}
    # A new weight makes a new generation; re-applying the same spec does not.
    kube.apply(policy({"small": 1, "large": 1}))
    wait_for(
        lambda: kube.get("routingpolicy", "route")["status"]["weightsGeneration"] == 2 or None,
        30,
        "generation 2",
    )  # type: ignore[index]
    kube.apply(policy({"small": 1, "large": 1}))
    time.sleep(3)
    assert kube.get("routingpolicy", "route")["status"]["weightsGeneration"] == 2  # type: ignore[index]


def _router_pod() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "bank-router-0",
            "labels": {"app": "bank-router", "modelpool.dev/router": "true"},
        },
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "containers": [
                {
                    "name": "router",
                    "image": "modelpool/router:dev",
                    "ports": [{"containerPort": ROUTER_PORT}],
                    "volumeMounts": [
                        {"name": "token", "mountPath": "/etc/modelpool/token", "readOnly": True}
                    ],
                }
            ],
            "volumes": [{"name": "token", "secret": {"secretName": "route-router-token"}}],
        },
    }


def _router_config_file(path: Path) -> None:
    # A valid starting config whose endpoint is the test host's own loopback: no traffic leaves it.
    path.write_text(
        json.dumps(
            {
                "generation": 0,
                "pool": "bank",
                "mode": "weighted",
                "modelName": "bank",
                "variants": [
                    {
                        "name": "small",
                        "tier": "small",
                        "tritonModel": "bank-small",
                        "weight": 1,
                        "endpoints": ["http://127.0.0.1:9"],
                    }
                ],
            }
        )
    )


def _admin(ip: str, token: str = TOKEN) -> Obj:
    response = httpx.get(
        f"http://{ip}:{ROUTER_PORT}/admin/config", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    response.raise_for_status()
    result: Obj = response.json()
    return result


def test_weights_are_pushed_to_a_real_router_pod(kube: Kube, tmp_path: Path) -> None:
    kube.apply(pool())
    kube.apply(_router_pod())
    pod = wait_for(
        lambda: (p := kube.get("pod", "bank-router-0")) and p["status"].get("podIP") and p,
        60,
        "router pod IP",
    )
    ip = pod["status"]["podIP"]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config_file = tmp_path / "config.json"
    _router_config_file(config_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    with NetnsHost(ip) as host:
        host.spawn(
            [sys.executable, "-m", "modelpool", "router", "serve", "--config", str(config_file), "--host", ip,
             "--port", str(ROUTER_PORT), "--admin-token-file", str(token_file)],
            tmp_path / "router.log",
            env=env,
        )  # fmt: skip
        try:
            wait_for(lambda: _safe_generation(ip) is not None or None, 60, f"router answering at {ip}")
        except AssertionError:
            log = (tmp_path / "router.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"router at {ip} never answered; its log:\n{log}") from None
        kube.run("create", "secret", "generic", "route-router-token", f"--from-literal=token={TOKEN}")
        kube.apply(policy({"small": 7, "large": 3}))
        wait_for(lambda: cond(kube, "Programmed", "True"), 60, "Programmed=True")
        active = _admin(ip)
        assert active["generation"] == 1
        weights = {v["name"]: v["weight"] for v in active["config"]["variants"]}
        assert weights == {"small": 7, "large": 3}
        status = kube.get("routingpolicy", "route")["status"]  # type: ignore[index]
        router = status["routers"][0]
        assert (router["pod"], router["generation"], router["programmed"]) == ("bank-router-0", 1, True)
        # The push names the policy, and the router labels its series with it (the large-share
        # alert joins them to the policy's cap on it).
        assert active["config"]["policy"] == "route"
        scraped = httpx.get(f"http://{ip}:{ROUTER_PORT}/metrics", timeout=5).text
        generation = [
            line for line in scraped.splitlines() if line.startswith("modelpool_router_config_generation{")
        ]
        assert generation == ['modelpool_router_config_generation{policy="route",pool="bank"} 1.0'], (
            generation
        )

        # A bad push (all weights zero) is refused by the router and the old weights stay.
        bad = dict(active["config"], generation=99)
        bad["variants"] = [dict(v, weight=0) for v in bad["variants"]]
        refused = httpx.put(
            f"http://{ip}:{ROUTER_PORT}/admin/config",
            json=bad,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        assert refused.status_code == 422
        assert "weight" in refused.json()["error"]
        assert _admin(ip)["generation"] == 1

        # A wrong token in the Secret: the router refuses, the policy says so, the weights stay.
        kube.run("delete", "secret", "route-router-token")
        kube.run("create", "secret", "generic", "route-router-token", "--from-literal=token=not-the-token")
        kube.apply(policy({"small": 1, "large": 1}))
        found = wait_for(
            lambda: cond(kube, "Programmed", "False"), 60, "Programmed=False after a refused push"
        )
        assert found["reason"] == "PushFailed" and "401" in found["message"]
        assert {v["name"]: v["weight"] for v in _admin(ip)["config"]["variants"]} == {"small": 7, "large": 3}

        # Fixed Secret: the new generation lands.
        kube.run("delete", "secret", "route-router-token")
        kube.run("create", "secret", "generic", "route-router-token", f"--from-literal=token={TOKEN}")
        wait_for(lambda: cond(kube, "Programmed", "True"), 60, "Programmed=True again")
        assert {v["name"]: v["weight"] for v in _admin(ip)["config"]["variants"]} == {"small": 1, "large": 1}
        # Stop pushing before the test host goes away.
        kube.run("delete", "routingpolicy", "route", "--wait=true")


def _safe_generation(ip: str) -> int | None:
    try:
        return int(_admin(ip)["generation"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None
