"""One tick of scoring: every configured detector over the store, combined into GFS."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.errors import InputError
from seamguard.model.catalog import SignalCatalog, SignalKind
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.scoring import detectors
from seamguard.scoring.cohorts import cohort_groups
from seamguard.scoring.events import XidMemory, heartbeat
from seamguard.scoring.evidence import Evidence, FloatArray
from seamguard.scoring.gfs import combine
from seamguard.scoring.peer_memory import PeerMemory
from seamguard.scoring.sensor_screen import SensorScreen
from seamguard.scoring.usual_level import OWN, UsualLevels
from seamguard.telemetry.clock import skew_notices
from seamguard.telemetry.store import TelemetryStore

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ScoreFrame:
    evidence: tuple[Evidence, ...]
    gfs: FloatArray  # global
    gfs_recovery: FloatArray
    gfs_precursor: FloatArray  # over the failure precursors only: what the hazard reads
    hard_fail: npt.NDArray[np.bool_]
    hard_reason: dict[int, str]  # global index -> why (only for the few hard failures)
    floor: IntArray
    notices: tuple[str, ...]


STEP_TIME_SIGNAL = "gpu.step_time_s"  # what the economic harm rule reads (smoothed over economics.smooth_s)


def history_signals(config: Config) -> set[str]:
    return {*config.detectors.trend, *config.detectors.persist, STEP_TIME_SIGNAL}


def flatline_alarms(config: Config) -> tuple[dict[str, float], dict[str, float]]:
    """(at or below, at or above): per level-ruled signal, where a held reading is an alarm, not
    a stuck sensor (the level rule's soft limit in its bad direction)."""
    below = {n: r.warn for n, r in config.detectors.level.items() if r.direction == "low"}
    above = {n: r.warn for n, r in config.detectors.level.items() if r.direction == "high"}
    return below, above


def validate_cohorts(config: Config, catalog: SignalCatalog, topology: Topology, workload: Workload) -> None:
    for name, rule in config.detectors.peer.items():
        kind = catalog[name].entity
        if cohort_groups(rule.cohort, kind, topology, workload) is None:
            why = (
                "the inventory has no 'model' column"
                if rule.cohort == "model" and not topology.models
                else f"it is not defined for {kind.value} entities"
            )
            raise InputError(f"detectors.peer.{name}", f"cohort {rule.cohort!r} cannot be used: {why}")


def _reading(store: TelemetryStore, config: Config, name: str) -> FloatArray:
    """What level and peer detectors judge: a noisy gauge's recent median or a counter's mean rate
    over its window (``detectors.persist``), else a counter's latest rate or a gauge's value."""
    seconds = config.detectors.persist.get(name)
    counter = store.catalog[name].kind is SignalKind.COUNTER
    if seconds is not None:
        return store.windowed_rate(name, seconds) if counter else store.windowed_median(name, seconds)
    return store.rate(name) if counter else store.current(name)


def poisson_spread(rate: FloatArray, counted_s: float, scaling: FloatArray | None) -> FloatArray:
    """The counting noise of rates measured over ``counted_s``: sqrt(events) / time, taken at the
    observed rate (the conservative side for an outlier). ``scaling``: how much a baseline
    adjustment multiplied each rate, noise included."""
    k = np.ones_like(rate) if scaling is None else scaling
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.maximum(rate, 0.0) * k / counted_s)


def same_window(store: TelemetryStore, name: str, value: FloatArray) -> FloatArray:
    """``value`` without the members whose latest sample is older than their peers' by more than
    the series' cadence: a rank that missed a scrape is left out of the comparison, never
    compared with a value its peers have moved on from."""
    age = store.now - store.last_seen(name)
    ok = np.isfinite(value) & np.isfinite(age)
    cadence = store.cadence(name)
    if not ok.any() or not np.isfinite(cadence):
        return value
    reference = float(np.median(age[ok]))
    return np.where(age <= reference + cadence, value, np.nan)


def _stayed_beyond(
    limit: float | FloatArray,
    rising: bool,
    slope: FloatArray,
    warn: float,
    tick_ts: FloatArray,
    ring: FloatArray,
    since: float,
    share: float = 1.0,
) -> npt.NDArray[np.bool_]:
    """Per entity: at least ``share`` of its samples of the window were past ``limit`` (one for
    all, or one each; NaN: never past). Only entities whose slope already earns evidence are
    checked, so a fleet-wide ring is never copied (a handful of columns are)."""
    out = np.zeros(slope.size, dtype=bool)
    cols = np.flatnonzero((slope if rising else -slope) > warn)  # NaN compares False
    if cols.size:
        recent = ring[np.ix_(np.flatnonzero(tick_ts >= since), cols)]  # copies only those columns
        lim = limit[cols] if isinstance(limit, np.ndarray) else limit
        with np.errstate(invalid="ignore"):
            past = (recent > lim) if rising else (recent < lim)
        have = np.isfinite(recent).sum(axis=0)
        out[cols] = (have > 0) & (past.sum(axis=0) >= share * have)
    return out


def _instances_follow_their_gpu(
    topology: Topology,
    gfs: FloatArray,
    gfs_rec: FloatArray,
    gfs_pre: FloatArray,
    hard: npt.NDArray[np.bool_],
    floor: IntArray,
    hard_reason: dict[int, str],
) -> None:
    """A MIG instance is never healthier than the GPU it is carved from: a throttling or failed
    GPU takes every instance on it along (its own evidence can only add)."""
    migs = topology.members[EntityKind.MIG]
    if migs.size == 0:
        return
    gpu = topology.mig_gpus()
    gfs[migs] = np.maximum(gfs[migs], gfs[gpu])
    gfs_rec[migs] = np.maximum(gfs_rec[migs], gfs_rec[gpu])
    gfs_pre[migs] = np.maximum(gfs_pre[migs], gfs_pre[gpu])
    hard[migs] |= hard[gpu]
    floor[migs] = np.maximum(floor[migs], floor[gpu])
    for m, g in zip(migs[hard[migs]].tolist(), gpu[hard[migs]].tolist(), strict=True):
        hard_reason[m] = f"its GPU {topology.ids[g]}: {hard_reason.get(g, 'failed')}"


def score_tick(
    *,
    now: float,
    store: TelemetryStore,
    config: Config,
    topology: Topology,
    workload: Workload,
    xid_memory: XidMemory,
    peer_memory: PeerMemory,
    usual: UsualLevels,
    sensors: SensorScreen,
) -> ScoreFrame:
    """The memories (XIDs, peers, usual levels, the sensor screen) are kept across ticks by the
    caller: they are what makes a tick's judgement depend on the ticks before it."""
    cat = store.catalog
    det = config.detectors
    sc = config.scores
    evidence: list[Evidence] = []
    for name, lrule in det.level.items():
        evidence.append(detectors.level(cat[name], lrule, _reading(store, config, name)))
    for name, urule in det.usual.items():
        reading = _reading(store, config, name)
        evidence.append(detectors.own_usual(cat[name], urule, reading, usual.usual(OWN + name)))
        usual.learn(OWN + name, reading, np.ones(reading.shape, dtype=bool), now)
    for name, trule in det.trend.items():
        tick_ts, ring = store.history(name)
        slope, se = detectors.weighted_slope(
            tick_ts,
            ring,
            now,
            window_s=sc.trend_window_s,
            halflife_s=sc.trend_halflife_s,
            min_points=sc.trend_min_points,
            log=trule.log,
        )
        beyond = None
        rising = trule.direction == "rising"
        if trule.beyond is not None:
            beyond = _stayed_beyond(
                trule.beyond, rising, slope, trule.warn, tick_ts, ring, now - sc.trend_window_s
            )
        if trule.beyond_usual is not None:
            limit = usual.usual(name) * trule.beyond_usual  # NaN until learnt: never beyond
            # most of the window, not all of it: a save lifts latency for minutes, a fault for good
            past = _stayed_beyond(
                limit, rising, slope, trule.warn, tick_ts, ring, now - sc.trend_window_s, 0.5
            )
            beyond = past if beyond is None else beyond & past
        ev = detectors.trend(cat[name], trule, slope, se, sc.trend_confidence_z, beyond)
        evidence.append(ev)
        if trule.beyond_usual is not None:
            usual.learn(name, store.current(name), ev.evidence == 0, now)
    for name, prule in det.peer.items():
        sig = cat[name]
        groups = cohort_groups(prule.cohort, sig.entity, topology, workload)
        if groups is not None:
            raw = same_window(store, name, _reading(store, config, name))
            raw = peer_memory.settled(name, raw, groups[0], now, det.persist.get(name, 0.0))
            relative = prule.measure == "relative"
            baseline = prule.baseline_halflife_s
            value = raw if baseline is None else peer_memory.without_baseline(name, raw, relative)
            spread = None
            if sig.kind is SignalKind.COUNTER:  # a rate is counted events: its spread is at least Poisson
                spread = poisson_spread(value, det.persist.get(name) or store.cadence(name),
                                       peer_memory.scaling(name) if baseline is not None else None)  # fmt: skip
            ev = detectors.peer(sig, prule, value, groups[0], groups[1], spread_floor=spread)
            counts = peer_memory.gate(name, ev.evidence > 0, np.isfinite(ev.measure), store.last_seen(name))
            evidence.append(replace(ev, evidence=np.where(counts, ev.evidence, 0.0)))
            if baseline is not None:
                peer_memory.learn_baseline(name, raw, value, groups[0], groups[1], quiet=ev.evidence == 0, now=now,
                                           halflife_s=baseline)  # fmt: skip
    for name, crule in det.counter.items():
        evidence.append(detectors.counter_rate(cat[name], crule, store.rate(name)))
    for name, frule in det.flag.items():
        evidence.append(detectors.flag(cat[name], frule, store.current(name)))
    throttle_sig = cat[det.throttle.signal]
    evidence.append(detectors.throttle(throttle_sig, det.throttle, store.current(throttle_sig.name)))
    xid_sig = cat[det.xid.signal]
    xid_ev, xid_floor = xid_memory.update(xid_sig, now, store.events(xid_sig.name))
    evidence.append(xid_ev)
    hb_sig = cat[det.heartbeat.signal]
    hb = heartbeat(hb_sig, det.heartbeat, store.current(hb_sig.name))
    evidence.append(hb.evidence)
    evidence, sensor_notices = sensors.screen(evidence, store, topology)

    combined = combine(evidence, topology, frozenset(config.hazard.precursors))
    gfs, gfs_rec, gfs_pre = combined.gfs, combined.recovery, combined.precursor
    hard = np.zeros(topology.n_entities, dtype=bool)
    hard_reason: dict[int, str] = {}
    nodes = topology.members[EntityKind.NODE]
    hard[nodes] = hb.hard_fail
    for local in np.flatnonzero(hb.hard_fail).tolist():
        hard_reason[int(nodes[local])] = hb.evidence.describe(local)
    for name in det.hard_counters:
        sig = cat[name]
        increased = np.nan_to_num(store.rate(name)) > 0
        members = topology.members[sig.entity]
        hard[members] |= increased
        for local in np.flatnonzero(increased).tolist():
            hard_reason[int(members[local])] = f"{name} increased (uncorrectable error)"
    floor = np.full(topology.n_entities, -1, dtype=np.int64)
    floor[topology.members[xid_sig.entity]] = xid_floor
    _instances_follow_their_gpu(topology, gfs, gfs_rec, gfs_pre, hard, floor, hard_reason)
    notices: list[str] = []
    if store.clock is not None:
        notices.extend(skew_notices(topology, store.clock.changes))
    if hb.mass_stale:
        notices.append(
            f"{int(hb.stale.sum())} of {hb.stale.size} node heartbeats went stale at once: "
            "suspecting the heartbeat source, not the nodes (none failed on this tick)"
        )
    notices.extend(sensor_notices)
    return ScoreFrame(
        evidence=tuple(evidence),
        gfs=gfs,
        gfs_recovery=gfs_rec,
        gfs_precursor=gfs_pre,
        hard_fail=hard,
        hard_reason=hard_reason,
        floor=floor,
        notices=tuple(notices),
    )
