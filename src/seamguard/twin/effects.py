"""What the active faults do to the plant at one instant, as per-entity multipliers and offsets.

One function per step turns the (few) active faults into arrays the physics reads. A fault
shows its gray phase from onset until it ends (facility faults), breaks hard, or is repaired;
the hard failure itself is an event (the twin's hard events), not an effect. Kinds with no gray
phase (``HARD_ONLY``) act through that event alone; tests check that every kind of the one table
(``twin.faults.FAULT_KINDS``) is either here or hard-only.

Two kinds slow a whole job with no part at fault (``INPUT_SLOWDOWN``): ``input_stall`` (the
job's own data loader falls behind) and ``dataset_starve`` (the backend its data is read from
saturates). Their effect is per job (``input_factor``): every rank waits alike, so the twin's
job model stretches the job's steps and lowers its GPUs' duty, and no GPU, link or switch signal
of the job's parts moves but the ones an idle-waiting GPU shows (utilisation, power, cooler).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.twin.faults import Fault
from seamguard.twin.physics import fabric, memory, storage
from seamguard.twin.scenario import Physics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

HW_THERMAL_JUMP_C = 15.0
HW_THERMAL_CLOCK = 0.7
PCIE_SLOWDOWN = 0.3
FAILING_GPU_SLOWDOWN = 0.1  # a GPU on its way off the bus slows before it goes
SLOW_GPU = 0.08
SUPPLY_RISE_C = 10.0
NVLINK_FAULT_PER_H = 30.0
ERROR_SHARE = 0.005  # symbol errors per retransmit on a marginal link
SWITCH_BUFFER_RISE_PCT = 60.0
KV_PATH_BUFFER_RISE_PCT = 15.0  # kv_path_degraded: the leaf's uplink queues fill a little
# Input-bound kinds: the job's steps take x(1 + this x severity x progress). input_stall at 1.0 is a
# loader delivering two thirds of what the GPUs consume (+50%); a saturated dataset read path is
# partly hidden by the loaders' prefetch buffers, so the same severity costs a little less (+40%).
INPUT_STALL_SLOWDOWN = 0.5
DATASET_STARVE_SLOWDOWN = 0.4
INPUT_SLOWDOWN: dict[str, float] = {
    "input_stall": INPUT_STALL_SLOWDOWN,
    "dataset_starve": DATASET_STARVE_SLOWDOWN,
}
# Kinds whose whole effect is their hard failure (or, for sdc, the corruption found later).
HARD_ONLY: frozenset[str] = frozenset(
    {"gsp_error", "link_down", "node_crash", "node_reboot", "software_crash", "job_hang", "sdc"}
)


@dataclass
class Effects:
    cdu_lost: FloatArray
    cdu_supply_extra: FloatArray
    rack_limit_factor: FloatArray
    gpu_heat_c: FloatArray
    gpu_clock_cap: FloatArray
    gpu_slow: FloatArray
    gpu_hw_slowdown: BoolArray
    gpu_sbe_per_h: FloatArray
    gpu_pcie_per_h: FloatArray
    gpu_nvlink_per_h: FloatArray
    gpu_remap: BoolArray
    link_latency: FloatArray
    link_retransmit_mult: FloatArray
    link_errors_per_s: FloatArray
    switch_latency: FloatArray
    switch_buffer_pct: FloatArray
    storage_write: FloatArray
    storage_read: FloatArray
    storage_throughput: FloatArray
    node_silent: BoolArray
    gpu_counter_reset: BoolArray  # the plant zeroes these GPUs' error counters once
    job_input_slow: FloatArray  # per job: its steps x this, its own input pipeline behind (input_stall)
    storage_read_slow: FloatArray  # per backend: its readers' steps x this (dataset_starve)
    leaf_kv_degraded: (
        FloatArray  # per leaf: severity x progress of a kv_path_degraded (twin.serving reads it)
    )

    @classmethod
    def none(
        cls, n_cdu: int, n_rack: int, n_gpu: int, n_node: int, n_leaf: int, n_sto: int, n_job: int
    ) -> Effects:
        # No clock cap without a fault: a GPU cooler than its reference boosts above nominal, as the
        # fault-free comparison clock does, so a healthy GPU never books slowdown.
        return cls(
            np.zeros(n_cdu), np.zeros(n_cdu), np.ones(n_rack), np.zeros(n_gpu), np.full(n_gpu, np.inf), np.ones(n_gpu),
            np.zeros(n_gpu, bool), np.zeros(n_gpu), np.zeros(n_gpu), np.zeros(n_gpu), np.zeros(n_gpu, bool),
            np.ones(n_node), np.ones(n_node), np.zeros(n_node), np.ones(n_leaf), np.zeros(n_leaf), np.ones(n_sto),
            np.ones(n_sto), np.ones(n_sto), np.zeros(n_node, bool), np.zeros(n_gpu, bool), np.ones(n_job),
            np.ones(n_sto), np.zeros(n_leaf),
        )  # fmt: skip

    def input_factor(self, job_storage: IntArray) -> FloatArray:
        """Per job: how much longer its steps take waiting for input (1.0: fed). A job is fed by its
        own pipeline and by the backend it reads its data from (``job_storage``, -1: none), so
        both stalls stretch it; a stalled rank stalls all, which is why this is per job, not GPU."""
        backend = np.where(job_storage >= 0, self.storage_read_slow[np.maximum(job_storage, 0)], 1.0)
        return np.asarray(self.job_input_slow * backend, dtype=np.float64)


def input_slowdown(f: Fault, progress: float) -> float:
    """The step-time factor an input-bound fault (``INPUT_SLOWDOWN``) puts on the jobs it feeds."""
    return 1.0 + INPUT_SLOWDOWN[f.kind] * f.severity * progress


def input_jobs(f: Fault, job_storage: IntArray) -> IntArray:
    """The jobs an input-bound fault slows: input_stall its own job; dataset_starve every job
    whose data is on the backend (its storage; a checkpoint fallback is written, not read)."""
    if f.kind == "dataset_starve":
        return np.flatnonzero(job_storage == f.local).astype(np.int64)
    return np.array([f.local], dtype=np.int64)


def apply_faults(fx: Effects, faults: Iterable[Fault], t: float, physics: Physics) -> Effects:
    """Fill ``fx`` (fresh from ``Effects.none``) with the gray effects of ``faults`` at ``t``."""
    for f in faults:
        if not (f.onset <= t < min(f.end, f.hard_at)):
            continue
        p, s, i = f.progress(t), f.severity, f.local
        k = f.kind
        if k == "cdu_flow_loss":
            fx.cdu_lost[i] = min(fx.cdu_lost[i] + s * p, 0.95)
        elif k == "supply_temp_rise":
            fx.cdu_supply_extra[i] += SUPPLY_RISE_C * s * p
        elif k == "psu_loss":
            fx.rack_limit_factor[i] *= max(1.0 - 0.5 * s, 0.1)
        elif k in ("hbm_ecc", "sram_ecc"):
            fx.gpu_sbe_per_h[i] += memory.precursor_sbe_per_h(physics.memory, s, p)
            if k == "hbm_ecc" and p >= physics.memory.remap_at_progress:
                fx.gpu_remap[i] = True
        elif k == "gpu_hard":
            fx.gpu_pcie_per_h[i] += physics.memory.pcie_replay_fault_per_min * 60.0 * s * p
            fx.gpu_nvlink_per_h[i] += NVLINK_FAULT_PER_H * s * p
            fx.gpu_slow[i] *= 1.0 + FAILING_GPU_SLOWDOWN * s * p
        elif k == "thermal_interface":
            fx.gpu_heat_c[i] += HW_THERMAL_JUMP_C * s * p
        elif k == "hw_thermal":
            fx.gpu_heat_c[i] += HW_THERMAL_JUMP_C * s
            fx.gpu_clock_cap[i] = min(fx.gpu_clock_cap[i], 1.0 - (1.0 - HW_THERMAL_CLOCK) * min(s, 1.0))
            fx.gpu_hw_slowdown[i] = True
        elif k == "pcie_downtrain":
            fx.gpu_slow[i] *= 1.0 + PCIE_SLOWDOWN * s
            fx.gpu_pcie_per_h[i] += physics.memory.pcie_replay_fault_per_min * 60.0 * s
        elif k == "slow_gpu":
            fx.gpu_slow[i] *= 1.0 + SLOW_GPU * s
        elif k == "link_gray":
            fx.link_latency[i] *= fabric.gray_latency_factor(physics.fabric, s, p)
            mult = fabric.retransmit_multiplier(physics.fabric, s, p)
            fx.link_retransmit_mult[i] *= mult
            fx.link_errors_per_s[i] += physics.fabric.retransmits_per_s * mult * ERROR_SHARE
        elif k == "switch_congestion":
            fx.switch_latency[i] *= 1.0 + physics.fabric.congestion_latency_rise * s * p
            fx.switch_buffer_pct[i] += SWITCH_BUFFER_RISE_PCT * s * p
        elif k == "kv_path_degraded":
            fx.leaf_kv_degraded[i] += s * p
            fx.switch_buffer_pct[i] += KV_PATH_BUFFER_RISE_PCT * s * p
        elif k == "storage_tail":
            w, r, tput = storage.tail_factors(physics.storage, s, p)
            fx.storage_write[i] *= w
            fx.storage_read[i] *= r
            fx.storage_throughput[i] *= tput
        elif k == "dataset_starve":
            w, r = storage.starve_factors(physics.storage, s, p)
            fx.storage_write[i] *= w
            fx.storage_read[i] *= r
            fx.storage_read_slow[i] *= input_slowdown(f, p)
        elif k == "input_stall":
            fx.job_input_slow[i] *= input_slowdown(f, p)
        elif k == "exporter_silent":
            fx.node_silent[i] |= t < f.onset + f.ramp
        elif k == "counter_reset":
            fx.gpu_counter_reset[i] = True
    return fx
