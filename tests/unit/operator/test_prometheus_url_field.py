"""``spec.scaling.prometheusURL`` is a base URL the operator appends ``/api/v1/query`` to: a ``?``
or a ``#`` made that suffix part of the query string or the fragment (so the request path was the
author's), and ``user:password@`` put credentials in the spec. The model and the CRD refuse them,
naming the field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from modelpool.api.crdgen import KINDS, build_crd
from modelpool.api.modelpool import ModelPoolSpec

REFUSED = [
    "http://vault.internal:8200/v1/sys/raw/anything?x=",
    "http://prometheus.monitoring:9090/?",
    "http://prometheus.monitoring:9090#",
    "http://prometheus.monitoring:9090/prom#frag",
    "http://admin:hunter2@prometheus.monitoring:9090",
    "https://token@prometheus.example.com",
    "http://@prometheus:9090",
    "http://",
    "http:///api",
]
ACCEPTED = [
    "http://prometheus.monitoring:9090",
    "http://prometheus.monitoring:9090/",
    "https://thanos.example.com/prometheus",
    "http://10.0.0.7:9090/select/0/prometheus",
    "http://[fd00::7]:9090",
    "http://prometheus:9090/path@with-at",
]


def _spec(url: str) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 4},
            "scaling": {"prometheusURL": url},
            "variants": [{"name": "small", "tier": "small", "model": {"name": "m", "repository": "/m"}}],
        }
    )


def _crd_field() -> dict[str, Any]:
    spec = build_crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    field: dict[str, Any] = spec["properties"]["scaling"]["properties"]["prometheusURL"]
    return field


@pytest.mark.parametrize("url", REFUSED)
def test_a_url_with_a_query_fragment_or_credentials_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ValidationError) as err:
        _spec(url)
    message = str(err.value)
    assert "scaling.prometheusURL" in message, message
    assert re.search(_crd_field()["pattern"], url) is None  # the API server refuses it too (a search)


@pytest.mark.parametrize("url", ACCEPTED)
def test_a_base_url_is_accepted_by_the_model_and_the_crd(url: str) -> None:
    assert _spec(url).scaling.prometheus_url == url
    assert re.search(_crd_field()["pattern"], url) is not None


def test_the_message_says_what_to_remove() -> None:
    with pytest.raises(ValidationError) as err:
        _spec("http://admin:pw@prometheus:9090/?x=")
    message = str(err.value)
    assert "prometheusURL" in message and "'?'" in message and "'#'" in message, message
    assert "user:password@" in message, message
