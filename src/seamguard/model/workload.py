"""Which jobs run where at a given time: the cohorts and the amplification context.

Placement comes from one of two places: the job table's time windows (``seamguard score``
over a recorded JOBS.csv), or a live placement the scheduler reports (``Controller.set_placement``:
the twin's scheduler today, Slurm and Kubernetes sources later), because a job re-placed
onto a spare node is still the same job and its ranks are still each other's peers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from seamguard.model.entities import EntityKind
from seamguard.model.states import SYNCHRONOUS_CLASSES
from seamguard.model.topology import Topology

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Workload:
    """Placement of the jobs active at one instant (job indices are local job indices).

    A node belongs to at most one active job; if the job table lists a node twice at the
    same time, the later job wins (schedulers do not co-locate training ranks this way).
    """

    active: tuple[int, ...]
    node_job: IntArray  # (n_nodes,) job local index or -1
    gpu_job: IntArray  # (n_gpus,) job local index or -1
    job_sync: npt.NDArray[np.bool_]  # (n_jobs,)
    job_gpus: FloatArray  # (n_jobs,) GPUs of each active job, 0 when inactive
    gpu_in_job: sp.csr_matrix  # (n_gpus, n_jobs) incidence


def active_jobs(topology: Topology, now: float) -> tuple[int, ...]:
    return tuple(i for i, j in enumerate(topology.jobs) if j.start <= now < j.end)


def build_workload(topology: Topology, active: tuple[int, ...]) -> Workload:
    """The workload of the job table: each active job on the nodes its record lists."""
    node_names = {name: i for i, name in enumerate(topology.names[EntityKind.NODE])}
    node_job = np.full(len(node_names), -1, dtype=np.int64)
    for j in active:
        idx = [node_names[n] for n in topology.jobs[j].nodes if n in node_names]
        node_job[idx] = j
    return workload_from_nodes(topology, node_job, active)


def placement_node_job(topology: Topology, placement: Mapping[str, Sequence[str]]) -> IntArray:
    """A live placement {job name: node names} as a node -> job index vector.

    Refuses unknown jobs and nodes and a node given to two jobs, naming them: a placement
    the engine cannot trust would silently corrupt every peer cohort.
    """
    node_names = {name: i for i, name in enumerate(topology.names[EntityKind.NODE])}
    job_names = {name: i for i, name in enumerate(topology.names[EntityKind.JOB])}
    node_job = np.full(len(node_names), -1, dtype=np.int64)
    for job, nodes in placement.items():
        j = job_names.get(job)
        if j is None:
            raise ValueError(f"placement names job {job!r}, which is not in the topology")
        for node in nodes:
            n = node_names.get(node)
            if n is None:
                raise ValueError(
                    f"placement of job {job!r} names node {node!r}, which is not in the topology"
                )
            if node_job[n] >= 0 and node_job[n] != j:
                other = topology.names[EntityKind.JOB][int(node_job[n])]
                raise ValueError(f"placement gives node {node!r} to both {other!r} and {job!r}")
            node_job[n] = j
    return node_job


def workload_from_nodes(
    topology: Topology, node_job: IntArray, active: tuple[int, ...] | None = None
) -> Workload:
    gpu_job = node_job[topology.gpu_node] if topology.gpu_node.size else np.zeros(0, dtype=np.int64)
    n_jobs = len(topology.jobs)
    job_sync = np.array([j.job_class in SYNCHRONOUS_CLASSES for j in topology.jobs], dtype=bool)
    in_job = gpu_job >= 0
    rows = np.flatnonzero(in_job)
    incidence = sp.csr_matrix((np.ones(rows.size), (rows, gpu_job[in_job])), shape=(gpu_job.size, n_jobs))
    job_gpus = np.bincount(gpu_job[in_job], minlength=n_jobs).astype(np.float64)
    if active is None:
        active = tuple(np.unique(node_job[node_job >= 0]).tolist())
    return Workload(
        active=active,
        node_job=node_job,
        gpu_job=gpu_job,
        job_sync=job_sync,
        job_gpus=job_gpus,
        gpu_in_job=incidence,
    )
