"""RouterConfig validation: every error names the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from modelpool.routing.config import ConfigError, load_config_file, parse_config, parse_config_bytes

BASE: dict[str, Any] = {
    "generation": 1,
    "pool": "intents",
    "mode": "weighted",
    "modelName": "intents",
    "variants": [
        {"name": "small", "tier": "small", "tritonModel": "m_small", "cost": 1, "weight": 3,
         "endpoints": ["http://127.0.0.1:8000"]},
        {"name": "large", "tier": "large", "tritonModel": "m_large", "cost": 10, "weight": 1,
         "endpoints": ["http://127.0.0.1:8001"]},
    ],
}  # fmt: skip


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def _fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [p["field"] + ": " + p["message"] for p in info.value.problems]


def test_valid_config_round_trips() -> None:
    config = parse_config(BASE)
    assert config.variant("small").triton_model == "m_small"
    assert config.baseline_variant().name == "large"
    assert parse_config(config.to_json()) == config
    assert config.cache.enabled is False


def test_cache_max_bytes_defaults_to_64_mib_and_must_be_positive() -> None:
    assert parse_config(BASE).cache.max_bytes == 64 * 1024 * 1024
    config = parse_config(_with(cache={"enabled": True, "maxBytes": 4096}))
    assert config.cache.max_bytes == 4096
    assert config.to_json()["cache"]["maxBytes"] == 4096
    for bad in (0, -1):
        (problem,) = _fields(_with(cache={"maxBytes": bad}))
        assert problem == "cache.maxBytes: Input should be greater than 0"


def test_negative_weight_names_the_variant_field() -> None:
    data = copy.deepcopy(BASE)
    data["variants"][1]["weight"] = -1
    (problem,) = _fields(data)
    assert problem.startswith("variants.1.weight")


def test_all_zero_weights_rejected_in_weighted_mode() -> None:
    data = copy.deepcopy(BASE)
    for v in data["variants"]:
        v["weight"] = 0
    (problem,) = _fields(data)
    assert "all weights are 0" in problem
    data["mode"] = "cascade"
    data["cascade"] = {"draft": "small", "verifier": "large"}
    assert parse_config(data).mode == "cascade"


def test_unknown_variant_in_cascade_names_field() -> None:
    problems = _fields(_with(mode="cascade", cascade={"draft": "tiny", "verifier": "large"}))
    assert any("cascade.draft" in p and "tiny" in p for p in problems)


def test_cascade_mode_needs_cascade_section() -> None:
    assert any("cascade" in p for p in _fields(_with(mode="cascade")))


def test_tiers_must_ascend_and_end_at_one() -> None:
    tiers = [{"maxComplexity": 0.6, "target": "small"}, {"maxComplexity": 0.3, "target": "large"}]
    assert any("strictly ascending" in p for p in _fields(_with(mode="tiered", tiers=tiers)))
    tiers = [{"maxComplexity": 0.3, "target": "small"}, {"maxComplexity": 0.9, "target": "large"}]
    assert any("1.0" in p for p in _fields(_with(mode="tiered", tiers=tiers)))
    tiers = [{"maxComplexity": 0.3, "target": "small"}, {"maxComplexity": 1.0, "target": "huge"}]
    assert any(
        p.startswith("tiers.1.target") or "tiers.1.target" in p
        for p in _fields(_with(mode="tiered", tiers=tiers))
    )
    tiers = [{"maxComplexity": 0.3, "target": "small"}, {"maxComplexity": 1.0, "target": "cascade"}]
    assert any("cascade" in p for p in _fields(_with(mode="tiered", tiers=tiers)))


def test_endpoints_must_be_http_urls_or_a_slice() -> None:
    data = copy.deepcopy(BASE)
    data["variants"][0]["endpoints"] = ["10.0.0.1:8000"]
    assert any("variants.0" in p and "http://" in p for p in _fields(data))
    data["variants"][0]["endpoints"] = []
    assert any("endpointSlice" in p for p in _fields(data))
    data["variants"][0]["endpointSlice"] = {"service": "small-svc", "namespace": "ml", "port": "http"}
    assert parse_config(data).variants[0].endpoint_slice is not None


def test_unknown_fields_and_duplicates_rejected() -> None:
    assert any("weights" in p for p in _fields(_with(weights=[1, 2])))
    data = copy.deepcopy(BASE)
    data["variants"][1]["name"] = "small"
    assert any("unique" in p for p in _fields(data))


def test_torch_scorer_needs_path() -> None:
    assert any("path" in p for p in _fields(_with(scorer={"kind": "torch"})))


def test_parse_bytes_json_yaml_and_garbage(tmp_path: Path) -> None:
    import json

    import yaml

    assert parse_config_bytes(json.dumps(BASE)).pool == "intents"
    assert parse_config_bytes(yaml.safe_dump(BASE).encode()).pool == "intents"
    with pytest.raises(ConfigError, match="not valid JSON/YAML"):
        parse_config_bytes(b"{not json")
    with pytest.raises(ConfigError, match="must be an object"):
        parse_config_bytes(b"[1, 2]")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_config_file(path).generation == 1
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:80000", "Port out of range 0-65535"),  # a typo the prefix check let through
        ("http://127.0.0.1:0", "port 0 is not in 1..65535"),
        ("http://127.0.0.1:http", "Port could not be cast to integer value"),
        ("http://:8000", "no host"),
        ("https://10.0.0.1:8000", "only http:// is supported"),
    ],
)
def test_endpoint_urls_the_router_cannot_use_are_refused_naming_the_field(url: str, problem: str) -> None:
    """Until the router built the endpoint (after a push was accepted), nothing looked past the
    ``http://`` prefix: the variant then lost every endpoint."""
    data = copy.deepcopy(BASE)
    data["variants"][1]["endpoints"] = ["http://10.0.0.1:8000", url]
    (found,) = _fields(data)
    assert found.startswith(f"variants.1.endpoints.1: {url!r} is not an http:// base URL"), found
    assert problem in found
    data["variants"][1]["endpoints"] = ["http://10.0.0.1:8000", "http://[fd00::1]:8000", "http://large-svc"]
    assert parse_config(data).variants[1].endpoints[2] == "http://large-svc"
