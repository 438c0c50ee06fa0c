"""The committed CRDs are exactly what the models generate, and structurally valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelpool.api import crdgen

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "modelpool" / "crds"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _walk(value, f"{path}[{i}]")
    return out


def test_committed_crds_match_models() -> None:
    stale = crdgen.stale(CRDS, with_kustomization=True) + crdgen.stale(CHART_CRDS)
    assert stale == [], f"regenerate with `modelpool crds generate`: {stale}"


def test_schemas_are_structural() -> None:
    for info in crdgen.KINDS:
        schema = crdgen.build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for where, node in _walk(schema):
            assert "$ref" not in node, where
            assert "anyOf" not in node, where
            assert not ("properties" in node and "additionalProperties" in node), where
            assert "title" not in node, where
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), where


def test_crd_metadata() -> None:
    pool = yaml.safe_load((CRDS / "modelpool.dev_modelpools.yaml").read_text())
    names = pool["spec"]["names"]
    assert names["kind"] == "ModelPool"
    assert "mp" in names["shortNames"]
    version = pool["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert any(c["name"] == "Ready" for c in version["additionalPrinterColumns"])
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    variants = spec["properties"]["variants"]
    assert variants["x-kubernetes-list-type"] == "map"
    rules = [r["rule"] for r in variants["items"]["x-kubernetes-validations"]]
    assert "self.minReplicas <= self.maxReplicas" in rules
    # Optional nested objects default to {} so their own defaults apply server-side.
    assert variants["items"]["properties"]["scaling"]["default"] == {}
    assert "description" in variants["items"]["properties"]["gpusPerReplica"]


def test_every_list_and_string_under_a_cel_rule_is_bounded() -> None:
    """The API server rejects CEL rules whose cost it cannot bound."""
    for info in crdgen.KINDS:
        spec = crdgen.build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "spec"
        ]
        for where, node in _walk(spec):
            if node.get("type") == "array":
                assert "maxItems" in node, where
