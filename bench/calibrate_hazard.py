"""Calibrate the live hazard's score gains against the twin's labelled failures.

The twin knows when every part will fail hard; the engine only sees telemetry. This runs a
fault-dense cluster under the ``binary`` policy (which acts on hard signals only, so parts with
a precursor are left to fail and the labels are not censored by early removals) while a shadow
seamguard engine scores the same telemetry and acts on nothing. Facility faults that slow parts
without failing them (a rack short of power, warm or short facility water, a congested leaf) and
gray component faults that never end hard run through the same two days, so slowness is in the
data as well as failure. Every ``--sample-s`` it records, for every GPU, node and uplink still at
risk (not failed, not offline), its scores and whether it failed hard within the next
``--horizon-h``; then it fits the proportional-hazards model of ``seamguard.economics.hazard``,

    P(fail within H) = 1 - exp(-H x base x exp(a + gfs_gain[kind] x GFS + prs_gain x PRS)),

by maximum likelihood (``a`` absorbs the scenario's raised base rates), twice: with GFS and PRS
over the failure precursors only (``hazard.precursors``, what the engine uses) and over all
evidence, and prints both fits' log-likelihoods, so the choice of precursors is a measured one.
It prints the fitted gains with bootstrap intervals and the observed failure share per score
band, so the fit can be checked by eye. The defaults in ``hazard`` come from this script
(docs/checkpointing.md).

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
    "faults": [  # slowness that never ends in a failure: it must not read as a failure precursor
        {"kind": "psu_loss", "target": "rack/r002", "onset_h": 4, "ramp_h": 0.25, "severity": 0.8, "duration_h": 6},
        {"kind": "supply_temp_rise", "target": "cdu/cdu1", "onset_h": 12, "ramp_h": 2, "severity": 1.2, "duration_h": 6},
        {"kind": "cdu_flow_loss", "target": "cdu/cdu2", "onset_h": 22, "ramp_h": 1, "severity": 0.5, "duration_h": 6},
        {"kind": "switch_congestion", "target": "switch/leaf01", "onset_h": 30, "ramp_h": 0.5, "severity": 0.8, "duration_h": 4},
        {"kind": "psu_loss", "target": "rack/r013", "onset_h": 38, "ramp_h": 0.25, "severity": 1.0, "duration_h": 5},
        {"kind": "hw_thermal", "target": "gpu/n0021/2", "onset_h": 8, "severity": 0.8},
        {"kind": "pcie_downtrain", "target": "gpu/n0040/5", "onset_h": 16, "severity": 0.8},
        {"kind": "link_gray", "target": "link/n0033", "onset_h": 26, "ramp_h": 3, "severity": 0.6},
    ],
}  # fmt: skip
SCORES = ("precursors", "all_evidence")
HARD_PARTS = {
    HardEffect.GPU: EntityKind.GPU,
    HardEffect.NODE: EntityKind.NODE,
    HardEffect.LINK: EntityKind.LINK,
}


class ShadowScorer:
    """Records the shadow engine's scores of every part, every ``sample_s``."""

    def __init__(self, world: World, sample_s: float) -> None:
        self.engine = SeamguardPolicy(without_ground_truth(world), {})
        topo = world.topology
        self.parts = np.concatenate([topo.members[k] for k in PART_KINDS if k in HARD_PARTS.values()])
        self.sample_s = sample_s
        self.next_t = world.start
        self.rows: list[tuple[float, dict[str, np.ndarray], np.ndarray]] = []

    def observe(self, now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: FleetView) -> None:
        self.engine.observe(now, batches, view)  # its actions are dropped: a shadow acts on nothing
        if now >= self.next_t:
            ctl = self.engine.cells[0].controller
            at_risk = ~np.isin(ctl.states[self.parts], (int(State.FAILED), int(State.UNKNOWN)))
            scores = {"gfs_precursors": ctl.gfs_precursor, "prs_precursors": ctl.prs_precursor,
                      "gfs_all_evidence": ctl.gfs, "prs_all_evidence": ctl.prs}  # fmt: skip
            self.rows.append((now, {k: v[self.parts].copy() for k, v in scores.items()}, at_risk))
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
    scores = {k: np.stack([r[1][k] for r in shadow.rows]) for k in shadow.rows[0][1]}  # (samples, parts)
    at_risk = np.stack([r[2] for r in shadow.rows])  # a part already failed, or offline, cannot fail again
    position = {int(g): i for i, g in enumerate(shadow.parts.tolist())}
    failed = np.zeros(at_risk.shape, dtype=bool)
    for f in world.faults:
        kind = HARD_PARTS.get(f.spec.hard)
        if kind is None or not np.isfinite(f.hard_at):
            continue
        col = position[int(topo.members[kind][f.local])]
        failed[(t < f.hard_at) & (t >= f.hard_at - horizon_s), col] = True
    kinds = np.broadcast_to(topo.kind_code[shadow.parts], at_risk.shape)
    keep = at_risk.ravel()
    out = {k: v.ravel()[keep] for k, v in scores.items()}
    return {**out, "failed": failed.ravel()[keep], "kind": kinds.ravel()[keep]}


GAIN_KINDS = tuple(HARD_PARTS.values())  # one GFS gain per part kind, as ``hazard.gfs_gain``


def fit(
    data: dict[str, np.ndarray], score: str, base_per_s: np.ndarray, horizon_s: float
) -> tuple[np.ndarray, float]:
    """(a, gfs_gain per kind of GAIN_KINDS, prs_gain) maximising the likelihood of the failure
    labels, and that maximum's log-likelihood."""
    gfs, prs, y = data[f"gfs_{score}"], data[f"prs_{score}"], data["failed"]
    exposure = base_per_s * horizon_s
    per_kind = [gfs * (data["kind"] == KIND_CODE[k]) for k in GAIN_KINDS]
    design = np.stack([np.ones_like(gfs), *per_kind, prs], axis=1)

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The negative log-likelihood and its gradient: with 10^6 samples a finite-difference
        gradient is too coarse, and the optimiser would stop at its starting point."""
        mu = exposure * np.exp(np.clip(design @ theta, -50, 50))
        p = -np.expm1(-mu)  # P(fail within H)
        value = -float(np.sum(np.where(y, np.log(np.maximum(p, 1e-300)), -mu)))
        with np.errstate(divide="ignore", invalid="ignore"):
            hit = np.where(p > 0, mu * np.exp(-mu) / p, 1.0)  # d log p / d eta
        d_eta = np.where(y, -hit, mu)
        return value, design.T @ d_eta

    # the raised rates, mild gains
    start = np.array([np.log(SCENARIO["hazard_scale"]), *[2.0] * len(GAIN_KINDS), 0.5])
    bounds = [(-20.0, 20.0), *[(0.0, 30.0)] * (len(GAIN_KINDS) + 1)]
    res = minimize(nll, start, jac=True, method="L-BFGS-B", bounds=bounds)
    if not res.success:
        raise RuntimeError(f"the {score} fit did not converge: {res.message}")
    return np.asarray(res.x), -float(res.fun)


def evidence_of(data: dict[str, np.ndarray], score: str) -> dict[str, int]:
    """Per kind, the failures that came with a score of 0.05 or more within the horizon: a gain
    fitted on none says nothing (it stays where the optimiser started)."""
    seen = (data[f"gfs_{score}"] >= 0.05) & data["failed"]
    return {k.value: int((seen & (data["kind"] == KIND_CODE[k])).sum()) for k in GAIN_KINDS}


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
    rng = np.random.default_rng(0)
    picks = [rng.integers(0, base.size, base.size) for _ in range(args.bootstrap)]
    fits: dict[str, Any] = {}
    for score in SCORES:
        theta, loglik = fit(data, score, base, horizon)
        boot = np.array([fit({k: v[p] for k, v in data.items()}, score, base[p], horizon)[0] for p in picks])
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
        gains = {
            k.value: {"gain": round(float(theta[1 + i]), 2), "ci95": [round(float(lo[1 + i]), 2), round(float(hi[1 + i]), 2)]}
            for i, k in enumerate(GAIN_KINDS)
        }  # fmt: skip
        fits[score] = {
            "log_likelihood": round(loglik, 1), "intercept": round(float(theta[0]), 3), "gfs_gain": gains,
            "prs_gain": round(float(theta[-1]), 2), "prs_gain_ci95": [round(float(lo[-1]), 2), round(float(hi[-1]), 2)],
            "failures_with_evidence": evidence_of(data, score), "by_gfs": bands(data[f"gfs_{score}"], data["failed"]),
        }  # fmt: skip
    print(json.dumps({"samples": int(base.size), "failures_labelled": int(data["failed"].sum()),
                      "horizon_h": args.horizon_h, **fits}))  # fmt: skip


def bands(gfs: np.ndarray, failed: np.ndarray) -> list[dict[str, Any]]:
    """The observed share failing within the horizon, by score band."""
    edges = [0.0, 0.05, 0.2, 0.35, 0.7, 1.01]
    return [
        {"gfs": f"[{a}, {b})", "samples": int(sel.sum()), "failed_within_h": int(failed[sel].sum())}
        for a, b in itertools.pairwise(edges)
        for sel in [(gfs >= a) & (gfs < b)]
    ]


if __name__ == "__main__":
    main()
