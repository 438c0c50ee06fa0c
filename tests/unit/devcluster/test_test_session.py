"""The test session itself (tests/conftest.py, run as a plugin of a pytest in a subprocess): a
SIGTERM still tears the fixtures down (the clusters, servers and operators they started), and the
caller's MODELPOOL_* settings do not reach the operators the tests start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = TESTS_DIR.parent

SESSION = textwrap.dedent(
    """
    import os, signal, time
    from pathlib import Path

    import pytest

    MARK = Path(os.environ["MARK_DIR"])

    @pytest.fixture(scope="session")
    def resource():
        yield
        (MARK / "torn-down").write_text("yes")

    def test_settings(resource):
        assert "MODELPOOL_PROMETHEUS_URL" not in os.environ
        assert "MODELPOOL_METRICS_PORT" not in os.environ
        assert os.environ["MODELPOOL_METRICS_ADDR"] == "127.0.0.1"
        assert os.environ["MODELPOOL_CACHE"] == str(MARK / "cache")
        assert os.environ["MODELPOOL_ALLOW_SKIPS"] == "1"

    def test_sigterm(resource):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    """
)


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_session.py").write_text(SESSION)
    env = os.environ | {
        "PYTHONPATH": f"{REPO_ROOT / 'operator'}{os.pathsep}{TESTS_DIR}",
        "MARK_DIR": str(tmp_path),
        "MODELPOOL_PROMETHEUS_URL": "http://prometheus.example:9090",
        "MODELPOOL_METRICS_PORT": "8080",
        "MODELPOOL_METRICS_ADDR": "0.0.0.0",
        "MODELPOOL_CACHE": str(tmp_path / "cache"),
        "MODELPOOL_ALLOW_SKIPS": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(
        [*cmd, "test_session.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_callers_modelpool_settings_are_dropped_but_the_test_inputs_kept(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "-k", "settings")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_sigterm_still_runs_the_teardown(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "-k", "sigterm")
    assert proc.returncode != 0
    assert (tmp_path / "torn-down").is_file(), f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
