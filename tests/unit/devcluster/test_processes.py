"""CPU accounting and stopping of the local processes the project starts."""

from __future__ import annotations

import subprocess
import sys
import time

from modelpool.devcluster.processes import cpu_seconds, stop_process

BURN_THEN_SLEEP = (
    "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ntime.sleep(60)"
)


def test_cpu_seconds_counts_busy_time_not_sleep() -> None:
    proc = subprocess.Popen([sys.executable, "-c", BURN_THEN_SLEEP])
    try:
        deadline = time.monotonic() + 20
        used = 0.0
        while time.monotonic() < deadline:
            used = cpu_seconds(proc.pid)
            if used >= 0.4:
                break
            time.sleep(0.05)
        assert used >= 0.4
        time.sleep(0.3)  # now it sleeps: almost no more CPU
        assert cpu_seconds(proc.pid) - used < 0.1
    finally:
        assert stop_process(proc, grace=5) is not None
    assert proc.poll() is not None
