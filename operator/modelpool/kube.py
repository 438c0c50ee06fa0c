"""A small typed async client for the Kubernetes API (httpx).

kopf watches and dispatches; this client does the few reads and writes the
controllers make: get, list, create, server-side apply, merge-patch, delete.
It logs in the way kubectl does: in-cluster service account, else the
kubeconfig named by ``KUBECONFIG`` (first file) or ``~/.kube/config``.
"""

from __future__ import annotations

import base64
import json as jsonlib
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from modelpool.kubeauth import (
    TOKEN_REREAD_S,
    ExecPlugin,
    ExecPluginError,
    RefreshedToken,
    StaticToken,
    Token,
    TokenFile,
    TokenSource,
)
from modelpool.scaling.metrics import record_kube_request

Obj = dict[str, Any]

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "modelpool-operator"


class KubeError(Exception):
    """A non-success answer from the API server."""

    def __init__(self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes  # details.causes[].reason of the Status, e.g. NamespaceTerminating

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted, so nothing new may be created in it."""
        return self.status == 403 and "NamespaceTerminating" in self.causes


class KubeConfigError(Exception):
    """The operator cannot log in: no usable kubeconfig or service account (says which, and why)."""


@dataclass(frozen=True)
class Credentials:
    server: str
    verify: ssl.SSLContext | bool
    token: str | None = None
    refresh: TokenSource | None = None
    """Where ``token`` came from, to be asked for again as it rotates: the projected
    service-account token's file, a kubeconfig's ``tokenFile``, or its exec credential plugin."""
    token_valid_s: float = TOKEN_REREAD_S
    """How long ``token`` may be used before ``refresh`` is asked again (a plugin's token: until
    shortly before it expires)."""

    def auth(self, *, clock: Callable[[], float] = time.monotonic) -> httpx.Auth | None:
        """What signs this login's requests: a bearer token, kept fresh from ``refresh`` when it
        rotates; None for a login by client certificate or none at all."""
        if self.refresh is not None:
            first = Token(self.token, self.token_valid_s) if self.token else None
            return RefreshedToken(self.refresh, first, clock=clock)
        return StaticToken(self.token) if self.token else None


def _materialise(data_b64: str | None, path: str | None, base: Path, tmp: Path, name: str) -> str | None:
    if data_b64:
        target = tmp / name
        target.write_bytes(base64.b64decode(data_b64))
        target.chmod(0o600)
        return str(target)
    if path:
        p = Path(path)
        return str(p if p.is_absolute() else base / p)
    return None


def _current(path: Path, context: str | None = None) -> tuple[Obj, Obj]:
    """The cluster and the user of the kubeconfig's current (or named) context."""
    config = yaml.safe_load(path.read_text())
    ctx_name = context or config.get("current-context")
    ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
    user: Obj = next((u["user"] for u in config.get("users", []) if u["name"] == ctx.get("user")), {}) or {}
    return cluster, user


def _token_source(cluster: Obj, user: Obj, base: Path) -> TokenSource | None:
    """Where the user's token comes from when it may change: its ``tokenFile`` (relative to the
    kubeconfig's folder, as kubectl reads it) or its ``exec`` plugin; None for a ``token`` given
    inline, or none. :class:`ExecPluginError` for an exec section that cannot be run."""
    if user.get("token"):
        return None
    if user.get("tokenFile"):
        path = Path(user["tokenFile"])
        return TokenFile(path if path.is_absolute() else base / path)
    if user.get("exec"):
        return ExecPlugin.from_kubeconfig(user["exec"], base, cluster)
    return None


def kubeconfig_path() -> Path:
    """The kubeconfig kubectl would read first: ``$KUBECONFIG``'s first file, else ~/.kube/config."""
    env = os.environ.get("KUBECONFIG")
    return Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"


def in_cluster() -> bool:
    """Whether this is a pod with a service account, whose login comes before any kubeconfig."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").is_file()


def kubeconfig_token_source() -> TokenSource | None:
    """Where the kubeconfig's current user gets its token, when it is a file or a plugin (and this
    is not a pod with a service account); None otherwise, or when the kubeconfig cannot be read
    (the operator's own login, before kopf's, has said why)."""
    if in_cluster():
        return None
    path = kubeconfig_path()
    try:
        return _token_source(*_current(path), path.parent)
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError, StopIteration):
        return None
    except ExecPluginError:
        return None


def credentials_from_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    cluster, user = _current(path, context)
    base = path.parent
    tmp = Path(tempfile.mkdtemp(prefix="modelpool-kube-"))
    server = cluster["server"].rstrip("/")
    verify: ssl.SSLContext | bool = True
    if server.startswith("https://"):
        if cluster.get("insecure-skip-tls-verify"):
            ctx_ssl = ssl.create_default_context()
            ctx_ssl.check_hostname = False
            ctx_ssl.verify_mode = ssl.CERT_NONE
        else:
            ca = _materialise(
                cluster.get("certificate-authority-data"),
                cluster.get("certificate-authority"),
                base,
                tmp,
                "ca.crt",
            )
            ctx_ssl = ssl.create_default_context(cafile=ca)
        cert = _materialise(
            user.get("client-certificate-data"), user.get("client-certificate"), base, tmp, "client.crt"
        )
        key = _materialise(user.get("client-key-data"), user.get("client-key"), base, tmp, "client.key")
        if cert and key:
            ctx_ssl.load_cert_chain(cert, key)
        verify = ctx_ssl
    refresh = _token_source(cluster, user, base)
    if refresh is None:
        return Credentials(server=server, verify=verify, token=user.get("token"))
    first = refresh.fetch()
    return Credentials(server, verify, first.value, refresh, first.valid_s)


def credentials_in_cluster() -> Credentials:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    return Credentials(
        server=f"https://{host}:{port}",
        verify=ssl.create_default_context(cafile=str(SA_DIR / "ca.crt")),
        token=(SA_DIR / "token").read_text().strip(),
        refresh=TokenFile(SA_DIR / "token"),
    )


def load_credentials() -> Credentials:
    """The in-cluster service account, else the kubeconfig; :class:`KubeConfigError` (naming the
    file, or the service account, and what is wrong with it) when neither can be used."""
    if in_cluster():
        try:
            return credentials_in_cluster()
        except (OSError, ssl.SSLError) as err:
            raise KubeConfigError(f"service account in {SA_DIR} is unusable: {err}") from err
    path = kubeconfig_path()
    source = "$KUBECONFIG" if os.environ.get("KUBECONFIG") else "the default kubeconfig"
    if not path.is_file():
        raise KubeConfigError(
            f"{source} {path} does not exist and no in-cluster service account is mounted: "
            "set KUBECONFIG to a kubeconfig file, or run the operator in a pod"
        )
    try:
        return credentials_from_kubeconfig(path)
    except ExecPluginError as err:
        raise KubeConfigError(f"{source} {path} cannot be used: {err}") from err
    except (OSError, ssl.SSLError, ValueError, yaml.YAMLError) as err:
        why = " ".join(str(err).split())  # one line (a YAML error spans several)
        raise KubeConfigError(f"{source} {path} cannot be used: {type(err).__name__}: {why}") from err
    except (KeyError, TypeError, AttributeError, StopIteration) as err:
        raise KubeConfigError(
            f"{source} {path} is not a usable kubeconfig (needs a current-context naming a context, "
            f"cluster and server): {type(err).__name__}: {err}"
        ) from err


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    """REST path of a collection or object: core ``v1`` under /api, groups under /apis."""
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = prefix
    if namespace is not None:
        path += f"/namespaces/{quote(namespace)}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
    return path


_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def request_kind(method: str, path: str) -> tuple[str, str]:
    """The Kubernetes verb and resource of a request to ``path``: ``("list", "deployments")``,
    ``("patch", "modelpools/status")``; a GET of a collection is a ``list``."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]  # /api/v1/... or /apis/group/version/...
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # a namespaced resource; /api/v1/namespaces/<name> is the namespace itself
    resource = rest[0] if rest else ""
    if len(rest) >= 3:
        resource += "/" + rest[2]
    verb = _VERBS.get(method, "get" if len(rest) >= 2 else "list")
    return verb, resource


_YAML_ESCAPES = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff]")
"""What YAML refuses raw (DEL, C1 controls, two non-characters) or reads as a line break, which
a quoted scalar folds into a space (NEL, U+2028, U+2029)."""


def _body(obj: Any) -> bytes | None:
    """A request body as JSON that YAML reads too. The API server reads a server-side apply body as
    YAML, which refuses or folds some characters raw (:data:`_YAML_ESCAPES`) that a spec's free
    text may hold, and refuses a surrogate pair's escapes (how ``ensure_ascii`` writes characters beyond
    U+FFFF): so those few are escaped, and everything else is sent as UTF-8."""
    if obj is None:
        return None
    text = jsonlib.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _YAML_ESCAPES.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


class KubeClient:
    """The operator's reads and writes; one pooled HTTP/1.1 client."""

    def __init__(
        self,
        credentials: Credentials,
        timeout: float = 30.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "modelpool-operator"}
        self._http = httpx.AsyncClient(
            base_url=credentials.server,
            verify=credentials.verify,
            headers=headers,
            auth=credentials.auth(),
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_environment(cls) -> KubeClient:
        return cls(load_credentials())

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> Obj:
        headers = {"Content-Type": content_type or "application/json"} if json is not None else None
        record_kube_request(*request_kind(method, path))
        response = await self._http.request(method, path, content=_body(json), params=params, headers=headers)
        if response.status_code >= 400:
            causes: tuple[str, ...] = ()
            try:
                body = response.json()
                reason, message = str(body.get("reason", "")), str(body.get("message", response.text))
                details = body.get("details") or {}
                causes = tuple(str(c.get("reason", "")) for c in details.get("causes") or [])
            except (ValueError, AttributeError):
                reason, message = response.reason_phrase, response.text
            raise KubeError(response.status_code, reason, message, causes)
        result: Obj = response.json()
        return result

    async def get(self, path: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[Obj] = (await self._request("GET", path, params=params)).get("items", [])
        return items

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        """Server-side apply as the operator's field manager (takes over conflicting fields)."""
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        return await self._request(
            "PATCH", path, json=body, params=params, content_type="application/apply-patch+yaml"
        )

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        return await self._request("PATCH", path, json=body, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> None:
        try:
            await self._request("DELETE", path)
        except KubeError as err:
            if err.status != 404:
                raise
