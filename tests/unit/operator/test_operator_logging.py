"""The operator's log: one handler on the root logger, so each line is written once."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from modelpool.cli import use_kopf_logging


@pytest.fixture
def root_handlers() -> Iterator[list[logging.Handler]]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield root.handlers
    root.handlers[:] = saved
    root.setLevel(level)


def test_each_line_is_written_once(
    root_handlers: list[logging.Handler], capsys: pytest.CaptureFixture[str]
) -> None:
    logging.basicConfig(level="INFO", force=True)  # what main() does before a subcommand runs
    use_kopf_logging(verbose=False)
    assert len(root_handlers) == 1
    logging.getLogger("modelpool.test").warning("once only")
    err = capsys.readouterr().err
    assert err.count("once only") == 1, err
