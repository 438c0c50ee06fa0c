"""The operator's shell around :func:`modelpool.scaling.decide`: CRD fields in, replica plans out.

Reads each variant's live metrics from Prometheus, maps the ModelPool spec onto the
scaler's settings, and keeps the decision state (stabilisation windows, burst reserve) between
passes: in memory, and in each variant's status (``scaler``) so that a restarted operator goes on
from it.
Decisions are made at most every ``spec.scaling.intervalSeconds`` (paced on the monotonic clock);
between them the last decision holds. Without metrics nothing ever scales down, and neither do
settings the scaler refuses.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard

import httpx

from modelpool.api.modelpool import (
    TIER_ORDER,
    BurstLate,
    ModelPoolSpec,
    ModelPoolStatus,
    ScalerMemory,
    ScalerRecommendation,
    Variant,
)
from modelpool.controllers.pool_status import ReplicaPlan, SharedGpuPool, hold, plan_floor
from modelpool.scaling import metrics as scaling_metrics
from modelpool.scaling.budget import Claim, SharedBudget
from modelpool.scaling.decide import LAST_TIER_SERVING, decide, serving_floors
from modelpool.scaling.demand import partial_scrape, stale_after_s
from modelpool.scaling.prometheus_reader import (
    PrometheusError,
    PrometheusReader,
    QueryTemplates,
    VariantTarget,
    allowed_urls_from,
    url_allowed,
)
from modelpool.scaling.stabilization import compact
from modelpool.scaling.types import (
    BurstHistory,
    PoolDecision,
    PoolInput,
    ScalingInput,
    SettingsError,
    VariantInput,
    VariantMetrics,
    VariantSettings,
    VariantState,
)

logger = logging.getLogger(__name__)

PROMETHEUS_URL_ENV = "MODELPOOL_PROMETHEUS_URL"
EXTRA_MATCHERS_ENV = "MODELPOOL_PROMETHEUS_MATCHERS"
PROMETHEUS_ALLOWED_URLS_ENV = "MODELPOOL_PROMETHEUS_ALLOWED_URLS"
"""The Prometheus URLs a pool's ``spec.scaling.prometheusURL`` may name (at or below one of them;
commas or whitespace between; ``--prometheus-allowed-urls``, chart ``prometheus.allowedURLs``);
unset or empty, any. The operator's own ``--prometheus-url`` is always allowed."""
PROMETHEUS_TIMEOUT_S = 5.0
"""Per query to Prometheus, the whole answer (not each read): a slower answer holds the pool's last
decision."""


@dataclass(frozen=True)
class MetricsNote:
    """What the pool's MetricsAvailable condition should say."""

    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class ScalingOutcome:
    plans: dict[str, ReplicaPlan]
    metrics: MetricsNote | None  # None: keep the condition as it is (no decision this pass)
    scaled: list[str] = field(default_factory=list)  # one line per scaling action, for Events
    next_decision_in: float | None = None


GpuPoolSharing = Literal["namespace", "cluster"]
GPU_POOL_SHARING_MODES: tuple[GpuPoolSharing, ...] = ("namespace", "cluster")
GPU_POOL_SHARING_ENV = "MODELPOOL_GPU_POOL_SHARING"
"""Who shares a named GPU pool (``spec.gpuPool.name``): ``namespace`` (the default) only the pools
of one namespace; ``cluster`` the pools of every watched namespace, which trusts every namespace's
authors with the others' budget (``--gpu-pool-sharing``, chart ``gpuPoolSharing``)."""


def gpu_pool_sharing_from_env(environ: Mapping[str, str] | None = None) -> GpuPoolSharing:
    """The operator's ``$MODELPOOL_GPU_POOL_SHARING``; anything but ``cluster`` is ``namespace``
    (the operator refuses to start with a value that is neither: ``startup.config_problems``)."""
    value = (os.environ if environ is None else environ).get(GPU_POOL_SHARING_ENV)
    return "cluster" if value == "cluster" else "namespace"


@dataclass(frozen=True)
class GpuPoolMember:
    """A ModelPool on a shared GPU pool (``spec.gpuPool.name``), as the operator's index sees it."""

    pool: str  # "namespace/name"
    budget: int  # its spec.gpuPool.gpuBudget
    held_gpus: int  # GPUs its variants hold: status desiredReplicas (else minReplicas) x gpusPerReplica
    min_gpus: int = 0  # GPUs its minReplicas need


def gpu_pool_member(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, GpuPoolMember] | None:
    """The index entry of one ModelPool (``{gpu pool name: member}``), None unless it names a GPU
    pool. Reads the raw object leniently: an invalid spec is the pool reconciler's to report."""
    gpu_pool = spec.get("gpuPool") or {}
    shared = gpu_pool.get("name")
    if not isinstance(shared, str) or not shared:
        return None
    variants = {v.get("name"): v for v in spec.get("variants") or [] if isinstance(v, Mapping)}
    desired = {
        v.get("name"): v.get("desiredReplicas")
        for v in (status or {}).get("variants") or []
        if isinstance(v, Mapping)
    }
    try:
        held = minimum = 0
        for variant_name, floor in _raw_floors(variants).items():
            gpus = int(variants[variant_name].get("gpusPerReplica", 1))
            replicas = desired.get(variant_name)
            held += (replicas if _is_count(replicas) else floor) * gpus
            minimum += floor * gpus
        budget = int(gpu_pool.get("gpuBudget", 0))
    except (TypeError, ValueError):
        return None  # not a valid spec: the pool holds and says so, and claims no share meanwhile
    return {shared: GpuPoolMember(f"{namespace}/{name}", budget, held, minimum)}


def _raw_floors(variants: Mapping[Any, Mapping[str, Any]]) -> dict[Any, int]:
    """Each variant's floor, read from the raw spec: its minReplicas within ``serving_floors``
    (in tier order, as :func:`tier_order`; an unknown tier last). Raises TypeError or ValueError
    on values no valid spec has."""
    ordered = sorted(
        variants.items(),
        key=lambda kv: (
            TIER_ORDER.get(str(kv[1].get("tier")), len(TIER_ORDER)),
            int(kv[1].get("cost", 1)),
            str(kv[0]),
        ),
    )
    floors = serving_floors([int(v.get("minReplicas", 1)) for _, v in ordered])
    return {variant_name: floor for (variant_name, _), floor in zip(ordered, floors, strict=True)}


def _is_count(value: object) -> TypeGuard[int]:
    """A replica count as the operator writes it: an int (not a bool), never negative. A status
    edited by hand may hold anything; the variant's floor counts instead."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def tier_order(spec: ModelPoolSpec) -> list[Variant]:
    """Variants cheapest first; the last one is the final fallback tier."""
    return sorted(spec.variants, key=lambda v: (TIER_ORDER[v.tier], v.cost, v.name))


def settings_for(
    variant: Variant, profile_capacity: float | None = None, routed_latency_slo_s: float | None = None
) -> VariantSettings:
    """The scaler's settings for one variant. ``routed_latency_slo_s`` (the routing policies' SLO
    for the pool) is the latency target where the variant sets no ``targetLatencyMs``."""
    s = variant.scaling
    capacity = float(s.capacity_per_replica_rps) if s.capacity_per_replica_rps else profile_capacity
    return VariantSettings(
        name=variant.name,
        min_replicas=variant.min_replicas,
        max_replicas=variant.max_replicas,
        gpus_per_replica=variant.gpus_per_replica,
        capacity_per_replica_rps=capacity,
        target_queue_time_s=s.target_queue_time_ms / 1000,
        backlog_drain_s=s.target_queue_time_ms / 1000,  # what waits should leave within the target
        latency_target_s=s.target_latency_ms / 1000
        if s.target_latency_ms is not None
        else routed_latency_slo_s,
        scale_up_stabilization_s=float(s.scale_up_stabilization_seconds),
        scale_down_stabilization_s=float(s.scale_down_stabilization_seconds),
        tolerance=s.tolerance_percent / 100,
        scale_to_zero=s.scale_to_zero,
        lookahead_s=float(s.lookahead_seconds),
        trend_window_s=float(s.trend_window_seconds),
        burst_reserve=s.burst_reserve,
        burst_memory_s=float(s.burst_memory_seconds),
        priority=float(variant.priority + 1),
        cost=float(variant.cost),
    )


MAX_CLOCK_SKEW_S = 60.0
"""How far in the future a stored recommendation may lie (another operator's clock) before it is
dropped: one from the future would stay in every scale-down window and pin its replicas."""


def restored_states(previous: ModelPoolStatus | None, now: float | None = None) -> dict[str, VariantState]:
    """Per variant, the scaler's state kept in the pool's status (empty without one); with ``now``,
    without recommendations dated later than ``now + MAX_CLOCK_SKEW_S`` (logged)."""
    if previous is None:
        return {}
    states = {
        v.name: state_from_memory(v.scaler, v.desired_replicas)
        for v in previous.variants
        if v.scaler is not None
    }
    return states if now is None else {k: _without_future(k, s, now) for k, s in states.items()}


def _without_future(name: str, state: VariantState, now: float) -> VariantState:
    kept = tuple((t, r) for t, r in state.recommendations if t <= now + MAX_CLOCK_SKEW_S)
    if len(kept) == len(state.recommendations):
        return state
    logger.warning(
        "variant %s: ignored %d stored recommendation(s) dated more than %gs after now (%.0f)",
        name,
        len(state.recommendations) - len(kept),
        MAX_CLOCK_SKEW_S,
        now,
    )
    return replace(state, recommendations=kept)


def memory_from_state(state: VariantState) -> ScalerMemory:
    """The scaler's state as stored in the variant's status (open burst windows are left out:
    they span one look-ahead and are opened again by the next decisions)."""
    return ScalerMemory(
        decided_at=state.decided_at,
        last_demand_rps=max(0.0, state.last_demand_rps),
        recommendations=[ScalerRecommendation(t=t, replicas=r) for t, r in compact(state.recommendations)],
        bursts_updated_at=state.bursts.updated_at,
        burst_requests=state.bursts.arrivals,
        burst_late=[BurstLate(extra_replicas=k, requests=n) for k, n in state.bursts.late],
        capacity_per_replica_rps=state.capacity_rps,
    )


def state_from_memory(memory: ScalerMemory, replicas: int) -> VariantState:
    """The scaler's state rebuilt from a variant's status, after an operator restart."""
    return VariantState(
        replicas=replicas,
        decided_at=memory.decided_at,
        recommendations=tuple((r.t, r.replicas) for r in memory.recommendations),
        last_demand_rps=memory.last_demand_rps,
        bursts=(
            BurstHistory()  # written by an operator before the replay: learn anew
            if memory.burst_shortfalls
            else BurstHistory(
                updated_at=memory.bursts_updated_at,
                arrivals=memory.burst_requests,
                late=tuple((b.extra_replicas, b.requests) for b in memory.burst_late),
            )
        ),
        capacity_rps=memory.capacity_per_replica_rps,
    )


def expected_overflow(spec: ModelPoolSpec, previous: ModelPoolStatus | None) -> dict[str, float]:
    """Load routing is about to move up a tier: each short variant's shortfall lands on the next tier.

    A negative shortfall (a status edited by hand) counts as none: it would take load off the next
    tier that routing never moves, and scale it down."""
    ordered = tier_order(spec)
    short = {v.name: v.capacity_shortfall_rps for v in (previous.variants if previous else [])}
    extra = {v.name: 0.0 for v in ordered}
    for i, variant in enumerate(ordered[:-1]):
        extra[ordered[i + 1].name] += max(0.0, float(short.get(variant.name, 0)))  # never negative
    return extra


def serving_plans(spec: ModelPoolSpec, plans: Mapping[str, ReplicaPlan]) -> dict[str, ReplicaPlan]:
    """``plans`` within the floor every decision keeps (``decide.serving_floors``): when every
    variant's minReplicas is 0, the last tier (the final fallback) runs at least one replica. A
    ``scaleToZero`` variant planned at 0 (a decision scaled the idle tier to zero) has the floor 0
    a decision gives it, so that its minReplicas does not put it back up between decisions."""
    ordered = tier_order(spec)
    kept = dict(plans)
    floors = serving_floors([_floor(v, kept.get(v.name)) for v in ordered])
    for variant, floor in zip(ordered, floors, strict=True):
        plan = kept.get(variant.name)
        if plan is not None and plan.replicas < floor:
            kept[variant.name] = replace(plan, replicas=floor, reason=f"{plan.reason}; {LAST_TIER_SERVING}")
    return kept


def _floor(variant: Variant, plan: ReplicaPlan | None) -> int:
    return variant.min_replicas if plan is None else plan_floor(variant, plan.replicas)


def minimum_plans(spec: ModelPoolSpec, reason: str) -> dict[str, ReplicaPlan]:
    """Every variant at its minReplicas, within :func:`serving_plans`."""
    return serving_plans(spec, {v.name: ReplicaPlan(v.min_replicas, reason) for v in spec.variants})


def settings_problem(settings: Iterable[VariantSettings]) -> str | None:
    """The first setting the scaler refuses (its ``SettingsError``, naming the field and the fix),
    or None."""
    for one in settings:
        try:
            one.validate()
        except SettingsError as err:
            return str(err)
    return None


def scaled_lines(decision: PoolDecision, before: Mapping[str, ReplicaPlan]) -> list[str]:
    """One line per variant this decision scales, for the Scaled Events: its Deployment is not at
    the desired count and the count differs from the previous decision (``before``). A Deployment
    that does not converge, or a hold above the current count, repeats the previous decision at
    every decision and is reported once."""
    return [
        f"{v.name} {v.current_replicas}->{v.desired_replicas}: {v.reason}"
        for v in decision.variants
        if v.changed and (v.name not in before or before[v.name].replicas != v.desired_replicas)
    ]


@dataclass(frozen=True)
class LastDecision:
    """A pool's latest decision in this planner: its plans and when it was made, on two clocks."""

    plans: dict[str, ReplicaPlan]
    decided_at: float
    """Wall clock (Unix seconds), as the stored status' ``decidedAt``, which it is compared with."""
    paced_at: float
    """Pacing clock (``time.monotonic()``): when the next decision is due. A wall clock stepped
    back (NTP, a VM restored) would otherwise hold every pass for as long as it went back."""


def _drop_member(by_gpu_pool: dict[str, dict[str, Any]], pool: str, keep: str | None = None) -> None:
    """Remove ``pool`` from every shared GPU pool's map but ``keep``'s, and the maps it leaves empty
    (a GPU pool whose last member is gone is not kept either)."""
    for gpu_pool in list(by_gpu_pool):
        if gpu_pool == keep:
            continue
        by_gpu_pool[gpu_pool].pop(pool, None)
        if not by_gpu_pool[gpu_pool]:
            del by_gpu_pool[gpu_pool]


def looks_stale(metrics: VariantMetrics, settings: VariantSettings, now: float) -> bool:
    """Whether the newest sample is older than the staleness limit by the operator's clock ``now``
    (where it is worth asking Prometheus' clock: :func:`prometheus_time`)."""
    newest = metrics.newest_sample_t
    return metrics.problem is None and newest is not None and now - newest > stale_after_s(metrics, settings)


async def prometheus_time(reader: PrometheusReader) -> float | None:
    """Prometheus' clock (its ``time()``), or None when it does not answer. Asked once per
    decision, and only when a variant's metrics look stale by the operator's clock: a clock ahead
    of Prometheus' makes every sample look old, which the hold reason then says."""
    try:
        return await reader.scalar("time()")
    except (PrometheusError, ValueError):
        return None


def partial_note(inputs: Iterable[VariantInput], now: float) -> str:
    """What the MetricsAvailable condition says of the variants decided on a partial Triton scrape
    (:func:`modelpool.scaling.demand.partial_scrape`: never scaled down meanwhile), ending in
    ``"; "``; empty when there are none. No hold: their metrics still scale them up."""
    partial = [
        f"{vi.settings.name}: {problem}"
        for vi in inputs
        if (problem := partial_scrape(vi.metrics, vi.settings, now)) is not None
    ]
    if not partial:
        return ""
    which = "it until its targets are" if len(partial) == 1 else "them until their targets are"
    return f"{'; '.join(partial)}; no scale-down for {which} all scraped; "


@dataclass
class ScalingPlanner:
    """One per operator; remembers decision state per pool across reconcile passes."""

    default_prometheus_url: str | None = field(default_factory=lambda: os.environ.get(PROMETHEUS_URL_ENV))
    extra_matchers: str = field(default_factory=lambda: os.environ.get(EXTRA_MATCHERS_ENV, ""))
    allowed_prometheus_urls: tuple[str, ...] = field(
        default_factory=lambda: allowed_urls_from(os.environ.get(PROMETHEUS_ALLOWED_URLS_ENV, ""))
    )
    """Where a pool's ``spec.scaling.prometheusURL`` may point (see :meth:`prometheus_url_allowed`);
    empty, anywhere."""
    _states: dict[tuple[str, str], dict[str, VariantState]] = field(default_factory=dict)
    _readers: dict[tuple[str, int, float, QueryTemplates], PrometheusReader] = field(default_factory=dict)
    _reader_of: dict[tuple[str, str], tuple[str, int, float, QueryTemplates]] = field(default_factory=dict)
    """The reader configuration each pool (namespace, name) reads with: a configuration no pool
    uses any more is dropped, so readers do not pile up as pools and their Prometheus URLs come
    and go."""
    _http: httpx.AsyncClient | None = None
    """One HTTP client (and connection pool) for every reader: a reader per pool configuration
    with a client of its own kept sockets open for every configuration ever seen."""
    members: Callable[[str], Iterable[GpuPoolMember]] = lambda _gpu_pool: ()
    """The ModelPools on a shared GPU pool (the operator sets it to read its index of pools)."""
    gpu_pool_sharing: GpuPoolSharing = field(default_factory=gpu_pool_sharing_from_env)
    """``namespace``: a pool shares its named GPU pool only with the members of its own namespace
    (the others are neither counted nor named); ``cluster``: with every member."""
    monotonic: Callable[[], float] = time.monotonic
    """The pacing clock (see ``LastDecision.paced_at``)."""
    _claims: dict[str, dict[str, tuple[Claim, ...]]] = field(default_factory=dict)
    _last: dict[tuple[str, str], LastDecision] = field(default_factory=dict)
    """Each pool's latest decision, which paces the next one and which the passes until then keep
    when the stored status does not show it yet: a pass that applied a decision and failed
    before writing the status (or whose status write was refused) is retried within the interval,
    and the retry must not apply the older decision the status still holds."""
    _granted: dict[str, dict[str, int]] = field(default_factory=dict)
    """GPUs each pool's latest decision granted, per shared GPU pool (``namespace/name`` keys).

    The index of pools learns a decision only once its status is written and watched back; a
    pool deciding in between would count the other at its old size and take the same free GPUs.
    A decision is recorded here before the pass yields to any other (no ``await`` between reading
    what the others hold and recording the grant), and a pool counts another at the larger of the
    two."""

    def reader(self, url: str, spec: ModelPoolSpec, pool: tuple[str, str] | None = None) -> PrometheusReader:
        """One reader per Prometheus, rate window, series span and queries.

        The series step is a quarter of the rate window: Prometheus' rule of thumb is a rate window of
        four scrape intervals, so the step is about one scrape (one point per scrape, as the
        benchmark reads them). With ``rate()`` queries neighbouring points' windows then overlap by
        three quarters: the trend test counts that overlap (the reader reports the window), the
        burstiness index does not and reads low (docs/scaling.md, Limitations); with ``irate`` each
        point counts one scrape and nothing overlaps. The series hold at least eight points (the burstiness
        index is taken over all of them) and reach back over the longest trend window and one
        look-ahead plus two steps: the burst reserve counts the arrivals of the last look-ahead from
        them. The benchmark's series follow the same rule.

        The pool declares no scrape interval, but its rate window must hold two scrapes
        (``rateWindowSeconds``: at least twice the scrape interval), so a scrape may take up to half
        the window: with the step, that is how old a healthy sample may be
        (:func:`modelpool.scaling.demand.stale_after_s`).
        """
        scaling = spec.scaling
        overrides = {k: v for k, v in scaling.queries.model_dump().items() if v is not None}
        templates = replace(QueryTemplates(), **overrides)
        rate_window_s = scaling.rate_window_seconds
        step_s = rate_window_s / 4
        lookahead_s = max((v.scaling.lookahead_seconds for v in spec.variants), default=0)
        trend_s = max((v.scaling.trend_window_seconds for v in spec.variants), default=0)
        span_s = max(8 * step_s, trend_s + step_s, lookahead_s + 2 * step_s)
        key = (url, rate_window_s, span_s, templates)
        if pool is not None and self._reader_of.get(pool) != key:
            self._release_reader(pool)
            self._reader_of[pool] = key
        if key not in self._readers:
            if self._http is None:
                # No redirects: a redirect would lead past the allowlist of Prometheus URLs.
                self._http = httpx.AsyncClient(timeout=PROMETHEUS_TIMEOUT_S, follow_redirects=False)
            self._readers[key] = PrometheusReader(
                url,
                templates=templates,
                rate_window_s=rate_window_s,
                series_span_s=span_s,
                step_s=step_s,
                timeout_s=PROMETHEUS_TIMEOUT_S,  # the whole query; the client's is per read
                client=self._http,
                scrape_interval_s=rate_window_s / 2,
            )
        return self._readers[key]

    def prometheus_url_allowed(self, url: str) -> bool:
        """Whether the operator may ask ``url`` (a pool's ``spec.scaling.prometheusURL``): with no
        allowlist, any URL; else one at or below an entry of it or of the operator's own
        ``--prometheus-url`` (:func:`modelpool.scaling.prometheus_reader.url_allowed`)."""
        if not self.allowed_prometheus_urls:
            return True
        own = (self.default_prometheus_url,) if self.default_prometheus_url else ()
        return url_allowed(url, (*self.allowed_prometheus_urls, *own))

    def _release_reader(self, pool: tuple[str, str]) -> None:
        """The pool no longer reads with its reader: drop the reader unless another pool does."""
        key = self._reader_of.pop(pool, None)
        if key is not None and key not in self._reader_of.values():
            self._readers.pop(key, None)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def forget(self, namespace: str, name: str) -> None:
        """Drop all that is kept of a pool that is gone, or whose scaling is switched off, its
        metric series included: switched on again, it starts afresh, as in a new operator."""
        scaling_metrics.forget_pool(namespace, name)
        self._states.pop((namespace, name), None)
        self._last.pop((namespace, name), None)
        self._release_reader((namespace, name))
        self._drop_grant(namespace, name)

    def _drop_grant(self, namespace: str, name: str, keep: str | None = None) -> None:
        """Forget the pool's latest claims and what its decision granted (see ``_granted``): a pool
        that no longer decides claims nothing beyond its minimums, which the index counts. With
        ``keep`` (the shared GPU pool it names now), only on the GPU pools it left: moved back to
        one later, its old claims and grant would count until its next decision there."""
        _drop_member(self._claims, f"{namespace}/{name}", keep)
        _drop_member(self._granted, f"{namespace}/{name}", keep)

    def _held(
        self,
        key: tuple[str, str],
        spec: ModelPoolSpec,
        previous: ModelPoolStatus | None,
        held: dict[str, ReplicaPlan],
    ) -> dict[str, ReplicaPlan]:
        """The plans of a pass between decisions: ``held`` (the decision in the stored status),
        unless this planner's latest decision is newer than the stored status (see ``_last``).
        A status another operator wrote after that decision (a change of leader) is newer and wins.
        Either way within :func:`serving_plans`."""
        last = self._last.get(key)
        if last is None:
            return serving_plans(spec, held)
        stored = [v.scaler.decided_at for v in (previous.variants if previous else []) if v.scaler]
        if stored and max(stored) >= last.decided_at:
            return serving_plans(spec, held)
        plans = last.plans
        kept = {v.name: hold(v, plans[v.name]) if v.name in plans else held[v.name] for v in spec.variants}
        return serving_plans(spec, kept)

    def _due_in(self, key: tuple[str, str], paced: float, interval: float) -> float:
        """Seconds until the pool's next decision is due (0 or less: now). A pacing clock behind
        the last decision (a caller's clock stepped back) counts as due."""
        last = self._last.get(key)
        if last is None:
            return 0.0
        since = paced - last.paced_at
        return 0.0 if since < 0 else interval - since

    def _other_members(self, namespace: str, name: str, gpu_pool: str) -> list[GpuPoolMember]:
        """The other members of the pool's shared GPU pool: with :attr:`gpu_pool_sharing`
        ``namespace``, only those of its namespace (the GPU pool is ``namespace/gpuPool.name``),
        so that no other namespace lowers its budget, holds its GPUs or is named in its status."""
        key = f"{namespace}/{name}"
        same_namespace = f"{namespace}/"
        return sorted(
            (
                m
                for m in self.members(gpu_pool)
                if m.pool != key and (self.gpu_pool_sharing == "cluster" or m.pool.startswith(same_namespace))
            ),
            key=lambda m: m.pool,
        )

    def shared_gpu_pool(self, namespace: str, name: str, spec: ModelPoolSpec) -> SharedGpuPool | None:
        """What the other members of the pool's shared GPU pool (:meth:`_other_members`) bring to
        its budget: the smallest budget any member declares, and their minimums' GPUs."""
        if not spec.gpu_pool.name:
            return None
        others = self._other_members(namespace, name, spec.gpu_pool.name)
        budget = min([spec.gpu_pool.gpu_budget, *(m.budget for m in others)])
        return SharedGpuPool(budget, sum(m.min_gpus for m in others))

    def _scaling_input(
        self, namespace: str, name: str, spec: ModelPoolSpec, variants: tuple[VariantInput, ...]
    ) -> tuple[ScalingInput, str]:
        """The scaler's input for this pool, and the pool's name in it.

        On a shared GPU pool the pool is named ``namespace/name`` (with ``cluster`` sharing, pools
        of several namespaces share it) and brings the latest claims of the other members
        (:meth:`_other_members`, from their own passes) and
        the GPUs they hold: the larger of what the index of pools shows (so also right after a
        restart) and what their latest decision in this operator granted (which the index may not
        show yet). The budget is the smallest any member declares.
        """
        gpu_pool = spec.gpu_pool.name
        pool_budget = self.shared_gpu_pool(namespace, name, spec)
        if not gpu_pool or pool_budget is None:
            pool = PoolInput(name=name, variants=variants)
            return ScalingInput.single(pool, spec.gpu_pool.gpu_budget), name
        key = f"{namespace}/{name}"
        others = self._other_members(namespace, name, gpu_pool)
        known = self._claims.get(gpu_pool, {})
        granted = self._granted.get(gpu_pool, {})
        shared = SharedBudget(
            other_claims=tuple(c for m in others for c in known.get(m.pool, ())),
            held_gpus=sum(max(m.held_gpus, granted.get(m.pool, 0)) for m in others),
            members=tuple(m.pool for m in others),
        )
        pool = PoolInput(name=key, variants=variants, gpu_pool=gpu_pool)
        return ScalingInput((pool,), {gpu_pool: pool_budget.budget}, {gpu_pool: shared}), key

    async def plan(
        self,
        namespace: str,
        name: str,
        spec: ModelPoolSpec,
        previous: ModelPoolStatus | None,
        current: Mapping[str, int],
        held: dict[str, ReplicaPlan],
        profile_capacity: Mapping[str, float] | None = None,
        now: float | None = None,
        ready: Mapping[str, int] | None = None,
        routed_latency_slo: Callable[[], Awaitable[float | None]] | None = None,
        paced: float | None = None,
    ) -> ScalingOutcome:
        """Plans for this pass: a fresh decision when one is due, else ``held``.

        ``ready`` holds each Deployment's ready replicas (what really served, for the burst reserve);
        ``routed_latency_slo`` reads the routing policies' latency SLO for the pool (see
        settings_for), called only when a decision is made and some variant sets no targetLatencyMs.
        ``now`` is the wall clock of the decision (Unix seconds, the clock of the metrics' and the
        stored memory's timestamps; default ``time.time()``); ``paced`` is the pacing clock's
        reading (default ``self.monotonic()``, or ``now`` where the caller gives only that: a
        replay or a test drives one clock).
        """
        key = (namespace, name)
        clock = time.time() if now is None else now
        if paced is None:
            paced = self.monotonic() if now is None else now
        self._drop_grant(namespace, name, keep=spec.gpu_pool.name or None)  # GPU pools it left
        if not spec.scaling.enabled:
            # At its minimums: the index counts it from now on, a decision made before is no longer
            # held, no gauges that lie, and switched on again it starts afresh (no old memory).
            self.forget(namespace, name)
            return ScalingOutcome(
                minimum_plans(spec, "scaling disabled: minReplicas"),
                MetricsNote(
                    True, "ScalingDisabled", "spec.scaling.enabled is false; replicas stay at minReplicas"
                ),
            )
        url = spec.scaling.prometheus_url or self.default_prometheus_url
        if not url:
            return ScalingOutcome(
                serving_plans(spec, held),
                MetricsNote(
                    False,
                    "PrometheusNotConfigured",
                    "no Prometheus to read: set spec.scaling.prometheusURL or the operator's "
                    "--prometheus-url; replicas hold their last decision",
                ),
            )
        interval = float(spec.scaling.interval_seconds)
        due_in = self._due_in(key, paced, interval)
        if due_in > 0:
            return ScalingOutcome(self._held(key, spec, previous, held), None, next_decision_in=due_in)
        if spec.scaling.prometheus_url and not self.prometheus_url_allowed(spec.scaling.prometheus_url):
            return self._not_allowed(key, spec, previous, held, spec.scaling.prometheus_url, interval)

        reader = self.reader(url, spec, key)
        needs_routed_slo = any(v.scaling.target_latency_ms is None for v in spec.variants)
        routed_latency_slo_s = (
            await routed_latency_slo() if routed_latency_slo is not None and needs_routed_slo else None
        )
        capacities = profile_capacity or {}
        settings = {
            v.name: settings_for(v, capacities.get(v.name), routed_latency_slo_s) for v in spec.variants
        }
        problem = settings_problem(settings.values())
        if problem is not None:
            return self._refused(key, spec, previous, held, problem, interval)
        states = self._states.get(key) or restored_states(previous, clock)
        extra = expected_overflow(spec, previous)
        inputs = []
        theirs: list[float | None] = []  # Prometheus' clock, asked at most once per decision
        for variant in tier_order(spec):
            metrics: VariantMetrics = await reader.read_variant(
                VariantTarget(
                    pool=name,
                    namespace=namespace,
                    model=variant.model.name,
                    variant=variant.name,
                    extra_matchers=self.extra_matchers,
                    ready_replicas=(ready or {}).get(variant.name),  # to tell a partial Triton scrape
                )
            )
            if looks_stale(metrics, settings[variant.name], clock):
                if not theirs:
                    theirs.append(await prometheus_time(reader))
                metrics = replace(metrics, prometheus_now=theirs[0])
            inputs.append(
                VariantInput(
                    settings=settings[variant.name],
                    metrics=metrics,
                    current_replicas=current.get(variant.name, held[variant.name].replicas),
                    previous=states.get(variant.name),
                    expected_extra_rps=extra[variant.name],
                    ready_replicas=(ready or {}).get(variant.name),
                )
            )
        scaling_input, pool_name = self._scaling_input(namespace, name, spec, tuple(inputs))
        decision = decide(scaling_input, clock)
        pool_decision = decision.pools[pool_name]
        if spec.gpu_pool.name:  # recorded before any await: see _granted
            self._claims.setdefault(spec.gpu_pool.name, {})[pool_name] = decision.claims[spec.gpu_pool.name]
            gpus = {v.name: v.gpus_per_replica for v in spec.variants}
            self._granted.setdefault(spec.gpu_pool.name, {})[pool_name] = sum(
                v.desired_replicas * gpus[v.name] for v in pool_decision.variants
            )
        scaling_metrics.record_pool(namespace, name, pool_decision)
        before = self._held(key, spec, previous, held)  # the previous decision, for the Events
        self._states[key] = {v.name: v.state for v in pool_decision.variants if v.state is not None}
        plans = {
            v.name: ReplicaPlan(
                v.desired_replicas,
                v.reason,
                round(v.shortfall_rps),
                memory=memory_from_state(v.state) if v.state is not None else None,
            )
            for v in pool_decision.variants
        }
        self._last[key] = LastDecision(plans, clock, paced)
        scaled = scaled_lines(pool_decision, before)
        if pool_decision.metrics_held:
            note = MetricsNote(
                False, "MetricsUnavailable", f"holding the last decision: {pool_decision.held_reason}"
            )
        else:
            routed = (
                f"; variants without targetLatencyMs plan for the RoutingPolicies' latency SLO "
                f"{routed_latency_slo_s:g}s"
                if routed_latency_slo_s is not None
                else ""
            )
            partial = partial_note(inputs, clock)
            note = MetricsNote(
                True,
                "MetricsPartial" if partial else "MetricsFresh",
                f"decided from {url}{routed}; {partial}{pool_decision.budget_message}",
            )
        return ScalingOutcome(plans, note, scaled, next_decision_in=interval)

    def _not_allowed(
        self,
        key: tuple[str, str],
        spec: ModelPoolSpec,
        previous: ModelPoolStatus | None,
        held: dict[str, ReplicaPlan],
        url: str,
        interval: float,
    ) -> ScalingOutcome:
        """A pass whose ``spec.scaling.prometheusURL`` is outside the operator's allowlist: it is
        not asked (no request leaves for it), no decision, the replicas hold, and the
        MetricsAvailable condition names the field and the setting (checked again at every
        interval: a fixed URL is picked up)."""
        self._release_reader(key)
        logger.debug("pool %s/%s: prometheusURL %s is not allowed", *key, url)
        note = MetricsNote(
            False,
            "MetricsUnavailable",
            f"metrics unavailable: spec.scaling.prometheusURL {url} is not among the Prometheus URLs "
            "the operator may ask (--prometheus-allowed-urls, chart value prometheus.allowedURLs): "
            "name one of them, or unset the field to read the operator's Prometheus; replicas hold "
            "their last decision",
        )
        return ScalingOutcome(self._held(key, spec, previous, held), note, next_decision_in=interval)

    def _refused(
        self,
        key: tuple[str, str],
        spec: ModelPoolSpec,
        previous: ModelPoolStatus | None,
        held: dict[str, ReplicaPlan],
        problem: str,
        interval: float,
    ) -> ScalingOutcome:
        """A pass whose settings the scaler refuses: no decision, the replicas hold, and the
        MetricsAvailable condition names the field and the fix (checked again at every interval,
        so a profile or RoutingPolicy that changes is picked up)."""
        logger.debug("pool %s/%s: scaling settings refused: %s", *key, problem)
        note = MetricsNote(
            False,
            "InvalidSettings",
            f"the scaler refuses the spec: {problem}; replicas hold their last decision until it is fixed",
        )
        return ScalingOutcome(self._held(key, spec, previous, held), note, next_decision_in=interval)
