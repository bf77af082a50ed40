"""One table of fault kinds: the twin's physics, the labelled generator and the scope function
all model every kind in ``twin.faults.FAULT_KINDS``, so a kind added there but not modelled fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from seamguard.fieldsim import faults as field_faults
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.cluster import ClusterSpec, JobSpec
from seamguard.twin.effects import HARD_ONLY, Effects, apply_faults
from seamguard.twin.faults import FAULT_KINDS, Fault, HardEffect, declare
from seamguard.twin.labelled import SyntheticFleet
from seamguard.twin.plant import Plant
from seamguard.twin.scenario import Physics, scenario_from_mapping
from seamguard.twin.scope import scope_of
from seamguard.twin.suite import build, make_scenario
from seamguard.twin.world import build_world

MIN = 60.0
ONSET, RAMP = 20 * MIN, 30 * MIN
# Two CDUs x two racks x two nodes; "train" fills cdu0 (so rack r000 runs flat out), "serve" one rack.
LAYOUT = make_scenario(
    "kinds",
    "every kind of the table, one at a time",
    ClusterSpec(cdus=2, racks_per_cdu=2, nodes_per_rack=2, nodes_per_leaf=4),
    (JobSpec("train", JobClass.SYNC_TRAINING, 4), JobSpec("serve", JobClass.ASYNC_BATCH_INFERENCE, 2)),
    (),
    duration_s=90 * MIN,
)


def _target(topo: Topology, kind: EntityKind) -> str:
    """An entity of ``kind`` that the train job uses (n0001 for node-level kinds)."""
    if kind is EntityKind.GPU:
        return "gpu/n0001/3"
    if kind in (EntityKind.NODE, EntityKind.LINK):
        return f"{kind.value}/n0001"
    return f"{kind.value}/{topo.names[kind][0]}"


@pytest.fixture(scope="module")
def clean() -> tuple[Topology, SyntheticFleet]:
    _inv, _jobs, topo, fleet = build(LAYOUT, seed=5)
    return topo, fleet


def _fault(topo: Topology, kind: str, start: float) -> Fault:
    return declare(topo, kind, _target(topo, FAULT_KINDS[kind].target), start + ONSET, ramp=RAMP)


def _same(a: TelemetryBatch, b: TelemetryBatch) -> bool:
    return all(
        np.array_equal(getattr(a, c), getattr(b, c)) for c in ("entity", "signal", "timestamp", "value")
    )


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_the_labelled_generator_models_every_kind(kind: str, clean: tuple[Topology, SyntheticFleet]) -> None:
    topo, base = clean
    f = _fault(topo, kind, base.start)
    fleet = SyntheticFleet(topo, [f], seed=5, start=base.start, tick_s=base.tick_s)
    times = [base.start + ONSET + k * MIN for k in (1, 15, 29, 33, 40)]  # early, mid-ramp, after it
    changed = [not _same(fleet.batch(t), base.batch(t)) for t in times]
    if FAULT_KINDS[kind].observable:
        assert any(changed), f"{kind} leaves the labelled telemetry untouched"
    else:
        assert not any(changed), f"{kind} is declared unobservable but shows in telemetry"


def _fields(fx: Effects) -> dict[str, np.ndarray]:
    return {name: np.asarray(getattr(fx, name)) for name in fx.__dataclass_fields__}


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_the_twin_models_every_kind(kind: str) -> None:
    world = build_world(scenario_from_mapping(_TWIN, "kinds"), 0)
    topo = world.topology
    spec = FAULT_KINDS[kind]
    f = _fault(topo, kind, world.start)
    k = EntityKind
    counts = (k.CDU, k.RACK, k.GPU, k.NODE, k.SWITCH, k.STORAGE, k.JOB)
    fresh = _fields(Effects.none(*(topo.count(c) for c in counts)))
    fx = _fields(
        apply_faults(Effects.none(*(topo.count(c) for c in counts)), [f], f.onset + RAMP / 2, _physics())
    )
    gray = any(not np.array_equal(fx[n], fresh[n]) for n in fresh)
    if kind in HARD_ONLY:  # its whole effect is the hard failure the twin plays as an event
        assert not gray and spec.hard is not HardEffect.NONE and f.hard
    else:
        assert gray, f"{kind} has no effect in twin.effects and no hard failure"


def test_hard_only_names_kinds_of_the_table() -> None:
    assert set(FAULT_KINDS) >= HARD_ONLY


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_the_scope_function_reaches_past_every_target(
    kind: str, clean: tuple[Topology, SyntheticFleet]
) -> None:
    topo, fleet = clean
    f = _fault(topo, kind, fleet.start)
    scope = fleet.scope(f)
    assert f.target in scope and len(scope) > 1, kind
    assert "job/train" in scope, kind  # every target chosen above carries or feeds the train job
    assert all(topo.lookup(e) is not None for e in scope)


def test_scope_keeps_jobs_that_ended_out(clean: tuple[Topology, SyntheticFleet]) -> None:
    topo, fleet = clean
    f = _fault(topo, "hbm_ecc", fleet.start)
    nodes = fleet.job_nodes
    none = np.full(len(nodes), -1, dtype=np.int64)
    live = np.array([True, True])
    assert "job/train" in scope_of(topo, f, nodes, none, none, live)
    assert "job/train" not in scope_of(topo, f, nodes, none, none, np.array([False, True]))


def test_the_twin_plant_restarts_counters_once_on_a_reset() -> None:
    world = build_world(scenario_from_mapping(_TWIN, "kinds"), 0)
    topo = world.topology
    plant = Plant.build(world.scenario.physics, topo, 0)
    k = EntityKind
    counts = (k.CDU, k.RACK, k.GPU, k.NODE, k.SWITCH, k.STORAGE, k.JOB)
    load = np.ones(topo.count(k.GPU))
    nodes = np.zeros(topo.count(k.NODE), bool)
    plant.sbe[:] = 50.0
    f = _fault(topo, "counter_reset", world.start)
    gpu = f.local
    fx = apply_faults(Effects.none(*(topo.count(c) for c in counts)), [f], f.onset + 1.0, _physics())
    plant.advance(f.onset + 60.0, 60.0, fx, load, nodes)
    assert plant.sbe[gpu] < 5.0 and plant.sbe[gpu + 1] >= 50.0
    plant.sbe[gpu] = 40.0  # counting again from zero: a later step must not reset it a second time
    plant.advance(f.onset + 120.0, 60.0, fx, load, nodes)
    assert plant.sbe[gpu] >= 40.0


_TWIN = {
    "name": "kinds",
    "duration_h": 2,
    "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 2, "gpus_per_node": 8, "nodes_per_leaf": 4},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 4}, {"name": "serve", "class": "async_batch_inference", "nodes": 2}],
}  # fmt: skip


def _physics() -> Physics:
    return scenario_from_mapping(_TWIN, "kinds").physics


FIELD_SHAPES = (
    field_faults.ColdPlate, field_faults.FailingOptic, field_faults.HbmDecay, field_faults.FallenOffBus,
    field_faults.PumpWear, field_faults.StorageDecay, field_faults.Straggler, field_faults.NodeDeath,
    field_faults.LeafCongestion,
)  # fmt: skip


def test_field_suite_shapes_realise_kinds_of_the_one_table() -> None:
    """The field suite keeps its own fault shapes (it must stay apart from what the engine was
    tuned on) but names each after a kind of the one table, on that kind's target entity."""
    assert {s.kind for s in FIELD_SHAPES} == set(field_faults.FAULT_KINDS)
    for shape in FIELD_SHAPES:
        spec = FAULT_KINDS[shape.realises]
        first = dataclasses.fields(shape)[0].name  # the entity it sits on, named by its kind
        assert first == spec.target.value, (shape.kind, first, spec.target)


def test_the_twin_doc_lists_every_kind_of_the_table() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "twin.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`") for line in doc.splitlines() if line.startswith("| `")}
    assert set(FAULT_KINDS) <= rows, sorted(set(FAULT_KINDS) - rows)
