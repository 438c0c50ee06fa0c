"""The chart rendered under single values: null values, the operator pods' placement, low ports.

Real helm of the toolchain (`modelpool devcluster build`; .ci/setup.sh builds it), no cluster;
tests/integration/delivery/test_chart.py renders and installs the chart's scenarios.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from integration.delivery.deliverytools import (
    CHART,
    Obj,
    documents,
    helm_template,
    one,
    operator_container,
    render,
)

VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def _paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Every value path of values.yaml, maps and their keys."""
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, dict):
            out += _paths(value, f"{path}.")
    return out


def _broken_fields(objs: list[Obj]) -> list[str]:
    """What of the operator's container an empty value left broken: a flag without its value, an
    environment variable without one, a port or probe without its port or path, an image without
    its tag."""
    container = operator_container(objs)
    broken = [f"arg {a}" for a in container["args"] if a.endswith("=") or re.search(r"0\.0\.0\.0:(/|$)", a)]
    env = container.get("env", [])
    broken += [f"env {e['name']}" for e in env if not e.get("value") and "valueFrom" not in e]
    broken += [f"port {p['name']}" for p in container["ports"] if not isinstance(p.get("containerPort"), int)]
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        if not get.get("path") or not get.get("port"):
            broken.append(probe)
    if not re.search(r"(:[^/:]+|@sha256:[0-9a-f]{64})$", container["image"] or ""):
        broken.append(f"image {container['image']}")
    return broken


@pytest.mark.parametrize("path", _paths(VALUES))
def test_a_null_value_is_refused_naming_it_or_renders_a_pod_that_starts(path: str) -> None:
    # `--set x=null` (or `x: null` in a values file) removes the key: the schema must require
    # every value whose absence renders a container that crash-loops (`--log-level=`, an empty
    # MODELPOOL_RESYNC_SECONDS), and the templates must give the others their defaults.
    proc = helm_template(set_json={path: "null"})
    if proc.returncode != 0:
        key = path.rsplit(".", 1)[-1]
        assert "schema" in proc.stderr and f"missing property '{key}'" in proc.stderr, proc.stderr
        return
    assert _broken_fields(documents(proc.stdout)) == []


@pytest.mark.parametrize("path", ["logLevel", "resyncSeconds"])
def test_the_values_the_operator_cannot_start_without_are_required(path: str) -> None:
    proc = helm_template(set_json={path: "null"})
    assert proc.returncode != 0
    assert f"missing property '{path}'" in proc.stderr, proc.stderr


# --- placement of a leader and its standbys --------------------------------------------------


def _pod_spec(objs: list[Obj]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objs, "Deployment")["spec"]["template"]["spec"]
    return spec


def _term_labels(spec: dict[str, Any]) -> dict[str, str]:
    [term] = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    labels: dict[str, str] = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    return labels


def _spread(objs: list[Obj]) -> dict[str, Any]:
    """The soft anti-affinity that puts the operator's replicas on different nodes."""
    selector = one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": selector},
                    },
                }
            ]
        }
    }


@pytest.mark.parametrize("replicas", [2, 3])
def test_a_leader_and_standbys_are_spread_over_nodes_by_default(replicas: int) -> None:
    objs = render(set_json={"replicaCount": str(replicas)})
    spec = _pod_spec(objs)
    assert spec["affinity"] == _spread(objs)
    assert "topologySpreadConstraints" not in spec
    # The selector's labels, which every replica of this release carries, and nothing else's.
    assert _term_labels(spec) == {
        "app.kubernetes.io/name": "modelpool",
        "app.kubernetes.io/instance": "modelpool",
    }


@pytest.mark.parametrize("replicas", [0, 1])
def test_one_replica_gets_no_anti_affinity(replicas: int) -> None:
    spec = _pod_spec(render(set_json={"replicaCount": str(replicas)}))
    assert "affinity" not in spec and "topologySpreadConstraints" not in spec


def test_the_users_affinity_replaces_the_default_spread() -> None:
    term = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
    affinity = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    }
    spec = _pod_spec(render(set_json={"replicaCount": "2", "affinity": json.dumps(affinity)}))
    assert spec["affinity"] == affinity


def test_the_users_topology_spread_constraints_replace_the_default_spread() -> None:
    constraints = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "modelpool"}},
        }
    ]
    values = {"replicaCount": "2", "topologySpreadConstraints": json.dumps(constraints)}
    spec = _pod_spec(render(set_json=values))
    assert spec["topologySpreadConstraints"] == constraints
    assert "affinity" not in spec


def test_the_spread_follows_name_overrides() -> None:
    objs = render(release="ops", set_json={"replicaCount": "2", "nameOverride": '"mp"'})
    assert _pod_spec(objs)["affinity"] == _spread(objs)
    assert _term_labels(_pod_spec(objs)) == {
        "app.kubernetes.io/name": "mp",
        "app.kubernetes.io/instance": "ops",
    }


# --- ports below 1024 --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["metrics.port", "liveness.port", "readiness.port"])
def test_low_ports_render_and_their_limit_is_documented(value: str) -> None:
    # uid 10001 without capabilities binds a port below 1024 only where the runtime sets
    # net.ipv4.ip_unprivileged_port_start to 0 (containerd 2, CRI-O, Docker 20.10 do); not refused.
    port = {"metrics.port": "80", "liveness.port": "81", "readiness.port": "82"}[value]
    assert helm_template(set_json={value: port}).returncode == 0
    text = (CHART / "values.yaml").read_text()
    [line] = [ln for ln in text.splitlines() if ln.strip().startswith(f"## @param {value} ")]
    assert "1024" in line and "ip_unprivileged_port_start" in line, line
