"""The RoutingPolicy kind: how the sidecar routers split a pool's traffic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, JsonValue

from modelpool.api.base import (
    ApiModel,
    Conditions,
    DnsLabel,
    LabelValue,
    LocalObjectReference,
    SecretKeyReference,
    cel,
    check_label_keys,
    label_keys_rule,
    with_rules,
)

Mode = Literal["weighted", "tiered", "cascade"]
CASCADE_TARGET = "cascade"
MAX_LISTED_ROUTERS = 50
"""Routers listed in ``status.routers`` (those not programmed first); the rest are only counted,
so the status of a policy selecting thousands of pods stays far below the API's object size limit."""


POOL_REF_IMMUTABLE: dict[str, JsonValue] = dict(
    cel(
        "self == oldSelf",
        "spec.poolRef is immutable: the routers a policy programs serve one pool for their whole "
        "life; to route another pool, create a new RoutingPolicy for it and point its "
        "spec.routerSelector at router pods of that pool (or restart the routers)",
    )
)


class VariantWeight(ApiModel):
    """A static share of traffic for one variant."""

    variant: DnsLabel = Field(description="Name of a variant of the referenced pool.")
    weight: int = Field(ge=0, le=1_000_000, description="Relative share; 0 sends nothing.")


class TierRoute(ApiModel):
    """Requests up to a complexity go to one variant, or through the cascade."""

    max_complexity_percent: int = Field(
        ge=0, le=100, description="Requests whose complexity score (0-100) is at most this use target."
    )
    target: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A variant name, or `cascade` to run the cascade for this band.",
    )


class ComplexityScorer(ApiModel):
    """Which complexity scorer the router runs."""

    model_config = with_rules(
        cel(
            "!has(self.kind) || self.kind != 'torch' || has(self.path)",
            "a torch scorer needs path: the scorer file inside the router container",
            field_path=".path",
            reason="FieldValueRequired",
        ),
    )

    kind: Literal["heuristic", "torch"] = Field(
        default="heuristic", description="heuristic (fast, built in) or torch (a trained scorer file)."
    )
    path: str | None = Field(default=None, max_length=1024, description="Scorer file for kind torch.")


class TieredRouting(ApiModel):
    """Complexity bands, in ascending order, the last one ending at 100."""

    model_config = with_rules(
        cel(
            "self.tiers.map(t, t.maxComplexityPercent).isSorted() && "
            "self.tiers.all(a, self.tiers.exists_one(b, b.maxComplexityPercent == a.maxComplexityPercent))",
            "tiers must be in strictly ascending order of maxComplexityPercent",
            field_path=".tiers",
        ),
        cel(
            "self.tiers[size(self.tiers) - 1].maxComplexityPercent == 100",
            "the last tier must have maxComplexityPercent 100 so every request has a target",
            field_path=".tiers",
        ),
    )

    scorer: ComplexityScorer = Field(default_factory=ComplexityScorer)
    tiers: list[TierRoute] = Field(
        min_length=1,
        max_length=8,
        description="Complexity bands in ascending order, the last ending at 100; each names the variant "
        "(or cascade) that answers it.",
    )


class CascadeRouting(ApiModel):
    """The draft answers; below the confidence threshold the verifier answers."""

    model_config = with_rules(
        cel(
            "self.draft != self.verifier",
            "draft and verifier must be different variants",
            field_path=".verifier",
        ),
    )

    draft: DnsLabel = Field(description="Variant that answers first (usually the small one).")
    verifier: DnsLabel = Field(description="Variant that answers when the draft is unsure.")
    accept_threshold_percent: int = Field(
        default=70,
        ge=1,
        le=100,
        description="The draft's answer is kept when its top class probability, in percent, "
        "is at least this.",
    )


class Objectives(ApiModel):
    """What the policy should achieve; the controller adjusts weights towards it."""

    latency_slo_ms: int | None = Field(
        default=None, alias="latencySLOMs", ge=1, le=600_000, description="p95 latency target."
    )
    max_large_share_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Cap on the share of the weights the large tier gets (weighted mode); the excess moves to"
            " the other variants. Not applied while no other variant meets qualityFloorPercent (the"
            " reason says so)."
        ),
    )
    quality_floor_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Least profiled accuracy (percent) a variant needs to take overflow from another.",
    )


class LabelSelector(ApiModel):
    """Selects router pods by labels."""

    match_labels: Annotated[dict[str, LabelValue], AfterValidator(check_label_keys)] = Field(
        min_length=1,
        max_length=16,
        description="Labels the router pods carry (label keys and values).",
        json_schema_extra={"x-kubernetes-validations": [label_keys_rule("matchLabels")]},
    )


class RoutingPolicySpec(ApiModel):
    """Desired routing for a pool."""

    model_config = with_rules(
        cel(
            "self.mode != 'weighted' || (has(self.weights) && self.weights.exists(w, w.weight > 0))",
            "mode weighted needs spec.weights with at least one weight above 0",
            field_path=".weights",
            reason="FieldValueRequired",
        ),
        cel(
            "self.mode != 'tiered' || has(self.tiered)",
            "mode tiered needs spec.tiered (scorer and tiers)",
            field_path=".tiered",
            reason="FieldValueRequired",
        ),
        cel(
            "self.mode != 'cascade' || has(self.cascade)",
            "mode cascade needs spec.cascade (draft, verifier, acceptThresholdPercent)",
            field_path=".cascade",
            reason="FieldValueRequired",
        ),
        cel(
            "!has(self.tiered) || !self.tiered.tiers.exists(t, t.target == 'cascade') || has(self.cascade)",
            "a tier with target cascade needs spec.cascade",
            field_path=".cascade",
            reason="FieldValueRequired",
        ),
    )

    pool_ref: LocalObjectReference = Field(
        description="The ModelPool whose variants this policy routes to. Immutable: a router serves "
        "one pool for its whole life.",
        json_schema_extra={"x-kubernetes-validations": [POOL_REF_IMMUTABLE]},
    )
    mode: Mode = Field(description="weighted, tiered (by input complexity) or cascade.")
    model_name: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Model name the routers expose to clients; defaults to the pool's name.",
    )
    weights: list[VariantWeight] = Field(
        default_factory=list,
        max_length=8,
        description="Static weights (mode weighted).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["variant"]},
    )
    tiered: TieredRouting | None = None
    cascade: CascadeRouting | None = None
    objectives: Objectives = Field(default_factory=Objectives)
    router_selector: LabelSelector = Field(description="Router pods this policy programs.")
    router_port: int = Field(default=8080, ge=1, le=65535, description="Router pods' HTTP port.")
    admin_token_secret_ref: SecretKeyReference | None = Field(
        default=None,
        description="Secret with the routers' admin token; unset uses <policy>-router-token. The token "
        "is sent only to selected pods that mount or reference this Secret (a secret or projected "
        "volume, an env secretKeyRef or an envFrom secretRef).",
    )


class EffectiveWeight(ApiModel):
    """A weight as programmed, with why it differs from the spec."""

    variant: str = Field(description="Name of a variant of the pool.")
    weight: int = Field(description="Weight the routers run.")
    reason: str = Field(default="", description="Why it differs from spec.weights (empty when it does not).")


class EffectiveTier(ApiModel):
    """A complexity band as programmed, with why its target differs from the spec."""

    max_complexity_percent: int = Field(description="Upper end of the band (0 to 100).")
    target: str = Field(description="The variant, or cascade, that answers the band.")
    reason: str = Field(
        default="", description="Why the target differs from the spec's (empty when it does not)."
    )


class RouterStatus(ApiModel):
    """What one router pod runs."""

    pod: str = Field(description="Name of the router pod.")
    generation: int = Field(default=0, description="Config generation the router runs.")
    programmed: bool = Field(default=False, description="Whether it runs weightsGeneration.")
    message: str = Field(default="", description="The last push's outcome.")


class RoutingPolicyStatus(ApiModel):
    """Observed state of a RoutingPolicy."""

    observed_generation: int = Field(default=0, description="metadata.generation this status describes.")
    weights_generation: int = Field(default=0, description="Generation of the config pushed to routers.")
    config_digest: str = Field(default="", description="Digest of the routers' config at weightsGeneration.")
    effective_weights: list[EffectiveWeight] = Field(
        default_factory=list,
        description="Weights as programmed after the pool's capacity and the objectives.",
    )
    effective_tiers: list[EffectiveTier] = Field(
        default_factory=list, description="Tiered mode's bands after the profiles' per-bucket accuracy."
    )
    routers: list[RouterStatus] = Field(
        default_factory=list,
        max_length=MAX_LISTED_ROUTERS,
        description=f"Up to {MAX_LISTED_ROUTERS} of the router pods the policy selects and what "
        "each runs: those not programmed first, then by name (routersSelected counts them all).",
    )
    routers_selected: int = Field(
        default=0, description="Router pods the policy selects (pods that ended are not counted)."
    )
    routers_programmed: int = Field(default=0, description="Of those, how many run weightsGeneration.")
    conditions: Conditions


class RoutingPolicy(ApiModel):
    """Routes a pool's requests to the cheapest variant that answers well."""

    spec: RoutingPolicySpec
    status: RoutingPolicyStatus | None = None
