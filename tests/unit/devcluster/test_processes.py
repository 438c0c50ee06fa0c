"""CPU accounting and stopping of the local processes the project starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelpool.devcluster.processes import cpu_seconds, stop_process

BURN_SLEEP_REPORT = (
    "import time\n"
    "end = time.process_time() + 0.4\n"
    "while time.process_time() < end: pass\n"
    "time.sleep(0.3)\n"  # wall time that uses no CPU
    "print(time.process_time(), flush=True)\n"  # its own CPU clock
    "time.sleep(60)"
)


def test_cpu_seconds_counts_busy_time_not_sleep() -> None:
    """cpu_seconds reads what the child's own CPU clock reads (its start and 0.4 s of work), not
    the time it slept: the two CPU counts agree; counting the sleep would add 0.3 s."""
    proc = subprocess.Popen([sys.executable, "-c", BURN_SLEEP_REPORT], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        own = float(proc.stdout.readline())  # from here on it sleeps
        used = cpu_seconds(proc.pid)
        assert own >= 0.4
        assert used == pytest.approx(own, abs=0.05)
    finally:
        assert stop_process(proc, grace=5) is not None
    assert proc.poll() is not None
