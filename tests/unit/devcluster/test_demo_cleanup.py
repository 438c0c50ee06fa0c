"""`modelpool demo` against a stand-in cluster (no control plane runs): what it shows, the operator's
environment, and that a SIGTERM still stops the operator it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelpool import demo

OPERATOR_DIR = Path(demo.__file__).resolve().parents[1]

# A stand-in DevCluster: kubectl answers what the demo waits for; ``create namespace`` can send the
# demo a SIGTERM. ``start_operator`` runs ``sleep`` and prints its PID.
FAKE = textwrap.dedent(
    """
    import json, os, signal, subprocess, time
    from modelpool import demo

    class FakeCluster:
        calls = []

        def __init__(self, name, sigterm_at=None):
            self.name, self.kubeconfig, self.sigterm_at = name, "/nonexistent/kubeconfig", sigterm_at

        def create(self, nodes, gpus_per_node):
            pass

        def env(self):
            return dict(os.environ)

        def kubectl(self, *args, check=True, timeout=120, input_text=None):
            FakeCluster.calls.append(list(args))
            if self.sigterm_at is not None and self.sigterm_at in args:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
            out = ""
            if "modelpool" in args and "json" in args:
                out = json.dumps({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
            elif "deployment" in args and "json" in args:
                out = json.dumps({"metadata": {}})
            return subprocess.CompletedProcess(list(args), 0, out, "")

    def start_operator(cluster, log_path):
        proc = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("operator pid", proc.pid, flush=True)
        return proc
    """
)


def _fake_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(FAKE, namespace)  # the stand-in above, shared with the subprocess test
    return namespace


def test_the_demo_lists_the_pools_children_in_its_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_namespace()
    monkeypatch.setattr(demo, "DevCluster", fake["FakeCluster"])
    monkeypatch.setattr(demo, "start_operator", fake["start_operator"])
    monkeypatch.setenv("MODELPOOL_DEMO_LOG", str(tmp_path / "operator.log"))
    assert demo.run_demo(hold_seconds=0, cluster_name="fake") == 0
    calls: list[list[str]] = fake["FakeCluster"].calls
    [children] = [c for c in calls if "deployments,services,pods" in c]
    assert children[children.index("-n") + 1] == demo.NAMESPACE, children


def test_the_demos_operator_gets_none_of_the_callers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_namespace()["FakeCluster"]("fake")
    monkeypatch.setenv("MODELPOOL_PROMETHEUS_URL", "http://prometheus.example:9090")
    monkeypatch.setenv("MODELPOOL_METRICS_PORT", "8080")
    monkeypatch.setenv("MODELPOOL_METRICS_ADDR", "0.0.0.0")
    monkeypatch.setenv("MODELPOOL_CACHE", "/somewhere/cache")
    env = demo.operator_env(fake)
    assert "MODELPOOL_PROMETHEUS_URL" not in env and "MODELPOOL_METRICS_PORT" not in env
    assert env["MODELPOOL_METRICS_ADDR"] == "127.0.0.1"
    assert env["MODELPOOL_CACHE"] == "/somewhere/cache"
    assert env["MODELPOOL_RESYNC_SECONDS"] == "10"


def test_a_sigterm_to_the_demo_stops_its_operator(tmp_path: Path) -> None:
    script = FAKE + textwrap.dedent(
        """
        demo.DevCluster = lambda name: FakeCluster(name, sigterm_at="create")
        demo.start_operator = start_operator
        raise SystemExit(demo.run_demo(hold_seconds=0, cluster_name="fake"))
        """
    )
    env = os.environ | {"PYTHONPATH": str(OPERATOR_DIR), "MODELPOOL_DEMO_LOG": str(tmp_path / "op.log")}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    pids = [int(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("operator pid")]
    try:
        assert len(pids) == 1, proc.stdout + proc.stderr
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)  # stopped (and reaped) by the demo before it ended
        assert "done; the cluster keeps running" in proc.stdout, proc.stdout + proc.stderr
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
