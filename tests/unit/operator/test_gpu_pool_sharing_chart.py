"""The chart's ``gpuPoolSharing``: ``namespace`` by default (and for a release upgraded with
``--reuse-values`` from a chart without the value), ``cluster`` passed as ``--gpu-pool-sharing``,
anything else refused by the schema. Real helm of the toolchain, no cluster."""

from __future__ import annotations

import yaml

from integration.delivery.deliverytools import CHART, documents, helm_template, operator_container, render


def _sharing_args(**set_json: str) -> list[str]:
    args: list[str] = operator_container(render(set_json=set_json))["args"]
    return [a for a in args if a.startswith("--gpu-pool-sharing")]


def test_pools_share_a_gpu_pool_only_within_a_namespace_by_default() -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text())["gpuPoolSharing"] == "namespace"
    assert _sharing_args() == []  # the operator's own default: namespace
    assert _sharing_args(gpuPoolSharing='"namespace"') == []


def test_cluster_sharing_is_passed_to_the_operator() -> None:
    assert _sharing_args(gpuPoolSharing='"cluster"') == ["--gpu-pool-sharing=cluster"]


def test_a_release_without_the_value_renders_namespace_sharing() -> None:
    """``helm upgrade --reuse-values`` from an older chart: the key is absent (as with null)."""
    proc = helm_template(set_json={"gpuPoolSharing": "null"})
    assert proc.returncode == 0, proc.stderr
    args = operator_container(documents(proc.stdout))["args"]
    assert not [a for a in args if a.startswith("--gpu-pool-sharing")]


def test_another_value_is_refused_naming_it() -> None:
    proc = helm_template(set_json={"gpuPoolSharing": '"everyone"'})
    assert proc.returncode != 0 and "gpuPoolSharing" in proc.stderr, proc.stderr
