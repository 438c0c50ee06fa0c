"""Property fuzzing of admitted specs against the real API server and operator.

For every ModelPool and RoutingPolicy the API server admits, the operator must

* never fail a reconcile pass on it (no traceback, no retry loop in its log),
* either build children the API server accepts (every variant's Deployment and Service, no
  drift correction on a pool nobody edits), or say in ``Accepted=False`` which field is wrong,
* keep a pool's running children when a later edit is one it refuses.

The inputs that once broke one of these are pinned as explicit cases; a small derandomized
Hypothesis run explores around them on every test run.
"""

from __future__ import annotations

import itertools
import json
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from integration.cluster.kubetools import Kube, OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
API = "modelpool.dev/v1alpha1"
FUZZ_EXAMPLES = 25
SETTLE_S = 30.0

# ---------------------------------------------------------------------------------------------
# Strategies: what the CRD schema admits, biased towards its edges.

_LABEL_CHARS = string.ascii_lowercase + string.digits
QUANTITIES = [
    "0",
    "00",
    "1",
    "500m",
    "1.5",
    "0.0001",
    "1.5m",
    "0.1Ki",
    "2Gi",
    "8Ei",
    "999999999999999999999999Ei",
    "99999999999999999999",
    "1.23456789012345678901234567890",
]
# Mostly what the API server admits, some of what it must refuse.
LABEL_KEYS = ["pool", "example.com/gpu", "a_b.c-d", "k" * 63, "e.io/" + "k" * 63, "bad key", "a/b/c", ""]
LABEL_VALUES = ["", "v", "gpu-1", "A_b.c", "x" * 63, "-bad", "a,b", "ü"]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def dns_label(min_size: int = 1, max_size: int = 63) -> st.SearchStrategy[str]:
    """A DNS-1123 label (what ``DnsLabel`` admits), often short, sometimes at the 63 limit."""
    inner = st.text(_LABEL_CHARS + "-", min_size=max(min_size - 2, 0), max_size=max_size - 2)
    edge = st.sampled_from(_LABEL_CHARS)
    return st.builds(lambda a, m, b: (a + m + b)[:max_size] if m else a, edge, inner, edge).filter(
        lambda s: min_size <= len(s) <= max_size and not s.endswith("-")
    )


@st.composite
def tolerations(draw: st.DrawFn) -> Obj:
    tol: Obj = {}
    for key, values in (
        ("key", [None, "k", "example.com/gpu", "bad key", ""]),
        ("operator", [None, "Exists", "Equal"]),
        ("value", [None, "", "v", "-bad", "x" * 63]),
        ("effect", [None, "NoSchedule", "PreferNoSchedule", "NoExecute"]),
        ("tolerationSeconds", [None, 0, 30]),
    ):
        value = draw(st.sampled_from(values))
        if value is not None:
            tol[key] = value
    return tol


@st.composite
def variants(draw: st.DrawFn, name: str) -> Obj:
    low = draw(st.integers(0, 2))
    variant: Obj = {
        "name": name,
        "tier": draw(st.sampled_from(["small", "quantized", "large"])),
        "model": {"name": draw(st.from_regex(r"\A[A-Za-z0-9_.-]{1,20}\Z")), "repository": "/models"},
        "gpusPerReplica": draw(st.sampled_from([0, 0, 1, 2, 16])),
        "minReplicas": low,
        "maxReplicas": draw(st.sampled_from([max(low, 1), 4, 1000])),
    }
    if draw(st.booleans()):
        variant["resources"] = {
            "cpu": draw(st.sampled_from(QUANTITIES)),
            "memory": draw(st.sampled_from(QUANTITIES)),
        }
    if draw(st.booleans()):
        env_names = st.sampled_from(["A", "A", "b.c-d", "_x", "-y"])
        variant["triton"] = {
            "image": draw(st.sampled_from(["nvcr.io/nvidia/tritonserver:24.08-py3", " x", "x ", "ü/ï:1"])),
            "args": draw(st.lists(TEXT, max_size=2)),
            "env": draw(
                st.lists(st.builds(lambda n, v: {"name": n, "value": v}, env_names, TEXT), max_size=2)
            ),
        }
    if draw(st.booleans()):
        variant["model"]["version"] = draw(st.integers(1, 2**31))
        variant["model"]["digest"] = "sha256:" + draw(st.text("0123456789abcdef", max_size=16))
    profile = draw(
        st.sampled_from([None, {"inline": {}}, {"configMapKeyRef": {"name": "nothere", "key": "p"}}])
    )
    if profile is not None:
        variant["profile"] = profile
    return variant


@st.composite
def pool_specs(draw: st.DrawFn) -> Obj:
    names = draw(
        st.lists(dns_label(max_size=draw(st.sampled_from([8, 63]))), min_size=1, max_size=3, unique=True)
    )
    gpu_pool: Obj = {"gpuBudget": draw(st.sampled_from([0, 1, 8, 100_000]))}
    if draw(st.integers(0, 3)) == 0:
        keys = st.sampled_from(LABEL_KEYS)
        gpu_pool["nodeSelector"] = draw(st.dictionaries(keys, st.sampled_from(LABEL_VALUES), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        gpu_pool["tolerations"] = draw(st.lists(tolerations(), max_size=2))
    spec: Obj = {"gpuPool": gpu_pool, "variants": [draw(variants(n)) for n in names]}
    spec["variants"][0]["minReplicas"] = max(spec["variants"][0]["minReplicas"], 1)
    return spec


@st.composite
def policy_specs(draw: st.DrawFn, pool: str, variant_names: list[str]) -> Obj:
    known = st.sampled_from([*variant_names, "missing"])
    mode = draw(st.sampled_from(["weighted", "tiered", "cascade"]))
    spec: Obj = {
        "poolRef": {"name": draw(st.sampled_from([pool, pool, "nothere"]))},
        "mode": mode,
        "routerSelector": {
            "matchLabels": draw(
                st.just({"app": "router"})
                | st.dictionaries(
                    st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), min_size=1, max_size=2
                )
            )
        },
    }
    weights = draw(
        st.lists(
            st.builds(lambda v, w: {"variant": v, "weight": w}, known, st.sampled_from([0, 1, 10**6])),
            max_size=3,
            unique_by=lambda w: w["variant"],
        )
    )
    if mode == "weighted" and not any(w["weight"] for w in weights):
        weights = [w for w in weights if w["variant"] != variant_names[0]]
        weights.append({"variant": variant_names[0], "weight": 1})  # the CEL rule wants one above 0
    spec["weights"] = weights
    if mode == "cascade" or draw(st.booleans()):
        draft = draw(known)
        verifier = draw(known.filter(lambda v: v != draft))
        spec["cascade"] = {
            "draft": draft,
            "verifier": verifier,
            "acceptThresholdPercent": draw(st.sampled_from([1, 70, 100])),
        }
    if mode == "tiered":
        cuts = [*sorted(set(draw(st.lists(st.integers(0, 99), max_size=3)))), 100]
        targets = [*variant_names, "missing"] + (["cascade"] if "cascade" in spec else [])
        spec["tiered"] = {
            "tiers": [{"maxComplexityPercent": c, "target": draw(st.sampled_from(targets))} for c in cuts]
        }
    objectives: Obj = {}
    for key, values in (
        ("latencySLOMs", [None, 1, 60_000, 60_001, 600_000]),
        ("maxLargeSharePercent", [None, 0, 100]),
        ("qualityFloorPercent", [None, 0, 100]),
    ):
        value = draw(st.sampled_from(values))
        if value is not None:
            objectives[key] = value
    spec["objectives"] = objectives
    return spec


@dataclass(frozen=True)
class Case:
    """Pools (name, spec) applied together, an optional edit of the first, an optional policy.

    A pinned case also says how many of its objects (pools, policy, edit) the API server admits,
    and may check what the operator made of them (``expect``, run on the live objects before they
    are deleted: the status or child the pinned bug was about)."""

    pools: list[tuple[str, Obj]]
    edit: Obj | None = None
    policy: tuple[str, Obj] | None = None
    admitted: int | None = None
    expect: Callable[[Kube, Findings], None] | None = None


_TOKENS = (f"f{i:03d}" for i in itertools.count())


def sized_name(length: int, dotted: bool = False) -> str:
    """A fresh object name of ``length`` characters (a DNS subdomain; with a dot when ``dotted``)."""
    token = next(_TOKENS)
    name = (token + ("." if dotted else "") + "a" * length)[: max(length, len(token) + 2)]
    return name.rstrip(".-") or token


@st.composite
def cases(draw: st.DrawFn) -> Case:
    pools = []
    for _ in range(draw(st.integers(1, 2))):
        length = draw(st.sampled_from([6, 20, 55, 58, 63, 100]))
        pools.append((sized_name(length, dotted=draw(st.booleans()) and length < 30), draw(pool_specs())))
    edit = draw(st.none() | pool_specs())
    policy = None
    if draw(st.booleans()):
        pool, spec = pools[0]
        names = [v["name"] for v in spec["variants"]]
        policy = (sized_name(draw(st.sampled_from([8, 63, 64, 200]))), draw(policy_specs(pool, names)))
    return Case(pools, edit, policy)


# ---------------------------------------------------------------------------------------------
# The property, checked on the live objects and the operator's log.


@dataclass
class LogWindow:
    """The operator's log from where a case began."""

    operator: OperatorProcess
    start: int = 0

    def __post_init__(self) -> None:
        self.start = len(self.operator.log_path.read_bytes()) if self.operator.log_path.exists() else 0

    def lines(self, namespace: str, name: str) -> list[str]:
        text = self.operator.log_path.read_bytes()[self.start :].decode(errors="replace")
        return [line for line in text.splitlines() if f" {namespace}/{name}" in line]


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)


def manifest(kind: str, name: str, spec: Obj) -> Obj:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def admitted(kube: Kube, kind: str, name: str, spec: Obj) -> bool:
    return kube.apply(manifest(kind, name, spec), check=False).returncode == 0


def settled(kube: Kube, kind: str, name: str) -> Obj | None:
    """The object once the operator has acted on its current generation (Accepted set for it)."""
    obj = kube.get(kind, name)
    if obj is None:
        return None
    generation = obj["metadata"]["generation"]
    status = obj.get("status") or {}
    accepted = [c for c in status.get("conditions", []) if c["type"] == "Accepted"]
    if status.get("observedGeneration") == generation and accepted:
        return obj
    return None


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def no_failures(findings: Findings, log: LogWindow, namespace: str, name: str) -> None:
    failed = [line for line in log.lines(namespace, name) if "ReconcileError" in line or "failed" in line]
    findings.check(not failed, f"{name}: reconcile failed: {failed[:1]}")


def child_uids(kube: Kube, pool: str, spec: Obj) -> dict[str, str]:
    uids = {}
    for variant in spec["variants"]:
        dep = kube.get("deployment", f"{pool}-{variant['name']}")
        if dep is not None:
            uids[variant["name"]] = dep["metadata"]["uid"]
    return uids


def check_pool(kube: Kube, log: LogWindow, name: str, spec: Obj, findings: Findings) -> Obj | None:
    """The property for one admitted pool; the settled pool, or None when it never settled."""
    try:
        pool = wait_for(lambda: settled(kube, "modelpool", name), SETTLE_S, f"pool {name} settled")
    except AssertionError as err:
        findings.problems.append(str(err)[:400])
        return None
    accepted = conditions(pool)["Accepted"]
    if accepted["status"] == "True":
        for variant in spec["variants"]:
            child = f"{name}-{variant['name']}"
            findings.check(kube.get("deployment", child) is not None, f"{name}: no Deployment {child}")
            findings.check(kube.get("service", child) is not None, f"{name}: no Service {child}")
        degraded = conditions(pool).get("Degraded", {})
        refused = degraded.get("reason") in ("ChildConflict", "ChildRejected")
        findings.check(not refused, f"{name}: {degraded.get('reason')}: {degraded.get('message')}")
    else:
        message = accepted["message"]
        findings.check("spec." in message or "metadata.name" in message, f"{name}: no field in {message!r}")
    return pool


def check_steady(
    kube: Kube, log: LogWindow, operator: OperatorProcess, names: list[str], findings: Findings
) -> None:
    """After a resync period nothing was corrected on pools nobody touched, nothing failed."""
    if not names:
        return
    time.sleep(operator.resync_seconds + 1)
    for name in names:
        updated = [line for line in log.lines(kube.namespace, name) if "Updated " in line]
        findings.check(not updated, f"{name}: children corrected with no change: {updated[:1]}")
        no_failures(findings, log, kube.namespace, name)


def check_policy(kube: Kube, log: LogWindow, name: str, findings: Findings) -> None:
    try:
        policy = wait_for(lambda: settled(kube, "routingpolicy", name), SETTLE_S, f"policy {name} settled")
    except AssertionError as err:
        findings.problems.append(str(err)[:400])
        return
    conds = conditions(policy)
    if conds["Accepted"]["status"] == "True":
        findings.check("ResolvedRefs" in conds, f"{name}: accepted without ResolvedRefs: {conds}")
    no_failures(findings, log, kube.namespace, name)


def run_case(kube: Kube, operator: OperatorProcess, case: Case) -> tuple[Findings, int]:
    """Apply ``case`` and check the property; (findings, how many objects were admitted)."""
    findings, log = Findings(), LogWindow(operator)
    pools = [(n, s) for n, s in case.pools if admitted(kube, "ModelPool", n, s)]
    count = len(pools)
    for name, spec in pools:
        check_pool(kube, log, name, spec, findings)
    if case.policy is not None and admitted(kube, "RoutingPolicy", *case.policy):
        count += 1
        check_policy(kube, log, case.policy[0], findings)
    check_steady(kube, log, operator, [n for n, _ in pools], findings)
    if pools and case.edit is not None:
        name, spec = pools[0]
        before = child_uids(kube, name, spec)
        edit_log = LogWindow(operator)
        if admitted(kube, "ModelPool", name, case.edit):
            count += 1
            pool = check_pool(kube, edit_log, name, case.edit, findings)
            if pool is not None and conditions(pool)["Accepted"]["status"] == "False":
                kept = child_uids(kube, name, spec)
                findings.check(kept == before, f"{name}: refused edit changed children {before} -> {kept}")
            no_failures(findings, edit_log, kube.namespace, name)
    if case.expect is not None:
        case.expect(kube, findings)
    for kind, names in (
        ("modelpool", [n for n, _ in case.pools]),
        ("routingpolicy", [case.policy[0]] if case.policy else []),
    ):
        if names:
            kube.run("delete", kind, *names, "--ignore-not-found", "--wait=false", check=False)
    return findings, count


# ---------------------------------------------------------------------------------------------
# Pinned inputs: each once broke the property (see tests/unit/operator/test_spec_edge_cases.py).


def _one_variant(**extra: Any) -> Obj:
    variant = {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/models"}}
    return {"gpuPool": {"gpuBudget": 4}, "variants": [{**variant, "gpusPerReplica": 0, **extra}]}


def _weighted(pool: str, **extra: Any) -> Obj:
    spec = {
        "poolRef": {"name": pool},
        "mode": "weighted",
        "weights": [{"variant": "small", "weight": 1}],
        "routerSelector": {"matchLabels": {"app": "router"}},
    }
    return {**spec, **extra}


def _policy_conditions(kube: Kube, policy: str) -> dict[str, Obj]:
    return conditions(kube.get("routingpolicy", policy) or {})


def _builds_router_config(policy: str, timeout_ms: int) -> Callable[[Kube, Findings], None]:
    """The policy's reconciler got past its pool and stored the router config it built (no
    router pod is selected): every variant's timeoutMs is ``timeout_ms``."""

    def check(kube: Kube, findings: Findings) -> None:
        conds = _policy_conditions(kube, policy)
        reasons = {t: (c["status"], c["reason"]) for t, c in conds.items()}
        findings.check(reasons.get("ResolvedRefs") == ("True", "Resolved"), f"{policy}: {reasons}")
        findings.check(reasons.get("Programmed") == ("False", "NoRoutersSelected"), f"{policy}: {reasons}")
        cm = kube.get("configmap", f"{policy}-router-config")
        if cm is None:
            findings.problems.append(f"{policy}: no ConfigMap {policy}-router-config")
            return
        config = json.loads(cm["data"]["config.json"])
        timeouts = [v.get("timeoutMs") for v in config["variants"]]
        findings.check(timeouts == [timeout_ms], f"{policy}: timeoutMs {timeouts}, expected [{timeout_ms}]")

    return check


def _refused_for_its_name(policy: str) -> Callable[[Kube, Findings], None]:
    """Refused (Accepted=False, NameTooLong) though its pool exists, and no ConfigMap written."""

    def check(kube: Kube, findings: Findings) -> None:
        accepted = _policy_conditions(kube, policy).get("Accepted", {})
        got = (accepted.get("status"), accepted.get("reason"))
        findings.check(got == ("False", "NameTooLong"), f"{policy}: Accepted {accepted}")
        findings.check("metadata.name" in accepted.get("message", ""), f"{policy}: Accepted {accepted}")
        cm = kube.get("configmap", f"{policy}-router-config")
        findings.check(cm is None, f"{policy}: a ConfigMap was written: {cm}")

    return check


def _refused_for_its_pool(policy: str, field: str) -> Callable[[Kube, Findings], None]:
    """Its pool was found but cannot be routed to: ResolvedRefs=False, InvalidPool, naming ``field``."""

    def check(kube: Kube, findings: Findings) -> None:
        refs = _policy_conditions(kube, policy).get("ResolvedRefs", {})
        got = (refs.get("status"), refs.get("reason"))
        findings.check(got == ("False", "InvalidPool"), f"{policy}: ResolvedRefs {refs}")
        findings.check(field in refs.get("message", ""), f"{policy}: ResolvedRefs {refs}")

    return check


_SUB_MILLI = sized_name(12)
_SLO_POOL, _SLO_POLICY = sized_name(12), sized_name(8)
_NAMED_POOL, _LONG_POLICY = sized_name(12), sized_name(64)
_LONG_POOL, _LONG_POOL_POLICY = sized_name(58), sized_name(8)
PINNED = [
    # 'Updated' on every pass: the API server stores 1m and 1500m, and caps 8Ei at 2**63-1.
    Case([(_SUB_MILLI, _one_variant(resources={"cpu": "0.0001", "memory": "1.5"}))], admitted=1),
    Case(
        [(sized_name(12), _one_variant(resources={"cpu": "1.5m", "memory": "999999999999999999999999Ei"}))],
        admitted=1,
    ),
    # 'Updated' on every pass: the API server drops an environment variable's empty value.
    Case(
        [(sized_name(12), _one_variant(triton={"env": [{"name": "A", "value": ""}, {"name": "B"}]}))],
        admitted=1,
    ),
    # Failed passes: timeoutMs 10 x 600000 is more than a router takes. (Each case runs in a fresh
    # namespace: the policy needs its pool in the same case to get past PoolNotFound.)
    Case(
        [(_SLO_POOL, _one_variant())],
        policy=(_SLO_POLICY, _weighted(_SLO_POOL, objectives={"latencySLOMs": 600_000})),
        admitted=2,
        expect=_builds_router_config(_SLO_POLICY, 600_000),
    ),
    # Failed passes: a 64-character policy name is refused as its ConfigMap's label value.
    Case(
        [(_NAMED_POOL, _one_variant())],
        policy=(_LONG_POLICY, _weighted(_NAMED_POOL)),
        admitted=2,
        expect=_refused_for_its_name(_LONG_POLICY),
    ),
    # Failed passes: the pool's Service name would be 64 characters, RouterConfig refuses it.
    Case(
        [(_LONG_POOL, _one_variant())],
        policy=(_LONG_POOL_POLICY, _weighted(_LONG_POOL)),
        admitted=2,
        expect=_refused_for_its_pool(_LONG_POOL_POLICY, "spec.variants[0].name"),
    ),
    # Failed passes: the API server reads an apply body as YAML, which refuses C1 controls and DEL
    # unless the JSON escapes them (httpx wrote them raw), folds NEL and U+2028 into spaces (a
    # correction every pass), and refuses escaped surrogate pairs.
    Case(
        [
            (
                sized_name(12),
                _one_variant(
                    triton={
                        "args": ["a\x9db"],
                        "env": [{"name": "A", "value": "\x7f\x85\u2028\ufffe\U00074d80"}],
                    },
                    model={"name": "m", "repository": "/\x80"},
                ),
            )
        ],
        admitted=1,
    ),
    # The refusal said 'it must start with a letter' of a pool whose name does.
    Case([(sized_name(8, dotted=True), _one_variant())], admitted=1),
    # A valid pool edited into one the operator refuses keeps its children.
    Case(
        [(sized_name(20), _one_variant())],
        edit={**_one_variant(), "variants": [{**_one_variant()["variants"][0], "name": "v" * 60}]},
        admitted=2,
    ),
]


def _variant_with(**triton: Any) -> Obj:
    return _one_variant(triton=triton)


# Admitted once, then refused in the Deployment (or its pods): now refused by the API server.
REFUSED: list[tuple[str, str, Obj, str]] = [
    (
        "toleration without key",
        "ModelPool",
        {**_one_variant(), "gpuPool": {"gpuBudget": 1, "tolerations": [{}]}},
        "spec.gpuPool.tolerations[0].operator",
    ),
    (
        "tolerationSeconds without NoExecute",
        "ModelPool",
        {
            **_one_variant(),
            "gpuPool": {"gpuBudget": 1, "tolerations": [{"key": "k", "tolerationSeconds": 3}]},
        },
        "spec.gpuPool.tolerations[0].effect",
    ),
    (
        "nodeSelector key",
        "ModelPool",
        {**_one_variant(), "gpuPool": {"gpuBudget": 1, "nodeSelector": {"bad key!": "x"}}},
        "spec.gpuPool.nodeSelector",
    ),
    (
        "nodeSelector value",
        "ModelPool",
        {**_one_variant(), "gpuPool": {"gpuBudget": 1, "nodeSelector": {"a": "-x"}}},
        "spec.gpuPool.nodeSelector.a",
    ),
    ("image with a space", "ModelPool", _variant_with(image=" x"), "spec.variants[0].triton.image"),
    (
        "duplicate env",
        "ModelPool",
        _variant_with(env=[{"name": "A"}, {"name": "A"}]),
        "spec.variants[0].triton.env[1]: Duplicate value",
    ),
    (
        "selector value with a comma",
        "RoutingPolicy",
        _weighted("p", routerSelector={"matchLabels": {"app": "a,b"}}),
        "spec.routerSelector.matchLabels.app",
    ),
    (
        "selector key",
        "RoutingPolicy",
        _weighted("p", routerSelector={"matchLabels": {"bad key": "x"}}),
        "spec.routerSelector.matchLabels",
    ),
]


@pytest.mark.parametrize(("case", "kind", "spec", "field"), REFUSED, ids=[c[0] for c in REFUSED])
def test_what_a_child_cannot_carry_is_refused_by_the_api_server(
    kube: Kube, case: str, kind: str, spec: Obj, field: str
) -> None:
    text = json.dumps(manifest(kind, "refused", spec))
    proc = kube.run("apply", "--dry-run=server", "-f", "-", input_text=text, check=False)
    assert proc.returncode != 0, f"{case}: the API server admitted it"
    assert field in proc.stderr, proc.stderr


def _assert_property(kube: Kube, operator: OperatorProcess, case: Case) -> int:
    """The property holds for ``case``; how many of its objects the API server admitted."""
    findings, count = run_case(kube, operator, case)
    assert not findings.problems, f"{case}\n" + "\n".join(findings.problems)
    return count


@pytest.mark.parametrize("case", PINNED, ids=[f"pinned-{i}" for i in range(len(PINNED))])
def test_pinned_specs_keep_the_property(kube: Kube, operator: OperatorProcess, case: Case) -> None:
    assert case.admitted is not None, "a pinned case says how many of its objects are admitted"
    # A pinned input the API server starts refusing would otherwise check nothing.
    assert _assert_property(kube, operator, case) == case.admitted, case


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # bounded: a failure is reported as drawn, not shrunk
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(case=cases())
def test_admitted_specs_keep_the_property(kube: Kube, operator: OperatorProcess, case: Case) -> None:
    # How many objects each drawn case got admitted (see the statistics of --hypothesis-show-statistics).
    event(f"objects admitted: {_assert_property(kube, operator, case)}")
