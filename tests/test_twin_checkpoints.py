"""The twin's checkpoint modes under the policies: seamguard saving as its loop plans, the
variants that measure tiering, and rates that drift mid-run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from seamguard.economics.checkpoint_modes import Mode
from seamguard.errors import InputError
from seamguard.model.entities import EntityKind
from seamguard.twin.campaign import parse_policies
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.jobs import Memory, TrainingJob
from seamguard.twin.policies.base import static_interval
from seamguard.twin.policies.seamguard import engine_config
from seamguard.twin.scenario import hard_default, scenario_from_mapping
from seamguard.twin.sim import Twin, make_policy
from seamguard.twin.world import build_world
from tests.test_twin import SMALL


def _world(**changes: Any) -> Any:
    return build_world(scenario_from_mapping({**SMALL, **changes}), 0)


def test_the_engine_is_told_the_scenarios_sizes_restarts_bandwidths_and_historical_rates() -> None:
    world = _world(hazard_preset="llama3-405b", hazard_scale=20)
    cfg = engine_config(world, {})
    sc = world.scenario
    gpu_rate = sum(
        h.per_component_day for h in sc.hazards
        if hard_default(h.kind, h.hard) and FAULT_KINDS[h.kind].target is EntityKind.GPU
    )  # fmt: skip
    assert cfg.hazard.base_per_day[EntityKind.GPU] == pytest.approx(20 * gpu_rate)
    assert cfg.checkpoint.for_job("train").state_gb_per_gpu == pytest.approx(400 / (10 * 8))
    assert cfg.checkpoint.for_job("train").restart_s == 900  # the job's own restart time (SMALL)
    assert cfg.checkpoint.path("ckpt0").write_gbps == sc.physics.storage.write_gbps
    remote = engine_config(world, {}, remote_only=True)
    assert remote.checkpoint.for_job("train").host_copy_gbps_per_gpu == 0.0
    overridden = engine_config(world, {"checkpoint": {"defaults": {"collective_timeout_s": 30}}})
    assert overridden.checkpoint.for_job("train").collective_timeout_s == 30  # the scenario's word wins


def _run(policy: str, **changes: Any) -> Twin:
    twin = Twin(_world(**changes), policy)
    twin.run()
    return twin


def test_seamguard_saves_through_memory_and_its_remote_variant_never_does() -> None:
    # An incremental save writes the whole state here, so the remote variant's saves are full
    # writes, which is what a memory copy is weighed against (a delta of a third of the state
    # can block less than a copy to a peer).
    quiet = {"faults": [], "physics": {"storage": {"changed_share": 1.0}}}
    tiered = next(j for j in _run("seamguard", **quiet).jobs if isinstance(j, TrainingJob))
    remote = next(j for j in _run("seamguard-remote", **quiet).jobs if isinstance(j, TrainingJob))
    assert tiered.saves > 0 and remote.saves > 0
    assert any(c.durable_at > c.t for c in tiered.history)  # persisted in the background
    assert all(c.durable_at == c.t and c.memory is Memory.NONE for c in remote.history)
    assert np.nanmax([tiered.last_save_s]) < np.nanmax([remote.last_save_s])  # memory copies block less


def test_a_tiered_timer_saves_more_often_than_a_full_one() -> None:
    world = _world()
    full = make_policy("young-daly", world, Twin(world, "young-daly").plant)
    tiered = make_policy("young-daly-tiered", world, Twin(world, "young-daly").plant)
    job = Twin(world, "young-daly").jobs[0]
    assert isinstance(job, TrainingJob)
    assert tiered.checkpoint_choice(job) == (Mode.TIERED, job.storage)
    assert tiered.interval_s(job) < full.interval_s(job)
    assert static_interval(world, job, None, Mode.TIERED) == tiered.interval_s(job)


def test_a_drift_step_scales_every_background_rate_from_its_hour_on() -> None:
    world = _world(hazard_preset="llama3-405b", hazard_scale=1500, duration_h=48, faults=[],
                   hazard_drift=[{"at_h": 24, "scale": 3}])  # fmt: skip
    half = world.start + 24 * 3600.0
    hard = [f for f in world.faults if f.hard]
    before = sum(1 for f in hard if f.onset + f.ramp < half)
    after = len(hard) - before
    assert before > 60
    assert after / before == pytest.approx(3.0, rel=0.2)
    with pytest.raises(Exception, match="scale"):
        scenario_from_mapping({**SMALL, "hazard_drift": [{"at_h": 1, "scale": -1}]})


def test_the_variants_are_named_on_the_command_line_and_listed_when_one_is_wrong() -> None:
    assert parse_policies("seamguard-remote,young-daly-tiered") == ("seamguard-remote", "young-daly-tiered")
    with pytest.raises(InputError, match="seamguard-remote"):
        parse_policies("seamguard-local")


def test_the_scenario_s_restart_time_prices_the_swap_of_a_slow_gpu_s_rank() -> None:
    """The 8%-slow GPU that a 15-minute restart cannot pay for (``test_twin``'s cascade) is
    swapped out within minutes when its job restarts in two."""
    quick = [{**SMALL["jobs"][0], "restart_s": 120.0}, *SMALL["jobs"][1:]]
    for jobs, swapped in ((SMALL["jobs"], False), (quick, True)):
        result = Twin(_world(jobs=jobs), "seamguard").run()
        swaps = [a for a in result.acted if a[1] == "replace_rank" and a[2] == "gpu/n0003/2"]
        assert bool(swaps) is swapped, jobs[0]["restart_s"]
