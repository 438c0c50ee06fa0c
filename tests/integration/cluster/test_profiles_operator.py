"""Variants referencing capability profiles in ConfigMaps: missing, current and stale profiles."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from integration.cluster.kubetools import Kube, wait_for
from modelpool.models.profile import BucketAccuracy, CapabilityProfile, LatencyFigures

pytestmark = pytest.mark.cluster
Obj = dict[str, Any]


def profile(model: str = "bank-small", digest: str = "sha256-abc") -> CapabilityProfile:
    latency = LatencyFigures(p50_ms=0.6, p95_ms=1.1, mean_ms=0.7, requests=500, concurrency=1)
    now = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    return CapabilityProfile(
        variant="small",
        model_name=model,
        model_digest=digest,
        model_created=now,
        created=now,
        device="cpu",
        dataset="banking77/test",
        items=3080,
        accuracy=0.9,
        complexity_scorer="heuristic",
        accuracy_by_bucket=[BucketAccuracy(min_complexity=0, max_complexity=1, items=3080, accuracy=0.9)],
        latency_batch1=latency,
        latency_concurrent=latency,
        throughput_rps=900,
        capacity_per_replica_rps=850,
        memory_rss_bytes=50_000_000,
    )


def pool(digest: str) -> Obj:
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "prof"},
        "spec": {
            "gpuPool": {"gpuBudget": 4},
            "scaling": {"enabled": False},
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "bank-small", "repository": "/m", "digest": digest},
                    "profile": {"configMapKeyRef": {"name": "profiles", "key": "small.yaml"}},
                }
            ],
        },
    }


def profiles_current(kube: Kube, status: str, reason: str) -> Obj | None:
    cond = kube.condition("modelpool", "prof", "ProfilesCurrent")
    return cond if cond and cond["status"] == status and cond["reason"] == reason else None


def test_profile_missing_current_and_stale(kube: Kube) -> None:
    kube.apply(pool("sha256-abc"))
    missing = wait_for(lambda: profiles_current(kube, "False", "ProfileMissing"), 30, "ProfileMissing")
    assert "small.yaml" in missing["message"]

    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "profiles"},
        "data": {"small.yaml": profile().to_yaml()},
    }
    kube.apply(config_map)
    kube.run("annotate", "modelpool", "prof", "poke=1", "--overwrite")
    wait_for(lambda: profiles_current(kube, "True", "ProfilesCurrent"), 30, "ProfilesCurrent=True")

    kube.apply(pool("sha256-newer"))
    stale = wait_for(lambda: profiles_current(kube, "False", "ProfileStale"), 30, "ProfileStale")
    assert "sha256-newer" in stale["message"] and "modelpool models profile" in stale["message"]
    # A stale profile never blocks serving.
    assert wait_for(lambda: kube.condition("modelpool", "prof", "Ready"), 30, "Ready")["status"] == "True"


def test_inline_profile_and_exactly_one_source(kube: Kube) -> None:
    manifest = pool("sha256-abc")
    inline = profile().model_dump(mode="json", by_alias=True)
    manifest["spec"]["variants"][0]["profile"] = {"inline": inline}
    kube.apply(manifest)
    wait_for(lambda: profiles_current(kube, "True", "ProfilesCurrent"), 30, "inline ProfilesCurrent=True")
    stored = kube.get("modelpool", "prof")["spec"]["variants"][0]["profile"]["inline"]  # type: ignore[index]
    assert stored["capacityPerReplicaRps"] == 850

    both = pool("sha256-abc")
    both["spec"]["variants"][0]["profile"] = {
        "inline": inline,
        "configMapKeyRef": {"name": "profiles", "key": "small.yaml"},
    }
    proc = kube.apply(both, check=False)
    assert proc.returncode != 0
    assert "set exactly one of configMapKeyRef and inline" in proc.stderr
    assert "spec.variants[0].profile" in proc.stderr


def test_per_bucket_accuracy_retargets_a_tier_band(kube: Kube) -> None:
    weak = profile().model_copy(
        update={
            "complexity_scorer": "heuristic",
            "accuracy_by_bucket": [
                BucketAccuracy(min_complexity=0.0, max_complexity=0.3, items=1000, accuracy=0.97),
                BucketAccuracy(min_complexity=0.3, max_complexity=1.0, items=200, accuracy=0.55),
            ],
        }
    )
    manifest = pool("sha256-abc")
    manifest["spec"]["variants"][0]["profile"] = {"inline": weak.model_dump(mode="json", by_alias=True)}
    manifest["spec"]["variants"].append(
        {
            "name": "large",
            "tier": "large",
            "model": {"name": "bank-large", "repository": "/m"},
            "gpusPerReplica": 0,
        }
    )
    kube.apply(manifest)
    policy = {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "tiers"},
        "spec": {
            "poolRef": {"name": "prof"},
            "mode": "tiered",
            "tiered": {
                "tiers": [
                    {"maxComplexityPercent": 30, "target": "small"},
                    {"maxComplexityPercent": 60, "target": "small"},
                    {"maxComplexityPercent": 100, "target": "large"},
                ]
            },
            "objectives": {"qualityFloorPercent": 90},
            "routerSelector": {"matchLabels": {"app": "none"}},
        },
    }
    kube.apply(policy)

    def tiers() -> list[Obj] | None:
        status = (kube.get("routingpolicy", "tiers") or {}).get("status", {})
        return status.get("effectiveTiers") or None

    found = wait_for(tiers, 30, "effectiveTiers")
    assert [(t["maxComplexityPercent"], t["target"]) for t in found] == [
        (30, "small"),
        (60, "large"),
        (100, "large"),
    ]
    assert "55.0%" in found[1]["reason"]
    cm = kube.get("configmap", "tiers-router-config")
    assert cm is not None
    assert '"target": "large"' in cm["data"]["config.json"]
