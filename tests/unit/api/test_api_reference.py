"""docs/api-reference.md is what the models generate, and it names every field of both CRDs
with its description (the same the CRDs carry for `kubectl explain`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelpool.api import crdgen
from modelpool.api.refdoc import render_reference

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "docs" / "api-reference.md"


def _fields(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every property below ``schema`` by its reference path, found independently of refdoc."""
    out: list[tuple[str, dict[str, Any]]] = []
    if schema.get("type") == "array":
        return _fields(schema.get("items", {}), path + "[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out += _fields(extra, path + "{}")
    for name, prop in schema.get("properties", {}).items():
        out.append((f"{path}.{name}", prop))
        out += _fields(prop, f"{path}.{name}")
    return out


def _rows() -> dict[str, list[str]]:
    """The reference's table rows by field path (a path appears under one kind only once)."""
    rows: dict[str, list[str]] = {}
    kind = ""
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("## "):
            kind = line[3:]
        found = re.match(r"\| `([^`]+)`( \(required\))? \|(.*)\|$", line)
        if found:
            rows[f"{kind}:{found.group(1)}"] = [c.strip() for c in found.group(3).split(" | ")]
    return rows


def test_the_committed_reference_is_what_the_models_generate() -> None:
    assert REFERENCE.read_text() == render_reference(), "regenerate with `modelpool crds generate`"


def test_every_field_of_both_crds_has_a_row_with_its_description_default_and_required() -> None:
    rows = _rows()
    count = 0
    for info in crdgen.KINDS:
        schema = crdgen.build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            required_of: dict[str, set[str]] = {}
            for path, prop in [
                (part, schema["properties"][part]),
                *_fields(schema["properties"][part], part),
            ]:
                node = prop
                while node.get("type") == "array":  # a list's items carry the required fields
                    node = node.get("items", {})
                required_of[path] = set(node.get("required", []))
            for path, prop in _fields(schema["properties"][part], part):
                row = rows.get(f"{info.kind}:{path}")
                assert row is not None, f"{info.kind} {path} has no row"
                _type, default, _bounds, description = row
                assert prop.get("description"), f"{info.kind} {path} has no description in the CRD"
                assert " ".join(prop["description"].split()).replace("|", "\\|") == description, path
                if "default" in prop and prop["default"] not in ({}, ""):
                    assert str(prop["default"]).lower() in default.lower(), (path, default)
                parent, _, name = path.rpartition(".")
                line = next(ln for ln in REFERENCE.read_text().splitlines() if ln.startswith(f"| `{path}`"))
                assert ("(required)" in line) == (
                    name in required_of.get(parent.removesuffix("[]"), set())
                ), path
                count += 1
    assert count > 100, count  # both kinds, spec and status


def test_named_fields_are_there() -> None:
    """Fields the README's prose leaves to the reference, spelled as the API spells them."""
    rows = _rows()
    for key in (
        "ModelPool:spec.scaling.prometheusURL",
        "ModelPool:spec.scaling.enabled",
        "ModelPool:spec.gpuPool.resourceName",
        "ModelPool:spec.variants[].triton.env[].name",
        "ModelPool:spec.variants[].profile.configMapKeyRef",
        "ModelPool:spec.gpuPool.tolerations[].tolerationSeconds",
        "RoutingPolicy:spec.modelName",
        "RoutingPolicy:spec.routerPort",
        "RoutingPolicy:spec.tiered.tiers[].maxComplexityPercent",
        "RoutingPolicy:spec.tiered.scorer.kind",
    ):
        assert key in rows, key
    assert rows["ModelPool:spec.gpuPool.resourceName"][1] == "`nvidia.com/gpu`"
    assert rows["RoutingPolicy:spec.routerPort"][1] == "`8080`"


def test_check_fails_on_a_stale_reference(tmp_path: Path) -> None:
    """`modelpool crds generate --check` (what `make lint` and CI read) names a drifted reference."""
    from modelpool import cli

    original = cli.API_REFERENCE
    try:
        cli.API_REFERENCE = tmp_path / "api-reference.md"
        cli.API_REFERENCE.write_text(render_reference().replace("Most GPUs", "Fewest GPUs"))
        assert cli.main(["crds", "generate", "--check"]) == 1
        cli.API_REFERENCE.write_text(render_reference())
        assert cli.main(["crds", "generate", "--check"]) == 0
    finally:
        cli.API_REFERENCE = original
    proc = subprocess.run(
        [sys.executable, "-m", "modelpool", "crds", "generate", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
