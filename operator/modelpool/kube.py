"""A small typed async client for the Kubernetes API (httpx).

kopf watches and dispatches; this client does the few reads and writes the
controllers make: get, list, create, server-side apply, merge-patch, delete, and the
router's one watch (its Services' EndpointSlices).
It logs in as :mod:`modelpool.kubelogin` reads the login.
"""

from __future__ import annotations

import json as jsonlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from modelpool.kubelogin import Credentials
from modelpool.scaling.metrics import record_kube_request

Obj = dict[str, Any]
Items = list[Obj]

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


def _error(response: httpx.Response) -> KubeError:
    """The API server's refusal, from its Status body where it sent one."""
    causes: tuple[str, ...] = ()
    try:
        body = response.json()
        reason, message = str(body.get("reason", "")), str(body.get("message", response.text))
        details = body.get("details") or {}
        causes = tuple(str(c.get("reason", "")) for c in details.get("causes") or [])
    except (ValueError, AttributeError):
        reason, message = response.reason_phrase, response.text
    return KubeError(response.status_code, reason, message, causes)


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
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=credentials.server,
            verify=credentials.verify,
            headers=headers,
            auth=credentials.auth(),
            proxy=credentials.proxy,
            timeout=timeout,
            transport=transport,
        )

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
            raise _error(response)
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
        items, _ = await self.list_at(path, label_selector)
        return items

    async def list_at(self, path: str, label_selector: str | None = None) -> tuple[Items, str]:
        """The items and the list's resourceVersion, where a :meth:`watch` goes on from."""
        params = {"labelSelector": label_selector} if label_selector else None
        listed = await self._request("GET", path, params=params)
        items: Items = listed.get("items") or []
        return items, str((listed.get("metadata") or {}).get("resourceVersion", ""))

    async def watch(
        self, path: str, resource_version: str, label_selector: str | None = None, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, Obj]]:
        """The events (ADDED, MODIFIED, DELETED, BOOKMARK) after ``resource_version``, as the
        API server streams them, until it ends the watch after about ``timeout_s`` (the caller
        watches again from the last event's resourceVersion).

        Raises :class:`KubeError` for a refused watch and for an ERROR event: 410 Gone when
        ``resource_version`` is too old (the caller lists again).
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        record_kube_request("watch", request_kind("GET", path)[1])
        # The stream is quiet while nothing changes: only the API server's own timeout ends it.
        timeout = httpx.Timeout(self._timeout, read=timeout_s + self._timeout)
        async with self._http.stream("GET", path, params=params, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error(response)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = jsonlib.loads(line)
                kind, obj = str(event.get("type", "")), event.get("object") or {}
                if kind == "ERROR":
                    raise KubeError(
                        int(obj.get("code") or 500), str(obj.get("reason", "")), str(obj.get("message", ""))
                    )
                yield kind, obj

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
