"""The input-bound fault kinds: a job slowed as a whole with no part at fault.

``input_stall`` (the job's own data loader falls behind) and ``dataset_starve`` (the backend its
data is read from saturates) are the job-wide failure classes a diagnosis must tell from a
straggler, a slow fabric and a checkpoint stall. These tests hold both generators to what the
kinds say: the twin is compared with a fault-free run of the same seed, sample by sample, so any
signal that moves is one the fault moved; the labelled suite is held to the same effect sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.cluster import ClusterSpec, JobSpec
from seamguard.twin.effects import DATASET_STARVE_SLOWDOWN, INPUT_STALL_SLOWDOWN
from seamguard.twin.faults import FAULT_KINDS, declare
from seamguard.twin.labelled import SyntheticFleet
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.scope import fault_scope
from seamguard.twin.sim import Twin
from seamguard.twin.suite import build, make_scenario
from seamguard.twin.world import World, build_world
from tests.twin_capture import captured_run

CAT = signal_catalog()
BLANK = 2.0**62  # DCGM's blank sentinels start here
MIN = 60.0
ONSET_H, RAMP_H = 0.25, 0.25
Batches = tuple[TelemetryBatch, ...]
# Two jobs on their own backends: "train" reads from ckpt0, "serve" from data1.
TWIN: dict[str, Any] = {
    "name": "input-bound",
    "duration_h": 1.5,
    "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 2, "gpus_per_node": 8, "nodes_per_leaf": 4,
                "storage": ["ckpt0", "data1"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 4, "fallback_storage": "data1"},
             {"name": "serve", "class": "async_batch_inference", "nodes": 2, "storage": "data1"}],
}  # fmt: skip
# What a GPU that waits for input for part of each step shows, and what its lower draw moves
# downstream (its rack's power, its CDU's return water): nothing else may depart from the clean run.
IDLE_WAIT = frozenset({
    "gpu.util_pct", "gpu.power_w", "gpu.temp_c", "gpu.mem_temp_c", "gpu.sm_clock_mhz", "gpu.step_time_s",
    "job.step_time_s", "rack.power_kw", "cdu.return_temp_c",
})  # fmt: skip


def _run(*faults: dict[str, Any]) -> tuple[World, Batches]:
    return captured_run({**TWIN, "faults": list(faults)}, 2)


def _fault(kind: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "target": target, "onset_h": ONSET_H, "ramp_h": RAMP_H, **extra}


@pytest.fixture(scope="module")
def clean() -> tuple[World, Batches]:
    return _run()


@pytest.fixture(scope="module")
def starved() -> tuple[World, Batches]:
    return _run(_fault("dataset_starve", "storage/ckpt0"))


def _ids(world: World, kind: EntityKind) -> dict[str, int]:
    topo = world.topology
    return {f"{kind.value}/{n}": int(g) for n, g in zip(topo.names[kind], topo.members[kind], strict=True)}


def _values(batches: Batches, entities: list[int], signal: str, after: float) -> npt.NDArray[np.float64]:
    """Every sample of ``signal`` from ``entities`` stamped after ``after``, in emission order."""
    sig = CAT[signal].index
    out = [b.value[(b.signal == sig) & np.isin(b.entity, entities) & (b.timestamp > after)] for b in batches]
    got = np.concatenate(out)
    return np.where(got < BLANK, got, np.nan)  # a DCGM blank (the same in both runs) is no value


def _ratio(faulty: Batches, clean: Batches, entities: list[int], signal: str, after: float) -> float:
    return float(
        np.nanmedian(_values(faulty, entities, signal, after))
        / np.nanmedian(_values(clean, entities, signal, after))
    )


def _developed(world: World) -> float:
    """A little after the ramp: the fault at full strength."""
    return world.start + (ONSET_H + RAMP_H) * 3600.0 + 5 * MIN


def _local(world: World, job: int) -> list[int]:
    """The local indices of the GPUs ``job`` starts on (it keeps them: nothing here moves it)."""
    return np.flatnonzero(np.isin(world.topology.gpu_node, world.initial_nodes[job])).tolist()


def _gpus_of(world: World, job: int) -> list[int]:
    """The same GPUs as telemetry entities."""
    return [int(world.topology.members[EntityKind.GPU][g]) for g in _local(world, job)]


def test_input_stall_slows_every_rank_alike_with_no_part_at_fault(clean: tuple[World, Batches]) -> None:
    world, base = clean
    _w, stall = _run(_fault("input_stall", "job/train"))
    assert len(stall) == len(base)
    train_gpus = set(_gpus_of(world, 0))
    job = _ids(world, EntityKind.JOB)
    moved: set[str] = set()
    for a, b in zip(base, stall, strict=True):  # the same seed: the same samples, the same noise
        assert np.array_equal(a.entity, b.entity) and np.array_equal(a.signal, b.signal)
        assert np.array_equal(a.timestamp, b.timestamp)
        diff = ~((a.value == b.value) | (np.isnan(a.value) & np.isnan(b.value)))
        for e, s in zip(a.entity[diff].tolist(), a.signal[diff].tolist(), strict=True):
            name = CAT.signals[s].name
            moved.add(name)
            if name.startswith("gpu."):
                assert e in train_gpus, (name, e)  # only the starved job's GPUs
            if name.startswith("job."):
                assert e == job["job/train"], name
    # No throttle bit, clock cap, error counter, heartbeat, link, switch or storage signal moved.
    assert moved <= IDLE_WAIT, sorted(moved - IDLE_WAIT)
    assert {"gpu.util_pct", "gpu.step_time_s", "job.step_time_s"} <= moved

    after, gpus = _developed(world), sorted(train_gpus)
    factor = 1 + INPUT_STALL_SLOWDOWN
    # The cooler, idler GPUs boost their clocks a little (DVFS): the compute share runs ~2 % faster.
    assert _ratio(stall, base, [job["job/train"]], "job.step_time_s", after) == pytest.approx(
        factor, rel=0.04
    )
    per = _values(stall, gpus, "gpu.step_time_s", after) / _values(base, gpus, "gpu.step_time_s", after)
    ranks = per[np.isfinite(per)]
    assert ranks == pytest.approx(factor, rel=0.04)
    assert ranks.max() / ranks.min() < 1.01  # every rank waits alike: no straggler appears
    assert _ratio(stall, base, gpus, "gpu.util_pct", after) == pytest.approx(1 / factor, rel=0.01)
    assert _ratio(stall, base, gpus, "gpu.power_w", after) < 0.9
    hot = _values(stall, gpus, "gpu.temp_c", after) - _values(base, gpus, "gpu.temp_c", after)
    clock = _values(stall, gpus, "gpu.sm_clock_mhz", after) - _values(base, gpus, "gpu.sm_clock_mhz", after)
    assert np.nanmax(hot) <= 0.0 and np.nanmin(clock) >= 0.0  # cooler, never throttled
    assert _ratio(stall, base, [job["job/serve"]], "job.step_time_s", after) == 1.0


def test_dataset_starve_slows_reads_and_its_readers_not_checkpoints(
    clean: tuple[World, Batches], starved: tuple[World, Batches]
) -> None:
    world, base = clean
    _w, starve = starved
    _w, tail = _run(_fault("storage_tail", "storage/ckpt0"))
    after = _developed(world)
    sto, job = _ids(world, EntityKind.STORAGE), _ids(world, EntityKind.JOB)
    ckpt0, data1 = [sto["storage/ckpt0"]], [sto["storage/data1"]]
    assert _ratio(starve, base, ckpt0, "storage.read_latency_ms", after) > 10
    assert _ratio(starve, base, data1, "storage.read_latency_ms", after) == 1.0
    starve_write = _ratio(starve, base, ckpt0, "storage.write_latency_ms", after)
    tail_write = _ratio(tail, base, ckpt0, "storage.write_latency_ms", after)
    assert starve_write < 1.5 and tail_write > 10 * starve_write
    # Checkpoint saves are writes: storage_tail stalls them, dataset_starve barely.
    train = [job["job/train"]]
    assert _ratio(starve, base, train, "job.checkpoint_duration_s", after) < 1.3
    assert _ratio(tail, base, train, "job.checkpoint_duration_s", after) > 5
    # Its readers slow job-wide, every rank alike; a job reading elsewhere does not.
    factor = 1 + DATASET_STARVE_SLOWDOWN
    assert _ratio(starve, base, train, "job.step_time_s", after) == pytest.approx(factor, rel=0.04)
    gpus = _gpus_of(world, 0)
    ranks = _ratio(starve, base, gpus, "gpu.step_time_s", after)
    assert ranks == pytest.approx(factor, rel=0.04)
    assert _ratio(starve, base, gpus, "gpu.util_pct", after) == pytest.approx(1 / factor, rel=0.01)
    assert _ratio(starve, base, [job["job/serve"]], "job.step_time_s", after) == 1.0
    assert _ratio(tail, base, train, "job.step_time_s", after) == pytest.approx(1.0, abs=0.005)


def test_the_twin_charges_the_wait_as_slowdown_from_the_first_tick() -> None:
    base = Twin(build_world(scenario_from_mapping({**TWIN, "faults": []}), 2), "binary").run()
    for f in (_fault("input_stall", "job/train"), _fault("dataset_starve", "storage/ckpt0")):
        world = build_world(scenario_from_mapping({**TWIN, "faults": [f]}), 2)
        res = Twin(world, "binary").run()
        assert res.ettr < base.ettr - 0.1, f["kind"]
        assert res.false_quarantines == 0
        (out,) = res.faults
        assert out.gray and out.onset < out.impact <= out.onset + world.tick_s, f["kind"]


def test_the_scope_is_the_starved_jobs_and_their_gpus(clean: tuple[World, Batches]) -> None:
    world, _ = clean
    topo = world.topology
    train = {f"gpu/{topo.names[EntityKind.GPU][g]}" for g in _local(world, 0)}
    stall = declare(topo, "input_stall", "job/train", world.start + 600.0)
    assert fault_scope(world, stall) == frozenset({"job/train", *train})
    starve = declare(topo, "dataset_starve", "storage/ckpt0", world.start + 600.0)
    # train reads from ckpt0; serve reads from data1, where train only writes its fallback saves
    assert fault_scope(world, starve) == frozenset({"storage/ckpt0", "job/train", *train})
    other = declare(topo, "dataset_starve", "storage/data1", world.start + 600.0)
    assert "job/serve" in fault_scope(world, other) and "job/train" not in fault_scope(world, other)


LAYOUT = make_scenario(
    "input-bound",
    "the labelled suite's rendering of the input-bound kinds",
    ClusterSpec(cdus=2, racks_per_cdu=2, nodes_per_rack=2, nodes_per_leaf=4),
    (JobSpec("train", JobClass.SYNC_TRAINING, 4), JobSpec("serve", JobClass.ASYNC_BATCH_INFERENCE, 2)),
    (),
    duration_s=90 * MIN,
)


@pytest.mark.parametrize(("kind", "target", "slowdown"), [
    ("input_stall", "job/train", INPUT_STALL_SLOWDOWN), ("dataset_starve", "storage/ckpt0", DATASET_STARVE_SLOWDOWN),
])  # fmt: skip
def test_the_labelled_suite_renders_the_same_job_wide_wait(kind: str, target: str, slowdown: float) -> None:
    _i, _j, topo, base = build(LAYOUT, seed=5)
    onset, ramp = base.start + 20 * MIN, 30 * MIN
    f = declare(topo, kind, target, onset, ramp=ramp)
    fleet = SyntheticFleet(topo, [f], seed=5, start=base.start, tick_s=base.tick_s)
    t = onset + ramp + 10 * MIN
    a, b = base.batch(t), fleet.batch(t)
    train = int(topo.members[EntityKind.JOB][0])
    gpus = np.flatnonzero(np.isin(topo.gpu_node, fleet.job_nodes[0]))
    gids = topo.members[EntityKind.GPU][gpus].tolist()

    def ratio(entities: list[int], signal: str) -> npt.NDArray[np.float64]:
        sig = CAT[signal].index
        ma, mb = (
            (a.signal == sig) & np.isin(a.entity, entities),
            (b.signal == sig) & np.isin(b.entity, entities),
        )
        return np.asarray(b.value[mb] / a.value[ma], dtype=np.float64)

    assert ratio([train], "job.step_time_s") == pytest.approx(1 + slowdown, rel=1e-9)
    assert ratio(gids, "gpu.step_time_s") == pytest.approx(1 + slowdown, rel=1e-9)
    assert ratio(gids, "gpu.util_pct") == pytest.approx(1 / (1 + slowdown), rel=1e-9)
    assert ratio(gids, "gpu.power_w").max() < 0.9 and ratio(gids, "gpu.temp_c").max() < 1.0
    for same in ("gpu.throttle_reasons", "gpu.sm_clock_mhz", "link.latency_us", "switch.buffer_util_pct"):
        sig = CAT[same].index
        assert np.array_equal(a.value[a.signal == sig], b.value[b.signal == sig]), same
    read = ratio(topo.members[EntityKind.STORAGE].tolist(), "storage.read_latency_ms")
    write = ratio(topo.members[EntityKind.STORAGE].tolist(), "storage.write_latency_ms")
    if kind == "input_stall":
        assert np.all(read == 1.0) and np.all(write == 1.0)
    else:
        assert read.min() > 10 and write.max() < 1.5
    (_f, scope, impact) = fleet.truth()[0]
    assert f"job/{topo.names[EntityKind.JOB][0]}" in scope and not any(e.startswith("node/") for e in scope)
    assert onset < impact < onset + 0.05 * ramp  # the jobs pace below the twin's cost line at once


def test_simulate_accepts_both_kinds_from_a_scenario_file(tmp_path: Path) -> None:
    scenario = {**TWIN, "name": "input-bound-file", "duration_h": 1,
                "faults": [_fault("input_stall", "job/train"), _fault("dataset_starve", "storage/data1", duration_h=0.5)]}  # fmt: skip
    path = tmp_path / "input-bound.yaml"
    path.write_text(yaml.safe_dump(scenario), encoding="utf-8")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["simulate", "--scenario", str(path), "--policies", "binary", "--seeds", "1", "--workers", "1",
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert {"input_stall", "dataset_starve"} <= set(FAULT_KINDS)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    binary = summary["policies"]["binary"]
    assert binary["faults"] == 2 and binary["lost_hours"]["slowdown"] > 0
