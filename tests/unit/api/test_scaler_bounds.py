"""What the CRD (and the operator's API model) accepts for a variant, the scaler accepts too.

``tolerancePercent: 100`` passed the CRD (maximum 100) while the scaler refuses a tolerance of 1
(it would ignore every change of demand): every pass of such a pool failed. Each numeric field of
a variant that reaches the scaler is tried at the CRD's bounds, read from the committed CRD so that
a field added later is covered too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.scaling_planner import settings_for

CRD = Path(__file__).resolve().parents[3] / "crds" / "modelpool.dev_modelpools.yaml"

SCALER_FIELDS = ("minReplicas", "maxReplicas", "gpusPerReplica", "cost", "priority")
"""The variant's own fields that reach the scaler (``settings_for``); all of ``scaling`` does."""


def _variant_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["variants"]["items"]["properties"]  # type: ignore[no-any-return]


def _bounded() -> list[tuple[str, str, int | float]]:
    """(where, field, value) for every bound of the numeric fields that reach the scaler."""
    props = _variant_schema()
    fields = [("variant", name, props[name]) for name in SCALER_FIELDS]
    fields += [("scaling", name, prop) for name, prop in props["scaling"]["properties"].items()]
    cases = []
    for where, name, prop in fields:
        if prop.get("type") not in ("integer", "number"):
            continue
        cases += [(where, name, prop[bound]) for bound in ("minimum", "maximum") if bound in prop]
    return cases


def _spec(where: str, field: str, value: int | float) -> dict[str, Any]:
    variant: dict[str, Any] = {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/m"}}
    if where == "variant":
        variant[field] = value
        if field == "minReplicas":
            variant["maxReplicas"] = max(value, 1)  # the CRD's rule minReplicas <= maxReplicas
        if field == "maxReplicas":
            variant["minReplicas"] = min(value, 1)
    else:
        variant["scaling"] = {field: value}
    return {"gpuPool": {"gpuBudget": 8}, "variants": [variant]}


def test_every_bound_is_read() -> None:
    fields = {name for _, name, _ in _bounded()}
    assert {"tolerancePercent", "targetQueueTimeMs", "burstMemorySeconds", "minReplicas"} <= fields


@pytest.mark.parametrize(("where", "field", "value"), _bounded())
def test_what_the_crd_accepts_the_scaler_accepts(where: str, field: str, value: int | float) -> None:
    spec = ModelPoolSpec.model_validate(_spec(where, field, value))  # the API model agrees with the CRD
    settings_for(spec.variants[0], profile_capacity=None, routed_latency_slo_s=None).validate()


def test_a_tolerance_of_100_percent_is_refused_by_the_api() -> None:
    assert _variant_schema()["scaling"]["properties"]["tolerancePercent"]["maximum"] == 99
    with pytest.raises(ValidationError, match="tolerancePercent"):
        ModelPoolSpec.model_validate(_spec("scaling", "tolerancePercent", 100))
