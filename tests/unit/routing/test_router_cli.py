"""The router's stand-alone command line: its name in usage lines and its flag checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelpool.cli import main as modelpool_main
from modelpool.routing.cli import main


def test_help_names_the_command_as_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage.startswith("usage: python -m modelpool.routing [-h] {serve,check-config}")


@pytest.mark.parametrize("run", [main, lambda argv: modelpool_main(["router", *argv])])
def test_an_unknown_log_level_is_one_line_naming_the_flag(
    run: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["serve", "--config", "router.yaml", "--log-level", "chatty"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --log-level: 'chatty' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in err
    assert "Traceback" not in err
