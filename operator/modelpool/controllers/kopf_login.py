"""kopf's login: an aiohttp session made from the operator's own credentials and signer.

kopf's built-in logins read the kubeconfig themselves: they left out ``tokenFile`` and exec
plugins, read relative paths from the working folder, and in a pod used another server address
than the operator's own clients; a token that came back the same after a 401 made kopf give up
("Ran out of valid credentials"). Here kopf gets an :class:`kopf.AiohttpSession` that talks to the
server of :mod:`modelpool.kubelogin`, checks its certificate with the same TLS context, and signs
every request with the signer the operator's own clients use
(:func:`modelpool.kubeauth.aiohttp_middleware`): the same user, the same current token, one plugin
run for all. A request refused with 401 is sent again with a fresh token inside
the session, so kopf itself sees a 401 (and logs in again) only when even that is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import kopf

from modelpool.controllers.backoff import report_due
from modelpool.kubeauth import aiohttp_middleware
from modelpool.kubelogin import Credentials

RELOGIN_MAX_WAIT_S = 30.0
RELOGIN_RESET_S = 300.0
"""A login this long after the last one starts counting again from the first."""

logger = logging.getLogger("modelpool.operator")


def kopf_session(credentials: Credentials) -> kopf.AiohttpSession:
    """kopf's connection: the credentials' server, TLS and signer. Made on kopf's event loop."""
    signer = credentials.auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=credentials.verify),
        middlewares=(aiohttp_middleware(signer),) if signer is not None else (),
        proxy=credentials.proxy,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session, server=credentials.server, default_namespace=credentials.namespace
    )


class Relogins:
    """Paces kopf's logins after the first. kopf logs in again when the API server refused a
    request (401) that the session had already sent again with a fresh token: the login itself is
    refused. Each such login waits 1, 2, 4... up to 30 s, with one ERROR line at the 1st, 2nd,
    4th..., so that a login revoked for good is neither a busy loop nor silent."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: float | None = None
        self.count = 0

    def wait_s(self) -> float:
        """How long this login waits (0 for the first, and for one long after the last)."""
        now = self._clock()
        first = self._last is None or now - self._last >= RELOGIN_RESET_S
        self._last = now
        self.count = 0 if first else self.count + 1
        if self.count == 0:
            return 0.0
        wait = min(2.0 ** (self.count - 1), RELOGIN_MAX_WAIT_S)
        if report_due(self.count):
            logger.error(
                "the API server refused the operator's credentials (401) even with a fresh token; "
                "kopf logs in again in %.0f s (%d times since the first refusal): check the service "
                "account or the kubeconfig's user, and that its token is not revoked",
                wait,
                self.count,
            )
        return wait

    async def pace(self) -> None:
        await asyncio.sleep(self.wait_s())
