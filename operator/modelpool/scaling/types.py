"""Plain data types of the scaling decision: what goes in, what comes out.

Everything here is immutable and free of I/O, so the operator and the simulator build the same
inputs and get the same decisions. Times are seconds (``float``, any monotonic or epoch clock, as long
as one caller uses one clock); rates are requests per second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelpool.scaling.budget import Claim, SharedBudget


class SettingsError(ValueError):
    """A variant or pool setting is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class VariantSettings:
    """How one variant (tier) of a pool may be scaled. The lead maps the CRD fields onto this.

    ``capacity_per_replica_rps`` is the measured throughput of one replica at full load (from a
    profile or the CRD); when ``None`` it is estimated from the observed compute time and
    ``instances_per_replica`` (one replica serves ``instances_per_replica / compute_time`` req/s).
    """

    name: str
    min_replicas: int = 1
    max_replicas: int = 10
    gpus_per_replica: int = 1
    capacity_per_replica_rps: float | None = None
    instances_per_replica: int = 1
    target_queue_time_s: float = 0.5
    latency_target_s: float | None = None
    slo_attainment: float = 0.99
    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 300.0
    tolerance: float = 0.1
    scale_to_zero: bool = False
    priority: float = 1.0
    cost: float = 1.0
    trend_window_s: float = 20.0
    lookahead_s: float = 10.0
    backlog_drain_s: float = 1.0
    stale_after_s: float = 30.0
    max_plausible_rps: float = 1e6
    burst_reserve: bool = True
    burst_memory_s: float = 3600.0

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first invalid field and how to fix it."""
        prefix = f"variant {self.name!r}:"
        if not self.name:
            raise SettingsError("variant name: must be a non-empty string")
        if self.min_replicas < 0:
            raise SettingsError(f"{prefix} minReplicas={self.min_replicas} must be >= 0")
        if self.max_replicas < max(self.min_replicas, 1):
            raise SettingsError(
                f"{prefix} maxReplicas={self.max_replicas} must be >= max(minReplicas, 1)="
                f"{max(self.min_replicas, 1)}; raise maxReplicas or lower minReplicas"
            )
        if self.gpus_per_replica < 0:
            raise SettingsError(f"{prefix} gpusPerReplica={self.gpus_per_replica} must be >= 0")
        if self.capacity_per_replica_rps is not None and not self.capacity_per_replica_rps > 0:
            raise SettingsError(
                f"{prefix} capacityPerReplicaRps={self.capacity_per_replica_rps} must be > 0 "
                "(or leave it unset to estimate it from the measured compute time)"
            )
        if self.instances_per_replica < 1:
            raise SettingsError(f"{prefix} instancesPerReplica={self.instances_per_replica} must be >= 1")
        if not self.target_queue_time_s > 0:
            raise SettingsError(f"{prefix} targetQueueTimeSeconds={self.target_queue_time_s} must be > 0")
        if self.latency_target_s is not None and not self.latency_target_s > 0:
            raise SettingsError(
                f"{prefix} targetLatencyMs={self.latency_target_s * 1000:g} must be > 0 (or leave it unset)"
            )
        if not 0.5 <= self.slo_attainment < 1.0:
            raise SettingsError(
                f"{prefix} sloAttainment={self.slo_attainment} must be in [0.5, 1), e.g. 0.99"
            )
        if not 0.0 <= self.tolerance < 1.0:
            raise SettingsError(
                f"{prefix} tolerancePercent={self.tolerance * 100:g} must be in [0, 100), e.g. 10 "
                "(100 would ignore every change of demand); lower it"
            )
        for fname in (
            "scale_up_stabilization_s",
            "scale_down_stabilization_s",
            "trend_window_s",
            "lookahead_s",
        ):
            if getattr(self, fname) < 0:
                raise SettingsError(f"{prefix} {fname}={getattr(self, fname)} must be >= 0")
        for fname in (
            "backlog_drain_s",
            "stale_after_s",
            "max_plausible_rps",
            "priority",
            "cost",
            "burst_memory_s",
        ):
            if not getattr(self, fname) > 0:
                raise SettingsError(f"{prefix} {fname}={getattr(self, fname)} must be > 0")


@dataclass(frozen=True)
class RatePoint:
    """One point of a request-rate series (req/s at ``t``)."""

    t: float
    rps: float


@dataclass(frozen=True)
class VariantMetrics:
    """What Prometheus says about one variant right now.

    ``rate_series`` is the recent request rate, oldest first: the router's arrival rate when
    ``router_rps`` is set (its newest point), else Triton's served rate
    (``nv_inference_request_success``). ``router_rps`` is the rate the router sends to this variant
    (arrivals, which keep counting when the replicas are saturated or at zero). ``served_series``
    is Triton's served rate when the reader has both it and the router's series (``rate_series``
    is then the router's): the router may be scraped only in part, or traffic may bypass it, so
    the decision uses whichever of the two is fresh and larger
    (:func:`modelpool.scaling.demand.observed_metrics`). Averages are per request over the rate
    window. ``None`` means the series is absent. ``problem`` is set by the reader when it could not
    read the metrics at all (the decision then holds). ``rate_window_s`` is how many seconds of
    requests each point of ``rate_series`` counts (the ``rate()`` window, so points closer together
    than it share requests); ``None`` when each point counts only the requests since the one before
    (``irate`` read once per scrape). ``served_window_s`` is the same for ``served_series``.

    How old healthy samples may be (:func:`modelpool.scaling.demand.stale_after_s`): ``step_s``
    is the spacing of the series' points (the reader's subquery step, aligned by Prometheus to its
    multiples, so the newest point is up to one step old) and ``scrape_interval_s`` the longest
    scrape interval of the series (the newest sample is up to one scrape old); ``None`` for neither.
    ``triton_targets`` is how many scrape targets export the variant's Triton series and
    ``expected_targets`` how many should (its ready replicas); fewer is a partial scrape
    (:func:`modelpool.scaling.demand.partial_scrape`: no scale-down). ``None`` when not counted.
    ``prometheus_now`` is Prometheus' own clock (its ``time()``) when the metrics were read: the
    operator asks it only when the newest sample looks stale by its own clock, so that a stale hold
    can tell a clock ahead of Prometheus'; ``None`` when not asked.
    """

    rate_series: tuple[RatePoint, ...] = ()
    router_rps: float | None = None
    queue_time_s: float | None = None
    compute_time_s: float | None = None
    pending_requests: float | None = None
    newest_sample_t: float | None = None
    problem: str | None = None
    rate_window_s: float | None = None
    served_series: tuple[RatePoint, ...] = ()
    served_window_s: float | None = None
    step_s: float | None = None
    scrape_interval_s: float | None = None
    triton_targets: int | None = None
    expected_targets: int | None = None
    prometheus_now: float | None = None

    @property
    def latest_rps(self) -> float | None:
        """The newest served rate, or ``None`` without a series."""
        return self.rate_series[-1].rps if self.rate_series else None


@dataclass(frozen=True)
class WindowStart:
    """What the scaler had when a look-back window began."""

    t: float
    pending: float
    serving: int


@dataclass(frozen=True)
class BurstHistory:
    """Decayed record of recent windows: requests seen, and how many would have been late.

    ``late`` holds ``(extra replicas, decayed late requests)``: what the replayed windows would
    have left late with that many replicas more (only counts above zero); ``starts`` are the
    windows still open, each with the replicas serving at its start. Store it with the variant's
    state.
    """

    updated_at: float | None = None
    arrivals: float = 0.0
    late: tuple[tuple[int, float], ...] = ()
    starts: tuple[WindowStart, ...] = ()


@dataclass(frozen=True)
class VariantState:
    """What the previous decision left behind (store it and pass it back next time).

    ``recommendations`` holds ``(t, replicas)`` of recent raw recommendations, used for the
    stabilisation windows (the same scheme as the Kubernetes HPA behaviour API); ``bursts`` what the
    burst reserve learned (:mod:`modelpool.scaling.reserve`); ``capacity_rps`` the last capacity of
    one replica measured from the compute time, which sizes the variant while no replica of it
    serves (at zero replicas there is no compute time to measure). ``demand_at`` is when
    ``last_demand_rps`` was measured: a hold keeps the demand, and its time, until it is older than
    the staleness limit (``None``: at ``decided_at``, as for a state restored from the status).
    """

    replicas: int
    decided_at: float
    recommendations: tuple[tuple[float, int], ...] = ()
    last_demand_rps: float = 0.0
    bursts: BurstHistory = field(default_factory=BurstHistory)
    capacity_rps: float | None = None
    demand_at: float | None = None


@dataclass(frozen=True)
class VariantInput:
    """One variant's settings, live metrics, current replica count and previous state.

    ``expected_extra_rps`` is load the routing controller is about to move onto this tier (it may be
    negative when load is moved away); the scaler sizes for it before it shows up in the metrics.
    ``ready_replicas`` (the Deployment's ready count; ``None`` = ``current_replicas``) tells the burst
    reserve how many replicas really served.
    """

    settings: VariantSettings
    metrics: VariantMetrics
    current_replicas: int
    previous: VariantState | None = None
    expected_extra_rps: float = 0.0
    ready_replicas: int | None = None


@dataclass(frozen=True)
class PoolInput:
    """All variants of one ModelPool, in routing order (cheapest first, last = final fallback tier)."""

    name: str
    variants: tuple[VariantInput, ...]
    gpu_pool: str = "default"


@dataclass(frozen=True)
class ScalingInput:
    """Every pool sharing GPU pools, and the GPU budget of each GPU pool (absent = unlimited).

    ``shared``: per GPU pool, the claims and held GPUs of pools on it that are decided elsewhere
    (the operator decides each ModelPool in its own reconcile pass).
    """

    pools: tuple[PoolInput, ...]
    gpu_budgets: Mapping[str, int] = field(default_factory=dict)
    shared: Mapping[str, SharedBudget] = field(default_factory=dict)

    @classmethod
    def single(cls, pool: PoolInput, gpu_budget: int | None = None) -> ScalingInput:
        """Input for one pool, with an optional budget for its GPU pool."""
        budgets = {} if gpu_budget is None else {pool.gpu_pool: gpu_budget}
        return cls(pools=(pool,), gpu_budgets=budgets)


@dataclass(frozen=True)
class VariantDecision:
    """Desired replicas of one variant, with the one-line reason shown in the pool's status.

    ``wished_replicas`` is what the variant needs before the budget; ``shortfall_rps`` is the demand
    its granted replicas cannot serve within the target (what routing should move elsewhere);
    ``held`` is true when metrics were unusable and the last decision was kept.
    """

    name: str
    desired_replicas: int
    current_replicas: int
    wished_replicas: int
    demand_rps: float
    capacity_per_replica_rps: float | None
    reason: str
    held: bool = False
    cut_replicas: int = 0
    cut_reason: str = ""
    shortfall_rps: float = 0.0
    state: VariantState | None = None

    @property
    def changed(self) -> bool:
        """True when the Deployment must be patched (desired differs from the current count).

        The operator emits its Scaled Event only when the desired count also differs from the
        previous decision, so a Deployment that does not converge is not reported at every decision."""
        return self.desired_replicas != self.current_replicas


@dataclass(frozen=True)
class PoolDecision:
    """The decision for one pool: per-variant results plus pool-level conditions."""

    name: str
    variants: tuple[VariantDecision, ...]
    metrics_held: bool
    held_reason: str
    budget_message: str

    def variant(self, name: str) -> VariantDecision:
        """The decision of the variant called ``name`` (KeyError if absent)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


@dataclass(frozen=True)
class ScalingDecision:
    """Decisions for every pool, keyed by pool name, per GPU-pool budget reports, and per GPU pool
    the claims these pools made (for pools on it decided elsewhere: ``SharedBudget.other_claims``)."""

    pools: Mapping[str, PoolDecision]
    budget_reports: Mapping[str, str]
    claims: Mapping[str, tuple[Claim, ...]] = field(default_factory=dict)
