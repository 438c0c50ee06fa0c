"""Capability profiles referenced by a pool's variants: loaded from ConfigMaps, checked for staleness.

A profile gives the scaler its default per-replica capacity and the routing controller the
variant's measured accuracy (for the policy's quality floor). A missing or stale profile is
reported in the pool's ``ProfilesCurrent`` condition; the variant then falls back to its
spec fields (or to capacity estimated from Triton's compute time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from pydantic import ValidationError

from modelpool.api.base import field_errors
from modelpool.api.modelpool import ModelPoolSpec, Variant
from modelpool.kube import KubeClient, resource_path
from modelpool.models.profile import CapabilityProfile


@dataclass
class ProfileView:
    """What the pool's profiles say, and what is wrong with them."""

    profiles: dict[str, CapabilityProfile] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    referenced: int = 0

    @property
    def capacity_rps(self) -> dict[str, float]:
        return {name: p.capacity_per_replica_rps for name, p in self.profiles.items()}

    @property
    def accuracy_percent(self) -> dict[str, float]:
        return {name: p.accuracy * 100 for name, p in self.profiles.items()}


def staleness(variant: Variant, profile: CapabilityProfile) -> str | None:
    """Why ``profile`` does not describe the model ``variant`` serves, or None."""
    if profile.model_name != variant.model.name:
        return f"profile measured model {profile.model_name!r}, the variant serves {variant.model.name!r}"
    if variant.model.digest and variant.model.digest != profile.model_digest:
        return f"profile measured digest {profile.model_digest}, spec.model.digest is {variant.model.digest}"
    return None


async def load_profiles(kube: KubeClient, namespace: str, spec: ModelPoolSpec) -> ProfileView:
    view = ProfileView()
    cache: dict[str, dict[str, str]] = {}
    for index, variant in enumerate(spec.variants):
        if variant.profile is None:
            continue
        view.referenced += 1
        ref = variant.profile.config_map_key_ref
        try:
            if ref is None:
                where = f"spec.variants[{index}].profile.inline"
                profile = CapabilityProfile.model_validate(variant.profile.inline)
            else:
                where = f"ConfigMap {ref.name} key {ref.key}"
                if ref.name not in cache:
                    cm = await kube.get(resource_path("v1", "configmaps", namespace, ref.name))
                    cache[ref.name] = dict((cm or {}).get("data", {}) or {})
                text = cache[ref.name].get(ref.key)
                if text is None:
                    view.missing.append(f"{variant.name}: ConfigMap {ref.name} has no key {ref.key!r}")
                    continue
                profile = CapabilityProfile.from_text(text)
        except ValidationError as err:
            view.missing.append(f"{variant.name}: {where} is not a profile: {field_errors(err, '', 3)}")
            continue
        except ValueError as err:
            view.missing.append(f"{variant.name}: {where} is not a profile: {err}")
            continue
        except yaml.YAMLError as err:
            view.missing.append(f"{variant.name}: {where} is not a profile: {yaml_problem(err)}")
            continue
        reason = staleness(variant, profile)
        if reason:
            view.stale.append(f"{variant.name}: {reason}")
            continue
        view.profiles[variant.name] = profile
    return view


def yaml_problem(err: yaml.YAMLError) -> str:
    """The YAML error in one line, with where it is (PyYAML's own text spans several lines and
    quotes the document)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        what = ": ".join(filter(None, (err.context, err.problem)))
        return f"not valid YAML: {what} (line {mark.line + 1}, column {mark.column + 1})"
    return "not valid YAML: " + " ".join(str(err).split())


def profile_condition(view: ProfileView) -> tuple[bool, str, str] | None:
    """(ok, reason, message) for ProfilesCurrent; None when no variant references a profile."""
    if view.referenced == 0:
        return None
    if view.missing:
        return False, "ProfileMissing", "; ".join(view.missing)[:2000]
    if view.stale:
        return False, "ProfileStale", "re-run `modelpool models profile`: " + "; ".join(view.stale)[:2000]
    return True, "ProfilesCurrent", f"{len(view.profiles)} variant profile(s) current"
