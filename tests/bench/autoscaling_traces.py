"""A second trace for the autoscaling benchmark: a seeded synthetic bursty trace in the Azure format.

Process (all seeded by ``seed``): an ON/OFF source. OFF periods last Exp(mean ``off_mean_s``) with
a background Poisson rate ``idle_rps``; ON periods last Exp(mean ``on_mean_s``) with a peak rate
drawn from LogNormal(ln ``burst_median_rps``, 0.6), reached by a linear ramp over the first
``ramp_s`` seconds. Arrivals are a non-homogeneous Poisson process (thinning). Context tokens are
LogNormal(ln 800, 1.0) and generated tokens LogNormal(ln 40, 0.9), both clipped to [1, 8000] —
deliberately different from the code trace (median 1469 / 13), so nothing fitted to one carries over.
"""

from __future__ import annotations

import csv
import math
import random
from datetime import datetime, timedelta
from pathlib import Path


def synthetic_bursty_trace(
    path: Path,
    seed: int = 7,
    duration_s: float = 3600.0,
    off_mean_s: float = 45.0,
    on_mean_s: float = 25.0,
    burst_median_rps: float = 18.0,
    idle_rps: float = 0.3,
    ramp_s: float = 4.0,
) -> Path:
    """Write the trace as ``TIMESTAMP,ContextTokens,GeneratedTokens`` CSV at ``path``; return it."""
    rng = random.Random(seed)
    segments: list[tuple[float, float, float]] = []  # (start, end, peak rate; 0 = idle)
    t, on = 0.0, False
    while t < duration_s:
        length = rng.expovariate(1.0 / (on_mean_s if on else off_mean_s))
        peak = rng.lognormvariate(math.log(burst_median_rps), 0.6) if on else 0.0
        segments.append((t, min(duration_s, t + length), peak))
        t += length
        on = not on
    start = datetime(2024, 1, 1)
    rows: list[tuple[str, int, int]] = []
    for seg_start, seg_end, peak in segments:
        ceiling = max(peak, idle_rps)
        t = seg_start
        while True:
            t += rng.expovariate(ceiling)
            if t >= seg_end:
                break
            rate = idle_rps if peak == 0 else max(idle_rps, peak * min(1.0, (t - seg_start) / ramp_s))
            if rng.random() * ceiling <= rate:
                context = int(min(8000, max(1, rng.lognormvariate(math.log(800), 1.0))))
                generated = int(min(8000, max(1, rng.lognormvariate(math.log(40), 0.9))))
                stamp = (start + timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M:%S.%f")
                rows.append((stamp, context, generated))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        writer.writerows(rows)
    return path
