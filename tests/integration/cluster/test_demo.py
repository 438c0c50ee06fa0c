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

from modelpool.devcluster.cluster import DevCluster, checkout_name
from modelpool.devcluster.processes import stop_process

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[3]
CLUSTER_NAME = checkout_name("modelpool-demo-test", REPO_ROOT)  # another checkout's run has its own
TIMEOUT_S = 540


def test_the_demo_converges_the_samples_and_recreates_a_deleted_child(tmp_path: Path) -> None:
    env = os.environ | {
        "PYTHONPATH": str(REPO_ROOT / "operator"),
        "MODELPOOL_DEMO_LOG": str(tmp_path / "operator.log"),
    }
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            # In a session of its own: on a timeout (or an interrupted test) the demo and the
            # operator it started are stopped together (SIGTERM to the group: the demo stops its
            # operator, then SIGKILL to what is left).
            demo = subprocess.Popen(
                [sys.executable, "-m", "modelpool", "demo", "--hold", "0", "--name", CLUSTER_NAME],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        try:
            demo.wait(timeout=TIMEOUT_S)
        finally:
            stop_process(demo, grace=30, group=True)
    finally:
        DevCluster(name=CLUSTER_NAME).delete()
    out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    log = (tmp_path / "operator.log").read_text(errors="replace")
    assert demo.returncode == 0, f"{out[-4000:]}\n{err[-4000:]}\noperator log:\n{log[-4000:]}"
    assert "pool banking77 Ready" in out, out[-4000:]
    # The hand-deleted Deployment came back, and the pool was Ready again after it.
    assert "deleting deployment banking77-large by hand" in out
    recreated = out.split("deleting deployment banking77-large by hand", 1)[1]
    assert "recreated after" in recreated, recreated[-4000:]
    assert "banking77" in recreated.split("recreated after", 1)[1]
    assert f"modelpool devcluster down --name {CLUSTER_NAME}" in out
    assert "Traceback" not in log, log[-4000:]
