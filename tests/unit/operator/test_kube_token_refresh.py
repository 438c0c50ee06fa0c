"""A token read from a file (a pod's projected service-account token, a kubeconfig's ``tokenFile``)
is read again as it rotates, by the operator's own client, its pre-start checks and kopf's login."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import kopf
import pytest
import yaml

from modelpool import kube
from modelpool.controllers.handlers import login
from modelpool.kube import TOKEN_REREAD_S, Credentials, FileToken, KubeClient, load_credentials, resource_path
from modelpool.startup import api_client

SERVER = "http://127.0.0.1:9"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ApiServer:
    """Accepts only the tokens in ``valid``; records the token of every request."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token not in self.valid:
            return httpx.Response(401, json={"kind": "Status", "reason": "Unauthorized", "message": "no"})
        return httpx.Response(200, json={"items": []})


def _client(auth: httpx.Auth | None, server: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=SERVER, auth=auth, transport=httpx.MockTransport(server))


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("one\n")
    return path


def test_the_token_is_read_again_once_its_period_is_over(token_file: Path) -> None:
    clock, server = Clock(), ApiServer("one", "two")
    with _client(FileToken(token_file, clock=clock), server) as http:
        http.get("/api")
        token_file.write_text("two\n")
        clock.now += TOKEN_REREAD_S - 1
        http.get("/api")  # within the period: the file is not read again
        clock.now += 1
        http.get("/api")
    assert server.seen == ["one", "one", "two"]


def test_a_request_refused_with_401_is_sent_again_with_the_files_new_token(token_file: Path) -> None:
    """The kubelet rotated the token and the API server no longer takes the old one: the request is
    sent once more with the new one at once, without waiting for the period."""
    clock, server = Clock(), ApiServer("two")
    auth = FileToken(token_file, clock=clock)
    with _client(auth, server) as http:
        assert http.get("/api").status_code == 401  # "one" refused, the file holds nothing newer
        token_file.write_text("two\n")
        assert http.get("/api").status_code == 200
    assert server.seen == ["one", "one", "two"]


def test_a_401_with_no_newer_token_is_not_sent_again(token_file: Path) -> None:
    server = ApiServer()
    with _client(FileToken(token_file, clock=Clock()), server) as http:
        assert http.get("/api").status_code == 401
    assert server.seen == ["one"]  # one try: a revoked login is not hammered


def test_a_file_that_cannot_be_read_keeps_the_last_token(token_file: Path) -> None:
    clock, server = Clock(), ApiServer("one")
    auth = FileToken(token_file, clock=clock)
    with _client(auth, server) as http:
        http.get("/api")
        token_file.unlink()
        clock.now += TOKEN_REREAD_S
        assert http.get("/api").status_code == 200
        token_file.write_text("\n")  # empty, as while being written by something less careful
        clock.now += TOKEN_REREAD_S
        assert http.get("/api").status_code == 200
    assert server.seen == ["one", "one", "one"]


def _kubeconfig(folder: Path, user: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": SERVER}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def kubeconfig_with_token_file(tmp_path: Path, token_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$KUBECONFIG naming a kubeconfig whose user's ``tokenFile`` is relative to its own folder."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "token").write_text(token_file.read_text())
    path = _kubeconfig(folder, {"tokenFile": "token"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.chdir(tmp_path)  # not the kubeconfig's folder: kubectl reads it relative to the file
    return folder / "token"


async def test_the_operators_client_follows_a_kubeconfigs_token_file(kubeconfig_with_token_file: Path) -> None:
    credentials = load_credentials()
    assert credentials.token == "one" and credentials.token_file == kubeconfig_with_token_file
    server = ApiServer("two")
    client = KubeClient(credentials, transport=httpx.MockTransport(server))
    kubeconfig_with_token_file.write_text("two\n")
    try:
        assert await client.list(resource_path("v1", "pods", "ns")) == []
    finally:
        await client.close()
    assert server.seen == ["one", "two"]


def test_the_pre_start_checks_follow_the_token_file_too(kubeconfig_with_token_file: Path) -> None:
    server = ApiServer("two")
    with api_client(load_credentials(), transport=httpx.MockTransport(server)) as http:
        kubeconfig_with_token_file.write_text("two\n")
        assert http.get("/api").status_code == 200
    assert server.seen == ["one", "two"]


def test_a_token_given_in_the_kubeconfig_is_sent_as_it_is(tmp_path: Path) -> None:
    credentials = kube.credentials_from_kubeconfig(_kubeconfig(tmp_path, {"token": "inline"}))
    assert credentials.token_file is None
    server = ApiServer("inline")
    with _client(credentials.auth(), server) as http:
        assert http.get("/api").status_code == 200
    assert server.seen == ["inline"]
    assert Credentials(server=SERVER, verify=False).auth() is None  # client certificates, or none


def test_kopfs_login_reads_the_kubeconfigs_token_file_at_each_login(kubeconfig_with_token_file: Path) -> None:
    """kopf's own kubeconfig login leaves out ``tokenFile``, so kopf would watch anonymously; and
    kopf logs in again after a 401, when the file holds the rotated token."""
    settings, logger = kopf.OperatorSettings(), logging.getLogger("test")
    first = login(settings=settings, logger=logger)
    assert first is not None and first.server == SERVER and first.token == "one"
    kubeconfig_with_token_file.write_text("two\n")
    again = login(settings=settings, logger=logger)
    assert again is not None and again.token == "two"


def test_in_a_pod_kopf_logs_in_with_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kubeconfig_with_token_file: Path
) -> None:
    """Both clients use the same identity: the service account first, as the operator's own client."""
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token\n")
    monkeypatch.setattr(kube, "SA_DIR", sa)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    calls: list[str] = []

    def service_account(**_: object) -> kopf.ConnectionInfo:
        calls.append("service account")
        return kopf.ConnectionInfo(server="https://10.0.0.1:443", token="pod-token")

    monkeypatch.setattr(kopf, "login_with_service_account", service_account)
    info = login(settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
    assert calls == ["service account"] and info is not None and info.token == "pod-token"
