"""The operator's alerting rules (charts/modelpool/files/alerts/prometheusrule.yaml): valid for the
real ``promtool`` (Debian's prometheus package, which .ci/setup.sh installs), each alert seen firing
and not firing on series shaped as the operator (or, scraped from the router pods, the router)
exports them (``promtool test rules``), each with a runbook in docs/install.md, reading only series
the operator or the router exports; and the one file is what the Helm chart (only with
``prometheusRule.enabled``) and the kustomize component ship.

The promtool unit tests are written here as data: for each alert, input series and the alerts
expected at given times (an empty list: none firing). Their annotations are expanded from the rule
file's templates, which use only ``{{ $labels.<name> }}`` and ``{{ $value }}`` (or
``{{ $value | humanizePercentage }}``; a test checks that).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

import modelpool.leadership  # noqa: F401  (registers modelpool_leader in the operator's registry)
from integration.delivery.deliverytools import (
    MANIFESTS,
    REPO_ROOT,
    RULES_FILE,
    Obj,
    by_kind,
    crds_where_missing,
    helm_template,
    kustomize,
    one,
    prometheus_rule_crd_stub,
    render,
)
from modelpool.devcluster.cluster import DevCluster
from modelpool.routing.metrics import RouterMetrics
from modelpool.scaling.metrics import REGISTRY

pytestmark = pytest.mark.prometheus

COMPONENT = MANIFESTS / "components" / "alerts"
INSTALL_DOC = REPO_ROOT / "docs" / "install.md"
RUNBOOK_BASE = "https://github.com/modelpool/modelpool/blob/main/docs/install.md#"
PROMTOOL = Path("/usr/bin/promtool")
SEVERITIES = {"info", "warning", "critical"}
TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
SCRAPED = {"job": "modelpool", "instance": "10.0.0.7:9090"}  # what Prometheus adds to each series


def rule_object() -> Obj:
    obj: Obj = yaml.safe_load(RULES_FILE.read_text())
    return obj


def alerting_rules() -> list[Obj]:
    return [r for g in rule_object()["spec"]["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.is_file():
        pytest.fail(f"{PROMTOOL} is missing: install Debian's prometheus package (.ci/setup.sh does)")
    return subprocess.run(
        [str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# ---------------------------------------------------------------------------------------------
# The promtool unit tests, as data


def cond(kind: str, namespace: str, name: str, type_: str, status: str, values: str) -> tuple[str, str]:
    labels = {"namespace": namespace, "name": name, "kind": kind, "type": type_, "status": status}
    return series("modelpool_status_condition", labels, values)


def series(metric: str, labels: dict[str, str], values: str) -> tuple[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in {**SCRAPED, **labels}.items())
    return f"{metric}{{{body}}}", values


def condition_of(kind: str, namespace: str, name: str, type_: str, true: str) -> list[tuple[str, str]]:
    """The three series of one condition: ``true`` for status True, its complement for False."""
    false = re.sub(r"(?<![x+\d])([01])", lambda m: "0" if m.group(1) == "1" else "1", true)
    return [
        cond(kind, namespace, name, type_, "True", true),
        cond(kind, namespace, name, type_, "False", false),
        cond(kind, namespace, name, type_, "Unknown", zeros(true)),
    ]


def zeros(values: str) -> str:
    return re.sub(r"(?<![x+\d])[0-9]+", "0", values)


ROUTER_SCRAPE = {"job": "team/modelpool-router", "container": "router", "endpoint": "http"}


def router_requests(
    namespace: str,
    pool: str,
    variant: str,
    tier: str,
    values: str,
    pod: str = "router-0",
    policy: str | None = "policy",
) -> tuple[str, str]:
    """A router's answers as a PodMonitor scrape labels them: ``namespace`` is the router pod's
    (Prometheus' target label; the router exports none), ``pool`` and ``policy`` the router's own
    labels (no ``policy`` before a policy has programmed it)."""
    return router_series(
        "modelpool_router_requests_total",
        namespace,
        pool,
        {"variant": variant, "tier": tier},
        values,
        pod,
        policy,
    )


def router_series(
    metric: str,
    namespace: str,
    pool: str,
    own: dict[str, str],
    values: str,
    pod: str = "router-0",
    policy: str | None = "policy",
) -> tuple[str, str]:
    """One series of a router's ``metric`` as a PodMonitor scrape labels it (as
    :func:`router_requests`), with the router's own labels ``own`` after ``pool`` and ``policy``."""
    labels = {**ROUTER_SCRAPE, "instance": f"{pod}:8080", "namespace": namespace, "pod": pod}
    mine = {"pool": pool, **({"policy": policy} if policy else {}), **own}
    return series(metric, {**labels, **mine}, values)


def refusals(
    namespace: str,
    pool: str,
    max_connections: str,
    out_of_files: str,
    pod: str = "router-0",
    policy: str | None = "policy",
) -> list[tuple[str, str]]:
    """One router's ``client_connections_refused_total``, both reasons (exported from 0)."""
    metric = "modelpool_router_client_connections_refused_total"
    return [
        router_series(metric, namespace, pool, {"reason": "max_connections"}, max_connections, pod, policy),
        router_series(metric, namespace, pool, {"reason": "out_of_files"}, out_of_files, pod, policy),
    ]


def connections(
    namespace: str, pool: str, open_now: str, cap: str, pod: str = "router-0", policy: str | None = "policy"
) -> list[tuple[str, str]]:
    """One router's ``client_connections`` (open now) and ``client_connections_max`` (its cap)."""
    return [
        router_series("modelpool_router_client_connections", namespace, pool, {}, open_now, pod, policy),
        router_series("modelpool_router_client_connections_max", namespace, pool, {}, cap, pod, policy),
    ]


def router_alert(
    namespace: str, pod: str, pool: str, policy: str | None = "policy", **more: str
) -> dict[str, str]:
    """The labels of a router's connection alert (``more``: ``reason``)."""
    return {
        "namespace": namespace,
        "pod": pod,
        "instance": f"{pod}:8080",
        "pool": pool,
        **({"policy": policy} if policy else {}),
        **more,
    }


def router_answers(
    namespace: str, pool: str, large: str, small: str, pod: str = "router-0", policy: str | None = "policy"
) -> list[tuple[str, str]]:
    """One router's answers from a large and a small variant (each its tier)."""
    return [
        router_requests(namespace, pool, "large", "large", large, pod, policy),
        router_requests(namespace, pool, "small", "small", small, pod, policy),
    ]


def large_share_cap(
    namespace: str, name: str, pool: str, values: str, instance: str | None = None
) -> tuple[str, str]:
    """The operator's series of one policy's cap (its namespace and poolRef kept by honorLabels)."""
    labels = {
        "namespace": namespace,
        "name": name,
        "pool": pool,
        **({"instance": instance} if instance else {}),
    }
    return series("modelpool_routingpolicy_max_large_share_ratio", labels, values)


@dataclass
class Case:
    """Series, and the alert's firing label sets at each time (value for ``$value``)."""

    alert: str
    what: str
    input_series: list[tuple[str, str]]
    expect: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)


POOL = "ModelPool"
POLICY = "RoutingPolicy"
CASES = [
    Case(
        "ModelPoolNotReady",
        "a pool not Ready (False, or Unknown) for 15m fires, also across a failover of the leader; "
        "a Ready pool, one Ready again after 10m and one deleted (its series gone) do not",
        [
            *condition_of(POOL, "team-a", "stuck", "Ready", "0x30"),
            *condition_of(POOL, "team-a", "fine", "Ready", "1x30"),
            *condition_of(POOL, "team-a", "recovered", "Ready", "0x10 1x20"),
            cond(POOL, "team-b", "unknown", "Ready", "True", "0x30"),
            cond(POOL, "team-b", "unknown", "Ready", "False", "0x30"),
            cond(POOL, "team-b", "unknown", "Ready", "Unknown", "1x30"),
            *condition_of(POOL, "team-a", "deleted", "Ready", "0x5 stale"),
            # The leader's series end (stale) at a failover, and the new leader's start 1m later.
            *condition_of(POOL, "team-c", "handed-over", "Ready", "0x8 stale"),
            *[
                (s.replace("10.0.0.7", "10.0.0.9"), v)
                for s, v in condition_of(POOL, "team-c", "handed-over", "Ready", "_x10 0x20")
            ],
            # Another condition of the stuck pool changes nothing.
            *condition_of(POOL, "team-a", "stuck", "Degraded", "1x30"),
        ],
        {
            "14m": [],
            "16m": [
                ({"namespace": "team-a", "name": "stuck"}, 0),
                ({"namespace": "team-b", "name": "unknown"}, 0),
                ({"namespace": "team-c", "name": "handed-over"}, 0),
            ],
        },
    ),
    Case(
        "ModelPoolNotReady",
        "scraped without honorLabels (the pool's namespace in exported_namespace, the operator's in "
        "namespace): two pools named bank in two namespaces stay apart, and the one not Ready fires "
        "under its own namespace",
        [
            *[
                series(
                    "modelpool_status_condition",
                    {
                        "namespace": "modelpool-system",
                        "exported_namespace": pool_ns,
                        "name": "bank",
                        "kind": POOL,
                        "type": "Ready",
                        "status": status,
                    },
                    values,
                )
                for pool_ns, ready in (("team-a", "0x30"), ("team-b", "1x30"))
                for status, values in (
                    ("True", ready),
                    ("False", ready.replace("0x", "Z").replace("1x", "0x").replace("Z", "1x")),
                    ("Unknown", "0x30"),
                )
            ],
        ],
        {"14m": [], "16m": [({"namespace": "team-a", "name": "bank"}, 0)]},
    ),
    Case(
        "ModelPoolScalingHeld",
        "MetricsAvailable False for 10m fires; True, or False for 5m only, does not",
        [
            *condition_of(POOL, "team-a", "blind", "MetricsAvailable", "0x20"),
            *condition_of(POOL, "team-a", "fine", "MetricsAvailable", "1x20"),
            *condition_of(POOL, "team-a", "blip", "MetricsAvailable", "1x5 0x5 1x10"),
        ],
        {"9m": [], "11m": [({"namespace": "team-a", "name": "blind"}, 1)]},
    ),
    Case(
        "ModelPoolReplicasCutByBudget",
        "replicas cut for 30m fire (per variant, with the count); none cut, or cut for 10m, do not",
        [
            series(
                "modelpool_scaling_cut_replicas",
                {"namespace": "team-a", "pool": "p", "variant": "large"},
                "2x40",
            ),
            series(
                "modelpool_scaling_cut_replicas",
                {"namespace": "team-a", "pool": "p", "variant": "small"},
                "0x40",
            ),
            series(
                "modelpool_scaling_cut_replicas",
                {"namespace": "team-b", "pool": "p", "variant": "large"},
                "3x10 0x30",
            ),
        ],
        {"29m": [], "31m": [({"namespace": "team-a", "pool": "p", "variant": "large"}, 2)]},
    ),
    Case(
        "ModelPoolGPUBudgetDoesNotFit",
        "GPUBudgetFits False for 15m fires; True does not",
        [
            *condition_of(POOL, "team-a", "tight", "GPUBudgetFits", "0x20"),
            *condition_of(POOL, "team-a", "roomy", "GPUBudgetFits", "1x20"),
        ],
        {"14m": [], "16m": [({"namespace": "team-a", "name": "tight"}, 1)]},
    ),
    Case(
        "ModelPoolRoutingPolicyNotProgrammed",
        "a policy not Programmed, or not Accepted, for 15m fires for that condition; a healthy "
        "policy, a pool's conditions and a policy's Ready alone do not",
        [
            *condition_of(POLICY, "team-a", "unpushed", "Accepted", "1x20"),
            *condition_of(POLICY, "team-a", "unpushed", "ResolvedRefs", "1x20"),
            *condition_of(POLICY, "team-a", "unpushed", "Programmed", "0x20"),
            *condition_of(POLICY, "team-a", "invalid", "Accepted", "0x20"),
            *condition_of(POLICY, "team-a", "healthy", "Accepted", "1x20"),
            *condition_of(POLICY, "team-a", "healthy", "ResolvedRefs", "1x20"),
            *condition_of(POLICY, "team-a", "healthy", "Programmed", "1x20"),
            *condition_of(POLICY, "team-a", "healthy", "Ready", "0x20"),
            *condition_of(POOL, "team-a", "pool", "Accepted", "0x20"),
        ],
        {
            "14m": [],
            "16m": [
                ({"namespace": "team-a", "name": "unpushed", "type": "Programmed"}, 0),
                ({"namespace": "team-a", "name": "invalid", "type": "Accepted"}, 0),
            ],
        },
    ),
    Case(
        "ModelPoolLargeShareAboveCap",
        "a policy whose routers (two pods) answer 60% from the large tier for 15m fires against its "
        "cap of 50%, also across a failover of the leader; another policy of the same pool whose "
        "own router answers 10% from the large tier does not fire against the same cap (the pool's "
        "share, 7 of 15, would not fire at all)",
        [
            *router_answers(
                "team-a", "intents", large="0+3x40", small="0+2x40", pod="router-0", policy="strict"
            ),
            *router_answers(
                "team-a", "intents", large="0+3x40", small="0+2x40", pod="router-1", policy="strict"
            ),
            *router_answers(
                "team-a", "intents", large="0+1x40", small="0+9x40", pod="router-2", policy="other"
            ),
            large_share_cap("team-a", "strict", "intents", "0.5x8 stale"),
            # The new leader's series, from another operator pod, 2m after the old one's ended.
            large_share_cap("team-a", "strict", "intents", "_x10 0.5x30", instance="10.0.0.9:9090"),
            large_share_cap("team-a", "other", "intents", "0.5x40"),
        ],
        {
            "14m": [],
            "17m": [({"namespace": "team-a", "name": "strict", "pool": "intents", "policy": "strict"}, 0.6)],
            "30m": [({"namespace": "team-a", "name": "strict", "pool": "intents", "policy": "strict"}, 0.6)],
        },
    ),
    Case(
        "ModelPoolLargeShareAboveCap",
        "a share below the cap, a policy that sets no cap (though a policy of the same name in "
        "another namespace has one), a policy with no traffic, one whose cap was removed, one whose "
        "large tier answers nothing, one whose routers keep to its cap while another policy's "
        "routers of the same pool do not (the pool's share, 10 of 20, would fire), and routers no "
        "policy has programmed yet (no policy label) do not fire",
        [
            *router_answers("team-b", "intents", large="0+1x40", small="0+3x40"),
            large_share_cap("team-b", "policy", "intents", "0.5x40"),
            *router_answers("team-c", "intents", large="0+9x40", small="0+1x40"),
            *router_answers("team-d", "intents", large="5x40", small="7x40"),
            large_share_cap("team-d", "policy", "intents", "0.1x40"),
            *router_answers("team-e", "intents", large="0+4x40", small="0+1x40"),
            large_share_cap("team-e", "policy", "intents", "0.5x5 stale"),
            router_requests("team-f", "intents", "small", "small", "0+5x40"),
            large_share_cap("team-f", "policy", "intents", "0x40"),
            *router_answers("team-g", "intents", large="0+1x40", small="0+9x40", policy="capped"),
            *router_answers(
                "team-g", "intents", large="0+9x40", small="0+1x40", pod="router-1", policy="free"
            ),
            large_share_cap("team-g", "capped", "intents", "0.4x40"),
            *router_answers("team-h", "intents", large="0+9x40", small="0+1x40", policy=None),
            large_share_cap("team-h", "policy", "intents", "0.5x40"),
        ],
        {"17m": [], "30m": []},
    ),
    Case(
        "ModelPoolRouterRefusingConnections",
        "a router refusing connections over its cap for 5m fires, with the reason; one out of file "
        "descriptors fires with that reason, also before a policy has programmed it (no policy "
        "label); a router of the same pool that refuses none, and a burst of refusals over within "
        "5m, do not; two routers of one pool refusing alert apart",
        [
            *refusals("team-a", "intents", max_connections="0+5x40", out_of_files="0x40"),
            *refusals("team-a", "intents", max_connections="0x40", out_of_files="0x40", pod="router-1"),
            *refusals("team-a", "intents", max_connections="0+1x40", out_of_files="0x40", pod="router-2"),
            *refusals("team-b", "intents", max_connections="0x40", out_of_files="0+2x40", policy=None),
            # One burst: 0 until 5m, 8 from 6m on: refusals in the last 5m from 6m to 10m only.
            *refusals("team-c", "intents", max_connections="0x5 8x35", out_of_files="0x40"),
        ],
        {
            "5m": [],
            "10m": [
                (router_alert("team-a", "router-0", "intents", reason="max_connections"), 0),
                (router_alert("team-a", "router-2", "intents", reason="max_connections"), 0),
                (router_alert("team-b", "router-0", "intents", None, reason="out_of_files"), 0),
            ],
            "12m": [
                (router_alert("team-a", "router-0", "intents", reason="max_connections"), 0),
                (router_alert("team-a", "router-2", "intents", reason="max_connections"), 0),
                (router_alert("team-b", "router-0", "intents", None, reason="out_of_files"), 0),
            ],
        },
    ),
    Case(
        "ModelPoolRouterRefusingConnections",
        "a router that refused connections long ago and none since does not fire, whether its "
        "counter stayed or it was restarted (its counters from 0 again)",
        [
            *refusals("team-a", "intents", max_connections="40x40", out_of_files="3x40"),
            *refusals(
                "team-a", "intents", max_connections="0+5x10 0x30", out_of_files="0x40", pod="router-1"
            ),
        ],
        {"20m": [], "30m": []},
    ),
    Case(
        "ModelPoolRouterConnectionsNearCap",
        "a router with over 90% of its cap open for 10m fires, with the share, also where the "
        "open-files limit lowered the cap (17 of 18); one at half its cap, one at its cap for 5m "
        "only, and one at exactly 90%, do not",
        [
            *connections("team-a", "intents", open_now="3700x20", cap="4096x20"),
            *connections("team-a", "intents", open_now="2048x20", cap="4096x20", pod="router-1"),
            *connections("team-a", "intents", open_now="4096x5 100x15", cap="4096x20", pod="router-2"),
            *connections("team-b", "intents", open_now="17x20", cap="18x20", policy=None),
            *connections("team-c", "intents", open_now="9x20", cap="10x20"),
        ],
        {
            "9m": [],
            "11m": [
                (router_alert("team-a", "router-0", "intents"), 3700 / 4096),
                (router_alert("team-b", "router-0", "intents", None), 17 / 18),
            ],
        },
    ),
    Case(
        "ModelPoolReconcileErrors",
        "errors that go on for 15m fire; errors that stopped, and a counter that stays, do not",
        [
            series(
                "modelpool_reconcile_errors_total",
                {"controller": "modelpool", "kind": "KubeError"},
                "0+1x40",
            ),
            series(
                "modelpool_reconcile_errors_total",
                {"controller": "routingpolicy", "kind": "HTTPError"},
                "0+1x4 5x40",
            ),
            series(
                "modelpool_reconcile_errors_total",
                {"controller": "routingpolicy", "kind": "ValueError"},
                "7x40",
            ),
        ],
        {"14m": [], "20m": [({"controller": "modelpool", "kind": "KubeError"}, 0.1)]},
    ),
    Case(
        "ModelPoolOperatorAbsent",
        "no operator scraped for 10m fires",
        [series("modelpool_build_info", {"version": "0.1.0"}, "1x5")],
        {"8m": [], "14m": [], "22m": [({}, 1)]},
    ),
    Case(
        "ModelPoolOperatorAbsent",
        "an operator, leader or standby, scraped all along does not fire",
        [
            series("modelpool_build_info", {"version": "0.1.0"}, "1x10 _x30"),
            series("modelpool_build_info", {"version": "0.1.0", "instance": "10.0.0.8:9090"}, "_x5 1x35"),
        ],
        {"22m": [], "40m": []},
    ),
    Case(
        "ModelPoolOperatorNoLeader",
        "no replica leading for 5m fires; one leader of two replicas, and a failover, do not",
        [
            series("modelpool_leader", {"lease": "ops/lost", "instance": "a"}, "1x10 0x20"),
            series("modelpool_leader", {"lease": "ops/lost", "instance": "b"}, "0x30"),
            series("modelpool_leader", {"lease": "ops/failover", "instance": "a"}, "1x10 0x20"),
            series("modelpool_leader", {"lease": "ops/failover", "instance": "b"}, "0x12 1x18"),
            series("modelpool_leader", {"lease": "ops/steady", "instance": "a"}, "1x30"),
            series("modelpool_leader", {"lease": "ops/steady", "instance": "b"}, "0x30"),
        ],
        {"9m": [], "14m": [], "17m": [({"lease": "ops/lost"}, 0)]},
    ),
    Case(
        "ModelPoolOperatorMultipleLeaders",
        "two replicas leading for 5m fires; one leader of two replicas does not",
        [
            series("modelpool_leader", {"lease": "ops/split", "instance": "a"}, "1x30"),
            series("modelpool_leader", {"lease": "ops/split", "instance": "b"}, "0x10 1x20"),
            series("modelpool_leader", {"lease": "ops/steady", "instance": "a"}, "1x30"),
            series("modelpool_leader", {"lease": "ops/steady", "instance": "b"}, "0x30"),
        ],
        {"12m": [], "17m": [({"lease": "ops/split"}, 2)]},
    ),
]


def expand(text: str, labels: dict[str, str], value: float) -> str:
    def one_template(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr == "$value":
            return f"{value:g}"
        if expr == "$value | humanizePercentage":  # Prometheus: humanize(100 * value) + "%"
            return f"{value * 100:.4g}%"
        return labels.get(expr.removeprefix("$labels."), "")

    return TEMPLATE.sub(one_template, text)


def promtool_tests(rules_name: str) -> Obj:
    rules = {r["alert"]: r for r in alerting_rules()}
    tests = []
    for case in CASES:
        rule = rules[case.alert]
        alerts = []
        for at, firing in case.expect.items():
            expected = [
                {
                    "exp_labels": {**labels, **rule.get("labels", {})},
                    "exp_annotations": {k: expand(v, labels, value) for k, v in rule["annotations"].items()},
                }
                for labels, value in firing
            ]
            alerts.append({"eval_time": at, "alertname": case.alert, "exp_alerts": expected})
        tests.append(
            {
                "name": f"{case.alert}: {case.what}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.input_series],
                "alert_rule_test": alerts,
            }
        )
    return {"rule_files": [rules_name], "evaluation_interval": "1m", "tests": tests}


def write_rules(folder: Path, spec: Obj) -> Path:
    """The rule file Prometheus reads: the PrometheusRule's spec (``groups:``)."""
    path = folder / "modelpool-alerts.rules.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_promtool_tests(folder: Path, spec: Obj) -> subprocess.CompletedProcess[str]:
    rules = write_rules(folder, spec)
    tests = folder / "modelpool-alerts.test.yaml"
    tests.write_text(yaml.safe_dump(promtool_tests(rules.name), sort_keys=False))
    return promtool("test", "rules", tests.name, cwd=folder)


# ---------------------------------------------------------------------------------------------
# promtool


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, rule_object()["spec"])
    proc = promtool("check", "rules", rules.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in proc.stdout


def test_every_alert_fires_and_stays_quiet_as_the_promtool_tests_expect(tmp_path: Path) -> None:
    proc = run_promtool_tests(tmp_path, rule_object()["spec"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = [r["alert"] for r in alerting_rules()]
    assert len(names) == len(set(names))
    firing = {c.alert for c in CASES for f in c.expect.values() if f}
    quiet = {c.alert for c in CASES for f in c.expect.values() if not f}
    assert firing == quiet == set(names)


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("ModelPoolNotReady", "for: 15m", "for: 10m"),  # the 14m case would fire
        ("ModelPoolOperatorNoLeader", "< 1", "< 2"),  # one leader of two replicas is normal
        ("ModelPoolRoutingPolicyNotProgrammed", "Accepted|ResolvedRefs|Programmed", "Programmed"),
        ("ModelPoolNotReady", "[2m]", "[10s]"),  # the failover would restart the for: clock
        ("ModelPoolLargeShareAboveCap", 'tier="large"', 'tier="small"'),  # the small tier's share
        ("ModelPoolLargeShareAboveCap", "[2m]", "[10s]"),  # the failover would restart the for: clock
        ("ModelPoolLargeShareAboveCap", "group_right", "group_left"),  # the policy's name is lost
        ("ModelPoolLargeShareAboveCap", "by (namespace, pool, policy)", "by (namespace, pool)"),  # pool-wide
        ("ModelPoolRouterRefusingConnections", "for: 5m", "for: 3m"),  # the burst would fire
        ("ModelPoolRouterRefusingConnections", "pod, instance, ", ""),  # one pool's routers as one
        ("ModelPoolRouterRefusingConnections", ", reason)", ")"),  # the reason is lost
        ("ModelPoolRouterConnectionsNearCap", "for: 10m", "for: 5m"),  # too soon: the 9m case fires
        ("ModelPoolRouterConnectionsNearCap", "> 0.9", ">= 0.9"),  # exactly 90% would fire
    ],
)
def test_the_promtool_tests_catch_a_changed_rule(alert: str, old: str, new: str, tmp_path: Path) -> None:
    """The promtool tests can fail: a rule changed in a way that matters is caught."""
    spec = rule_object()["spec"]
    [rule] = [r for g in spec["groups"] for r in g["rules"] if r.get("alert") == alert]
    key = "for" if old.startswith("for:") else "expr"
    text = f"for: {rule['for']}" if key == "for" else rule["expr"]
    assert old in text
    changed = text.replace(old, new)
    rule[key] = changed.removeprefix("for: ") if key == "for" else changed
    proc = run_promtool_tests(tmp_path, spec)
    assert proc.returncode != 0, f"promtool accepted the changed {alert}:\n{proc.stdout}"
    assert alert in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# What each alert carries


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as '-'."""
    headings = [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_each_alert_says_what_to_do_and_links_its_runbook(rule: Obj) -> None:
    assert rule["alert"].startswith("ModelPool")
    assert re.fullmatch(r"\d+[smh]", rule["for"]), rule.get("for")
    assert rule["labels"]["severity"] in SEVERITIES
    notes = rule["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert len(notes["description"]) > 150, "the description says what to check and how to fix it"
    for text in notes.values():
        for expr in TEMPLATE.findall(text):
            assert expr in ("$value", "$value | humanizePercentage") or re.fullmatch(
                r"\$labels\.\w+", expr
            ), expr
    assert notes["runbook_url"] == RUNBOOK_BASE + rule["alert"].lower()
    assert rule["alert"].lower() in _anchors(INSTALL_DOC.read_text()), "docs/install.md has its runbook"


def _exported_names(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exports (families of no sample yet included)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))
    }


def _serving(metrics: RouterMetrics) -> RouterMetrics:
    """``metrics`` as ``router serve`` sets them up once it serves: its client connections (none
    open, the cap, none refused) and its open-files limit."""
    metrics.connections = lambda: (0, 4096, {})
    metrics.open_files_limit = 8460
    return metrics


def _router_names() -> set[str]:
    """The series names a serving router exports (its registry, before any request)."""
    metrics = _serving(RouterMetrics("pool", generation=lambda: 0, endpoint_states=lambda: []))
    return _exported_names(metrics.registry)


def test_the_alerts_read_only_series_the_operator_or_the_router_exports() -> None:
    operator, router = _exported_names(REGISTRY), _router_names()
    assert "modelpool_status_condition" in operator and "modelpool_leader" in operator
    assert "modelpool_routingpolicy_max_large_share_ratio" in operator
    assert "modelpool_router_requests_total" in router
    assert "modelpool_router_client_connections_refused_total" in router
    assert {"modelpool_router_client_connections", "modelpool_router_client_connections_max"} <= router
    used = {
        name for rule in alerting_rules() for name in re.findall(r"\b(modelpool_[a-z_]+)\b", rule["expr"])
    }
    assert used and used <= operator | router, sorted(used - operator - router)
    by_router = {n for n in used if n.startswith("modelpool_router_")}
    assert by_router <= router, "a router_ series must be the router's, not the operator's"


def test_the_router_series_the_alerts_read_carry_the_labels_they_join_on() -> None:
    """ModelPoolLargeShareAboveCap sums the routers' answers by (namespace, pool, policy) and
    filters on tier: the router exports pool, policy and tier (namespace is the scrape's target
    label, so the router must not export one of its own, which the PodMonitor would rename to
    exported_namespace). ModelPoolRouterRefusingConnections and ModelPoolRouterConnectionsNearCap
    group a router's connection series by pool, policy and (the refusals) reason, and divide the
    open connections by the cap on every label: both carry the same ones."""
    policy: list[str | None] = [None]
    metrics = _serving(
        RouterMetrics("intents", generation=lambda: 0, endpoint_states=lambda: [], policy=lambda: policy[0])
    )
    metrics.answered("large", "large", cost=20.0, baseline_cost=20.0)

    def labels() -> dict[str, str]:
        [family] = [f for f in metrics.registry.collect() if f.name == "modelpool_router_requests"]
        [sample] = family.samples
        return sample.labels

    assert labels() == {"pool": "intents", "variant": "large", "tier": "large"}  # no policy label yet
    policy[0] = "strict"  # the operator's push names the policy
    assert labels() == {"pool": "intents", "policy": "strict", "variant": "large", "tier": "large"}
    for family in metrics.registry.collect():
        for sample in family.samples:
            assert "namespace" not in sample.labels, family.name
            assert sample.labels["policy"] == "strict", family.name
    samples = {s.name: s.labels for f in metrics.registry.collect() for s in f.samples}
    identity = {"pool": "intents", "policy": "strict"}
    assert samples["modelpool_router_client_connections"] == identity
    assert samples["modelpool_router_client_connections_max"] == identity
    refused = [
        s.labels
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "modelpool_router_client_connections_refused_total"
    ]
    assert refused == [{**identity, "reason": r} for r in ("max_connections", "out_of_files")]


def test_the_chart_scrapes_the_routers_with_the_labels_the_large_share_rule_joins_on() -> None:
    """ModelPoolLargeShareAboveCap joins the routers' series and the operator's on (namespace,
    pool): the router PodMonitor keeps Prometheus' target `namespace` (the pod's: no honorLabels,
    no relabelling), and the operator's ServiceMonitor keeps the operator's (the policy's)."""
    objs = render(set_json={"podMonitors.router.enabled": "true", "metrics.serviceMonitor.enabled": "true"})
    [router] = [m for m in by_kind(objs, "PodMonitor") if m["metadata"]["name"].endswith("-router")]
    [endpoint] = router["spec"]["podMetricsEndpoints"]
    assert not endpoint.get("honorLabels")
    assert not endpoint.get("relabelings") and not endpoint.get("metricRelabelings")
    [monitor] = by_kind(objs, "ServiceMonitor")
    assert all(e.get("honorLabels") is True for e in monitor["spec"]["endpoints"])


# ---------------------------------------------------------------------------------------------
# One source: the chart and the kustomize component


def _spec_text() -> str:
    text = RULES_FILE.read_text()
    return text[text.index("\nspec:\n") + 1 :]


def test_the_chart_renders_no_prometheus_rule_by_default() -> None:
    assert by_kind(render(), "PrometheusRule") == []
    assert by_kind(render(set_json={"prometheusRule.enabled": "false"}), "PrometheusRule") == []


def test_the_chart_renders_the_rules_verbatim_when_enabled() -> None:
    proc = helm_template(
        release="ops",
        namespace="monitoring-x",
        set_json={"prometheusRule.enabled": "true", "prometheusRule.additionalLabels": '{"release": "kp"}'},
    )
    assert proc.returncode == 0, proc.stderr
    rule = one([o for o in yaml.safe_load_all(proc.stdout) if o], "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "ops-modelpool"
    assert rule["metadata"]["namespace"] == "monitoring-x"
    labels = rule["metadata"]["labels"]
    assert labels["release"] == "kp" and labels["app.kubernetes.io/instance"] == "ops"
    assert rule["spec"] == rule_object()["spec"]
    assert _spec_text() in proc.stdout  # byte for byte, the file's spec to its end


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"prometheusRule.enabled": '"yes"'}, "/prometheusRule/enabled"),
        ({"prometheusRule.additionalLabels": '{"bad key": "x"}'}, "/prometheusRule/additionalLabels"),
        ({"prometheusRule.namespace": '"x"'}, "/prometheusRule"),
    ],
)
def test_the_schema_refuses_bad_prometheus_rule_values(values: dict[str, str], named: str) -> None:
    proc = helm_template(set_json=values)
    assert proc.returncode != 0, f"{values} was accepted"
    assert f"at '{named}'" in proc.stderr, proc.stderr


def test_the_kustomize_component_ships_the_same_rule(tmp_path: Path) -> None:
    """An overlay of the production overlay with the component: the file's PrometheusRule, as it is."""
    repo = Path(os.path.relpath(REPO_ROOT, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(repo / "manifests" / "overlays" / "production")],
                "components": [str(repo / COMPONENT.relative_to(REPO_ROOT))],
            }
        )
    )
    objs = kustomize(tmp_path)
    assert one(objs, "PrometheusRule") == rule_object()
    assert one(objs, "Deployment")["metadata"]["name"] == "modelpool"  # the overlay is all there
    assert by_kind(kustomize(MANIFESTS / "overlays" / "production"), "PrometheusRule") == []


# ---------------------------------------------------------------------------------------------
# The API server accepts both, typed as prometheus-operator types a PrometheusRule


@pytest.fixture
def prometheus_rule_crd(cluster: DevCluster) -> Iterator[None]:
    """prometheus-operator's PrometheusRule CRD (the fields its rules have) where the cluster has none."""
    with crds_where_missing(cluster, [prometheus_rule_crd_stub()]):
        yield


@pytest.mark.cluster
def test_the_api_server_accepts_the_rendered_and_the_kustomized_rule(
    cluster: DevCluster, prometheus_rule_crd: None, namespaces: Callable[..., str]
) -> None:
    ns = namespaces()
    proc = helm_template(namespace=ns, set_json={"prometheusRule.enabled": "true"})
    assert proc.returncode == 0, proc.stderr
    rendered = one([o for o in yaml.safe_load_all(proc.stdout) if o], "PrometheusRule")
    kustomized = {**rule_object(), "metadata": {**rule_object()["metadata"], "namespace": ns}}
    kustomized["metadata"]["name"] = f"kustomized-{uuid.uuid4().hex[:6]}"
    for obj in (rendered, kustomized):
        applied = cluster.kubectl(
            "apply", "--dry-run=server", "--server-side", "-o", "json", "-f", "-",
            input_text=json.dumps(obj), check=False,
        )  # fmt: skip
        assert applied.returncode == 0, f"the API server refused the PrometheusRule:\n{applied.stderr}"
        assert json.loads(applied.stdout)["spec"] == rule_object()["spec"]
