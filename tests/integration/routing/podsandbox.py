"""Run a command as a Kubernetes container's securityContext would, without a container runtime.

``python podsandbox.py '<json>'`` runs as root in a mount namespace of its own (the caller starts
it under ``unshare --mount --propagation private``), so nothing it mounts is seen outside. In this
order (every path it binds is opened first, before any mount can hide it):

* ``covers``: each folder is hidden under an empty root-owned tmpfs of the given ``mode`` (0755:
  nobody but root may write there). The caller hides the image's ``/tmp`` and ``/var/tmp`` this
  way, and folders the user may not enter (root's home, where the venv and Python live here; an
  image keeps them in ``/opt``).
* ``volumes``: the pod's emptyDirs as the kubelet makes them. Memory-backed (``size``): a tmpfs of
  ``size`` bytes. On the node's disk (``source``): the node's folder ``source``, bound. Either is
  mode 0777, or 02777 with group ``fsGroup`` when set. A volume goes over whatever the image has
  at its path, a cover included.
* ``keep``: the covers' paths bound back at the same place (over a volume too: the model
  repository, a folder under the host's ``/tmp``, shows through the pod's ``/tmp``).
* ``readOnlyRoot`` (the container's ``readOnlyRootFilesystem``): every mount is made read-only but
  the volumes and what a runtime gives the container as its own (``/proc``, ``/sys``, ``/dev``).
* then ``setpriv`` execs the command as ``uid``/``gid`` (supplementary ``groups``: the pod's
  fsGroup) with every capability gone from the bounding, inheritable and ambient sets and
  no_new_privs, in folder ``cwd`` with exactly ``env``. Everything execs: the command keeps this
  process's PID (and so the caller's process group).

The pod's RuntimeDefault seccomp profile is not applied: it is the container runtime's own
(containerd's built-in list, CRI-O's ``containers-common`` file), and neither is installed here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def _mount(*args: str, fd: int | None = None) -> None:
    # -c: no canonicalisation, so a /proc/self/fd/N source names the folder that fd was opened on
    # (mount(8) would otherwise resolve it to the path, by then the empty tmpfs).
    subprocess.run(["mount", "-c", *args], check=True, pass_fds=() if fd is None else (fd,))


RUNTIME_OWN = ("/proc", "/sys", "/dev")
"""Where a container runtime mounts the container's own filesystems, not the image's."""


def _open(path: str) -> int:
    return os.open(path, os.O_PATH)


def _bind(fd: int, path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)
    _mount("--bind", f"/proc/self/fd/{fd}", path, fd=fd)
    os.close(fd)


def _emptydir_mode(fs_group: int | None) -> str:
    return "0777" if fs_group is None else "2777"


def _prepare_node_folder(source: str, fs_group: int | None) -> None:
    """The node's folder of an emptyDir as the kubelet leaves it: mode 0777 (02777, group fsGroup)."""
    if fs_group is not None:
        os.chown(source, -1, fs_group)
    os.chmod(source, int(_emptydir_mode(fs_group), 8))


def _memory_volume(path: str, size: int, fs_group: int | None) -> None:
    options = f"size={size},nosuid,nodev,mode={_emptydir_mode(fs_group)}"
    if fs_group is not None:
        options += f",gid={fs_group}"
    _mount("-t", "tmpfs", "-o", options, "tmpfs", path)


def _mount_points() -> list[str]:
    """Every mount point of this namespace (``/proc/self/mountinfo``'s fifth field, unescaped)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]) for line in lines]


def _read_only_root(volumes: set[str]) -> None:
    """Every mount read-only but the volumes (and what they stack over) and the runtime's own."""
    for point in dict.fromkeys(_mount_points()):
        own = any(point == p or point.startswith(p + "/") for p in RUNTIME_OWN)
        if point not in volumes and not own:
            _mount("-o", "remount,bind,ro", point)


def setpriv_command(uid: int, gid: int, groups: list[int]) -> list[str]:
    """``setpriv`` as the pod's securityContext: the user, group and fsGroup, no capability left
    in any set (so root too has none after the exec), no_new_privs."""
    supplementary = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        *supplementary,
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def main(spec: dict[str, Any]) -> None:
    fs_group: int | None = spec.get("fsGroup")
    keep = [(path, _open(path)) for cover in spec["covers"].values() for path in cover["keep"]]
    sources = {}
    for volume in spec["volumes"]:
        if "source" in volume:
            _prepare_node_folder(volume["source"], fs_group)
            sources[volume["path"]] = _open(volume["source"])
    for folder, cover in spec["covers"].items():
        _mount("-t", "tmpfs", "-o", f"mode={cover['mode']},nosuid,nodev", "tmpfs", folder)
    for volume in spec["volumes"]:
        if volume["path"] in sources:
            _bind(sources[volume["path"]], volume["path"])
        else:
            _memory_volume(volume["path"], volume["size"], fs_group)
    for path, fd in keep:
        _bind(fd, path)
    if spec.get("readOnlyRoot"):
        _read_only_root({volume["path"] for volume in spec["volumes"]})
    os.chdir(spec["cwd"])
    command = [*setpriv_command(spec["uid"], spec["gid"], spec["groups"]), *spec["argv"]]
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SystemExit("setpriv (util-linux) is not installed")
    os.execve(setpriv, command, spec["env"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
