"""The operator's allowlist of Prometheus URLs (``--prometheus-allowed-urls``,
``$MODELPOOL_PROMETHEUS_ALLOWED_URLS``, the chart's ``prometheus.allowedURLs``).

``spec.scaling.prometheusURL`` is the pool author's: without the allowlist the operator GETs any
host and path a tenant names, from inside the cluster (the security review's SSRF). With it, a pool
URL outside the list is not asked at all; its metrics are unavailable, and the condition names the
field and the setting. Empty (the default) allows any URL, as before; the operator's own
``--prometheus-url`` is always allowed.
"""

from __future__ import annotations

import sys
import types

import httpx
import pytest

from modelpool import cli
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers import scaling_planner
from modelpool.controllers.pool_status import ReplicaPlan
from modelpool.controllers.scaling_planner import ScalingPlanner
from modelpool.scaling import prometheus_reader
from modelpool.startup import Readiness, config_problems

ENV = "MODELPOOL_PROMETHEUS_ALLOWED_URLS"
DEFAULT = "http://prometheus-operated.monitoring:9090"
ALLOWED = "http://prometheus.monitoring:9090,https://thanos.example.com/prometheus"
HELD = {"small": ReplicaPlan(2, "held")}
NOW = 1_000_000.0


def _spec(url: str | None) -> ModelPoolSpec:
    scaling = {"intervalSeconds": 10, "rateWindowSeconds": 6}
    if url is not None:
        scaling["prometheusURL"] = url  # type: ignore[assignment]
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 8},
            "scaling": scaling,
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "m", "repository": "/m"},
                    "minReplicas": 1,
                    "maxReplicas": 6,
                    "scaling": {"capacityPerReplicaRps": 10},
                }
            ],
        }
    )


async def _plan(
    monkeypatch: pytest.MonkeyPatch, allowed: str | None, url: str | None
) -> tuple[list[str], str]:
    """The URLs one decision asked, and its MetricsAvailable reason and message."""
    if allowed is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, allowed)
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})

    planner = ScalingPlanner(default_prometheus_url=DEFAULT)
    planner._http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    try:
        outcome = await planner.plan("team-a", "p", _spec(url), None, {"small": 2}, dict(HELD), now=NOW)
    finally:
        await planner.close()
    assert outcome.plans["small"].replicas == 2  # no metrics: the last decision holds
    assert outcome.metrics is not None
    return seen, f"{outcome.metrics.reason}: {outcome.metrics.message}"


async def test_a_pool_url_outside_the_allowlist_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, note = await _plan(monkeypatch, ALLOWED, "http://vault.internal:8200/v1/sys/raw")
    assert seen == []
    assert note.startswith("MetricsUnavailable: "), note
    assert "spec.scaling.prometheusURL" in note and "--prometheus-allowed-urls" in note, note
    assert "prometheus.allowedURLs" in note, note


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        (ALLOWED, "http://prometheus.monitoring:9090"),
        (ALLOWED, "https://thanos.example.com/prometheus/select/0"),
        (ALLOWED, DEFAULT),  # the operator's own Prometheus, always
        (ALLOWED, None),  # the pool names none: the operator's
        (None, "http://anything.example:1234/x"),  # no allowlist: any URL, as before
        ("", "http://anything.example:1234/x"),
    ],
)
async def test_urls_the_allowlist_admits_are_asked(
    monkeypatch: pytest.MonkeyPatch, allowed: str | None, url: str | None
) -> None:
    seen, note = await _plan(monkeypatch, allowed, url)
    assert seen and all(u.startswith(url or DEFAULT) for u in seen), seen
    assert "allowed" not in note, note


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://prometheus.monitoring:9090", True),
        ("http://prometheus.monitoring:9090/", True),
        ("http://PROMETHEUS.monitoring:9090", True),
        ("http://prometheus.monitoring:9090/prom/x", True),
        ("https://thanos.example.com/prometheus", True),
        ("https://thanos.example.com/prometheus/", True),
        ("https://thanos.example.com/prometheus/select/0", True),
        ("https://thanos.example.com:443/prometheus", True),
        # string prefixes that are other hosts, ports, schemes or paths
        ("http://prometheus.monitoring:9090@vault.internal:8200/", False),
        ("http://prometheus.monitoring:90901", False),
        ("http://prometheus.monitoring:9091", False),
        ("http://prometheus.monitoring", False),
        ("https://prometheus.monitoring:9090", False),
        ("http://thanos.example.com/prometheus", False),
        ("https://thanos.example.com/prometheus-admin", False),
        ("https://thanos.example.com/", False),
        ("https://thanos.example.com.evil.example/prometheus", False),
        ("https://user@thanos.example.com/prometheus", False),
        # ways out of an allowed path
        ("https://thanos.example.com/prometheus/../admin", False),
        ("https://thanos.example.com/prometheus/%2e%2e/admin", False),
        ("https://thanos.example.com/prometheus/%2E%2E/admin", False),
        ("https://thanos.example.com/prometheus%2f..%2fadmin", False),
        ("https://thanos.example.com/prometheus/x?y=1", False),
        ("https://thanos.example.com/prometheus#x", False),
        ("http://prometheus.monitoring:abc", False),
        ("not a url", False),
    ],
)
def test_a_url_is_allowed_below_an_entry_compared_parsed(url: str, allowed: bool) -> None:
    entries = prometheus_reader.allowed_urls_from(ALLOWED)
    assert prometheus_reader.url_allowed(url, entries) is allowed


def test_an_entry_with_a_path_ending_in_a_slash_matches_as_without() -> None:
    entries = prometheus_reader.allowed_urls_from("https://thanos.example.com/prometheus/")
    assert prometheus_reader.url_allowed("https://thanos.example.com/prometheus", entries)
    assert not prometheus_reader.url_allowed("https://thanos.example.com/prometheusx", entries)


def test_the_setting_splits_on_commas_and_whitespace() -> None:
    assert prometheus_reader.allowed_urls_from(" http://a:1, http://b:2\nhttps://c ,,") == (
        "http://a:1",
        "http://b:2",
        "https://c",
    )
    assert prometheus_reader.allowed_urls_from("") == ()


def test_the_planner_reads_the_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "http://a:1,http://b:2")
    assert ScalingPlanner().allowed_prometheus_urls == ("http://a:1", "http://b:2")
    monkeypatch.delenv(ENV)
    assert ScalingPlanner().allowed_prometheus_urls == ()


def _problems(*argv: str, **env: str) -> list[str]:
    return config_problems(cli.build_parser().parse_args(["operator", "run", *argv]), env)


def test_the_flag_takes_a_list_and_a_bad_entry_is_named() -> None:
    args = cli.build_parser().parse_args(
        [
            "operator",
            "run",
            "--prometheus-allowed-urls",
            "http://a:1,http://b:2",
            "--prometheus-allowed-urls=http://c",
        ]
    )
    assert args.prometheus_allowed_urls == ["http://a:1,http://b:2", "http://c"]
    assert _problems("--prometheus-allowed-urls", "http://a:1,https://b/prom") == []
    assert _problems(**{ENV: "http://a:1 https://b/prom"}) == []
    for bad in ("ftp://a", "http://a/?x=1", "http://a/#x", "a:9090"):
        (problem,) = _problems("--prometheus-allowed-urls", f"http://ok:1,{bad}")
        assert problem.startswith(f"--prometheus-allowed-urls: {bad!r}"), problem
        assert "prometheus.allowedURLs" in problem, problem
    (problem,) = _problems(**{ENV: "ftp://a"})
    assert problem.startswith(f"${ENV}: 'ftp://a'"), problem
    # the flag wins over the variable, as --prometheus-url does
    assert _problems("--prometheus-allowed-urls=http://a", **{ENV: "ftp://a"}) == []


def test_the_flag_reaches_the_planner_kopf_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    monkeypatch.setattr(kopf, "run", lambda **_: None)
    monkeypatch.setattr(cli, "use_kopf_logging", lambda verbose: None)
    monkeypatch.setitem(sys.modules, "modelpool.controllers.handlers", types.ModuleType("handlers"))
    monkeypatch.setenv(ENV, "http://from-env:1")  # restored after the test: _run_kopf sets it
    args = cli.build_parser().parse_args(["operator", "run"])
    cli._run_kopf(args, None, Readiness(None, "nothing"))  # type: ignore[arg-type]
    assert ScalingPlanner().allowed_prometheus_urls == ("http://from-env:1",)
    args = cli.build_parser().parse_args(
        [
            "operator",
            "run",
            "--prometheus-allowed-urls",
            "http://a:1",
            "--prometheus-allowed-urls",
            "http://b:2",
        ]
    )
    cli._run_kopf(args, None, Readiness(None, "nothing"))  # type: ignore[arg-type]
    assert ScalingPlanner().allowed_prometheus_urls == ("http://a:1", "http://b:2")


def test_readers_stop_at_the_answer_cap_and_the_deadline() -> None:
    reader = ScalingPlanner(default_prometheus_url=None).reader(DEFAULT, _spec(None))
    assert reader.timeout_s == scaling_planner.PROMETHEUS_TIMEOUT_S
    assert reader.max_answer_bytes == prometheus_reader.MAX_ANSWER_BYTES == 4 * 1024 * 1024
