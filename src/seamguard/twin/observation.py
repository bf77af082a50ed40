"""What a policy is shown: the telemetry of the whole fleet (``full`` mode) or of the open cells
(``windows`` mode), rendered from a snapshot of the plant, the jobs and the fleet."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from seamguard.model.entities import EntityKind
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.effects import Effects
from seamguard.twin.jobs import Phase, TrainingJob
from seamguard.twin.telemetry import Snapshot
from seamguard.twin.world import NOISE_STREAM

if TYPE_CHECKING:
    from seamguard.twin.sim import Twin


def observe(twin: Twin, t: float, k: int, fx: Effects) -> list[tuple[int, TelemetryBatch]] | None:
    """Telemetry for the policy: the whole fleet in ``full`` mode; in ``windows`` mode the open
    cells (None between windows: the policy is not called)."""
    if not twin.windowed:
        cells = np.zeros(1, np.int64)
    elif twin.watching or twin.held.any():
        open_cells = [twin.plan.cells[fid] for fid in twin.watching]
        open_cells.append(np.flatnonzero(twin.held))
        cells = np.unique(np.concatenate(open_cells)).astype(np.int64)
    else:
        return None
    snap = snapshot(twin, t, fx)
    rng = np.random.default_rng([twin.world.seed, NOISE_STREAM, k])
    out = []
    for cell in cells.tolist():
        nodes = twin.cell_nodes[cell]
        scope = twin.emitter.scope(cell, nodes)
        present = np.zeros(len(twin.jobs), bool)
        owners = twin.fleet.node_job[nodes]
        present[owners[owners >= 0]] = True
        out.append(
            (
                cell,
                twin.emitter.emit(
                    snap, scope, present if twin.windowed else np.ones(len(twin.jobs), bool), rng
                ),
            )
        )
        twin.observed_node_s += nodes.size * twin.world.tick_s
    return out


def settle(twin: Twin, observed: list[tuple[int, TelemetryBatch]]) -> None:
    """A cell stays open while the policy holds an in-service node there in a non-healthy state."""
    in_service = ~twin.fleet.drained & ~twin.fleet.in_repair
    for cell, _ in observed:
        nodes = twin.policy.unsettled_nodes(cell)
        twin.held[cell] = bool(in_service[nodes].any()) if nodes.size else False


def snapshot(twin: Twin, t: float, fx: Effects) -> Snapshot:
    """The state the emitter renders: per-rank and per-job step times, checkpoint ages, storage
    streams, heartbeats and the XIDs of the last tick."""
    busy = twin.plant.load > 0
    rank_step = np.full(twin.n_gpus, np.nan)
    job_step = np.full(len(twin.jobs), np.nan)
    job_ckpt = np.full(len(twin.jobs), np.nan)
    job_since = np.full(len(twin.jobs), np.nan)
    job_failures = np.full(len(twin.jobs), np.nan)
    streams = np.zeros(twin.topology.count(EntityKind.STORAGE))
    slow = twin.input_slow
    for j in twin.jobs:
        if isinstance(j, TrainingJob):
            for sto in (j.io_storage, j.persisting(t)):
                if sto >= 0:
                    streams[sto] += 1
            if j.phase is Phase.RUNNING and j.nodes.size:
                gpus = twin.gpus_of(j.nodes)
                rank_step[gpus] = j.spec.step_s * twin.plant.rank_factor[gpus]
                cs = j.spec.comm_share
                job_step[j.index] = j.spec.step_s * (
                    (1 - cs) * rank_step[gpus].max() / j.spec.step_s
                    + cs * float(twin.plant.comm[j.nodes].max())
                )
                # Waiting for input stretches every rank's step alike (no straggler among them).
                rank_step[gpus] *= slow[j.index]
                job_step[j.index] *= slow[j.index]
            if np.isfinite(j.last_save_s):
                job_ckpt[j.index] = j.last_save_s
            if j.phase in (Phase.RUNNING, Phase.SAVING):
                job_since[j.index] = j.durable_age(t)
                job_failures[j.index] = j.failures  # the launcher's count, read once it runs again
        elif j.phase is Phase.RUNNING:
            up = j.slot_node[(j.slot_node >= 0) & (j.slot_ready <= t)]
            if up.size:
                gpus = twin.gpus_of(up)
                # Inference servers export per-GPU iteration latency too (vLLM, Triton).
                rank_step[gpus] = j.spec.step_s * twin.plant.rank_factor[gpus] * slow[j.index]
                job_step[j.index] = j.spec.step_s * float(twin.plant.rank_factor[gpus].mean()) * slow[j.index]
    hb = np.where(twin.plant.node_down, t - twin.node_down_since, np.nan)
    recent = [(ts, g, c) for ts, g, c in twin.xids if t - twin.world.tick_s < ts <= t]
    twin.xids = [x for x in twin.xids if x[0] > t - twin.world.tick_s]
    return Snapshot(
        t=t, busy=busy, rank_step_s=rank_step, offline=twin.fleet.in_repair.copy(), silent=fx.node_silent,
        heartbeat_age=hb, storage_streams=streams, job_step_s=job_step, job_checkpoint_s=job_ckpt, job_since_s=job_since,
        job_failures=job_failures,
        xid_gpu=np.array([x[1] for x in recent], np.int64), xid_code=np.array([x[2] for x in recent], np.int64),
        xid_t=np.array([x[0] for x in recent]),
    )  # fmt: skip
