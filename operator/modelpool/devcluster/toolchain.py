"""Build the local control plane's binaries from Go modules, once, into a cache.

No registry ships kube-apiserver & co. for this project's machines, so they are
compiled from the published Go modules:

* Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)
  through a wrapper module that requires ``k8s.io/kubernetes`` and replaces each
  of its ``./staging/...`` modules with the published ``k8s.io/<name> v0.<minor>``.
* etcd through a wrapper module around ``go.etcd.io/etcd/server/v3``.
* kwok and kwokctl, and helm, with ``go install``.

The binaries land in ``<cache>/bin/<set>/`` (``~/.cache/modelpool`` unless
``MODELPOOL_CACHE`` says otherwise) and a stamp per tool makes a second run a
no-op.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.21.4"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_TOOLS = (*KUBE_COMMANDS, "etcd", "kwok", "kwokctl", "helm")


def cache_dir() -> Path:
    """Root of everything this project caches outside the repository."""
    env = os.environ.get("MODELPOOL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelpool"


def bin_dir(root: Path | None = None) -> Path:
    """Folder that holds one consistent set of built binaries."""
    base = root if root is not None else cache_dir()
    versions = f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-kwok-{KWOK_VERSION}-helm-{HELM_VERSION}"
    return base / "bin" / versions


GO_TARGET_VARIABLES = ("GOOS", "GOARCH", "GOAMD64", "GOARM", "GOARM64", "GO386", "GOEXPERIMENT")
"""The caller's cross-compile settings, dropped: they would build binaries for another machine."""


def go_env() -> dict[str, str]:
    """The Go build's environment: this machine's platform, no workspace (a ``go.work`` in an
    ancestor folder refuses ``-mod=mod``), the local toolchain, no cgo."""
    env = {k: v for k, v in os.environ.items() if k not in GO_TARGET_VARIABLES}
    env.update({"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOWORK": "off"})
    return env


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    logger.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, env=env or go_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def staging_replacements(gomod_text: str) -> list[str]:
    """Module paths that a go.mod replaces with local ``./staging`` folders."""
    return re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod_text, flags=re.MULTILINE)


def relative_replacements(gomod_text: str) -> list[str]:
    """Module paths that a go.mod replaces with a relative folder (``../x``)."""
    return re.findall(r"^\s*([\w./-]+)\s*=>\s*\.\./", gomod_text, flags=re.MULTILINE)


def staging_version(kube_version: str) -> str:
    """k8s.io/kubernetes v1.M.P publishes its staging modules as v0.M.P."""
    major_minor_patch = kube_version.lstrip("v").split(".")
    return f"v0.{major_minor_patch[1]}.{major_minor_patch[2]}"


def wrapper_gomod(module: str, go_version: str, require: dict[str, str], replace: dict[str, str]) -> str:
    """Text of a wrapper go.mod that pins ``require`` and replaces with published versions."""
    lines = [f"module {module}", "", f"go {go_version}", "", "require ("]
    lines += [f"\t{path} {ver}" for path, ver in sorted(require.items())]
    lines += [")", ""]
    if replace:
        lines.append("replace (")
        lines += [f"\t{path} => {path} {ver}" for path, ver in sorted(replace.items())]
        lines.append(")")
    return "\n".join(lines) + "\n"


def _downloaded_gomod(module_at_version: str, work: Path) -> str:
    out = _run(["go", "mod", "download", "-json", module_at_version], cwd=work)
    info = json.loads(out)
    if "GoMod" not in info:
        raise RuntimeError(f"go mod download {module_at_version}: {info.get('Error', out)}")
    return Path(info["GoMod"]).read_text()


def _go_directive(gomod_text: str) -> str:
    match = re.search(r"^go\s+(\S+)", gomod_text, flags=re.MULTILINE)
    return match.group(1) if match else "1.22"


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return "-s -w " + " ".join(flags)


@dataclass(frozen=True)
class BuildReport:
    tool: str
    seconds: float
    cached: bool


def _stamp(out: Path, tool: str) -> Path:
    return out / f".{tool}.stamp"


def _is_built(out: Path, tool: str) -> bool:
    return (out / tool).is_file() and _stamp(out, tool).is_file()


def _mark_built(out: Path, tools: Iterable[str]) -> None:
    for tool in tools:
        _stamp(out, tool).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def build_kubernetes(out: Path, work: Path) -> None:
    wrapper = work / f"k8s-wrapper-{KUBERNETES_VERSION}"
    wrapper.mkdir(parents=True, exist_ok=True)
    upstream = _downloaded_gomod(f"k8s.io/kubernetes@{KUBERNETES_VERSION}", wrapper)
    staged = staging_version(KUBERNETES_VERSION)
    replace = {path: staged for path in staging_replacements(upstream)}
    if not replace:
        raise RuntimeError("k8s.io/kubernetes go.mod lists no ./staging replacements; layout changed")
    gomod = wrapper_gomod(
        "modelpool.dev/build/kubernetes",
        _go_directive(upstream),
        {"k8s.io/kubernetes": KUBERNETES_VERSION},
        replace,
    )
    (wrapper / "go.mod").write_text(gomod)
    pkgs = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS]
    _run(["go", "get", *[f"{p}@{KUBERNETES_VERSION}" for p in pkgs]], cwd=wrapper)
    _run(
        ["go", "build", "-trimpath", "-ldflags", _version_ldflags(KUBERNETES_VERSION), "-o", str(out), *pkgs],
        cwd=wrapper,
    )


def build_etcd(out: Path, work: Path) -> None:
    wrapper = work / f"etcd-wrapper-{ETCD_VERSION}"
    wrapper.mkdir(parents=True, exist_ok=True)
    upstream = _downloaded_gomod(f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}", wrapper)
    replace = {path: ETCD_VERSION for path in relative_replacements(upstream)}
    gomod = wrapper_gomod(
        "modelpool.dev/build/etcd",
        _go_directive(upstream),
        {"go.etcd.io/etcd/server/v3": ETCD_VERSION},
        replace,
    )
    (wrapper / "go.mod").write_text(gomod)
    _run(["go", "get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], cwd=wrapper)
    _run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(out / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        cwd=wrapper,
    )


def build_kwok(out: Path, work: Path) -> None:
    env = go_env() | {"GOBIN": str(out)}
    for cmd in ("kwok", "kwokctl"):
        _run(
            ["go", "install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/{cmd}@{KWOK_VERSION}"],
            cwd=work,
            env=env,
        )


def build_helm(out: Path, work: Path) -> None:
    env = go_env() | {"GOBIN": str(out)}
    ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
    _run(
        ["go", "install", "-trimpath", "-ldflags", ldflags, f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
        cwd=work,
        env=env,
    )


_BUILDERS = (
    (("etcd",), build_etcd),
    (("kwok", "kwokctl"), build_kwok),
    (KUBE_COMMANDS, build_kubernetes),
    (("helm",), build_helm),
)


def build_all(root: Path | None = None, only: Iterable[str] | None = None) -> list[BuildReport]:
    """Build every missing binary; return what was built or found cached."""
    out = bin_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    work = (root if root is not None else cache_dir()) / "src"
    work.mkdir(parents=True, exist_ok=True)
    wanted = set(only) if only else set(ALL_TOOLS)
    reports: list[BuildReport] = []
    for tools, builder in _BUILDERS:
        if not wanted.intersection(tools):
            continue
        if all(_is_built(out, t) for t in tools):
            reports += [BuildReport(t, 0.0, True) for t in tools]
            continue
        if shutil.which("go") is None:
            raise RuntimeError("Go is not on PATH; install Go >= 1.26 (the k8s v1.36 go.mod needs it)")
        started = time.monotonic()
        logger.info("building %s into %s", ", ".join(tools), out)
        builder(out, work)
        _mark_built(out, tools)
        took = time.monotonic() - started
        reports += [BuildReport(t, took, False) for t in tools]
        logger.info("built %s in %.0f s", ", ".join(tools), took)
    return reports


def binary(tool: str, root: Path | None = None) -> Path:
    path = bin_dir(root) / tool
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `modelpool devcluster build` first")
    return path
