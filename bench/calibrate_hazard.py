"""Calibrate the live hazard's score gains against the twin's labelled failures.

The twin knows when every part will fail hard; the engine only sees telemetry. This runs a
fault-dense cluster under the ``binary`` policy (which acts on hard signals only, so parts with
a precursor are left to fail and the labels are not censored by early removals) while a shadow
seamguard engine scores the same telemetry and acts on nothing. Every ``--sample-s`` it records,
for every GPU, node and uplink still at risk (not failed, not offline), its GFS, its PRS and
whether it failed hard within the next ``--horizon-h``; then it fits the proportional-hazards model of ``seamguard.economics.hazard``,

    P(fail within H) = 1 - exp(-H x base x exp(a + gfs_gain x GFS + prs_gain x PRS)),

by maximum likelihood (``a`` absorbs the scenario's raised base rates). It prints the fitted
gains with bootstrap intervals and the observed failure share per GFS band, so the fit can be
checked by eye. The defaults in ``hazard`` come from this script (docs/checkpointing.md).

    python bench/calibrate_hazard.py --seeds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from scipy.optimize import minimize

from seamguard.config import load_config
from seamguard.economics.hazard import DAY_S, PART_KINDS
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import KIND_CODE
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.faults import HardEffect
from seamguard.twin.policies.base import FleetView
from seamguard.twin.policies.seamguard import SeamguardPolicy
from seamguard.twin.scenario import Scenario, scenario_from_mapping
from seamguard.twin.sim import Twin, without_ground_truth
from seamguard.twin.world import World, build_world

SCENARIO: dict[str, Any] = {
    "name": "hazard-calibration",
    "description": "a fault-dense 512-GPU cluster: the Llama 3 rates x40, observed at full cadence",
    "duration_h": 48,
    "cluster": {"cdus": 4, "racks_per_cdu": 4, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0", "ckpt1"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 56, "checkpoint_gb": 800, "fallback_storage": "ckpt1"}],
    "hazard_preset": "llama3-405b",
    "hazard_scale": 40,
}  # fmt: skip
HARD_PARTS = {
    HardEffect.GPU: EntityKind.GPU,
    HardEffect.NODE: EntityKind.NODE,
    HardEffect.LINK: EntityKind.LINK,
}


class ShadowScorer:
    """Records the shadow engine's scores of every part, every ``sample_s``."""

    def __init__(self, world: World, sample_s: float) -> None:
        self.engine = SeamguardPolicy(without_ground_truth(world), load_config())
        topo = world.topology
        self.parts = np.concatenate([topo.members[k] for k in PART_KINDS if k in HARD_PARTS.values()])
        self.sample_s = sample_s
        self.next_t = world.start
        self.rows: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []

    def observe(self, now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: FleetView) -> None:
        self.engine.observe(now, batches, view)  # its actions are dropped: a shadow acts on nothing
        if now >= self.next_t:
            ctl = self.engine.cells[0].controller
            at_risk = ~np.isin(ctl.states[self.parts], (int(State.FAILED), int(State.UNKNOWN)))
            self.rows.append((now, ctl.gfs[self.parts].copy(), ctl.prs[self.parts].copy(), at_risk))
            self.next_t = now + self.sample_s


def record(scenario: Scenario, seed: int, sample_s: float, horizon_s: float) -> dict[str, np.ndarray]:
    world = build_world(scenario, seed)
    twin = Twin(world, "binary")
    shadow = ShadowScorer(world, sample_s)
    inner = twin.policy.observe

    def both(now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: FleetView) -> Any:
        shadow.observe(now, batches, view)
        return inner(now, batches, view)

    twin.policy.observe = both  # type: ignore[method-assign]
    twin.run()
    topo = world.topology
    t = np.array([r[0] for r in shadow.rows])
    gfs = np.stack([r[1] for r in shadow.rows])  # (samples, parts)
    prs = np.stack([r[2] for r in shadow.rows])
    at_risk = np.stack([r[3] for r in shadow.rows])  # a part already failed, or offline, cannot fail again
    position = {int(g): i for i, g in enumerate(shadow.parts.tolist())}
    failed = np.zeros_like(gfs, dtype=bool)
    for f in world.faults:
        kind = HARD_PARTS.get(f.spec.hard)
        if kind is None or not np.isfinite(f.hard_at):
            continue
        col = position[int(topo.members[kind][f.local])]
        failed[(t < f.hard_at) & (t >= f.hard_at - horizon_s), col] = True
    kinds = np.broadcast_to(topo.kind_code[shadow.parts], gfs.shape)
    keep = at_risk.ravel()
    return {"gfs": gfs.ravel()[keep], "prs": prs.ravel()[keep], "failed": failed.ravel()[keep],
            "kind": kinds.ravel()[keep]}  # fmt: skip


def fit(data: dict[str, np.ndarray], base_per_s: np.ndarray, horizon_s: float) -> np.ndarray:
    """(a, gfs_gain, prs_gain) maximising the likelihood of the failure labels."""
    gfs, prs, y = data["gfs"], data["prs"], data["failed"]
    exposure = base_per_s * horizon_s

    def nll(theta: np.ndarray) -> float:
        eta = np.clip(theta[0] + theta[1] * gfs + theta[2] * prs, -50, 50)
        mu = exposure * np.exp(eta)
        p = -np.expm1(-mu)  # P(fail within H)
        return -float(np.sum(np.where(y, np.log(np.maximum(p, 1e-300)), -mu)))

    res = minimize(nll, np.array([0.0, 5.0, 1.0]), method="L-BFGS-B", bounds=[(-20, 20), (0, 30), (0, 30)])
    return np.asarray(res.x)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sample-s", type=float, default=300.0)
    parser.add_argument("--horizon-h", type=float, default=1.0)
    parser.add_argument("--bootstrap", type=int, default=50)
    args = parser.parse_args()
    if args.seeds < 1 or args.sample_s <= 0 or args.horizon_h <= 0:
        parser.error("--seeds, --sample-s and --horizon-h must be positive")
    scenario = scenario_from_mapping(SCENARIO, "hazard-calibration")
    horizon = args.horizon_h * 3600.0
    console = Console(stderr=True)
    parts: list[dict[str, np.ndarray]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("recording", total=args.seeds)
        for seed in range(args.seeds):
            parts.append(record(scenario, seed, args.sample_s, horizon))
            progress.advance(task)
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    hz = load_config().hazard
    base = np.zeros(data["kind"].size)
    for kind in HARD_PARTS.values():
        base[data["kind"] == KIND_CODE[kind]] = hz.base_per_day.get(kind, 0.0) / DAY_S
    theta = fit(data, base, horizon)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(args.bootstrap):
        pick = rng.integers(0, base.size, base.size)
        boot.append(fit({k: v[pick] for k, v in data.items()}, base[pick], horizon))
    lo, hi = np.percentile(np.array(boot), [2.5, 97.5], axis=0)
    bands = [0.0, 0.05, 0.2, 0.35, 0.7, 1.01]
    share = []
    for a, b in itertools.pairwise(bands):
        sel = (data["gfs"] >= a) & (data["gfs"] < b)
        share.append(
            {
                "gfs": f"[{a}, {b})",
                "samples": int(sel.sum()),
                "failed_within_h": int(data["failed"][sel].sum()),
            }
        )
    print(json.dumps({
        "samples": int(base.size), "failures_labelled": int(data["failed"].sum()), "horizon_h": args.horizon_h,
        "intercept": round(float(theta[0]), 3), "gfs_gain": round(float(theta[1]), 2), "prs_gain": round(float(theta[2]), 2),
        "gfs_gain_ci95": [round(float(lo[1]), 2), round(float(hi[1]), 2)],
        "prs_gain_ci95": [round(float(lo[2]), 2), round(float(hi[2]), 2)], "by_gfs": share,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
