"""The operator's alerting rules on the real parts: the real operator (``modelpool operator run``)
on the real local cluster, scraped by a real Prometheus (Debian's ``/usr/bin/prometheus``, on
127.0.0.1, scraping only the operator's 127.0.0.1 metrics ports) that loads the rules of
charts/modelpool/files/alerts/prometheusrule.yaml. A pool whose pods no node can take is not
Ready, and ModelPoolNotReady fires for it, read from Prometheus' HTTP API; a Ready pool's does not.
A RoutingPolicy's cap on the large tier's share is on the operator's /metrics as long as the policy
sets it (ModelPoolLargeShareAboveCap's operator side; test_large_share_alert.py runs it end to end
with real routers).

To keep the tests short, the rules are a copy written to a temporary folder in which every
``for:`` is 10 s instead of minutes (and Prometheus scrapes and evaluates every second); the
expressions are the file's, unchanged.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from integration.cluster.kubetools import (
    Kube,
    OperatorProcess,
    parse_metrics,
    start_operator,
    wait_for,
)
from modelpool.devcluster.processes import stop_process
from modelpool.devcluster.triton import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

REPO_ROOT = Path(__file__).resolve().parents[3]
RULES = REPO_ROOT / "charts" / "modelpool" / "files" / "alerts" / "prometheusrule.yaml"
PROMETHEUS = Path("/usr/bin/prometheus")
SHORT_FOR = "10s"
Obj = dict[str, Any]


class Prometheus:
    """A real Prometheus on 127.0.0.1 that scrapes the given 127.0.0.1 targets every second and
    evaluates the operator's rules (their ``for:`` shortened) every second."""

    def __init__(
        self, folder: Path, targets: list[str], extra_jobs: Sequence[Obj] = (), rules: Path = RULES
    ) -> None:
        """``targets``: the operator's metrics ports (job ``modelpool-operator``); ``extra_jobs``:
        more scrape jobs (127.0.0.1 targets only); ``rules``: the rules file (a broken copy shows
        that a test can fail)."""
        jobs = [{"job_name": "modelpool-operator", "static_configs": [{"targets": targets}]}, *extra_jobs]
        every = [t for job in jobs for static in job["static_configs"] for t in static["targets"]]
        assert all(t.startswith("127.0.0.1:") for t in every), every
        if not PROMETHEUS.is_file():
            pytest.fail(f"{PROMETHEUS} is missing: install Debian's prometheus package (.ci/setup.sh does)")
        spec = yaml.safe_load(rules.read_text())["spec"]
        for group in spec["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = SHORT_FOR  # minutes in the file: seconds here, to keep the test short
        (folder / "rules.yaml").write_text(yaml.safe_dump(spec))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": jobs,
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_for(self._rules_loaded, 60, "Prometheus ready with the operator's rules")
        except BaseException:
            self.stop()
            raise

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["data"]

    def _rules_loaded(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text(errors='replace')[-3000:]}")
        try:
            groups = self.get("/api/v1/rules")["groups"]
        except (httpx.HTTPError, KeyError):
            return False
        rules = [r for g in groups for r in g["rules"]]
        return bool(rules) and all(r["health"] != "err" for r in rules)

    def targets_up(self, job: str) -> bool:
        active = self.get("/api/v1/targets", state="active")["activeTargets"]
        mine = [t for t in active if t["labels"]["job"] == job]
        return bool(mine) and all(t["health"] == "up" for t in mine)

    def alerts(self, name: str, namespace: str) -> list[Obj]:
        """The alerts called ``name`` (pending or firing) of one namespace."""
        return [
            a
            for a in self.get("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["labels"].get("namespace") == namespace
        ]

    def firing(self, name: str, namespace: str, pool: str) -> Obj | None:
        return next(
            (
                a
                for a in self.alerts(name, namespace)
                if a["labels"].get("name") == pool and a["state"] == "firing"
            ),
            None,
        )

    def value(self, query: str) -> list[Obj]:
        result: list[Obj] = self.get("/api/v1/query", query=query)["result"]
        return result

    def stop(self) -> None:
        stop_process(self.proc, grace=10)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        folder = tmp_path / f"prometheus-{len(started)}"
        folder.mkdir()
        prom = Prometheus(folder, targets)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()


def pool(name: str, node_selector: dict[str, str]) -> Obj:
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": name},
        "spec": {
            "gpuPool": {"gpuBudget": 2, "nodeSelector": node_selector},
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": f"{name}-small", "repository": "/models"},
                }
            ],
        },
    }


HEALTHY = pool("healthy", {"nvidia.com/gpu.present": "true"})
# No node carries this label: the pool's pod stays Pending, so the pool is not Ready.
STUCK = pool("stuck", {"modelpool.dev/test-alerts": "no-such-node"})


def condition(kube: Kube, name: str, type_: str, status: str) -> Obj | None:
    cond = kube.condition("modelpool", name, type_)
    return cond if cond is not None and cond["status"] == status else None


def samples(url: str, metric: str, **match: str) -> float:
    """Sum of the samples of ``metric`` at ``url`` whose labels include ``match`` (``name`` too)."""
    found = parse_metrics(httpx.get(url, timeout=5).text)
    return sum(v for n, labels, v in found if n == metric and match.items() <= labels.items())


def test_not_ready_pool_fires_model_pool_not_ready_and_a_ready_pool_does_not(
    kube: Kube, operator: OperatorProcess, prometheus_factory: Any
) -> None:
    assert operator.metrics_url is not None
    ns = kube.namespace
    kube.apply(HEALTHY)
    kube.apply(STUCK)
    wait_for(lambda: condition(kube, "healthy", "Ready", "True"), 90, "pool healthy Ready")
    wait_for(lambda: condition(kube, "stuck", "Ready", "False"), 90, "pool stuck not Ready")

    target = operator.metrics_url.removeprefix("http://").removesuffix("/metrics")
    prom = prometheus_factory([target])
    alert = wait_for(
        lambda: prom.firing("ModelPoolNotReady", ns, "stuck"), 90, f"ModelPoolNotReady firing for {ns}/stuck"
    )
    assert alert["labels"]["severity"] == "warning"
    assert f"ModelPool {ns}/stuck has not been Ready" in alert["annotations"]["summary"]
    assert alert["annotations"]["runbook_url"].endswith("docs/install.md#modelpoolnotready")
    # The Ready pool has no such alert, not even pending.
    assert [a["labels"]["name"] for a in prom.alerts("ModelPoolNotReady", ns)] == ["stuck"]
    # Nor does the operator look absent (it runs without leader election: no leader alerts).
    names = {a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["alerts"]}
    assert not names & {"ModelPoolOperatorAbsent", "ModelPoolOperatorNoLeader"}, names

    # The operator's /metrics: the conditions it wrote, 1 for the status, 0 for the others.
    def ready_series(pool_name: str, status: str) -> float:
        assert operator.metrics_url is not None
        labels = {"namespace": ns, "name": pool_name, "kind": "ModelPool", "type": "Ready", "status": status}
        return samples(operator.metrics_url, "modelpool_status_condition", **labels)

    assert (ready_series("stuck", "True"), ready_series("stuck", "False")) == (0, 1)
    assert (ready_series("healthy", "True"), ready_series("healthy", "False")) == (1, 0)

    # Deleted: its series leave the operator's /metrics, and Prometheus.
    kube.run("delete", "modelpool", "stuck", "--wait=true", "--timeout=60s")

    def stuck_lines() -> list[str]:
        text = httpx.get(operator.metrics_url or "", timeout=5).text
        return [
            line
            for line in text.splitlines()
            if line.startswith("modelpool_status_condition{")
            and f'namespace="{ns}"' in line
            and 'name="stuck"' in line
        ]

    wait_for(lambda: not stuck_lines(), 30, "the deleted pool's condition series gone from /metrics")
    assert ready_series("healthy", "True") == 1
    # Prometheus marks them stale at its next scrape; the alert, which reads them over 2m, resolves
    # within 2 minutes (the promtool test's "deleted" pool), not waited for here.
    query = f'modelpool_status_condition{{namespace="{ns}",name="stuck"}}'
    wait_for(lambda: not prom.value(query), 30, "the deleted pool's series gone from Prometheus")
    assert prom.value(f'modelpool_status_condition{{namespace="{ns}",name="healthy"}}')


def capped_policy(cap: int) -> Obj:
    """A RoutingPolicy of pool healthy, capping its large tier's share at ``cap`` percent."""
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "capped"},
        "spec": {
            "poolRef": {"name": "healthy"},
            "mode": "weighted",
            "weights": [{"variant": "small", "weight": 1}],
            "routerSelector": {"matchLabels": {"app": "no-router"}},
            "objectives": {"maxLargeSharePercent": cap},
        },
    }


def test_the_operator_exports_a_policys_large_share_cap_until_it_is_removed(
    kube: Kube, operator: OperatorProcess
) -> None:
    """modelpool_routingpolicy_max_large_share_ratio, which ModelPoolLargeShareAboveCap compares
    with the routers' answers: the cap of a real policy, on the real operator's /metrics, labelled
    with the policy's namespace and pool; changed with the spec, gone with the cap and the policy."""
    url = operator.metrics_url
    assert url is not None
    ns = kube.namespace
    metric = "modelpool_routingpolicy_max_large_share_ratio"

    def cap_lines() -> list[str] | None:
        try:  # the suite's operator may have just been restarted by another test's fixture
            text = httpx.get(url, timeout=5).text
        except httpx.TransportError:
            return None
        return [
            line
            for line in text.splitlines()
            if line.startswith(metric + "{") and f'namespace="{ns}"' in line
        ]

    def cap() -> float | None:
        lines = cap_lines()
        return samples(url, metric, namespace=ns, name="capped", pool="healthy") if lines else None

    def no_cap() -> bool:
        return cap_lines() == []

    kube.apply(capped_policy(30))  # its pool need not exist: the cap is the spec's
    wait_for(lambda: cap() == 0.3, 30, "the policy's cap (30%) as 0.3")
    kube.apply(capped_policy(45))
    wait_for(lambda: cap() == 0.45, 30, "the changed cap (45%) as 0.45")
    kube.run("patch", "routingpolicy", "capped", "--type=json", "-p",
             '[{"op": "remove", "path": "/spec/objectives/maxLargeSharePercent"}]')  # fmt: skip
    wait_for(no_cap, 30, "no series once the cap is removed")
    kube.apply(capped_policy(20))
    wait_for(lambda: cap() == 0.2, 30, "the cap set again")
    kube.run("delete", "routingpolicy", "capped", "--wait=true", "--timeout=60s")
    wait_for(no_cap, 30, "no series once the policy is deleted")


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def leading(self) -> float:
        try:
            return samples(self.metrics, "modelpool_leader")
        except httpx.HTTPError:
            return -1


def start_replica(kube: Kube, tmp: Path, name: str, lease: str) -> Replica:
    port = free_port()
    log = tmp / f"operator-{name}.log"
    env = {
        "KUBECONFIG": str(kube.cluster.kubeconfig),
        "MODELPOOL_RESYNC_SECONDS": "2",
        "MODELPOOL_METRICS_ADDR": "127.0.0.1",
    }
    args = ["--namespace", kube.namespace, "--metrics-port", str(port), "--leader-elect"]
    args += ["--leader-election-namespace", kube.namespace, "--leader-election-id", lease]
    return Replica(name, start_operator(log, env, *args), port, log)


def test_with_two_replicas_only_the_leader_exports_conditions_and_a_failover_keeps_the_alert(
    kube: Kube, paused_session_operator: None, prometheus_factory: Any, tmp_path: Path
) -> None:
    """The chart's production shape: a leader and a standby, both scraped. The standby exports no
    pool series (it reconciles nothing), exactly one leader raises no leader alert, and a
    failover (SIGTERM, as in a rollout) neither resolves ModelPoolNotReady nor restarts it."""
    ns = kube.namespace
    lease = f"alerts-{uuid.uuid4().hex[:6]}"
    replicas = [start_replica(kube, tmp_path, n, lease) for n in ("a", "b")]
    try:
        kube.apply(STUCK)
        leader = wait_for(
            lambda: next((r for r in replicas if r.leading() == 1), None), 60, "one replica leading"
        )
        [standby] = [r for r in replicas if r is not leader]
        wait_for(lambda: condition(kube, "stuck", "Ready", "False"), 90, "pool stuck not Ready")
        wait_for(
            lambda: samples(leader.metrics, "modelpool_status_condition", namespace=ns, name="stuck") > 0,
            30,
            "the leader's condition series",
        )
        assert standby.leading() == 0
        assert samples(standby.metrics, "modelpool_build_info") == 1
        assert "modelpool_status_condition{" not in httpx.get(standby.metrics, timeout=5).text

        prom = prometheus_factory([f"127.0.0.1:{r.metrics_port}" for r in replicas])
        alert = wait_for(
            lambda: prom.firing("ModelPoolNotReady", ns, "stuck"), 90, "ModelPoolNotReady firing"
        )
        assert prom.value(f'sum by (lease) (modelpool_leader{{lease="{ns}/{lease}"}})')[0]["value"][1] == "1"
        names = {a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["alerts"]}
        assert not names & {"ModelPoolOperatorNoLeader", "ModelPoolOperatorMultipleLeaders"}, names

        leader.proc.send_signal(signal.SIGTERM)  # a rollout: the leader releases, the standby leads
        leader.proc.wait(timeout=30)
        wait_for(lambda: standby.leading() == 1, 60, "the standby leading")
        wait_for(
            lambda: samples(standby.metrics, "modelpool_status_condition", namespace=ns, name="stuck") > 0,
            30,
            "the new leader's condition series (no status write needed)",
        )
        # Once Prometheus has scraped the new leader's series, the alert is the same one still.
        wait_for(
            lambda: prom.value(
                f'modelpool_status_condition{{namespace="{ns}",name="stuck",type="Ready",status="False",'
                f'instance="127.0.0.1:{standby.metrics_port}"}}'
            ),
            30,
            "the new leader's series in Prometheus",
        )
        after = prom.firing("ModelPoolNotReady", ns, "stuck")
        assert after is not None, prom.alerts("ModelPoolNotReady", ns)
        assert after["activeAt"] == alert["activeAt"]
    finally:
        for replica in replicas:
            stop_process(replica.proc, grace=20, group=True)
