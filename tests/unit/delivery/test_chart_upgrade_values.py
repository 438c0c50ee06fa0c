"""The chart rendered with the values of every earlier chart revision: `helm upgrade --reuse-values`.

`helm upgrade --reuse-values` renders the new templates with the OLD chart's values.yaml (Helm's
``reuseValues`` replaces the new chart's defaults by the old release's coalesced values) plus the
user's old and new ``--set``. So every key this chart added after its first revision is missing
there, and every template must read it nil-safely and give it its current default. These tests
render a copy of the chart whose values.yaml is each historical one (``values_history/``, checked
in: the exact bytes of every distinct ``git show <rev>:charts/modelpool/values.yaml``), and compare
the objects with those of the current defaults: the same, except where a missing key deliberately
keeps an old release as it was (leaderElection: off, docs/install.md "Upgrade").

They use the real helm of the toolchain (`modelpool devcluster build`; .ci/setup.sh builds it),
no cluster.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.delivery.deliverytools import CHART, KUBE_VERSION, REPO_ROOT, Obj, documents, helm, set_args
from integration.delivery.test_chart_old_release_upgrade import (
    OLD_MONITOR,
    documented_triton_monitor_migration,
)

HISTORY = Path(__file__).resolve().parent / "values_history"
FIXTURES = sorted(HISTORY.glob("*.yaml"))
FIXTURE_IDS = [p.stem for p in FIXTURES]
RELEASE, NAMESPACE = "modelpool", "modelpool-system"

# Values a user turns on with --set on top of the old values (`--reuse-values --set ...`): each
# must render as on a fresh install of this chart.
TOGGLES: dict[str, dict[str, str]] = {
    "defaults": {},
    "prometheus-rule": {"prometheusRule.enabled": "true"},
    "triton-pod-monitor": {"podMonitors.triton.enabled": "true"},
    "router-pod-monitor": {"podMonitors.router.enabled": "true"},
    "service-monitor": {"metrics.serviceMonitor.enabled": "true"},
    "two-replicas": {"leaderElection.enabled": "true", "replicaCount": "2"},
    "namespaced": {"watchNamespaces": '["team-a"]'},
}


def _template(chart: Path, set_json: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(chart), "-n", NAMESPACE, "--kube-version", KUBE_VERSION]
    return helm(*args, *set_args(set_json))


def _render(chart: Path, set_json: Mapping[str, str] | None = None) -> list[Obj]:
    proc = _template(chart, set_json)
    assert proc.returncode == 0, proc.stderr
    return documents(proc.stdout)


def _keyed(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}


@pytest.fixture(scope="module")
def old_charts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of this chart per historical values.yaml, as `--reuse-values` renders it."""
    charts = {}
    for fixture in FIXTURES:
        chart = tmp_path_factory.mktemp(fixture.stem) / "modelpool"
        shutil.copytree(CHART, chart)
        shutil.copyfile(fixture, chart / "values.yaml")
        charts[fixture.stem] = chart
    return charts


def _old_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((HISTORY / f"{name}.yaml").read_text())
    return values


def test_the_fixtures_are_every_values_yaml_in_the_git_history() -> None:
    # CI runs on a clone with its history. Once a commit changes values.yaml again, the one it
    # replaces becomes history and gets its file here
    # (git show <rev>:charts/modelpool/values.yaml > values_history/NN-<rev>.yaml).
    log = subprocess.run(
        ["git", "log", "--format=%H", "--", "charts/modelpool/values.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    revisions = log.stdout.split()
    assert revisions, "no git history of charts/modelpool/values.yaml"
    fixtures = {p.read_bytes() for p in FIXTURES}
    fixtures.add((CHART / "values.yaml").read_bytes())  # the current one is not history (yet)
    missing = []
    for rev in revisions:
        shown = subprocess.run(
            ["git", "show", f"{rev}:charts/modelpool/values.yaml"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        ).stdout
        if shown not in fixtures:
            missing.append(rev[:12])
    assert missing == [], f"values.yaml of {missing} is not in {HISTORY.name}/"
    assert len({p.read_bytes() for p in FIXTURES}) == len(FIXTURES) >= 9  # one file per revision


@pytest.mark.parametrize("toggle", TOGGLES, ids=list(TOGGLES))
@pytest.mark.parametrize("name", FIXTURE_IDS)
def test_old_values_render_what_the_current_defaults_render(
    name: str, toggle: str, old_charts: dict[str, Path]
) -> None:
    set_json = TOGGLES[toggle]
    old = _render(old_charts[name], set_json)
    expected_values = dict(set_json)
    if "leaderElection" not in _old_values(name):
        # Deliberate: a release from before leader election keeps running without it (its old
        # pod holds no Lease) until the value is set (docs/install.md, "Upgrade").
        expected_values.setdefault("leaderElection.enabled", "false")
    current = _render(CHART, expected_values)
    assert _keyed(old).keys() == _keyed(current).keys()
    for key, obj in _keyed(current).items():
        assert _keyed(old)[key] == obj, f"{name} {toggle}: {key} differs"


@pytest.mark.parametrize("name", FIXTURE_IDS)
def test_old_values_render_a_working_operator_deployment(name: str, old_charts: dict[str, Path]) -> None:
    objs = _render(old_charts[name])
    [deployment] = [o for o in objs if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/modelpool/modelpool:0.1.0"
    args = container["args"]
    assert args[:3] == ["--log-level=INFO", "operator", "run"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in args
    assert "--readiness=http://0.0.0.0:8082/readyz" in args
    assert "--metrics-port=9090" in args
    assert [a for a in args if a.endswith("=")] == []
    assert container["env"][0] == {"name": "MODELPOOL_RESYNC_SECONDS", "value": "30"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8081, "readyz": 8082, "metrics": 9090}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "readyz"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    leader = "leaderElection" in _old_values(name)
    assert ("--leader-elect" in args) is leader
    assert deployment["spec"]["strategy"]["type"] == ("RollingUpdate" if leader else "Recreate")
    kinds = sorted(o["kind"] for o in objs)
    assert "PrometheusRule" not in kinds and "PodMonitor" not in kinds


@pytest.mark.parametrize(
    "given",
    [{"enabled": True}, {"enabled": True, "interval": "500ms", "namespaces": ["a"], "labels": {"x": "y"}}],
    ids=["enabled-only", "all"],
)
def test_a_release_with_the_old_triton_pod_monitor_value_keeps_its_pod_monitor(
    given: dict[str, Any], old_charts: dict[str, Path]
) -> None:
    # The chart revision 3e06f5b named podMonitors.triton `tritonPodMonitor`; a release that
    # turned it on and is upgraded with --reuse-values still has only the old key.
    [name] = [n for n in FIXTURE_IDS if "tritonPodMonitor" in _old_values(n)]
    old = _render(old_charts[name], {"tritonPodMonitor": json.dumps(given)})
    current = _render(CHART, {"podMonitors.triton": json.dumps(given), "leaderElection.enabled": "false"})
    assert _keyed(old) == _keyed(current)
    assert [o["kind"] for o in old].count("PodMonitor") == 1


def test_the_old_triton_pod_monitor_value_turned_on_beside_the_new_one_is_refused() -> None:
    proc = _template(CHART, {"tritonPodMonitor.enabled": "true"})
    assert proc.returncode != 0
    assert "tritonPodMonitor" in proc.stderr and "podMonitors.triton" in proc.stderr, proc.stderr
    # Turned off, as in the old chart's defaults, it is ignored.
    assert _template(CHART, {"tritonPodMonitor.enabled": "false"}).returncode == 0


def _documented_sets() -> list[str]:
    """The `--set` arguments of docs/install.md's move from tritonPodMonitor to podMonitors.triton."""
    args = documented_triton_monitor_migration()
    sets = [a for flag, a in itertools.pairwise(args) if flag == "--set"]
    assert sets and args.count("--set") == len(sets), args
    return sets


def test_the_refusal_names_the_documented_move_to_pod_monitors_triton() -> None:
    proc = _template(CHART, {"tritonPodMonitor.enabled": "true"})
    assert proc.returncode != 0
    # Under --reuse-values a null cannot remove the old release's key (the integration test
    # tests/integration/delivery/test_chart_old_release_upgrade.py shows it): the message names
    # what the docs give, the old key turned off, and the settings to carry over.
    named = " ".join(f"--set {s}" for s in _documented_sets()[:2])
    assert named == "--set tritonPodMonitor.enabled=false --set podMonitors.triton.enabled=true"
    assert named in proc.stderr, proc.stderr
    assert "tritonPodMonitor=null" not in proc.stderr
    carried = proc.stderr.split(named, 1)[1]
    assert [s for s in OLD_MONITOR if s not in carried] == [], proc.stderr


def test_the_documented_move_to_pod_monitors_triton_renders_the_old_pod_monitor(tmp_path: Path) -> None:
    # `helm upgrade --reuse-values` renders with the old release's coalesced values as the
    # chart's defaults: here the old chart's values.yaml with the old PodMonitor turned on and
    # set as docs/install.md's example says, then the documented --set arguments.
    [name] = [n for n in FIXTURE_IDS if "tritonPodMonitor" in _old_values(n)]
    values = _old_values(name)
    values["tritonPodMonitor"] = {"enabled": True, **OLD_MONITOR}
    chart = tmp_path / "modelpool"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    args = ["template", RELEASE, str(chart), "-n", NAMESPACE, "--kube-version", KUBE_VERSION]
    proc = helm(*args, *(a for s in _documented_sets() for a in ("--set", s)))
    assert proc.returncode == 0, proc.stderr
    current = _render(CHART, {"podMonitors.triton": json.dumps({"enabled": True, **OLD_MONITOR})})
    monitors = [o for o in documents(proc.stdout) if o["kind"] == "PodMonitor"]
    assert monitors == [o for o in current if o["kind"] == "PodMonitor"]
    [monitor] = monitors
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == OLD_MONITOR["interval"]


@pytest.mark.parametrize(
    ("values", "path", "expected"),
    [
        ({"podMonitors.triton.enabled": "true"}, ("triton", "interval"), "2s"),
        ({"podMonitors.router.enabled": "true"}, ("router", "interval"), "2s"),
        ({"podMonitors.router.enabled": "true"}, ("router", "port"), "http"),
    ],
)
def test_a_pod_monitor_set_partly_gets_the_defaults_of_the_rest(
    values: dict[str, str], path: tuple[str, str], expected: str, old_charts: dict[str, Path]
) -> None:
    # `--reuse-values --set podMonitors.router.enabled=true` on a release from before podMonitors:
    # only `enabled` is there.
    objs = _render(old_charts[FIXTURE_IDS[0]], values)
    which, field = path
    [monitor] = [o for o in objs if o["kind"] == "PodMonitor"]
    assert monitor["metadata"]["name"] == f"modelpool-{which}"
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint[field] == expected
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
