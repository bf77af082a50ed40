"""Blast radius: what a suspect part costs the healthy GPUs around it, and what a domain would take down.

FAE made concrete per job. A synchronous job runs at the pace of its slowest rank: when its
suspect part (a leaf, a GPU, a storage backend) slows it by ``s``, every one of its GPUs loses
``s / (1 + s)`` of its time, and the GPUs *not* under that part lose it for the part's sake.
Those healthy GPU-seconds per second are what the firewall exists to win back: a part that holds
back 500 healthy GPUs is worth moving a job for; one that holds back 3 is not.

A domain's blast radius is what its failure would stop: the GPUs under it, and every GPU of each
synchronous job with a rank under it (one rank lost stops them all). Both are one sparse product
of the containment matrix (entity x GPU) with the placement (GPU x job), so they cost the same
few milliseconds for 16 GPUs as for 131,072.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from seamguard.diagnose.modes import Finding
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload

DOMAIN_KINDS = (
    EntityKind.CDU,
    EntityKind.ROW,
    EntityKind.RACK,
    EntityKind.PDU,
    EntityKind.SWITCH,
    EntityKind.STORAGE,
)
MAX_JOBS_NAMED = 32  # a storage backend under every job of the fleet names the first 32 and counts all


@dataclass(frozen=True)
class PartBlast:
    entity: str
    held_back_gpu_s_per_s: float  # healthy GPUs' time it holds back, summed over the jobs it slows
    jobs: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"entity": self.entity, "held_back_gpu_s_per_s": round(self.held_back_gpu_s_per_s, 3),
                "jobs": list(self.jobs)}  # fmt: skip


@dataclass(frozen=True)
class DomainBlast:
    entity: str
    gpus: int  # GPUs under it
    busy_gpus: int  # of those, running jobs
    jobs: tuple[str, ...]  # the jobs with a rank under it (the first ``MAX_JOBS_NAMED`` by name)
    n_jobs: int
    takes_down_gpus: int  # its GPUs, and every GPU of each synchronous job with a rank under it

    def to_json(self) -> dict[str, object]:
        return {"entity": self.entity, "gpus": self.gpus, "busy_gpus": self.busy_gpus, "jobs": list(self.jobs),
                "n_jobs": self.n_jobs, "takes_down_gpus": self.takes_down_gpus}  # fmt: skip


def _under(topology: Topology, workload: Workload, rows: npt.NDArray[np.int64]) -> sp.csr_matrix:
    """(entity x job): how many of each job's GPUs sit under each of ``rows`` (global indices)."""
    return sp.csr_matrix(topology.below[rows] @ workload.gpu_in_job)


def with_held_back(topology: Topology, workload: Workload, findings: Sequence[Finding]) -> list[Finding]:
    """Each finding with ``held_back_gpu_s_per_s``: its job's healthy GPUs (those under none of the
    entities it points at) times the share of their time the mode costs. An input stall points at no
    part and holds back nobody's GPUs for a part's sake: 0."""
    job_index = {j.job: i for i, j in enumerate(topology.jobs)}
    by_job = sp.csc_matrix(workload.gpu_in_job)  # each job's GPUs as one column
    out: list[Finding] = []
    for f in findings:
        j = job_index.get(f.job)
        gpus = float(workload.job_gpus[j]) if j is not None else 0.0
        if j is None or gpus <= 0 or f.rate_gpu_h_per_h <= 0:
            out.append(f)
            continue
        rows = np.array([g for e in f.entities if (g := topology.lookup(e)) is not None], dtype=np.int64)
        mine = by_job.indices[by_job.indptr[j] : by_job.indptr[j + 1]]
        # the job's GPUs under any of them (a GPU under two counts once)
        suspect = float(np.count_nonzero(topology.below[rows][:, mine].getnnz(axis=0))) if rows.size else 0.0
        share = f.rate_gpu_h_per_h / gpus  # the share of each GPU's time lost
        out.append(replace(f, held_back_gpu_s_per_s=(gpus - suspect) * share if f.entities else 0.0))
    return out


def part_blast(topology: Topology, workload: Workload, findings: Sequence[Finding]) -> list[PartBlast]:
    """Per suspect part named by a finding: the healthy GPU-seconds per second it holds back over
    every job it slows (a gray leaf under two jobs holds back both), largest first."""
    job_index = {j.job: i for i, j in enumerate(topology.jobs)}
    held: dict[str, float] = {}
    jobs: dict[str, list[str]] = {}
    for f in findings:
        j = job_index.get(f.job)
        if j is None or f.rate_gpu_h_per_h <= 0 or not f.entities:
            continue
        gpus = float(workload.job_gpus[j])
        named = [(e, g) for e in f.entities if (g := topology.lookup(e)) is not None]
        if gpus <= 0 or not named:
            continue
        rows = np.array([g for _, g in named], dtype=np.int64)
        under = _under(topology, workload, rows)[:, j].toarray().ravel()
        share = f.rate_gpu_h_per_h / gpus
        for (e, _), k in zip(named, under.tolist(), strict=True):
            held[e] = held.get(e, 0.0) + (gpus - k) * share
            jobs.setdefault(e, []).append(f.job)
    return sorted(
        (PartBlast(e, v, tuple(jobs[e])) for e, v in held.items()), key=lambda b: -b.held_back_gpu_s_per_s
    )


def domain_blast(
    topology: Topology, workload: Workload, entities: Sequence[str] | None = None, top: int = 20
) -> list[DomainBlast]:
    """What each domain would take down if it failed: ``entities`` (ids) when given, else the ``top``
    domains of the fleet by GPUs taken down."""
    if entities is not None:
        rows = np.array([g for e in entities if (g := topology.lookup(e)) is not None], dtype=np.int64)
    else:
        rows = np.concatenate([topology.members[k] for k in DOMAIN_KINDS]).astype(np.int64)
    if rows.size == 0:
        return []
    under = _under(topology, workload, rows)  # (domain x job) GPU counts, sparse
    gpus = np.asarray(topology.below[rows].sum(axis=1)).ravel()
    job_gpus = workload.job_gpus.astype(float)
    sync = workload.job_sync & (job_gpus > 0)
    touched = under.copy()
    touched.data = np.ones_like(touched.data)
    busy = np.asarray(under.sum(axis=1)).ravel()
    # a synchronous job with a rank under the domain stops whole: its GPUs outside the domain too
    outside = touched @ (job_gpus * sync) - under @ sync.astype(float)
    takes_down = gpus + np.asarray(outside).ravel()
    order = np.argsort(-takes_down, kind="stable")
    if entities is None:
        order = order[:top]
    out: list[DomainBlast] = []
    for r in order.tolist():
        row = under.getrow(r)
        names = sorted(topology.jobs[j].job for j in row.indices.tolist())
        out.append(DomainBlast(topology.ids[int(rows[r])], int(gpus[r]), int(busy[r]),
                               tuple(names[:MAX_JOBS_NAMED]), len(names), int(takes_down[r])))  # fmt: skip
    return out
