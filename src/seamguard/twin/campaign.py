"""Many runs of the twin: every policy on every seed of one scenario, on the very same faults.

The world (cluster, per-GPU spread, faults and their times) is a function of (scenario, seed),
so each policy of a seed meets identical conditions and their difference is the policy's doing.
Every (seed, policy) run is independent and deterministic, so runs can go to other processes
(``engine="local"``) or to a Ray cluster (``engine="ray"``) and still give the serial results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from seamguard.errors import InputError
from seamguard.twin.executors import ENGINES, StepCallback, progress, run_noted, run_pool, run_ray, run_tasks
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario
from seamguard.twin.sim import POLICIES, VARIANTS, Twin
from seamguard.twin.world import build_world

__all__ = [
    "StepCallback", "check_engine", "parse_policies", "run_campaign", "run_many", "run_seconds", "seed_list",
]  # fmt: skip


def parse_policies(text: str) -> tuple[str, ...]:
    """``binary,seamguard`` -> the named policies, refusing unknown or repeated names."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise InputError("--policies", f"name at least one of {', '.join(POLICIES)}")
    unknown = [p for p in names if p not in POLICIES + VARIANTS]
    if unknown:
        raise InputError(
            "--policies",
            f"unknown {', '.join(map(repr, unknown))}; expected {', '.join(POLICIES + VARIANTS)}",
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


def check_engine(engine: str, workers: int | None) -> None:
    """Refuse an unknown engine or a worker count below one before anything starts."""
    if engine not in ENGINES:
        raise InputError("--engine", f"unknown {engine!r}; expected one of {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise InputError("--workers", f"need at least one worker, got {workers}")


def run_seconds(scenario: Scenario) -> float:
    """Simulated seconds in one run: a progress bar's total per run."""
    return scenario.duration_s


def run_campaign(
    scenario: Scenario,
    policies: Sequence[str],
    seeds: Sequence[int],
    on_step: StepCallback | None = None,
    *,
    engine: str = "local",
    workers: int | None = None,
) -> list[RunResult]:
    """Every (seed, policy) pair, seed-major so that early results already compare policies.

    ``engine="local"`` runs ``workers`` processes (default: one per CPU, at most one per run;
    1 runs in this process); ``engine="ray"`` runs each pair as a Ray task, on the cluster at
    ``RAY_ADDRESS`` or on a local instance of ``workers`` CPUs. The order and the results are
    those of a serial run whichever finishes first.
    """
    check_engine(engine, workers)
    if seeds:
        build_world(scenario, seeds[0])  # a scenario the cluster cannot hold fails here, not in a worker
    runs = [(seed, policy) for seed in seeds for policy in policies]
    if engine == "ray":
        return run_ray(scenario, runs, on_step, workers)
    n = min(workers or os.cpu_count() or 1, len(runs))  # no idle processes to start
    if n <= 1:
        return _run_serial(scenario, policies, seeds, on_step)
    return run_pool(scenario, runs, on_step, n)


def run_many(
    tasks: Sequence[tuple[Scenario, int, str]],
    on_step: StepCallback | None = None,
    *,
    workers: int | None = None,
) -> list[RunResult]:
    """Runs of several scenarios (``(scenario, seed, policy)`` each) on local processes, results in
    ``tasks`` order: one pool for all, so a long run of one scenario overlaps the others' runs.
    ``workers`` as in ``run_campaign``; 1 runs in this process."""
    check_engine("local", workers)
    n = min(workers or os.cpu_count() or 1, len(tasks))
    if n > 1:
        return run_tasks(list(tasks), on_step, n)
    results = []
    for scenario, seed, policy in tasks:
        world = build_world(scenario, seed)
        relay = None if on_step is None else progress(on_step, policy, seed, world.start, world.end)
        results.append(run_noted(world, policy, relay))
    return results


def _run_serial(
    scenario: Scenario, policies: Sequence[str], seeds: Sequence[int], on_step: StepCallback | None
) -> list[RunResult]:
    """In this process, one world per seed shared by its policies: cheap for tests and small runs."""
    results = []
    for seed in seeds:
        world = build_world(scenario, seed)
        for policy in policies:
            relay = None if on_step is None else progress(on_step, policy, seed, world.start, world.end)
            results.append(Twin(world, policy).run(relay))
    return results
