"""The chart schema's patterns against strings Kubernetes accepts and refuses.

values.schema.json should refuse exactly what the API server (or the image registry) would
refuse later, with the value's path named, instead of a failed install. These cases run the
schema's own regular expressions (RE2 and Python agree on them: no look-arounds), so they need
no helm; tests/integration/delivery/test_chart_values_fuzz.py checks the same against helm and
the real API server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

CHART = Path(__file__).resolve().parents[3] / "charts" / "modelpool"
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())


def node(path: str) -> dict[str, Any]:
    """The schema of a dotted value path, ``$ref`` followed (``*`` = a map's values)."""
    current: dict[str, Any] = SCHEMA
    for part in path.split("."):
        current = _deref(current)
        current = _map_values(current) if part == "*" else current["properties"][part]
    return _deref(current)


def _deref(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _parts(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A schema and the schemas its ``allOf`` adds, ``$ref`` followed."""
    schema = _deref(schema)
    return [schema, *(_deref(s) for s in schema.get("allOf", []))]


def _map_values(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of a map's values (its single pattern property, or additionalProperties)."""
    for part in _parts(schema):
        if isinstance(part.get("additionalProperties"), dict):
            return _deref(part["additionalProperties"])
        if "patternProperties" in part:
            [(_, values)] = part["patternProperties"].items()
            return _deref(values)
    raise AssertionError(f"not a map: {schema}")


def string_ok(schema: dict[str, Any], value: str) -> bool:
    """Whether ``value`` passes the string keywords the chart uses (pattern, lengths, allOf,
    not, const, oneOf with a string branch)."""
    schema = _deref(schema)
    if "oneOf" in schema:
        return any(string_ok(s, value) for s in schema["oneOf"] if s.get("type") == "string")
    checks = [
        "pattern" not in schema or re.search(schema["pattern"], value) is not None,
        len(value) <= schema.get("maxLength", len(value)),
        len(value) >= schema.get("minLength", 0),
        all(string_ok(s, value) for s in schema.get("allOf", [])),
        "not" not in schema or not string_ok(schema["not"], value),
        "const" not in schema or schema["const"] == value,
        "enum" not in schema or value in schema["enum"],
    ]
    return all(checks)


def key_ok(map_schema: dict[str, Any], key: str) -> bool:
    """Whether a map accepts ``key`` (its patternProperties, with additionalProperties false)."""
    for part in _parts(map_schema):
        if key in part.get("properties", {}):
            if part["properties"][key] is False:
                return False
        elif part.get("additionalProperties", True) is False and not any(
            re.search(p, key) for p in part.get("patternProperties", {})
        ):
            return False
    return True


# Kubernetes quantities (k8s.io/apimachinery resource.ParseQuantity).
QUANTITIES_OK = ["100m", "1", "0.5", ".5", "5.", "+1", "1e3", "1E-3", "1.5Gi", "2k", "64Mi", "0"]
# Refused by the API server (checked against kube-apiserver 1.36 with a server-side dry run) ...
QUANTITIES_BAD = ["1.2.3", "1e3Mi", "-1", "1 Gi", "1Mb"]
# ... or typos it accepts and reads as something else ("." and "Gi" as 0, "1.5 " trimmed).
QUANTITIES_BAD += ["", ".", "e3", "Gi", "1.5 "]


@pytest.mark.parametrize("value", QUANTITIES_OK)
def test_quantity_accepts_what_kubernetes_parses(value: str) -> None:
    assert string_ok(node("resources.requests.cpu"), value)


@pytest.mark.parametrize("value", QUANTITIES_BAD)
def test_quantity_refuses_what_kubernetes_refuses_or_misreads(value: str) -> None:
    assert not string_ok(node("resources.requests.cpu"), value)


@pytest.mark.parametrize("resource", ["cpu", "memory", "ephemeral-storage"])
def test_container_resources_accepted(resource: str) -> None:
    for section in ("requests", "limits"):
        assert key_ok(node(f"resources.{section}"), resource)


@pytest.mark.parametrize("resource", ["gpu", "foo", "CPU"])
def test_unknown_resources_refused(resource: str) -> None:
    # The API server refuses them ("must be a standard resource type or fully qualified").
    assert not key_ok(node("resources.requests"), resource)


@pytest.mark.parametrize("field", ["nameOverride", "fullnameOverride"])
@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("mp", True),
        ("2024", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("Foo", False),
        ("-", False),
        ("a-", False),
        ("a_b", False),
        ("a.b", False),
        ("a b", False),
    ],
)
def test_name_overrides_are_dns_labels(field: str, value: str, ok: bool) -> None:
    assert string_ok(node(field), value) is ok


LABEL_KEYS_OK = ["team", "example.com/owner", "a.b-c_d", "x" * 63, "app.kubernetes.io/part-of", "A1"]
LABEL_KEYS_BAD = ["bad key", "-x", "x-", "x" * 64, "a/b/c", "Example.com/x", "/x", "x/", ""]
LABEL_VALUES_OK = ["", "a", "A-b_c.d", "1", "true", "z" * 63]
LABEL_VALUES_BAD = ["a b", "-a", "a-", "z" * 64, "a/b", "é"]
LABEL_MAPS = ["podLabels", "nodeSelector", "metrics.serviceMonitor.labels"]
LABEL_MAPS += ["podMonitors.triton.labels", "podMonitors.router.labels"]
ANNOTATION_MAPS = ["podAnnotations", "metrics.service.annotations", "serviceAccount.annotations"]


@pytest.mark.parametrize("field", LABEL_MAPS + ANNOTATION_MAPS)
def test_label_and_annotation_keys_are_qualified_names(field: str) -> None:
    schema = node(field)
    assert [k for k in LABEL_KEYS_OK if not key_ok(schema, k)] == []
    assert [k for k in LABEL_KEYS_BAD if key_ok(schema, k)] == []


@pytest.mark.parametrize("field", LABEL_MAPS)
def test_label_values_are_label_values(field: str) -> None:
    values = node(f"{field}.*")
    assert [v for v in LABEL_VALUES_OK if not string_ok(values, v)] == []
    assert [v for v in LABEL_VALUES_BAD if string_ok(values, v)] == []


@pytest.mark.parametrize("field", ANNOTATION_MAPS)
def test_annotation_values_are_any_string(field: str) -> None:
    values = node(f"{field}.*")
    assert all(string_ok(values, v) for v in ["", "a b: c", "multi\nline", "é", "x" * 1000])


@pytest.mark.parametrize("key", ["app.kubernetes.io/name", "app.kubernetes.io/instance"])
def test_pod_labels_cannot_replace_the_selector(key: str) -> None:
    # The Deployment's selector is immutable and must match its pods' labels.
    assert not key_ok(node("podLabels"), key)
    assert key_ok(node("podLabels"), "app.kubernetes.io/part-of")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("http", True),
        ("metrics", True),
        ("p-1", True),
        ("a" * 15, True),
        ("a" * 16, False),
        ("8080", False),
        ("a--b", False),
        ("-a", False),
        ("Http", False),
        ("", False),
    ],
)
def test_router_port_is_a_port_name(value: str, ok: bool) -> None:
    # IANA_SVC_NAME: what a container port may be named; digits alone would be read as a number.
    assert string_ok(node("podMonitors.router.port"), value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("0.1.0", True),
        ("v1.2.3-rc.1", True),
        ("latest", True),
        ("_x", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("1.0 ", False),
        ("a:b", False),
        ("a@b", False),
        (".x", False),
        ("-x", False),
    ],
)
def test_image_tag(value: str, ok: bool) -> None:
    assert string_ok(node("image.tag"), value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("ghcr.io/modelpool/modelpool", True),
        ("modelpool", True),
        ("localhost:5000/mp", True),
        ("registry.example.com:443/team/sub/modelpool", True),
        ("Registry.Example.com/mp", True),
        ("a__b/c-d.e", True),
        ("ghcr.io/modelpool/modelpool:0.1.0", False),
        ("ghcr.io/modelpool/modelpool@sha256:" + "a" * 64, False),
        ("ghcr.io/ModelPool/modelpool", False),
        ("ghcr.io/modelpool/", False),
        (" ghcr.io/modelpool/modelpool", False),
    ],
)
def test_image_repository_has_no_tag_or_digest(value: str, ok: bool) -> None:
    assert string_ok(node("image.repository"), value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("high", True),
        ("system-cluster-critical", True),
        ("a.b", True),
        ("High", False),
        ("a_b", False),
        ("-a", False),
    ],
)
def test_priority_class_name_is_a_dns_subdomain(value: str, ok: bool) -> None:
    assert string_ok(node("priorityClassName"), value) is ok


def test_extra_env_cannot_set_the_chart_variable() -> None:
    name = _deref(SCHEMA["properties"]["extraEnv"]["items"])["properties"]["name"]
    assert not string_ok(name, "MODELPOOL_RESYNC_SECONDS")
    assert string_ok(name, "HTTPS_PROXY")


def test_no_string_map_escapes_the_label_and_annotation_rules() -> None:
    """Every map of strings in the schema is a labels or annotations map (a plain
    ``additionalProperties: {type: string}`` map let keys through that the API server refuses)."""

    def walk(schema: Any, path: str) -> list[str]:
        found = []
        if isinstance(schema, dict):
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict) and _deref(extra).get("type") == "string":
                found.append(path)
            for key, sub in schema.items():
                found += walk(sub, f"{path}/{key}")
        elif isinstance(schema, list):
            for i, sub in enumerate(schema):
                found += walk(sub, f"{path}/{i}")
        return found

    assert walk(SCHEMA, "") == []
