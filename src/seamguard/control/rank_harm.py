"""Each rank's harm to its job this tick (``economics.harm``), priced with the spares a swap needs
and the time its job has left to pay for it.

The classifier's ``harmful`` reads the ratio per entity; escalation reads each rank's slowdown;
``explain`` reads the text. A job short of spares (``control.spares``) would wait for the node
it gave up: that wait is part of the swap's cost (``economics.harm.with_waits``). Spares are
counted only for jobs with stragglers, so a calm fleet pays nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.control.explaining import harm_texts
from seamguard.control.spares import job_spares, nodes_to_swap, spares_by_class
from seamguard.economics.harm import straggler_harm, with_waits
from seamguard.economics.valuation import planned_swap_s
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RankHarm:
    ratio: FloatArray  # per entity: gain / cost of swapping it (NaN: a GPU that runs no job)
    slowdown: FloatArray  # per GPU: its sustained slowdown over its job's median, >= 0
    texts: dict[int, str]  # per straggling GPU (global index): why


def rank_harm(
    config: Config,
    topology: Topology,
    workload: Workload,
    pace: FloatArray,
    weight: FloatArray,
    states: IntArray,
    lemons: BoolArray | None,
    held_nodes: IntArray | None,
    now: float,
    restart_s: FloatArray | None = None,
    save_s: FloatArray | None = None,
) -> RankHarm:
    """``pace``: per GPU, its sustained step time; ``weight``: per job, its criticality weight;
    ``restart_s``: per job, its planned restart with its restore (``JobEconomics.restart_s``);
    ``save_s``: per job, its chosen save's blocking time (NaN: no plan, no save priced)."""
    left = np.array([job.end for job in topology.jobs], dtype=np.float64) - now  # a swap pays until then
    swap = (
        None
        if restart_s is None
        else planned_swap_s(np.nan_to_num(save_s if save_s is not None else 0.0), restart_s, False, 0.0)
    )
    harm = straggler_harm(
        pace, workload.gpu_job, workload.job_sync, workload.job_gpus, config.economics, weight, left, swap
    )
    need = nodes_to_swap(topology, workload, harm.ratio > 0)
    if need.any():
        spares = job_spares(
            topology, spares_by_class(config, topology, workload, states, lemons, held_nodes, now)
        )
        harm = with_waits(harm, workload.gpu_job, need > spares, workload.job_gpus, config.economics)
    ratio = np.zeros(topology.n_entities)
    ratio[topology.members[EntityKind.GPU]] = np.where(workload.gpu_job >= 0, harm.ratio, np.nan)
    ratio[topology.members[EntityKind.MIG]] = ratio[topology.mig_gpus()]  # instances follow their GPU
    # Each rank's slowdown, straggler or not: the pace loss a degraded part accrues for escalation
    # (a harmful one is swapped by its state's actions).
    slowdown = np.maximum(np.nan_to_num(harm.slowdown), 0.0)
    return RankHarm(ratio, slowdown, harm_texts(topology, workload, harm))
