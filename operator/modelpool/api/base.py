"""Shared building blocks of the API models: camelCase wire names, conditions, refs."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, ValidationError
from pydantic.alias_generators import to_camel

GROUP = "modelpool.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# DNS-1123 label: what Kubernetes accepts as a Service/Deployment name segment.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]

# Control characters no image reference holds (the kubelet could never pull it).
_NON_PRINTABLE = r"\x{7f}-\x{84}\x{86}-\x{9f}\x{fffe}\x{ffff}"
# What Go's strings.TrimSpace trims: the API server refuses a container image that starts or ends so.
_SPACE = r"\t\n\x{b}\x{c}\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
IMAGE_PATTERN = rf"^[^{_SPACE}{_NON_PRINTABLE}]([^{_NON_PRINTABLE}]*[^{_SPACE}{_NON_PRINTABLE}])?$"


# A label value, and a label key (a qualified name with an optional DNS subdomain prefix), as
# the API server checks them on nodeSelector, tolerations and label selectors.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_PREFIX_PATTERN = r"^[^/]{1,253}/"
LABEL_KEY_HINT = (
    "a label key is a name of at most 63 alphanumerics, '-', '_' or '.' (starting and ending "
    "alphanumeric), optionally after a DNS subdomain prefix of at most 253 characters and '/'"
)

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid label key (the CEL rule of :func:`label_keys_rule` in Python)."""
    if re.fullmatch(LABEL_KEY_PATTERN, key) is None:
        return False
    return "/" not in key or re.match(LABEL_PREFIX_PATTERN, key) is not None


def label_keys_rule(what: str) -> dict[str, JsonValue]:
    """CEL rule: every key of the map is a valid label key (for a field's ``json_schema_extra``)."""
    return dict[str, JsonValue](
        cel(
            f"self.all(k, k.matches(r'{LABEL_KEY_PATTERN}') && "
            f"(!k.contains('/') || k.matches(r'{LABEL_PREFIX_PATTERN}')))",
            f"every key of {what} must be a valid label key: {LABEL_KEY_HINT}",
        )
    )


def check_label_keys(labels: dict[str, str]) -> dict[str, str]:
    """AfterValidator of a map keyed by labels: the same check as :func:`label_keys_rule`."""
    bad = sorted(k for k in labels if not is_label_key(k))
    if bad:
        raise ValueError(f"invalid label key(s) {bad}: {LABEL_KEY_HINT}")
    return labels


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, strict about extras."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters: its start (which names the cause) and a marker
    saying how much was left out (``… (1184 more characters)``). Shorter text is returned as is.

    Status text is built from what the operator cannot bound (Prometheus' series labels, the names
    of every pool sharing a GPU pool, a user's query); the API server refuses a status whose text
    exceeds the field's ``maxLength``, so a status never holds more than that."""
    if len(text) <= limit:
        return text
    kept = limit
    while True:  # the marker's length depends on the count it gives: shrink until both agree
        marker = f" \u2026 ({len(text) - kept} more characters)"
        fits = max(0, limit - len(marker))
        if fits >= kept:
            break
        kept = fits
    return text[:kept] + marker if kept + len(marker) <= limit else text[:limit]


_SHORTENED_END = re.compile(r" \u2026 \(\d+ more characters\)$")


def was_shortened(text: str) -> bool:
    """Whether ``text`` ends with :func:`shorten`'s marker: what followed the cut is not in it."""
    return _SHORTENED_END.search(text) is not None


def shortened(limit: int) -> BeforeValidator:
    """The validator of a status text field: text longer than ``limit`` is cut by :func:`shorten`
    instead of refused (a status is built from the operator's observations and must always be
    writable)."""

    def cut(value: Any) -> Any:
        return shorten(value, limit) if isinstance(value, str) else value

    return BeforeValidator(cut)


REASON_MAX_LENGTH = 1024
"""The longest ``reason`` a condition or a variant's status holds (the CRD's maxLength)."""
MESSAGE_MAX_LENGTH = 32768
"""The longest condition ``message`` (metav1.Condition's maxLength)."""

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="Type of condition in CamelCase, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, shortened(REASON_MAX_LENGTH)] = Field(
        max_length=REASON_MAX_LENGTH,
        description="A programmatic identifier in CamelCase for the condition's last transition.",
    )
    message: Annotated[str, shortened(MESSAGE_MAX_LENGTH)] = Field(
        default="", max_length=MESSAGE_MAX_LENGTH, description="A human readable message."
    )
    last_transition_time: str = Field(
        description="When the condition last changed status (RFC 3339).",
    )
    observed_generation: int = Field(
        default=0, ge=0, description="The .metadata.generation the condition was set from."
    )


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        max_length=16,
        description="Latest observations of the object's state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class LocalObjectReference(ApiModel):
    """Names an object in the same namespace."""

    name: DnsLabel = Field(description="Name of the referent in the same namespace.")


class SecretKeyReference(ApiModel):
    """Selects a key of a Secret in the same namespace."""

    name: DnsLabel = Field(description="Name of the Secret.")
    key: str = Field(
        default="token", min_length=1, max_length=253, description="Key within the Secret's data."
    )


class ConfigMapKeyReference(ApiModel):
    """Selects a key of a ConfigMap in the same namespace."""

    name: DnsLabel = Field(description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="Key within the ConfigMap's data.")


def cel(
    rule: str, message: str, field_path: str | None = None, reason: str = "FieldValueInvalid"
) -> dict[str, str]:
    """One CEL rule (``x-kubernetes-validations`` entry) the API server checks on the object."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    entry["reason"] = reason
    return entry


def with_rules(*rules: dict[str, str]) -> ConfigDict:
    """The model config of an API model carrying CEL rules."""
    config = ConfigDict(**ApiModel.model_config)
    validations: list[JsonValue] = [dict(rule) for rule in rules]
    config["json_schema_extra"] = {"x-kubernetes-validations": validations}
    return config


def field_errors(err: ValidationError, where: str, limit: int = 1) -> str:
    """The first ``limit`` errors of ``err``, each after its field's path under ``where``
    (``spec.variants.0.tier: Input should be 'small', 'quantized' or 'large'``), and how many more."""
    parts = []
    errors = err.errors()
    for e in errors[:limit]:
        path = ".".join([where, *(str(p) for p in e["loc"])]) if where else ".".join(str(p) for p in e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{path}: {message}" if path else message)
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
