"""docs/router.md lists every flag of ``router serve`` with the default argparse gives it, and its
sidecar example runs: the table and the example cannot drift from ``cli.py``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelpool.cli import build_parser
from modelpool.routing import cli

DOC = Path(__file__).resolve().parents[3] / "docs" / "router.md"
TABLE_HEAD = "| flag | default | when to change it |"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser()
    cli._add_commands(parser)
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _flags(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The command's options by their long name (``-h`` left out)."""
    return {a.option_strings[-1]: a for a in command._actions if a.option_strings and a.dest != "help"}


def _table() -> dict[str, tuple[str, str]]:
    """The flag table's rows: flag -> (its default cell, the whole row)."""
    lines = DOC.read_text().splitlines()
    start = lines.index(TABLE_HEAD) + 2
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        flag = re.fullmatch(r"`(--[a-z-]+)(?: [A-Z:_]+)?`", cells[0])
        assert flag is not None, f"a row's first cell names no flag: {line}"
        assert flag.group(1) not in rows, f"{flag.group(1)} has two rows"
        rows[flag.group(1)] = (cells[1], line)
    return rows


def _default_cell(action: argparse.Action) -> str:
    """How the table writes ``action``'s default (the start of its cell)."""
    if action.required:
        return "required"
    if action.default is None:
        return "none"
    default = action.default
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


def test_the_table_lists_every_serve_flag_with_its_default() -> None:
    flags = _flags(_commands()["serve"])
    rows = _table()
    assert sorted(rows) == sorted(flags), "docs/router.md's flag table and `router serve` differ"
    for name, action in flags.items():
        cell, row = rows[name]
        assert cell.startswith(_default_cell(action)), f"{name}: the table says {cell!r}"
        # a default the help names (None in argparse: chosen later) is in the row too
        said = re.search(r"\(default ([^\s;,)]+)", action.help or "")
        if said is not None:
            assert f"`{said.group(1)}`" in row, f"{name}: the help says default {said.group(1)}"


def test_check_config_has_no_flags() -> None:
    """The doc says so under the table."""
    assert _flags(_commands()["check-config"]) == {}
    assert "`check-config FILE` takes no flags." in DOC.read_text()


def _sidecar() -> tuple[dict[str, Any], str]:
    """The router container of the sidecar example, and the example's text."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    (example,) = [b for b in blocks if "- serve" in b]
    (container,) = [c for c in yaml.safe_load(example)["spec"]["containers"] if c["name"] == "router"]
    return container, example


def test_the_sidecar_example_runs_and_shows_every_flag() -> None:
    container, example = _sidecar()
    try:
        args = build_parser().parse_args(container["args"])  # what the image's entrypoint gets
    except SystemExit:
        pytest.fail(f"the sidecar example's args do not parse: {container['args']}")
    assert args.func is cli._serve
    assert (args.host, args.port, args.max_connections) == ("0.0.0.0", 8080, 4096)
    assert container["ports"][0]["containerPort"] == args.port
    # every flag appears, set or (for the one a production user rarely sets) in a comment
    for name in _flags(_commands()["serve"]):
        assert re.search(rf"- {name}[= ]", example), f"the sidecar example does not show {name}"
