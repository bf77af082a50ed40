"""PRS and FAE over the dependency graph, as sparse products.

* exposure(e): GPUs that suffer when e degrades: the busy GPUs below it plus, for every
  synchronous job that has any GPU below it, the whole job (it waits for its slowest rank).
* FAE(e) = exposure(e) / GPUs physically below e (at least 1): healthy GPU-seconds lost per
  locally degraded GPU-second. One slow GPU in a 512-GPU data-parallel job gives 512.
* PRS(e) = GFS(e) x (1 - exp(-exposure(e) / scale)): how likely e's degradation spreads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.scoring.evidence import FloatArray


@dataclass(frozen=True)
class Amplification:
    exposure: FloatArray  # global
    fae: FloatArray  # global, >= 1
    local_gpus: FloatArray  # global


def amplification(topology: Topology, workload: Workload) -> Amplification:
    local = topology.gpus_below()
    below_jobs = (topology.below @ workload.gpu_in_job).tocsr()  # entity x job: job GPUs under e
    touched = below_jobs.copy()
    touched.data = np.ones_like(touched.data)
    sync_size = np.where(workload.job_sync, workload.job_gpus, 0.0)
    async_mask = (~workload.job_sync).astype(np.float64)
    exposure = touched @ sync_size + below_jobs @ async_mask
    jobs = topology.members[EntityKind.JOB]
    exposure[jobs] = workload.job_gpus
    local = local.copy()
    local[jobs] = workload.job_gpus
    fae = np.maximum(1.0, exposure / np.maximum(local, 1.0))
    return Amplification(exposure=np.maximum(exposure, local), fae=fae, local_gpus=local)


def propagation_risk(gfs: FloatArray, amp: Amplification, exposure_scale_gpus: float) -> FloatArray:
    return gfs * -np.expm1(-amp.exposure / exposure_scale_gpus)
