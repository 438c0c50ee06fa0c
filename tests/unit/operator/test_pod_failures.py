"""Failing Triton containers in the pool's Degraded condition: reason, pod, the field to fix."""

from __future__ import annotations

from typing import Any

import pytest

from modelpool.api import conditions as c
from modelpool.api.base import Condition
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.pod_failures import container_failures, failure_message
from modelpool.controllers.pool_status import ChildIssues, ReplicaPlan, compute_status, container_problem

NOW = "2026-11-24T00:00:00Z"

SPEC = ModelPoolSpec.model_validate(
    {
        "gpuPool": {"gpuBudget": 8},
        "variants": [
            {"name": "small", "tier": "small", "model": {"name": "s", "repository": "/m"}},
            {"name": "large", "tier": "large", "model": {"name": "l", "repository": "s3://b/m"}},
        ],
    }
)
PLANS = {"small": ReplicaPlan(1, "min"), "large": ReplicaPlan(1, "min")}
TRITON_LOG = (  # the tail of a real tritonserver 2.51 log (the wheel's), model missing from its repository
    "E1124 11:40:03.449369 5406 model_repository_manager.cc:1415] \"failed to poll model 'l': model not "
    'found in any model repository."\n'
    "| strict_readiness                 | 1    |\n"
    "+----------------------------------+------+\n\n"
    'I1124 11:40:03.451066 5406 server.cc:305] "Waiting for in-flight requests to complete."\n'
    'I1124 11:40:03.451115 5406 server.cc:345] "Timeout 30: Found 0 live models and 0 in-flight '
    'non-inference requests"\n'
    "error: creating server: Internal - failed to load all models\n"
)


def _pod(
    variant: str, name: str, container_status: dict[str, Any] | None, phase: str = "Running"
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if container_status is not None:
        status["containerStatuses"] = [{"name": "triton", "ready": False, **container_status}]
    return {
        "metadata": {"name": name, "labels": {"modelpool.dev/variant": variant}},
        "spec": {"nodeName": "n1"},
        "status": status,
    }


def _crashing(reason: str = "Error", exit_code: int = 1, message: str = TRITON_LOG) -> dict[str, Any]:
    return {
        "restartCount": 4,
        "state": {
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
        },
        "lastState": {"terminated": {"reason": reason, "exitCode": exit_code, "message": message}},
    }


def _degraded(pods: list[dict[str, Any]]) -> Condition:
    deps = {"small": {"status": {"readyReplicas": 1}}, "large": {"status": {"readyReplicas": 0}}}
    status = compute_status(SPEC, 2, PLANS, deps, pods, [], ChildIssues(), NOW)
    cond = c.find(status.conditions, c.DEGRADED)
    assert cond is not None
    return cond


def test_a_crash_loop_names_the_pod_the_exit_the_log_and_the_model_field() -> None:
    cond = _degraded([_pod("small", "s-1", {"state": {"running": {}}}), _pod("large", "l-1", _crashing())])
    assert cond.status == "True" and cond.reason == "ContainersCrashing"
    assert cond.message.startswith(
        "1 pod(s) failing: large: pod l-1 container triton CrashLoopBackOff (Error)"
    )
    assert "exit code 1, 4 restart(s)" in cond.message
    # The last two error lines of the log tail (FallbackToLogsOnError), without the glog prefix.
    assert (
        "last log: failed to poll model 'l': model not found in any model repository. | error: creating "
        "server: Internal - failed to load all models)"
    ) in cond.message
    assert "check spec.variants[1].model (repository, name, version)" in cond.message
    assert "kubectl logs l-1 -c triton --previous" in cond.message
    assert cond.observed_generation == 2


def test_out_of_memory_asks_for_more_memory() -> None:
    cond = _degraded([_pod("small", "s-1", _crashing("OOMKilled", 137, ""))])
    assert cond.reason == "ContainersCrashing"
    assert "CrashLoopBackOff (OOMKilled) (exit code 137, 4 restart(s))" in cond.message
    assert "raise spec.variants[0].resources.memory" in cond.message


@pytest.mark.parametrize("waiting", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_an_image_that_cannot_be_pulled_names_the_image_field(waiting: str) -> None:
    pull = {"state": {"waiting": {"reason": waiting, "message": 'pull "nvcr.io/x:bad": not found'}}}
    cond = _degraded([_pod("large", "l-1", pull, phase="Pending")])
    assert cond.reason == "ImagePullFailed"
    assert f'large: pod l-1 container triton {waiting} (pull "nvcr.io/x:bad": not found)' in cond.message
    assert "check spec.variants[1].triton.image" in cond.message


def test_image_pull_comes_first_and_every_failing_variant_is_named() -> None:
    pull = {"state": {"waiting": {"reason": "ImagePullBackOff"}}}
    cond = _degraded(
        [_pod("small", "s-1", _crashing()), _pod("small", "s-2", _crashing()), _pod("large", "l-1", pull)]
    )
    assert cond.reason == "ImagePullFailed"
    assert cond.message.startswith("3 pod(s) failing: small: pod s-1")
    assert "large: pod l-1 container triton ImagePullBackOff" in cond.message
    assert "s-2" not in cond.message  # one example per variant


def test_a_container_that_just_exited_is_crashing_and_a_clean_exit_is_not() -> None:
    exited = {"restartCount": 1, "state": {"terminated": {"reason": "Error", "exitCode": 2}}}
    assert [f.state for f in container_failures("v", [_pod("v", "p", exited)])] == ["Error"]
    clean = {"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    starting = {"state": {"waiting": {"reason": "ContainerCreating"}}}
    ready_after_crash = {
        "restartCount": 3,
        "ready": True,
        "state": {"running": {}},
        "lastState": _crashing()["lastState"],
    }
    # Started long after an old crash, briefly not ready (a readiness dip): no crash loop.
    dip_after_old_crash = {**ready_after_crash, "ready": False, "started": True}
    pods = [_pod("v", "p", s) for s in (clean, starting, ready_after_crash, dip_after_old_crash)]
    assert container_failures("v", pods) == []


def test_a_crash_loop_stays_degraded_through_its_restarts_with_one_event() -> None:
    """A crash loop passes through `running` (not ready, loading its model) at every restart:
    that still counts, so Degraded does not flap and post an Event per crash."""
    from modelpool.controllers.pool_reconciler import _report_failures

    restarted = {
        "restartCount": 4,
        "started": False,
        "state": {"running": {}},
        "lastState": _crashing()["lastState"],
    }
    posted: list[tuple[str, ...]] = []
    previous: list[Condition] = []
    for container in (_crashing(), restarted, _crashing(), restarted):
        deps = {"small": {"status": {"readyReplicas": 0}}, "large": {"status": {"readyReplicas": 0}}}
        pods = [_pod("large", "l-1", container)]
        status = compute_status(SPEC, 2, PLANS, deps, pods, previous, ChildIssues(), NOW)
        _report_failures(container_problem(SPEC, pods), previous, lambda *event: posted.append(event))
        cond = c.find(status.conditions, c.DEGRADED)
        assert cond is not None and cond.reason == "ContainersCrashing", cond
        previous = status.conditions
    assert "restarted after Error (exit code 1, 4 restart(s)" in cond.message
    assert [e[1] for e in posted] == ["ContainersCrashing"]


def test_failures_and_unschedulable_pods_are_both_said() -> None:
    pending = _pod("large", "l-2", None, phase="Pending")
    pending["spec"] = {}
    pending["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes"}
    ]
    cond = _degraded([_pod("large", "l-1", _crashing()), pending])
    assert cond.reason == "ContainersCrashing"
    assert (
        "1 pod(s) failing: large: pod l-1" in cond.message
        and "1 pod(s) pending: l-2: 0/2 nodes" in cond.message
    )


def test_a_long_log_line_is_cut_from_the_front() -> None:
    long_line = "x" * 500 + " the end"
    message = failure_message(
        container_failures("v", [_pod("v", "p", _crashing(message=long_line))]), {"v": 0}
    )
    assert "…" in message and message.count("x") < 260 and "the end" in message


def test_healthy_pods_are_not_degraded() -> None:
    cond = _degraded([_pod("small", "s-1", {"state": {"running": {}}, "ready": True})])
    assert cond.status == "False" and cond.reason == "AsExpected"


def test_one_warning_event_per_change_of_failure_not_per_pass() -> None:
    from modelpool.controllers.pool_reconciler import _report_failures

    def degraded(status: str, reason: str) -> list[Condition]:
        return c.set_condition([], c.DEGRADED, status, reason, f"{reason}: pod l-1", 1, NOW)

    posted: list[tuple[str, ...]] = []

    def report(failure: tuple[str, str] | None, before: list[Condition]) -> None:
        _report_failures(failure, before, lambda *event: posted.append(event))

    crashing = ("ContainersCrashing", "1 pod(s) failing: large: pod l-1")
    report(crashing, degraded("False", "AsExpected"))
    assert posted == [("Warning", "ContainersCrashing", "1 pod(s) failing: large: pod l-1")]
    report(crashing, degraded("True", "ContainersCrashing"))
    report(None, degraded("False", "AsExpected"))
    report(None, degraded("True", "ContainersCrashing"))
    assert len(posted) == 1  # still crashing, no container failure, recovered: no Event
    report(("ImagePullFailed", "pull"), degraded("True", "ContainersCrashing"))
    report(crashing, [])
    report(crashing, degraded("True", "PodsUnschedulable"))
    expected = ["ContainersCrashing", "ImagePullFailed", "ContainersCrashing", "ContainersCrashing"]
    assert [e[1] for e in posted] == expected


def test_the_triton_container_keeps_its_log_tail_when_it_fails() -> None:
    from modelpool.builders.triton import build_pod_template

    container = build_pod_template("bank", SPEC, SPEC.variants[1])["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
