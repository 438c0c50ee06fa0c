"""A config from the wire (an admin PUT, the mounted config file) names no code to run.

``scorer.factory`` took any ``module:callable``, which the router imported and called with
``scorer.path`` while it applied the config: ``{"kind": "torch", "factory": "os:system", "path":
"id > /tmp/x"}`` ran a shell command (the PUT was refused only afterwards).  Now a config naming a
factory other than the built-in one is refused before anything is imported or called, and a
custom factory is set by whoever deploys the router (``--scorer-factory``, or ``scorer_factory=``
of ``Router`` and ``start_router``).  Each test was written to fail before the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpool.routing.config import ConfigError, parse_config
from modelpool.routing.router import Router
from modelpool.routing.server import RouterApp
from unit.routing import gated_scorer
from unit.routing.routertools import router_config, running_router, tier_variant

TOKEN = "t0ken"
URL = "http://127.0.0.1:9"
BUILTIN = "modelpool.models.scorer:load_scorer"


def _weighted(generation: int = 1) -> dict[str, Any]:
    return router_config("weighted", tier_variant("a", "small", [URL]), generation=generation)


def _tiered(generation: int, scorer: dict[str, Any]) -> dict[str, Any]:
    return router_config(
        "tiered",
        tier_variant("a", "small", [URL]),
        generation=generation,
        tiers=[{"maxComplexity": 1.0, "target": "a"}],
        scorer=scorer,
    )


def _refusal_names_the_flag(problems: list[dict[str, str]]) -> None:
    assert len(problems) == 1, problems
    assert problems[0]["field"] == "scorer"
    message = problems[0]["message"]
    assert message.startswith("factory: not accepted in a router config"), message
    assert "--scorer-factory" in message


async def test_a_push_naming_a_factory_is_refused_and_calls_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = {"kind": "torch", "factory": "os:system", "path": f"touch {marker}"}
    canary = {"kind": "torch", "factory": gated_scorer.FACTORY, "path": "wire-put"}
    async with (
        running_router(_weighted(), admin_token=TOKEN) as running,
        httpx.AsyncClient(base_url=running.url, headers={"authorization": f"Bearer {TOKEN}"}) as admin,
    ):
        for generation, scorer in ((2, evil), (3, canary)):
            resp = await admin.put("/admin/config", content=json.dumps(_tiered(generation, scorer)))
            assert resp.status_code == 422, resp.text
            _refusal_names_the_flag(resp.json()["problems"])
        assert running.app.router.config.generation == 1
    assert not marker.exists()
    assert "wire-put" not in gated_scorer.LOADS


async def test_a_config_file_naming_a_factory_is_skipped_and_calls_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_weighted()))
    app = RouterApp(Router(parse_config(_weighted())), None, path)
    path.write_text(
        json.dumps(_tiered(2, {"kind": "torch", "factory": gated_scorer.FACTORY, "path": "wire-file"}))
    )
    os.utime(path, ns=(0, 2 * 10**9))
    await app.reload_config_file()
    assert app.router.config.generation == 1
    assert "wire-file" not in gated_scorer.LOADS
    with pytest.raises(ConfigError) as info:
        parse_config(_tiered(2, {"kind": "heuristic", "factory": "json:loads"}))  # whatever the kind
    _refusal_names_the_flag(info.value.problems)


def test_the_builtin_factory_older_operators_rendered_is_accepted_and_dropped() -> None:
    config = parse_config(_tiered(2, {"kind": "torch", "factory": BUILTIN, "path": "/scorer"}))
    assert config.to_json()["scorer"] == {"kind": "torch", "path": "/scorer"}
    assert config.scorer == parse_config(_tiered(2, {"kind": "torch", "path": "/scorer"})).scorer


async def test_a_custom_factory_is_the_deployers_choice() -> None:
    router = Router(
        parse_config(_tiered(1, {"kind": "torch", "path": "deployer"})), scorer_factory=gated_scorer.load
    )
    assert gated_scorer.LOADS.count("deployer") == 1
    async with (
        running_router(_weighted(), admin_token=TOKEN, scorer_factory=gated_scorer.load) as running,
        httpx.AsyncClient(base_url=running.url, headers={"authorization": f"Bearer {TOKEN}"}) as admin,
    ):
        resp = await admin.put("/admin/config", json=_tiered(2, {"kind": "torch", "path": "deployer-put"}))
        assert resp.json() == {"generation": 2, "changed": True}
    assert gated_scorer.LOADS.count("deployer-put") == 1
    assert router.table.scorer is not None


def test_the_scorer_factory_flag_reaches_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelpool.routing import server
    from modelpool.routing.cli import main

    got: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: got.append(kwargs))
    assert main(["serve", "--config", "router.yaml", "--scorer-factory", gated_scorer.FACTORY]) == 0
    assert got[0]["scorer_factory"] is gated_scorer.load
    assert main(["serve", "--config", "router.yaml"]) == 0
    assert got[1]["scorer_factory"] is None  # the built-in one, imported when a torch scorer loads
    for bad in ("no_such_module_xyz:load", "json:no_such_callable", "json"):
        assert main(["serve", "--config", "router.yaml", "--scorer-factory", bad]) == 2
        assert "--scorer-factory" in capsys.readouterr().err
    assert len(got) == 2
