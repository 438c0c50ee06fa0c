"""Stopping and starting one component of a ``kwokctl --runtime binary`` cluster, as kwokctl
recorded it (its ``kwok.yaml``, ``pids/`` and ``logs/``), with stand-in processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import yaml

from modelpool.devcluster.cluster import DevCluster

# A stand-in component: prints its args, then lives until killed.
SCRIPT = "import sys, time; print('args', sys.argv[1:], flush=True); time.sleep(600)"


def _cluster(tmp_path: Path, names: list[str]) -> DevCluster:
    cluster = DevCluster(name="fake", workdir=tmp_path)
    root = cluster.cluster_dir
    (root / "pids").mkdir(parents=True)
    (root / "logs").mkdir()
    config = {
        "kind": "KwokctlConfiguration",
        "components": [
            {
                "name": name,
                "binary": sys.executable,
                "args": ["-c", SCRIPT, f"--{name}"],
                "workDir": str(root),
            }
            for name in names
        ],
    }
    stage = {"kind": "Stage", "metadata": {"name": "pod-ready"}}
    (root / "kwok.yaml").write_text(yaml.safe_dump_all([config, stage]))
    return cluster


def test_a_component_is_started_as_kwokctl_would_and_stopped_again(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, ["kube-scheduler", "kube-controller-manager"])
    assert cluster.component_pid("kube-scheduler") is None
    pid = cluster.start_component("kube-scheduler")
    try:
        assert cluster.component_pid("kube-scheduler") == pid
        assert (cluster.cluster_dir / "pids" / "kube-scheduler.pid").read_text() == str(pid)
        assert cluster.start_component("kube-scheduler") == pid  # running already: left alone
        log = cluster.cluster_dir / "logs" / "kube-scheduler.log"
        deadline = time.monotonic() + 10
        while "--kube-scheduler" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "args ['--kube-scheduler']" in log.read_text()  # its own args, its output in its log
        cluster.stop_component("kube-scheduler")
        assert cluster.component_pid("kube-scheduler") is None
    finally:
        cluster.stop_component("kube-scheduler")


def test_ensure_running_starts_what_exited_as_the_kubelet_would(tmp_path: Path) -> None:
    """A component that exited on its own (kube-controller-manager losing its lease) is seen as
    stopped, also when this process started it and has not reaped it yet, and is started again."""
    cluster = _cluster(tmp_path, ["kube-controller-manager", "kube-scheduler"])
    try:
        cluster.ensure_running()
        first = cluster.component_pid("kube-controller-manager")
        assert first is not None and cluster.component_pid("kube-scheduler") is not None
        os.kill(first, 9)  # exits by itself: a zombie child until reaped
        time.sleep(0.2)
        assert cluster.component_pid("kube-controller-manager") is None
        cluster.ensure_running()
        again = cluster.component_pid("kube-controller-manager")
        assert again is not None and again != first
    finally:
        for name in ("kube-controller-manager", "kube-scheduler"):
            cluster.stop_component(name)


def test_a_cluster_listening_beyond_loopback_is_told_apart(tmp_path: Path) -> None:
    """A cluster made before kwokctl's bindAddress was set listens on 0.0.0.0: create() makes it
    anew instead of reusing it."""
    cluster = _cluster(tmp_path, ["etcd"])
    assert cluster.loopback_only()
    config, stage = yaml.safe_load_all((cluster.cluster_dir / "kwok.yaml").read_text())
    config["components"][0]["args"].append("--listen-client-urls=http://0.0.0.0:32765")
    (cluster.cluster_dir / "kwok.yaml").write_text(yaml.safe_dump_all([config, stage]))
    assert not cluster.loopback_only()
    assert not DevCluster(name="none", workdir=tmp_path / "absent").loopback_only()


def test_kwokctl_is_told_to_bind_every_component_to_loopback() -> None:
    from modelpool.devcluster.cluster import KWOKCTL_CONFIG

    assert yaml.safe_load(KWOKCTL_CONFIG) == {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {"bindAddress": "127.0.0.1"},
    }
