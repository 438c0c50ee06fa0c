"""Live-metrics autoscaling of ModelPool variants on a shared GPU budget.

Public entry: :func:`decide` (pure). Inputs and outputs are the dataclasses in
:mod:`modelpool.scaling.types`; Prometheus I/O lives in :mod:`modelpool.scaling.prometheus_reader`.
"""

from modelpool.scaling.budget import SharedBudget
from modelpool.scaling.decide import decide
from modelpool.scaling.types import (
    PoolDecision,
    PoolInput,
    RatePoint,
    ScalingDecision,
    ScalingInput,
    SettingsError,
    VariantDecision,
    VariantInput,
    VariantMetrics,
    VariantSettings,
    VariantState,
)

__all__ = [
    "PoolDecision",
    "PoolInput",
    "RatePoint",
    "ScalingDecision",
    "ScalingInput",
    "SettingsError",
    "SharedBudget",
    "VariantDecision",
    "VariantInput",
    "VariantMetrics",
    "VariantSettings",
    "VariantState",
    "decide",
]
