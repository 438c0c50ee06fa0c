"""Checks the CRD schema cannot express; each names the field and the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.api.routingpolicy import CASCADE_TARGET, RoutingPolicySpec

# Service names must be DNS-1035 labels: start with a letter, at most 63 characters.
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63


@dataclass(frozen=True)
class Problem:
    """One semantic error: where it is, what is wrong and how to fix it."""

    field: str
    reason: str
    message: str


def child_name_problems(pool: str, spec: ModelPoolSpec) -> list[Problem]:
    problems = []
    for i, variant in enumerate(spec.variants):
        name = f"{pool}-{variant.name}"
        if len(name) > MAX_NAME:
            problems.append(
                Problem(
                    f"spec.variants[{i}].name",
                    "ChildNameTooLong",
                    f"child name {name!r} has {len(name)} characters, more than the {MAX_NAME} a "
                    "Service name allows; shorten the pool name or spec.variants[].name",
                )
            )
        elif not _DNS_1035.match(name):
            problems.append(Problem("metadata.name", "InvalidChildName", _invalid_child_message(name)))
    return problems


def _invalid_child_message(name: str) -> str:
    """Why ``name`` (pool name, '-', variant name) is no Service name; only the pool's part can be:
    a variant name is a DNS label, a pool name a DNS subdomain (it may start with a digit or hold dots)."""
    if not name[0].isalpha():
        why, fix = "it must start with a letter", "rename the pool so it starts with a letter"
    else:
        why, fix = "it may hold only lowercase letters, digits and '-'", "rename the pool without '.'"
    return f"child name {name!r} is not a valid Service name ({why}); {fix}"


POLICY_LABEL = "modelpool.dev/policy"


def policy_name_problems(policy: str) -> list[Problem]:
    """A RoutingPolicy's name labels its router ConfigMap: at most 63 characters, as a label value."""
    if len(policy) <= MAX_NAME:
        return []
    return [
        Problem(
            "metadata.name",
            "NameTooLong",
            f"metadata.name: the policy's name has {len(policy)} characters, more than the {MAX_NAME} "
            f"its router ConfigMap's label {POLICY_LABEL} allows; recreate the policy with a shorter name",
        )
    ]


def routing_reference_problems(spec: RoutingPolicySpec, pool_variants: list[str]) -> list[Problem]:
    """References from a RoutingPolicy to variants its pool does not have."""
    known = set(pool_variants)
    refs: list[tuple[str, str]] = [
        (f"spec.weights[{i}].variant", w.variant) for i, w in enumerate(spec.weights)
    ]
    if spec.cascade is not None:
        refs += [("spec.cascade.draft", spec.cascade.draft), ("spec.cascade.verifier", spec.cascade.verifier)]
    if spec.tiered is not None:
        refs += [
            (f"spec.tiered.tiers[{i}].target", t.target)
            for i, t in enumerate(spec.tiered.tiers)
            if t.target != CASCADE_TARGET
        ]
    return [
        Problem(
            field,
            "VariantNotFound",
            f"{field} names variant {name!r}, but pool {spec.pool_ref.name!r} has only "
            f"{sorted(known)}; use one of those names",
        )
        for field, name in refs
        if name not in known
    ]
