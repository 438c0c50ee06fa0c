"""Where the operator logs in (controller-runtime's order, kubeconfig files merged as kubectl merges
them) and kopf's session: the same server, TLS and signer as the operator's own clients, a 401
sent again with a fresh token, and logins after a refusal paced with an ERROR line."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import kopf
import pytest
import yaml
from aiohttp import web

from modelpool import cli, kubelogin
from modelpool.controllers.kopf_login import RELOGIN_MAX_WAIT_S, RELOGIN_RESET_S, Relogins, kopf_session
from modelpool.kubeauth import ExecPlugin, TokenFile
from modelpool.kubelogin import Credentials, KubeConfigError, load_credentials
from modelpool.startup import Readiness


def _write(path: Path, config: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(autouse=True)
def no_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_kubeconfig_files_are_merged_as_kubectl_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The context in one file, its cluster and user in another: the first file that sets a name
    wins, and the user's relative tokenFile is read from its own file's folder."""
    first = _write(
        tmp_path / "a" / "config",
        {
            "current-context": "dev",
            "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
        },
    )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "token").write_text("from-b\n")
    second = _write(
        tmp_path / "b" / "config",
        {
            "current-context": "other",
            "clusters": [
                {"name": "c", "cluster": {"server": "http://127.0.0.1:9", "proxy-url": "http://proxy:3128"}}
            ],
            "users": [{"name": "u", "user": {"tokenFile": "token"}}],
        },
    )
    third = _write(tmp_path / "c" / "config", {"users": [{"name": "u", "user": {"token": "shadowed"}}]})
    missing = tmp_path / "nowhere" / "config"  # kubectl skips a listed file that does not exist
    monkeypatch.setenv("KUBECONFIG", ":".join(map(str, (missing, first, second, third))))
    monkeypatch.chdir(tmp_path)
    credentials = load_credentials()
    assert credentials.server == "http://127.0.0.1:9" and credentials.token == "from-b"
    assert credentials.refresh == TokenFile(tmp_path / "b" / "token")
    assert credentials.namespace == "team" and credentials.proxy == "http://proxy:3128"


def test_a_context_naming_a_user_that_is_nowhere_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the operator went on anonymously while kopf found the user elsewhere (or gave up)."""
    config = _write(
        tmp_path / "config",
        {
            "current-context": "x",
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "ghost"}}],
            "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        },
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(KubeConfigError, match="user 'ghost'"):
        load_credentials()


def _pod(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def in_cluster() -> Credentials:
        calls.append("service account")
        return Credentials(server="https://10.0.0.1:443", verify=False, token="pod")

    monkeypatch.setattr(kubelogin, "in_cluster", lambda: True)
    monkeypatch.setattr(kubelogin, "credentials_in_cluster", in_cluster)
    return calls


def test_in_a_pod_a_set_kubeconfig_comes_first_then_the_service_account_then_the_home_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """controller-runtime's order: $KUBECONFIG, the pod's service account, ~/.kube/config."""
    calls = _pod(monkeypatch)
    cluster = {"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}
    config = {
        "current-context": "x",
        "contexts": [{"name": "x", "context": {"cluster": "c"}}],
        "clusters": [cluster],
    }
    _write(tmp_path / "home" / ".kube" / "config", config)
    assert load_credentials().token == "pod" and calls == ["service account"]
    monkeypatch.setenv("KUBECONFIG", str(_write(tmp_path / "set", config)))
    assert load_credentials().server == "http://127.0.0.1:9" and calls == ["service account"]


def test_a_plugin_that_asks_for_the_cluster_gets_its_ca_read_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """client-go passes the CA as data even when the kubeconfig names it by path."""
    (tmp_path / "ca.pem").write_bytes(b"not really a CA")
    exec_spec = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "true",
        "provideClusterInfo": True,
    }
    config = _write(
        tmp_path / "config",
        {
            "current-context": "x",
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": "http://127.0.0.1:9",
                        "certificate-authority": "ca.pem",
                        "extensions": [
                            {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "a"}}
                        ],
                    },
                }
            ],
            "users": [{"name": "u", "user": {"exec": exec_spec}}],
        },
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(KubeConfigError):  # `true` prints no credential; the plugin was built first
        load_credentials()
    cluster = yaml.safe_load(config.read_text())["clusters"][0]["cluster"]
    entry = kubelogin._Entry(cluster, tmp_path)
    plugin = kubelogin._token_source(entry, kubelogin._Entry({"exec": exec_spec}, tmp_path))
    assert isinstance(plugin, ExecPlugin) and plugin.cluster is not None
    assert base64.b64decode(plugin.cluster["certificate-authority-data"]) == b"not really a CA"
    assert plugin.cluster["config"] == {"audience": "a"} and plugin.cluster["server"] == "http://127.0.0.1:9"


class TokenServer:
    """An API server on 127.0.0.1 that takes only the tokens in ``valid``."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: list[tuple[str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append((token, await request.read()))
        if token not in self.valid:
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({"kind": "APIVersions"})


async def test_kopfs_session_signs_with_the_operators_token_and_sends_a_401_again(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    server = TokenServer("two")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    credentials = Credentials(
        server=f"http://127.0.0.1:{port}",
        verify=True,
        token="one",
        refresh=TokenFile(token_file),
        namespace="ns",
    )
    info = kopf_session(credentials)
    try:
        assert info.server == credentials.server and info.default_namespace == "ns"
        token_file.write_text("two\n")  # rotated; the API server no longer takes "one"
        async with info.aiohttp_session.post(f"{credentials.server}/api", data=b'{"a": 1}') as response:
            assert response.status == 200, await response.text()
            assert json.loads(await response.text()) == {"kind": "APIVersions"}
        assert server.seen == [("one", b'{"a": 1}'), ("two", b'{"a": 1}')]
        # The operator's own clients share the signer: no second read, the same token.
        assert credentials.auth() is credentials.auth()
        assert credentials.auth().cached() == "two"  # type: ignore[union-attr]
    finally:
        await info.aiohttp_session.close()
        await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_logins_after_a_refusal_wait_longer_each_time_with_an_error_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    relogins = Relogins(clock)
    with caplog.at_level(logging.ERROR, logger="modelpool.operator"):
        waits = []
        for _ in range(9):
            waits.append(relogins.wait_s())
            clock.now += 1
    assert waits == [0, 1, 2, 4, 8, 16, RELOGIN_MAX_WAIT_S, RELOGIN_MAX_WAIT_S, RELOGIN_MAX_WAIT_S]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 4 and all(
        "refused the operator's credentials (401)" in e for e in errors
    )  # 1, 2, 4, 8
    clock.now += RELOGIN_RESET_S  # long after: a new refusal starts from the first wait again
    assert relogins.wait_s() == 0


def test_the_cli_hands_kopf_the_credentials_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf logs in with the very credentials (and signer) the checks before it used."""
    seen: dict[str, object] = {}

    def run(**kwargs: object) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(kopf, "run", run)
    monkeypatch.setattr(cli, "use_kopf_logging", lambda verbose: None)
    credentials = Credentials(server="http://127.0.0.1:9", verify=False, token="t")
    args = cli.build_parser().parse_args(["operator", "run"])
    cli._run_kopf(args, credentials, Readiness(None, "nothing"))
    memo = seen["memo"]
    assert isinstance(memo, kopf.Memo) and memo["credentials"] is credentials
