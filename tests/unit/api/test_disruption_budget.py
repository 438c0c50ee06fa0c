"""spec.disruptionBudget and a variant's own: defaults, the checks (in pydantic and in the CRD) and
the errors, which name the field and the fix."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from modelpool.api.base import field_errors
from modelpool.api.crdgen import KINDS, build_crd
from modelpool.api.modelpool import MAX_UNAVAILABLE_PERCENT_PATTERN, DisruptionBudget, ModelPoolSpec

VARIANT = {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/models"}}


def _spec(pool: Any = None, variant: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"gpuPool": {"gpuBudget": 4}, "variants": [dict(VARIANT)]}
    if pool is not None:
        spec["disruptionBudget"] = pool
    if variant is not None:
        spec["variants"][0]["disruptionBudget"] = variant
    return spec


def test_on_by_default_one_replica_at_a_time() -> None:
    spec = ModelPoolSpec.model_validate(_spec())
    assert spec.disruption_budget == DisruptionBudget(enabled=True, max_unavailable=1)
    assert spec.variants[0].disruption_budget is None
    assert spec.disruption_budget_of(spec.variants[0]) == spec.disruption_budget
    assert spec.to_wire()["disruptionBudget"] == {"enabled": True, "maxUnavailable": 1}


def test_a_variants_own_budget_replaces_the_pools_whole() -> None:
    spec = ModelPoolSpec.model_validate(_spec({"maxUnavailable": "25%"}, {"enabled": False}))
    own = spec.disruption_budget_of(spec.variants[0])
    assert (own.enabled, own.max_unavailable) == (False, 1)
    assert ModelPoolSpec.model_validate(spec.to_wire()) == spec  # round trip


@pytest.mark.parametrize("value", [1, 2, 1000, "1%", "25%", "99%", "100%"])
def test_admitted_max_unavailable(value: int | str) -> None:
    for where in ("pool", "variant"):
        spec = ModelPoolSpec.model_validate(_spec(**{where: {"maxUnavailable": value}}))
        assert spec.disruption_budget_of(spec.variants[0]).max_unavailable == value


@pytest.mark.parametrize(
    "value", [0, -1, 1001, "0%", "101%", "05%", "25", "1", "x", "25 %", "", 1.5, True, None]
)
@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("pool", "spec.disruptionBudget.maxUnavailable"),
        ("variant", "spec.variants.0.disruptionBudget.maxUnavailable"),
    ],
)
def test_refused_max_unavailable_names_the_field_and_the_fix(value: Any, where: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelPoolSpec.model_validate(_spec(**{where: {"maxUnavailable": value}}))
    message = field_errors(info.value, "spec")
    assert message.startswith(field), message
    if isinstance(value, int | str) and not isinstance(value, bool):
        # What the CRD's CEL rule says too: the range, an example, and how to turn the budget off.
        assert "from 1 to 1000 or a percentage from 1% to 100%" in message, message
        assert "set enabled: false" in message, message


def test_no_min_available_and_no_unknown_fields() -> None:
    with pytest.raises(ValidationError) as info:
        ModelPoolSpec.model_validate(_spec({"minAvailable": 1}))
    assert field_errors(info.value, "spec").startswith("spec.disruptionBudget.minAvailable: Extra inputs")


def _schema() -> dict[str, Any]:
    crd = build_crd(KINDS[0])
    spec: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def test_the_crd_defaults_the_pools_budget_but_not_a_variants() -> None:
    """The API server fills the pool's budget (kubectl get shows it), and leaves a variant's unset:
    a default {} there would replace the pool's with the defaults."""
    schema = _schema()
    pool = schema["properties"]["disruptionBudget"]
    assert pool["default"] == {}
    assert pool["properties"]["enabled"]["default"] is True
    assert pool["properties"]["maxUnavailable"]["default"] == 1
    variant = schema["properties"]["variants"]["items"]["properties"]["disruptionBudget"]
    assert "default" not in variant
    assert variant["properties"] == pool["properties"]
    # Optional objects that mean nothing when unset still default to {} (their defaults apply).
    assert schema["properties"]["variants"]["items"]["properties"]["scaling"]["default"] == {}


def test_the_crd_checks_max_unavailable_as_the_model_does() -> None:
    node = _schema()["properties"]["disruptionBudget"]["properties"]["maxUnavailable"]
    assert node["x-kubernetes-int-or-string"] is True and "type" not in node and "anyOf" not in node
    # The API server bounds the CEL rule's cost by the string's length ("100%"): without it the
    # CRD is refused (estimated rule cost exceeds budget), seen on the real API server.
    assert node["maxLength"] == len("100%")
    (rule,) = node["x-kubernetes-validations"]
    assert "type(self) == int ? self >= 1 && self <= 1000" in rule["rule"]
    assert MAX_UNAVAILABLE_PERCENT_PATTERN in rule["rule"]
    assert "set enabled: false" in rule["message"]
    # The percentage pattern (RE2 in the CEL rule, re here) admits exactly 1% to 100%.
    admitted = [n for n in range(0, 200) if re.fullmatch(MAX_UNAVAILABLE_PERCENT_PATTERN, f"{n}%")]
    assert admitted == list(range(1, 101))
