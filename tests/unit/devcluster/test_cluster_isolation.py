"""Clusters of parallel checkouts stay apart: names of their own, one ``kwokctl create`` at a time
(each picks its ports by probing), and caches inside the project's cache."""

from __future__ import annotations

import fcntl
import re
import subprocess
from pathlib import Path

import pytest

from modelpool.devcluster import cluster as cluster_mod
from modelpool.devcluster.cluster import DevCluster, checkout_name


def test_test_cluster_names_are_scoped_to_the_checkout(tmp_path: Path) -> None:
    one, other = tmp_path / "one", tmp_path / "other"
    name = checkout_name("modelpool-test", one)
    assert re.fullmatch(r"modelpool-test-[0-9a-f]{6}", name), name
    assert checkout_name("modelpool-test", one) == name
    assert checkout_name("modelpool-test", other) != name
    # kwokctl prefixes "kwok-" (the kubeconfig context); DNS labels stop at 63 characters.
    assert len("kwok-" + checkout_name("modelpool-crd-upgrade-test", one)) <= 63


def test_kwokctl_create_runs_under_a_lock_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPOOL_CACHE", str(tmp_path / "cache"))
    dev = DevCluster(name="fake", workdir=tmp_path / "kwok")
    held: list[bool] = []

    def kwokctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        lock = cluster_mod.create_lock_path()
        assert lock.parent == tmp_path / "cache"
        with lock.open("a") as other:  # another process's open file: it must wait
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(True)
            else:
                held.append(False)
                fcntl.flock(other, fcntl.LOCK_UN)
        return subprocess.CompletedProcess(list(args), 0, "", "")

    monkeypatch.setattr(dev, "_kwokctl", kwokctl)
    monkeypatch.setattr(dev, "ensure_nodes", lambda nodes, gpus_per_node: None)
    dev.create(nodes=1, gpus_per_node=1)
    assert held == [True]
    with cluster_mod.create_lock_path().open("a") as after:  # released once created
        fcntl.flock(after, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_kubectl_and_helm_caches_stay_in_the_project_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPOOL_CACHE", str(tmp_path / "cache"))
    dev = DevCluster(name="fake", workdir=tmp_path / "kwok")
    env = dev.env()
    assert Path(env["KUBECACHEDIR"]).is_relative_to(tmp_path / "kwok")
    for kind in ("CACHE", "CONFIG", "DATA"):
        assert Path(env[f"HELM_{kind}_HOME"]).is_relative_to(tmp_path / "cache"), kind
