"""Why a variant's Triton containers fail, in the words a user acts on (pure; from pod status).

A replica that cannot start shows up elsewhere only as "ready 0/2". The kubelet knows why: the
image cannot be pulled, the container crashes (its last exit code, OOMKilled), or its config is
refused. :func:`container_failures` reads that from the pods' ``containerStatuses`` and
:func:`failure_message` turns it into one line naming the variant's field to check, for the
pool's ``Degraded`` condition and a Warning Event.

The Triton container runs with ``terminationMessagePolicy: FallbackToLogsOnError``, so after a
failed start the kubelet copies the tail of Triton's log (``failed to load 'x': …``) into
``lastState.terminated.message``; its last lines are quoted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]

IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
CRASH = frozenset({"CrashLoopBackOff"})

REASON_IMAGE_PULL = "ImagePullFailed"
REASON_CONFIG = "ContainerConfigInvalid"
REASON_CRASH = "ContainersCrashing"
FAILURE_REASONS = (REASON_IMAGE_PULL, REASON_CRASH, REASON_CONFIG)
"""The Degraded reasons this module gives, most actionable first."""

_QUOTE_CHARS = 240
"""How much of a termination message the condition quotes (its last lines)."""


@dataclass(frozen=True)
class ContainerFailure:
    """One failing container of one pod."""

    variant: str
    pod: str
    container: str
    reason: str
    """The Degraded reason: one of FAILURE_REASONS."""
    state: str
    """The kubelet's word: CrashLoopBackOff, ImagePullBackOff, OOMKilled, …"""
    detail: str
    """Exit code, restarts and the quoted message, or the kubelet's message."""


_GLOG = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")
"""Triton's log prefix (glog): severity, date, time, thread, file:line."""


def _last_lines(text: str) -> str:
    """The last two error lines of a log tail (Triton's ``E…`` lines and its closing ``error: …``),
    else its last two lines, without glog prefixes, cut to _QUOTE_CHARS from the front."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [
        line
        for line in lines
        if ((m := _GLOG.match(line)) and m.group(1) in "EF") or line.lower().startswith("error")
    ]
    quoted = " | ".join(_GLOG.sub("", line).strip('"') for line in (errors or lines)[-2:])
    if len(quoted) > _QUOTE_CHARS:
        quoted = "…" + quoted[-_QUOTE_CHARS:]
    return quoted


def _terminated_detail(terminated: Obj, restarts: int) -> tuple[str, str]:
    """(state, detail) of a container's last termination."""
    why = str(terminated.get("reason") or "Error")
    parts = [f"exit code {terminated.get('exitCode', '?')}"]
    if restarts:
        parts.append(f"{restarts} restart(s)")
    message = _last_lines(str(terminated.get("message") or ""))
    if message:
        parts.append(f"last log: {message}")
    return why, ", ".join(parts)


def _failure(variant: str, pod: str, status: Obj) -> ContainerFailure | None:
    name = str(status.get("name") or "?")
    state = status.get("state") or {}
    restarts = int(status.get("restartCount") or 0)
    waiting = state.get("waiting") or {}
    why = str(waiting.get("reason") or "")
    if why in IMAGE_PULL or why in CONFIG:
        reason = REASON_IMAGE_PULL if why in IMAGE_PULL else REASON_CONFIG
        return ContainerFailure(
            variant, pod, name, reason, why, _last_lines(str(waiting.get("message") or ""))
        )
    last = (status.get("lastState") or {}).get("terminated")
    if why in CRASH:
        ended, detail = _terminated_detail(last or {}, restarts)
        return ContainerFailure(variant, pod, name, REASON_CRASH, f"{why} ({ended})", detail)
    terminated = state.get("terminated")
    if terminated and terminated.get("exitCode", 0) != 0:
        # Between a crash and the back-off: the container has just exited.
        ended, detail = _terminated_detail(terminated, restarts)
        return ContainerFailure(variant, pod, name, REASON_CRASH, ended, detail)
    restarting = state.get("running") is not None and status.get("started") is False
    if restarting and last and last.get("exitCode", 0) != 0:
        # Restarted after a crash and not started yet (its startup probe waits for the model to
        # load again): a crash loop runs through this state at every restart, so it still counts,
        # or Degraded would flap (and post an Event) at each one. Once started it no longer counts,
        # so a readiness dip days after an old crash is no crash loop.
        ended, detail = _terminated_detail(last, restarts)
        return ContainerFailure(variant, pod, name, REASON_CRASH, f"restarted after {ended}", detail)
    return None


def container_failures(variant: str, pods: Sequence[Obj]) -> list[ContainerFailure]:
    """The failing containers of ``variant``'s active pods, in pod-name order."""
    found: list[ContainerFailure] = []
    for pod in sorted(pods, key=lambda p: str(p.get("metadata", {}).get("name", ""))):
        name = str(pod.get("metadata", {}).get("name", "?"))
        status = pod.get("status", {}) or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            failure = _failure(variant, name, cs)
            if failure is not None:
                found.append(failure)
    return found


def _fix(failure: ContainerFailure, index: int) -> str:
    field = f"spec.variants[{index}]"
    if failure.reason == REASON_IMAGE_PULL:
        return (
            f"check {field}.triton.image and that the namespace's service account can pull it "
            "(imagePullSecrets)"
        )
    if failure.reason == REASON_CONFIG:
        return f"check {field}.triton.args and env; `kubectl describe pod {failure.pod}` has the details"
    if "OOMKilled" in failure.state:
        return f"the container ran out of memory: raise {field}.resources.memory"
    return (
        f"Triton exits: check {field}.model (repository, name, version) and {field}.triton.args; "
        f"`kubectl logs {failure.pod} -c {failure.container} --previous` has its log"
    )


def failure_reason(failures: Sequence[ContainerFailure]) -> str:
    """The Degraded reason for ``failures`` (not empty): the most actionable one present."""
    present = {f.reason for f in failures}
    return next(r for r in FAILURE_REASONS if r in present)


def failure_message(failures: Sequence[ContainerFailure], variant_index: Mapping[str, int]) -> str:
    """One line: how many fail, the first failure of each variant with its fix."""
    first: dict[str, ContainerFailure] = {}
    for f in failures:
        first.setdefault(f.variant, f)
    pods = len({(f.variant, f.pod) for f in failures})
    lines = [
        f"{f.variant}: pod {f.pod} container {f.container} {f.state}"
        + (f" ({f.detail})" if f.detail else "")
        + f"; {_fix(f, variant_index.get(f.variant, 0))}"
        for f in first.values()
    ]
    return f"{pods} pod(s) failing: " + "; ".join(lines)
