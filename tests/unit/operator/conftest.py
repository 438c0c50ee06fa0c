"""Fixtures of the operator's unit tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def operator_info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The operator's logger (``modelpool.operator``) captured from INFO up; a module that reads its
    lines with :func:`unit.operator.helpers.operator_lines` uses it for every test, with
    ``pytestmark = pytest.mark.usefixtures("operator_info_logs")``."""
    caplog.set_level(logging.INFO, logger="modelpool.operator")
