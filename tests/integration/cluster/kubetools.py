"""Test helpers around the real local cluster: kubectl, waits and the operator process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.processes import kill_process, stop_process

T = TypeVar("T")
Obj = dict[str, Any]
Sample = tuple[str, dict[str, str], float]

SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        match = SAMPLE_LINE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples.append((name, dict(LABEL.findall(labels or "")), number))
    return samples


def total(samples: list[Sample], name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    return sum(
        v for n, labels, v in samples if n == name and all(labels.get(k) == m for k, m in match.items())
    )


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")


@dataclass
class Kube:
    """kubectl bound to one cluster and namespace."""

    cluster: DevCluster
    namespace: str

    def run(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, input_text=input_text, check=check)

    def apply(self, manifest: Obj | str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.run("apply", "-f", "-", input_text=text, check=check)

    def get(self, kind: str, name: str) -> Obj | None:
        proc = self.run("get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise RuntimeError(proc.stderr)
        result: Obj = json.loads(proc.stdout)
        return result

    def list(self, kind: str, selector: str) -> list[Obj]:
        items: list[Obj] = json.loads(self.run("get", kind, "-l", selector, "-o", "json").stdout)["items"]
        return items

    def condition(self, kind: str, name: str, type_: str) -> Obj | None:
        obj = self.get(kind, name)
        for cond in (obj or {}).get("status", {}).get("conditions", []):
            if cond["type"] == type_:
                return dict(cond)
        return None

    def events(self, name: str) -> list[Obj]:
        out = self.run(
            "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
        items: list[Obj] = json.loads(out)["items"]
        return items


def start_operator(log: Path, env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``modelpool operator run --verbose ARGS`` as users run it, in a process group of its own
    (``stop_process(proc, group=True)``), with ``env`` over this process's environment and its
    output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "modelpool", "operator", "run", "--verbose", *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class OperatorProcess:
    """The operator as users run it: ``modelpool operator run`` (kopf) in its own process."""

    cluster: DevCluster
    log_path: Path
    resync_seconds: float = 5.0
    proc: subprocess.Popen[bytes] | None = None
    env_extra: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        env = self.cluster.env() | {"MODELPOOL_RESYNC_SECONDS": str(self.resync_seconds), **self.env_extra}
        self.proc = start_operator(self.log_path, env)

    def stop(self) -> None:
        stop_process(self.proc, grace=20, group=True)

    def kill(self) -> None:
        """An abrupt crash: no cleanup, no graceful shutdown."""
        kill_process(self.proc, group=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def metrics_url(self) -> str | None:
        """The operator's own /metrics (``--metrics-port``), when it serves them."""
        port = self.env_extra.get("MODELPOOL_METRICS_PORT")
        return f"http://127.0.0.1:{port}/metrics" if port else None

    def metric(self, name: str, **match: str) -> float:
        """Sum of the operator's own samples called ``name`` whose labels include ``match``."""
        assert self.metrics_url is not None, "the operator serves no /metrics"
        return total(parse_metrics(httpx.get(self.metrics_url, timeout=10).text), name, **match)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def healthy(url: str) -> bool:
    """The URL (an operator's kopf liveness endpoint) answers 200, and kopf answers: not the
    ``starting: waiting for ...`` the operator serves there while it waits before kopf starts."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and not response.text.startswith("starting:")


def answer(url: str) -> tuple[int, str] | None:
    """The status and body a URL answers (an operator's readiness endpoint), None when nothing does."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.status_code, response.text


def service_account_kubeconfig(cluster: DevCluster, namespace: str, name: str, out: Path) -> Path:
    """A kubeconfig for the cluster that authenticates with a fresh token of the ServiceAccount."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=10m").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
        "current-context": "sa",
    }
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out
