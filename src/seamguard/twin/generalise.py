"""Policies compared over sampled scenarios: does seamguard hold on clusters nobody tuned for?

Each sampled scenario runs once per policy, on the world of its own seed (the sample seed), so
every policy of a scenario meets the same faults. Per policy this gives the mean ETTR, the mean
ratio to the oracle (scenario by scenario, then averaged: a large scenario does not outweigh a
small one), and the false quarantines the twin's ground truth counts (``RunResult.false_quarantines``:
a node the policy drained while nothing was wrong with it or its domain, nor about to be);
and the share of scenarios where seamguard is at least as good as the better of ``binary`` and
``young-daly``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seamguard.errors import InputError
from seamguard.twin.accounting import LOST_BUCKETS
from seamguard.twin.campaign import StepCallback, run_many
from seamguard.twin.results import RunResult
from seamguard.twin.sampler import Bounds, Facts, sample_scenario
from seamguard.twin.scenario import Scenario

BASELINES = ("binary", "young-daly")
# ETTRs that differ by less than this are equal: two policies that did the same thing can sum
# the same GPU-seconds in another order, and a rounding difference is not a loss.
TIE = 1e-9
LONGEST_FIRST = {"seamguard": 0, "seamguard-remote": 0}  # the engine's runs first: the pool ends sooner


@dataclass(frozen=True)
class Shortfall:
    """A scenario where seamguard ended below the better baseline, and the loss that grew most."""

    seed: int
    baseline: str
    gap: float  # the baseline's ETTR less seamguard's
    bucket: str  # the loss bucket (``LOST_BUCKETS``) seamguard lost most more of
    extra: float  # by how much, as a share of reserved GPU time

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "baseline": self.baseline, "gap": self.gap, "bucket": self.bucket,
                "extra": self.extra}  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One sampled scenario's results, per policy."""

    seed: int
    facts: Facts
    ettr: dict[str, float]
    false_quarantines: dict[str, int]
    wall_s: dict[str, float]  # each run's wall time: what sizes the sample (docs/twin.md)
    # per policy, the share of reserved GPU time each loss bucket took (``LOST_BUCKETS``)
    lost: dict[str, dict[str, float]] = field(default_factory=dict)

    def ratio_to_oracle(self, policy: str) -> float | None:
        oracle = self.ettr.get("oracle")
        if oracle is None or not oracle > 0:
            return None
        return self.ettr[policy] / oracle

    def shortfall(self) -> Shortfall | None:
        """Where seamguard ended below the better baseline: by how much, and the loss bucket that
        grew most against it (None when it did not, or the losses are unknown)."""
        if self.at_least_best_baseline() is not False or "seamguard" not in self.lost:
            return None
        base = max((b for b in BASELINES if b in self.ettr), key=lambda b: self.ettr[b])
        ours, theirs = self.lost["seamguard"], self.lost.get(base, {})
        extra = {k: ours.get(k, 0.0) - theirs.get(k, 0.0) for k in LOST_BUCKETS}
        bucket = max(extra, key=lambda k: extra[k])
        return Shortfall(self.seed, base, self.ettr[base] - self.ettr["seamguard"], bucket, extra[bucket])

    def at_least_best_baseline(self) -> bool | None:
        """seamguard's ETTR >= the better baseline's (None without seamguard or a baseline)."""
        base = [self.ettr[b] for b in BASELINES if b in self.ettr]
        if "seamguard" not in self.ettr or not base:
            return None
        return self.ettr["seamguard"] >= max(base) - TIE


@dataclass(frozen=True)
class Comparison:
    rows: tuple[Row, ...]
    policies: tuple[str, ...]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.rows]

    def mean_ettr(self, policy: str) -> float:
        return float(np.mean([r.ettr[policy] for r in self.rows]))

    def mean_ratio_to_oracle(self, policy: str) -> float | None:
        ratios = [r.ratio_to_oracle(policy) for r in self.rows]
        kept = [x for x in ratios if x is not None]
        return float(np.mean(kept)) if kept else None

    def false_quarantines(self, policy: str) -> int:
        return sum(r.false_quarantines[policy] for r in self.rows)

    def shortfalls(self) -> list[Shortfall]:
        return [s for s in (r.shortfall() for r in self.rows) if s is not None]

    def share_at_least_best_baseline(self) -> float | None:
        wins = [w for w in (r.at_least_best_baseline() for r in self.rows) if w is not None]
        return sum(wins) / len(wins) if wins else None

    def to_json(self) -> dict[str, Any]:
        """The bench's last line and ``results.json``'s ``overall``: seamguard's figures on top."""
        main = "seamguard" if "seamguard" in self.policies else self.policies[0]
        return {
            "scenarios": len(self.rows),
            "seeds": self.seeds,
            "policy": main,
            "share_at_least_best_baseline": self.share_at_least_best_baseline(),
            "mean_ratio_to_oracle": self.mean_ratio_to_oracle(main),
            "false_quarantines": self.false_quarantines(main),
            "shortfalls": [s.to_json() for s in self.shortfalls()],
            "per_policy": {
                p: {
                    "mean_ettr": self.mean_ettr(p),
                    "mean_ratio_to_oracle": self.mean_ratio_to_oracle(p),
                    "false_quarantines": self.false_quarantines(p),
                    "wall_s": sum(r.wall_s.get(p, 0.0) for r in self.rows),
                }
                for p in self.policies
            },
        }


def sampled(seeds: Sequence[int], bounds: Bounds | None = None) -> list[Scenario]:
    return [sample_scenario(s, bounds) for s in seeds]


def compare_runs(
    scenarios: Sequence[Scenario],
    seeds: Sequence[int],
    policies: Sequence[str],
    on_step: StepCallback | None = None,
    *,
    workers: int | None = None,
) -> Comparison:
    """Every policy on every scenario (scenario ``i`` on the world of ``seeds[i]``), in one pool."""
    if len(scenarios) != len(seeds):
        raise InputError("sampled scenarios", f"{len(scenarios)} scenarios for {len(seeds)} seeds")
    if len(set(seeds)) != len(seeds):
        raise InputError("--seed", "each sampled scenario needs its own seed (progress is keyed by it)")
    tasks = [(sc, seed, p) for sc, seed in zip(scenarios, seeds, strict=True) for p in policies]
    order = sorted(range(len(tasks)), key=lambda i: (LONGEST_FIRST.get(tasks[i][2], 1), i))
    done = run_many([tasks[i] for i in order], on_step, workers=workers)
    by_task: dict[tuple[int, str], RunResult] = {}
    for i, result in zip(order, done, strict=True):
        by_task[tasks[i][1], tasks[i][2]] = result
    return Comparison(
        tuple(_row(sc, seed, policies, by_task) for sc, seed in zip(scenarios, seeds, strict=True)),
        tuple(policies),
    )


def _row(
    scenario: Scenario, seed: int, policies: Sequence[str], runs: dict[tuple[int, str], RunResult]
) -> Row:
    return Row(
        seed=seed,
        facts=Facts.of(scenario),
        ettr={p: runs[seed, p].ettr for p in policies},
        false_quarantines={p: runs[seed, p].false_quarantines for p in policies},
        wall_s={p: runs[seed, p].wall_s for p in policies},
        lost={p: runs[seed, p].lost_shares() for p in policies},
    )
