"""Static checks of the delivery files: chart CRDs, kustomize base, chart metadata, Dockerfile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "modelpool"


def test_chart_crds_equal_generated_crds() -> None:
    generated = {p.name: p.read_bytes() for p in (REPO_ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert generated, "crds/ is empty; run `modelpool crds generate`"
    assert shipped == generated, "charts/modelpool/crds/ differs from crds/; run `modelpool crds generate`"


def test_kustomize_base_references_generated_crds() -> None:
    base = yaml.safe_load((REPO_ROOT / "manifests" / "base" / "kustomization.yaml").read_text())
    assert "../../crds" in base["resources"]
    for resource in base["resources"]:
        assert (REPO_ROOT / "manifests" / "base" / resource).exists(), resource


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["version"], chart["appVersion"]) == ("v2", "0.1.0", "0.1.0")
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject, "appVersion must be the package version"


def _leaves(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the chart's own values (Kubernetes objects passed through count as one)."""
    out = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in PASSTHROUGH:
            out |= _leaves(value, f"{path}.")
        else:
            out.add(path)
    return out


PASSTHROUGH = {"resources", "podSecurityContext", "securityContext"}


def _schema_paths(schema: dict[str, Any], root: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths the schema declares (``$ref`` to ``#/definitions/...`` followed)."""
    out = set()
    for key, declared in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        sub = root["definitions"][declared["$ref"].rsplit("/", 1)[1]] if "$ref" in declared else declared
        if isinstance(sub, dict) and "properties" in sub and path not in PASSTHROUGH:
            out |= _schema_paths(sub, root, f"{path}.")
        else:
            out.add(path)
    return out


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    leaves = _leaves(values)
    documented = {line.split()[2] for line in text.splitlines() if line.strip().startswith("## @param ")}
    undocumented = {p for p in leaves if not any(p == d or p.startswith(f"{d}.") for d in documented)}
    assert not undocumented, f"values without a ## @param line: {sorted(undocumented)}"
    declared = _schema_paths(schema, schema)
    assert leaves <= declared, f"values the schema does not declare: {sorted(leaves - declared)}"
    assert schema["additionalProperties"] is False


def test_dockerfile_runs_modelpool_as_non_root_without_torch() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "FROM ${PYTHON_IMAGE}" in text and "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "pip install ." in text and "torch" not in text.split("pip install .")[1].split("\n")[0]
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["modelpool"]' in text
    # The chart's pod securityContext runs as the image's user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
