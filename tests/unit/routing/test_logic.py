"""Pure routing logic: SWRR, breaker, cache, scorer, endpoint slices."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pytest

from modelpool.routing.balancing import SmoothWeightedRoundRobin, pick_least_outstanding
from modelpool.routing.breaker import BreakerState, CircuitBreaker
from modelpool.routing.cache import TTLCache
from modelpool.routing.config import ScorerConfig
from modelpool.routing.endpoints import ready_urls_from_slices
from modelpool.routing.scoring import (
    ComplexityScorer,
    HeuristicScorer,
    import_factory,
    is_blocking,
    load_scorer,
)


def test_swrr_is_nginx_smooth_and_deterministic() -> None:
    swrr = SmoothWeightedRoundRobin([("a", 5), ("b", 1), ("c", 1)])
    seq = [swrr.pick() for _ in range(7)]
    assert seq == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's documented sequence for 5:1:1
    again = SmoothWeightedRoundRobin([("a", 5), ("b", 1), ("c", 1)])
    assert [again.pick() for _ in range(7)] == seq


@pytest.mark.parametrize(
    "weights", [[("s", 80), ("q", 15), ("l", 5)], [("s", 1), ("l", 1)], [("s", 7), ("l", 0)]]
)
def test_swrr_exact_ratios_over_each_window(weights: list[tuple[str, int]]) -> None:
    swrr = SmoothWeightedRoundRobin(weights)
    total = sum(w for _, w in weights)
    for _ in range(3):
        counts = Counter(swrr.pick() for _ in range(total))
        assert counts == Counter({n: w for n, w in weights if w > 0})


def test_swrr_restricted_to_allowed_and_errors() -> None:
    swrr = SmoothWeightedRoundRobin([("a", 3), ("b", 1)])
    assert {swrr.pick(["b"]) for _ in range(5)} == {"b"}
    assert swrr.pick([]) is None
    with pytest.raises(ValueError, match="above 0"):
        SmoothWeightedRoundRobin([("a", 0)])
    with pytest.raises(ValueError, match=">= 0"):
        SmoothWeightedRoundRobin([("a", -1)])


@dataclass
class _Ep:
    name: str
    outstanding: int


def test_least_outstanding_with_round_robin_ties() -> None:
    eps = [_Ep("a", 2), _Ep("b", 0), _Ep("c", 0)]
    assert pick_least_outstanding(eps, 0).name == "b"
    assert pick_least_outstanding(eps, 2).name == "c"
    eps = [_Ep("a", 0), _Ep("b", 0)]
    assert [pick_least_outstanding(eps, i).name for i in range(4)] == ["a", "b", "a", "b"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_half_opens_and_closes() -> None:
    clock = _Clock()
    b = CircuitBreaker(failure_threshold=2, open_seconds=1.0, max_open_seconds=4.0, clock=clock)
    b.on_failure()
    assert b.allows()
    b.on_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allows()
    assert not b.probe_due()
    clock.now = 1.0
    assert b.probe_due()
    b.on_probe(False)  # failed probe: wait doubles
    assert b.open_until == pytest.approx(3.0)
    clock.now = 3.0
    b.on_probe(True)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allows()
    b.on_send()
    assert not b.allows()  # one trial at a time
    b.on_failure()  # trial failed: open again, longer
    assert b.state is BreakerState.OPEN
    assert b.open_until == pytest.approx(3.0 + 4.0)
    clock.now = 7.0
    b.on_probe(True)
    b.on_send()
    b.on_success()
    assert b.state is BreakerState.CLOSED
    assert b.allows()


def test_breaker_success_resets_consecutive_failures() -> None:
    b = CircuitBreaker(failure_threshold=3)
    for _ in range(10):
        b.on_failure()
        b.on_failure()
        b.on_success()
    assert b.state is BreakerState.CLOSED


def test_cache_lru_and_ttl() -> None:
    clock = _Clock()
    cache: TTLCache[str] = TTLCache(2, 10.0, clock=clock)
    cache.put(b"a", "A")
    cache.put(b"b", "B")
    assert cache.get(b"a") == "A"  # a is now most recent
    cache.put(b"c", "C")  # evicts b
    assert cache.get(b"b") is None
    assert cache.get(b"a") == "A"
    clock.now = 10.0
    assert cache.get(b"a") is None
    assert len(cache) == 1
    with pytest.raises(ValueError, match="max_entries"):
        TTLCache(0, 1.0)


def test_cache_is_bounded_by_bytes_least_recently_used_first() -> None:
    """Before, only the number of entries was bounded: 1,024 responses of any size."""
    cache: TTLCache[str] = TTLCache(100, 10.0, clock=_Clock(), max_bytes=1000)
    cache.put(b"a", "A", 400)
    cache.put(b"b", "B", 400)
    assert cache.get(b"a") == "A"  # a is now most recent
    cache.put(b"c", "C", 400)  # 1,200 bytes: evicts b, the least recently used
    assert (cache.get(b"b"), cache.get(b"a"), cache.get(b"c")) == (None, "A", "C")
    assert cache.size == 800
    cache.put(b"a", "A2", 100)  # replacing an entry replaces its size
    assert cache.size == 500
    cache.put(b"big", "BIG", 1001)  # bigger than the bound on its own: not cached, nothing evicted
    assert cache.get(b"big") is None
    assert (cache.get(b"a"), cache.get(b"c"), cache.size) == ("A2", "C", 500)
    cache.put(b"c", "C2", 2000)  # nor kept under its key from before
    assert (cache.get(b"c"), cache.size) == (None, 100)
    cache.put(b"all", "ALL", 1000)  # exactly the bound: everything else goes
    assert (len(cache), cache.size) == (1, 1000)
    with pytest.raises(ValueError, match="max_bytes"):
        TTLCache(1, 1.0, max_bytes=0)


def test_heuristic_scorer_orders_texts() -> None:
    scorer = load_scorer(ScorerConfig())
    assert isinstance(scorer, ComplexityScorer)
    assert not is_blocking(scorer)
    easy, hard = scorer.score(
        [
            "card lost",
            "I transferred 1,250 EUR on 03/04 from my savings account, but the beneficiary, "
            "whose account was apparently closed, never received it; could you investigate "
            "and explain the reversal timeline?",
        ]
    )
    assert 0.0 <= easy < 0.2
    assert 0.6 < hard <= 1.0
    assert HeuristicScorer().score([""]) == [0.0]


def test_scorer_factory_errors_say_what_is_wrong() -> None:
    """``--scorer-factory`` names one (a config cannot: tests/unit/routing/test_scorer_factory_wire.py)."""
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        import_factory("no_such_module_xyz:load")
    with pytest.raises(ValueError, match="'json' has no callable 'no_such_callable'"):
        import_factory("json:no_such_callable")
    with pytest.raises(ValueError, match="is not module:callable"):
        import_factory("json")
    assert import_factory("json:loads") is json.loads
    with pytest.raises(ValueError, match=r"returned str, which has no score\(\)"):
        load_scorer(ScorerConfig(kind="torch", path="/x"), str)


def test_ready_urls_from_slices() -> None:
    slices = [
        {
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": True, "terminating": True}},
                {"addresses": ["10.0.0.4"]},
            ],
        },
        {"addressType": "FQDN", "ports": [{"name": "http", "port": 8000}],
         "endpoints": [{"addresses": ["x.y"]}]},
        {"addressType": "IPv6", "ports": [{"name": "http", "port": 8000}],
         "endpoints": [{"addresses": ["fd00::5"], "conditions": {"ready": True}}]},
    ]  # fmt: skip
    assert ready_urls_from_slices(slices, "http") == [
        "http://10.0.0.1:8000",
        "http://10.0.0.4:8000",
        "http://[fd00::5]:8000",
    ]
    assert ready_urls_from_slices(slices, 8001) == ["http://10.0.0.1:8001", "http://10.0.0.4:8001"]
    assert ready_urls_from_slices(slices, "metrics") == []


def test_unloadable_scorer_is_a_config_error_and_keeps_the_old_config() -> None:
    from modelpool.routing.config import ConfigError, parse_config
    from modelpool.routing.router import Router

    base = {
        "generation": 1, "pool": "p", "mode": "weighted", "modelName": "m",
        "variants": [{"name": "s", "tier": "small", "tritonModel": "s", "weight": 1,
                      "endpoints": ["http://127.0.0.1:9"]}],
        "tiers": [{"maxComplexity": 1.0, "target": "s"}],
    }  # fmt: skip
    router = Router(parse_config(base), scorer_factory=json.loads)
    pushed = parse_config(
        {**base, "generation": 2, "mode": "tiered", "scorer": {"kind": "torch", "path": "/x"}}
    )
    with pytest.raises(ConfigError) as info:
        router.apply(pushed)
    assert info.value.problems[0]["field"] == "scorer"
    assert router.config.generation == 1


def test_endpoints_no_variant_lists_are_forgotten_and_the_listed_ones_kept() -> None:
    """An endpoint the config (or its EndpointSlice) no longer lists is closed and forgotten, so
    the router keeps no connection to a removed replica and no entry per replica it ever saw; one
    still listed keeps its state (connections, breaker) across the change."""
    from modelpool.routing.config import parse_config
    from modelpool.routing.router import Router

    def config(generation: int, urls: list[str]) -> dict[str, object]:
        return {
            "generation": generation, "pool": "p", "mode": "weighted", "modelName": "m",
            "variants": [{"name": "s", "tier": "small", "tritonModel": "s", "weight": 1, "endpoints": urls}],
        }  # fmt: skip

    router = Router(parse_config(config(1, ["http://127.0.0.1:9", "http://127.0.0.1:10"])))
    kept, removed = (router.endpoint("s", f"http://127.0.0.1:{port}") for port in (9, 10))
    router.apply(parse_config(config(2, ["http://127.0.0.1:9"])))
    assert router.endpoint("s", "http://127.0.0.1:9") is kept
    assert router.endpoint("s", "http://127.0.0.1:10") is not removed


def test_a_push_that_changes_the_breaker_reaches_the_endpoints_it_keeps() -> None:
    """The breaker thresholds of a push applied only to endpoints created after it: one listed
    before and after kept the old thresholds for as long as the router ran."""
    from modelpool.routing.config import parse_config
    from modelpool.routing.router import Router

    def config(generation: int, threshold: int, max_open: float) -> dict[str, object]:
        return {
            "generation": generation, "pool": "p", "mode": "weighted", "modelName": "m",
            "variants": [{"name": "s", "tier": "small", "tritonModel": "s", "weight": 1,
                          "endpoints": ["http://127.0.0.1:9"]}],
            "breaker": {"failureThreshold": threshold, "openSeconds": 1.0, "maxOpenSeconds": max_open},
        }  # fmt: skip

    router = Router(parse_config(config(1, 5, 30.0)))
    breaker = router.endpoint("s", "http://127.0.0.1:9").breaker
    breaker.on_failure()
    breaker.on_failure()
    assert breaker.state is BreakerState.CLOSED  # 2 of 5
    router.apply(parse_config(config(2, 2, 4.0)))
    assert router.endpoint("s", "http://127.0.0.1:9").breaker is breaker  # state kept
    assert (breaker.failure_threshold, breaker.max_open_seconds) == (2, 4.0)
    assert breaker.state is BreakerState.OPEN  # the new threshold is already reached


def test_new_breaker_thresholds_keep_an_open_breakers_state_and_bound_its_wait() -> None:
    clock = _Clock()
    b = CircuitBreaker(failure_threshold=1, open_seconds=20.0, max_open_seconds=60.0, clock=clock)
    b.on_failure()
    assert b.open_until == pytest.approx(20.0)
    b.configure(failure_threshold=3, open_seconds=1.0, max_open_seconds=5.0)
    assert b.state is BreakerState.OPEN
    assert b.open_until == pytest.approx(5.0)  # no longer than the new longest wait
    clock.now = 5.0
    b.on_probe(False)
    assert b.open_until == pytest.approx(5.0 + 5.0)  # doubled, capped by the new maximum


def test_the_cascade_escalates_a_draft_it_cannot_judge() -> None:
    """docs/router.md: an output the cascade cannot read escalates; a confidence of None kept it."""
    from modelpool.routing.decisions import keeps_draft

    assert not keeps_draft(None, 0.7)
    assert keeps_draft(0.7, 0.7) and not keeps_draft(0.69, 0.7)
