"""Spare nodes: the free nodes the scheduler could place a job's class on now.

Every decision that takes a node from a running job (swapping a ``harmful`` rank, moving a job off
a domain, islanding it) buys something only if the job finds a node to restart on; without one
the whole job waits. A spare is a node that runs no job, has GPUs, is not held out of service by
the safety layer (drained and not yet released) and is admitted (``control.admissibility``, not
merely avoided) for the job's class: work moved to a node under a gray domain or a lemon is
likely to be moved again. Nor is a node a job in the job table is due to start on within
``economics.horizon_s``: a swap that takes it leaves that job short when it starts (the twin's
jobs that start mid-run, a site's planned schedule in its jobs file).
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
    now: float,
) -> dict[JobClass, BoolArray]:
    """Per job class of the running jobs, the nodes (local index) that are spares for it."""
    node_gpus = np.bincount(topology.gpu_node, minlength=topology.count(EntityKind.NODE))
    free = (workload.node_job < 0) & (node_gpus > 0)
    free[due_nodes(topology, now, config.economics.horizon_s)] = False
    if held_nodes is not None:
        free[held_nodes] = False  # the scheduler places nothing on a node the safety layer holds
    classes = sorted({job.job_class for job in topology.jobs}, key=lambda c: c.value)
    return {c: free & (node_admission(config, topology, states, c, lemons) == 0) for c in classes}


def due_nodes(topology: Topology, now: float, ahead_s: float) -> IntArray:
    """The nodes (local index) of the jobs due to start after ``now`` and within ``ahead_s``."""
    ids = [f"node/{n}" for job in topology.jobs if now < job.start <= now + ahead_s for n in job.nodes]
    found = [g for g in map(topology.index.get, ids) if g is not None]
    return np.asarray(topology.local[np.asarray(found, dtype=np.int64)], dtype=np.int64)


def job_spares(topology: Topology, by_class: dict[JobClass, BoolArray]) -> IntArray:
    """Per job, how many spares its class has (``by_class``: ``spares_by_class``)."""
    counts = {c: int(m.sum()) for c, m in by_class.items()}
    return np.array([counts.get(job.job_class, 0) for job in topology.jobs], dtype=np.int64)


def nodes_to_swap(topology: Topology, workload: Workload, straggling: BoolArray) -> IntArray:
    """Per job, how many of its nodes hold its ``straggling`` GPUs (per GPU): the spares swapping
    them all at once needs."""
    n_jobs, n_nodes = len(topology.jobs), max(topology.count(EntityKind.NODE), 1)
    on = straggling & (workload.gpu_job >= 0)
    pairs = np.unique(workload.gpu_job[on] * n_nodes + topology.gpu_node[on])
    return np.bincount(pairs // n_nodes, minlength=n_jobs)[:n_jobs].astype(np.int64)
