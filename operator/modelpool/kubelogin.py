"""Where the operator logs in, and as whom: read once at the start, for every client it runs.

The order is controller-runtime's (what Kubernetes operators do): the kubeconfig files of
``$KUBECONFIG`` when it is set, else the pod's service account, else ``~/.kube/config``. Several
``$KUBECONFIG`` files are merged as kubectl merges them: the first file that sets
``current-context`` wins, and so does the first context, cluster or user of each name; a relative
path in an entry is read from the folder of the file that holds the entry.

The :class:`Credentials` serve the operator's own httpx clients and kopf's aiohttp session alike
(:mod:`modelpool.controllers.handlers`), through one token signer (:mod:`modelpool.kubeauth`), so
both log in as the same user with the same, current token.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelpool.kubeauth import (
    TOKEN_REREAD_S,
    ExecPlugin,
    ExecPluginError,
    RefreshedToken,
    Signer,
    StaticToken,
    Token,
    TokenFile,
    TokenSource,
)

Obj = dict[str, Any]

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(Exception):
    """The operator cannot log in: no usable kubeconfig or service account (says which, and why)."""


@dataclass
class Credentials:
    """The API server, how its certificate is checked, and who the operator is to it."""

    server: str
    verify: ssl.SSLContext | bool
    """The server's CA and the client certificate, when there is one (``False``: not checked)."""
    token: str | None = None
    refresh: TokenSource | None = None
    """Where ``token`` came from, to be asked for again as it rotates: the projected
    service-account token's file, a kubeconfig's ``tokenFile``, or its exec credential plugin."""
    token_valid_s: float = TOKEN_REREAD_S
    """How long ``token`` may be used before ``refresh`` is asked again (a plugin's token: until
    shortly before it expires)."""
    proxy: str | None = None
    """The cluster's ``proxy-url``."""
    namespace: str | None = None
    """The context's namespace, or the service account's."""
    _signer: Signer | None = field(default=None, init=False, repr=False, compare=False)

    def auth(self) -> Signer | None:
        """What signs this login's requests, one for all the clients made from these credentials
        (a plugin is run, a file read, once for all of them); None for a login by client
        certificate or none at all."""
        if self._signer is None:
            self._signer = signer(self)
        return self._signer


def signer(credentials: Credentials, *, clock: Callable[[], float] = time.monotonic) -> Signer | None:
    """A new signer of ``credentials``' requests (:meth:`Credentials.auth` shares one)."""
    if credentials.refresh is not None:
        first = Token(credentials.token, credentials.token_valid_s) if credentials.token else None
        return RefreshedToken(credentials.refresh, first, clock=clock)
    return StaticToken(credentials.token) if credentials.token else None


@dataclass(frozen=True)
class _Entry:
    """A named context, cluster or user of a kubeconfig, with the folder of the file it is in."""

    body: Obj
    base: Path


class _Kubeconfig:
    """One or more kubeconfig files merged as kubectl merges them."""

    def __init__(self, paths: list[Path]) -> None:
        self.current_context: str | None = None
        self.entries: dict[str, dict[str, _Entry]] = {"contexts": {}, "clusters": {}, "users": {}}
        for path in paths:
            config = yaml.safe_load(path.read_text()) or {}
            if not isinstance(config, dict):
                raise ValueError(f"{path} is not a kubeconfig (a YAML mapping)")
            self.current_context = self.current_context or config.get("current-context")
            for kind, key in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
                for item in config.get(kind) or ():
                    named = self.entries[kind]
                    if item["name"] not in named:
                        named[item["name"]] = _Entry(item.get(key) or {}, path.parent)

    def entry(self, kind: str, name: str | None, what: str) -> _Entry:
        if name is None or name not in self.entries[kind]:
            raise KeyError(f"{what} {name!r}")
        return self.entries[kind][name]


def _path(value: str, base: Path) -> str:
    return value if os.path.isabs(value) else str(base / value)


def _material(entry: _Entry, data_key: str, path_key: str, tmp: Path, name: str) -> str | None:
    """A certificate or key given inline (written to a private file) or by path, as a path."""
    if entry.body.get(data_key):
        target = tmp / name
        target.write_bytes(base64.b64decode(entry.body[data_key]))
        target.chmod(0o600)
        return str(target)
    if entry.body.get(path_key):
        return _path(entry.body[path_key], entry.base)
    return None


def _token_source(cluster: _Entry, user: _Entry) -> TokenSource | None:
    """Where the user's token comes from when it may change: its ``tokenFile`` or its ``exec``
    plugin (``token`` before ``tokenFile`` before ``exec``, as client-go); None for a ``token``
    given inline, or none. :class:`ExecPluginError` for an exec section that cannot be run."""
    if user.body.get("token"):
        return None
    if user.body.get("tokenFile"):
        return TokenFile(Path(_path(user.body["tokenFile"], user.base)))
    if user.body.get("exec"):
        cluster_info = dict(cluster.body)
        if not cluster_info.get("certificate-authority-data") and cluster_info.get("certificate-authority"):
            ca = Path(_path(cluster_info["certificate-authority"], cluster.base)).read_bytes()
            cluster_info["certificate-authority-data"] = base64.b64encode(ca).decode()
        return ExecPlugin.from_kubeconfig(user.body["exec"], user.base, cluster_info)
    return None


def credentials_from_kubeconfig(*paths: Path, context: str | None = None) -> Credentials:
    """The login of the kubeconfig files' current (or named) context."""
    config = _Kubeconfig(list(paths))
    ctx = config.entry("contexts", context or config.current_context, "context").body
    cluster = config.entry("clusters", ctx.get("cluster"), "cluster")
    user = config.entry("users", ctx["user"], "user") if ctx.get("user") else _Entry({}, cluster.base)
    tmp = Path(tempfile.mkdtemp(prefix="modelpool-kube-"))
    server = cluster.body["server"].rstrip("/")
    verify: ssl.SSLContext | bool = True
    if server.startswith("https://"):
        if cluster.body.get("insecure-skip-tls-verify"):
            ctx_ssl = ssl.create_default_context()
            ctx_ssl.check_hostname = False
            ctx_ssl.verify_mode = ssl.CERT_NONE
        else:
            ca = _material(cluster, "certificate-authority-data", "certificate-authority", tmp, "ca.crt")
            ctx_ssl = ssl.create_default_context(cafile=ca)
        cert = _material(user, "client-certificate-data", "client-certificate", tmp, "client.crt")
        key = _material(user, "client-key-data", "client-key", tmp, "client.key")
        if cert and key:
            ctx_ssl.load_cert_chain(cert, key)
        verify = ctx_ssl
    common: dict[str, Any] = {"proxy": cluster.body.get("proxy-url"), "namespace": ctx.get("namespace")}
    refresh = _token_source(cluster, user)
    if refresh is None:
        return Credentials(server, verify, token=user.body.get("token"), **common)
    first = refresh.fetch()
    return Credentials(server, verify, first.value, refresh, first.valid_s, **common)


def credentials_in_cluster() -> Credentials:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    namespace_file = SA_DIR / "namespace"
    return Credentials(
        server=f"https://{host}:{port}",
        verify=ssl.create_default_context(cafile=str(SA_DIR / "ca.crt")),
        token=(SA_DIR / "token").read_text().strip(),
        refresh=TokenFile(SA_DIR / "token"),
        namespace=namespace_file.read_text().strip() if namespace_file.is_file() else None,
    )


def in_cluster() -> bool:
    """Whether this is a pod with a service account."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").is_file()


def load_credentials() -> Credentials:
    """``$KUBECONFIG``'s files, else the pod's service account, else ``~/.kube/config``;
    :class:`KubeConfigError` (naming the files, or the service account, what is wrong and the fix)
    when none can be used."""
    env = os.environ.get("KUBECONFIG", "")
    named = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    if not named and in_cluster():
        try:
            return credentials_in_cluster()
        except (OSError, ssl.SSLError) as err:
            raise KubeConfigError(f"service account in {SA_DIR} is unusable: {err}") from err
    source = "$KUBECONFIG" if named else "the default kubeconfig"
    candidates = named or [Path.home() / ".kube" / "config"]
    paths = [p for p in candidates if p.is_file()]  # kubectl skips the files that do not exist
    shown = os.pathsep.join(map(str, candidates))
    if not paths:
        raise KubeConfigError(
            f"{source} {shown} does not exist and no in-cluster service account is mounted: "
            "set KUBECONFIG to a kubeconfig file, or run the operator in a pod"
        )
    try:
        return credentials_from_kubeconfig(*paths)
    except ExecPluginError as err:
        raise KubeConfigError(f"{source} {shown} cannot be used: {err}") from err
    except (OSError, ssl.SSLError, ValueError, yaml.YAMLError) as err:
        why = " ".join(str(err).split())  # one line (a YAML error spans several)
        raise KubeConfigError(f"{source} {shown} cannot be used: {type(err).__name__}: {why}") from err
    except (KeyError, TypeError, AttributeError, StopIteration) as err:
        raise KubeConfigError(
            f"{source} {shown} is not a usable kubeconfig (needs a current-context naming a context, "
            f"cluster and server; the context's user, if named, must exist): {type(err).__name__}: {err}"
        ) from err
