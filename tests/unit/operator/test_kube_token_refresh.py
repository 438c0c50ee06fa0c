"""A token that rotates is asked for again: one read from a file (a pod's projected service-account
token, a kubeconfig's ``tokenFile``) or given by an exec credential plugin, by the operator's own
client and its pre-start checks (kopf's session: test_kube_login.py)."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import re
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from modelpool.kube import KubeClient, resource_path
from modelpool.kubeauth import (
    EXEC_EARLY_S,
    EXEC_RETRY_S,
    TOKEN_REREAD_S,
    ExecPlugin,
    RefreshedToken,
    TokenFile,
)
from modelpool.kubelogin import (
    Credentials,
    KubeConfigError,
    credentials_from_kubeconfig,
    load_credentials,
    signer,
)
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
    with _client(RefreshedToken(TokenFile(token_file), clock=clock), server) as http:
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
    auth = RefreshedToken(TokenFile(token_file), clock=clock)
    with _client(auth, server) as http:
        assert http.get("/api").status_code == 401  # "one" refused, the file holds nothing newer
        token_file.write_text("two\n")
        assert http.get("/api").status_code == 200
    assert server.seen == ["one", "one", "two"]


def test_a_401_with_no_newer_token_is_not_sent_again(token_file: Path) -> None:
    server = ApiServer()
    with _client(RefreshedToken(TokenFile(token_file), clock=Clock()), server) as http:
        assert http.get("/api").status_code == 401
    assert server.seen == ["one"]  # one try: a revoked login is not hammered


def test_a_file_that_cannot_be_read_keeps_the_last_token(token_file: Path) -> None:
    clock, server = Clock(), ApiServer("one")
    auth = RefreshedToken(TokenFile(token_file), clock=clock)
    with _client(auth, server) as http:
        http.get("/api")
        token_file.unlink()
        clock.now += TOKEN_REREAD_S
        assert http.get("/api").status_code == 200
        token_file.write_text("\n")  # empty, as while being written by something less careful
        clock.now += TOKEN_REREAD_S
        assert http.get("/api").status_code == 200
    assert server.seen == ["one", "one", "one"]


def _kubeconfig(folder: Path, user: dict[str, object]) -> Path:
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


async def test_the_operators_client_follows_a_kubeconfigs_token_file(
    kubeconfig_with_token_file: Path,
) -> None:
    credentials = load_credentials()
    assert credentials.token == "one" and credentials.refresh == TokenFile(kubeconfig_with_token_file)
    server = ApiServer("two")
    client = KubeClient(credentials, transport=httpx.MockTransport(server))
    await asyncio.to_thread(kubeconfig_with_token_file.write_text, "two\n")
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
    credentials = credentials_from_kubeconfig(_kubeconfig(tmp_path, {"token": "inline"}))
    assert credentials.refresh is None
    server = ApiServer("inline")
    with _client(credentials.auth(), server) as http:
        assert http.get("/api").status_code == 200
    assert server.seen == ["inline"]
    assert Credentials(server=SERVER, verify=False).auth() is None  # client certificates, or none


PLUGIN = """#!{python}
import json, os, pathlib, sys
state = pathlib.Path(sys.argv[1])
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
runs = state / "runs"
runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
(state / "seen.json").write_text(json.dumps({{"info": info, "greeting": os.environ.get("GREETING")}}))
status = {{"token": (state / "token").read_text().strip()}}
if (state / "expires").exists():
    status["expirationTimestamp"] = (state / "expires").read_text().strip()
if (state / "fail").exists():
    sys.exit((state / "fail").read_text())
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$KUBECONFIG naming a kubeconfig whose user logs in with an exec plugin at ``./bin/plugin``
    (relative to the kubeconfig); the plugin prints the token in the returned folder's ``token``."""
    folder, state = tmp_path / "kube", tmp_path / "state"
    (folder / "bin").mkdir(parents=True)
    state.mkdir()
    (state / "token").write_text("one\n")
    script = folder / "bin" / "plugin"
    script.write_text(PLUGIN.format(python=sys.executable))
    script.chmod(0o755)
    exec_spec = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "./bin/plugin",
        "args": [str(state)],
        "env": [{"name": "GREETING", "value": "hello"}],
        "interactiveMode": "IfAvailable",
        "installHint": "install it from example.test",
    }
    path = _kubeconfig(folder, {"exec": exec_spec})
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.chdir(tmp_path)
    return state


def _runs(state: Path) -> int:
    return int((state / "runs").read_text())


def test_an_exec_plugin_gives_the_login_its_token(plugin: Path) -> None:
    credentials = load_credentials()
    assert credentials.token == "one" and isinstance(credentials.refresh, ExecPlugin)
    seen = json.loads((plugin / "seen.json").read_text())
    assert seen["greeting"] == "hello"  # the exec section's env
    assert seen["info"] == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }


def test_a_plugins_token_is_asked_for_again_before_it_expires(plugin: Path) -> None:
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=EXEC_EARLY_S + 30)
    (plugin / "expires").write_text(expires.isoformat().replace("+00:00", "Z"))
    credentials = load_credentials()
    source = credentials.refresh
    assert isinstance(source, ExecPlugin)
    assert 25 < credentials.token_valid_s <= 30  # asked for again a minute before it expires
    first = source.fetch()
    assert first.expires is not None and abs((first.expires - expires).total_seconds()) < 1
    clock, server = Clock(), ApiServer("one", "two")
    with _client(signer(credentials, clock=clock), server) as http:
        (plugin / "token").write_text("two\n")
        http.get("/api")
        clock.now += credentials.token_valid_s - 1
        http.get("/api")
        clock.now += 1
        http.get("/api")
    assert server.seen == ["one", "one", "two"]


def test_a_401_runs_the_plugin_again_but_not_for_every_request(plugin: Path) -> None:
    credentials = load_credentials()  # the plugin's first run
    clock, server = Clock(), ApiServer("two")
    with _client(signer(credentials, clock=clock), server) as http:
        clock.now += EXEC_RETRY_S
        (plugin / "token").write_text("two\n")
        assert http.get("/api").status_code == 200  # "one" refused, the plugin run, "two" taken
        assert _runs(plugin) == 2
        server.valid = set()  # the login is revoked for good
        clock.now += EXEC_RETRY_S
        for _ in range(5):
            assert http.get("/api").status_code == 401
    assert _runs(plugin) == 3  # one more run for the five refusals, not five


def test_a_plugin_that_fails_is_one_line_naming_it(plugin: Path) -> None:
    (plugin / "fail").write_text("no credentials cached: run the-login-command first")
    with pytest.raises(KubeConfigError) as caught:
        load_credentials()
    message = str(caught.value)
    assert "./bin/plugin" in message and "exit 1" in message and "run the-login-command first" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {"command": "no-such-plugin-anywhere"},
            "not installed or not on PATH (install it from example.test)",
        ),
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1"}, "give one of client.authentication"),
        ({"interactiveMode": "Always"}, "needs a terminal"),
        ({"interactiveMode": "Sometimes"}, "give Never or IfAvailable"),
        (
            {"env": [{"name": "GREETING"}]},
            "exec.env of the kubeconfig user's plugin './bin/plugin' needs a name",
        ),
    ],
)
def test_an_exec_section_that_cannot_work_is_named_with_the_fix(
    plugin: Path, change: dict[str, str], named: str
) -> None:
    path = Path(os.environ["KUBECONFIG"])
    config = yaml.safe_load(path.read_text())
    config["users"][0]["user"]["exec"].update(change)
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeConfigError, match=re.escape(named)):
        load_credentials()


def test_a_plugin_that_gives_a_certificate_and_no_token_is_refused(plugin: Path) -> None:
    (plugin / "token").write_text("")
    with pytest.raises(KubeConfigError, match="gave no token"):
        load_credentials()


def test_a_request_with_a_streamed_body_is_sent_again_after_a_401(token_file: Path) -> None:
    """The body is read before the first try, so the second sends it whole (not StreamConsumed)."""
    bodies: list[bytes] = []
    server = ApiServer("two")

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return server(request)

    auth = RefreshedToken(TokenFile(token_file), clock=Clock())
    with httpx.Client(base_url=SERVER, auth=auth, transport=httpx.MockTransport(answer)) as http:
        token_file.write_text("two\n")
        auth.current()  # "two" is read now: make the server refuse it once, then take it
        server.valid = {"three"}
        token_file.write_text("three\n")
        response = http.post("/api", content=iter([b"a", b"b"]))
    assert response.status_code == 200
    assert bodies == [b"ab", b"ab"] and server.seen == ["two", "three"]


SLOW_PLUGIN = """#!{python}
import json, time
time.sleep(1.0)
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "status": {{"token": "slow"}}}}))
"""


async def test_a_slow_plugin_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    """One caller runs the plugin (a second here) on a thread; another request on the event loop
    meanwhile waits for it on a thread too: the loop goes on serving."""
    script = tmp_path / "slow"
    await asyncio.to_thread(script.write_text, SLOW_PLUGIN.format(python=sys.executable))
    script.chmod(0o755)
    plugin = ExecPlugin(command=str(script))
    auth = RefreshedToken(plugin)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    ticker = asyncio.create_task(tick())
    first = asyncio.create_task(asyncio.to_thread(auth.current))  # a thread asks the plugin
    await asyncio.sleep(0.2)
    assert await auth.current_async() == "slow"  # waits for that run, off the loop
    assert await first == "slow"
    stop.set()
    await ticker
    assert max(gaps) < 0.3, max(gaps)


def test_what_a_plugin_says_on_stderr_when_it_succeeds_is_logged(
    plugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = Path(os.environ["KUBECONFIG"]).parent / "bin" / "plugin"
    script.write_text(
        script.read_text().replace("runs = state", "sys.stderr.write('using cached login\\n')\nruns = state")
    )
    with caplog.at_level(logging.INFO, logger="modelpool.kube"):
        assert load_credentials().token == "one"
    assert any("using cached login" in r.getMessage() for r in caplog.records), caplog.text
