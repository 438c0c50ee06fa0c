"""A small typed async client for the Kubernetes API (httpx).

kopf watches and dispatches; this client does the few reads and writes the
controllers make: get, list, create, server-side apply, merge-patch, delete.
It logs in the way kubectl does: in-cluster service account, else the
kubeconfig named by ``KUBECONFIG`` (first file) or ``~/.kube/config``.
"""

from __future__ import annotations

import base64
import contextlib
import json as jsonlib
import os
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from modelpool.scaling.metrics import record_kube_request

Obj = dict[str, Any]

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "modelpool-operator"
TOKEN_REREAD_S = 60.0
"""How long a token read from a file is used before the file is read again (client-go's period)."""


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
    token_file: Path | None = None
    """Where ``token`` was read from, to be read again as it rotates: the projected service-account
    token (the kubelet replaces it before it expires) or a kubeconfig's ``tokenFile``."""

    def auth(self, *, clock: Callable[[], float] = time.monotonic) -> httpx.Auth | None:
        """What signs this login's requests: a bearer token kept fresh from ``token_file``; None
        for a login by client certificate or none at all."""
        if self.token_file is not None:
            return FileToken(self.token_file, self.token, clock=clock)
        return StaticToken(self.token) if self.token else None


class StaticToken(httpx.Auth):
    """A bearer token given in the kubeconfig itself."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class FileToken(httpx.Auth):
    """A bearer token read from a file, again every :data:`TOKEN_REREAD_S` and at once after a 401.

    A pod's service-account token is projected with a lifetime (an hour by default) and the kubelet
    replaces the file before it expires. The API server accepts an expired one only where it is
    configured to extend their lifetime, and for at most that extension. Read once, the operator's
    requests would fail with 401 from then on, so the file is read again as client-go does. A
    request refused with 401 is sent once more if the file then holds another token; a file that
    cannot be read keeps the last token."""

    def __init__(
        self, path: Path, token: str | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()  # the lease's renew thread shares it with the preflight
        self._token = token
        self._read_at = clock() if token is not None else float("-inf")

    def current(self, *, fresh: bool = False) -> str | None:
        """The token, read from the file when it is older than the period (or ``fresh``)."""
        with self._lock:
            if fresh or self._clock() - self._read_at >= TOKEN_REREAD_S:
                with contextlib.suppress(OSError):  # a passing error keeps the last token
                    self._token = self.path.read_text().strip() or self._token
                self._read_at = self._clock()
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.current()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            newer = self.current(fresh=True)
            if newer and newer != token:
                request.headers["Authorization"] = f"Bearer {newer}"
                yield request


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


def _token_file(user: Obj, base: Path) -> Path | None:
    """The user's ``tokenFile`` (relative to the kubeconfig's folder, as kubectl reads it) when it
    has no ``token``."""
    if user.get("token") or not user.get("tokenFile"):
        return None
    path = Path(user["tokenFile"])
    return path if path.is_absolute() else base / path


def kubeconfig_path() -> Path:
    """The kubeconfig kubectl would read first: ``$KUBECONFIG``'s first file, else ~/.kube/config."""
    env = os.environ.get("KUBECONFIG")
    return Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"


def in_cluster() -> bool:
    """Whether this is a pod with a service account, whose login comes before any kubeconfig."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").is_file()


def kubeconfig_token_file() -> Path | None:
    """The ``tokenFile`` of the kubeconfig's current user, when that is how it logs in (and this is
    not a pod with a service account); None otherwise or when the kubeconfig cannot be read."""
    if in_cluster():
        return None
    path = kubeconfig_path()
    try:
        return _token_file(_current(path)[1], path.parent)
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError, StopIteration):
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
    token, token_file = user.get("token"), _token_file(user, base)
    if token_file is not None:
        token = token_file.read_text().strip()
    return Credentials(server=server, verify=verify, token=token, token_file=token_file)


def credentials_in_cluster() -> Credentials:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    return Credentials(
        server=f"https://{host}:{port}",
        verify=ssl.create_default_context(cafile=str(SA_DIR / "ca.crt")),
        token=(SA_DIR / "token").read_text().strip(),
        token_file=SA_DIR / "token",
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
