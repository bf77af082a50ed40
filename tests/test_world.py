"""A world that changes under the engine: the topology replaced while it runs (``model.world``),
every per-entity memory of the controller and the safety layer carried over."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import fields, is_dataclass, replace
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from seamguard.config import load_config
from seamguard.control.budgets import BudgetConfig
from seamguard.control.controller import Controller
from seamguard.control.engine_world import apply_world
from seamguard.control.safety import SafetyLayer
from seamguard.control.safety_config import RecoveryConfig, SafetyConfig
from seamguard.economics.hazard_learning import HazardLearner
from seamguard.journal.records import DecisionRecord
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord, NodeRecord, parse_mig_layout
from seamguard.model.states import JobClass, State
from seamguard.model.topology import KIND_CODE, Topology, build_topology
from seamguard.model.workload import build_workload
from seamguard.model.world import carry, inventory_of, with_jobs, world_change
from seamguard.scoring.cohorts import cohort_groups
from seamguard.scoring.peer_memory import PeerMemory
from seamguard.telemetry.batch import TelemetryBatch
from tests.conftest import small_inventory, small_jobs
from tests.test_controller import STEADY
from tests.test_safety import OPEN

CAT = signal_catalog()
CFG = load_config()


def node(name: str, rack: str, storage: str = "ckpt0") -> NodeRecord:
    return NodeRecord(node=name, rack=rack, cdu="c9", leaf="l9", gpus=4, storage=storage)


def job(name: str, *nodes: str) -> JobRecord:
    return JobRecord(name, JobClass.ASYNC_BATCH_INFERENCE, nodes, 0.0, 1e7)


BASE = small_inventory()
# The old world has nodes x1 and x2 (rack r9; x2 with its own storage), x1 running job "gone"; the new one has node y1
# (rack r8) running job "fresh" instead; the eight nodes and two jobs of the small fleet are in both.
OLD_INVENTORY = Inventory((node("x1", "r9"), *BASE.nodes, node("x2", "r9", "ckpt9")))
OLD = build_topology(OLD_INVENTORY, (job("gone", "x1"), *small_jobs()))
NEW = build_topology(Inventory((*BASE.nodes, node("y1", "r8"))), (*small_jobs(), job("fresh", "y1")))
STAYING = set(OLD.ids) & set(NEW.ids)


XIDS = {(1120.0, "gpu/n05/0"): 13.0, (1120.0, "gpu/n06/2"): 79.0}  # a warning, a fatal one


def batch(topo: Topology, now: float, hot: str | None = None) -> TelemetryBatch:
    """Steady readings of every entity in both worlds, the same value for the same (id, time)
    whichever topology it is written for; ``hot`` at 97 °C; the XIDs of ``XIDS``."""
    ent, sig, ts, val = [], [], [], []
    for (when, eid), code in XIDS.items():
        if when == now:
            ent.append(topo.index[eid])
            sig.append(CAT["gpu.xid"].index)
            ts.append(now - 2.0)
            val.append(code)
    for name, base in STEADY.items():
        s = CAT[name]
        for g in topo.members[s.entity].tolist():
            eid = topo.ids[g]
            if eid not in STAYING:
                continue
            noise = 0.0 if name in ("gpu.throttle_reasons", "gpu.ecc_dbe_total") else 0.002
            jitter = (zlib.crc32(f"{eid}{name}{now}".encode()) % 2001 - 1000) / 1000.0
            v = 97.0 if (eid == hot and name == "gpu.temp_c") else base * (1 + noise * jitter)
            ent.append(g)
            sig.append(s.index)
            ts.append(now - 1.0)
            val.append(v)
    return TelemetryBatch(np.array(ent), np.array(sig), np.array(ts), np.array(val))


def arrays(obj: Any, path: str = "ctl", seen: set[int] | None = None) -> Iterator[tuple[str, Any]]:
    """Every numpy array and sparse matrix reachable from ``obj`` through attributes, dicts,
    lists and tuples: the guard against a per-entity memory the carry-over forgot."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None), Topology)):
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray) or sp.issparse(obj):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from arrays(v, f"{path}[{k!r}]", seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from arrays(v, f"{path}[{i}]", seen)
    elif is_dataclass(obj):
        for f in fields(obj):
            yield from arrays(getattr(obj, f.name), f"{path}.{f.name}", seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("seamguard"):
        for k, v in vars(obj).items():
            if k not in ("config", "catalog", "journal", "economics_config"):
                yield from arrays(v, f"{path}.{k}", seen)


def test_carry_keeps_stayers_and_fills_joiners() -> None:
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = carry(values, np.array([2, -1, 0]), np.nan, axis=1)
    np.testing.assert_array_equal(out, [[3.0, np.nan, 1.0], [6.0, np.nan, 4.0]])
    assert carry(np.zeros(0, dtype=np.int64), np.array([-1, -1]), 7).tolist() == [7, 7]
    assert carry(np.arange(3), np.zeros(0, dtype=np.int64), 0).size == 0


def test_a_job_change_keeps_every_other_index_and_matches_a_full_build() -> None:
    jobs = (job("fresh", "n07"), small_jobs()[0])
    got = with_jobs(OLD, jobs)
    assert got is not None
    topo, change = got
    full = build_topology(OLD_INVENTORY, jobs)
    assert topo.ids == full.ids and topo.index == full.index
    np.testing.assert_array_equal(topo.kind_code, full.kind_code)
    np.testing.assert_array_equal(topo.local, full.local)
    assert (topo.below != full.below).nnz == 0 and topo.below.shape == full.below.shape
    assert change.jobs_only and change.kind(EntityKind.JOB).tolist() == [-1, 1]
    by_id = world_change(OLD, topo)
    np.testing.assert_array_equal(change.entities, by_id.entities)
    assert change.joined(EntityKind.JOB) == ("fresh",) and set(change.left(EntityKind.JOB)) == {
        "batch",
        "gone",
    }
    assert topo.gpu_node is OLD.gpu_node  # the node/GPU structure is shared, not rebuilt


def test_a_job_naming_unknown_storage_needs_a_rebuild() -> None:
    assert with_jobs(OLD, (replace(job("j", "n00"), storage="elsewhere"),)) is None


def test_a_kind_after_the_jobs_holding_entities_needs_a_rebuild() -> None:
    """The jobs-only path relies on the JOB block being last; a serving pool after it (not built
    today) would be renumbered by it, so the change falls back to a rebuild instead."""
    n = OLD.n_entities
    pool = EntityKind.POOL
    with_pool = replace(
        OLD, ids=(*OLD.ids, "pool/p0"), kind_code=np.append(OLD.kind_code, np.int8(KIND_CODE[pool])),
        local=np.append(OLD.local, 0), members={**OLD.members, pool: np.array([n])},
        names={**OLD.names, pool: ("p0",)}, index={**OLD.index, "pool/p0": n},
        below=sp.vstack([OLD.below, sp.csr_matrix((1, OLD.below.shape[1]))], format="csr"),
    )  # fmt: skip
    assert with_jobs(with_pool, small_jobs()) is None
    assert with_jobs(OLD, small_jobs()) is not None


def test_the_summary_names_what_joined_and_left() -> None:
    text = world_change(OLD, NEW).summary()
    assert "1 node(s) joined: y1" in text and "2 node(s) left: x1, x2" in text
    assert "1 job(s) joined: fresh" in text and "1 job(s) left: gone" in text


def _run(ctl: Controller, times: list[float], topo: Topology, hot: str | None = None) -> None:
    for now in times:
        ctl.tick(now, batch(topo, now, hot))


def test_after_a_change_the_engine_equals_one_that_always_ran_on_the_new_world(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every array reachable from the controller after a change (nodes and jobs joined and left)
    equals, entry for entry, that of a controller built on the new world and fed the same
    telemetry: no per-entity memory was forgotten, none was scrambled.

    The hazard learner's fleet-wide scale is one number that rightly remembers the nodes that
    left (they were exposure while they were there): it is held at 1 so that the per-job figures
    it scales can be compared exactly."""
    monkeypatch.setattr(HazardLearner, "scale", lambda self: 1.0)
    hot = "gpu/n02/1"
    before = [1000.0 + 30.0 * i for i in range(1, 9)]
    after = [before[-1] + 30.0 * i for i in range(1, 5)]
    moved = Controller(OLD, CFG)
    _run(moved, before, OLD, hot)
    apply_world(moved, world_change(OLD, NEW))
    _run(moved, after, NEW, hot)
    always = Controller(NEW, CFG)
    _run(always, before, NEW, hot)
    _run(always, after, NEW, hot)
    assert moved.classifier.state[NEW.index[hot]] != int(State.HEALTHY)  # something to carry
    assert moved.classifier.state[NEW.index["gpu/n06/2"]] == int(State.FAILED)
    assert moved.lemon_memory.failures.any() and np.isfinite(moved.xid_memory.code).any()
    got, want = dict(arrays(moved)), dict(arrays(always))
    assert got.keys() == want.keys()
    different = {path: _differing(got[path], value) for path, value in want.items()}
    different = {path: where for path, where in different.items() if where != set()}
    # A joiner's memory of *when* it joined is the change's time, not the first tick: allowed to
    # differ there, and only there (the GPUs, link and rack of y1; the job "fresh").
    change = world_change(OLD, NEW)
    joiners = {NEW.count(k): set(np.flatnonzero(change.kind(k) < 0).tolist()) for k in
               (EntityKind.GPU, EntityKind.LINK, EntityKind.RACK, EntityKind.JOB)}  # fmt: skip
    for path in [p for p in different if p.endswith((".joined_at", "._journaled_tau"))]:
        assert different.pop(path) <= joiners[got[path].size], path
    assert different == {}


def _differing(mine: Any, value: Any) -> set[int] | None:
    """Positions (flat) where two arrays differ; None when their shapes do."""
    if mine.shape != value.shape:
        return None
    if sp.issparse(value):
        return set() if (mine != value).nnz == 0 else {-1}
    equal = mine == value
    if value.dtype.kind == "f":
        equal |= np.isnan(mine) & np.isnan(value)
    return set(np.flatnonzero(~np.asarray(equal).ravel()).tolist())


def _layer(topo: Topology) -> SafetyLayer:
    open_budgets = BudgetConfig.model_validate(OPEN)
    return SafetyLayer(topo, SafetyConfig(budgets=open_budgets, recovery=RecoveryConfig(healthy_for_s=600.0)))


def _drain(node_name: str, ts: float) -> DecisionRecord:
    return DecisionRecord(ts, f"node/{node_name}", "drain_node", "act", "quarantine", "quarantine")


def _undo(node_name: str, ts: float) -> DecisionRecord:
    return DecisionRecord(ts, f"node/{node_name}", "restore_admission", "act", "back", "healthy",
                          cause=f"node/{node_name}")  # fmt: skip


def test_safety_keeps_holds_that_stay_and_drops_those_that_left_without_a_resume() -> None:
    safety = _layer(OLD)
    safety.tick(100.0, [_drain("x1", 100.0), _drain("n03", 100.0)])
    assert safety.quarantined() == ["node/x1", "node/n03"]
    delay_before = safety.recovery_delay(safety._node_index["n03"], 200.0)
    notices = safety.carry_over(world_change(OLD, NEW), 200.0)
    assert safety.quarantined() == ["node/n03"]
    assert len(notices) == 1 and "node/x1" in notices[0].message and "no resume sent" in notices[0].message
    assert safety.budgets.quarantined.tolist() == [n == "n03" for n in NEW.names[EntityKind.NODE]]
    assert safety.recovery_delay(safety._node_index["n03"], 200.0) == delay_before  # its history stayed
    held = safety.tick(300.0, [_undo("n03", 300.0), _undo("x1", 300.0)])
    assert all(a.kind != "resume_node" for a in held.actions)
    release = safety.tick(300.0 + delay_before + 1, [])
    resumed = [a.target for a in release.actions if a.kind == "resume_node"]
    assert resumed == ["node/n03"]  # by the name it has in the new world; never x1


def test_a_job_change_keeps_the_safety_ledger_as_it_was() -> None:
    safety = _layer(OLD)
    safety.tick(100.0, [_drain("n05", 100.0)])
    got = with_jobs(OLD, (job("later", "n05"),))
    assert got is not None
    assert safety.carry_over(got[1], 150.0) == []
    assert safety.quarantined() == ["node/n05"]
    assert safety.nodes_of("job/later").tolist() == [safety._node_index["n05"]]


def test_the_inventory_of_a_topology_builds_the_same_topology() -> None:
    with_mig = replace(BASE.nodes[1], mig=parse_mig_layout("7-8", 4), model="H100", pdu="p1")
    for inv in (OLD_INVENTORY, Inventory((BASE.nodes[0], with_mig, *BASE.nodes[2:]))):
        topo = build_topology(inv, small_jobs())
        assert inventory_of(topo) == inv


def test_after_a_job_change_the_job_budget_counts_the_new_jobs() -> None:
    """Budgets per job domain are the jobs running now: a job that started after the daemon is a
    domain like any other (at most 25% of its nodes out), one that ended is no domain any more."""
    cfg = BudgetConfig.model_validate({**OPEN, "domain_pct": 25.0, "domain_kinds": ["job"]})
    safety = SafetyLayer(OLD, SafetyConfig(budgets=cfg))
    got = with_jobs(OLD, (job("fresh", "n00", "n01", "n02", "n03"),))
    assert got is not None
    safety.carry_over(got[1], 50.0)
    assert "job/fresh" in safety.budgets.domain_labels and "job/gone" not in safety.budgets.domain_labels
    fresh = SafetyLayer(got[0], SafetyConfig(budgets=cfg))  # what a start on the new world builds
    assert (safety.budgets.domains != fresh.budgets.domains).nnz == 0
    assert safety.budgets.domain_labels == fresh.budgets.domain_labels
    for kind, domains in fresh.brake.domains.items():
        np.testing.assert_array_equal(safety.brake.domains[kind], domains)
    first = safety.tick(100.0, [_drain("n00", 100.0)])
    assert [a.target for a in first.actions] == ["node/n00"]
    second = safety.tick(110.0, [_drain("n01", 110.0)])
    assert second.actions == () and "job/fresh has 1 of 4" in second.records[0].detail


def test_members_of_a_job_that_ended_count_as_having_moved_cohort() -> None:
    """As in an engine that never changed world: a GPU whose job ended (now idle, no group) has
    left its cohort, so what it learnt under that job's load is learnt again."""
    rules = {"gpu.step_time_s": EntityKind.GPU}
    memory = PeerMemory(OLD, rules)
    groups = cohort_groups("job", EntityKind.GPU, OLD, build_workload(OLD, tuple(range(len(OLD.jobs)))))
    assert groups is not None
    value = np.ones(OLD.count(EntityKind.GPU))
    memory.settled("gpu.step_time_s", value, groups[0], 100.0, 60.0)
    got = with_jobs(OLD, small_jobs())  # "gone" ended: x1 is idle
    assert got is not None
    topo, change = got
    memory.carry_over(change, {"gpu.step_time_s": "job"})
    idle = cohort_groups("job", EntityKind.GPU, topo, build_workload(topo, tuple(range(len(topo.jobs)))))
    assert idle is not None
    x1 = topo.gpu_node == topo.names[EntityKind.NODE].index("x1")
    assert (idle[0][x1] == -1).all()
    out = memory.settled("gpu.step_time_s", np.ones(topo.count(EntityKind.GPU)), idle[0], 200.0, 60.0)
    assert np.isnan(out[x1]).all() and not np.isnan(out[~x1]).any()


def test_a_node_that_leaves_and_comes_back_under_its_name_starts_fresh() -> None:
    """Nothing of a node that left is kept: back under the same name (a reinstalled host, a
    replaced board), it has no hold, no repeat-quarantine history, no lemon count and no state."""
    safety = _layer(OLD)
    ctl = Controller(OLD, CFG)
    x1 = OLD.names[EntityKind.NODE].index("x1")
    ctl.lemon_memory.failures[x1] = 2.0
    ctl.classifier.state[OLD.index["node/x1"]] = int(State.QUARANTINE)
    safety.tick(100.0, [_drain("x1", 100.0)])
    fresh_delay = safety.recovery_delay(-1, 200.0)  # a node never quarantined
    assert safety.recovery_delay(x1, 200.0) == fresh_delay and safety.quarantined() == ["node/x1"]
    safety._history[x1].appendleft(50.0)  # quarantined before: its next hold waits longer
    assert safety.recovery_delay(x1, 200.0) > fresh_delay
    gone, back = world_change(OLD, NEW), None
    for change in (gone, world_change(NEW, OLD)):
        apply_world(ctl, change)
        safety.carry_over(change, 200.0)
        back = change
    assert back is not None and back.joined(EntityKind.NODE) == ("x1", "x2")
    assert safety.quarantined() == [] and safety.recovery_delay(x1, 200.0) == fresh_delay
    assert ctl.lemon_memory.failures[x1] == 0.0
    assert ctl.classifier.state[OLD.index["node/x1"]] == int(State.UNKNOWN)


@pytest.mark.parametrize("changed", [{"model": "B200"}, {"gpus": 8}])
def test_a_node_whose_gpus_changed_under_its_name_is_new_hardware(changed: dict[str, Any]) -> None:
    """A board replaced by another model (or GPU count) under the same host name: what was learnt
    of the old one (lemon count, state, usual levels) does not carry to it; its neighbours keep theirs."""
    inv = Inventory(tuple(replace(n, **changed) if n.node == "n03" else n for n in OLD_INVENTORY.nodes))
    new = build_topology(inv, OLD.jobs)
    change = world_change(OLD, new)
    assert change.left(EntityKind.NODE) == ("n03",) and change.joined(EntityKind.NODE) == ("n03",)
    n03 = new.names[EntityKind.NODE].index("n03")
    assert change.kind(EntityKind.LINK)[n03] == -1
    assert (change.kind(EntityKind.GPU)[new.gpu_node == n03] == -1).all()
    assert (change.kind(EntityKind.GPU)[new.gpu_node != n03] >= 0).all()
    ctl = Controller(OLD, CFG)
    ctl.lemon_memory.failures[:] = 1.0
    ctl.classifier.state[OLD.index["gpu/n03/0"]] = int(State.DEGRADED)
    ctl.classifier.state[OLD.index["gpu/n04/0"]] = int(State.DEGRADED)
    apply_world(ctl, change)
    assert (
        ctl.lemon_memory.failures[n03] == 0.0
        and ctl.lemon_memory.failures.sum() == new.count(EntityKind.NODE) - 1
    )
    assert ctl.classifier.state[new.index["gpu/n03/0"]] == int(State.UNKNOWN)
    assert ctl.classifier.state[new.index["gpu/n04/0"]] == int(State.DEGRADED)
