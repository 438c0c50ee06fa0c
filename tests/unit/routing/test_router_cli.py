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


def test_the_idle_timeout_flag_reaches_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelpool.routing import server

    got: list[tuple[object, ...]] = []
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: got.append(args))
    assert main(["serve", "--config", "router.yaml", "--idle-timeout-seconds", "120"]) == 0
    assert got[0][-1] == 120.0
    assert main(["serve", "--config", "router.yaml"]) == 0
    assert got[1][-1] == 75.0
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--config", "router.yaml", "--idle-timeout-seconds", "0"])
    assert exit_info.value.code == 2
    assert (
        "argument --idle-timeout-seconds: '0' is not a number of seconds above 0" in capsys.readouterr().err
    )
