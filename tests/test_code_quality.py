"""Lint (ruff) and static types (mypy --strict) are part of the test suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_lint() -> None:
    proc = _run(str(BIN / "ruff"), "check", "operator", "tests")
    assert proc.returncode == 0, proc.stdout[-6000:]


def test_ruff_format() -> None:
    proc = _run(str(BIN / "ruff"), "format", "--check", "operator", "tests")
    assert proc.returncode == 0, proc.stdout[-6000:]


def test_mypy_strict() -> None:
    proc = _run(str(BIN / "mypy"))
    assert proc.returncode == 0, proc.stdout[-6000:]
