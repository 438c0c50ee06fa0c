"""The README's main command, `make demo` (= `modelpool demo`), end to end on a cluster of its own.

It runs the demo as a user does, in a subprocess: a kwok control plane of its own (so it does not
disturb the suite's cluster or a user's `modelpool` one), the CRDs, the operator, every sample,
the pool Ready, a child Deployment deleted by hand and recreated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelpool.devcluster.cluster import DevCluster

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[3]
CLUSTER_NAME = "modelpool-demo-test"


def test_the_demo_converges_the_samples_and_recreates_a_deleted_child(tmp_path: Path) -> None:
    env = os.environ | {
        "PYTHONPATH": str(REPO_ROOT / "operator"),
        "MODELPOOL_DEMO_LOG": str(tmp_path / "operator.log"),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "modelpool", "demo", "--hold", "0", "--name", CLUSTER_NAME],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=540,
        )
    finally:
        DevCluster(name=CLUSTER_NAME).delete()
    out = proc.stdout
    log = (tmp_path / "operator.log").read_text(errors="replace")
    assert proc.returncode == 0, f"{out[-4000:]}\n{proc.stderr[-4000:]}\noperator log:\n{log[-4000:]}"
    assert "pool banking77 Ready" in out, out[-4000:]
    # The hand-deleted Deployment came back, and the pool was Ready again after it.
    assert "deleting deployment banking77-large by hand" in out
    recreated = out.split("deleting deployment banking77-large by hand", 1)[1]
    assert "recreated after" in recreated, recreated[-4000:]
    assert "banking77" in recreated.split("recreated after", 1)[1]
    assert f"modelpool devcluster down --name {CLUSTER_NAME}" in out
    assert "Traceback" not in log, log[-4000:]
