"""The routing policies' latency SLO as the latency target of variants that set none."""

from __future__ import annotations

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.routed_slo import policy_latency_slo_ms, routed_latency_slo_s, smallest_slo_s
from modelpool.controllers.scaling_planner import settings_for
from unit.operator.helpers import routing_policy as policy


def test_smallest_slo_of_the_policies_routing_to_the_pool() -> None:
    policies = [
        policy("a", 500),
        policy("a", 200),
        policy("a"),  # no SLO
        policy("b", 50),  # another pool
        {"spec": {"poolRef": {"name": "a"}, "mode": "weighted"}},  # invalid (no weights): skipped
    ]
    assert routed_latency_slo_s("a", policies) == 0.2
    assert routed_latency_slo_s("b", policies) == 0.05
    assert routed_latency_slo_s("c", policies) is None
    assert routed_latency_slo_s("a", []) is None


def test_the_operators_index_holds_each_policys_pool_and_slo() -> None:
    assert policy_latency_slo_ms(policy("a", 500)["spec"]) == ("a", 500)
    assert policy_latency_slo_ms(policy("a")["spec"]) is None  # no SLO: nothing to index
    assert policy_latency_slo_ms({"poolRef": {"name": "a"}, "mode": "weighted"}) is None  # invalid
    assert smallest_slo_s([500, 200]) == 0.2
    assert smallest_slo_s([]) is None


def test_variant_latency_target_wins_over_the_routed_slo() -> None:
    spec = ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 4},
            "variants": [
                {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/m"}},
                {
                    "name": "large",
                    "tier": "large",
                    "model": {"name": "l", "repository": "/m"},
                    "scaling": {"targetLatencyMs": 1000},
                },
            ],
        }
    )
    small, large = spec.variants
    assert settings_for(small, None, 0.2).latency_target_s == 0.2
    assert settings_for(large, None, 0.2).latency_target_s == 1.0
    assert settings_for(small).latency_target_s is None
