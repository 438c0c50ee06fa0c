"""The ModelPool kind: variants of one model sized on a shared GPU pool."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from modelpool.api.base import (
    IMAGE_PATTERN,
    LABEL_KEY_HINT,
    LABEL_KEY_PATTERN,
    LABEL_PREFIX_PATTERN,
    REASON_MAX_LENGTH,
    ApiModel,
    Conditions,
    ConfigMapKeyReference,
    DnsLabel,
    LabelValue,
    cel,
    check_label_keys,
    is_label_key,
    label_keys_rule,
    shortened,
    with_rules,
)

Tier = Literal["small", "quantized", "large"]
TIER_ORDER: dict[str, int] = {"small": 0, "quantized": 1, "large": 2}

Quantity = Annotated[
    str,
    Field(
        max_length=64,
        pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
        description="A Kubernetes quantity, e.g. 500m, 2, 4Gi.",
    ),
]


DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS-1123 subdomain: what the API server takes as the name of a Secret, a ConfigMap or a
ServiceAccount."""
DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
ConfigKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="A key of its data: alphanumerics, '-', '_' or '.'.",
    ),
]


class EnvKeySelector(ApiModel):
    """Selects a key of a Secret or a ConfigMap in the pool's namespace."""

    name: DnsSubdomain = Field(description="Name of the Secret or ConfigMap, in the pool's namespace.")
    key: ConfigKey = Field(description="The key whose value the variable takes.")
    optional: bool | None = Field(
        default=None,
        description="true: a missing object or key leaves the variable unset; unset or false: the "
        "pod does not start until it exists.",
    )


ENV_SOURCE_MESSAGE = "valueFrom must set exactly one of secretKeyRef and configMapKeyRef"
ENV_VALUE_MESSAGE = (
    "set value or valueFrom, not both: value is the variable's text, valueFrom takes it from a "
    "Secret or ConfigMap key"
)


class EnvVarSource(ApiModel):
    """Where a variable's value comes from: a key of a Secret (credentials) or of a ConfigMap."""

    model_config = with_rules(cel("has(self.secretKeyRef) != has(self.configMapKeyRef)", ENV_SOURCE_MESSAGE))

    secret_key_ref: EnvKeySelector | None = Field(
        default=None,
        description="A key of a Secret, e.g. the AWS_SECRET_ACCESS_KEY of an s3:// model repository.",
    )
    config_map_key_ref: EnvKeySelector | None = Field(default=None, description="A key of a ConfigMap.")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError(ENV_SOURCE_MESSAGE)
        return self


class EnvVar(ApiModel):
    """An environment variable for the Triton container: a value, or a key of a Secret or ConfigMap."""

    model_config = with_rules(
        cel("!has(self.valueFrom) || !has(self.value) || self.value == ''", ENV_VALUE_MESSAGE, ".valueFrom")
    )

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Name of the environment variable in the Triton container.",
    )
    value: str = Field(default="", max_length=4096, description="Its value (not with valueFrom).")
    value_from: EnvVarSource | None = Field(
        default=None,
        description="Its value from a key of a Secret or ConfigMap in the pool's namespace, instead of "
        "value: how to give a remote model repository its credentials without writing them in the "
        "pool (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://).",
    )

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value and self.value_from is not None:
            raise ValueError(ENV_VALUE_MESSAGE)
        return self


def _unique_env(env: list[EnvVar]) -> list[EnvVar]:
    names = [e.name for e in env]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"environment variable names must be unique, repeated: {repeated}")
    return env


RESERVED_TRITON_FLAGS: dict[str, str] = {
    "--model-repository": "set model.repository instead",
    "--model-store": "set model.repository instead",
    "--model-control-mode": "ModelPool loads the variant's one model explicitly",
    "--load-model": "set model.name instead",
    "--http-port": "the probes, the Service and the router use 8000",
    "--grpc-port": "the Service uses 8001",
    "--metrics-port": "the scaler's Prometheus scrapes 8002",
    "--allow-metrics": "the scaler reads Triton's metrics",
    "--allow-http": "the probes and the router speak HTTP",
    "--strict-readiness": "a replica must not be Ready before its model is",
}
"""tritonserver flags ModelPool sets itself, and why each may not be given again in triton.args."""
_FLAG_NAME = "^--[^= ]+"
"""The option name of an argument (``--http-port`` of ``--http-port=9000`` or ``--http-port 9000``);
the same RE2 pattern in CEL's ``find``."""
RESERVED_ARGS_MESSAGE = (
    "triton.args may not set a flag ModelPool sets itself, nor an abbreviation of one (tritonserver "
    "takes any unambiguous prefix): "
    + ", ".join(RESERVED_TRITON_FLAGS)
    + "; use model.repository and model.name for the model, and remove the others"
)
_RESERVED_ARGS_RULE = (
    "self.all(a, !(a.find('" + _FLAG_NAME + "') != '' && "
    "[" + ", ".join(f"'{flag}'" for flag in RESERVED_TRITON_FLAGS) + "]"
    ".exists(f, f.startsWith(a.find('" + _FLAG_NAME + "')))))"
)
"""The API server's form of the reserved-flag check of :func:`_usable_args`."""


ADDRESS_FLAGS: dict[str, str] = {
    "--http-address": "the kubelet's probes and the router reach Triton's HTTP port on the pod's IP",
    "--metrics-address": "the scaler's Prometheus scrapes the metrics port on the pod's IP",
}
"""tritonserver flags that may only name an address on every interface (``0.0.0.0``, or ``::`` on
IPv6): bound to another (``127.0.0.1``), the pod runs but nothing outside it reaches the port."""
_ALL_INTERFACES = r"=(0\.0\.0\.0|::|\[::\])$"
ADDRESS_ARGS_MESSAGE = (
    "triton.args: "
    + " and ".join(ADDRESS_FLAGS)
    + " (or an abbreviation) must be an all-interfaces address given after '=' (0.0.0.0, the "
    "default, or :: on IPv6): the kubelet's probes, the router and the scaler's Prometheus reach "
    "the pod on its IP; remove the flag"
)
_ADDRESS_ARGS_RULE = (
    "self.all(a, !(a.find('" + _FLAG_NAME + "') != '' && "
    "[" + ", ".join(f"'{flag}'" for flag in ADDRESS_FLAGS) + "]"
    ".exists(f, f.startsWith(a.find('" + _FLAG_NAME + "'))) && "
    "!a.matches(r'" + _FLAG_NAME + _ALL_INTERFACES + "')))"
)
"""The API server's form of the address check of :func:`_usable_args`."""

RESTRICTED_API_FLAG = "--http-restricted-api"
UNRESTRICTABLE_APIS = ("health", "inference")
"""The HTTP API groups the kubelet's probes (health) and the router (a model's readiness: health;
inference) call, without any restriction key."""
_RESTRICTS_NEEDED_API = "=([^:,]*,)*(" + "|".join(UNRESTRICTABLE_APIS) + ")(,|:|$)"
RESTRICTED_ARGS_MESSAGE = (
    f"triton.args: {RESTRICTED_API_FLAG} (or an abbreviation) may not restrict health or inference: "
    "the kubelet's probes and the router call them without the key. Give it with its value in one "
    f"argument ({RESTRICTED_API_FLAG}=<apis>:<key>=<value>) and list only other APIs (e.g. "
    "model-repository,statistics)"
)
_RESTRICTED_ARGS_RULE = (
    "self.all(a, !(a.find('" + _FLAG_NAME + "') != '' && "
    f"'{RESTRICTED_API_FLAG}'.startsWith(a.find('" + _FLAG_NAME + "')) && "
    "(!a.matches(r'" + _FLAG_NAME + "=') || a.matches(r'" + _FLAG_NAME + _RESTRICTS_NEEDED_API + "'))))"
)
"""The API server's form of the restricted-API check of :func:`_usable_args`."""
_RESTRICTS_NEEDED_API_RE = re.compile(_FLAG_NAME + _RESTRICTS_NEEDED_API.replace("$", r"\Z"))
"""The same in Python, whose ``$`` also matches before a final newline (RE2's does not)."""


def _abbreviated(name: str, flags: list[str]) -> str:
    """How a message names option ``name``, one of ``flags`` or a prefix of them."""
    return name if name == flags[0] else f"{name}, an abbreviation of {' or '.join(flags)},"


def _usable_args(args: list[str]) -> list[str]:
    """Refuse an argument that would leave the pods unusable to ModelPool (the CRD's rules in
    Python): a flag ModelPool sets, or an abbreviation of one (tritonserver parses its options with
    getopt_long, which takes ``--http-p=9000`` for ``--http-port=9000``); an address flag bound to
    less than every interface; an HTTP API restriction on what the probes and the router call.
    (An argument that does not start with ``--``, a leading space included, is no option to it.)"""
    for arg in args:
        if not (m := re.match(_FLAG_NAME, arg)):
            continue
        name = m.group()
        hit = [flag for flag in RESERVED_TRITON_FLAGS if flag.startswith(name)]
        if hit:
            raise ValueError(
                f"{arg!r}: {_abbreviated(name, hit)} is set by ModelPool ({RESERVED_TRITON_FLAGS[hit[0]]}); "
                "remove it from triton.args"
            )
        hit = [flag for flag in ADDRESS_FLAGS if flag.startswith(name)]
        if hit and not re.fullmatch(_FLAG_NAME + _ALL_INTERFACES, arg):
            raise ValueError(
                f"{arg!r}: {_abbreviated(name, hit)} must be an all-interfaces address given after '=' "
                f"(0.0.0.0, the default, or :: on IPv6): {ADDRESS_FLAGS[hit[0]]}; remove it from "
                "triton.args"
            )
        if RESTRICTED_API_FLAG.startswith(name) and (
            not re.match(_FLAG_NAME + "=", arg) or _RESTRICTS_NEEDED_API_RE.match(arg)
        ):
            raise ValueError(
                f"{arg!r}: {_abbreviated(name, [RESTRICTED_API_FLAG])} may not restrict health or "
                "inference: the kubelet's probes and the router call them without the key. Give it "
                f"with its value in one argument ({RESTRICTED_API_FLAG}=<apis>:<key>=<value>) and list "
                "only other APIs (e.g. model-repository,statistics)"
            )
    return args


SHARED_MEMORY_SIZE = "1Gi"
SHARED_MEMORY_MESSAGE = "sharedMemorySize must be more than 0 (e.g. 1Gi)"


def _positive_size(size: str) -> str:
    """A quantity (already matched by its pattern) with a digit other than 0 is more than 0."""
    if re.search("[1-9]", size) is None:
        raise ValueError(SHARED_MEMORY_MESSAGE)
    return size


ROOT_WITH_NON_ROOT_MESSAGE = (
    "securityContext: runAsNonRoot: true with runAsUser: 0 never starts (the kubelet refuses a "
    "container that would run as root): give a non-root uid, e.g. runAsUser: 1000 (the Triton "
    "image's triton-server user)"
)
MAX_ID = 2**31 - 1
"""The largest uid or gid the API server takes (an int64 field validated within int32)."""


class TritonSecurityContext(ApiModel):
    """Who the Triton pods run as: the pod's securityContext user, group and fsGroup. Unset fields
    leave the image's own (the stock Triton image runs as root); the pods always drop every
    capability, refuse privilege escalation and use the RuntimeDefault seccomp profile.
    PodSecurity ``restricted`` also needs ``runAsNonRoot: true`` with a non-root ``runAsUser``."""

    model_config = with_rules(
        cel(
            "!has(self.runAsNonRoot) || !self.runAsNonRoot || !has(self.runAsUser) || self.runAsUser != 0",
            ROOT_WITH_NON_ROOT_MESSAGE,
            ".runAsUser",
        )
    )

    run_as_user: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="uid the Triton container runs as; the stock images have the user triton-server, "
        "uid 1000. Unset: the image's (root for the stock images).",
    )
    run_as_group: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="gid the Triton container runs as; unset: the image's."
    )
    run_as_non_root: bool | None = Field(
        default=None,
        description="true: the kubelet refuses to start a container that would run as root "
        "(PodSecurity restricted requires it); give runAsUser with it for an image that runs as root.",
    )
    fs_group: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="Supplementary group of the pod; volumes that support it (the /dev/shm emptyDir "
        "among them) are owned by it.",
    )

    @model_validator(mode="after")
    def _not_root_and_non_root(self) -> TritonSecurityContext:
        if self.run_as_non_root and self.run_as_user == 0:
            raise ValueError(ROOT_WITH_NON_ROOT_MESSAGE)
        return self


class TritonSpec(ApiModel):
    """How to run Triton Inference Server for a variant."""

    image: str = Field(
        default="nvcr.io/nvidia/tritonserver:24.08-py3",
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="Triton server image (no leading or trailing whitespace).",
    )
    args: Annotated[list[Annotated[str, Field(max_length=1024)]], AfterValidator(_usable_args)] = Field(
        default_factory=list,
        max_length=32,
        description="Extra tritonserver arguments, appended after the ones ModelPool sets. Refused: "
        "the flags ModelPool sets itself ("
        + ", ".join(RESERVED_TRITON_FLAGS)
        + "), "
        + " and ".join(ADDRESS_FLAGS)
        + " other than 0.0.0.0 or ::, and "
        + RESTRICTED_API_FLAG
        + " restricting health or inference (the probes and the router need them), each also "
        "abbreviated.",
        json_schema_extra={
            "x-kubernetes-validations": [
                dict[str, JsonValue](cel(_RESERVED_ARGS_RULE, RESERVED_ARGS_MESSAGE)),
                dict[str, JsonValue](cel(_ADDRESS_ARGS_RULE, ADDRESS_ARGS_MESSAGE)),
                dict[str, JsonValue](cel(_RESTRICTED_ARGS_RULE, RESTRICTED_ARGS_MESSAGE)),
            ]
        },
    )
    env: Annotated[list[EnvVar], AfterValidator(_unique_env)] = Field(
        default_factory=list,
        max_length=32,
        description="Extra environment; names are unique. A value, or valueFrom a Secret's or "
        "ConfigMap's key (credentials of an s3://, gs:// or as:// model repository).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    service_account_name: DnsSubdomain | None = Field(
        default=None,
        description="ServiceAccount the Triton pods run as, in the pool's namespace (it must exist, "
        "or no pod is created): with workload identity (EKS IRSA, GKE or AKS Workload Identity), "
        "the one bound to the cloud role that reads a remote model repository. Unset: the "
        "namespace's default ServiceAccount. Only with it is the ServiceAccount token mounted "
        "(as that ServiceAccount's automountServiceAccountToken says; workload identity reads it): "
        "unset, the pods run without a token.",
    )
    security_context: TritonSecurityContext | None = Field(
        default=None,
        description="The user, group and fsGroup the Triton pods run as (pod securityContext). "
        "Whatever is set here, the container drops every capability and may not escalate "
        "privileges, and the pod uses the RuntimeDefault seccomp profile. For namespaces that "
        "enforce PodSecurity restricted: runAsNonRoot: true, runAsUser: 1000 (the Triton image's "
        "triton-server user; the model repository must be readable by it). Changing it rolls the "
        "variant's pods.",
    )
    shared_memory_size: Annotated[Quantity, AfterValidator(_positive_size)] = Field(
        default=SHARED_MEMORY_SIZE,
        description="Size (a quantity, e.g. 1Gi) of the memory-backed emptyDir mounted at /dev/shm "
        "(the container runtime's own is 64 MiB). The Python backend keeps its tensors in "
        "shared-memory regions there, and a region that does not fit fails the stub or the request. "
        "What is written there counts toward the container's memory limit (resources.memory): leave "
        "room for it. Changing it rolls the variant's pods.",
        json_schema_extra={
            "x-kubernetes-validations": [
                dict[str, JsonValue](cel("self.matches('[1-9]')", SHARED_MEMORY_MESSAGE))
            ]
        },
    )
    startup_timeout_seconds: int = Field(
        default=600,
        ge=10,
        le=86_400,
        description="How long a replica may take to start and load its model (the startup probe, "
        "every 10 s, so rounded up to a multiple of 10) before the kubelet restarts it; a large "
        "model read from a remote repository may need more than the default 10 minutes.",
    )
    probe_timeout_seconds: int = Field(
        default=2,
        ge=1,
        le=60,
        description="Seconds each probe (startup, readiness every 5 s, liveness every 10 s) waits "
        "for Triton's health endpoint to answer; raise it when a busy server answers late (three "
        "late liveness answers in a row restart the container).",
    )


class ModelSource(ApiModel):
    """The Triton model a variant serves."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Triton model name, loaded with --model-control-mode=explicit --load-model.",
    )
    repository: str = Field(
        min_length=1,
        max_length=1024,
        description="Model repository given to --model-repository: a path in the image, or an "
        "s3://, gs:// or as:// location Triton reads. Its credentials: triton.env with valueFrom a "
        "Secret's key (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), or triton.serviceAccountName "
        "for workload identity.",
    )
    version: int | None = Field(
        default=None,
        ge=1,
        description="Model version the repository's version policy serves; recorded on the pods.",
    )
    digest: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9:._-]+$",
        description="Digest of the model's artifacts, as `modelpool models export` prints it; a profile "
        "measured on another digest is reported stale.",
    )


class ResourceRequests(ApiModel):
    """CPU and memory for one replica (GPUs come from gpusPerReplica)."""

    cpu: Quantity = Field(default="1", description="CPU request and limit of the Triton container.")
    memory: Quantity = Field(default="2Gi", description="Memory request and limit of the Triton container.")


class VariantScaling(ApiModel):
    """Targets and pacing for the autoscaler; see docs/scaling.md."""

    target_queue_time_ms: int = Field(
        default=50, ge=1, le=600_000, description="Queue time per request the scaler keeps under."
    )
    target_latency_ms: int | None = Field(
        default=None,
        ge=1,
        le=600_000,
        description="End-to-end latency target per request; the burst reserve counts a burst's requests "
        "as late only past it. Unset: the smallest latencySLOMs of the RoutingPolicies routing to the "
        "pool, else targetQueueTimeMs.",
    )
    capacity_per_replica_rps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Requests per second one replica serves within target; unset takes the measured "
        "capacity from the variant's profile.",
    )
    scale_up_stabilization_seconds: int = Field(
        default=0, ge=0, le=3600, description="Window over which scale-up takes the lowest wish."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600, description="Window over which scale-down takes the highest wish."
    )
    tolerance_percent: int = Field(
        default=10,
        ge=0,
        le=99,
        description="Changes in need smaller than this are ignored (below 100: 100 would ignore every "
        "change).",
    )
    scale_to_zero: bool = Field(
        default=False,
        description="Allow zero replicas when idle; never applies to the last tier serving traffic.",
    )
    lookahead_seconds: int = Field(
        default=10,
        ge=0,
        le=3600,
        description="Replica start-up plus the scrape interval: how far a rising trend is extrapolated, "
        "and how long a burst must be served by the replicas already running.",
    )
    trend_window_seconds: int = Field(
        default=20,
        ge=1,
        le=3600,
        description="Window of the rising-trend fit over the request-rate series; about four scrape "
        "intervals reacts within a few scrapes, longer ignores short rises.",
    )
    burst_reserve: bool = Field(
        default=True,
        description="Keep spare replicas when recent bursts outran the replicas before new ones could "
        "start (learned from the metrics; none for a smooth load). Off with a scale-up window.",
    )
    burst_memory_seconds: int = Field(
        default=3600,
        ge=60,
        le=604_800,
        description="How long the burst reserve remembers a burst (time constant of its decay).",
    )


class ProfileReference(ApiModel):
    """The variant's measured capability profile (see docs/models.md): inline or in a ConfigMap."""

    model_config = with_rules(
        cel("has(self.configMapKeyRef) != has(self.inline)", "set exactly one of configMapKeyRef and inline"),
    )

    config_map_key_ref: ConfigMapKeyReference | None = Field(
        default=None, description="ConfigMap key holding the profile as JSON or YAML."
    )
    inline: dict[str, Any] | None = Field(
        default=None,
        description="The profile itself, as `modelpool models profile` writes it (camelCase keys).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


MAX_UNAVAILABLE_PERCENT_PATTERN = r"^(100|[1-9][0-9]?)%$"
MAX_UNAVAILABLE_MESSAGE = (
    "maxUnavailable must be a number of replicas from 1 to 1000 or a percentage from 1% to 100% "
    "(e.g. 1 or 25%); 0 would refuse every eviction and so block node drains: to leave evictions "
    "unbounded set enabled: false instead"
)


def _max_unavailable(value: int | str) -> int | str:
    """The API's check (also the CRD's CEL rule) of an int-or-string maxUnavailable."""
    if isinstance(value, int):
        ok = 1 <= value <= 1000
    else:
        ok = re.fullmatch(MAX_UNAVAILABLE_PERCENT_PATTERN, value, flags=re.ASCII) is not None
    if not ok:
        raise ValueError(MAX_UNAVAILABLE_MESSAGE)
    return value


MaxUnavailable = Annotated[
    StrictInt | StrictStr,
    AfterValidator(_max_unavailable),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 4,  # "100%"; the API server bounds the CEL rule's cost by it
            "x-kubernetes-validations": [
                cel(
                    "type(self) == int ? self >= 1 && self <= 1000 "
                    f": self.matches(r'{MAX_UNAVAILABLE_PERCENT_PATTERN}')",
                    MAX_UNAVAILABLE_MESSAGE,
                )
            ],
        }
    ),
]
"""A number of replicas or a percentage of them, like policy/v1's ``maxUnavailable``, never 0."""


class DisruptionBudget(ApiModel):
    """A PodDisruptionBudget per variant: how many of its Triton replicas voluntary evictions (node
    drains, cluster upgrades, the cluster autoscaler removing a node) may take at once."""

    enabled: bool = Field(
        default=True,
        description="Create a PodDisruptionBudget for each variant; false removes them (evictions "
        "are then unbounded, e.g. when you manage your own budget for these pods).",
    )
    max_unavailable: MaxUnavailable = Field(
        default=1,
        description="Replicas of a variant that evictions may take at once: a number (at least 1) "
        "or a percentage of its replicas (1% to 100%, rounded up, so at least one). Never 0, and "
        "there is no minAvailable: a budget that allows no eviction blocks node drains forever.",
    )


HOSTNAME_KEY = "kubernetes.io/hostname"
ZONE_KEY = "topology.kubernetes.io/zone"
TOPOLOGY_KEY_MESSAGE = f"every topology key must be a node label key: {LABEL_KEY_HINT}"
TOPOLOGY_KEYS_EMPTY_MESSAGE = (
    "topologyKeys must name at least one node label key (e.g. kubernetes.io/hostname); to turn "
    "spreading off set enabled: false instead"
)
TOPOLOGY_KEYS_REPEATED_MESSAGE = (
    "topologyKeys must not repeat a key (the API server refuses a pod with two spread constraints "
    "on one key); list each key once"
)


def _topology_key(key: str) -> str:
    if not is_label_key(key):
        raise ValueError(TOPOLOGY_KEY_MESSAGE)
    return key


def _topology_keys(keys: list[str]) -> list[str]:
    """The API's check (also the CRD's CEL rules) of a list of topology keys."""
    if not keys:
        raise ValueError(TOPOLOGY_KEYS_EMPTY_MESSAGE)
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"{TOPOLOGY_KEYS_REPEATED_MESSAGE}, repeated: {repeated}")
    return keys


TopologyKey = Annotated[
    str,
    AfterValidator(_topology_key),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 317,  # a 253-character prefix, '/' and a 63-character name; bounds the rule's cost
            "x-kubernetes-validations": [
                cel(
                    f"self.matches(r'{LABEL_KEY_PATTERN}') && "
                    f"(!self.contains('/') || self.matches(r'{LABEL_PREFIX_PATTERN}'))",
                    TOPOLOGY_KEY_MESSAGE,
                )
            ],
        }
    ),
]
"""A node label key to spread over, checked as the API server checks a pod's ``topologyKey``."""


class TopologySpread(ApiModel):
    """How the scheduler spreads each variant's Triton replicas over nodes and zones (pod topology
    spread constraints), so that one node or zone failing takes only part of a variant. The
    constraints count the variant's own pods only, and only those of its current rollout."""

    enabled: bool = Field(
        default=True,
        description="Add one topology spread constraint per topology key to each variant's pods; "
        "false removes them and leaves placement to the scheduler's built-in default (a weak "
        "preference only: maxSkew 3 per node and 5 per zone, soft, weighed against free CPU and "
        "memory). Turning it on or off, like any change here, rolls the variant's pods once.",
    )
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        default="ScheduleAnyway",
        description="ScheduleAnyway (soft): the scheduler prefers the nodes that keep the spread "
        "but places a replica anyway, so a small or full cluster still runs every replica. "
        "DoNotSchedule (hard): a replica that would exceed maxSkew stays Pending, and nodes "
        "lacking any of the topology keys get no replica at all.",
    )
    max_skew: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Most replicas of a variant one node (or zone) may hold beyond the domain with "
        "the fewest; 1 is an even spread.",
    )
    topology_keys: Annotated[list[TopologyKey], AfterValidator(_topology_keys)] = Field(
        default=[HOSTNAME_KEY],
        max_length=8,
        description="Node label keys to spread over, one constraint each, all applied together; "
        "each key at most once, at least one. The default, kubernetes.io/hostname, is on every "
        "node. On a cluster over several zones add topology.kubernetes.io/zone: the scheduler "
        "then counts only the nodes that carry every key listed, so a node without a zone label "
        "gets no replica (DoNotSchedule) or is not spread over at all (ScheduleAnyway), which is "
        "why zones are not in the default (kind, k3d and many bare-metal clusters have none).",
        json_schema_extra={
            "x-kubernetes-validations": [
                dict[str, JsonValue](cel("size(self) > 0", TOPOLOGY_KEYS_EMPTY_MESSAGE)),
                dict[str, JsonValue](
                    cel("self.all(k, self.exists_one(x, x == k))", TOPOLOGY_KEYS_REPEATED_MESSAGE)
                ),
            ]
        },
    )


class Variant(ApiModel):
    """One variant (tier) of the model, run as its own Triton Deployment."""

    model_config = with_rules(
        cel(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must be less than or equal to maxReplicas",
            field_path=".minReplicas",
        ),
    )

    name: DnsLabel = Field(description="Variant name, unique in the pool; part of child object names.")
    tier: Tier = Field(description="small, quantized or large: the order requests escalate in.")
    model: ModelSource
    triton: TritonSpec = Field(default_factory=TritonSpec)
    gpus_per_replica: int = Field(
        default=1, ge=0, le=16, description="GPUs each replica requests; 0 runs on CPU."
    )
    resources: ResourceRequests = Field(default_factory=ResourceRequests)
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas kept.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas allowed.")
    cost: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Relative cost of one request on this variant, in a unit shared by the pool's "
        "variants (e.g. small 1, large 20). Used for routing economics and budget value.",
    )
    priority: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Higher priority variants keep GPUs first when wishes exceed the budget.",
    )
    scaling: VariantScaling = Field(default_factory=VariantScaling)
    profile: ProfileReference | None = Field(
        default=None, description="Measured capability profile of this variant."
    )
    disruption_budget: DisruptionBudget | None = Field(
        default=None,
        description="This variant's disruption budget, in place of spec.disruptionBudget (the whole "
        "object: fields it leaves out take their defaults, not the pool's).",
    )
    topology_spread: TopologySpread | None = Field(
        default=None,
        description="How this variant's replicas spread over nodes and zones, in place of "
        "spec.topologySpread (the whole object: fields it leaves out take their defaults, not the "
        "pool's).",
    )


_KEYLESS = "a toleration without key must have operator Exists (it then tolerates every taint)"
_TIMED = "tolerationSeconds needs effect NoExecute (it is how long a NoExecute taint is tolerated)"
_EXISTS_VALUE = "operator Exists takes no value; drop value or use operator Equal"
_KEY = f"key: {LABEL_KEY_HINT}"


class Toleration(ApiModel):
    """A pod toleration for the GPU pool's taints (checked as the API server checks a pod's)."""

    model_config = with_rules(
        cel("(has(self.key) && self.key != '') || self.operator == 'Exists'", _KEYLESS, ".operator"),
        cel(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            _TIMED,
            ".effect",
        ),
        cel("self.operator != 'Exists' || !has(self.value) || self.value == ''", _EXISTS_VALUE, ".value"),
        cel(
            f"!has(self.key) || !self.key.contains('/') || self.key.matches(r'{LABEL_PREFIX_PATTERN}')",
            _KEY,
            ".key",
        ),
    )

    key: str | None = Field(
        default=None,
        max_length=317,
        pattern=f"^({LABEL_KEY_PATTERN[1:-1]})?$",
        description="Taint key (a label key); empty with operator Exists tolerates every taint.",
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Equal matches key and value; Exists matches any value of the key."
    )
    value: LabelValue | None = Field(default=None, description="Taint value (a label value) for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; unset tolerates every effect."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        description="With effect NoExecute: how long a replica stays on a node after the taint appears; "
        "unset stays for good.",
    )

    @model_validator(mode="after")
    def _as_the_api_server(self) -> Toleration:
        if self.key and not is_label_key(self.key):
            raise ValueError(_KEY)
        if not self.key and self.operator != "Exists":
            raise ValueError(_KEYLESS)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(_TIMED)
        if self.operator == "Exists" and self.value:
            raise ValueError(_EXISTS_VALUE)
        return self


class GpuPool(ApiModel):
    """The shared pool of GPU nodes and the share of it this ModelPool may use."""

    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Extended resource name of the GPUs.",
    )
    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Name of a GPU pool shared with other ModelPools: pools of this namespace that "
        "name the same one share one gpuBudget, the smallest they declare, allocated by value per GPU "
        "across all their variants. Pools of other namespaces share it only where the operator runs "
        "with --gpu-pool-sharing=cluster (chart gpuPoolSharing). Unset: the budget is this pool's alone.",
    )
    gpu_budget: int = Field(
        ge=0,
        le=100_000,
        description="Most GPUs all variants of this pool may hold together; with name, all variants "
        "of all pools sharing that GPU pool.",
    )
    node_selector: Annotated[dict[str, LabelValue], AfterValidator(check_label_keys)] = Field(
        default_factory=dict,
        max_length=16,
        description="Node labels the GPU nodes carry (label keys and values).",
        json_schema_extra={"x-kubernetes-validations": [label_keys_rule("nodeSelector")]},
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, description="Tolerations for the GPU nodes' taints."
    )


PROMQL_PLACEHOLDERS = ("selector", "router_selector", "window")
_NAMES = "|".join(PROMQL_PLACEHOLDERS)
PROMQL_TEMPLATE_PATTERN = rf"^([^$]|[$][$]|[$]({_NAMES})\b|[$][{{]({_NAMES})[}}])*$"
"""Every ``$`` in a query template starts a known placeholder or is doubled (``string.Template``)."""
PROMQL_PLACEHOLDER_HINT = "use $selector, $router_selector or $window ($$ for a literal $)"
PROMQL_PLACEHOLDER_MESSAGE = f"unknown or malformed placeholder: {PROMQL_PLACEHOLDER_HINT}"


def _known_placeholders(query: str) -> str:
    if re.fullmatch(PROMQL_TEMPLATE_PATTERN, query, flags=re.ASCII) is None:
        raise ValueError(PROMQL_PLACEHOLDER_MESSAGE)
    return query


PromQL = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(f"self.matches(r'{PROMQL_TEMPLATE_PATTERN}')", PROMQL_PLACEHOLDER_MESSAGE)
            ]
        },
    ),
    AfterValidator(_known_placeholders),
]


class MetricQueries(ApiModel):
    """PromQL overrides; placeholders $selector (Triton series of the variant), $router_selector
    (router series of the variant) and $window. Unset queries use the Triton defaults in docs/scaling.md."""

    served_rate: PromQL | None = Field(default=None, description="Requests per second the variant served.")
    router_rate: PromQL | None = Field(default=None, description="Requests per second routers sent it.")
    queue_time_s: PromQL | None = Field(default=None, description="Mean queue time per request, seconds.")
    compute_time_s: PromQL | None = Field(default=None, description="Mean compute time per request, seconds.")
    pending: PromQL | None = Field(default=None, description="Requests waiting or running now.")
    newest_sample: PromQL | None = Field(default=None, description="Timestamp of the newest sample.")


PROMETHEUS_URL_PATTERN = r"^https?://[^/?#@]+(/[^?#]*)?$"
"""A base URL the operator appends ``/api/v1/query`` to: a ``?`` or ``#`` would make that the query
string or the fragment (the request path the spec's author's), a ``user:password@`` would put
credentials in the spec."""
PROMETHEUS_URL_MESSAGE = (
    "scaling.prometheusURL must be a base URL http(s)://host[:port][/path]: no '?' or '#' (the "
    "operator appends /api/v1/query to it) and no user:password@ (no credentials in the spec)"
)


def _base_url(url: str) -> str:
    """The API's check (also the CRD's pattern) of ``prometheusURL``."""
    if re.search(PROMETHEUS_URL_PATTERN, url) is None:
        raise ValueError(PROMETHEUS_URL_MESSAGE)
    return url


class PoolScaling(ApiModel):
    """How the operator reads metrics and paces decisions for the pool."""

    enabled: bool = Field(
        default=True, description="Scale from live metrics; when false replicas stay at minReplicas."
    )
    interval_seconds: int = Field(default=15, ge=1, le=3600, description="Seconds between decisions.")
    rate_window_seconds: int = Field(
        default=60,
        ge=2,
        le=3600,
        description="Window of the PromQL rate() over Triton's counters; at least twice the scrape interval.",
    )
    prometheus_url: Annotated[str, Field(max_length=1024), AfterValidator(_base_url)] | None = Field(
        default=None,
        alias="prometheusURL",
        description="Prometheus HTTP API base URL, http(s)://host[:port][/path]: the operator "
        "appends /api/v1/query to it, so no '?' or '#', and no user:password@ (no credentials in "
        "the spec). Unset uses the operator's --prometheus-url.",
        json_schema_extra={"pattern": PROMETHEUS_URL_PATTERN},
    )
    queries: MetricQueries = Field(default_factory=MetricQueries)


class ModelPoolSpec(ApiModel):
    """Desired state of a ModelPool."""

    model_config = with_rules(
        cel(
            "self.variants.exists(v, v.minReplicas > 0 || !has(v.scaling) "
            "|| !has(v.scaling.scaleToZero) || !v.scaling.scaleToZero)",
            "at least one variant must keep a replica: set minReplicas > 0 or "
            "scaling.scaleToZero=false on one variant",
            field_path=".variants",
        ),
    )

    gpu_pool: GpuPool
    variants: list[Variant] = Field(
        min_length=1,
        max_length=8,
        description="The model's variants; names are unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    scaling: PoolScaling = Field(default_factory=PoolScaling)
    disruption_budget: DisruptionBudget = Field(
        default_factory=DisruptionBudget,
        description="The PodDisruptionBudget of every variant (see docs/scaling.md); a variant's own "
        "disruptionBudget replaces it. On by default, one replica at a time.",
    )

    topology_spread: TopologySpread = Field(
        default_factory=TopologySpread,
        description="How every variant's replicas spread over nodes and zones (see docs/scaling.md); "
        "a variant's own topologySpread replaces it. On by default: soft (ScheduleAnyway), maxSkew 1, "
        "over kubernetes.io/hostname (add topology.kubernetes.io/zone to topologyKeys on a cluster "
        "over zones).",
    )

    def disruption_budget_of(self, variant: Variant) -> DisruptionBudget:
        """The budget that applies to ``variant``: its own, else the pool's."""
        return variant.disruption_budget or self.disruption_budget

    def topology_spread_of(self, variant: Variant) -> TopologySpread:
        """The spreading that applies to ``variant``: its own, else the pool's."""
        return variant.topology_spread or self.topology_spread


class ScalerRecommendation(ApiModel):
    """One raw recommendation of the scaler, kept for its stabilisation windows."""

    t: float = Field(description="When it was made (Unix seconds).")
    replicas: int = Field(ge=0, description="Replicas it asked for.")


class BurstShortfall(ApiModel):
    """Deprecated: the burst reserve's history before it replayed windows; ignored when read."""

    replicas_short: float = Field(ge=0, description="Deprecated; ignored.")
    weight: float = Field(ge=0, description="Deprecated; ignored.")


class BurstLate(ApiModel):
    """One entry of the burst reserve's history: recent windows replayed with more replicas."""

    extra_replicas: int = Field(ge=0, description="Replicas beyond those the window had.")
    requests: float = Field(
        ge=0, description="Decayed requests that would have been late with that many more."
    )


class ScalerMemory(ApiModel):
    """What the scaler carries from one decision to the next, kept here so that an operator restart
    neither forgets the stabilisation windows nor the burst reserve (see docs/scaling.md)."""

    decided_at: float = Field(description="Time of the last decision (Unix seconds).")
    last_demand_rps: float = Field(
        default=0.0, ge=0, description="Demand estimate of the last decision (requests per second)."
    )
    recommendations: list[ScalerRecommendation] = Field(
        default_factory=list,
        description="Recommendations that still decide a stabilisation window (newest last; at most "
        "two per replica count).",
    )
    bursts_updated_at: float | None = Field(
        default=None, description="When the burst reserve last replayed a window (Unix seconds)."
    )
    burst_requests: float = Field(default=0.0, ge=0, description="Decayed requests the reserve has seen.")
    burst_late: list[BurstLate] = Field(
        default_factory=list,
        description="Late requests of the replayed windows per number of extra replicas (non-zero only).",
    )
    burst_shortfalls: list[BurstShortfall] = Field(
        default_factory=list,
        description="Deprecated (written before the reserve replayed windows); ignored, and with it "
        "burstRequests, so the reserve learns anew.",
    )
    capacity_per_replica_rps: float | None = Field(
        default=None,
        ge=0,
        description="Capacity of one replica last measured from the compute time (requests per "
        "second): sizes the variant while none of its replicas serves to measure it.",
    )


class VariantStatus(ApiModel):
    """Observed state of one variant."""

    name: str = Field(description="The variant's name in spec.variants.")
    tier: Tier = Field(description="Its tier.")
    desired_replicas: int = Field(default=0, description="Replicas the operator set on its Deployment.")
    ready_replicas: int = Field(default=0, description="Replicas ready to serve.")
    gpus: int = Field(default=0, description="GPUs held by the variant's scheduled replicas.")
    reason: Annotated[str, shortened(REASON_MAX_LENGTH)] = Field(
        default="",
        max_length=REASON_MAX_LENGTH,
        description="Why desiredReplicas is what it is (while the replicas stay, refreshed every 10 s); "
        "a longer one is cut, its start kept.",
    )
    capacity_shortfall_rps: int = Field(
        default=0, description="Requests per second the variant lacks under the GPU budget."
    )
    scaler: ScalerMemory | None = Field(default=None, description="The scaler's memory for this variant.")


class ModelPoolStatus(ApiModel):
    """Observed state of a ModelPool."""

    observed_generation: int = Field(default=0, description="metadata.generation this status describes.")
    gpu_budget: int = Field(
        default=0, description="GPUs this pool may hold (its share of a shared GPU pool)."
    )
    gpus_requested: int = Field(default=0, description="GPUs the desired replicas need.")
    gpus_in_use: int = Field(default=0, description="GPUs held by scheduled replicas.")
    variants: list[VariantStatus] = Field(
        default_factory=list,
        description="Each variant's replicas, GPUs and the reason for its replica count.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    conditions: Conditions


class ModelPool(ApiModel):
    """A model's small, quantized and large variants served by Triton on a shared GPU pool."""

    spec: ModelPoolSpec
    status: ModelPoolStatus | None = None
