"""``summary.json``: the stable contract scripts read from ``seamguard simulate``.

Schema 1 (documented in docs/twin.md)::

    {"schema": 1, "scenario": str, "description": str, "duration_h": float, "gpus": int,
     "seeds": [int, ...],
     "policies": {"<name>": {
         "ettr": {"mean": x, "ci95": [lo, hi], "per_seed": [x, ...]},
         "useful_gpu_hours": x, "useful_gpu_hours_ci95": [lo, hi], "reserved_gpu_hours": x,
         "lost_hours": {"<bucket>": x, ...},          # GPU-hours, mean over seeds
         "lost_share": {"<bucket>": x, ...},          # of reserved time; with ettr they sum to 1
         "healthy_wait_gpu_hours": x,                 # healthy GPUs waiting for a gray part, mean
         "false_quarantines": n, "missed_gray_failures": n,   # totals over all seeds
         "median_detection_lead_s": x | null,         # over every detected fault of every seed
         "detected_faults": n, "faults": n, "actions": {"<verb>": n},
         "outcomes": {"<kind> <status>": n},
         "serving": {"goodput": x, "p95_ttft_ms": x | null, ...} | null}}}
                                                      # a disaggregated deployment's figures, mean
                                                      # over seeds (``*_fault``: while a serving
                                                      # path's fault was on); null without one

Means over seeds carry a 95 % Student-t interval: seeds are independent draws of the same
scenario, so the interval says how much of a difference between policies is the luck of the draw.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from seamguard.twin.accounting import BUCKETS, LOST_BUCKETS
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario

SCHEMA = 1
HOUR = 3600.0


def mean_ci95(
    values: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> tuple[float, tuple[float, float]]:
    """Mean and its 95 % Student-t interval, clipped to the quantity's ``bounds`` (an ETTR
    interval past 1 is an artefact of few seeds); one value or no spread gives zero width."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if arr.size < 2 or float(arr.std()) == 0.0:
        return mean, (mean, mean)
    lo, hi = stats.t.interval(0.95, arr.size - 1, loc=mean, scale=stats.sem(arr))
    return mean, (float(max(lo, bounds[0])), float(min(hi, bounds[1])))


def _policy_summary(runs: Sequence[RunResult]) -> dict[str, Any]:
    totals = [r.bucket_totals() for r in runs]
    ettrs = [r.ettr for r in runs]
    useful = [t["productive"] / HOUR for t in totals]
    reserved = float(np.mean([r.reserved_gpu_s for r in runs])) / HOUR
    lost = {b: float(np.mean([t[b] for t in totals])) / HOUR for b in LOST_BUCKETS}
    leads = [lead for r in runs for lead in r.detection_leads()]
    actions: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for r in runs:
        actions.update(r.actions)
        outcomes.update(r.outcomes)
    ettr_mean, ettr_ci = mean_ci95(ettrs, (0.0, 1.0))
    useful_mean, useful_ci = mean_ci95(useful)
    return {
        "ettr": {"mean": ettr_mean, "ci95": list(ettr_ci), "per_seed": ettrs},
        "useful_gpu_hours": useful_mean,
        "useful_gpu_hours_ci95": list(useful_ci),
        "reserved_gpu_hours": reserved,
        "lost_hours": lost,
        "lost_share": {b: (v / reserved if reserved > 0 else None) for b, v in lost.items()},
        "healthy_wait_gpu_hours": float(np.mean([r.healthy_wait_gpu_h for r in runs])),
        "false_quarantines": sum(r.false_quarantines for r in runs),
        "missed_gray_failures": sum(r.missed_gray for r in runs),
        "median_detection_lead_s": float(np.median(leads)) if leads else None,
        "detected_faults": sum(
            1 for r in runs for f in r.faults if not f.benign and math.isfinite(f.detected_at)
        ),
        "faults": sum(1 for r in runs for f in r.faults if not f.benign),
        "actions": dict(sorted(actions.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "node_days": float(np.mean([r.node_days for r in runs])),
        "observed_node_days": float(np.mean([r.observed_node_days for r in runs])),
        "serving": _serving_means(runs),
    }


def _serving_means(runs: Sequence[RunResult]) -> dict[str, float | None] | None:
    """Each serving figure's mean over the seeds that have it; null where none does (a TTFT
    percentile of a window that served nothing), so the JSON stays strict."""
    tallies = [r.serving for r in runs if r.serving is not None]
    if not tallies:
        return None
    out: dict[str, float | None] = {}
    for key in sorted({k for t in tallies for k in t}):
        vals = [t[key] for t in tallies if key in t and math.isfinite(t[key])]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def summarize(scenario: Scenario, results: Sequence[RunResult]) -> dict[str, Any]:
    policies: dict[str, list[RunResult]] = {}
    for r in results:
        policies.setdefault(r.policy, []).append(r)
    gpus = scenario.cluster.nodes * scenario.cluster.gpus_per_node
    return {
        "schema": SCHEMA,
        "scenario": scenario.name,
        "description": " ".join(scenario.description.split()),
        "duration_h": scenario.duration_h,
        "observation": scenario.observation.mode,
        "gpus": gpus,
        "seeds": sorted({r.seed for r in results}),
        "buckets": list(BUCKETS),
        "policies": {name: _policy_summary(runs) for name, runs in policies.items()},
    }


def write_summary(summary: dict[str, Any], path: Path) -> None:
    """Written to a temporary file and renamed: a reader never sees half a summary."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
