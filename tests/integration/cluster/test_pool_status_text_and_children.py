"""On the real API server: a hold reason longer than the CRD's 1024 characters still gets the
pool's status written (cut, its start kept); a child whose variant label was edited by hand is
corrected, not deleted; ProfilesCurrent goes when no variant references a profile any more."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from integration.cluster.kubetools import Kube, wait_for
from integration.cluster.test_modelpool_operator import pool_manifest, ready
from integration.scaling.promtools import exporting
from modelpool.devcluster.prometheus import PrometheusProcess

pytestmark = pytest.mark.cluster
Obj = dict[str, Any]

# The node label of every series: ~600 characters. The query below names it twice, so a reason
# that quotes the query is well over the CRD's 1024 (reasons quote a user's PromQL; since the
# security review they no longer quote other series' labels).
LONG_NODE = "gke-ml-prod-a100-pool-2-" + "x" * 600
NODE_MATCHER = f'node=~"{LONG_NODE}|{LONG_NODE}"'
STARTED = time.time()


def _long_label_series() -> list[str]:
    """Triton's request counter of the variant's model (bank-small) on three pods of one long node."""
    elapsed = time.time() - STARTED
    lines = ["# TYPE nv_inference_request_success counter"]
    lines += [
        f'nv_inference_request_success{{model="bank-small",node="{LONG_NODE}",pod="p{i}"}} {elapsed:.3f}'
        for i in range(3)
    ]
    return lines


@pytest.fixture
def long_label_prometheus() -> Iterator[str]:
    """A real Prometheus (Debian's) scraping the exporter above on 127.0.0.1 every second."""
    with (
        exporting(_long_label_series) as target,
        PrometheusProcess({"pods": [target]}, scrape_interval_s=1.0) as prom,
    ):
        yield prom.url


@pytest.mark.prometheus
def test_a_reason_longer_than_the_field_is_cut_and_the_status_written(
    kube: Kube, long_label_prometheus: str
) -> None:
    """compute_status used to raise on the 1024-character limit, after the pass had applied its
    replicas: the status was never written (and the API server would refuse it anyway). The
    served-rate override has no sum(): Prometheus answers three series, the scaler holds, and its
    reason quotes the query (which names the long node label twice)."""
    scaling = {
        "intervalSeconds": 1,
        "rateWindowSeconds": 5,
        "prometheusURL": long_label_prometheus,
        "queries": {"servedRate": f"rate(nv_inference_request_success{{$selector,{NODE_MATCHER}}}[$window])"},
    }
    manifest = pool_manifest("longreason", scaling=scaling)
    manifest["spec"]["variants"] = manifest["spec"]["variants"][:1]
    kube.apply(manifest)

    def cut_reason() -> str | None:
        pool = kube.get("modelpool", "longreason") or {}
        variants = (pool.get("status") or {}).get("variants") or []
        reason = str(variants[0].get("reason", "")) if variants else ""
        return reason if reason.endswith("more characters)") else None

    reason = wait_for(cut_reason, 60, "the status with the cut reason")
    assert len(reason) == 1024
    assert reason.startswith("holding ")
    assert "spec.scaling.queries.servedRate" in reason and "gke-ml-prod-a100-pool-2-xxxx" in reason, reason
    metrics = kube.condition("modelpool", "longreason", "MetricsAvailable")
    assert metrics is not None and metrics["reason"] == "MetricsUnavailable"
    assert "returned 3 series, expected one" in metrics["message"], metrics["message"]
    assert "'pod'" not in metrics["message"]  # the series' own labels stay out of the status


def test_a_child_whose_variant_label_was_removed_is_corrected_not_deleted(kube: Kube) -> None:
    kube.apply(pool_manifest("drift", scaling={"enabled": False}))
    wait_for(lambda: ready(kube, "drift"), 90, "pool Ready")
    before = {kind: kube.get(kind, "drift-small") for kind in ("deployment", "service")}
    for kind in before:
        kube.run("label", kind, "drift-small", "modelpool.dev/variant-")

    def restored() -> bool | None:
        labels = [
            (kube.get(kind, "drift-small") or {}).get("metadata", {}).get("labels", {}) for kind in before
        ]
        return all(label.get("modelpool.dev/variant") == "small" for label in labels) or None

    wait_for(restored, 30, "the variant labels restored")
    kube.run("annotate", "modelpool", "drift", "poke=1", "--overwrite")  # one more pass, to be sure
    wait_for(lambda: ready(kube, "drift"), 30, "pool Ready")
    for kind, old in before.items():
        now = kube.get(kind, "drift-small")
        assert now is not None and old is not None
        assert now["metadata"]["uid"] == old["metadata"]["uid"], f"{kind} was deleted and recreated"
    assert [e["message"] for e in kube.events("drift") if e["reason"] == "Deleted"] == []


def test_profiles_current_goes_with_the_last_profile_reference(kube: Kube) -> None:
    manifest = pool_manifest("profless", scaling={"enabled": False})
    manifest["spec"]["variants"] = manifest["spec"]["variants"][:1]
    manifest["spec"]["variants"][0]["profile"] = {
        "configMapKeyRef": {"name": "profiles", "key": "small.yaml"}
    }
    kube.apply(manifest)
    missing = wait_for(
        lambda: (cond := kube.condition("modelpool", "profless", "ProfilesCurrent")) and cond,
        30,
        "ProfilesCurrent",
    )
    assert missing["reason"] == "ProfileMissing"
    del manifest["spec"]["variants"][0]["profile"]
    kube.apply(manifest)

    def gone() -> bool | None:
        pool = kube.get("modelpool", "profless") or {}
        status = pool.get("status") or {}
        if status.get("observedGeneration") != pool.get("metadata", {}).get("generation"):
            return None
        return all(cond["type"] != "ProfilesCurrent" for cond in status.get("conditions", [])) or None

    wait_for(gone, 30, "ProfilesCurrent removed")
