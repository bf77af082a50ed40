"""The labelled fleet: determinism, contract round trips, a clean baseline and every fault's signature."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import read_inventory, read_jobs
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.cluster import (
    ClusterSpec,
    JobSpec,
    assign_jobs,
    generate_cluster,
    write_inventory_csv,
    write_jobs_csv,
)
from seamguard.twin.faults import FAULT_KINDS, declare
from seamguard.twin.labelled import SyntheticFleet
from seamguard.twin.labelled_physics import NOT_SIMULATED
from seamguard.twin.suite import SCENARIOS, Scenario, build, scale_scenario

CAT = signal_catalog()
MIN = 60.0
EVIDENCE_BITS = 0x8 | 0x20 | 0x40 | 0x80


@pytest.fixture(scope="module")
def demo() -> tuple[Scenario, Topology, SyntheticFleet]:
    scenario = SCENARIOS["demo"]
    _inv, _jobs, topo, fleet = build(scenario, seed=7)
    return scenario, topo, fleet


def _clean_fleet(scenario: Scenario, seed: int = 3, **kw: float) -> tuple[Topology, SyntheticFleet]:
    _inv, _jobs, topo, fleet = build(dataclasses.replace(scenario, faults=()), seed)
    if kw:
        fleet = SyntheticFleet(topo, (), seed=seed, start=fleet.start, **kw)
    return topo, fleet


def _series(topo: Topology, batch: TelemetryBatch, entity: str, signal: str) -> np.ndarray:
    gidx = topo.index[entity]
    sel = (batch.entity == gidx) & (batch.signal == CAT[signal].index)
    return batch.value[sel]


def _tick_at(fleet: SyntheticFleet, offset_s: float) -> float:
    """The end of the tick that contains start + offset_s."""
    return fleet.start + np.ceil(offset_s / fleet.tick_s) * fleet.tick_s


def _mean_over(topo: Topology, fleet: SyntheticFleet, entity: str, signal: str, offset_s: float) -> float:
    vals: list[float] = []
    for k in range(4):
        vals += _series(
            topo, fleet.batch(_tick_at(fleet, offset_s) + k * fleet.tick_s), entity, signal
        ).tolist()
    finite = [v for v in vals if abs(v) < 2.0**62]
    return float(np.mean(finite))


class Label(NamedTuple):
    """A fault's ground truth as these tests read it (``SyntheticFleet.truth``)."""

    kind: str
    entity: str
    onset: float
    impact: float
    benign: bool
    affected: frozenset[str]  # the scope without the target


def _labels(fleet: SyntheticFleet) -> list[Label]:
    return [Label(f.kind, f.target, f.onset, i, f.benign, s - {f.target}) for f, s, i in fleet.truth()]


def _label(fleet: SyntheticFleet, kind: str) -> Label:
    return next(lb for lb in _labels(fleet) if lb.kind == kind)


# ---- determinism and the contract ----------------------------------------------------------


def test_same_seed_and_time_give_the_same_batch_whatever_the_call_order(demo: tuple) -> None:
    scenario, _topo, _fleet = demo
    _i, _j, _t, a = build(scenario, seed=11)
    _i, _j, _t, b = build(scenario, seed=11)
    times = [a.start + k * a.tick_s for k in (5, 90, 200)]
    first = [a.batch(t) for t in times]
    second = [b.batch(t) for t in reversed(times)][::-1]
    for x, y in zip(first, second, strict=True):
        for col in ("entity", "signal", "timestamp", "value"):
            np.testing.assert_array_equal(getattr(x, col), getattr(y, col))
    _i, _j, _t, c = build(scenario, seed=12)
    assert not np.array_equal(c.batch(times[0]).value, first[0].value)


def test_inventory_and_jobs_round_trip_through_the_csv_readers(tmp_path: Path) -> None:
    scenario = SCENARIOS["detect-suite"]
    inventory, jobs, _topo, _fleet = build(scenario, seed=1)
    write_inventory_csv(inventory, tmp_path / "inv.csv")
    write_jobs_csv(jobs, tmp_path / "jobs.csv")
    again = read_inventory(tmp_path / "inv.csv")
    assert again == inventory
    assert read_jobs(tmp_path / "jobs.csv", again) == jobs
    header = (tmp_path / "inv.csv").read_text().splitlines()[0]
    assert header == "node,rack,cdu,leaf,gpus,row,pdu,storage,model"


def test_cluster_names_and_contiguous_placement() -> None:
    spec = ClusterSpec(cdus=2, racks_per_cdu=2, nodes_per_rack=3, nodes_per_leaf=4)
    inv = generate_cluster(spec)
    first, last = inv.nodes[0], inv.nodes[-1]
    assert (first.node, first.rack, first.cdu, first.leaf, first.row, first.pdu, first.storage) == (
        "n0000", "r000", "cdu0", "leaf00", "row0", "pdu000", "ckpt0",
    )  # fmt: skip
    assert (last.node, last.rack, last.cdu, last.leaf) == ("n0011", "r003", "cdu1", "leaf02")
    jobs = assign_jobs(
        inv, [JobSpec("a", JobClass.SYNC_TRAINING, 5), JobSpec("b", JobClass.EXPLORATORY, 2)], 0, 10
    )
    assert jobs[0].nodes == tuple(f"n{i:04d}" for i in range(5))
    assert jobs[1].nodes == ("n0005", "n0006")
    with pytest.raises(ValueError, match="need 13 nodes"):
        assign_jobs(inv, [JobSpec("big", JobClass.SYNC_TRAINING, 13)], 0, 10)


def test_every_catalog_signal_is_emitted_for_every_entity_of_its_kind(demo: tuple) -> None:
    scenario, _t, _f = demo
    topo, fleet = _clean_fleet(scenario, dropout=0.0, sentinel_rate=0.0)
    t = fleet.start + 10 * fleet.tick_s
    batch = fleet.batch(t)
    assert np.all((batch.timestamp > t - fleet.tick_s) & (batch.timestamp <= t))
    busy_nodes = {n for j in topo.jobs for n in j.nodes}
    for sig in CAT.signals:
        got = set(batch.entity[batch.signal == sig.index].tolist())
        members = topo.members[sig.entity]
        if sig.kind is SignalKind.EVENT:
            continue
        if sig.name in NOT_SIMULATED:
            assert got == set(), sig.name
            continue
        if sig.name == "gpu.step_time_s":
            gpu_nodes = topo.gpu_node[topo.local[np.array(sorted(got))]]
            assert {topo.names[EntityKind.NODE][n] for n in gpu_nodes.tolist()} == busy_nodes
            assert len(got) == 8 * len(busy_nodes)
        else:
            assert got == set(members.tolist()), sig.name
    # one sample per series per tick, nothing NaN
    pairs = batch.entity * 1000 + batch.signal
    assert np.unique(pairs).size == len(batch)
    assert np.all(np.isfinite(batch.value))


def test_dropouts_and_sentinels_but_never_nan(demo: tuple) -> None:
    scenario, _t, _f = demo
    _topo, fleet = _clean_fleet(scenario, dropout=0.05, sentinel_rate=0.01)
    _full_topo, full = _clean_fleet(scenario, dropout=0.0, sentinel_rate=0.0)
    t = fleet.start + 20 * fleet.tick_s
    b, ref = fleet.batch(t), full.batch(t)
    assert 0.9 * len(ref) < len(b) < 0.99 * len(ref)
    assert np.all(np.isfinite(b.value))
    sentinel = np.abs(b.value) >= 2.0**62
    assert sentinel.any()
    kinds = {CAT.signals[s].kind for s in np.unique(b.signal[sentinel]).tolist()}
    assert kinds == {SignalKind.GAUGE}


def test_clean_fleet_baseline_and_no_evidence_throttle_bits(demo: tuple) -> None:
    scenario, _t, _f = demo
    _topo, fleet = _clean_fleet(scenario, dropout=0.0, sentinel_rate=0.0)
    throttle = CAT["gpu.throttle_reasons"].index
    for k in range(1, 200, 7):
        b = fleet.batch(fleet.start + k * fleet.tick_s)
        bits = b.value[b.signal == throttle].astype(np.int64)
        assert not np.any(bits & EVIDENCE_BITS)
        assert not np.any(b.signal == CAT["gpu.xid"].index) or set(
            b.value[b.signal == CAT["gpu.xid"].index].astype(int).tolist()
        ) <= {13, 31, 43}
    b = fleet.batch(fleet.start + 40 * fleet.tick_s)

    def values(name: str) -> np.ndarray:
        return b.value[b.signal == CAT[name].index]

    assert abs(values("cdu.flow_lpm").mean() - 450) < 5
    assert abs(values("cdu.supply_temp_c").mean() - 30) < 0.5
    assert 31 < values("rack.inlet_temp_c").mean() < 35
    assert 60 < np.median(values("gpu.temp_c")) < 72
    assert np.all(values("gpu.ecc_dbe_total") == 0)
    assert np.all(values("gpu.row_remap_pending") == 0)
    assert abs(np.median(values("gpu.step_time_s")) - 2.0) < 0.05
    assert np.all(np.abs(values("gpu.step_time_s") / 2.0 - 1) < 0.06)
    assert abs(np.median(values("storage.write_latency_ms")) - 25) < 5


def test_counters_are_monotone_and_near_their_base_rates(demo: tuple) -> None:
    scenario, _t, _f = demo
    _topo, fleet = _clean_fleet(scenario, dropout=0.0, sentinel_rate=0.0)
    names = ["link.retransmits_total", "gpu.ecc_sbe_total", "gpu.pcie_replay_total", "link.errors_total"]
    prev: dict[str, np.ndarray] = {}
    first: dict[str, np.ndarray] = {}
    n = 120
    for k in range(1, n + 1):
        b = fleet.batch(fleet.start + k * fleet.tick_s)
        for name in names:
            v = b.value[b.signal == CAT[name].index]
            if name in prev:
                assert np.all(v >= prev[name]), name
            prev[name] = v
            first.setdefault(name, v)
    hours = (n - 1) * fleet.tick_s / 3600
    retrans = (prev["link.retransmits_total"] - first["link.retransmits_total"]).mean() / (hours * 3600)
    assert 0.4 < retrans < 0.6
    assert (prev["gpu.ecc_sbe_total"] - first["gpu.ecc_sbe_total"]).mean() / hours < 1.0


# ---- faults ---------------------------------------------------------------------------------


def test_cdu_flow_loss_cools_less_and_throttles_gpus(demo: tuple) -> None:
    _s, topo, fleet = demo
    lb = _label(fleet, "cdu_flow_loss")
    spec = next(f for f in SCENARIOS["demo"].faults if f.kind == "cdu_flow_loss")
    end = (spec.onset - fleet.start) + spec.ramp
    assert _mean_over(topo, fleet, lb.entity, "cdu.flow_lpm", end) < 0.7 * 450
    assert _mean_over(topo, fleet, lb.entity, "cdu.pressure_kpa", end) < 0.7 * 160
    assert _mean_over(topo, fleet, lb.entity, "cdu.return_temp_c", end) > 45
    rack = next(e for e in lb.affected if e.startswith("rack/"))
    assert (
        _mean_over(topo, fleet, rack, "rack.inlet_temp_c", end)
        > _mean_over(topo, fleet, rack, "rack.inlet_temp_c", (spec.onset - fleet.start) - 5 * MIN) + 7
    )
    assert lb.onset < lb.impact < lb.onset + spec.ramp + 5 * MIN
    # nothing under the CDU throttles before the impact, something does after it
    gpus = np.array([topo.index[e] for e in lb.affected if e.startswith("gpu/")])
    throttle = CAT["gpu.throttle_reasons"].index

    def hot_bits(t: float) -> int:
        b = fleet.batch(t)
        sel = (b.signal == throttle) & np.isin(b.entity, gpus) & (np.abs(b.value) < 2.0**62)
        return int(np.bitwise_or.reduce(b.value[sel].astype(np.int64), initial=0) & (0x20 | 0x40))

    assert hot_bits(_tick_at(fleet, lb.impact - fleet.start) - 2 * fleet.tick_s) == 0
    assert hot_bits(_tick_at(fleet, end + 10 * MIN)) == 0x20 | 0x40


def test_hbm_ecc_sbe_climbs_remap_then_xid48(demo: tuple) -> None:
    _s, topo, fleet = demo
    lb = _label(fleet, "hbm_ecc")
    xid = CAT["gpu.xid"].index
    gidx = topo.index[lb.entity]
    t = _tick_at(fleet, lb.impact - fleet.start)
    b = fleet.batch(t)
    sel = (b.entity == gidx) & (b.signal == xid)
    assert b.value[sel].tolist() == [48.0] and b.timestamp[sel].tolist() == [lb.impact]
    assert not np.any(
        (fleet.batch(t + fleet.tick_s).signal == xid) & (fleet.batch(t + fleet.tick_s).entity == gidx)
    )
    late = _tick_at(fleet, lb.impact - fleet.start) + 2 * fleet.tick_s
    assert _series(topo, fleet.batch(late), lb.entity, "gpu.ecc_dbe_total").tolist() in ([1.0], [])
    assert _series(topo, fleet.batch(late), lb.entity, "gpu.row_remap_pending").tolist() in ([1.0], [])

    def sbe_per_hour(offset_s: float) -> float:
        t0 = _tick_at(fleet, offset_s)
        a = _series(topo, fleet.batch(t0), lb.entity, "gpu.ecc_sbe_total")
        z = _series(topo, fleet.batch(t0 + 10 * fleet.tick_s), lb.entity, "gpu.ecc_sbe_total")
        return float((z[0] - a[0]) / (10 * fleet.tick_s) * 3600)

    onset = lb.onset - fleet.start
    assert sbe_per_hour(onset - 15 * MIN) < 20
    assert sbe_per_hour(lb.impact - fleet.start - 6 * MIN) > 1000


def test_link_gray_retransmits_and_latency_climb_and_the_job_slows(demo: tuple) -> None:
    _s, topo, fleet = demo
    lb = _label(fleet, "link_gray")
    spec = next(f for f in SCENARIOS["demo"].faults if f.kind == "link_gray")
    node = lb.entity.split("/", 1)[1]
    assert f"node/{node}" in lb.affected and f"gpu/{node}/0" in lb.affected and "job/train-a" in lb.affected
    end = (spec.onset - fleet.start) + spec.ramp
    before = _mean_over(topo, fleet, lb.entity, "link.latency_us", (spec.onset - fleet.start) - MIN)
    assert _mean_over(topo, fleet, lb.entity, "link.latency_us", end) > 2.5 * before
    t0 = _tick_at(fleet, end)
    a = _series(topo, fleet.batch(t0), lb.entity, "link.retransmits_total")
    z = _series(topo, fleet.batch(t0 + 4 * fleet.tick_s), lb.entity, "link.retransmits_total")
    assert (z[0] - a[0]) / (4 * fleet.tick_s) > 200
    job_before = _mean_over(topo, fleet, "job/train-a", "job.step_time_s", (spec.onset - fleet.start) - MIN)
    assert _mean_over(topo, fleet, "job/train-a", "job.step_time_s", end) > 1.5 * job_before
    assert lb.onset < lb.impact < lb.onset + spec.ramp


def test_pcie_downtrain_makes_a_straggler(demo: tuple) -> None:
    _s, topo, fleet = demo
    lb = _label(fleet, "pcie_downtrain")
    assert lb.impact == lb.onset
    off = lb.onset - fleet.start
    rank = _mean_over(topo, fleet, lb.entity, "gpu.step_time_s", off + MIN)
    assert 1.25 < rank / 2.0 < 1.4
    job = _mean_over(topo, fleet, "job/train-b", "job.step_time_s", off + MIN)
    assert job / _mean_over(topo, fleet, "job/train-b", "job.step_time_s", off - 5 * MIN) > 1.15
    t0 = _tick_at(fleet, off + MIN)
    a = _series(topo, fleet.batch(t0), lb.entity, "gpu.pcie_replay_total")
    z = _series(topo, fleet.batch(t0 + 4 * fleet.tick_s), lb.entity, "gpu.pcie_replay_total")
    assert 30 < (z[0] - a[0]) / (4 * fleet.tick_s) * 60 < 70


def test_storage_tail_latency_explodes_and_checkpoints_slow(demo: tuple) -> None:
    _s, topo, fleet = demo
    lb = _label(fleet, "storage_tail")
    spec = next(f for f in SCENARIOS["demo"].faults if f.kind == "storage_tail")
    assert set(lb.affected) == {"job/train-a", "job/train-b", "job/infer-c"}
    end = (spec.onset - fleet.start) + spec.ramp
    assert _mean_over(topo, fleet, lb.entity, "storage.write_latency_ms", end) > 250
    assert _mean_over(topo, fleet, lb.entity, "storage.read_latency_ms", end) > 100
    assert _mean_over(topo, fleet, lb.entity, "storage.throughput_gbps", end) < 25
    assert _mean_over(topo, fleet, "job/infer-c", "job.checkpoint_duration_s", end) > 3 * 30
    assert lb.onset < lb.impact < lb.onset + spec.ramp
    at_impact = _mean_over(topo, fleet, lb.entity, "storage.write_latency_ms", lb.impact - fleet.start)
    assert 180 < at_impact < 400


def test_gpu_hard_xid79_gpu_goes_silent_after_the_xid(demo: tuple) -> None:
    _s, topo, fleet = demo
    lb = _label(fleet, "gpu_hard")
    gidx = topo.index[lb.entity]
    t = _tick_at(fleet, lb.onset - fleet.start)
    b = fleet.batch(t)
    sel = (b.entity == gidx) & (b.signal == CAT["gpu.xid"].index)
    assert b.value[sel].tolist() == [79.0]
    for k in range(1, 6):
        assert not np.any(fleet.batch(t + k * fleet.tick_s).entity == gidx)
    assert np.any(fleet.batch(t - 2 * fleet.tick_s).entity == gidx)


def test_hw_thermal_sets_the_bit_every_tick(demo: tuple) -> None:
    _s, topo, fleet = demo
    lb = _label(fleet, "hw_thermal")
    off = lb.onset - fleet.start
    assert _mean_over(topo, fleet, lb.entity, "gpu.temp_c", off + MIN) > 12 + _mean_over(
        topo, fleet, lb.entity, "gpu.temp_c", off - 5 * MIN
    )
    assert _mean_over(topo, fleet, lb.entity, "gpu.sm_clock_mhz", off + MIN) < 0.75 * 1980
    for k in range(1, 6):
        bits = _series(
            topo, fleet.batch(_tick_at(fleet, off) + k * fleet.tick_s), lb.entity, "gpu.throttle_reasons"
        )
        assert all(int(v) & 0x40 for v in bits if v < 2.0**62)


def test_benign_confounders(demo: tuple) -> None:
    _s, topo, fleet = demo
    slow = _label(fleet, "slow_gpu")
    assert slow.benign and "job/train-a" in slow.affected and "node/n0009" in slow.affected
    ratio = _mean_over(topo, fleet, slow.entity, "gpu.step_time_s", 30 * MIN) / 2.0
    assert 1.06 < ratio < 1.10
    bits = _series(topo, fleet.batch(fleet.start + 40 * fleet.tick_s), slow.entity, "gpu.throttle_reasons")
    assert all(int(v) & EVIDENCE_BITS == 0 for v in bits)

    quiet = _label(fleet, "exporter_silent")
    spec = next(f for f in SCENARIOS["demo"].faults if f.kind == "exporter_silent")
    node = quiet.entity.split("/", 1)[1]
    ids = np.array(
        [topo.index[e] for e in (quiet.entity, f"link/{node}", *[f"gpu/{node}/{i}" for i in range(8)])]
    )
    t0 = _tick_at(fleet, (spec.onset - fleet.start)) + fleet.tick_s
    # The exporter is silent; the scheduler (its own path) still reports the node up.
    scheduler = [CAT["node.slurm_down"].index, CAT["node.slurm_not_responding"].index]
    for k in range(int(spec.ramp // fleet.tick_s) - 1):
        b = fleet.batch(t0 + k * fleet.tick_s)
        from_exporter = ~np.isin(b.signal, scheduler)
        assert not np.any(np.isin(b.entity[from_exporter], ids))
        assert np.all(b.value[np.isin(b.entity, ids)] == 0.0)
    assert np.isin(fleet.batch(t0 + spec.ramp + fleet.tick_s).entity, ids).sum() > 50

    reset = _label(fleet, "counter_reset")
    t1 = _tick_at(fleet, reset.onset - fleet.start)
    before = _series(topo, fleet.batch(t1 - fleet.tick_s), reset.entity, "gpu.ecc_sbe_total")
    after = _series(topo, fleet.batch(t1 + fleet.tick_s), reset.entity, "gpu.ecc_sbe_total")
    assert before[0] > 0 and after[0] < before[0] and after[0] <= 1
    pcie_before = _series(topo, fleet.batch(t1 - fleet.tick_s), reset.entity, "gpu.pcie_replay_total")
    pcie_after = _series(topo, fleet.batch(t1 + fleet.tick_s), reset.entity, "gpu.pcie_replay_total")
    assert pcie_after[0] < pcie_before[0] and pcie_after[0] <= 1


# ---- labels and scenarios -------------------------------------------------------------------


def test_labels_are_consistent(demo: tuple) -> None:
    _s, topo, fleet = demo
    labels = _labels(fleet)
    detect = {f.kind for f in SCENARIOS["detect-suite"].faults}
    assert {lb.kind for lb in labels} == detect and detect <= set(FAULT_KINDS)
    for lb in labels:
        assert lb.impact >= lb.onset
        assert lb.benign == FAULT_KINDS[lb.kind].benign
        assert all(topo.lookup(e) is not None for e in (lb.entity, *lb.affected))
    cdu = _label(fleet, "cdu_flow_loss")
    assert {
        "rack/r003",
        "rack/r004",
        "rack/r005",
        "node/n0012",
        "gpu/n0023/7",
        "job/train-a",
        "job/train-b",
    } <= set(cdu.affected)
    assert "job/infer-c" not in cdu.affected and "node/n0024" not in cdu.affected
    assert "row/row1" in cdu.affected and "pdu/pdu003" in cdu.affected  # cdu1 cools row1 alone
    hbm = _label(fleet, "hbm_ecc")
    gpus = {f"gpu/n0034/{i}" for i in range(8)} - {hbm.entity}
    assert set(hbm.affected) == {"node/n0034", "link/n0034", "job/infer-c", *gpus}


def test_fault_validation_names_the_problem(demo: tuple) -> None:
    _s, topo, fleet = demo
    with pytest.raises(ValueError, match="unknown fault kind 'meltdown'"):
        declare(topo, "meltdown", "gpu/n0000/0", 0.0)
    with pytest.raises(ValueError, match="'node/n0001' is a node, expected a gpu"):
        declare(topo, "gpu_hard", "node/n0001", 0.0)
    with pytest.raises(ValueError, match="needs ramp > 0"):
        declare(topo, "exporter_silent", "node/n0001", 10.0)
    with pytest.raises(ValueError, match=r"severity must be in \(0, 2\], got 3"):
        declare(topo, "hbm_ecc", "gpu/n0000/0", 10.0, ramp=60.0, severity=3.0)
    with pytest.raises(ValueError, match=r"'gpu/n9999/0' is not in the topology"):
        declare(topo, "gpu_hard", "gpu/n9999/0", 0.0)
    other = build_topology(generate_cluster(ClusterSpec(cdus=1, racks_per_cdu=1, nodes_per_rack=2)), [])
    foreign = declare(other, "gpu_hard", "gpu/n0001/0", fleet.start)
    moved = dataclasses.replace(foreign, local=0)
    with pytest.raises(ValueError, match="is not entity 0 here"):
        SyntheticFleet(topo, [moved], seed=1, start=fleet.start)


def _scope(lb: Label) -> set[str]:
    return {lb.entity, *lb.affected}


def test_detect_suite_targets_are_many_distinct_and_disjoint() -> None:
    scenario = SCENARIOS["detect-suite"]
    _inv, _jobs, topo, fleet = build(scenario, seed=1)
    assert 900 <= topo.count(EntityKind.GPU) <= 1200
    labels = _labels(fleet)
    for kind in {lb.kind for lb in labels}:
        assert sum(lb.kind == kind for lb in labels) >= 4, kind
    assert len({lb.kind for lb in labels}) == 10
    for a, b in itertools.combinations(labels, 2):
        assert not (_scope(a) & _scope(b)), (a.kind, a.entity, b.kind, b.entity)
    for spec in scenario.faults:
        assert spec.kind == "slow_gpu" or (spec.onset - fleet.start) >= 20 * MIN
        assert (spec.onset - fleet.start) + spec.ramp < scenario.duration_s - 30 * MIN


def test_demo_scenario_shape_and_warm_up() -> None:
    scenario = SCENARIOS["demo"]
    inv, jobs, topo, fleet = build(scenario, seed=1)
    assert topo.count(EntityKind.GPU) == 384 and len(inv.nodes) == 48
    assert [(j.job, len(j.nodes)) for j in jobs] == [("train-a", 20), ("train-b", 12), ("infer-c", 8)]
    assert fleet.start % scenario.tick_s == 0
    assert all(f.kind == "slow_gpu" or f.onset - fleet.start >= 20 * MIN for f in scenario.faults)
    assert all(lb.impact <= fleet.start + scenario.duration_s for lb in _labels(fleet))


def test_signals_left_unsimulated_are_only_dcgm_fields_and_mig() -> None:
    assert all(CAT[name].entity in (EntityKind.GPU, EntityKind.MIG) for name in NOT_SIMULATED)
    from seamguard.telemetry.sources.dcgm_mapping import dcgm_mapping

    read_from_dcgm = {f.signal for f in dcgm_mapping().fields.values()} | {
        f.instance_signal for f in dcgm_mapping().fields.values() if f.instance_signal
    }
    assert read_from_dcgm >= NOT_SIMULATED


def test_scale_scenario_series_count() -> None:
    scenario = scale_scenario(4096)
    _inv, jobs, topo, fleet = build(scenario, seed=1)
    fleet = SyntheticFleet(topo, (), seed=1, start=fleet.start, dropout=0.0, sentinel_rate=0.0)
    assert topo.count(EntityKind.GPU) == 4096
    busy_gpus = 8 * sum(len(j.nodes) for j in jobs)
    expected = 0
    for sig in CAT.signals:
        if sig.kind is SignalKind.EVENT or sig.name in NOT_SIMULATED:
            continue
        if sig.name == "gpu.step_time_s":
            expected += busy_gpus
        else:
            expected += topo.count(sig.entity)
    b = fleet.batch(fleet.start + 5 * fleet.tick_s)
    events = int(np.count_nonzero(b.signal == CAT["gpu.xid"].index))
    assert len(b) - events == expected
    with pytest.raises(ValueError, match="multiple of 8"):
        scale_scenario(100)
