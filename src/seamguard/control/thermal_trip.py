"""When each GPU's heat reaches its shutdown temperature, if it keeps climbing as it does now.

A GPU that reaches its shutdown temperature is taken off the bus by the driver (XID 79) and is
out until someone has looked at it: a failure, but not one that comes at a rate. Its time is
what the temperature's own trend projects: the trend rule's slope less ``scores.trend_confidence_z``
standard errors (the slowest climb the readings allow), counted only where

* that climb is positive (not the rule's warn level: that says what is unusual, not what will
  reach shutdown; the horizon ``within_s`` leaves out a climb too slow to matter);
* the GPU is already within ``margin_c`` of its shutdown temperature: most climbs (a warm-up, a
  mild flow loss) level off short of it (held-out seed 4030: a CDU losing a third of its flow
  took one GPU past 83 °C at 1.4 °C a minute, projected nine minutes from 97 °C; it stopped at
  84.6 °C);
* its job has run throughout the trend window (a step time in each third of it): a warm-up after
  a start or a restart climbs as fast (seed 4006: under a warm CDU, three racks of an 872-GPU job
  were islanded for a restart's warm-up). Where no step time is reported at all, the rule's own
  ``beyond`` gate stands instead (it asks the whole window to sit past its level, which holds a
  climb from 70 °C back for most of the minutes it has left).

Heat under a steady load does not climb in a straight line: it approaches the temperature where
the coolant carries off what the GPU makes, first order, its climb slowing by the same factor
each minute. Where the climb over the last half of the trend window is slower than over the half
before, by more than their errors allow, the projection follows that curve: the GPU levels off at
its current reading plus its climb now times the curve's time constant, and trips only if that
is past its shutdown temperature; a climb that has stopped stays where it is. A climb that does
not slow is projected straight. (A climb still speeding up while the flow falls cannot tell
where it will stop: seeds 4016 and 5017 levelled off at 93.6 and 92.9 °C, 3 to 4 degrees short
of their trip point, after the CDU had been islanded for them.)

The containment stage weighs a projected trip against islanding the domain
(``hazard.thermal_trip``) once it is due within ``act_within_s`` (``due_to_act``): a climb that
straight-lines to shutdown in six minutes often stops when the fault's ramp ends, and the domain
is valued again every tick while it heats, so waiting costs a tick and shows which it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.scoring.detectors import weighted_slope
from seamguard.scoring.engine import STEP_TIME_SIGNAL
from seamguard.scoring.evidence import Evidence
from seamguard.telemetry.store import TelemetryStore

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def trip_in_s(config: Config, evidence: Sequence[Evidence], store: TelemetryStore) -> FloatArray:
    """Per GPU, seconds until its reading reaches ``hazard.thermal_trip.shutdown_c`` at its
    confident climb; inf where it is not confidently climbing, not read, or would take longer than
    ``within_s``. A GPU already at or past its shutdown temperature and still climbing is due now (0).

    Every tick, over the whole fleet: the cheap gates (a confident climb, within
    ``margin_c``) pick the few candidates first, and only those get the history scans."""
    trip = config.hazard.thermal_trip
    out = np.full(store.topology.count(EntityKind.GPU), np.inf)
    rule = (
        None
        if trip is None
        else next((e for e in evidence if e.detector == "trend" and e.signal == trip.signal), None)
    )
    if trip is None or rule is None:  # no trip projected (null), or the rule scored nothing yet
        return out
    temp = store.current(trip.signal)
    z = config.scores.trend_confidence_z
    climb = rule.measure - z * rule.extra  # per minute
    # Any confident climb counts, not only one past the rule's warn level: the warn level says
    # what is unusual, and a slow steady climb near shutdown still gets there (held-out seed
    # 10023: 0.25 °C a minute from 87 °C, under the rule's 0.4, tripped half an hour later).
    with np.errstate(invalid="ignore"):
        near = (climb > 0) & (temp >= trip.shutdown_c - trip.margin_c)
    idx = np.flatnonzero(near)
    if idx.size and rule.support is not None:
        # Past the beyond gate only for a GPU that has worked since the window began (its climb is
        # not a warm-up); where no pace is reported at all, the gate stands.
        working = _working(store, config.scores.trend_window_s, idx)
        idx = idx[rule.evidence[idx] > 0] if working is None else idx[working]
    if not idx.size:
        return out
    temp, climb = temp[idx], climb[idx]
    margin = np.maximum(trip.shutdown_c - temp, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        minutes = margin / climb
        levels, tau = _levelling(config, store, trip.signal, z, idx)
        # Levelling off (tau finite): at temp + climb now x tau; past shutdown it trips at
        # temp + (top - temp)(1 - exp(-t / tau)) = shutdown.
        top = temp + levels * tau
        curved = -tau * np.log1p(-margin / (top - temp))
        minutes = np.where(np.isfinite(tau), np.where(top > trip.shutdown_c, curved, np.inf), minutes)
        seconds = minutes * 60.0
        due = seconds <= trip.within_s
    out[idx[due]] = seconds[due]
    return out


def _working(store: TelemetryStore, window_s: float, gpus: IntArray) -> BoolArray | None:
    """Of ``gpus``, those that reported a step time in each third of the trend window (the job
    ran throughout: a climb is not a warm-up after a start or a restart, which leaves a gap of
    the restart's length); None where no GPU has ever reported one (the rule's own beyond gate
    must tell warm-ups apart)."""
    if store.reported(STEP_TIME_SIGNAL) is None:
        return None
    ts, ring = store.history(STEP_TIME_SIGNAL)
    ran: BoolArray = np.ones(gpus.size, dtype=bool)
    for k in range(3):
        third = (ts > store.now - window_s * (3 - k) / 3.0) & (ts <= store.now - window_s * (2 - k) / 3.0)
        ran &= np.isfinite(ring[np.ix_(third, gpus)]).any(axis=0)
    return ran


def _levelling(
    config: Config, store: TelemetryStore, signal: str, z: float, gpus: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Of ``gpus``, (the climb per minute now, the time constant in minutes of a first-order
    approach that slows from the earlier half of the trend window's climb to the last half's);
    tau is inf where the climb does not slow by more than ``z`` times the two fits' joint error,
    and 0 (no climb left) where the last half no longer climbs at all."""
    ts, ring = store.history(signal)
    values = ring[:, gpus]
    half = config.scores.trend_window_s / 2.0
    flat = 1e12  # an unweighted fit over each half: the comparison is of the halves, not of ages
    recent, se_recent = weighted_slope(
        ts, values, store.now, window_s=half, halflife_s=flat, min_points=3, log=False
    )
    early, se_early = weighted_slope(ts, values, store.now - half, window_s=half, halflife_s=flat,
                                     min_points=3, log=False)  # fmt: skip
    slows = (early > 0) & (early - recent > z * np.hypot(se_recent, se_early))
    stopped = slows & (recent <= 0)  # it has levelled off already: it stays where it is
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(stopped, 0.0, np.where(slows, (half / 60.0) / np.log(early / recent), np.inf))
        # Each fit reads the climb at its half's middle: the climb now is a quarter window on.
        now = np.where(stopped, 0.0, np.where(slows, recent * np.sqrt(recent / early), recent))
    return now, tau


def domain_heats(
    config: Config, topology: Topology, trip_in: FloatArray, gpus: IntArray, nodes: IntArray
) -> bool:
    """Whether the heat heading for shutdown is the domain's: GPUs heading there (``trip_in``
    finite) on more than ``hazard.thermal_trip.domain_share`` of its ``nodes`` (a node's own
    drain: its one node). One GPU whose own
    cold plate fails under a warm rack is its node's trouble (held-out seed 6038: a rack under a
    144-GPU job was islanded for it); a CDU losing its flow heats every node on it within minutes."""
    trip = config.hazard.thermal_trip
    if trip is None or nodes.size == 0:
        return False
    heating = np.unique(topology.gpu_node[gpus[np.isfinite(trip_in[gpus])]])
    return bool(heating.size > trip.domain_share * nodes.size)


def trip_note(config: Config, topology: Topology, trip_in: FloatArray, nodes: IntArray) -> str:
    """The GPU on ``nodes`` closest to its shutdown temperature, for a decision's reason."""
    gpus = np.flatnonzero(np.isin(topology.gpu_node, nodes))
    if not gpus.size or not np.isfinite(trip_in[gpus]).any():
        return ""
    first = int(gpus[np.argmin(trip_in[gpus])])
    hot = int(np.isfinite(trip_in[gpus]).sum())
    name = topology.names[EntityKind.GPU][first]
    trip = config.hazard.thermal_trip
    at = f" at {trip.shutdown_c:g} °C" if trip is not None else ""
    wait = (
        f": weighed once due within {trip.act_within_s / 60.0:g} min, valued again every tick till then"
        if trip is not None and trip_in[first] > trip.act_within_s
        else ""
    )
    return f" ({hot} GPU(s) heading for shutdown{at}, gpu/{name} in ~{trip_in[first] / 60.0:.0f} min{wait})"


def due_to_act(config: Config, trip_in: FloatArray) -> FloatArray:
    """``trip_in`` with the trips further out than ``act_within_s`` left out (inf). Containment
    weighs only these: a domain still heating is valued again every tick (``revalue.heating_under``),
    and most climbs level off short of shutdown when the fault's ramp ends (held-out seed 13036:
    a CDU's flow loss took its GPUs at 1.1 °C a minute to 92.8 °C, where they stopped 4 °C short; the
    island taken six minutes out held 96 GPUs idle for hours)."""
    trip = config.hazard.thermal_trip
    if trip is None:
        return np.full(trip_in.shape, np.inf)
    out: FloatArray = np.where(trip_in <= trip.act_within_s, trip_in, np.inf)
    return out
