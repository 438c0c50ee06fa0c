"""Static checks of the delivery files: chart CRDs, kustomize base, chart metadata, Dockerfile."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    install_lines = [line for line in text.splitlines() if "pip install" in line]
    assert install_lines == [
        " && /opt/modelpool/bin/pip install --require-hashes --no-deps -r image-requirements.txt \\",
        " && /opt/modelpool/bin/pip install --no-deps --no-build-isolation . \\",
    ]
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["modelpool"]' in text
    # The chart's pod securityContext runs as the image's user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001


def _image_lock() -> dict[str, tuple[str, list[str]]]:
    """image-requirements.txt as {name: (version, sha256 hashes)}."""
    pins: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in (REPO_ROOT / "image-requirements.txt").read_text().splitlines():
        if pin := re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line):
            name = canonicalize_name(pin[1])
            pins[name] = (pin[2], [])
        elif digest := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            pins[name][1].append(digest[1])
    return pins


def test_the_image_lock_pins_every_core_dependency_and_the_build_backend_with_hashes() -> None:
    """The Dockerfile installs only the lock (--require-hashes): it must satisfy pyproject.toml."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    lock = _image_lock()
    assert len(lock) >= len(wanted)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is not in image-requirements.txt; run `make image-lock`"
        version = lock[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"image-requirements.txt pins {name}=={version}, outside {req}; run `make image-lock`"
        )
    assert all(hashes for _, hashes in lock.values()), "a pin without a hash fails --require-hashes"
    extras = {
        canonicalize_name(Requirement(r).name)
        for deps in project["project"]["optional-dependencies"].values()
        for r in deps
    }
    assert not (extras & set(lock)) - {canonicalize_name(r.name) for r in wanted}, (
        "extras leaked into the image"
    )
    lines = (REPO_ROOT / "image-requirements.txt").read_text().splitlines()
    assert not [line for line in lines if line.startswith("-")], "machine-local pip options in the lock"
    assert "!image-requirements.txt" in (REPO_ROOT / ".dockerignore").read_text().splitlines()
