"""Fixtures every test area may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only data sets and traces beside the checkout (``../shared/data``)."""
    base = Path(os.environ.get("MODELPOOL_SHARED", REPO_ROOT.parent / "shared"))
    return base / "data"


# --- no silent skips --------------------------------------------------------------------------
# A skipped test proves nothing, yet a run that skipped one looks green. Every test runs in the
# full `make test` run (.ci/setup.sh installs what each needs), so a skip fails the run unless
# MODELPOOL_ALLOW_SKIPS=1 says that a local partial run may skip. Tests deselected (-k, -m) are not
# collected into the run at all: they are not skips and do not count.
ALLOW_SKIPS_ENV = "MODELPOOL_ALLOW_SKIPS"
_skipped: list[str] = []


def _skip_allowed() -> bool:
    return os.environ.get(ALLOW_SKIPS_ENV) == "1"


def _record_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionstart(session: pytest.Session) -> None:
    _skipped.clear()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)  # a module that skips itself (pytest.skip at import, importorskip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)  # a skip mark (reported in setup) or pytest.skip() in the test


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and not _skip_allowed() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    if _skipped and not _skip_allowed():
        terminalreporter.write_sep("=", f"{len(_skipped)} skipped test(s) fail this run", red=True)
        for line in _skipped:
            terminalreporter.write_line(f"SKIPPED {line}", red=True)
        terminalreporter.write_line(
            f"Every test must run: install what it needs (.ci/setup.sh), or set {ALLOW_SKIPS_ENV}=1 "
            "for a local partial run."
        )
