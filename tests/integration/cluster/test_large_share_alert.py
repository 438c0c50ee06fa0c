"""ModelPoolLargeShareAboveCap end to end, on the real parts: the real operator on the real local
cluster exports a RoutingPolicy's cap (modelpool_routingpolicy_max_large_share_ratio), real routers
(``python -m modelpool.routing serve``) programmed with that policy's name and pool answer real
inference requests from a real tritonserver, and a real Prometheus scrapes both and evaluates the
rules of charts/modelpool/files/alerts/prometheusrule.yaml (every ``for:`` shortened to 10 s, as in
test_alerts.py). Everything listens on, and is reached at, 127.0.0.1 only.

Three policies route one pool (which need not exist: the operator exports the cap anyway), each
with a router of its own, as the operator would push to its router pods: ``capped`` (cap 30%) and
``roomy`` (cap 100%) whose routers send every request to the large tier, and ``thrifty`` (cap 30%)
whose router sends every request to the small tier. Only ``capped`` fires, with the share 1.0: the
rule joins each policy's routers with that policy's cap (on namespace, pool and policy), so neither
the other policies' traffic nor their caps count.

The routers are scraped the way the chart's router PodMonitor would scrape their pods: their
series carry no ``namespace`` of their own, the target label ``namespace`` (the pod's namespace,
here a static label) gives it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from integration.cluster.kubetools import Kube, OperatorProcess, parse_metrics, wait_for
from integration.cluster.test_alerts import RULES, Obj, Prometheus, capped_policy
from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.config import RouterConfig, parse_config
from modelpool.routing.process import RouterProcess

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.triton, pytest.mark.timeout(300)]

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "triton_models"
ALERT = "ModelPoolLargeShareAboveCap"
POOL = "healthy"  # capped_policy's poolRef; no such ModelPool is created
RATE = 5.0  # requests per second, to each router
TRAFFIC_SECONDS = 30.0
RULES_FILE = RULES  # the chart's rules; point at a broken copy to see the test fail
BODY = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["card lost"]}]}


def routers_and_operator_prometheus(
    folder: Path, operator_target: str, routers: dict[str, list[str]], rules: Path = RULES
) -> Prometheus:
    """test_alerts' Prometheus (1 s scrapes and evaluations, ``for:`` shortened), scraping the
    operator's metrics port and, as a second job, routers labelled with the namespace of their
    (would-be) pods, as a PodMonitor's target label ``namespace`` is."""
    router_job = {
        "job_name": "modelpool-router",
        "static_configs": [{"targets": ts, "labels": {"namespace": ns}} for ns, ts in routers.items()],
    }
    return Prometheus(folder, [operator_target], [router_job], rules)


def policy(name: str, cap: int) -> Obj:
    """capped_policy (pool ``healthy``, a router selector no pod matches) under another name."""
    obj = copy.deepcopy(capped_policy(cap))
    obj["metadata"]["name"] = name
    return obj


def router_config(
    triton: TritonProcess, policy_name: str, large_weight: int, small_weight: int
) -> RouterConfig:
    """What the operator would push to the policy's routers: its pool and name, weighted mode."""
    variants = [
        {"name": "small", "tier": "small", "tritonModel": "echo_small", "weight": small_weight},
        {"name": "large", "tier": "large", "tritonModel": "echo_large", "weight": large_weight},
    ]
    return parse_config(
        {
            "generation": 1,
            "pool": POOL,
            "policy": policy_name,
            "mode": "weighted",
            "modelName": "intents",
            "variants": [{**v, "endpoints": [triton.http_url], "timeoutMs": 5000} for v in variants],
        }
    )


def answered(router: RouterProcess) -> dict[str, float]:
    """The router's modelpool_router_requests_total by tier (its own /metrics)."""
    out: dict[str, float] = {}
    for name, labels, value in parse_metrics(httpx.get(f"{router.url}/metrics", timeout=5).text):
        if name == "modelpool_router_requests_total":
            out[labels["tier"]] = out.get(labels["tier"], 0) + value
    return out


class Traffic:
    """RATE requests per second to each router for at most TRAFFIC_SECONDS, in a thread."""

    def __init__(self, routers: list[RouterProcess]) -> None:
        self.routers = routers
        self.sent = {r.url: 0 for r in routers}
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            start = time.monotonic()
            tick = 0
            while not self._stop.is_set() and time.monotonic() - start < TRAFFIC_SECONDS:
                for router in self.routers:
                    self.sent[router.url] += 1
                    try:
                        response = client.post(f"{router.url}/v2/models/intents/infer", json=BODY)
                    except httpx.HTTPError as err:
                        self.failed.append(f"{router.url}: {err!r}")
                        continue
                    if response.status_code != 200:
                        self.failed.append(f"{router.url}: {response.status_code} {response.text[:200]}")
                tick += 1
                self._stop.wait(max(0.0, start + tick / RATE - time.monotonic()))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def alert_of(prom: Prometheus, namespace: str, name: str) -> list[Obj]:
    return [a for a in prom.alerts(ALERT, namespace) if a["labels"].get("name") == name]


def test_large_share_above_the_policys_cap_fires_for_that_policy_only(
    kube: Kube, operator: OperatorProcess, stack: ExitStack, tmp_path: Path
) -> None:
    assert operator.metrics_url is not None
    ns = kube.namespace
    caps = {"capped": 30, "roomy": 100, "thrifty": 30}
    for name, cap in caps.items():
        kube.apply(policy(name, cap))

    def exported_caps() -> dict[str, float] | None:
        assert operator.metrics_url is not None
        try:  # the operator, started for this module, may not serve /metrics yet
            text = httpx.get(operator.metrics_url, timeout=5).text
        except httpx.TransportError:
            return None
        found = {
            labels["name"]: value
            for name, labels, value in parse_metrics(text)
            if name == "modelpool_routingpolicy_max_large_share_ratio" and labels.get("namespace") == ns
        }
        return found if found == {"capped": 0.3, "roomy": 1.0, "thrifty": 0.3} else None

    wait_for(exported_caps, 30, "the three policies' caps on the operator's /metrics")

    triton = TritonProcess(MODELS, ["echo_small", "echo_large"]).start()
    stack.callback(triton.stop)
    routers: dict[str, RouterProcess] = {}
    for name, (large, small) in {"capped": (1, 0), "roomy": (1, 0), "thrifty": (0, 1)}.items():
        routers[name] = RouterProcess(router_config(triton, name, large, small)).start()
        stack.callback(routers[name].stop)

    operator_target = operator.metrics_url.removeprefix("http://").removesuffix("/metrics")
    router_targets = [r.url.removeprefix("http://") for r in routers.values()]
    folder = tmp_path / "prometheus"
    folder.mkdir()
    prom = routers_and_operator_prometheus(folder, operator_target, {ns: router_targets}, RULES_FILE)
    stack.callback(prom.stop)
    wait_for(lambda: prom.targets_up("modelpool-router"), 30, "the routers scraped")

    started = time.monotonic()
    with Traffic(list(routers.values())) as traffic:
        alert = wait_for(
            lambda: next((a for a in alert_of(prom, ns, "capped") if a["state"] == "firing"), None),
            TRAFFIC_SECONDS + 30,
            f"{ALERT} firing for {ns}/capped",
        )
        fired_after = time.monotonic() - started
        # The same traffic, the same timing: neither of the others is even pending.
        assert alert_of(prom, ns, "roomy") == []
        assert alert_of(prom, ns, "thrifty") == []
    assert traffic.done
    assert traffic.failed == []
    print(f"{ALERT} firing {fired_after:.1f} s after the traffic started; sent {traffic.sent}")

    assert alert["labels"] == {
        "alertname": ALERT,
        "severity": "warning",
        "namespace": ns,
        "name": "capped",
        "pool": POOL,
        "policy": "capped",
    }
    assert float(alert["value"]) == 1.0
    assert f"RoutingPolicy {ns}/capped routes to pool {POOL}" in alert["annotations"]["summary"]
    assert "100%" in alert["annotations"]["summary"]
    assert alert["annotations"]["runbook_url"].endswith("docs/install.md#modelpoollargeshareabovecap")

    # Every request was answered, by the tier its router's weights name.
    for name, router in routers.items():
        tier = "small" if name == "thrifty" else "large"
        assert answered(router) == {tier: traffic.sent[router.url]}, name

    # And Prometheus, which read them from the routers, has each policy's share as the rule computes
    # it: 1.0 for the two large-tier routers; the small-tier one has answers but no large ones.
    def answers(selector: str) -> str:
        series = f'modelpool_router_requests_total{{namespace="{ns}"{selector}}}'
        return f"sum by (namespace, pool, policy) (rate({series}[15m]))"

    def by_policy(query: str) -> dict[str, float]:
        return {s["metric"]["policy"]: float(s["value"][1]) for s in prom.value(query)}

    large_answers = answers(',tier="large"')
    assert by_policy(f"{large_answers} / {answers('')}") == {"capped": 1.0, "roomy": 1.0}
    assert set(by_policy(f"{answers('')} > 0")) == {"capped", "roomy", "thrifty"}
    # Still only the one alert, now that the traffic has stopped (the rates are over 15m).
    assert [a["labels"]["name"] for a in prom.alerts(ALERT, ns)] == ["capped"]
    assert prom.alerts(ALERT, ns)[0]["state"] == "firing"
