"""How the operator's requests to the API server are signed when the token changes over time.

Two sources of such tokens, as kubectl (client-go) reads them:

- a file: the pod's projected service-account token, which the kubelet replaces before it
  expires, or a kubeconfig's ``tokenFile``. It is read again every :data:`TOKEN_REREAD_S`.
- an exec credential plugin (``users[].user.exec`` in a kubeconfig): the command cloud clusters
  configure (``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``). It is run again
  when the token it gave expires.

Either is asked again at once when the API server answers 401. Read once, as before, the token
expires (an hour for a projected one where the API server does not extend it) and every request
fails from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import json
import logging
import math
import os
import subprocess
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import httpx

TOKEN_REREAD_S = 60.0
"""How long a token read from a file is used before the file is read again (client-go's period)."""
EXEC_EARLY_S = 60.0
"""How long before its expiry a plugin's token is asked for again."""
EXEC_TIMEOUT_S = 60.0
EXEC_RETRY_S = 5.0
"""The least time between two runs of a plugin after a failure or a 401."""
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")

logger = logging.getLogger("modelpool.kube")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class ExecPluginError(Exception):
    """An exec credential plugin that cannot give a token: says which command, why, and the fix."""


@dataclass(frozen=True)
class Token:
    """A bearer token and how many seconds it may be used before it is asked for again."""

    value: str
    valid_s: float
    expires: datetime.datetime | None = None
    """When the token itself expires (a plugin's ``expirationTimestamp``), for kopf's login."""


@dataclass(frozen=True)
class TokenFile:
    """A token kept in a file that is replaced as the token rotates."""

    path: Path
    retry_s: ClassVar[float] = 0.0
    """Reading a file again is cheap: after a 401 it is read at once."""

    def fetch(self) -> Token:
        """The file's token; :class:`OSError` or :class:`ValueError` (empty) when there is none."""
        value = self.path.read_text().strip()
        if not value:
            raise ValueError(f"token file {self.path} is empty")
        return Token(value, TOKEN_REREAD_S)


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig user's ``exec`` section: a command that prints an ``ExecCredential``."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str = ""
    interactive_mode: str = "IfAvailable"
    base: Path = Path(".")
    """The kubeconfig's folder: a relative command with a path separator is found from there."""
    cluster: Mapping[str, Any] | None = None
    """The cluster passed to the plugin in ``spec.cluster`` when it asks (``provideClusterInfo``)."""
    retry_s: ClassVar[float] = EXEC_RETRY_S

    @classmethod
    def from_kubeconfig(cls, spec: Mapping[str, Any], base: Path, cluster: Mapping[str, Any]) -> ExecPlugin:
        """The plugin of a kubeconfig user's ``exec`` section; :class:`ExecPluginError` naming the
        field when it cannot be run."""
        if not isinstance(spec.get("command"), str) or not spec["command"]:
            raise ExecPluginError("the kubeconfig user's exec section has no command: give exec.command")
        version = spec.get("apiVersion") or ""
        if version not in EXEC_API_VERSIONS:
            raise ExecPluginError(
                f"exec.apiVersion {version!r} of the kubeconfig user's plugin {spec['command']!r} is not "
                f"supported: give one of {', '.join(EXEC_API_VERSIONS)}"
            )
        mode = spec.get("interactiveMode") or "IfAvailable"
        if mode not in INTERACTIVE_MODES:
            raise ExecPluginError(
                f"exec.interactiveMode {mode!r} of the kubeconfig user's plugin {spec['command']!r} is not "
                f"one of {', '.join(INTERACTIVE_MODES)}: give Never or IfAvailable"
            )
        if mode == "Always":
            raise ExecPluginError(
                f"the kubeconfig user's plugin {spec['command']!r} needs a terminal (interactiveMode: "
                "Always), which the operator never has: log in with a plugin or token that needs none"
            )
        env = spec.get("env") or ()
        if not all(isinstance(e, Mapping) and {"name", "value"} <= e.keys() for e in env):
            raise ExecPluginError(
                f"exec.env of the kubeconfig user's plugin {spec['command']!r} needs a name and a value "
                "in each entry: give e.g. [{name: AWS_PROFILE, value: prod}]"
            )
        return cls(
            command=spec["command"],
            args=tuple(str(a) for a in spec.get("args") or ()),
            env={str(e["name"]): str(e["value"]) for e in env},
            api_version=version,
            install_hint=str(spec.get("installHint") or ""),
            interactive_mode=mode,
            base=base,
            cluster=_cluster_info(cluster) if spec.get("provideClusterInfo") else None,
        )

    def _argv(self) -> list[str]:
        command = self.command
        if os.sep in command and not os.path.isabs(command):
            command = str(self.base / command)
        return [command, *self.args]

    def fetch(self, now: Callable[[], datetime.datetime] = _utc_now) -> Token:
        """Run the plugin and read its token; :class:`ExecPluginError` saying why not."""
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = dict(self.cluster)
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        hint = f" ({self.install_hint.strip()})" if self.install_hint.strip() else ""
        try:
            done = subprocess.run(
                self._argv(),
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=EXEC_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError:
            raise ExecPluginError(
                f"the kubeconfig user's credential plugin {self.command!r} is not installed or not on "
                f"PATH{hint}"
            ) from None
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ExecPluginError(f"the credential plugin {self.command!r} could not run: {err}") from err
        if done.returncode != 0:
            said = " ".join(done.stderr.decode(errors="replace").split())[-500:]
            raise ExecPluginError(
                f"the credential plugin {self.command!r} failed (exit {done.returncode}): "
                f"{said or 'nothing on stderr'}"
            )
        if said := " ".join(done.stderr.decode(errors="replace").split())[-500:]:
            logger.info("credential plugin %s: %s", self.command, said)  # client-go passes it through
        return _exec_token(self.command, self.api_version, done.stdout, now())


CLUSTER_INFO = (
    "server",
    "certificate-authority-data",
    "insecure-skip-tls-verify",
    "tls-server-name",
    "proxy-url",
)
"""The kubeconfig cluster's fields an ExecCredential's ``spec.cluster`` carries, under the same names."""
EXEC_EXTENSION = "client.authentication.k8s.io/exec"


def _cluster_info(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """The kubeconfig cluster as a plugin reads it in ``spec.cluster``."""
    info = {name: cluster[name] for name in CLUSTER_INFO if name in cluster}
    for extension in cluster.get("extensions") or ():
        if extension.get("name") == EXEC_EXTENSION:
            info["config"] = extension.get("extension")
    return info


def _exec_token(command: str, api_version: str, stdout: bytes, now: datetime.datetime) -> Token:
    try:
        credential = json.loads(stdout)
        status = credential["status"]
    except (ValueError, KeyError, TypeError) as err:
        raise ExecPluginError(
            f"the credential plugin {command!r} printed no ExecCredential with a status ({err!r})"
        ) from None
    if credential.get("apiVersion") != api_version:
        raise ExecPluginError(
            f"the credential plugin {command!r} answered in {credential.get('apiVersion')!r}, not the "
            f"{api_version!r} the kubeconfig asks for: set exec.apiVersion to what it prints"
        )
    value = status.get("token") if isinstance(status, dict) else None
    if not value:
        raise ExecPluginError(
            f"the credential plugin {command!r} gave no token (a client certificate, if any, is not "
            "supported by the operator): configure it to print a token"
        )
    expiry = status.get("expirationTimestamp")
    if not expiry:
        return Token(str(value), float("inf"))
    try:
        expires = datetime.datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
    except ValueError:
        raise ExecPluginError(
            f"the credential plugin {command!r} gave an expirationTimestamp {expiry!r} that is not RFC 3339"
        ) from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=datetime.UTC)
    return Token(str(value), max((expires - now).total_seconds() - EXEC_EARLY_S, 0.0), expires)


TokenSource = TokenFile | ExecPlugin
"""Where a token that changes comes from."""


class _Due(enum.Enum):
    DUE = "due"


DUE = _Due.DUE
"""What :meth:`Signer.cached` says when the token must be asked for (a file read, a plugin run)."""


class Signer(httpx.Auth):
    """Signs requests with a bearer token and, after a 401, sends them once more when a fresh
    token differs: for httpx (blocking and async) and for aiohttp (:func:`aiohttp_middleware`, kopf's
    session). One signer serves every client made from the same credentials."""

    requires_request_body = True  # a request refused with 401 is sent again, so its body is kept

    def current(self, *, fresh: bool = False) -> str | None:
        """The token; ``fresh`` after a 401. May block (a file read, a plugin run)."""
        raise NotImplementedError

    def cached(self, *, fresh: bool = False) -> str | _Due | None:
        """The token when it need not be asked for, else :data:`DUE`; never blocks."""
        raise NotImplementedError

    async def current_async(self, *, fresh: bool = False) -> str | None:
        """:meth:`current`, with a file read or a plugin run (which may take seconds) on a thread:
        the event loop serves everything else meanwhile."""
        token = self.cached(fresh=fresh)
        return await asyncio.to_thread(self.current, fresh=fresh) if token is DUE else token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.current()
        _sign(request.headers, token)
        response = yield request
        if response.status_code == 401:
            newer = self.current(fresh=True)
            if newer and newer != token:
                _sign(request.headers, newer)
                yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.current_async()
        _sign(request.headers, token)
        response = yield request
        if response.status_code == 401:
            newer = await self.current_async(fresh=True)
            if newer and newer != token:
                _sign(request.headers, newer)
                yield request


def _sign(headers: MutableMapping[str, str], token: str | None) -> None:
    if token:
        headers["Authorization"] = f"Bearer {token}"


def aiohttp_middleware(signer: Signer) -> aiohttp.ClientMiddlewareType:
    """The signer as an aiohttp client middleware: kopf's session signs each request with the
    token the operator's own clients use, and sends a request refused with 401 once more when a
    fresh token differs, so kopf sees a 401 only when even that is refused."""

    async def sign(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        token = await signer.current_async()
        _sign(request.headers, token)
        response = await handler(request)
        if response.status == 401:
            newer = await signer.current_async(fresh=True)
            if newer and newer != token:
                response.release()
                _sign(request.headers, newer)
                response = await handler(request)
        return response

    return sign


class StaticToken(Signer):
    """A bearer token given in the kubeconfig itself."""

    def __init__(self, token: str) -> None:
        self.token = token

    def current(self, *, fresh: bool = False) -> str | None:
        return self.token

    def cached(self, *, fresh: bool = False) -> str | _Due | None:
        return self.token


class RefreshedToken(Signer):
    """A bearer token from ``source``, asked for again once it is due, and after a 401 unless it
    was asked for less than the source's ``retry_s`` ago (a login the API server refuses for good
    does not run a plugin for every request; a file is cheap to read again).

    A source that fails keeps the last token (the kubelet swaps its file atomically, and a plugin
    may fail for a moment) and is asked again after ``retry_s``; with no token yet, the request
    goes without one and the API server says 401. Threads and the event loop share it: the token
    is read without a lock, and one lock lets one caller at a time ask the source, the others
    taking what it got."""

    def __init__(
        self, source: TokenSource, first: Token | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.source = source
        self._clock = clock
        self._asking = threading.Lock()
        now = clock()
        self._state: tuple[str | None, float, float] = (
            (first.value, now + first.valid_s, now) if first is not None else (None, -math.inf, -math.inf)
        )
        """(token, when it is due, when the source was last asked), replaced as a whole."""

    def _due(self, fresh: bool) -> bool:
        _, due, asked = self._state
        now = self._clock()
        return now >= due or (fresh and now - asked >= self.source.retry_s)

    def cached(self, *, fresh: bool = False) -> str | _Due | None:
        token = self._state[0]
        return DUE if self._due(fresh) else token

    def current(self, *, fresh: bool = False) -> str | None:
        if not self._due(fresh):
            return self._state[0]
        with self._asking:
            if not self._due(fresh):  # another caller asked while this one waited
                return self._state[0]
            now = self._clock()
            token, due, _ = self._state
            with contextlib.suppress(OSError, ValueError, ExecPluginError):
                got = self.source.fetch()
                token, due = got.value, now + got.valid_s
            self._state = (token, max(due, now + self.source.retry_s), now)
            return token
