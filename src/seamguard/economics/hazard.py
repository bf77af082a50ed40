"""Live hazard: how fast each running job is likely to be interrupted, right now.

A job fails when anything it depends on fails hard: any of its GPUs, nodes or node uplinks, the
CDUs and leaf switches under it, or its own software (which grows with its ranks). Each part
starts from a nominal rate per component-day (``hazard.base_per_day``, by default the Llama 3
405B run's published interruption counts spread over its components) and is raised by what the
engine sees in it that foreshadows a hard failure:

    rate = base x min(exp(gfs_gain[kind] x GFS + prs_gain x PRS), max_multiplier)

where GFS and PRS are taken over the failure precursors only (``hazard.precursors``; the
engine's ``gfs_precursor``): a power-braked or down-clocked part is slow, and its slowness is
harm the planner weighs elsewhere, not a failure to save ahead of.

A log-linear (proportional-hazards) form because the evidence behind GFS is multiplicative in
nature: a correctable-error stream that grows a hundredfold takes a part from "one failure a
year" to "one in hours", and no additive bump spans that range. The job's rate is the sum over
its distinct parts (independent competing risks), and its MTBF the inverse: what Young/Daly and
the checkpoint loop need. The storage path is not a part a job dies of; its health decides
whether a save is worth anything, which the checkpoint loop weighs separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import HazardConfig
from seamguard.model.entities import EntityKind
from seamguard.model.topology import KIND_CODE, Topology
from seamguard.model.workload import Workload

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
DAY_S = 86400.0
PART_KINDS = (EntityKind.GPU, EntityKind.NODE, EntityKind.LINK, EntityKind.CDU, EntityKind.SWITCH)
# Failures that take the host memory under the job with them: a host crash, a facility event that
# powers racks down. A GPU off the bus, a link or a leaf switch leaves host memory intact.
HOST_MEMORY_KINDS = (EntityKind.NODE, EntityKind.CDU)
_HOST_MEMORY_CODE = np.zeros(max(KIND_CODE.values()) + 1, dtype=bool)  # kind code -> takes host memory
_HOST_MEMORY_CODE[[KIND_CODE[k] for k in HOST_MEMORY_KINDS]] = True


@dataclass(frozen=True)
class JobHazard:
    rate_per_s: FloatArray  # per job (topology order); 0 for jobs not running
    nominal_per_s: FloatArray  # the same jobs with every score at 0
    top_part: IntArray  # per job, the global index of the part adding the most (-1: none)
    host_loss_per_s: FloatArray  # the share of ``rate_per_s`` that takes host memory with it

    def scaled(self, factor: float) -> JobHazard:
        """The same hazard at ``factor`` times every rate: each rate is linear in the learner's
        scale, and the top part is the same at any positive scale."""
        return JobHazard(self.rate_per_s * factor, self.nominal_per_s * factor, self.top_part,
                         self.host_loss_per_s * factor)  # fmt: skip

    def host_survival(self) -> FloatArray:
        """Per job, the probability that a copy in its own host memory survives its next failure."""
        with np.errstate(divide="ignore", invalid="ignore"):
            lost = np.where(self.rate_per_s > 0, self.host_loss_per_s / self.rate_per_s, 0.0)
        return np.clip(1.0 - lost, 0.0, 1.0)

    def mtbf_s(self, job: int) -> float:
        rate = float(self.rate_per_s[job])
        return 1.0 / rate if rate > 0 else math.inf


def part_rates(
    config: HazardConfig,
    topology: Topology,
    gfs: FloatArray,
    prs: FloatArray,
    scale: float = 1.0,
    failed: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """Per entity (global index), its hard-failure rate per second; 0 for kinds no job dies of.
    ``scale`` multiplies every nominal rate (the fleet's observed rate against nominal). A part
    already ``failed`` adds nothing: its failure has happened, and the job restarts without it."""
    rate = np.zeros(topology.n_entities)
    # NaN (no score yet) boosts nothing. Once for all kinds: the twin asks this of every cell
    # every tick, and nan_to_num's per-call cost dominated on cell-sized arrays.
    gfs, spread = np.nan_to_num(gfs), config.prs_gain * np.nan_to_num(prs)
    for kind in PART_KINDS:
        members = topology.members[kind]
        base = scale * config.base_per_day.get(kind, 0.0) / DAY_S
        if members.size == 0 or base <= 0:
            continue
        exponent = config.gfs_gain.get(kind, 0.0) * gfs[members] + spread[members]
        rate[members] = base * np.minimum(np.exp(exponent), config.max_multiplier)
    if failed is not None:
        rate[failed] = 0.0
    return rate


def nominal_rates(
    config: HazardConfig, topology: Topology, scale: float = 1.0, failed: npt.NDArray[np.bool_] | None = None
) -> FloatArray:
    """``part_rates`` with no score raising any part: each kind's base rate."""
    rate = np.zeros(topology.n_entities)
    for kind in PART_KINDS:
        base = scale * config.base_per_day.get(kind, 0.0) / DAY_S
        if base > 0:
            rate[topology.members[kind]] = base
    if failed is not None:
        rate[failed] = 0.0
    return rate


def job_hazard(
    config: HazardConfig,
    topology: Topology,
    workload: Workload,
    gfs: FloatArray,
    prs: FloatArray,
    scale: float = 1.0,
    pairs: tuple[IntArray, IntArray] | None = None,
    failed: npt.NDArray[np.bool_] | None = None,
) -> JobHazard:
    """Each job's rate: the sum over the distinct parts under it, plus its software rate.
    ``scale`` is the fleet's observed failure rate against nominal (``HazardLearner``);
    ``pairs`` the workload's ``job_parts``, when the caller keeps them between ticks."""
    n_jobs = len(topology.jobs)
    rate = part_rates(config, topology, gfs, prs, scale, failed)
    nominal = nominal_rates(config, topology, scale, failed)
    jobs, parts = pairs if pairs is not None else job_parts(topology, workload)
    total = np.bincount(jobs, weights=rate[parts], minlength=n_jobs)
    base = np.bincount(jobs, weights=nominal[parts], minlength=n_jobs)
    takes_host = _HOST_MEMORY_CODE[topology.kind_code[parts]]
    host_loss = np.bincount(jobs, weights=rate[parts] * takes_host, minlength=n_jobs).astype(np.float64)
    software = scale * config.software_per_gpu_day / DAY_S * workload.job_gpus[:n_jobs]
    top = np.full(n_jobs, -1, dtype=np.int64)
    if parts.size:
        order = np.lexsort((-rate[parts], jobs))  # per job, its largest part first
        first = np.ones(order.size, bool)
        first[1:] = jobs[order][1:] != jobs[order][:-1]
        top[jobs[order][first]] = parts[order][first]
    return JobHazard(total + software, base + software, top, host_loss)


def job_parts(topology: Topology, workload: Workload) -> tuple[IntArray, IntArray]:
    """(job, part) pairs, each part once per job: GPUs, nodes, uplinks, and the CDUs and leaf
    switches its nodes sit under."""
    m = topology.members
    pairs: list[tuple[IntArray, IntArray]] = []
    g = np.flatnonzero(workload.gpu_job >= 0)
    pairs.append((workload.gpu_job[g], m[EntityKind.GPU][g]))
    n = np.flatnonzero(workload.node_job >= 0)
    job_of_node = workload.node_job[n]
    pairs.append((job_of_node, m[EntityKind.NODE][n]))
    if m[EntityKind.LINK].size:
        pairs.append((job_of_node, m[EntityKind.LINK][n]))  # a node's uplink shares its index
    for kind, parent in (
        (EntityKind.CDU, topology.rack_cdu[topology.node_rack[n]]),
        (EntityKind.SWITCH, topology.node_leaf[n]),
    ):
        ok = parent >= 0
        if m[kind].size and ok.any():
            unique = np.unique(np.stack([job_of_node[ok], parent[ok]]), axis=1)
            pairs.append((unique[0], m[kind][unique[1]]))
    jobs = np.concatenate([p[0] for p in pairs]).astype(np.int64)
    parts = np.concatenate([p[1] for p in pairs]).astype(np.int64)
    return jobs, parts
