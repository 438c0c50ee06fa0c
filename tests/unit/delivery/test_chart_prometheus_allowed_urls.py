"""The chart's ``prometheus.allowedURLs``: one ``--prometheus-allowed-urls`` per entry; none when
empty (the default) or absent (a release upgraded with --reuse-values from a chart without it).

Real helm of the toolchain (`modelpool devcluster build`; .ci/setup.sh builds it), no cluster.
"""

from __future__ import annotations

import json

import pytest

from integration.delivery.deliverytools import helm_template, operator_container, render

FLAG = "--prometheus-allowed-urls"


def _flags(set_json: dict[str, str] | None = None) -> list[str]:
    args: list[str] = operator_container(render(set_json=set_json))["args"]
    return [a for a in args if a.startswith(FLAG)]


def test_each_allowed_url_becomes_a_flag() -> None:
    urls = ["http://prometheus-operated.monitoring:9090", "https://thanos.example.com/prometheus"]
    assert _flags({"prometheus.allowedURLs": json.dumps(urls)}) == [f"{FLAG}={u}" for u in urls]


@pytest.mark.parametrize(
    "set_json",
    [None, {"prometheus.allowedURLs": "[]"}, {"prometheus.allowedURLs": "null"}, {"prometheus": "null"}],
)
def test_no_allowed_urls_render_no_flag(set_json: dict[str, str] | None) -> None:
    assert _flags(set_json) == []


@pytest.mark.parametrize(
    "url",
    [
        "prometheus:9090",
        "ftp://prometheus:9090",
        "http://prometheus:9090/?x=1",
        "http://prometheus:9090#x",
        "",
    ],
)
def test_the_schema_refuses_what_is_not_an_http_base_url(url: str) -> None:
    proc = helm_template(set_json={"prometheus.allowedURLs": json.dumps([url])})
    assert proc.returncode != 0
    assert "schema" in proc.stderr and "allowedURLs" in proc.stderr, proc.stderr
