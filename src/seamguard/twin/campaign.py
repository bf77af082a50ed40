"""Many runs of the twin: every policy on every seed of one scenario, on the very same faults.

The world (cluster, per-GPU spread, faults and their times) is a function of (scenario, seed),
so each policy of a seed meets identical conditions and their difference is the policy's doing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from seamguard.errors import InputError
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario
from seamguard.twin.sim import POLICIES, Twin
from seamguard.twin.world import build_world

# Called once per engine tick of every run with the run's (policy, seed): a progress bar's feed.
StepCallback = Callable[[str, int], None]


def parse_policies(text: str) -> tuple[str, ...]:
    """``binary,seamguard`` -> the named policies, refusing unknown or repeated names."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise InputError("--policies", f"name at least one of {', '.join(POLICIES)}")
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise InputError(
            "--policies", f"unknown {', '.join(map(repr, unknown))}; expected {', '.join(POLICIES)}"
        )
    if len(set(names)) != len(names):
        raise InputError("--policies", f"a policy is named twice in {text!r}")
    return names


def seed_list(count: int, first: int = 0) -> tuple[int, ...]:
    if count < 1:
        raise InputError("--seeds", f"need at least one seed, got {count}")
    if first < 0:
        raise InputError("--first-seed", f"must be non-negative, got {first}")
    return tuple(range(first, first + count))


def run_campaign(
    scenario: Scenario,
    policies: Sequence[str],
    seeds: Sequence[int],
    on_step: StepCallback | None = None,
) -> list[RunResult]:
    """Every (seed, policy) pair, seed-major so that early results already compare policies."""
    results = []
    for seed in seeds:
        world = build_world(scenario, seed)
        for policy in policies:
            callback = None if on_step is None else partial(_relay, on_step, policy, seed)
            results.append(Twin(world, policy).run(callback))
    return results


def _relay(on_step: StepCallback, policy: str, seed: int, _t: float) -> None:
    on_step(policy, seed)


def run_steps(scenario: Scenario) -> int:
    """Engine ticks in one run (for a progress bar's total)."""
    return max(math.ceil(scenario.duration_s / scenario.tick_s), 1)
