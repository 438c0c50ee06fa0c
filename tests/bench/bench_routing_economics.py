"""Routing economics on real data through the real Triton variants (run by hand, not by the suite).

For each data set: train (or reuse) the variants and the scorer, export them, start ``tritonserver``,
get every variant's answer for every test item (batched requests) and time single-item requests to
each variant for ``--timed-items`` seeded items (default 1000; latency columns cover those), then
replay the router's per-item decisions for: small only, quantized only, large only, cascade at the
router's default threshold 0.70, cascade and tiered at thresholds picked on *validation* data
(out-of-fold predictions on the training split, never the test split) as the cheapest reaching
99.5% of large-only accuracy there, and the oracle. Cost = sum over called variants of their mean
single-item latency (+ the scorer's in-process time), relative to large only. Writes
``<out>/<dataset>/{results.json,table.txt,curve.png}``::

    python tests/bench/bench_routing_economics.py [--data DIR] [--second-data DIR] [--out out/bench/...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(Path(__file__).resolve().parent)]

from economics_policies import (  # noqa: E402
    VARIANTS,
    Outcome,
    Recorded,
    cascade,
    oracle,
    render,
    single,
    tiered,
    validation_choice,
)

from modelpool.models.paths import banking77_dir  # noqa: E402

TARGET = 0.995
ROUTER_DEFAULT_THRESHOLD = 0.70
CASCADE_GRID = [round(float(t), 3) for t in np.linspace(0.05, 0.99, 48)]


def prepare(data: Path, work: Path, name: str, seed: int, limit: int | None) -> tuple[Path, Path, Path]:
    """Train (unless already there), train the scorer, export; returns (trained, scorer, repository)."""
    from modelpool.models.export import export_repository
    from modelpool.models.train import TrainOptions, train_complexity_scorer, train_variants

    trained, scorer, repository = work / "trained", work / "scorer", work / "repository"
    if not (trained / "train-report.json").is_file():
        train_variants(TrainOptions(data=data, out=trained, seed=seed, limit=limit))
    if not (scorer / "validation.npz").is_file():
        train_complexity_scorer(TrainOptions(data=data, out=scorer, seed=seed, limit=limit), trained)
    export_repository(trained, repository, name)
    return trained, scorer, repository


def record(
    repository: Path, name: str, texts: list[str], labels: Any, scorer_dir: Path, timed_items: int, seed: int
) -> tuple[Recorded, dict[str, float]]:
    """Answers of every variant for every item (batched requests), latencies of single-item requests for
    ``timed_items`` seeded items, and scorer scores (and in-process times) for every item."""
    from modelpool.models.client import classify_all

    timed = np.zeros(len(texts), dtype=bool)
    timed[np.random.default_rng(seed).permutation(len(texts))[:timed_items]] = True
    from modelpool.devcluster.triton import TritonProcess
    from modelpool.models.client import http_client, infer_texts
    from modelpool.models.scorer import load_scorer

    probs: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    compute_ms: dict[str, float] = {}
    from modelpool.models.export import model_name
    from modelpool.models.runtime import Variant

    models = [model_name(name, Variant(v)) for v in VARIANTS]
    with TritonProcess(repository, models, startup_timeout=300.0) as server:
        client = http_client(server.http_url)
        for variant, model in zip(VARIANTS, models, strict=True):
            probs[variant] = classify_all(client, model, texts, batch_size=32)
            latency[variant] = np.full(len(texts), np.nan)
            drift, flips = 0.0, 0
            before = _compute_counters(server.metrics_url, model)
            for i in np.flatnonzero(timed):
                start = time.perf_counter()
                single_answer = infer_texts(client, model, [texts[i]])[0]
                latency[variant][i] = (time.perf_counter() - start) * 1000.0
                drift = max(drift, float(np.abs(single_answer - probs[variant][i]).max()))
                flips += int(single_answer.argmax() != probs[variant][i].argmax())
            # dynamic int8 quantizes activations with a per-batch scale, so its answers depend on the
            # batch; small and large must not (routing replays their batched answers)
            if variant != "quantized" and drift > 1e-3:
                raise AssertionError(f"{model}: single and batched answers differ by {drift:.2g}")
            after = _compute_counters(server.metrics_url, model)
            compute_ms[variant] = (after[0] - before[0]) / max(after[1] - before[1], 1) / 1000.0
            ms = latency[variant][timed]
            print(
                f"  {model}: {int(timed.sum())} single requests, mean {ms.mean():.2f} ms; "
                f"Triton compute {compute_ms[variant]:.2f} ms/item; "
                f"single vs batched: max prob diff {drift:.2g}, label flips {flips}",
                flush=True,
            )
    scorer = load_scorer(scorer_dir)
    scores, scorer_ms = [], []
    for text in texts:
        start = time.perf_counter()
        scores.append(scorer.score([text])[0])
        scorer_ms.append((time.perf_counter() - start) * 1000.0)
    return Recorded(labels, probs, latency, np.array(scores), np.array(scorer_ms), timed), compute_ms


def _compute_counters(metrics_url: str, model: str) -> tuple[float, float]:
    """(nv_inference_compute_infer_duration_us, nv_inference_count) of ``model`` from Triton's metrics."""
    import httpx

    values = {"nv_inference_compute_infer_duration_us": 0.0, "nv_inference_count": 0.0}
    for line in httpx.get(metrics_url, timeout=10.0).text.splitlines():
        name, _, rest = line.partition("{")
        if name in values and f'model="{model}"' in rest:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["nv_inference_compute_infer_duration_us"], values["nv_inference_count"]


def run_dataset(
    data: Path, out: Path, seed: int, limit: int | None, timed_items: int, budget: float
) -> dict[str, Any]:
    """The whole comparison for one data set folder; prints and writes the table and curve."""
    from modelpool.models.scorer import roc_auc
    from modelpool.models.train import load_limited

    splits = load_limited(data, limit, seed)
    name = splits.name.lower().replace("_", "-")
    work = out / name
    print(
        f"== {name}: train {len(splits.train)}, test {len(splits.test)}, classes {splits.train.num_classes}"
    )
    trained, scorer_dir, repository = prepare(data, work, name, seed, limit)
    texts = list(splits.test.texts)
    recorded, recorded_compute = record(
        repository, name, texts, splits.test.labels, scorer_dir, timed_items, seed
    )
    validation = np.load(scorer_dir / "validation.npz")
    v_small, v_large, v_labels = validation["small"], validation["large"], validation["labels"]
    cascade_t = validation_choice(v_small, v_large, v_labels, v_small.max(1), True, CASCADE_GRID, TARGET)
    tier_grid = sorted(
        {round(float(q), 4) for q in np.quantile(validation["scores"], np.linspace(0.5, 1.0, 101))}
    )
    tier_t = validation_choice(v_small, v_large, v_labels, validation["scores"], False, tier_grid, TARGET)
    # escalation budget: thresholds that send `budget` of the validation items to large
    budget_cascade_t = float(np.quantile(v_small.max(1), budget))
    budget_tier_t = float(np.quantile(validation["scores"], 1.0 - budget))
    outcomes: list[Outcome] = [single(recorded, v) for v in VARIANTS]
    outcomes.append(cascade(recorded, ROUTER_DEFAULT_THRESHOLD, "cascade @0.70 (default)"))
    if cascade_t is not None:
        outcomes.append(cascade(recorded, cascade_t, f"cascade @{cascade_t:.2f} (val. acc)"))
    if tier_t is not None:
        outcomes.append(tiered(recorded, tier_t, f"tiered @{tier_t:.3f} (val. acc)"))
    outcomes.append(cascade(recorded, budget_cascade_t, f"cascade @{budget_cascade_t:.3f} (budget)"))
    outcomes.append(tiered(recorded, budget_tier_t, f"tiered @{budget_tier_t:.3f} (budget)"))
    outcomes.append(oracle(recorded))
    large_acc = outcomes[2].accuracy
    table = render(outcomes, large_acc)
    small_wrong = recorded.predictions("small") != recorded.labels
    auc = {
        "scorer": roc_auc(recorded.scores, small_wrong),
        "one_minus_confidence": roc_auc(1.0 - recorded.confidence("small"), small_wrong),
    }
    sweep = {
        "cascade": [asdict(cascade(recorded, t)) for t in CASCADE_GRID],
        "tiered": [asdict(tiered(recorded, t)) for t in tier_grid],
    }
    _plot(sweep, outcomes, large_acc, name, work / "curve.png")
    compute = ", ".join(f"{v} {ms:.2f}" for v, ms in recorded_compute.items())
    summary = (
        f"{table}\n\nTriton compute ms per single item: {compute}\n"
        f"small-error AUC on test: scorer {auc['scorer']:.3f}, "
        f"1-confidence {auc['one_minus_confidence']:.3f}; "
        f"scorer mean {recorded.scorer_ms.mean():.2f} ms/item\n"
        f"target: >= {100 * TARGET:.1f}% of large-only accuracy with <= 20% touching large"
    )
    print(summary, flush=True)
    (work / "table.txt").write_text(summary + "\n", encoding="utf-8")
    result = {
        "dataset": name,
        "data": str(data),
        "test_items": len(recorded.labels),
        "timed_items": int(recorded.timed.sum()),
        "thresholds": {
            "cascade_validation": cascade_t,
            "tiered_validation": tier_t,
            "budget": budget,
            "cascade_budget": budget_cascade_t,
            "tiered_budget": budget_tier_t,
        },
        "triton_compute_ms_per_single_item": recorded_compute,
        "outcomes": [asdict(o) for o in outcomes],
        "auc": auc,
        "train_report": json.loads((trained / "train-report.json").read_text()),
        "sweep": sweep,
    }
    (work / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def _plot(
    sweep: dict[str, list[dict[str, Any]]], outcomes: list[Outcome], large_acc: float, name: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style in (("cascade", "o-"), ("tiered", "s-")):
        points = sorted(sweep[key], key=lambda o: o["cost_rel"])
        ax.plot(
            [p["cost_rel"] for p in points],
            [p["accuracy"] for p in points],
            style,
            ms=3,
            label=f"{key} sweep",
        )
    for o in outcomes:
        ax.scatter([o.cost_rel], [o.accuracy], marker="x", zorder=5)
        ax.annotate(o.name, (o.cost_rel, o.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(TARGET * large_acc, color="grey", ls="--", lw=0.8, label="99.5% of large only")
    ax.set_xlabel("cost relative to large only (mean single-item latency units)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{name}: accuracy vs cost")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=banking77_dir(), help="first data set (default Banking77)"
    )
    parser.add_argument("--second-data", type=Path, default=None, help="second data set folder or CSV")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "routing-economics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many training rows (smoke runs)"
    )
    parser.add_argument(
        "--timed-items", type=int, default=1000, help="test items also sent one by one to time each variant"
    )
    parser.add_argument(
        "--budget", type=float, default=0.15, help="share of validation items a budget threshold escalates"
    )
    args = parser.parse_args()
    for data in [args.data, *([args.second_data] if args.second_data else [])]:
        run_dataset(data, args.out, args.seed, args.limit, args.timed_items, args.budget)


if __name__ == "__main__":
    main()
