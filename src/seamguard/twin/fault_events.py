"""Faults as they strike within a step: the hard failures due, and the first moment a gray fault
costs something (the impact a detection is measured against)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from seamguard.model.entities import EntityKind
from seamguard.twin.effects import INPUT_SLOWDOWN, input_jobs
from seamguard.twin.faults import Fault, HardEffect
from seamguard.twin.fleet import Actor
from seamguard.twin.jobs import Failure, JobEvent
from seamguard.twin.storage_env import LATENCY_SAVE_EXPONENT
from seamguard.twin.telemetry import LINK_DOWN_BURST

if TYPE_CHECKING:
    from seamguard.twin.sim import Twin

PACE_COST = 0.995  # below this pace a gray failure is costing something
HardEvent = tuple[float, str, int, JobEvent | None]  # (time, "node" or "job", its index, the job event)


def hard_events(twin: Twin, t0: float, t1: float) -> list[HardEvent]:
    """Hard failures in (t0, t1]: (time, what, node or job, job event) in time order."""
    out: list[HardEvent] = []
    ops = twin.world.scenario.operations
    for f in twin.active:
        if f.fid in twin.fired or not (t0 < f.hard_at <= t1):
            continue
        twin.fired.add(f.fid)
        eff = f.spec.hard
        if eff is HardEffect.GPU:
            out.append(gpu_dies(twin, f.hard_at, f.local, f.xid or 79))
        elif eff is HardEffect.NODE:
            twin.plant.node_down[f.local] = True
            twin.node_down_since[f.local] = f.hard_at
            twin.broken_since[f.local] = min(twin.broken_since[f.local], f.hard_at)
            out.append((f.hard_at, "node", f.local, JobEvent(f.hard_at, Failure.CRASH, host_lost=True)))
        elif eff is HardEffect.LINK:
            twin.plant.link_down[f.local] = True
            twin.plant.link_errors[f.local] += LINK_DOWN_BURST
            twin.plant.retransmits[f.local] += LINK_DOWN_BURST
            twin.broken_since[f.local] = min(twin.broken_since[f.local], f.hard_at)
            out.append((f.hard_at, "node", f.local, JobEvent(f.hard_at, Failure.CRASH)))
        elif eff in (HardEffect.JOB_CRASH, HardEffect.JOB_HANG):
            fail = Failure.HANG if eff is HardEffect.JOB_HANG else Failure.CRASH
            out.append((f.hard_at, "job", f.local, JobEvent(f.hard_at, fail)))
        elif eff is HardEffect.SDC:
            twin.sdc_due.append((f.onset + ops.sdc_detect_h * 3600.0, f))
    for f in twin.active:  # a reboot over: the host is back whole by itself
        if f.fid in twin.fired and f.fid not in twin.cleared and t0 < f.back_at <= t1:
            back_up(twin, f)
    for due, f in list(twin.sdc_due):
        if t0 < due <= t1:
            twin.sdc_due.remove((due, f))
            node = int(twin.topology.gpu_node[f.local])
            twin.fleet.drain(due, node, Actor.OPERATOR, False, "silent data corruption traced to this node")
            out.append((due, "node", node, JobEvent(due, Failure.SDC, since=f.onset)))
    out.sort(key=lambda e: e[0])
    return out


def back_up(twin: Twin, f: Fault) -> None:
    """A transient hard failure (``node_reboot``) ends: its host is up, nothing left to repair. A
    host a prolog check (or a policy) drained meanwhile comes back through its repair, which is
    the rest of the reboot (``Fault.repair_s``)."""
    if twin.fleet.drained[f.local] or twin.fleet.in_repair[f.local]:
        return
    twin.cleared.add(f.fid)
    twin.cleared_at.setdefault(f.fid, f.back_at)
    twin.plant.node_down[f.local] = False
    twin.node_down_since[f.local] = math.inf
    twin.broken_since[f.local] = math.inf


def gpu_dies(twin: Twin, t: float, gpu: int, xid: int) -> HardEvent:
    twin.plant.gpu_dead[gpu] = True
    if xid == 48:
        twin.plant.dbe[gpu] += 1.0
    twin.xids.append((t, gpu, xid))
    node = int(twin.topology.gpu_node[gpu])
    twin.broken_since[node] = min(twin.broken_since[node], t)
    return (t, "node", node, JobEvent(t, Failure.CRASH))


def track_impact(twin: Twin, t: float) -> None:
    """The first moment each gray fault costs something: a job it touches slows, or a save does."""
    for f in twin.active:
        if f.fid in twin.impact or f.benign or f.onset > t:
            continue
        if f.kind in INPUT_SLOWDOWN:  # no part is slow: the jobs it feeds are, while they run
            fed = input_jobs(f, twin.world.job_storage).tolist()
            if any(twin.is_running(j) and 1.0 / twin.input_slow[j] < PACE_COST for j in fed):
                twin.impact[f.fid] = t
            continue
        if f.spec.target is EntityKind.STORAGE:
            write = float(twin.plant.storage_write[f.local]) ** LATENCY_SAVE_EXPONENT
            if write / max(float(twin.plant.storage_throughput[f.local]), 1e-9) > 1.5:
                twin.impact[f.fid] = t
            continue
        nodes = twin.fault_nodes[f.fid]
        if nodes.size == 0:
            continue
        gpus = twin.fault_gpus[f.fid]
        slow = (twin.plant.rank_factor[gpus] / twin.plant.rank_factor_clean[gpus]).max()
        slow = max(slow, float(twin.plant.comm[nodes].max()))
        busy = bool(twin.plant.load[gpus].any())
        if busy and 1.0 / slow < PACE_COST:
            twin.impact[f.fid] = t
