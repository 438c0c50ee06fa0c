"""Before kopf starts the operator waits for the API server and for the permissions reconciling
needs, serving its liveness URL meanwhile, and names a --namespace that does not exist.

The API server is faked (httpx.MockTransport); the liveness URL is a real server on 127.0.0.1,
probed from the fake ``sleep`` the waits call between tries. The rules checked are compared with
the chart's RBAC as helm renders it.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from integration.delivery.deliverytools import render
from integration.delivery.permissions import rbac_grants
from modelpool import cli
from modelpool.devcluster.triton import free_port
from modelpool.kubelogin import Credentials
from modelpool.permissions import RULES, SSAR_PATH, accesses
from modelpool.startup import Readiness, WaitingLiveness, preflight
from unit.operator.helpers import operator_lines

CREDENTIALS = Credentials(server="https://k8s.test:6443", verify=False, token="t")
Obj = dict[str, Any]


@dataclass
class FakeApi:
    """An API server: down for the first ``down`` GETs of /api, then answering; SelfSubjectAccess-
    Reviews allowed except those in ``denied`` ("verb resource[/sub] namespace-or-empty")."""

    down: int = 0
    api_status: int = 200
    denied: set[str] = field(default_factory=set)
    ssar_status: int = 201
    throttled: int = 0  # answer 429 to this many reviews first
    namespaces: dict[str, int] = field(default_factory=dict)  # GET status of each namespace
    listable: set[str] | None = None  # namespaces a LIST shows; None: LIST refused (403)
    reviews: list[Obj] = field(default_factory=list)
    api_calls: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api":
            self.api_calls += 1
            if self.api_calls <= self.down:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(self.api_status, json={"versions": ["v1"]})
        if path == SSAR_PATH and request.method == "POST":
            if self.throttled > 0:
                self.throttled -= 1
                return httpx.Response(429, headers={"Retry-After": "2"}, json={"kind": "Status"})
            if self.ssar_status != 201:
                return httpx.Response(self.ssar_status, json={"kind": "Status"})
            attributes = json.loads(request.content)["spec"]["resourceAttributes"]
            self.reviews.append(attributes)
            resource = attributes["resource"] + (
                f"/{attributes['subresource']}" if "subresource" in attributes else ""
            )
            key = f"{attributes['verb']} {resource} {attributes.get('namespace', '')}".strip()
            return httpx.Response(201, json={"status": {"allowed": key not in self.denied}})
        if path == "/api/v1/namespaces":
            if self.listable is None:
                return httpx.Response(403, json={"kind": "Status", "reason": "Forbidden"})
            wanted = request.url.params["fieldSelector"].removeprefix("metadata.name=")
            return httpx.Response(
                200, json={"items": [{"metadata": {"name": wanted}}] if wanted in self.listable else []}
            )
        if path.startswith("/api/v1/namespaces/"):
            return httpx.Response(self.namespaces.get(path.rsplit("/", 1)[1], 200), json={})
        return httpx.Response(404, json={})


@dataclass
class Sleeper:
    """The waits' ``sleep``: records each delay, probes the liveness URL (and the readiness URL),
    runs ``then`` after the n-th sleep."""

    liveness: str | None = None
    then: dict[int, Callable[[], None]] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    probes: list[tuple[int, str]] = field(default_factory=list)
    readiness: str | None = None
    ready_probes: list[tuple[int, str]] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        for url, probes in ((self.liveness, self.probes), (self.readiness, self.ready_probes)):
            if url:
                response = httpx.get(url, timeout=5)
                probes.append((response.status_code, response.text))
        if (action := self.then.get(len(self.delays))) is not None:
            action()


def _run(
    api: FakeApi,
    sleep: Sleeper,
    namespaces: list[str] | None = None,
    liveness: str | None = None,
    readiness: Readiness | None = None,
) -> str | None:
    return preflight(
        CREDENTIALS,
        namespaces,
        liveness,
        sleep=sleep,
        transport=httpx.MockTransport(api),
        readiness=readiness,
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as kopf's server does
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


pytestmark = pytest.mark.usefixtures("operator_info_logs")


# --- the liveness URL while waiting ---------------------------------------------------------------


def test_liveness_is_served_while_the_api_server_is_away_and_freed_after() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    sleep = Sleeper(url)
    assert _run(FakeApi(down=3), sleep, liveness=url) is None
    assert sleep.delays == [1.0, 2.0, 4.0]
    assert [status for status, _ in sleep.probes] == [200, 200, 200]
    assert all("waiting for the API server at https://k8s.test:6443" in text for _, text in sleep.probes)
    assert _port_free(port), "the liveness port is still taken: kopf could not serve it"


def test_liveness_is_served_while_a_permission_is_missing() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    api = FakeApi(denied={"list pods"})
    sleep = Sleeper(url, then={2: api.denied.clear})
    assert _run(api, sleep, liveness=url) is None
    assert [status for status, _ in sleep.probes] == [200, 200]
    assert "waiting for permissions: list pods in all namespaces" in sleep.probes[0][1]
    assert _port_free(port)


def test_liveness_serves_only_its_path() -> None:
    port = free_port()
    with WaitingLiveness(f"http://127.0.0.1:{port}/healthz", "the first thing") as live:
        # What it waits for is said from the first answer on, then as the wait moves on.
        assert (
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text
            == "starting: waiting for the first thing\n"
        )
        live.say("something")
        assert (
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text
            == "starting: waiting for something\n"
        )
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    assert _port_free(port)


def test_liveness_port_is_freed_when_the_credentials_are_refused() -> None:
    port = free_port()
    refused = _run(FakeApi(api_status=401), Sleeper(), liveness=f"http://127.0.0.1:{port}/healthz")
    assert refused is not None and "401" in refused
    assert _port_free(port)


# --- the readiness URL ----------------------------------------------------------------------------


def _urls() -> tuple[str, str]:
    return f"http://127.0.0.1:{free_port()}/healthz", f"http://127.0.0.1:{free_port()}/readyz"


def _get(url: str) -> tuple[int, str]:
    response = httpx.get(url, timeout=5)
    return response.status_code, response.text


def test_readiness_is_503_while_the_api_server_is_away_though_liveness_is_200() -> None:
    live, ready = _urls()
    sleep = Sleeper(live, readiness=ready)
    with Readiness(ready, f"the API server at {CREDENTIALS.server}") as readiness:
        assert _get(ready) == (503, "not ready: waiting for the API server at https://k8s.test:6443\n")
        assert _run(FakeApi(down=2), sleep, liveness=live, readiness=readiness) is None
        assert [status for status, _ in sleep.probes] == [200, 200]
        assert (
            sleep.ready_probes
            == [(503, "not ready: waiting for the API server at https://k8s.test:6443\n")] * 2
        )
        # The waits are over: kopf may start, and this replica can do its job.
        assert _get(ready) == (200, "ready: starting kopf\n")
    assert _port_free(int(ready.split(":")[2].split("/")[0]))


def test_readiness_is_503_naming_a_missing_permission_and_200_once_granted() -> None:
    live, ready = _urls()
    api = FakeApi(denied={"list pods team-a"})
    sleep = Sleeper(live, then={2: api.denied.clear}, readiness=ready)
    with Readiness(ready, "the API server") as readiness:
        assert _run(api, sleep, ["team-a"], liveness=live, readiness=readiness) is None
        assert [status for status, _ in sleep.probes] == [200, 200]
        assert (
            sleep.ready_probes
            == [(503, "not ready: waiting for permissions: list pods in namespace team-a\n")] * 2
        )
        assert _get(ready) == (200, "ready: starting kopf\n")


def test_readiness_stays_503_when_the_credentials_are_refused() -> None:
    readiness = Readiness(None, "the API server")
    refused = _run(FakeApi(api_status=401), Sleeper(), readiness=readiness)
    assert refused is not None and "401" in refused
    assert readiness.answer == (503, "not ready: waiting for the API server at https://k8s.test:6443")


def test_readiness_says_running_once_kopf_is_ready_and_not_ready_once_it_stopped() -> None:
    readiness = Readiness(None, "the API server")
    assert readiness.answer == (503, "not ready: waiting for the API server")
    readiness.ready("standby, the leader lease ops/x is held by y")
    assert readiness.answer == (200, "ready: standby, the leader lease ops/x is held by y")
    kopf_ready = threading.Event()
    readiness.running(kopf_ready)
    assert readiness.answer == (200, "ready: starting kopf")
    kopf_ready.set()
    assert readiness.answer == (200, "ready: running")
    readiness.not_ready("kopf stopped")
    assert readiness.answer == (503, "not ready: kopf stopped")


def test_run_kopf_passes_its_ready_flag_and_readiness_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    readiness = Readiness(None, "the API server")
    seen: list[tuple[int, str]] = []

    def run(**kwargs: Any) -> None:  # kopf.run: starts, sets its ready_flag, runs, stops
        seen.append(readiness.answer)
        kwargs["ready_flag"].set()
        seen.append(readiness.answer)

    monkeypatch.setattr(kopf, "run", run)
    monkeypatch.setattr(cli, "use_kopf_logging", lambda verbose: None)
    # The handlers are not the subject here: registering them is left out.
    monkeypatch.setitem(sys.modules, "modelpool.controllers.handlers", types.ModuleType("handlers"))
    args = cli.build_parser().parse_args(["operator", "run", "--readiness", "http://127.0.0.1:1/readyz"])
    cli._run_kopf(args, CREDENTIALS, readiness)
    assert seen == [(200, "ready: starting kopf"), (200, "ready: running")]
    assert readiness.answer == (503, "not ready: kopf stopped")


def test_readiness_serves_only_its_path_and_frees_its_port() -> None:
    port = free_port()
    with Readiness(f"http://127.0.0.1:{port}/readyz", "something"):
        assert _get(f"http://127.0.0.1:{port}/readyz") == (503, "not ready: waiting for something\n")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 404
    assert _port_free(port)


# --- permissions ----------------------------------------------------------------------------------


def test_a_missing_essential_permission_is_waited_for_with_one_error_per_doubling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi(denied={"list pods team-a", "patch modelpools/status team-b"})
    sleep = Sleeper(then={6: api.denied.clear})
    assert _run(api, sleep, namespaces=["team-a", "team-b"]) is None
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]  # backs off to 30 s
    errors = operator_lines(caplog, "ERROR")
    assert len(errors) == 3, errors  # checks 1, 2, 4 (of 6 failed)
    for line in errors:
        assert "list pods in namespace team-a" in line
        assert "patch modelpools.modelpool.dev/status in namespace team-b" in line
        assert "grant them in the operator's Role/ClusterRole; the chart's rbac.yaml grants them" in line
    assert "(checks 1, next in 1 s)" in errors[0] and "(checks 4, next in 8 s)" in errors[2]
    assert operator_lines(caplog, "INFO") == [
        "the operator's permissions are granted after 7 checks; starting"
    ]
    assert operator_lines(caplog, "WARNING") == []


def test_a_recheck_asks_only_for_what_was_missing() -> None:
    # With many namespaces a full round is hundreds of reviews: a permission granted stays granted,
    # so each re-check asks only for those still missing (client-go's controllers would not ask at all).
    api = FakeApi(denied={"list pods team-a", "create events team-b"})
    sleep = Sleeper(then={2: lambda: api.denied.discard("list pods team-a")})
    assert _run(api, sleep, namespaces=["team-a", "team-b"]) is None
    everything = len(accesses(["team-a", "team-b"]))
    assert sleep.delays == [1.0, 2.0]
    assert len(api.reviews) == everything + 2 + 2  # the first round, then the two missing twice


def test_a_throttled_review_is_asked_again_not_skipped(caplog: pytest.LogCaptureFixture) -> None:
    # A 429 (API priority and fairness) is the API server asking for patience: before, one of them
    # made the operator start without the check.
    api = FakeApi(throttled=2, denied={"list pods"})
    sleep = Sleeper(then={4: api.denied.clear})
    assert _run(api, sleep) is None
    assert sleep.delays[:2] == [2.0, 2.0]  # its Retry-After, twice
    assert sleep.delays[2:] == [1.0, 2.0]  # then the wait for the missing permission
    assert not [w for w in operator_lines(caplog, "WARNING") if "cannot check" in w]
    assert len(operator_lines(caplog, "ERROR")) == 2


def test_missing_permissions_the_operator_can_do_without_are_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleep = Sleeper()
    assert _run(FakeApi(denied={"create events", "delete services"}), sleep) is None
    assert sleep.delays == []
    (warning,) = operator_lines(caplog, "WARNING")
    assert "delete services in all namespaces" in warning and "create events in all namespaces" in warning
    assert "(no Events on pools and policies)" in warning
    assert "the chart's rbac.yaml grants them" in warning
    assert operator_lines(caplog, "ERROR") == []


@pytest.mark.parametrize("status", [403, 404])
def test_access_reviews_that_cannot_be_made_are_one_warning(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = Sleeper()
    assert _run(FakeApi(ssar_status=status, denied={"list pods"}), sleep) is None
    assert sleep.delays == []
    (warning,) = operator_lines(caplog, "WARNING")
    assert "cannot check the operator's permissions" in warning and f"HTTP {status}" in warning
    assert operator_lines(caplog, "ERROR") == []


def test_cluster_wide_the_reviews_name_no_namespace() -> None:
    api = FakeApi()
    assert _run(api, Sleeper()) is None
    assert all("namespace" not in review for review in api.reviews)
    asked = {(r["verb"], r["resource"], r.get("subresource", "")) for r in api.reviews}
    assert ("watch", "pods", "") in asked and ("patch", "modelpools", "status") in asked
    assert ("list", "namespaces", "") not in asked  # a cluster-wide kopf does not observe namespaces
    assert len(api.reviews) == len(accesses(None))


def test_with_namespaces_each_is_reviewed_and_namespaces_listed_cluster_wide() -> None:
    api = FakeApi()
    assert _run(api, Sleeper(), namespaces=["team-a", "team-b"]) is None
    by_namespace: dict[str, set[tuple[str, str]]] = {}
    for review in api.reviews:
        by_namespace.setdefault(review.get("namespace", ""), set()).add((review["verb"], review["resource"]))
    assert by_namespace["team-a"] == by_namespace["team-b"]
    assert ("list", "pods") in by_namespace["team-a"]
    assert by_namespace[""] == {
        ("list", "namespaces"),
        ("watch", "namespaces"),
        ("list", "customresourcedefinitions"),
        ("watch", "customresourcedefinitions"),
    }


# --- --namespace that does not exist --------------------------------------------------------------


def test_a_namespace_that_does_not_exist_is_one_warning_and_not_reviewed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi(namespaces={"gone": 404})
    assert _run(api, Sleeper(), namespaces=["team-a", "gone"]) is None
    assert operator_lines(caplog, "WARNING") == [
        "namespace gone does not exist (yet): "
        "the operator watches it and reconciles its pools once it is created"
    ]
    assert {r.get("namespace") for r in api.reviews} == {"team-a", None}


def test_a_namespace_that_cannot_be_read_is_looked_up_in_the_list(caplog: pytest.LogCaptureFixture) -> None:
    # The chart's namespaced install grants list on namespaces, not get.
    api = FakeApi(namespaces={"team-a": 403, "gone": 403}, listable={"team-a"})
    assert _run(api, Sleeper(), namespaces=["team-a", "gone"]) is None
    (warning,) = operator_lines(caplog, "WARNING")
    assert warning.startswith("namespace gone does not exist (yet)")


def test_namespaces_that_cannot_be_read_or_listed_say_nothing(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi(namespaces={"team-a": 403})
    assert _run(api, Sleeper(), namespaces=["team-a"]) is None
    assert caplog.records == []
    assert {r.get("namespace") for r in api.reviews} == {"team-a", None}


# --- the rules and the chart ----------------------------------------------------------------------


def _missing(rbac_rules: Iterable[Obj], namespaces: list[str] | None, *, cluster_scoped: bool) -> list[str]:
    return [
        str(access)
        for access in accesses(namespaces)
        if access.rule.cluster_scoped == cluster_scoped
        and not rbac_grants(rbac_rules, access.rule.group, access.rule.resource, access.verb)
    ]


def test_the_chart_cluster_role_grants_every_rule() -> None:
    (cluster_role,) = [o for o in render() if o["kind"] == "ClusterRole"]
    for cluster_scoped in (False, True):
        assert _missing(cluster_role["rules"], None, cluster_scoped=cluster_scoped) == []


def test_the_chart_namespaced_roles_grant_every_rule() -> None:
    rendered = render(set_json={"watchNamespaces": json.dumps(["team-a", "team-b"])})
    roles = {
        o["metadata"]["namespace"]: o["rules"]
        for o in rendered
        if o["kind"] == "Role" and not o["metadata"]["name"].endswith("-leader-election")
    }
    assert sorted(roles) == ["team-a", "team-b"]
    for namespace, rules in roles.items():
        assert _missing(rules, [namespace], cluster_scoped=False) == []
    (cluster_role,) = [o for o in rendered if o["kind"] == "ClusterRole"]
    assert _missing(cluster_role["rules"], ["team-a"], cluster_scoped=True) == []


def _beyond_the_rules(rbac_rules: Iterable[Obj]) -> list[str]:
    """What RBAC rules grant that no rule of :data:`permissions.RULES` asks for."""
    asked = {(rule.group, rule.resource, verb) for rule in RULES for verb in rule.verbs}
    return [
        f"{verb} {resource} ({group or 'core'})"
        for rule in rbac_rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if (group, resource, verb) not in asked
    ]


@pytest.mark.parametrize("watch", [None, ["team-a"]], ids=["cluster-wide", "namespaced"])
def test_the_chart_grants_nothing_the_rules_do_not_ask_for(watch: list[str] | None) -> None:
    """Least privilege: every verb the chart grants is one the operator uses (and checks at the
    start); an update, a get or a delete it never sends is not granted."""
    rendered = render(set_json={"watchNamespaces": json.dumps(watch)} if watch is not None else None)
    for obj in rendered:
        if obj["kind"] in ("ClusterRole", "Role"):
            assert _beyond_the_rules(obj["rules"]) == [], obj["metadata"]["name"]


@pytest.mark.parametrize("watch", [None, ["team-a"]], ids=["cluster-wide", "namespaced"])
def test_the_chart_grants_the_leader_lease_in_the_release_namespace(watch: list[str] | None) -> None:
    rendered = render(
        namespace="ops", set_json={"watchNamespaces": json.dumps(watch)} if watch is not None else None
    )
    (role,) = [o for o in rendered if o["kind"] == "Role" and o["metadata"]["namespace"] == "ops"]
    lease = [a for a in accesses(watch, lease_namespace="ops") if a.rule.leader_election]
    assert {str(a) for a in lease} == {
        f"{verb} leases.coordination.k8s.io in namespace ops" for verb in ("get", "create", "update")
    }
    assert [
        str(a) for a in lease if not rbac_grants(role["rules"], a.rule.group, a.rule.resource, a.verb)
    ] == []
    # Only the Lease: the release namespace is not watched.
    assert [r["resources"] for r in role["rules"]] == [["leases"]]
    # Without leader election, no Role in the release namespace and no access asked for.
    off = render(namespace="ops", set_json={"leaderElection.enabled": "false"})
    assert [
        o for o in off if o["kind"] in ("Role", "RoleBinding") and o["metadata"]["namespace"] == "ops"
    ] == []
    assert not any(a.rule.leader_election for a in accesses(watch))


def test_rbac_grants_reads_rules_as_rbac_does() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["one"]},
    ]
    assert rbac_grants(rules, "", "pods", "list")
    assert not rbac_grants(rules, "", "pods", "watch")
    assert rbac_grants(rules, "apps", "deployments", "delete")  # apps/*: everything in apps
    assert not rbac_grants(rules, "", "secrets", "get")  # only one named Secret
