"""Generate the CustomResourceDefinitions in ``crds/`` from the pydantic models.

The models are the single source of truth: field types, bounds, descriptions for
``kubectl explain``, defaults, list semantics and CEL rules all come from them.
This module turns pydantic's JSON Schema into a Kubernetes *structural* schema
(no ``$ref``, no ``anyOf`` nullables, no ``additionalProperties`` beside
``properties``) and wraps it in a CRD with printer columns and short names.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from modelpool.api.base import GROUP, VERSION
from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus
from modelpool.api.routingpolicy import RoutingPolicySpec, RoutingPolicyStatus

Schema = dict[str, Any]

_DROP_KEYS = {"title", "$defs"}


@dataclass(frozen=True)
class KindInfo:
    """What a CRD needs beyond the schema."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    categories: list[str] = field(default_factory=lambda: ["inference"])


def _condition_column(name: str, condition: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
    }


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="ModelPool",
        plural="modelpools",
        singular="modelpool",
        short_names=["mp", "mpool"],
        spec=ModelPoolSpec,
        status=ModelPoolStatus,
        description="A model's small, quantized and large variants, each a Triton Deployment, sized "
        "on a shared GPU pool.",
        printer_columns=[
            _condition_column("Ready", "Ready"),
            {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpusInUse"},
            {"name": "Budget", "type": "integer", "jsonPath": ".spec.gpuPool.gpuBudget"},
            _condition_column("Budget-Fits", "GPUBudgetFits"),
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    KindInfo(
        kind="RoutingPolicy",
        plural="routingpolicies",
        singular="routingpolicy",
        short_names=["rp", "mprp"],
        spec=RoutingPolicySpec,
        status=RoutingPolicyStatus,
        description="How the ModelPool sidecar routers split a pool's traffic: weighted, tiered by "
        "input complexity, or cascade.",
        printer_columns=[
            {"name": "Pool", "type": "string", "jsonPath": ".spec.poolRef.name"},
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            _condition_column("Programmed", "Programmed"),
            {"name": "Generation", "type": "integer", "jsonPath": ".status.weightsGeneration"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
)


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    """Inline ``$ref``s recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return _resolve(target, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _strip_nullable(schema: Schema) -> Schema:
    """``anyOf: [X, {type: null}]`` becomes X: optional fields are simply not required."""
    any_of = schema.get("anyOf")
    if isinstance(any_of, list):
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            inner = dict(non_null[0])
            inner.update({k: v for k, v in merged.items() if k not in inner or k == "description"})
            return inner
    return schema


def _defaults_to_none(prop: Any) -> bool:
    """A property pydantic declares with ``default: null`` (a field ``X | None = None``)."""
    return isinstance(prop, dict) and "default" in prop and prop["default"] is None


def structural(node: Any, *, add_object_defaults: bool) -> Any:
    """Turn a resolved JSON Schema node into a Kubernetes structural schema node."""
    if isinstance(node, list):
        return [structural(n, add_object_defaults=add_object_defaults) for n in node]
    if not isinstance(node, dict):
        return node
    node = _strip_nullable(node)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "default" and (value is None or value == [] or value == {}):
            continue
        if key in ("properties",):
            out[key] = {
                name: structural(prop, add_object_defaults=add_object_defaults)
                for name, prop in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, add_object_defaults=add_object_defaults)
        else:
            out[key] = value
    if "properties" in out:
        out.pop("additionalProperties", None)
        out.setdefault("type", "object")
        if add_object_defaults:
            required = set(out.get("required", []))
            unset = {name for name, prop in node["properties"].items() if _defaults_to_none(prop)}
            for name, prop in out["properties"].items():
                # An optional nested object without required fields defaults to {}, so the API
                # server fills its own defaults (which CEL rules then see). Not where a CEL rule
                # sits on the object itself: the API server checks rules against the default too.
                # Nor for a field declared `X | None = None`: unset means something there (a
                # variant's disruptionBudget, unset, is the pool's), so it stays absent.
                if (
                    name not in required
                    and name not in unset
                    and prop.get("type") == "object"
                    and "properties" in prop
                    and not prop.get("required")
                    and "default" not in prop
                    and "x-kubernetes-validations" not in prop
                ):
                    prop["default"] = {}
    if out.get("additionalProperties") is False:
        out.pop("additionalProperties")
    if out.get("x-kubernetes-preserve-unknown-fields") and out.get("additionalProperties") is True:
        out.pop("additionalProperties")
    return out


def openapi_schema(model: type[BaseModel], *, add_object_defaults: bool) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    resolved = _resolve(raw, defs)
    result: Schema = structural(resolved, add_object_defaults=add_object_defaults)
    return result


def build_crd(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition object for one kind."""
    spec_schema = openapi_schema(info.spec, add_object_defaults=True)
    status_schema = openapi_schema(info.status, add_object_defaults=False)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modelpool"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": info.categories,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": info.description,
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `modelpool crds generate` from operator/modelpool/api. Do not edit.\n"


def render(info: KindInfo) -> str:
    return HEADER + yaml.safe_dump(build_crd(info), sort_keys=False, width=100)


def crd_filename(info: KindInfo) -> str:
    return f"{GROUP}_{info.plural}.yaml"


# kustomize reads `Kustomization` (no extension) too, and `kubectl apply -f crds/` skips a file
# without .yaml/.json: so crds/ serves both `kubectl apply -f` and kustomize bases (`../../crds`).
KUSTOMIZATION = "Kustomization"


def render_kustomization() -> str:
    return HEADER + yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [crd_filename(info) for info in KINDS],
        },
        sort_keys=False,
    )


def expected_files(with_kustomization: bool) -> dict[str, str]:
    """File name -> content that a CRD folder must hold."""
    files = {crd_filename(info): render(info) for info in KINDS}
    if with_kustomization:
        files[KUSTOMIZATION] = render_kustomization()
    return files


def generate(out_dir: Path, with_kustomization: bool = False) -> list[Path]:
    """Write every CRD (and optionally the Kustomization) into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in expected_files(with_kustomization).items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written


def stale(out_dir: Path, with_kustomization: bool = False) -> list[Path]:
    """Files in ``out_dir`` that differ from what the models generate."""
    return [
        out_dir / name
        for name, text in expected_files(with_kustomization).items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text() != text
    ]
