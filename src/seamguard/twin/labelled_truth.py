"""Ground truth of the labelled fleet: when each injected fault starts to cost something.

Lead time is measured against this impact. Gradual faults cost from a point inside their ramp
(a link's latency past what slows a job, a backend's write tail past what stalls a save, the
first GPU under a warming CDU reaching its throttle temperature, a starved job's pace falling
below the twin's ``PACE_COST``); hard ones from the failure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from seamguard.model.topology import Topology
from seamguard.twin import labelled_physics as lp
from seamguard.twin.effects import INPUT_SLOWDOWN
from seamguard.twin.fault_events import PACE_COST
from seamguard.twin.faults import Fault
from seamguard.twin.labelled_physics import write_growth

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class SyntheticFleet(Protocol):
    """What the truth reads of the labelled fleet (``twin.labelled``), which calls ``impact``
    while it builds its truth."""

    @property
    def topology(self) -> Topology: ...
    @property
    def gpu_offset(self) -> FloatArray: ...
    @property
    def job_nodes(self) -> Sequence[IntArray]: ...
    @property
    def job_start(self) -> FloatArray: ...
    @property
    def job_end(self) -> FloatArray: ...

    def inlet(self, racks: IntArray, times: FloatArray) -> FloatArray: ...
    def plate(self, racks: IntArray, times: FloatArray) -> FloatArray: ...


def impact(fleet: SyntheticFleet, f: Fault) -> float:
    """When the fault starts costing something; where a weak fault never does, full development."""
    if f.kind == "link_gray" and not f.hard:
        need = (lp.LINK_SLOWDOWN_FROM - 1) / (lp.LINK_LATENCY_RISE * f.severity)
        return f.onset + f.ramp * math.sqrt(need) if need <= 1 else f.onset + f.ramp
    if f.kind == "storage_tail":
        growth = write_growth(f)
        need = math.log(lp.WRITE_IMPACT_MS / lp.WRITE_MS) / math.log(growth)
        return f.onset + f.ramp * need if need <= 1 else f.onset + f.ramp
    if f.kind in INPUT_SLOWDOWN:  # the jobs it feeds slow from the first percent of the ramp
        need = (1 / PACE_COST - 1) / (INPUT_SLOWDOWN[f.kind] * f.severity)
        return f.onset + f.ramp * min(need, 1.0)
    if f.kind in ("cdu_flow_loss", "supply_temp_rise"):
        return _thermal_impact(fleet, f)
    return f.onset + f.ramp  # the hard failure, or the fault fully developed


def _thermal_impact(fleet: SyntheticFleet, f: Fault) -> float:
    """First time any GPU under the CDU reaches the thermal-throttle temperature (noise-free)."""
    topo = fleet.topology
    racks = np.flatnonzero(topo.rack_cdu == f.local)
    nodes = np.flatnonzero(np.isin(topo.node_rack, racks))
    if nodes.size == 0:
        return f.onset + f.ramp
    gpus = np.flatnonzero(np.isin(topo.gpu_node, nodes))
    pos = np.searchsorted(nodes, topo.gpu_node[gpus])
    hottest = np.full(nodes.size, -np.inf)
    np.maximum.at(hottest, pos, fleet.gpu_offset[gpus])
    fine = f.onset + np.arange(0.0, f.ramp + lp.THERMAL_LAG_S + 60.0, 5.0)
    grid = np.concatenate([fine, fine[-1] + np.arange(60.0, lp.DAY_S, 60.0)])
    busy = np.zeros((nodes.size, grid.size), dtype=bool)
    for j, job_nodes in enumerate(fleet.job_nodes):
        on = np.isin(nodes, job_nodes)
        if on.any():
            busy |= on[:, None] & ((fleet.job_start[j] <= grid) & (grid < fleet.job_end[j]))[None, :]
    rack = topo.node_rack[nodes][:, None]
    lagged = grid[None, :] - lp.THERMAL_LAG_S
    raw = (
        fleet.inlet(rack, lagged)
        + fleet.plate(rack, lagged)
        + hottest[:, None]
        + np.where(busy, lp.GPU_OVER_INLET_BUSY_C, lp.GPU_OVER_INLET_IDLE_C)
    )
    hot = (raw >= lp.SW_THERMAL_C).any(axis=0)
    return float(grid[int(np.argmax(hot))]) if hot.any() else f.onset + f.ramp
