"""The router's open-files limit (``RLIMIT_NOFILE``) against its connection cap.

Every client connection holds a file descriptor, and so does the connection to a variant that its
request in flight holds (the upstream pool keeps it for reuse afterwards): about
:data:`FDS_PER_CONNECTION` per client connection, plus what the process has open at start and
:data:`SPARE_FDS`.  A container's soft limit is often 1,024, under the default cap of 4,096
connections: without a look at it, ``accept()`` failed with EMFILE long before the cap, and
connections to the variants failed with it too.  :func:`fit_connections`, called once as the router
starts, raises the soft limit to what the cap needs (never above the hard limit; raising the soft
limit needs no privilege), and when the hard limit is still too low lowers the cap to what fits and
says so in one warning.  The limit functions are parameters, so the arithmetic is tested without
touching the process's limits.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

FDS_PER_CONNECTION = 2
"""A client connection's socket and the upstream connection its request in flight holds."""
SPARE_FDS = 256
"""Descriptors kept free beyond the connections and those open at start: the listening sockets,
idle upstream connections beyond one per client connection (each endpoint keeps up to 64 for
reuse), EndpointSlice watches, the config, token and scorer files, refusals being answered.  Under
a limit of less than 1,024, a quarter of the limit."""

Limits = tuple[int, int]
"""``(soft, hard)`` as ``resource.getrlimit`` gives them (``resource.RLIM_INFINITY``: no limit)."""


def needed_fds(max_connections: int, in_use: int) -> int:
    """File descriptors a router with ``max_connections`` client connections needs at most, with
    ``in_use`` open before it serves."""
    return in_use + SPARE_FDS + FDS_PER_CONNECTION * max_connections


def soft_limit_target(max_connections: int, soft: int | None, hard: int | None, in_use: int) -> int | None:
    """The soft limit to ask for (None: keep it); ``None`` limits are unlimited.  Raised to what
    :func:`needed_fds` says, never above ``hard``, never lowered."""
    needed = needed_fds(max_connections, in_use)
    if soft is None or soft >= needed:
        return None
    target = needed if hard is None else min(needed, hard)
    return target if target > soft else None


def connection_cap(max_connections: int, limit: int | None, in_use: int) -> int:
    """The client connections a process with open-files limit ``limit`` (None: unlimited) and
    ``in_use`` descriptors open can serve at once, at most ``max_connections`` and at least 1:
    each takes :data:`FDS_PER_CONNECTION`, and :data:`SPARE_FDS` (a quarter of a smaller limit)
    stay free."""
    if limit is None or limit >= needed_fds(max_connections, in_use):
        return max_connections
    spare = min(SPARE_FDS, limit // 4)
    return max(1, min(max_connections, (limit - in_use - spare) // FDS_PER_CONNECTION))


@dataclass(frozen=True)
class FilesPlan:
    """What :func:`fit_connections` found and did."""

    requested: int
    """``--max-connections``."""
    max_connections: int
    """The cap the router serves with: ``requested``, or lower when the limit cannot hold it."""
    soft_before: int | None
    soft: int | None
    """The soft limit the router runs under (None: unlimited)."""
    hard: int | None
    in_use: int
    needed: int
    warning: str | None
    """Why the cap is lower than requested, and the fix (None when it is not)."""


def _finite(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY or value < 0 else value


def soft_limit() -> int | None:
    """The process's open-files limit now (its soft ``RLIMIT_NOFILE``; None: unlimited)."""
    return _finite(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def open_fds() -> int:
    """File descriptors this process has open now (0 when the system does not list them)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(folder)) - 1)  # listdir's own descriptor is listed too
        except OSError:
            continue
    return 0


def _limit_text(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def fit_connections(
    max_connections: int,
    *,
    getrlimit: Callable[[], Limits] = lambda: resource.getrlimit(resource.RLIMIT_NOFILE),
    setrlimit: Callable[[Limits], None] = lambda limits: resource.setrlimit(resource.RLIMIT_NOFILE, limits),
    count_open: Callable[[], int] = open_fds,
) -> FilesPlan:
    """Raise the open-files soft limit toward what ``max_connections`` needs (:func:`needed_fds`),
    never above the hard limit; when the limit still falls short, lower the cap to what fits
    (:func:`connection_cap`) and log one warning naming ``--max-connections``, the limits found and
    the fix, rather than let the router fail under load (or crash-loop).  Logs the cap it serves
    with at INFO otherwise."""
    raw_soft, raw_hard = getrlimit()
    soft_before, hard = _finite(raw_soft), _finite(raw_hard)
    in_use = count_open()
    needed = needed_fds(max_connections, in_use)
    soft = soft_before
    failure = ""
    target = soft_limit_target(max_connections, soft, hard, in_use)
    if target is not None:
        try:
            setrlimit((target, raw_hard))
        except (ValueError, OSError) as err:
            failure = f"; raising the soft limit to {target} failed: {err}"
        else:
            soft = target
            logger.info(
                "raised the open-files soft limit from %d to %d (hard limit %s) for --max-connections %d",
                soft_before, target, _limit_text(hard), max_connections,
            )  # fmt: skip
    cap = connection_cap(max_connections, soft, in_use)
    warning = None
    if cap < max_connections:
        warning = (
            f"the open-files limit is too low for --max-connections {max_connections}: it needs about "
            f"{needed} file descriptors ({in_use} open at start, {FDS_PER_CONNECTION} per client "
            f"connection for it and its upstream connection, and spare ones), the soft limit is "
            f"{_limit_text(soft)} and the hard limit {_limit_text(hard)}{failure}; serving at most {cap} "
            f"client connections at once (more are answered 503). Fix: raise the limit to {needed} or "
            f"more (ulimit -n {needed} where the router starts, or the container runtime's nofile "
            f"setting: docker run --ulimit nofile={needed}:{needed}, LimitNOFILE of containerd's or "
            f"CRI-O's service), or set --max-connections {cap} to make this the cap you asked for"
        )
        logger.warning("%s", warning)
    else:
        logger.info(
            "serving at most %d client connections at once (open-files limit %s)",
            cap, _limit_text(soft),
        )  # fmt: skip
    return FilesPlan(max_connections, cap, soft_before, soft, hard, in_use, needed, warning)
