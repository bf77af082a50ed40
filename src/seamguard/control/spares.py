"""Spare nodes: the free nodes the scheduler could place a job's class on now.

Every decision that takes a node from a running job (swapping a ``harmful`` rank, moving a job off
a domain, islanding it) buys something only if the job finds a node to restart on; without one
the whole job waits. A spare is a node that runs no job, has GPUs, is not held out of service by
the safety layer (drained and not yet released) and is admitted (``control.admissibility``, not
merely avoided) for the job's class: work moved to a node under a gray domain or a lemon is
likely to be moved again.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.control.admissibility import node_admission
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def spares_by_class(
    config: Config,
    topology: Topology,
    workload: Workload,
    states: IntArray,
    lemons: BoolArray | None,
    held_nodes: IntArray | None,
) -> dict[JobClass, BoolArray]:
    """Per job class of the running jobs, the nodes (local index) that are spares for it."""
    node_gpus = np.bincount(topology.gpu_node, minlength=topology.count(EntityKind.NODE))
    free = (workload.node_job < 0) & (node_gpus > 0)
    if held_nodes is not None:
        free[held_nodes] = False  # the scheduler places nothing on a node the safety layer holds
    classes = sorted({job.job_class for job in topology.jobs}, key=lambda c: c.value)
    return {c: free & (node_admission(config, topology, states, c, lemons) == 0) for c in classes}


def job_spares(
    config: Config,
    topology: Topology,
    workload: Workload,
    states: IntArray,
    lemons: BoolArray | None,
    held_nodes: IntArray | None,
) -> IntArray:
    """Per job, how many spares its class has now (a job's own nodes are never free)."""
    counts = {c: int(m.sum()) for c, m in spares_by_class(config, topology, workload, states, lemons,
                                                            held_nodes).items()}  # fmt: skip
    return np.array([counts[job.job_class] for job in topology.jobs], dtype=np.int64)


def short_of_spares(
    config: Config,
    topology: Topology,
    workload: Workload,
    states: IntArray,
    lemons: BoolArray | None,
    held_nodes: IntArray | None,
    straggling: BoolArray,
) -> BoolArray:
    """Per job, whether it has fewer spares than nodes holding its ``straggling`` GPUs (per GPU):
    swapping them all at once would leave it waiting for a node."""
    n_jobs = len(topology.jobs)
    on = straggling & (workload.gpu_job >= 0)
    pairs = np.unique(workload.gpu_job[on] * topology.count(EntityKind.NODE) + topology.gpu_node[on])
    need = np.bincount(pairs // max(topology.count(EntityKind.NODE), 1), minlength=n_jobs)[:n_jobs]
    if not need.any():
        return np.zeros(n_jobs, dtype=bool)
    return need > job_spares(config, topology, workload, states, lemons, held_nodes)
