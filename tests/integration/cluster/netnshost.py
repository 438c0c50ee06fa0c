"""A pod IP that really answers: a network namespace holding that one address (a test host).

The local cluster hands out fake pod IPs where nothing listens. For a test that needs a
pod to answer at its IP, this makes that IP a host of our own: a network namespace with
one veth, the pod's address on its end, and a /32 route to it from the host. The
namespace has no other route, so a process inside can reach nothing but the host end.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from modelpool.devcluster.processes import stop_process


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class NetnsHost:
    """Network namespace ``name`` answering at ``address``; host side at a link-local /32."""

    address: str
    name: str = field(default_factory=lambda: f"mp{secrets.token_hex(3)}")
    host_side: str = "169.254.123.1"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def _veth_host(self) -> str:
        return f"{self.name}h"

    def __enter__(self) -> NetnsHost:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self._veth_host, "type", "veth", "peer", "name", f"{self.name}n")
            _ip("link", "set", f"{self.name}n", "netns", self.name)
            _ip("addr", "add", f"{self.address}/32", "dev", f"{self.name}n", netns=self.name)
            _ip("link", "set", f"{self.name}n", "up", netns=self.name)
            _ip("link", "set", "lo", "up", netns=self.name)
            _ip("route", "add", f"{self.host_side}/32", "dev", f"{self.name}n", netns=self.name)
            _ip("link", "set", self._veth_host, "up")
            _ip("addr", "add", f"{self.host_side}/32", "dev", self._veth_host)
            _ip("route", "add", f"{self.address}/32", "dev", self._veth_host, "src", self.host_side)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def spawn(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run ``cmd`` inside the namespace (its own process group, stopped on exit)."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *cmd],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def __exit__(self, *_: object) -> None:
        for proc in self.processes:
            stop_process(proc, group=True)
        subprocess.run(["ip", "link", "del", self._veth_host], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
