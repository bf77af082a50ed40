"""The labelled fleet's constants and closed-form fault curves (``labelled.SyntheticFleet`` uses them).

Baseline plant and workload values are what every detector is calibrated against; fault curves
are evaluated at sample timestamps and counters are closed-form integrals of a fault's event
rate, so a tick never depends on the ticks before it. Observation noise, scrape phases and the
fault effects the twin shares (a PCIe downtrain, a failed cold plate, a slow GPU, a starved
input pipeline) are imported from ``twin.telemetry``, ``twin.effects`` and ``twin.physics``: one
value, two consumers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from seamguard.model.inventory import JobRecord
from seamguard.model.topology import Topology
from seamguard.twin.effects import INPUT_SLOWDOWN, NVLINK_FAULT_PER_H, input_jobs
from seamguard.twin.faults import Fault, HardEffect
from seamguard.twin.physics.storage import STARVE_READ_MS, STARVE_WRITE_RISE
from seamguard.twin.telemetry import LINK_DOWN_BURST

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY_S = 86400.0
# Baseline plant and workload (the "normal" every detector is calibrated against).
SUPPLY_C = 30.0
RETURN_DELTA_C = 10.0
FLOW_LPM = 450.0
PRESSURE_KPA = 160.0
INLET_OVER_SUPPLY_C = 3.0
DIURNAL_AMP_C = 0.75
GPU_OVER_INLET_BUSY_C = 35.0
GPU_OVER_INLET_IDLE_C = 15.0
GPU_OFFSET_SD_C = 1.5
MEM_OVER_GPU_C = 5.0
SM_CLOCK_MHZ = 1980.0
POWER_BUSY_W = 650.0
POWER_IDLE_W = 90.0
UTIL_BUSY_PCT = 97.0
NODE_OVERHEAD_KW = 1.5
P_POWER_CAP = 0.02  # per busy GPU and tick: benign sw_power_cap bit (0x4)
P_SYNC_BOOST = 0.05  # benign sync_boost bit (0x10)
SBE_PER_H = 0.2
NVLINK_PER_H = 0.02
PCIE_PER_H = 0.05
LINK_LATENCY_US = 2.0
LINK_LATENCY_NOISE = 0.02
RETRANSMITS_PER_S = 0.5
LINK_ERRORS_PER_S = 0.001
SWITCH_BUFFER_PCT = 30.0
WRITE_MS, READ_MS, THROUGHPUT_GBPS = 25.0, 12.0, 40.0
STORAGE_NOISE = 0.05  # p99 latencies
THROUGHPUT_NOISE = 0.02  # aggregate throughput is smoother than a tail latency
STEP_S = 2.0
SPEED_SD, SPEED_CLIP = 0.015, 0.04
CHECKPOINT_S = 30.0
CHECKPOINT_LATENCY_EXP = 0.6  # checkpoint duration ~ write latency ** this
CHECKPOINT_NOISE = 0.02
CHECKPOINT_EVERY_S = 1800.0  # each job saves on its own 30-minute timer (a per-job phase)
# Fault physics.
FLOW_LOSS = 0.45  # cdu_flow_loss: flow and pressure fall to 55% at severity 1
FLOW_LOSS_SUPPLY_RISE_C = 3.0  # cdu_flow_loss: the return runs warmer, so does the supply
INLET_RISE_C = 10.0
PLATE_RISE_C = 10.0  # cold plates lose flow too: GPUs heat by inlet rise + this
THERMAL_LAG_S = 90.0
SW_THERMAL_C, HW_THERMAL_C = 87.0, 89.0
THERMAL_CLOCK_DROP_PER_C = 0.04
HBM_SBE_START_PER_H, HBM_SBE_END_PER_H = 1.0, 3000.0
LINK_RETRANSMITS_END_PER_S = 500.0
LINK_ERRORS_START_PER_S = 0.005  # grows x1000 like the retransmits
LINK_ERRORS_RAMP_SHARE = 0.5  # retransmits/errors reach their peak at this share of the ramp
LINK_LATENCY_RISE = 2.0  # latency x(1 + this * p^2): x3 at the end
LINK_SLOWDOWN_FROM = 1.5  # the job starts to slow once latency passes this factor
LINK_JOB_GAIN = 0.5
PCIE_REPLAY_PER_MIN = 50.0
WRITE_TAIL_MS, READ_TAIL_MS, THROUGHPUT_LOSS = 3000.0, 500.0, 0.5
WRITE_IMPACT_MS = 250.0
HW_THERMAL_SLOWDOWN = 0.25
STATIC_STREAM = 2**32 - 1

GPU_SIGNALS = (
    "gpu.temp_c", "gpu.mem_temp_c", "gpu.sm_clock_mhz", "gpu.power_w", "gpu.util_pct", "gpu.throttle_reasons",
    "gpu.ecc_sbe_total", "gpu.ecc_dbe_total", "gpu.nvlink_errors_total", "gpu.pcie_replay_total",
    "gpu.row_remap_pending",
)  # fmt: skip
# Catalog signals the synthetic fleet does not emit: DCGM fields that real exporters give (read by
# sources/dcgm.py) but no synthetic fault moves. The hbm_ecc fault shows through the ECC counters,
# row_remap_pending and XID 48; the remap counters and profiling ratios would only add noise to the
# labelled suite. It has no MIG instances either.
NOT_SIMULATED = frozenset({
    "gpu.row_remap_failure", "gpu.remapped_rows_uncorrectable_total", "gpu.remapped_rows_correctable_total",
    "gpu.mem_clock_mhz", "gpu.fb_used_mib", "gpu.fb_free_mib", "gpu.gr_engine_active", "gpu.tensor_active",
    "gpu.dram_active", "gpu.pcie_tx_bytes_per_s", "gpu.pcie_rx_bytes_per_s",
    "mig.fb_used_mib", "mig.fb_free_mib", "mig.gr_engine_active", "mig.tensor_active", "mig.dram_active",
})  # fmt: skip
GPU_COUNTERS = ("gpu.ecc_sbe_total", "gpu.ecc_dbe_total", "gpu.nvlink_errors_total", "gpu.pcie_replay_total")
RESET_COUNTERS = ("gpu.ecc_sbe_total", "gpu.nvlink_errors_total", "gpu.pcie_replay_total")
COUNTER_FAULTS: dict[str, tuple[str, ...]] = {  # which fault kinds add events to which counter
    "gpu.ecc_sbe_total": ("hbm_ecc", "sram_ecc"),
    "gpu.ecc_dbe_total": ("hbm_ecc",),
    "gpu.nvlink_errors_total": ("gpu_hard",),
    "gpu.pcie_replay_total": ("pcie_downtrain", "gpu_hard"),
    "link.retransmits_total": ("link_gray", "link_down"),
    "link.errors_total": ("link_gray", "link_down"),
}


CONGESTION_LATENCY_RISE = 1.5  # switch_congestion: latency x(1 + this * severity), the twin's default
PSU_LIMIT_SHARE = 0.5  # psu_loss: the rack's power limit falls to 1 - this x severity of its full draw
HW_POWER_BRAKE = 0x80
XID_AT_HARD = {"hbm_ecc": 48, "sram_ecc": 95, "gpu_hard": 79, "gsp_error": 119, "thermal_interface": 79}


def progress(f: Fault, times: FloatArray) -> FloatArray:
    """0 before onset, rising linearly to 1 over the ramp (a step when there is none)."""
    if f.ramp <= 0:
        return (times >= f.onset).astype(np.float64)
    return np.asarray(np.clip((times - f.onset) / f.ramp, 0.0, 1.0), dtype=np.float64)


def gray(f: Fault, times: FloatArray) -> FloatArray:
    """``progress`` while the gray phase lasts: zero once the fault ends or breaks hard."""
    return np.where(times < min(f.end, f.hard_at), progress(f, times), 0.0)


def write_growth(f: Fault) -> float:
    return 1 + (WRITE_TAIL_MS / WRITE_MS - 1) * f.severity


def _escalating(r0: float, growth: float, rise: float, tau: FloatArray, end_rate: float) -> FloatArray:
    """Events by ``tau`` of a rate growing exponentially from r0 by ``growth`` over ``rise``, then
    flat at ``end_rate`` (r0 x growth, passed as computed so the counts stay bit-for-bit stable)."""
    if rise <= 0:
        return end_rate * tau
    k = math.log(growth) / rise
    inside = np.minimum(tau, rise)
    return np.asarray(r0 * np.expm1(k * inside) / k + end_rate * np.maximum(tau - rise, 0.0))


def _linear(rate: float, ramp: float, tau: FloatArray) -> FloatArray:
    """Events by ``tau`` of a rate rising linearly from 0 to ``rate`` over ``ramp``, then flat."""
    if ramp <= 0:
        return rate * tau
    inside = np.minimum(tau, ramp)
    return np.asarray(rate * inside * inside / (2 * ramp) + rate * np.maximum(tau - ramp, 0.0))


def fault_count(name: str, f: Fault, times: FloatArray) -> FloatArray:
    """Extra events a fault has added to counter ``name`` by ``times`` (closed-form integrals)."""
    tau = np.maximum(np.minimum(times, f.end) - f.onset, 0.0)
    s = f.severity
    if f.kind in ("hbm_ecc", "sram_ecc"):
        if name == "gpu.ecc_sbe_total":
            r0 = HBM_SBE_START_PER_H / 3600
            r1 = max(HBM_SBE_END_PER_H * s, 2 * HBM_SBE_START_PER_H) / 3600
            return _escalating(r0, r1 / r0, f.ramp, tau, r1)
        if name == "gpu.ecc_dbe_total" and f.hard:
            return (tau >= f.ramp).astype(np.float64) * (times >= f.onset)
    if name == "gpu.pcie_replay_total" and f.kind == "pcie_downtrain":
        return PCIE_REPLAY_PER_MIN / 60 * s * tau
    if f.kind == "gpu_hard" and f.ramp > 0:  # replays and NVLink errors rise until it leaves the bus
        if name == "gpu.pcie_replay_total":
            return _linear(PCIE_REPLAY_PER_MIN / 60 * s, f.ramp, tau)
        if name == "gpu.nvlink_errors_total":
            return _linear(NVLINK_FAULT_PER_H / 3600 * s, f.ramp, tau)
    if f.kind in ("link_gray", "link_down") and name in ("link.retransmits_total", "link.errors_total"):
        burst = np.where(times >= f.hard_at, LINK_DOWN_BURST, 0.0) if f.hard else 0.0
        if f.kind == "link_down":
            return np.asarray(np.where(times >= f.onset, LINK_DOWN_BURST, 0.0))
        # Retransmits and symbol errors escalate over the first half of the ramp: a marginal
        # link is busy recovering well before the lost bandwidth shows up as latency.
        r0 = RETRANSMITS_PER_S if name == "link.retransmits_total" else LINK_ERRORS_START_PER_S
        growth = max(LINK_RETRANSMITS_END_PER_S / RETRANSMITS_PER_S * s, 2.0)
        return _escalating(r0, growth, f.ramp * LINK_ERRORS_RAMP_SHARE, tau, r0 * growth) + burst
    return np.zeros_like(times)


def stopped_jobs(hard: dict[HardEffect, list[Fault]], t: float, nj: int) -> tuple[BoolArray, BoolArray]:
    """Jobs a software crash has killed (their GPUs idle) and jobs a hung collective froze."""
    crashed, hung = np.zeros(nj, dtype=bool), np.zeros(nj, dtype=bool)
    for f in hard.get(HardEffect.JOB_CRASH, []):
        crashed[f.local] |= t >= f.hard_at
    for f in hard.get(HardEffect.JOB_HANG, []):
        hung[f.local] |= t >= f.hard_at
    return crashed, hung | crashed


def power_brake(
    topology: Topology,
    faults: Sequence[Fault],
    busy: BoolArray,
    ts_rack: FloatArray,
    clock: FloatArray,
    step: FloatArray,
    bits: IntArray,
) -> None:
    """psu_loss: a rack whose busy share exceeds its reduced power limit brakes its busy GPUs."""
    for f in faults:
        if not f.onset <= ts_rack[f.local] < f.end:
            continue
        gpus = np.flatnonzero(topology.node_rack[topology.gpu_node] == f.local)
        load = float(busy[gpus].mean()) if gpus.size else 0.0
        limit = max(1.0 - PSU_LIMIT_SHARE * f.severity, 0.1)
        if load > limit:
            braked = gpus[busy[gpus]]
            clock[braked] *= limit / load
            step[braked] /= limit / load
            bits[braked] |= HW_POWER_BRAKE


def storage_factors(
    by_kind: dict[str, list[Fault]], ts_sto: FloatArray, ns: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per backend, the (write latency, read latency, throughput) multipliers of its faults at its
    sample times: storage_tail's write tail explodes and its throughput falls; dataset_starve's
    read tail climbs while writes barely move and the backend keeps its full bandwidth."""
    wfac, rfac, tfac = np.ones(ns), np.ones(ns), np.ones(ns)
    for f in by_kind.get("storage_tail", []):
        p = float(gray(f, ts_sto[f.local : f.local + 1])[0])
        wfac[f.local] *= write_growth(f) ** p
        rfac[f.local] *= (1 + (READ_TAIL_MS / READ_MS - 1) * f.severity) ** p
        tfac[f.local] *= max(1 - THROUGHPUT_LOSS * f.severity * p, 0.05)
    for f in by_kind.get("dataset_starve", []):
        p = float(gray(f, ts_sto[f.local : f.local + 1])[0])
        wfac[f.local] *= 1 + STARVE_WRITE_RISE * f.severity * p
        rfac[f.local] *= (1 + (STARVE_READ_MS / READ_MS - 1) * f.severity) ** p
    return wfac, rfac, tfac


def input_slowdown(
    by_kind: dict[str, list[Fault]], gpu_job: IntArray, job_storage: IntArray, ts_gpu: FloatArray
) -> FloatArray:
    """Per GPU, how much longer its job's steps take waiting for input (1.0: fed), as the twin's
    ``Effects.input_factor``: every rank of a starved job alike, at the GPU's sample time."""
    out = np.ones(gpu_job.size)
    for kind, unit in INPUT_SLOWDOWN.items():
        for f in by_kind.get(kind, []):
            hit = np.flatnonzero(np.isin(gpu_job, input_jobs(f, job_storage)))
            out[hit] *= 1 + unit * f.severity * gray(f, ts_gpu[hit])
    return out


def waiting_power(busy_w: FloatArray, duty: FloatArray) -> FloatArray:
    """A GPU that computes ``duty`` of each step and waits for input the rest draws idle power while
    it waits (the twin's ``power.gpu_power`` with load = duty)."""
    return np.where(duty < 1.0, POWER_IDLE_W + (busy_w - POWER_IDLE_W) * duty, busy_w)


def storage_of(topology: Topology, job: JobRecord, nodes: IntArray, sto_ix: dict[str, int]) -> int:
    """A job checkpoints to its own storage if it names one, else to its nodes' (most common)."""
    if job.storage:
        return sto_ix.get(job.storage, -1)
    st = topology.node_storage[nodes]
    st = st[st >= 0]
    return int(np.bincount(st).argmax()) if st.size else -1
