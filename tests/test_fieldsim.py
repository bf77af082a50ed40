"""The field suite: determinism, delivery as a live daemon sees it, its confounders, its labels and
its scoring. Short runs only; the engine's detection quality is not asserted here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from seamguard.fieldsim.confounders import ClockSkew, InputStall, LatchedFlow
from seamguard.fieldsim.evaluate import evaluate, pooled, run_field
from seamguard.fieldsim.faults import FAULT_KINDS
from seamguard.fieldsim.generator import LATENCY_SPIKE_RATE, FieldFleet
from seamguard.fieldsim.labels import ConfounderLabel, FaultLabel
from seamguard.fieldsim.suite import CLEAN_S, HELD_OUT_SEEDS, TUNING_SEEDS, plan_run
from seamguard.journal.records import TransitionRecord
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.telemetry.batch import TelemetryBatch

CAT = signal_catalog()
HOUR, TICK = 3600.0, 10.0
MAX_DELAY_S = 2.5  # the longest delivery latency of a node's exporter


def _drive(fleet: FieldFleet, seconds: float, tick: float = TICK) -> list[tuple[float, TelemetryBatch]]:
    out, now = [], fleet.plan.start
    for _ in range(int(seconds // tick)):
        now += tick
        out.append((now, fleet.batch(now, tick)))
    return out


@pytest.fixture(scope="module")
def hour() -> tuple[FieldFleet, list[tuple[float, TelemetryBatch]]]:
    fleet = FieldFleet(plan_run(5, HOUR))
    return fleet, _drive(fleet, HOUR)


def _rows(
    batches: list[tuple[float, TelemetryBatch]], fleet: FieldFleet, entity: str, signal: str
) -> np.ndarray:
    """(arrival-tick end, timestamp, value) of one series over the run."""
    gidx, sig = fleet.topology.index[entity], CAT[signal].index
    rows = [(now, ts, v) for now, b in batches for ts, v in zip(*_sel(b, gidx, sig), strict=True)]
    return np.array(rows).reshape(-1, 3)


def _sel(b: TelemetryBatch, gidx: int, sig: int) -> tuple[np.ndarray, np.ndarray]:
    m = (b.entity == gidx) & (b.signal == sig)
    return b.timestamp[m], b.value[m]


def _same(a: TelemetryBatch, b: TelemetryBatch) -> bool:
    return all(np.array_equal(x, y) for x, y in zip((a.entity, a.signal, a.timestamp, a.value),
                                                     (b.entity, b.signal, b.timestamp, b.value), strict=True))  # fmt: skip


def _sorted(b: TelemetryBatch) -> TelemetryBatch:
    order = np.lexsort((b.value, b.timestamp, b.entity, b.signal))
    return TelemetryBatch(b.entity[order], b.signal[order], b.timestamp[order], b.value[order])


# ---- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_batches_and_another_seed_differs() -> None:
    a, b, c = (FieldFleet(plan_run(s, HOUR)) for s in (5, 5, 6))
    runs = [_drive(f, 10 * 60) for f in (a, b, c)]
    assert all(_same(x, y) for (_, x), (_, y) in zip(runs[0], runs[1], strict=True))
    assert sum(len(x) for _, x in runs[0]) > 50_000
    assert not all(_same(x, z) for (_, x), (_, z) in zip(runs[0], runs[2], strict=True))


def test_samples_do_not_depend_on_the_tick_length() -> None:
    """Slots are generated in order whatever the tick: a 30 s engine sees what a 10 s one does."""
    ten = _drive(FieldFleet(plan_run(5, HOUR)), 15 * 60, 10.0)
    thirty = _drive(FieldFleet(plan_run(5, HOUR)), 15 * 60, 30.0)
    assert _same(
        _sorted(TelemetryBatch.concat([b for _, b in ten])),
        _sorted(TelemetryBatch.concat([b for _, b in thirty])),
    )


def test_batch_times_must_increase() -> None:
    fleet = FieldFleet(plan_run(5, HOUR))
    fleet.batch(fleet.plan.start + 10, 10)
    with pytest.raises(ValueError, match="increase"):
        fleet.batch(fleet.plan.start + 10, 10)


# ---- cadences and delivery -------------------------------------------------------------------


def _healthy_node(fleet: FieldFleet) -> str:
    """A node no fault or confounder touches."""
    touched: set[str] = set()
    for p in fleet.plan.faults:
        touched |= p.reach
    for c in fleet.plan.confounder_labels:
        if c.entity != "fleet" and c.kind != "job_churn":
            touched |= c.scope
    return next(n for n in fleet.topology.names[EntityKind.NODE] if f"node/{n}" not in touched)


def test_cadences_gpu_gauges_every_15_s_facilities_every_60_s(hour: tuple) -> None:
    fleet, batches = hour
    node = _healthy_node(fleet)
    for entity, signal, period in (
        (f"gpu/{node}/0", "gpu.temp_c", 15.0),
        (f"gpu/{node}/1", "gpu.ecc_sbe_total", 30.0),
        ("rack/r03", "rack.inlet_temp_c", 60.0),
        ("cdu/cdu1", "cdu.return_temp_c", 60.0),
        ("storage/ckpt-a", "storage.throughput_gbps", 30.0),
    ):
        ts = np.sort(_rows(batches, fleet, entity, signal)[:, 1])
        gaps = np.diff(ts)
        assert np.median(gaps) == pytest.approx(period), (entity, signal)
        assert np.allclose(gaps / period, np.round(gaps / period)), (
            entity,
            signal,
        )  # missing scrapes skip whole periods
        assert ts.size >= 0.9 * HOUR / period


def test_each_node_exporter_has_its_own_phase(hour: tuple) -> None:
    fleet, batches = hour
    phases = {
        n: float(np.min(_rows(batches, fleet, f"gpu/{n}/0", "gpu.power_w")[:, 1]) % 15.0)
        for n in fleet.topology.names[EntityKind.NODE][:20]
    }
    assert len({round(p, 3) for p in phases.values()}) == len(phases)


def test_skewed_node_timestamps_lag_arrival_by_90_s(hour: tuple) -> None:
    fleet, batches = hour
    skews = {c.node: c.offset_s for c in fleet.plan.confounders if isinstance(c, ClockSkew)}
    assert sorted(skews.values()) == [-90.0, 40.0]
    names = fleet.topology.names[EntityKind.NODE]
    normal = _healthy_node(fleet)
    for node, offset in [*skews.items(), (names.index(normal), 0.0)]:
        rows = _rows(batches, fleet, f"gpu/{names[node]}/0", "gpu.temp_c")
        assert rows.size
        lag = rows[:, 1] - rows[:, 0]  # timestamp minus the end of the tick it arrived in
        assert np.all(lag <= offset + 1e-6) and np.all(lag > offset - TICK - MAX_DELAY_S), (
            names[node],
            offset,
        )


def test_latched_flow_sensor_is_constant_while_pressure_varies(hour: tuple) -> None:
    fleet, batches = hour
    latch = next(c for c in fleet.plan.confounders if isinstance(c, LatchedFlow))
    cdu = fleet.topology.names[EntityKind.CDU][latch.cdu]
    flow = _rows(batches, fleet, f"cdu/{cdu}", "cdu.flow_lpm")
    head = _rows(batches, fleet, f"cdu/{cdu}", "cdu.pressure_kpa")
    stuck, before = flow[flow[:, 1] >= latch.start, 2], flow[flow[:, 1] < latch.start, 2]
    assert stuck.size >= 5 and before.size >= 5
    assert np.unique(stuck).size == 1
    assert 0.83 < stuck[0] / np.median(before) < 0.94  # 8-15% below its normal reading, give or take noise
    after = head[head[:, 1] >= latch.start, 2]
    assert np.unique(after).size > 3
    assert abs(np.median(after) / np.median(head[head[:, 1] < latch.start, 2]) - 1.0) < 0.05


def test_latency_spikes_occur_at_the_stated_rate_and_size(hour: tuple) -> None:
    fleet, batches = hour
    faulty: set[str] = set()
    for p in fleet.plan.faults:
        faulty |= p.reach
    ratios: list[np.ndarray] = []
    for node in fleet.topology.names[EntityKind.NODE]:
        if f"link/{node}" in faulty:
            continue
        v = _rows(batches, fleet, f"link/{node}", "link.latency_us")[:, 2]
        ratios.append(v / np.median(v))
    r = np.concatenate(ratios)
    spikes = r[r > 1.4]
    assert r.size > 5000
    assert 0.4 * LATENCY_SPIKE_RATE < spikes.size / r.size < 2.0 * LATENCY_SPIKE_RATE
    assert spikes.max() < 3.5 and np.median(spikes) > 1.6


def test_job_step_times_appear_only_while_the_job_runs(hour: tuple) -> None:
    fleet, batches = hour
    plan = fleet.plan
    churned = [(j, r) for j, r in enumerate(fleet.fleet.jobs)
               if plan.start < r.start < plan.end or plan.start < r.end < plan.end]  # fmt: skip
    assert len(churned) >= 4
    for j, rec in churned:
        if not fleet.workload.jobs[j].training or fleet.workload.jobs[j].hang_at < plan.end:
            continue
        ts = _rows(batches, fleet, f"job/{rec.job}", "job.step_time_s")[:, 1]
        assert ts.size, rec.job
        assert ts.min() >= rec.start and ts.max() < rec.end, rec.job
        node = rec.nodes[0]
        offset = fleet.effects.clock_offset[fleet.topology.names[EntityKind.NODE].index(node)]
        rank = _rows(batches, fleet, f"gpu/{node}/0", "gpu.step_time_s")[:, 1] - offset
        clock = _rows(batches, fleet, f"gpu/{node}/0", "gpu.sm_clock_mhz")[:, 1] - offset
        assert rank.size < clock.size  # the GPU reports all along, its rank only while it runs a job
        inside = np.zeros(rank.size, dtype=bool)
        for other in fleet.fleet.jobs:
            if node in other.nodes:
                inside |= (rank >= other.start) & (rank < other.end)
        assert inside.all(), rec.job


def test_input_stall_slows_every_rank_at_once() -> None:
    plan = plan_run(5, HOUR)
    stall = next(c for c in plan.confounders if isinstance(c, InputStall))
    fleet = FieldFleet(plan)
    r = fleet.workload.jobs[stall.job]
    t_in, t_out = (
        np.full(r.gpus.size, (stall.start + stall.end) / 2),
        np.full(r.gpus.size, stall.start - 60.0),
    )
    ratio = fleet.physics.gpu(r.gpus, t_in).slowdown / fleet.physics.gpu(r.gpus, t_out).slowdown
    assert np.allclose(ratio, stall.factor)


# ---- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [TUNING_SEEDS[0], HELD_OUT_SEEDS[0]])
def test_labels_are_consistent(seed: int) -> None:
    plan = plan_run(seed)
    labels = FieldFleet(plan).fault_labels()
    assert sorted(lb.kind for lb in labels) == sorted(FAULT_KINDS)
    for lb in labels:
        assert lb.entity in lb.reach
        assert plan.start + CLEAN_S <= lb.onset <= lb.impact <= plan.end, lb.kind
        assert lb.sudden == (lb.impact == lb.onset), lb.kind
        assert all(e in plan.fleet.topology.index for e in lb.reach)
    for a, b in itertools.combinations(labels, 2):
        assert not a.reach & b.reach, (a.kind, b.kind)
    reach = set().union(*(lb.reach for lb in labels))
    for c in plan.confounder_labels:
        assert c.scope and c.onset <= c.end
        if c.entity != "fleet" and c.kind != "job_churn":
            assert c.entity not in reach, c.kind


def test_suite_seed_lists() -> None:
    assert TUNING_SEEDS == (1, 2, 3)
    assert not set(TUNING_SEEDS) & set(HELD_OUT_SEEDS)


# ---- evaluation ------------------------------------------------------------------------------


def _t(ts: float, entity: str, to: str, reason: str = "r") -> TransitionRecord:
    return TransitionRecord(ts, entity, "healthy", to, 0.5, 0.0, 1.0, reason)


def test_evaluation_counts_false_actions_outside_the_reach_only() -> None:
    fault = FaultLabel("straggler", "gpu/a/0", frozenset({"gpu/a/0", "node/a", "job/j"}), 100.0, 160.0, False)
    missed = FaultLabel("xid79", "gpu/b/0", frozenset({"gpu/b/0", "node/b"}), 100.0, 100.0, True)
    skew = ConfounderLabel("clock_skew_-90s", "node/c", frozenset({"node/c", "gpu/c/0"}), 0.0, 1000.0)
    later = ConfounderLabel("counter_reset", "node/d", frozenset({"gpu/d/0"}), 500.0, 600.0)
    ev = evaluate(
        [fault, missed],
        [skew, later],
        [
            _t(50.0, "gpu/a/0", "degraded"),  # before onset: not a detection
            _t(110.0, "job/j", "degraded"),  # a job slowing names no part: not a detection
            _t(130.0, "node/a", "degraded"),  # inside the reach: detection
            _t(140.0, "job/j", "quarantine"),  # inside the reach: no false action
            _t(90.0, "gpu/b/0", "failed"),  # before its onset
            _t(
                200.0, "gpu/c/0", "quarantine", "gpu.temp_c 255"
            ),  # outside: a false action in the skew's scope
            _t(300.0, "gpu/c/0", "degraded"),
            _t(310.0, "rack/r", "degraded"),  # outside, but no action
            _t(320.0, "gpu/d/0", "harmful"),  # outside, before the reset's window
        ],
    )
    assert ev.detected == 1 and ev.recall == 0.5
    hit = ev.faults[0]
    assert hit.detected_at == 130.0 and hit.first_entity == "node/a" and hit.on_target_at is None
    assert hit.delay_s == 30.0 and hit.lead_s == 30.0
    assert ev.faults[1].detected_at is None and ev.faults[1].lead_s is None
    assert [h.entity for h in ev.false_entities] == ["gpu/c/0", "gpu/d/0", "rack/r"]
    assert {h.entity: h.state for h in ev.false_actions} == {"gpu/c/0": "quarantine", "gpu/d/0": "harmful"}
    assert ev.false_actions[0].reason == "gpu.temp_c 255"
    assert ev.violated == ("clock_skew_-90s(node/c)",)
    assert ev.precision == pytest.approx(1 / 4)

    both = pooled([("seed1", ev), ("seed2", ev)])
    assert len(both.false_entities) == 6 and len({h.entity for h in both.false_entities}) == 6
    assert both.violated == ("seed1:clock_skew_-90s(node/c)", "seed2:clock_skew_-90s(node/c)")
    assert both.recall == 0.5 and both.precision == pytest.approx(2 / 8)


def test_whole_pipeline_returns_sane_numbers() -> None:
    ticks: list[int] = []
    ev = run_field(4, duration_s=40 * 60, on_tick=lambda: ticks.append(1))
    assert len(ticks) == 240
    assert len(ev.faults) == len(FAULT_KINDS)
    assert 0.0 <= ev.recall <= 1.0 and 0.0 <= ev.precision <= 1.0
    for f in ev.faults:
        assert f.detected_at is None or f.detected_at >= f.label.onset
    assert {h.entity for h in ev.false_actions} <= {h.entity for h in ev.false_entities}
    assert set(ev.violated) <= {c.name for c in ev.confounders}
    assert all(
        h.state in {"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"}
        for h in ev.false_entities
    )
