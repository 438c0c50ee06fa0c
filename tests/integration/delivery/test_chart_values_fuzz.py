"""The chart under values a platform team may pass: what the schema accepts renders objects the
real API server accepts (server-side dry run) and that agree with each other; what the chart
refuses, it refuses at render time, naming the value.

Bounded and reproducible: Hypothesis is derandomized, keeps no database, and the defects found
by fuzzing are pinned as explicit cases. PodMonitor and ServiceMonitor need prometheus-operator's
CRDs; where the cluster has none, a module fixture installs a subset of them (the fields the
chart sets, typed as prometheus-operator types them) and removes it afterwards.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from integration.delivery.deliverytools import (
    CHART,
    KUBE_VERSION,
    MANIFESTS,
    PROM_DURATION,
    RULES_FILE,
    Obj,
    crds_where_missing,
    helm,
    install_chart,
    kustomize,
    monitoring_crd,
    prometheus_rule_crd_stub,
    uninstall_chart,
)
from modelpool.controllers.handlers import ROUTER_LABEL
from modelpool.devcluster.cluster import DevCluster

pytestmark = pytest.mark.cluster

# prometheus-operator's Duration (monitoring.coreos.com/v1).
SELECTOR_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance")
# Render-time refusals of combinations the schema cannot express (templates/_helpers.tpl).
CROSS_FIELD = re.compile(
    r"resources\.requests\.\S+ \(.*\) is more than resources\.limits\.|"
    r"metrics\.port and liveness\.port are both|"
    r"readiness\.port and (liveness|metrics)\.port are both|"
    r"metrics\.serviceMonitor\.scrapeTimeout \(.*\) is longer than metrics\.serviceMonitor\.interval|"
    r"replicaCount is \d+ but leaderElection\.enabled is false|"
    r"serviceAccount\.name is empty while serviceAccount\.create is false"
)


# ---------------------------------------------------------------------------------------------
# Rendering, strict parsing, dry run


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys, as kustomize (kyaml) and YAML 1.2 do."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate mapping keys {duplicates}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def strict_documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def template(values: Mapping[str, Any], release: str, namespace: str, tmp: Path) -> tuple[int, str, str]:
    values_file = tmp / f"values-{uuid.uuid4().hex[:8]}.json"
    values_file.write_text(json.dumps(values))
    proc = helm(
        "template",
        release,
        str(CHART),
        "-n",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(values_file),
    )
    return proc.returncode, proc.stdout, proc.stderr


def dry_run(cluster: DevCluster, text: str) -> None:
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "-f", "-", input_text=text, check=False
    )
    assert proc.returncode == 0, f"the API server refused the rendered objects:\n{proc.stderr}"


# ---------------------------------------------------------------------------------------------
# Consistency of the rendered objects


def _kind(objs: Sequence[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def _strings(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) of every leaf under metadata.name/namespace/labels/annotations, selectors,
    subjects and names that Kubernetes types as strings."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _strings(value, f"{path}[{i}]")
    else:
        yield path, obj


STRING_PATHS = re.compile(
    r"(\.metadata\.(name|namespace|labels\..*|annotations\..*)|\.matchLabels\..*|\.selector\..*"
    r"|\.subjects\[\d+\]\.(name|namespace)|\.roleRef\.name|\.serviceAccountName|\.priorityClassName"
    r"|\.matchNames\[\d+\]|\.podMetricsEndpoints\[\d+\]\.(port|interval)|\.image)$"
)


def assert_consistent(objs: Sequence[Obj], values: Mapping[str, Any], release: str, namespace: str) -> None:
    for obj in objs:
        for path, leaf in _strings(obj):
            if STRING_PATHS.search(path):
                assert isinstance(leaf, str), (
                    f"{obj['kind']} {path} rendered as {type(leaf).__name__} {leaf!r}"
                )
        meta = obj["metadata"]
        assert len(meta["name"]) <= 253, meta["name"]
        for key, value in meta.get("labels", {}).items():
            assert len(value) <= 63, (obj["kind"], key, value)

    [deployment] = _kind(objs, "Deployment")
    assert deployment["metadata"]["namespace"] == namespace
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": selector["app.kubernetes.io/name"],
        SELECTOR_KEYS[1]: release,
    }
    pod = deployment["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert len(set(ports.values())) == len(ports), ports
    assert (
        f"--liveness=http://0.0.0.0:{ports['healthz']}{container['livenessProbe']['httpGet']['path']}"
        in (container["args"])
    )
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["port"] == "readyz"
    assert f"--readiness=http://0.0.0.0:{ports['readyz']}{readiness['path']}" in container["args"]
    env = [e["name"] for e in container["env"]]
    assert len(env) == len(set(env)), env
    watched = values.get("watchNamespaces", [])
    assert [
        a.removeprefix("--namespace=") for a in container["args"] if a.startswith("--namespace=")
    ] == watched

    for service in _kind(objs, "Service"):
        name = service["metadata"]["name"]
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name  # a DNS-1035 label
        assert service["spec"]["selector"] == selector
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)

    pod_sa = pod["spec"]["serviceAccountName"]
    for sa in _kind(objs, "ServiceAccount"):
        assert sa["metadata"]["name"] == pod_sa
    roles = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objs}
    for binding in _kind(objs, "ClusterRoleBinding") + _kind(objs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod_sa, "namespace": namespace}]
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"], binding["metadata"].get("namespace")) in roles, ref
    leader_election = values.get("leaderElection", {}).get("enabled", True)
    if values.get("rbac", {}).get("create", True):
        roles_ = _kind(objs, "Role")
        lease_roles = [r for r in roles_ if r["metadata"]["name"].endswith("-leader-election")]
        assert sorted(r["metadata"]["namespace"] for r in roles_ if r not in lease_roles) == sorted(watched)
        assert [r["metadata"]["namespace"] for r in lease_roles] == ([namespace] if leader_election else [])
    strategy = deployment["spec"]["strategy"]["type"]
    assert strategy == ("RollingUpdate" if leader_election else "Recreate")
    assert ("--leader-elect" in container["args"]) is leader_election
    assert ("POD_NAMESPACE" in env) is leader_election
    if values.get("replicaCount", 1) > 1:
        assert leader_election
    # The operator's PodDisruptionBudget: with a leader and standbys only (minAvailable 1 of 1 would
    # block node drains), over exactly the Deployment's pods.
    replicas = deployment["spec"]["replicas"]
    budgets = _kind(objs, "PodDisruptionBudget")
    assert len(budgets) == int(replicas >= 2 and values.get("podDisruptionBudget", {}).get("enabled", True))
    for budget in budgets:
        assert budget["metadata"]["namespace"] == namespace
        assert budget["spec"]["selector"] == {"matchLabels": selector}
        assert budget["spec"]["minAvailable"] == 1 < replicas

    for monitor in _kind(objs, "ServiceMonitor"):
        [service] = _kind(objs, "Service")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
            p["name"] for p in service["spec"]["ports"]
        }
    # The alerting rules: only when enabled, in the release's namespace, with the extra labels,
    # and the file's rules as they are.
    rule_values = values.get("prometheusRule", {})
    rules = _kind(objs, "PrometheusRule")
    assert len(rules) == int(rule_values.get("enabled", False))
    for rule in rules:
        assert rule["metadata"]["namespace"] == namespace
        assert rule["metadata"]["name"] == deployment["metadata"]["name"]
        assert rule_values.get("additionalLabels", {}).items() <= rule["metadata"]["labels"].items()
        assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())["spec"]
    for monitor in _kind(objs, "PodMonitor"):
        which = monitor["metadata"]["name"].rsplit("-", 1)[1]
        settings_ = values.get("podMonitors", {}).get(which, {})
        endpoint = monitor["spec"]["podMetricsEndpoints"][0]
        if which == "router":
            assert monitor["spec"]["selector"]["matchLabels"] == {ROUTER_LABEL: "true"}
            assert endpoint["port"] == settings_.get("port", "http")
        else:
            assert monitor["spec"]["selector"]["matchLabels"] == {
                "app.kubernetes.io/name": "triton",
                "app.kubernetes.io/managed-by": "modelpool",
            }
            assert endpoint["port"] == "metrics"
        assert re.match(PROM_DURATION, endpoint["interval"])
        names = settings_.get("namespaces") or []
        assert monitor["spec"]["namespaceSelector"] == ({"matchNames": names} if names else {"any": True})
        assert settings_.get("labels", {}).items() <= monitor["metadata"]["labels"].items()


# ---------------------------------------------------------------------------------------------
# Fixtures


def _monitor_crd(kind: str, plural: str, endpoints: str) -> Obj:
    duration = {"type": "string", "pattern": PROM_DURATION}
    endpoint = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "port": {"type": "string"},
            "path": {"type": "string"},
            "interval": duration,
            "scrapeTimeout": duration,
        },
    }
    spec = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "selector": {
                "type": "object",
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
            },
            "namespaceSelector": {
                "type": "object",
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            endpoints: {"type": "array", "items": endpoint},
        },
        "required": [endpoints] if kind == "ServiceMonitor" else [],
    }
    return monitoring_crd(kind, plural, spec)


@pytest.fixture(scope="module")
def monitor_crds(cluster: DevCluster) -> Iterator[None]:
    crds = [
        _monitor_crd("PodMonitor", "podmonitors", "podMetricsEndpoints"),
        _monitor_crd("ServiceMonitor", "servicemonitors", "endpoints"),
        prometheus_rule_crd_stub(),
    ]
    with crds_where_missing(cluster, crds):
        yield


class Spaces:
    """The release namespace and two namespaces to watch, made once for the module."""

    def __init__(self, cluster: DevCluster) -> None:
        tag = uuid.uuid4().hex[:6]
        self.release, self.team_a, self.team_b = (f"fz-{tag}-{s}" for s in ("rel", "a", "b"))
        # A namespace name that YAML reads as a number unless the chart quotes it.
        self.numeric = str(10**7 + int(tag, 16) % 10**7)
        self.all = [self.release, self.team_a, self.team_b, self.numeric]
        for name in self.all:
            cluster.kubectl("create", "namespace", name)


@pytest.fixture(scope="module")
def spaces(cluster: DevCluster, monitor_crds: None) -> Iterator[Spaces]:
    made = Spaces(cluster)
    yield made
    for name in made.all:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def check_accepted(
    cluster: DevCluster, values: Mapping[str, Any], release: str, namespace: str, tmp: Path
) -> None:
    rc, out, err = template(values, release, namespace, tmp)
    assert rc == 0, f"helm template refused values the schema accepts: {err}"
    objs = strict_documents(out)
    assert_consistent(objs, values, release, namespace)
    dry_run(cluster, out)


# ---------------------------------------------------------------------------------------------
# Pinned cases: each of these failed before the chart was fixed.

A53 = "r" * 53  # Helm's longest release name
ACCEPTED: list[tuple[str, str, str, dict[str, Any]]] = [
    # The metrics Service (a DNS-1035 label, at most 63 characters) was named <fullname>-metrics.
    ("long-release", A53, "release", {}),
    ("long-fullname", "modelpool", "release", {"fullnameOverride": "f" * 63}),
    ("long-name-override", "modelpool", "release", {"nameOverride": "n" * 63}),
    ("dotted-release", "team.a", "release", {}),
    # Unquoted label values, names and namespaces that YAML reads as numbers or booleans.
    ("numeric-release", "123", "release", {}),
    ("bool-release", "y", "release", {"watchNamespaces": ["<team_a>"]}),
    ("hex-release", "0x10", "release", {"podMonitors": {"triton": {"enabled": True}}}),
    ("float-release", "1e3", "release", {}),
    ("numeric-name-override", "modelpool", "release", {"nameOverride": "2024"}),
    (
        "numeric-fullname",
        "modelpool",
        "release",
        {"fullnameOverride": "123", "watchNamespaces": ["<team_a>"]},
    ),
    (
        "numeric-namespace",
        "modelpool",
        "numeric",
        {
            "metrics": {
                "enabled": True,
                "port": 9090,
                "service": {"enabled": True, "type": "ClusterIP", "port": 9090},
                "serviceMonitor": {"enabled": True},
            }
        },
    ),
    # A leader and standbys, namespaced (the Lease's Role in the release namespace besides).
    (
        "replicas-with-leader-election",
        "modelpool",
        "release",
        {"replicaCount": 3, "watchNamespaces": ["<team_a>"]},
    ),
    ("one-replica-no-leader-election", "modelpool", "release", {"leaderElection": {"enabled": False}}),
    # Extra labels that repeat a chart label rendered a duplicate mapping key.
    (
        "pod-label-overrides-chart-label",
        "modelpool",
        "release",
        {"podLabels": {"app.kubernetes.io/part-of": "platform"}},
    ),
    (
        "monitor-labels-override-chart-labels",
        "modelpool",
        "release",
        {
            "podMonitors": {
                "triton": {
                    "enabled": True,
                    "interval": "500ms",
                    "labels": {"app.kubernetes.io/component": "x"},
                },
                "router": {"enabled": True, "port": "http2", "labels": {"helm.sh/chart": "mine"}},
            },
            "metrics": {
                "enabled": True,
                "port": 9090,
                "service": {"enabled": True, "type": "ClusterIP", "port": 9090},
                "serviceMonitor": {"enabled": True, "labels": {"app.kubernetes.io/part-of": "prom"}},
            },
        },
    ),
]


def _resolve(value: Any, spaces: Spaces) -> Any:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return getattr(spaces, value[1:-1])
    if isinstance(value, list):
        return [_resolve(v, spaces) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, spaces) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("release", "namespace", "values"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_pinned_values_render_objects_the_api_server_accepts(
    release: str, namespace: str, values: dict[str, Any], cluster: DevCluster, spaces: Spaces, tmp_path: Path
) -> None:
    check_accepted(cluster, _resolve(values, spaces), release, getattr(spaces, namespace), tmp_path)


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    # Object names and label values the API server refuses.
    ("upper-case-name-override", {"nameOverride": "Foo"}, "/nameOverride"),
    ("dash-name-override", {"nameOverride": "-"}, "/nameOverride"),
    ("underscore-fullname", {"fullnameOverride": "my_op"}, "/fullnameOverride"),
    # A pod label that replaces a selector label: the Deployment's selector no longer matches.
    (
        "selector-pod-label",
        {"podLabels": {"app.kubernetes.io/instance": "x"}},
        "/podLabels/app.kubernetes.io~1instance",
    ),
    ("pod-label-value", {"podLabels": {"team": "a b"}}, "/podLabels/team"),
    ("pod-label-key", {"podLabels": {"bad key": "v"}}, "/podLabels"),
    ("node-selector-value", {"nodeSelector": {"zone": "x" * 64}}, "/nodeSelector/zone"),
    ("pod-annotation-key", {"podAnnotations": {"a/b/c": "v"}}, "/podAnnotations"),
    (
        "service-annotation-key",
        {"metrics": {"service": {"annotations": {"-x": "v"}}}},
        "/metrics/service/annotations",
    ),
    (
        "monitor-label-value",
        {"podMonitors": {"triton": {"enabled": True, "labels": {"a": "-"}}}},
        "/podMonitors/triton/labels/a",
    ),
    # Quantities the API server cannot parse, resources it refuses for a container.
    ("quantity-two-dots", {"resources": {"requests": {"cpu": "1.2.3"}}}, "/resources/requests/cpu"),
    (
        "quantity-exponent-and-suffix",
        {"resources": {"limits": {"memory": "1e3Mi"}}},
        "/resources/limits/memory",
    ),
    ("unknown-resource", {"resources": {"requests": {"gpu": "1"}}}, "/resources/requests"),
    # Image references a registry cannot serve.
    ("tag-with-colon", {"image": {"tag": "1.0:x"}}, "/image/tag"),
    ("tag-with-space", {"image": {"tag": "1.0 "}}, "/image/tag"),
    (
        "repository-with-tag",
        {"image": {"repository": "ghcr.io/modelpool/modelpool:0.1.0"}},
        "/image/repository",
    ),
    # A router port name that YAML reads as a number, and that no container port can be named.
    (
        "numeric-router-port",
        {"podMonitors": {"router": {"enabled": True, "port": "8080"}}},
        "/podMonitors/router/port",
    ),
    ("env-set-twice", {"extraEnv": [{"name": "MODELPOOL_RESYNC_SECONDS", "value": "5"}]}, "/extraEnv/0/name"),
    ("priority-class-name", {"priorityClassName": "High"}, "/priorityClassName"),
]


@pytest.mark.parametrize(("values", "named"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_schema_refuses_values_the_api_server_would_refuse(
    values: dict[str, Any], named: str, tmp_path: Path
) -> None:
    rc, _, err = template(values, "modelpool", "modelpool-system", tmp_path)
    assert rc != 0, f"{values} was accepted"
    assert "schema" in err and f"at '{named}'" in err, err


CROSS_REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (
        "request-above-default-limit",
        {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}},
        "resources.requests.memory (1Gi) is more than resources.limits.memory (512Mi)",
    ),
    (
        "limit-below-default-request",
        {"resources": {"limits": {"memory": "100M"}}},
        "resources.requests.memory (256Mi) is more than resources.limits.memory (100M)",
    ),
    (
        "cpu-request-above-limit",
        {"resources": {"requests": {"cpu": 1.5}, "limits": {"cpu": "1"}}},
        "resources.requests.cpu (1.5) is more than resources.limits.cpu (1)",
    ),
    ("metrics-on-liveness-port", {"metrics": {"port": 8081}}, "metrics.port and liveness.port are both 8081"),
    (
        "readiness-on-liveness-port",
        {"readiness": {"port": 8081}},
        "readiness.port and liveness.port are both 8081",
    ),
    (
        "metrics-on-readiness-port",
        {"metrics": {"port": 8082}},
        "readiness.port and metrics.port are both 8082",
    ),
    (
        "replicas-without-leader-election",
        {"replicaCount": 2, "leaderElection": {"enabled": False}},
        "replicaCount is 2 but leaderElection.enabled is false",
    ),
    (
        "pod-namespace-env-with-leader-election",
        {"extraEnv": [{"name": "POD_NAMESPACE", "value": "x"}]},
        "extraEnv[0].name POD_NAMESPACE is set twice (the chart sets it to the pod's namespace",
    ),
    (
        "existing-service-account-unnamed",
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is empty while serviceAccount.create is false: name the ServiceAccount",
    ),
    (
        "scrape-timeout-above-interval",
        {"metrics": {"serviceMonitor": {"enabled": True, "interval": "5s"}}},
        "metrics.serviceMonitor.scrapeTimeout (10s) is longer than metrics.serviceMonitor.interval (5s)",
    ),
]


@pytest.mark.parametrize(
    ("values", "message"), [c[1:] for c in CROSS_REFUSED], ids=[c[0] for c in CROSS_REFUSED]
)
def test_combinations_the_schema_cannot_express_are_refused_at_render(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    rc, _, err = template(values, "modelpool", "modelpool-system", tmp_path)
    assert rc != 0, f"{values} was accepted"
    assert message in err, err


def test_equal_request_and_limit_in_other_units_render(tmp_path: Path) -> None:
    values = {
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": 0.5, "memory": "1073741824"},
        }
    }
    rc, _, err = template(values, "modelpool", "modelpool-system", tmp_path)
    assert rc == 0, err


# ---------------------------------------------------------------------------------------------
# Generated values (bounded)

_label_value = st.sampled_from(["", "a", "A-b_c.d", "1", "true", "null", "z" * 63, "0x1F", "yes", "1e3"])
_label_key = st.sampled_from(
    [
        "team",
        "example.com/owner",
        "a.b-c_d",
        "x" * 63,
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/version",
    ]
)
_annotation_value = st.sampled_from(["", "true", "1", "a b: c", "- x", "{x}", "null", "multi\nline", "#x"])
_duration = st.sampled_from(["500ms", "1s", "2s", "15s", "30s", "1m", "1h"])
_quantity = st.sampled_from(
    ["50m", "1", "0.5", ".5", "5.", "+1", "1e3", "1E-3", "64Mi", "1.5Gi", "2k", 0.25, 2]
)
_name = st.sampled_from(["", "mp", "x" * 63, "a-b", "modelpool", "0abc", "7"])
_release = st.sampled_from(
    ["modelpool", "r", A53, "modelpool-" + "b" * 43, "team-1", "0x10", "no", "on", "team.a"]
)


def _values(team_a: str, team_b: str) -> st.SearchStrategy[dict[str, Any]]:
    labels = st.dictionaries(_label_key, _label_value, max_size=2)
    annotations = st.dictionaries(_label_key, _annotation_value, max_size=2)
    monitor = {"interval": _duration, "namespaces": st.sampled_from([[], [team_a]]), "labels": labels}
    return st.fixed_dictionaries(
        {},
        optional={
            "nameOverride": _name,
            "fullnameOverride": _name,
            "replicaCount": st.sampled_from([0, 1, 2, 3]),
            "leaderElection": st.fixed_dictionaries({"enabled": st.booleans()}),
            "podDisruptionBudget": st.fixed_dictionaries({"enabled": st.booleans()}),
            "watchNamespaces": st.sampled_from([[], [team_a], [team_a, team_b]]),
            "prometheusUrl": st.sampled_from(
                ["", "http://p:9090", "https://x.y/z?q=1&b=#f", "http://[::1]:9/"]
            ),
            "logLevel": st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"]),
            "verbose": st.booleans(),
            "resyncSeconds": st.integers(1, 3600),
            "extraEnv": st.sampled_from(
                [[], [{"name": "A", "value": "1"}], [{"name": "B", "value": "yes: no"}]]
            ),
            "image": st.fixed_dictionaries(
                {
                    "repository": st.sampled_from(["ghcr.io/modelpool/modelpool", "localhost:5000/mp", "mp"]),
                    "pullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never"]),
                },
                optional={
                    "tag": st.sampled_from(["", "1.0", "latest", "v1.2.3-rc.1", "1"]),
                    "digest": st.sampled_from(["", "sha256:" + "a" * 64]),
                },
            ),
            "imagePullSecrets": st.sampled_from([[], [{"name": "regcred"}]]),
            "metrics": st.fixed_dictionaries(
                {
                    "enabled": st.booleans(),
                    "port": st.integers(1, 65535),
                    "service": st.fixed_dictionaries(
                        {
                            "enabled": st.booleans(),
                            "type": st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]),
                            "port": st.integers(1, 65535),
                        },
                        optional={"annotations": annotations},
                    ),
                    "serviceMonitor": st.fixed_dictionaries(
                        {"enabled": st.just(False)}, optional={"labels": labels, "interval": _duration}
                    ),
                }
            ),
            "readiness": st.fixed_dictionaries(
                {}, optional={"port": st.integers(1, 65535), "path": st.sampled_from(["/readyz", "/r/0"])}
            ),
            "prometheusRule": st.fixed_dictionaries(
                {"enabled": st.booleans()}, optional={"additionalLabels": labels}
            ),
            "podMonitors": st.fixed_dictionaries(
                {},
                optional={
                    "triton": st.fixed_dictionaries({"enabled": st.booleans()}, optional=monitor),
                    "router": st.fixed_dictionaries(
                        {"enabled": st.booleans()},
                        optional={**monitor, "port": st.sampled_from(["http", "metrics", "p-1", "a" * 15])},
                    ),
                },
            ),
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "requests": st.dictionaries(
                        st.sampled_from(["cpu", "memory", "ephemeral-storage"]), _quantity
                    ),
                    "limits": st.dictionaries(st.sampled_from(["cpu", "memory"]), _quantity),
                },
            ),
            "nodeSelector": labels,
            "tolerations": st.sampled_from(
                [[], [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]]
            ),
            "podAnnotations": annotations,
            "podLabels": labels,
            "serviceAccount": st.fixed_dictionaries(
                {"create": st.booleans(), "name": _name},
                optional={"annotations": annotations, "automountServiceAccountToken": st.booleans()},
            ),
            "rbac": st.fixed_dictionaries({"create": st.booleans()}),
        },
    )


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    values = draw(_values("<team_a>", "<team_b>"))
    return draw(_release), values


# Explicit examples that once failed after rendering: each must render (a refusal would check nothing).
NODEPORT_EXAMPLE = (
    A53,
    {
        "metrics": {
            "enabled": True,
            "port": 9090,
            "service": {"enabled": True, "type": "NodePort", "port": 1},
            "serviceMonitor": {"enabled": False},
        }
    },
)
YAML_LOOKALIKES_EXAMPLE = (
    "on",
    {"podLabels": {"app.kubernetes.io/version": "1e3"}, "nodeSelector": {"team": "true"}},
)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_cases())
@example(case=NODEPORT_EXAMPLE)
@example(case=YAML_LOOKALIKES_EXAMPLE)
def test_generated_values_render_objects_the_api_server_accepts(
    case: tuple[str, dict[str, Any]], cluster: DevCluster, spaces: Spaces, tmp_path: Path
) -> None:
    release, raw = case
    values = _resolve(raw, spaces)
    rc, out, err = template(values, release, spaces.release, tmp_path)
    if rc != 0:
        assert case not in (NODEPORT_EXAMPLE, YAML_LOOKALIKES_EXAMPLE), f"an example was refused: {err}"
        # The only refusals of values the schema accepts: the cross-field checks, which name them.
        assert CROSS_FIELD.search(err), f"helm template refused {values} (release {release}): {err}"
        event("refused by a cross-field check")
        return
    event("rendered, checked and dry-run")
    objs = strict_documents(out)
    assert_consistent(objs, values, release, spaces.release)
    dry_run(cluster, out)


# ---------------------------------------------------------------------------------------------
# Installs side by side


def test_same_release_name_installs_namespaced_in_two_namespaces(
    cluster: DevCluster, namespaces: Callable[..., str]
) -> None:
    """Two teams install release `modelpool` into their own namespaces, each watching its own:
    the namespaced ClusterRole/ClusterRoleBinding are cluster-scoped, so they must not share a
    name (Helm refused the second install: "ClusterRole ... exists and cannot be imported into
    the current release")."""
    ns_a, ns_b = namespaces(), namespaces()
    release = "modelpool"
    try:
        for ns in (ns_a, ns_b):
            install_chart(cluster, release, ns, "--skip-crds", "--set-json", f'watchNamespaces=["{ns}"]')
        objects = {
            ns: [f"clusterrole/{release}-{ns}-cluster", f"clusterrolebinding/{release}-{ns}-cluster"]
            for ns in (ns_a, ns_b)
        }
        for obj in objects[ns_a] + objects[ns_b]:
            assert cluster.kubectl("get", obj, check=False).returncode == 0, obj
        # Uninstalling one release leaves the other's cluster-scoped objects alone.
        proc = helm("uninstall", release, "-n", ns_a, "--wait", "--timeout", "60s", cluster=cluster)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [o for o in objects[ns_a] if cluster.kubectl("get", o, check=False).returncode == 0] == []
        for obj in objects[ns_b]:
            assert cluster.kubectl("get", obj, check=False).returncode == 0, obj
        uninstall_chart(cluster, release, ns_b, objects[ns_b])
    finally:
        # A failed run must not leave cluster-scoped objects behind in the shared cluster.
        for ns in (ns_a, ns_b):
            helm("uninstall", release, "-n", ns, "--ignore-not-found", cluster=cluster)


@pytest.mark.parametrize("folder", ["base", "overlays/dev", "overlays/production"])
def test_kustomize_objects_are_consistent(folder: str) -> None:
    objs = [
        o for o in kustomize(MANIFESTS / folder) if o["kind"] not in ("Namespace", "CustomResourceDefinition")
    ]
    assert_consistent(objs, {}, "modelpool", "modelpool-system")
