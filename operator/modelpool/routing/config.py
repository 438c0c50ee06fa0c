"""The router's configuration: what the operator pushes and the mounted file holds.

A :class:`RouterConfig` is a complete description of one router's routing for one pool.
It is JSON/YAML with camelCase keys (``modelName``, ``tritonModel``, ``timeoutMs`` ...);
snake_case is accepted too.  Validation errors name the field (``cascade.draft``,
``variants.1.weight``, ``tiers``) and say how to fix it.

Example (YAML)::

    generation: 3
    pool: intents
    mode: tiered
    modelName: intents
    variants:
      - {name: small, tier: small, tritonModel: intents_small, cost: 1, weight: 80,
         endpoints: ["http://10.0.0.7:8000"], timeoutMs: 2000}
      - {name: large, tier: large, tritonModel: intents_large, cost: 20, weight: 20,
         endpointSlice: {service: intents-large, namespace: ml, port: http}}
    tiers:
      - {maxComplexity: 0.3, target: small}
      - {maxComplexity: 0.7, target: cascade}
      - {maxComplexity: 1.0, target: large}
    cascade: {draft: small, verifier: large, acceptThreshold: 0.7}
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

# One vocabulary with the CRDs: the operator renders RouterConfigs from them.
from modelpool.api.modelpool import Tier
from modelpool.api.routingpolicy import CASCADE_TARGET, Mode


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


class EndpointSliceSource(_Model):
    """Discover a variant's ready endpoints from the EndpointSlices of a Service."""

    service: str = Field(
        min_length=1, max_length=63, description="Service name (label kubernetes.io/service-name)."
    )
    namespace: str = Field(default="default", min_length=1, max_length=63)
    port: int | str = Field(default=8000, description="Port number, or the port's name in the EndpointSlice.")
    scheme: Literal["http"] = "http"


def _check_base_url(url: str) -> str:
    """An endpoint's base URL as the upstream client can use it: ``http://host[:port]``, the port
    in 1..65535.  Checked here, so a push with a typo gets a 422 naming the field instead of a
    variant that silently loses its endpoints when the router builds them."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:  # "Port out of range 0-65535", a port that is not a number, bad IPv6
        problem = str(err)
    else:
        if parts.scheme != "http" or not url.startswith("http://"):
            problem = "only http:// is supported"
        elif not parts.hostname:
            problem = "no host"
        elif port is not None and not 1 <= port <= 65535:
            problem = f"port {port} is not in 1..65535"
        else:
            return url
    raise ValueError(f"{url!r} is not an http:// base URL (e.g. http://10.0.0.7:8000): {problem}")


BaseUrl = Annotated[str, AfterValidator(_check_base_url)]


class VariantConfig(_Model):
    """One variant of the pool as the router sees it."""

    name: str = Field(min_length=1, max_length=63)
    tier: Tier
    triton_model: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    cost: float = Field(default=1.0, ge=0, description="Relative cost of one request (any unit).")
    weight: int = Field(default=0, ge=0, le=1_000_000, description="Share in weighted mode; 0 sends nothing.")
    endpoints: list[BaseUrl] = Field(
        default_factory=list, description="Static base URLs (pods or a Service URL)."
    )
    endpoint_slice: EndpointSliceSource | None = None
    timeout_ms: int = Field(default=5000, ge=1, le=600_000)

    @model_validator(mode="after")
    def _check_endpoints(self) -> VariantConfig:
        if not self.endpoints and self.endpoint_slice is None:
            raise ValueError("give endpoints (static URLs) or endpointSlice (a Service to watch)")
        return self


class CascadeConfig(_Model):
    """The draft answers; under ``accept_threshold`` confidence the verifier answers."""

    draft: str
    verifier: str
    accept_threshold: float = Field(default=0.7, gt=0, le=1)


class TierRoute(_Model):
    """Requests whose complexity is at most ``max_complexity`` go to ``target``."""

    max_complexity: float = Field(ge=0, le=1)
    target: str = Field(min_length=1, description="A variant name, or 'cascade'.")


BUILTIN_SCORER_FACTORY = "modelpool.models.scorer:load_scorer"
"""The factory that loads a torch scorer from ``path``, unless the router was started with another
(``--scorer-factory``).  Operators before the fix rendered it as ``scorer.factory`` in every config."""


class ScorerConfig(_Model):
    """Which complexity scorer tiered mode runs.

    Which code loads a torch scorer is no part of a config: a config arrives over the wire (the admin
    API, a ConfigMap), and one naming ``module:callable`` had the router import and call it.  Whoever
    deploys the router chooses the factory (``--scorer-factory``); a config may still name the
    built-in one (older operators rendered it), which changes nothing."""

    kind: Literal["heuristic", "torch"] = "heuristic"
    path: str | None = Field(default=None, description="Scorer file for kind torch.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_factory(cls, data: Any) -> Any:
        if isinstance(data, dict) and "factory" in data:
            if data["factory"] != BUILTIN_SCORER_FACTORY:
                raise ValueError(
                    f"factory: not accepted in a router config (it would name code for the router to run); "
                    f"leave it out: a torch scorer loads with {BUILTIN_SCORER_FACTORY}, and a custom scorer "
                    "factory is set where the router is deployed, with its --scorer-factory flag"
                )
            data = {k: v for k, v in data.items() if k != "factory"}
        return data

    @model_validator(mode="after")
    def _check_path(self) -> ScorerConfig:
        if self.kind == "torch" and not self.path:
            raise ValueError("path: a torch scorer needs the path of its scorer file")
        return self


class CacheConfig(_Model):
    """Response cache for identical requests (LRU bounded by entries and bytes, with a TTL)."""

    enabled: bool = False
    max_entries: int = Field(default=1024, ge=1, le=1_000_000)
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        le=64 * 1024 * 1024 * 1024,
        description="Bytes of cached responses (bodies and headers) the router keeps at most; the "
        "least recently used go first, and a response bigger than this is not cached.",
    )
    ttl_seconds: float = Field(default=60.0, gt=0, le=86_400)


class RetryConfig(_Model):
    """How many upstream attempts one request may make (see docs/router.md, failure semantics)."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    cross_variant: bool = Field(
        default=True, description="May a failed request be answered by another variant."
    )


class BreakerConfig(_Model):
    """Per-endpoint circuit breaker."""

    failure_threshold: int = Field(default=3, ge=1, le=1000, description="Consecutive failures that open it.")
    open_seconds: float = Field(default=1.0, gt=0, le=600, description="First wait before a probe.")
    max_open_seconds: float = Field(default=30.0, gt=0, le=3600)


class RouterConfig(_Model):
    """Everything one router needs to route one pool."""

    generation: int = Field(ge=0, description="Increases with each change the operator pushes.")
    pool: str = Field(min_length=1, max_length=253)
    policy: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="The RoutingPolicy that programs this router; labels its metrics (policy).",
    )
    mode: Mode
    model_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    variants: list[VariantConfig] = Field(min_length=1, max_length=16)
    tiers: list[TierRoute] = Field(default_factory=list, max_length=8)
    cascade: CascadeConfig | None = None
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    balancing: Literal["least_outstanding", "round_robin"] = "least_outstanding"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    validate_requests: bool | None = Field(
        default=None,
        description="Check every request body in the router. Default: where the mode parses them anyway "
        "(tiered, cascade); weighted mode forwards the bytes unchanged, Triton's 4xx comes back, and a "
        "body Triton answers with 5xx is checked then (a malformed one gets the router's 400).",
    )
    cache: CacheConfig = Field(default_factory=CacheConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @model_validator(mode="after")
    def _check_references(self) -> RouterConfig:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variants: names must be unique, repeated: {duplicates}")
        if self.mode == "weighted" and not any(v.weight > 0 for v in self.variants):
            raise ValueError("variants.weight: all weights are 0; give at least one variant a weight above 0")
        if self.cascade is not None:
            for field, name in (("draft", self.cascade.draft), ("verifier", self.cascade.verifier)):
                if name not in names:
                    raise ValueError(f"cascade.{field}: unknown variant {name!r}; known: {names}")
            if self.cascade.draft == self.cascade.verifier:
                raise ValueError("cascade.verifier: must differ from cascade.draft")
        if self.mode == "cascade" and self.cascade is None:
            raise ValueError("cascade: mode cascade needs cascade {draft, verifier, acceptThreshold}")
        if self.mode == "tiered":
            self._check_tiers(names)
        return self

    def _check_tiers(self, names: list[str]) -> None:
        if not self.tiers:
            raise ValueError("tiers: mode tiered needs tiers [{maxComplexity, target}, ...]")
        cuts = [t.max_complexity for t in self.tiers]
        if any(b <= a for a, b in pairwise(cuts)):
            raise ValueError(f"tiers: maxComplexity must be strictly ascending, got {cuts}")
        if cuts[-1] != 1.0:
            raise ValueError(
                f"tiers: the last tier must end at maxComplexity 1.0 to cover every request, got {cuts[-1]}"
            )
        for i, tier in enumerate(self.tiers):
            if tier.target == CASCADE_TARGET:
                if self.cascade is None:
                    raise ValueError(f"tiers.{i}.target: 'cascade' needs the cascade section")
            elif tier.target not in names:
                raise ValueError(
                    f"tiers.{i}.target: unknown variant {tier.target!r}; known: {[*names, 'cascade']}"
                )

    def variant(self, name: str) -> VariantConfig:
        """The variant called ``name`` (KeyError if none)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def baseline_variant(self) -> VariantConfig:
        """The variant "send everything to the large model" would use: a large tier, else the costliest."""
        large = [v for v in self.variants if v.tier == "large"]
        return max(large or self.variants, key=lambda v: v.cost)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys (what a push or the mounted file holds)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` lists ``{"field", "message"}`` entries."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems)
        )


def _problems(err: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in err.errors():
        field = ".".join(str(part) for part in e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        out.append({"field": field, "message": message})
    return out


def parse_config(data: Any) -> RouterConfig:
    """Validate a decoded config; raise :class:`ConfigError` naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError([{"field": "", "message": f"config must be an object, got {type(data).__name__}"}])
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems(err)) from None


def parse_config_bytes(raw: bytes | str) -> RouterConfig:
    """Decode JSON or YAML text and validate it."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError([{"field": "", "message": f"not valid JSON/YAML: {err}"}]) from None
    return parse_config(data)


def load_config_file(path: Path) -> RouterConfig:
    """Read and validate the mounted config file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError([{"field": "", "message": f"cannot read config file {path}: {err}"}]) from None
    return parse_config_bytes(raw)
