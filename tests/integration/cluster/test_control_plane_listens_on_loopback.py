"""The local control plane offers nothing to the network: every port its processes listen on
(etcd without authentication among them) is on 127.0.0.1, as ``ss`` sees them."""

from __future__ import annotations

import re
import subprocess

import pytest

from modelpool.devcluster.cluster import DevCluster

pytestmark = pytest.mark.cluster


def test_every_control_plane_port_is_on_loopback(cluster: DevCluster) -> None:
    pids = {comp["name"]: cluster.component_pid(comp["name"]) for comp in cluster.components()}
    assert all(pids.values()), pids
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found: dict[str, list[str]] = {name: [] for name in pids}
    for line in listening.splitlines():
        local = line.split()[3]
        for name, pid in pids.items():
            if re.search(rf"pid={pid},", line):
                found[name].append(local)
    # etcd (client and peer), the API server, the controller-manager, the scheduler, kwok
    assert all(found.values()), (found, listening)
    assert all(addr.startswith("127.0.0.1:") for addrs in found.values() for addr in addrs), found
