"""Fixtures every test area may use."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from modelpool.devcluster.processes import interrupt_on_sigterm, without_caller_settings

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


# --- the operators, servers and clusters the tests start --------------------------------------
# The caller's operator settings (MODELPOOL_PROMETHEUS_URL, MODELPOOL_METRICS_PORT...) would reach
# every operator a test starts: only the documented inputs of the test command stay, and an
# operator's metrics listen on loopback unless a test says otherwise. A SIGTERM (a CI timeout,
# `kill`) ends the run as Ctrl-C does, through the teardown that stops what the fixtures started.
_restore_sigterm: Callable[[], None] | None = None


def _isolate_environment() -> None:
    kept = without_caller_settings(os.environ)
    for name in set(os.environ) - set(kept):
        del os.environ[name]
    os.environ["MODELPOOL_METRICS_ADDR"] = "127.0.0.1"


def pytest_sessionstart(session: pytest.Session) -> None:
    global _restore_sigterm
    _skipped.clear()
    _isolate_environment()
    _restore_sigterm = interrupt_on_sigterm()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _restore_sigterm
    if _restore_sigterm is not None:  # after the session's teardown
        _restore_sigterm()
        _restore_sigterm = None


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
