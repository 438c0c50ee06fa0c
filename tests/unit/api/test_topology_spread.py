"""spec.topologySpread and a variant's own: defaults, the checks (in pydantic and in the CRD) and
the errors, which name the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelpool.api.base import LABEL_KEY_PATTERN, LABEL_PREFIX_PATTERN, field_errors
from modelpool.api.crdgen import KINDS, build_crd
from modelpool.api.modelpool import ModelPoolSpec, TopologySpread

VARIANT = {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/models"}}
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def _spec(pool: Any = None, variant: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"gpuPool": {"gpuBudget": 4}, "variants": [dict(VARIANT)]}
    if pool is not None:
        spec["topologySpread"] = pool
    if variant is not None:
        spec["variants"][0]["topologySpread"] = variant
    return spec


def test_on_by_default_soft_one_replica_of_skew_over_nodes() -> None:
    """Over nodes only: a zone key would stop the spreading on clusters whose nodes carry no zone
    label (tests/integration/cluster/test_topology_spread.py shows it on the real scheduler)."""
    spec = ModelPoolSpec.model_validate(_spec())
    assert spec.topology_spread == TopologySpread(
        enabled=True, when_unsatisfiable="ScheduleAnyway", max_skew=1, topology_keys=[HOSTNAME]
    )
    assert spec.variants[0].topology_spread is None
    assert spec.topology_spread_of(spec.variants[0]) == spec.topology_spread
    assert spec.to_wire()["topologySpread"] == {
        "enabled": True,
        "whenUnsatisfiable": "ScheduleAnyway",
        "maxSkew": 1,
        "topologyKeys": [HOSTNAME],
    }


def test_a_variants_own_spread_replaces_the_pools_whole() -> None:
    pool = {"whenUnsatisfiable": "DoNotSchedule", "maxSkew": 2, "topologyKeys": [HOSTNAME]}
    spec = ModelPoolSpec.model_validate(_spec(pool, {"topologyKeys": ["example.com/rack"]}))
    own = spec.topology_spread_of(spec.variants[0])
    # What the variant leaves out takes its default, not the pool's.
    assert (own.enabled, own.when_unsatisfiable, own.max_skew, own.topology_keys) == (
        True,
        "ScheduleAnyway",
        1,
        ["example.com/rack"],
    )
    assert spec.topology_spread.when_unsatisfiable == "DoNotSchedule"
    assert ModelPoolSpec.model_validate(spec.to_wire()) == spec  # round trip


def test_off_for_the_pool_or_one_variant() -> None:
    spec = ModelPoolSpec.model_validate(_spec({"enabled": False}))
    assert not spec.topology_spread_of(spec.variants[0]).enabled
    spec = ModelPoolSpec.model_validate(_spec(None, {"enabled": False}))
    assert not spec.topology_spread_of(spec.variants[0]).enabled and spec.topology_spread.enabled


def test_the_default_keys_are_not_shared_between_specs() -> None:
    one = ModelPoolSpec.model_validate(_spec())
    two = ModelPoolSpec.model_validate(_spec())
    assert one.topology_spread.topology_keys == two.topology_spread.topology_keys
    assert one.topology_spread.topology_keys is not two.topology_spread.topology_keys


REFUSED = [
    ({"topologyKeys": []}, "topologyKeys", "at least one node label key", "set enabled: false instead"),
    (
        {"topologyKeys": [HOSTNAME, ZONE, HOSTNAME]},
        "topologyKeys",
        "must not repeat a key",
        "list each key once",
    ),
    ({"topologyKeys": ["bad key"]}, "topologyKeys.0", "must be a node label key", "DNS subdomain prefix"),
    ({"topologyKeys": ["-a"]}, "topologyKeys.0", "must be a node label key", "starting and ending"),
    ({"topologyKeys": ["/hostname"]}, "topologyKeys.0", "must be a node label key", "prefix"),
    ({"topologyKeys": [("a" * 254) + "/name"]}, "topologyKeys.0", "must be a node label key", "prefix"),
    ({"topologyKeys": [""]}, "topologyKeys.0", "must be a node label key", "at most 63"),
    ({"whenUnsatisfiable": "Never"}, "whenUnsatisfiable", "ScheduleAnyway", "DoNotSchedule"),
    ({"maxSkew": 0}, "maxSkew", "greater than or equal to 1", ""),
    ({"topologyKey": HOSTNAME}, "topologyKey", "Extra inputs", ""),
]


@pytest.mark.parametrize(("value", "field", "says", "fix"), REFUSED, ids=[str(c[0])[:60] for c in REFUSED])
@pytest.mark.parametrize(
    ("where", "prefix"), [("pool", "spec.topologySpread"), ("variant", "spec.variants.0.topologySpread")]
)
def test_refused_input_names_the_field_and_the_fix(
    value: Any, field: str, says: str, fix: str, where: str, prefix: str
) -> None:
    with pytest.raises(ValidationError) as info:
        ModelPoolSpec.model_validate(_spec(**{where: value}))
    message = field_errors(info.value, "spec")
    assert message.startswith(f"{prefix}.{field}: "), message
    assert says in message and fix in message, message


@pytest.mark.parametrize(
    "key", [HOSTNAME, ZONE, "topology.kubernetes.io/region", "rack", "example.com/row-1"]
)
def test_admitted_keys(key: str) -> None:
    spec = ModelPoolSpec.model_validate(_spec({"topologyKeys": [key]}))
    assert spec.topology_spread.topology_keys == [key]


def _schema() -> dict[str, Any]:
    crd = build_crd(KINDS[0])
    spec: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def test_the_crd_defaults_the_pools_spread_but_not_a_variants() -> None:
    """The API server fills the pool's spreading (kubectl get shows it) and leaves a variant's
    unset: a default {} there would replace the pool's with the defaults."""
    schema = _schema()
    pool = schema["properties"]["topologySpread"]
    assert pool["default"] == {}
    props = pool["properties"]
    assert props["enabled"]["default"] is True
    assert props["whenUnsatisfiable"]["default"] == "ScheduleAnyway"
    assert props["whenUnsatisfiable"]["enum"] == ["ScheduleAnyway", "DoNotSchedule"]
    assert props["maxSkew"]["default"] == 1 and props["maxSkew"]["minimum"] == 1
    assert props["topologyKeys"]["default"] == [HOSTNAME]
    variant = schema["properties"]["variants"]["items"]["properties"]["topologySpread"]
    assert "default" not in variant
    assert variant["properties"] == props
    # kubectl explain says what each field does.
    for name, node in props.items():
        assert len(node["description"]) > 40, name


def test_the_crd_checks_the_keys_as_the_model_does() -> None:
    keys = _schema()["properties"]["topologySpread"]["properties"]["topologyKeys"]
    # Bounded, so the API server can bound the CEL rules' cost.
    assert keys["maxItems"] == 8 and keys["items"]["maxLength"] == 317
    rules = {r["rule"]: r["message"] for r in keys["x-kubernetes-validations"]}
    assert "set enabled: false instead" in rules["size(self) > 0"]
    assert "list each key once" in rules["self.all(k, self.exists_one(x, x == k))"]
    (item_rule,) = keys["items"]["x-kubernetes-validations"]
    assert LABEL_KEY_PATTERN in item_rule["rule"] and LABEL_PREFIX_PATTERN in item_rule["rule"]
    assert "must be a node label key" in item_rule["message"]
    # The rules hold for the default the API server fills in.
    default = keys["default"]
    assert len(default) > 0 and len(set(default)) == len(default)
