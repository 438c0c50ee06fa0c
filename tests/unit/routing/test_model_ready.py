"""``Router.model_ready()`` (what ``GET /v2/models/<m>/ready`` answers): the model is ready while
some variant has an endpoint whose breaker lets a request through now (closed, or half-open with
its one trial slot free), and not ready once every endpoint's breaker is open."""

from __future__ import annotations

from typing import Any

import httpx

from modelpool.routing.breaker import BreakerState, CircuitBreaker
from modelpool.routing.config import parse_config
from modelpool.routing.router import Router
from modelpool.routing.server import start_router

# Nothing listens on these ports of 127.0.0.1 (discard, and the port after it): no test here sends
# a request to them; the breakers are driven by hand. openSeconds is long so that no active probe
# becomes due while a test runs and changes a state the test set.
SMALL = ["http://127.0.0.1:9", "http://127.0.0.1:10"]
LARGE = ["http://127.0.0.1:11"]


def _config() -> dict[str, Any]:
    return {
        "generation": 1, "pool": "p", "mode": "weighted", "modelName": "m",
        "variants": [
            {"name": "small", "tier": "small", "tritonModel": "s", "weight": 1, "endpoints": SMALL},
            {"name": "large", "tier": "large", "tritonModel": "l", "weight": 1, "endpoints": LARGE},
        ],
        "breaker": {"failureThreshold": 2, "openSeconds": 600.0, "maxOpenSeconds": 600.0},
    }  # fmt: skip


def _breakers(router: Router) -> list[CircuitBreaker]:
    return [e.breaker for v in router.table.variants.values() for e in v.endpoints()]


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.on_failure()
    assert breaker.state is BreakerState.OPEN


def test_ready_while_any_endpoint_is_closed_and_not_once_every_breaker_is_open() -> None:
    router = Router(parse_config(_config()))
    breakers = _breakers(router)
    assert len(breakers) == 3
    assert router.model_ready() is True  # all closed
    for b in breakers[:-1]:
        _open(b)
    assert router.model_ready() is True  # the last endpoint (large's only one) still takes requests
    breakers[-1].on_failure()  # one failure of two: still closed
    assert router.model_ready() is True
    breakers[-1].on_failure()
    assert router.model_ready() is False  # every breaker open: no variant can answer


def test_a_half_open_endpoint_makes_the_model_ready_while_its_trial_slot_is_free() -> None:
    router = Router(parse_config(_config()))
    breakers = _breakers(router)
    for b in breakers:
        _open(b)
    assert router.model_ready() is False
    half = breakers[1]
    half.on_probe(True)  # a good active probe half-opens it
    assert half.state is BreakerState.HALF_OPEN
    assert router.model_ready() is True  # it may take one request now
    half.on_send()  # that one trial request is in flight: nothing else may go there now
    assert router.model_ready() is False
    half.on_failure()  # the trial failed: open again
    assert half.state is BreakerState.OPEN
    assert router.model_ready() is False
    half.on_probe(True)
    half.on_send()
    half.on_success()  # the trial succeeded: closed
    assert half.state is BreakerState.CLOSED
    assert router.model_ready() is True


def test_an_open_breaker_whose_probe_is_due_does_not_make_the_model_ready() -> None:
    """Open and past its wait is still open: only a good probe lets the endpoint back in."""
    router = Router(parse_config(_config()))
    breakers = _breakers(router)
    for b in breakers:
        _open(b)
        b.open_until = 0.0  # its wait is over
        assert b.probe_due()
    assert router.model_ready() is False


async def test_the_ready_route_answers_200_then_503_once_every_breaker_is_open() -> None:
    running = await start_router(parse_config(_config()))
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            assert (await client.get("/v2/models/m/ready")).status_code == 200
            breakers = _breakers(running.app.router)
            for b in breakers[:-1]:
                _open(b)
            assert (await client.get("/v2/models/m/ready")).status_code == 200
            _open(breakers[-1])
            assert (await client.get("/v2/models/m/ready")).status_code == 503
            # the server as a whole is still up and ready for configs: only the model is not
            assert (await client.get("/v2/health/ready")).status_code == 200
            breakers[0].on_probe(True)
            assert (await client.get("/v2/models/m/ready")).status_code == 200
    finally:
        await running.close()
