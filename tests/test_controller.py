"""The control loop end to end on a small fleet with hand-written telemetry."""

from __future__ import annotations

import numpy as np
import pytest

from seamguard.config import config_from_mapping, load_config
from seamguard.control.controller import Controller
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass, State
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch
from tests.conftest import small_inventory, small_jobs

CAT = signal_catalog()
CFG = load_config()
# a plausible steady value of every gauge, by signal (also tests/test_world.py)
STEADY = {
    "gpu.temp_c": 65.0, "gpu.mem_temp_c": 70.0, "gpu.sm_clock_mhz": 1980.0, "gpu.power_w": 600.0,
    "gpu.util_pct": 95.0, "gpu.throttle_reasons": 0.0, "gpu.step_time_s": 2.0, "gpu.ecc_dbe_total": 0.0,
    "node.heartbeat_age_s": 5.0, "link.latency_us": 2.0, "rack.inlet_temp_c": 33.0, "cdu.flow_lpm": 450.0,
    "cdu.supply_temp_c": 30.0, "cdu.pressure_kpa": 160.0,
}  # fmt: skip


def normal_batch(topo: Topology, now: float, rng: np.random.Generator, *, skip_node: str | None = None,
                 overrides: dict[tuple[str, str], float] | None = None) -> TelemetryBatch:  # fmt: skip
    """Every gauge of every GPU/node/link/rack/cdu at plausible steady values."""
    ent, sig, ts, val = [], [], [], []
    for name, base in STEADY.items():
        s = CAT[name]
        members = topo.members[s.entity]
        ids = [topo.ids[i] for i in members]
        noise = 0.0 if name in ("gpu.throttle_reasons", "gpu.ecc_dbe_total") else 0.002
        v = base * (1 + rng.normal(0, noise, members.size))
        for k, eid in enumerate(ids):
            if skip_node and (eid.startswith(f"gpu/{skip_node}/")):
                continue
            if overrides and (eid, name) in overrides:
                v[k] = overrides[(eid, name)]
            ent.append(members[k])
            sig.append(s.index)
            ts.append(now - 1.0)
            val.append(v[k])
    return TelemetryBatch(np.array(ent), np.array(sig), np.array(ts), np.array(val))


def with_readings(
    topo: Topology, batch: TelemetryBatch, now: float, readings: dict[tuple[str, str], float]
) -> TelemetryBatch:
    """``batch`` plus one reading per (entity, signal): signals ``normal_batch`` does not send."""
    extra = TelemetryBatch(
        np.array([topo.index[e] for e, _ in readings], dtype=np.int64),
        np.array([CAT[s].index for _, s in readings], dtype=np.int64),
        np.full(len(readings), now - 1.0),
        np.array(list(readings.values()), dtype=np.float64),
    )
    return TelemetryBatch.concat([batch, extra])


def run(topo: Topology, ticks: int, start: float = 1000.0, **kw: object) -> tuple[Controller, list]:
    ctl = Controller(topo, CFG)
    rng = np.random.default_rng(0)
    out = []
    for i in range(ticks):
        now = start + 30.0 * (i + 1)
        out.extend(ctl.tick(now, normal_batch(topo, now, rng, **kw)).transitions)  # type: ignore[arg-type]
    return ctl, out


def test_steady_fleet_stays_healthy_and_silent(topology: Topology) -> None:
    ctl, transitions = run(topology, 20)
    assert transitions == []
    gpus = topology.members[EntityKind.GPU]
    assert (ctl.states[gpus] == State.HEALTHY).all()


def test_time_must_advance(topology: Topology) -> None:
    ctl = Controller(topology, CFG)
    ctl.tick(100.0, TelemetryBatch.empty())
    with pytest.raises(ValueError, match="must increase"):
        ctl.tick(100.0, TelemetryBatch.empty())


def test_fatal_xid_fails_within_one_tick(topology: Topology) -> None:
    ctl, _ = run(topology, 5)
    rng = np.random.default_rng(1)
    now = 1000.0 + 30 * 6
    b = normal_batch(topology, now, rng)
    gidx = topology.index["gpu/n01/2"]
    xid = TelemetryBatch(
        np.array([gidx]), np.array([CAT["gpu.xid"].index]), np.array([now - 3]), np.array([79.0])
    )
    res = ctl.tick(now, TelemetryBatch.concat([b, xid]))
    [t] = [t for t in res.transitions if t.entity == "gpu/n01/2"]
    assert t.to_state == "failed" and "XID 79" in t.reason
    assert {d.action for d in res.decisions if d.entity == "node/n01"} >= {"drain_node"}


def test_exporter_silence_is_unknown_never_failed(topology: Topology) -> None:
    ctl, _ = run(topology, 5)
    rng = np.random.default_rng(2)
    seen: list = []
    for i in range(6, 30):
        now = 1000.0 + 30 * i
        seen += ctl.tick(now, normal_batch(topology, now, rng, skip_node="n03")).transitions
    states = {t.to_state for t in seen if t.entity.startswith("gpu/n03/")}
    assert states == {"unknown"}
    assert all(t.to_state != "failed" for t in seen)


def test_nan_telemetry_never_raises_a_state(topology: Topology) -> None:
    """Replacing values with NaN (dropouts) must not make anything worse than healthy/unknown."""
    ctl = Controller(topology, CFG)
    rng = np.random.default_rng(3)
    for i in range(30):
        now = 1000.0 + 30 * (i + 1)
        b = normal_batch(topology, now, rng)
        val = b.value.copy()
        val[rng.random(val.size) < 0.5] = np.nan
        res = ctl.tick(now, TelemetryBatch(b.entity, b.signal, b.timestamp, val))
        assert {t.to_state for t in res.transitions} <= {"healthy", "unknown"}


def test_hot_gpu_degrades_with_an_explained_reason(topology: Topology) -> None:
    ctl, _ = run(topology, 10)
    rng = np.random.default_rng(4)
    found = []
    for i in range(11, 40):
        now = 1000.0 + 30 * i
        temp = 65.0 + (i - 10) * 0.9
        over = {
            ("gpu/n02/1", "gpu.temp_c"): temp,
            ("gpu/n02/1", "gpu.throttle_reasons"): 0x20 if temp > 84 else 0,
        }
        found += [t for t in ctl.tick(now, normal_batch(topology, now, rng, overrides=over)).transitions
                  if t.entity == "gpu/n02/1"]  # fmt: skip
    assert found and found[0].from_state == "healthy" and found[0].to_state in ("degraded", "quarantine")
    assert "gpu.temp_c" in found[0].reason
    view = ctl.view("gpu/n02/1")
    assert view.gfs > CFG.classifier.degraded_enter
    assert view.fae == pytest.approx(20.0)  # 5 nodes x 4 GPUs in one synchronous job


def test_harm_judges_a_sustained_pace_not_one_ticks_jitter(topology: Topology) -> None:
    ctl, _ = run(topology, 12)
    rng = np.random.default_rng(6)
    gpu = "gpu/n01/2"
    states: list[str] = []
    t = 1000.0 + 30 * 12

    def tick(step: float) -> None:
        nonlocal t
        t += 30
        res = ctl.tick(t, normal_batch(topology, t, rng, overrides={(gpu, "gpu.step_time_s"): step}))
        states.extend(f"{x.to_state}:{x.reason}" for x in res.transitions if x.entity == gpu)

    tick(2.2)  # one slow tick: 10% over its peers, averaged over smooth_s it is well inside the spread
    assert not any(s.startswith("harmful") for s in states)
    for _ in range(12):  # the same pace, sustained: now it is a straggler worth a swap
        tick(2.2)
    assert any(s.startswith("harmful") and "straggler of job train" in s for s in states)
    for _ in range(30):
        tick(2.0)
    assert states[-1].startswith("healthy:no longer worth a swap")


@pytest.mark.parametrize("no_spare", ["n07 held", "n07 busy"])
def test_a_straggler_with_no_spare_to_swap_to_is_kept(no_spare: str) -> None:
    """10% slow is worth a swap onto n07 (the test above), not a wait for its own node back."""
    jobs = (
        small_jobs()
        if no_spare == "n07 held"
        else (
            small_jobs()[0],
            JobRecord("batch", JobClass.ASYNC_BATCH_INFERENCE, ("n05", "n06", "n07"), 0.0, 1e7),
        )
    )
    topo = build_topology(small_inventory(), jobs)
    ctl = Controller(topo, CFG)
    if no_spare == "n07 held":
        ctl.held_nodes = np.array([7], dtype=np.int64)  # drained by the safety layer, not yet released
    rng = np.random.default_rng(6)
    for i in range(40):
        now = 1030.0 + 30 * i
        step = 2.2 if i >= 12 else 2.0
        res = ctl.tick(now, normal_batch(topo, now, rng, overrides={("gpu/n01/2", "gpu.step_time_s"): step}))
        assert not [t for t in res.transitions if t.to_state == "harmful"]
    assert "no spare: the job would wait for the node back" in " ".join(
        e.text for e in ctl.view("gpu/n01/2").evidence
    )


def test_undo_only_what_was_done(topology: Topology) -> None:
    """Back from silence restores nothing; a degraded GPU that went silent and came back clean
    gets its admission restored; every decision names the entity that caused it."""
    ctl, _ = run(topology, 5)
    rng = np.random.default_rng(5)
    decisions = []
    hot = {("gpu/n02/1", "gpu.temp_c"): 92.0, ("gpu/n02/1", "gpu.throttle_reasons"): 0x20}
    for i in range(6, 80):
        now = 1000.0 + 30 * i
        if i < 12:
            b = normal_batch(topology, now, rng, overrides=hot)  # n02/1 hot
        elif i < 30:
            b = normal_batch(topology, now, rng, skip_node="n03")  # n03 silent; n02 silent below too
            keep = np.array([not topology.ids[e].startswith("gpu/n02/") for e in b.entity.tolist()])
            b = TelemetryBatch(b.entity[keep], b.signal[keep], b.timestamp[keep], b.value[keep])
        else:
            b = normal_batch(topology, now, rng)
        decisions += list(ctl.tick(now, b).decisions)
    on_n03 = [d for d in decisions if d.cause.startswith("gpu/n03/")]
    assert on_n03 == []  # went unknown and came back: nothing was restricted, nothing restored
    n02 = [(d.action, d.entity) for d in decisions if d.cause == "gpu/n02/1"]
    assert n02[0][0] != "restore_admission" and ("restore_admission", "gpu/n02/1") in n02
    assert ctl.states[topology.index["gpu/n02/1"]] == State.HEALTHY


def test_a_tolerated_quarantine_admits_like_degraded_until_it_ends(topology: Topology) -> None:
    """The containment stage kept a quarantined rack in service: its nodes must not deny the job
    that restarts on them (that would hold idle what the valuation chose to keep), and the mark
    ends with the quarantine."""
    from seamguard.control.admissibility import node_admission
    from seamguard.model.states import JobClass

    ctl = Controller(topology, CFG)
    rack = topology.index["rack/r1"]
    ctl.classifier.state[rack] = int(State.QUARANTINE)
    nodes = np.flatnonzero(topology.node_rack == topology.local[rack])
    deny = node_admission(CFG, topology, ctl.admission_states(), JobClass.SYNC_TRAINING)
    assert (deny[nodes] == 2).all()
    ctl._tolerated[rack] = True  # what Controller.tick sets from containment.tolerated_by
    kept = node_admission(CFG, topology, ctl.admission_states(), JobClass.SYNC_TRAINING)
    assert (kept[nodes] == 1).all()  # avoid: new work goes elsewhere, a restart may come back
    assert ctl.states[rack] == int(State.QUARANTINE)  # the state itself is unchanged
    rng = np.random.default_rng(0)
    for now in np.arange(1030.0, 1800.0, 30.0):  # nothing against the rack: it leaves quarantine
        ctl.tick(float(now), normal_batch(topology, float(now), rng))
        assert ctl._tolerated[rack] == (ctl.states[rack] == int(State.QUARANTINE))
    assert not ctl._tolerated[rack]


@pytest.mark.parametrize("restart_s", [None, 7200.0])
def test_a_straggler_is_priced_at_its_job_s_own_restart(topology: Topology, restart_s: float | None) -> None:
    """``checkpoint.jobs.train.restart_s``: a job that takes two hours to restart keeps the
    10%-slow rank a job restarting in ``economics.restart_cost_s`` swaps. Its restart is priced
    with its restore, as a failure's is."""
    cfg = (
        CFG
        if restart_s is None
        else config_from_mapping({"checkpoint": {"jobs": {"train": {"restart_s": restart_s}}}})
    )
    ctl = Controller(topology, cfg)
    rng = np.random.default_rng(6)
    harmful = False
    for i in range(40):
        now = 1030.0 + 30 * i
        step = 2.2 if i >= 12 else 2.0
        res = ctl.tick(
            now, normal_batch(topology, now, rng, overrides={("gpu/n01/2", "gpu.step_time_s"): step})
        )
        harmful |= any(t.to_state == "harmful" for t in res.transitions if t.entity == "gpu/n01/2")
    assert harmful is (restart_s is None)
    econ = ctl.economics
    assert econ is not None and econ.restore_s[0] > 0
    own = CFG.economics.restart_cost_s if restart_s is None else restart_s
    assert econ.restart_s[0] == pytest.approx(own + econ.restore_s[0])
    assert econ.loss_per_failure_s[0] > econ.restart_s[0]  # and half an interval redone
