"""Measuring capability profiles of exported variants on a real ``tritonserver``.

The concurrent run (throughput, hence ``capacityPerReplicaRps``) is sent by several client
processes (default 2), each with its share of the threads, so one interpreter's GIL does not cap
what is measured: the small variant answers in about 0.3 ms of compute, the order of what a Python
HTTP client spends per request. Throughput counts the answers while every process was sending
(:func:`steady_throughput`). The client setup is recorded in the profile (``concurrentClient``).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import queue as queue_module
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpool.models.client import classify_all, http_client, infer_texts
from modelpool.models.data import LabelledTexts, label_mismatch
from modelpool.models.export import read_instance_device, read_label_names, read_version
from modelpool.models.profile import (
    DEFAULT_BUCKET_EDGES,
    CapabilityProfile,
    ConcurrentClient,
    TimedRun,
    bucket_accuracy,
    latency_figures,
    render_table,
    stub_rss_bytes,
    timed_requests,
)

DEFAULT_CLIENT_PROCESSES = 2
_CLIENT_DEADLINE_S = 900.0  # a client process that has not reported by then is taken as failed


class ProfileError(Exception):
    """Profiling cannot give a true profile (a failed request, a model Triton cannot load, labels
    that differ from the data set's); the message says which and what to do."""


@dataclass(frozen=True)
class ProfileSettings:
    """How much to measure."""

    latency_requests: int = 200
    concurrency: int = 8
    concurrent_requests: int = 400
    batch_size: int = 32
    bucket_edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES
    client_processes: int = DEFAULT_CLIENT_PROCESSES


def complexity_scores(texts: Sequence[str], scorer_path: Path | None) -> tuple[list[float], str]:
    """Scores from the learned scorer at ``scorer_path``, else from the router's heuristic scorer."""
    if scorer_path is not None:
        from modelpool.models.scorer import load_scorer

        return load_scorer(scorer_path).score(texts), f"torch:{scorer_path.name}"
    from modelpool.routing.scoring import HeuristicScorer

    return HeuristicScorer().score(texts), "heuristic"


def repository_models(repository: Path) -> list[str]:
    """Names of the models in a Triton repository (folders holding a ``config.pbtxt``)."""
    return sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())


def models_label_mismatch(model_dir: Path, label_names: Sequence[str]) -> str | None:
    """How the labels of the exported model in ``model_dir`` differ from ``label_names`` (None when
    they are the same, order included): ``VERSION.json``'s ``num_classes`` and the label names in
    its artifacts must both agree, or its accuracy would compare unrelated label indices."""
    version = read_version(model_dir)
    names = read_label_names(model_dir)
    if version.num_classes != len(names):
        return f"VERSION.json says {version.num_classes} classes but its artifacts list {len(names)} labels"
    return label_mismatch(names, label_names)


def thread_split(threads: int, processes: int) -> list[int]:
    """``threads`` client threads over at most ``processes`` processes, as evenly as possible."""
    count = max(1, min(processes, threads))
    base, extra = divmod(threads, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _http_sender(url: str, model: str) -> Callable[[], Callable[[str], Any]]:
    def make_sender() -> Callable[[str], Any]:
        client = http_client(url)
        return lambda text: infer_texts(client, model, [text])

    return make_sender


def _client_process(
    url: str, model: str, texts: list[str], threads: int, go: Any, results: Any, index: int
) -> None:
    """One load-generating process (run by ``multiprocessing``): report ready, wait for ``go``, send."""

    def ready() -> None:
        results.put(("ready", index))
        go.wait()

    try:
        run = timed_requests(_http_sender(url, model), texts, threads, ready=ready)
    except Exception as err:  # reported to the parent, which fails the profile with it
        results.put(("error", index, f"{type(err).__name__}: {err}"))
        return
    results.put(("done", index, run))


@dataclass(frozen=True)
class ConcurrentRun:
    """The concurrent run: all requests (``run``), the client setup and the throughput."""

    run: TimedRun
    client: ConcurrentClient
    throughput_rps: float


def steady_throughput(runs: Sequence[TimedRun]) -> float:
    """Answers per second while every client process was sending: from the last process's first
    send to the first process's last answer, so neither a process that started late nor one still
    finishing alone (fewer requests in flight) lowers it. The whole run's rate when that window is
    under half the run, or holds no answer."""
    first, last = min(r.started for r in runs), max(r.ended for r in runs)
    start, end = max(r.started for r in runs), min(r.ended for r in runs)
    inside = sum(1 for r in runs for t in r.answered_at if start < t <= end)
    if end - start >= 0.5 * (last - first) and inside:
        return inside / (end - start)
    return sum(len(r.latencies) for r in runs) / max(last - first, 1e-9)


def concurrent_load(
    url: str, model: str, texts: Sequence[str], threads: int, processes: int
) -> ConcurrentRun:
    """Send each text as its own request from ``threads`` threads spread over ``processes`` client
    processes (each makes its clients first; all start sending together)."""
    split = thread_split(threads, processes)
    bounds = [len(texts) * sum(split[:j]) // threads for j in range(len(split) + 1)]
    shares = [list(texts[bounds[j] : bounds[j + 1]]) for j in range(len(split))]  # by threads
    context = multiprocessing.get_context("spawn")  # no fork of a process with client threads
    go = context.Event()
    results = context.Queue()
    workers = [
        context.Process(
            target=_client_process,
            args=(url, model, share, count, go, results, i),
            name=f"modelpool-profile-client-{i}",
            daemon=True,
        )
        for i, (share, count) in enumerate(zip(shares, split, strict=True))
    ]
    for worker in workers:
        worker.start()
    try:
        runs = _collect(workers, results, go)
    finally:
        go.set()
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)
    merged = TimedRun(
        latencies=[x for r in runs for x in r.latencies],
        failures=[x for r in runs for x in r.failures],
        started=min(r.started for r in runs),
        ended=max(r.ended for r in runs),
        answered_at=sorted(t for r in runs for t in r.answered_at),
    )
    client = ConcurrentClient(processes=len(split), threads=sum(split))
    return ConcurrentRun(merged, client, steady_throughput(runs))


def _collect(workers: Sequence[Any], results: Any, go: Any) -> list[TimedRun]:
    ready: set[int] = set()
    runs: dict[int, TimedRun] = {}
    deadline = time.monotonic() + _CLIENT_DEADLINE_S
    while len(runs) < len(workers):
        if time.monotonic() > deadline:
            raise ProfileError(f"client processes did not finish within {_CLIENT_DEADLINE_S:.0f} s")
        try:
            message = results.get(timeout=0.5)
        except queue_module.Empty:
            dead = [w.name for i, w in enumerate(workers) if i not in runs and w.exitcode is not None]
            if dead:  # exited without reporting (killed, or failed before it could say why)
                raise ProfileError(f"client process {dead[0]} exited without a result") from None
            continue
        if message[0] == "ready":
            ready.add(message[1])
            if len(ready) == len(workers):
                go.set()
        elif message[0] == "done":
            runs[message[1]] = message[2]
        else:
            raise ProfileError(f"client process {message[1]} failed: {message[2]}")
    return [runs[i] for i in range(len(workers))]


def _fail_on_errors(model: str, what: str, run: TimedRun) -> None:
    if run.failures:
        raise ProfileError(
            f"{len(run.failures)} of {run.requests} {what} requests to {model} failed (first: "
            f"{run.failures[0]}); a profile is only written when every request is answered"
        )


def profile_model(
    url: str,
    server_pid: int,
    model_dir: Path,
    data: LabelledTexts,
    scores: tuple[list[float], str],
    dataset: str,
    settings: ProfileSettings = ProfileSettings(),
    device: str | None = None,
) -> CapabilityProfile:
    """Measure one loaded model: accuracy (overall and by bucket), latency, throughput, memory.

    ``device`` defaults to where ``config.pbtxt`` places the instances (``KIND_GPU``: ``gpu``).
    Raises ``ProfileError`` when the model's labels are not ``data``'s or any request fails.
    """
    version = read_version(model_dir)
    name = version.name
    mismatch = models_label_mismatch(model_dir, data.label_names)
    if mismatch:
        raise ProfileError(f"{name} and the data set disagree on the labels: {mismatch}")
    texts = list(data.texts)
    probs = classify_all(http_client(url), name, texts, settings.batch_size)
    correct = probs.argmax(axis=1) == data.labels

    sample = [texts[i % len(texts)] for i in range(settings.latency_requests)]
    single = timed_requests(_http_sender(url, name), sample, 1)
    _fail_on_errors(name, "batch-1", single)
    burst = [texts[i % len(texts)] for i in range(settings.concurrent_requests)]
    load = concurrent_load(url, name, burst, settings.concurrency, settings.client_processes)
    _fail_on_errors(name, "concurrent", load.run)
    concurrent, client, throughput = load.run, load.client, load.throughput_rps
    return CapabilityProfile(
        variant=version.variant.value,
        model_name=name,
        model_digest=version.digest,
        model_created=version.created,
        created=dt.datetime.now(dt.UTC),
        device=device or read_instance_device(model_dir),
        dataset=dataset,
        items=len(texts),
        accuracy=float(correct.mean()),
        complexity_scorer=scores[1],
        accuracy_by_bucket=bucket_accuracy(correct, scores[0], settings.bucket_edges),
        latency_batch1=latency_figures(single.latencies, 1),
        latency_concurrent=latency_figures(concurrent.latencies, client.threads),
        throughput_rps=throughput,
        capacity_per_replica_rps=throughput,
        memory_rss_bytes=stub_rss_bytes(server_pid, name),
        concurrent_client=client,
    )


def write_profiles(profiles: Sequence[CapabilityProfile], out: Path) -> None:
    """Write ``<model>.profile.json`` and ``.yaml`` per profile and ``profiles.txt`` (the table)."""
    out.mkdir(parents=True, exist_ok=True)
    for profile in profiles:
        (out / f"{profile.model_name}.profile.json").write_text(profile.to_json(), encoding="utf-8")
        (out / f"{profile.model_name}.profile.yaml").write_text(profile.to_yaml(), encoding="utf-8")
    (out / "profiles.txt").write_text(render_table(profiles) + "\n", encoding="utf-8")


_LOG_ERROR = re.compile(r"^E\d{4} [\d:.]+ +\d+ [^\]]*\] ?(.*)$")


def triton_errors(log: str) -> list[str]:
    """The error lines of a ``tritonserver`` log, without their time/thread/source prefix."""
    found = []
    for line in log.splitlines():
        match = _LOG_ERROR.match(line.strip())
        if match:  # Triton escapes a Python traceback into the line ("...\n\nAt:\n  file(1): f"): drop it
            found.append(match.group(1).strip().strip('"').split("\\n")[0].strip())
    return found


def _start_failure(err: RuntimeError, log: str) -> ProfileError:
    errors = triton_errors(log)
    loads = [e for e in errors if "failed to load" in e or "load failed" in e.lower()]
    reason = (loads or errors or [str(err).splitlines()[0]])[0]
    return ProfileError(f"tritonserver could not load the models: {reason}")


def profile_repository(
    repository: Path,
    models: Sequence[str],
    data: LabelledTexts,
    dataset: str,
    scorer_path: Path | None = None,
    settings: ProfileSettings = ProfileSettings(),
) -> list[CapabilityProfile]:
    """Start ``tritonserver`` on ``repository`` with ``models`` loaded and profile each in turn.

    A model Triton cannot load ends it with a ``ProfileError`` carrying Triton's error line."""
    from modelpool.devcluster.triton import TritonProcess

    if not models:
        raise ProfileError(f"no models to profile in {repository}")
    scores = complexity_scores(list(data.texts), scorer_path)
    handle, log_name = tempfile.mkstemp(prefix="modelpool-profile-tritonserver-", suffix=".log")
    os.close(handle)
    log_path = Path(log_name)  # kept until the end: Triton's load errors are read from it
    try:
        server = TritonProcess(repository, models, startup_timeout=300.0, log_path=log_path)
        try:
            server.start()
        except RuntimeError as err:
            log = log_path.read_text(errors="replace") if log_path.is_file() else ""
            raise _start_failure(err, log) from None
        try:
            assert server.pid is not None
            return [
                profile_model(server.http_url, server.pid, repository / m, data, scores, dataset, settings)
                for m in models
            ]
        finally:
            server.stop()
    finally:
        log_path.unlink(missing_ok=True)
