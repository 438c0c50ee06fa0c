"""The API models: wire names, defaults and the checks pydantic itself makes."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from modelpool.api.modelpool import PROMQL_PLACEHOLDER_HINT, PROMQL_PLACEHOLDERS, MetricQueries, ModelPoolSpec
from modelpool.api.routingpolicy import RoutingPolicySpec
from modelpool.scaling.prometheus_reader import QueryTemplates, query_field
from unit.api.promql_cases import PROMQL_CASES

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def _pool(**variant: object) -> dict[str, object]:
    base = {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/models"}}
    base.update(variant)
    return {"gpuPool": {"gpuBudget": 4}, "variants": [base]}


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_parses(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    model = ModelPoolSpec if doc["kind"] == "ModelPool" else RoutingPolicySpec
    parsed = model.model_validate(doc["spec"])
    # Round trip: what we write back is what we read.
    assert model.model_validate(parsed.to_wire()) == parsed


def test_defaults_fill_in() -> None:
    spec = ModelPoolSpec.model_validate(_pool())
    variant = spec.variants[0]
    assert variant.gpus_per_replica == 1
    assert (variant.min_replicas, variant.max_replicas) == (1, 4)
    assert variant.scaling.scale_down_stabilization_seconds == 300
    assert spec.gpu_pool.resource_name == "nvidia.com/gpu"


def test_wire_names_are_camel_case() -> None:
    wire = ModelPoolSpec.model_validate(_pool(gpusPerReplica=2)).to_wire()
    assert wire["gpuPool"]["gpuBudget"] == 4
    assert wire["variants"][0]["gpusPerReplica"] == 2
    assert "gpus_per_replica" not in wire["variants"][0]


@pytest.mark.parametrize(
    ("variant", "field"),
    [
        ({"tier": "huge"}, "tier"),
        ({"gpusPerReplica": -1}, "gpusPerReplica"),
        ({"name": "Bad_Name"}, "name"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_invalid_variant_names_the_field(variant: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelPoolSpec.model_validate(_pool(**variant))
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("arg", "fix"),
    [
        (
            "--http-port=9000",
            "--http-port is set by ModelPool (the probes, the Service and the router use 8000)",
        ),
        (
            "--model-repository=s3://b/m",
            "--model-repository is set by ModelPool (set model.repository instead)",
        ),
        ("--load-model", "--load-model is set by ModelPool (set model.name instead)"),
        ("--strict-readiness false", "--strict-readiness is set by ModelPool"),
        # tritonserver's getopt_long takes any unambiguous prefix of a long option.
        ("--http-p=9000", "--http-p, an abbreviation of --http-port, is set by ModelPool"),
        ("--model-control=poll", "--model-control, an abbreviation of --model-control-mode, is set"),
        ("--allow-metrics=false", "--allow-metrics is set by ModelPool (the scaler reads Triton's metrics)"),
    ],
)
def test_a_flag_modelpool_sets_is_refused_in_triton_args_naming_the_fix(arg: str, fix: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelPoolSpec.model_validate(_pool(triton={"args": ["--log-verbose=1", arg]}))
    assert "variants.0.triton.args" in str(info.value) and fix in str(info.value)


@pytest.mark.parametrize(
    "arg",
    [
        "--log-verbose=1",
        "--http-thread-count=8",
        "--grpc-infer-allocation-pool-size=8",
        "--strict-model-config=false",
        "--model-load-thread-count=2",
        " --http-port=9000",
    ],
)
def test_other_triton_flags_pass(arg: str) -> None:
    """Flags that only start like a reserved one (--http-thread-count, --grpc-…) are the user's, and
    an argument that does not start with -- is no option to tritonserver."""
    assert ModelPoolSpec.model_validate(_pool(triton={"args": [arg]})).variants[0].triton.args == [arg]


@pytest.mark.parametrize(("query", "valid"), PROMQL_CASES)
def test_query_placeholders_are_checked_as_the_reader_renders_them(query: str, valid: bool) -> None:
    """The API's rule (also a CEL rule in the CRD) accepts exactly what the reader can render."""
    pool = _pool()
    pool["scaling"] = {"queries": {"servedRate": query}}
    renders = True
    try:
        QueryTemplates(served_rate=query).render(
            "served_rate", selector="a", router_selector="b", window="2s"
        )
    except ValueError:
        renders = False
    assert renders == valid
    if valid:
        assert ModelPoolSpec.model_validate(pool).scaling.queries.served_rate == query
        return
    with pytest.raises(ValidationError) as info:
        ModelPoolSpec.model_validate(pool)
    assert "scaling.queries.servedRate" in str(info.value)
    assert "use $selector, $router_selector or $window" in str(info.value)


def test_api_and_reader_agree_on_query_fields_and_placeholders() -> None:
    api_fields = set(MetricQueries.model_json_schema(by_alias=True)["properties"])
    reader_fields = {
        query_field(f.name).removeprefix("spec.scaling.queries.") for f in fields(QueryTemplates)
    }
    assert api_fields == reader_fields
    assert all(f"${name}" in PROMQL_PLACEHOLDER_HINT for name in PROMQL_PLACEHOLDERS)
