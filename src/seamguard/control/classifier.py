"""The five-state classifier (plus failed and unknown), vectorised over the whole fleet.

Rules, in order of precedence (docs/states.md explains each):
hard evidence -> failed; missing data -> unknown (out-of-service states are held instead);
GFS/PRS above the quarantine threshold -> quarantine; economic harm -> harmful;
GFS above the degraded threshold -> degraded, or recovery_unsafe when recovery-path evidence
dominates. Hysteresis: a state is entered above one threshold and left below a lower one.
Escalation is immediate; de-escalation waits until the lower state has been called for without
a break for a minimum dwell (longer while an entity flaps): one quiet tick of a noisy signal
never clears an entity that the next tick would flag again. Repeat offenders enter at lower
thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import ClassifierConfig, EconomicsConfig
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import KIND_CODE, KINDS, Topology
from seamguard.model.world import WorldChange, carry

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

H, D, RU, Q, HA, F, U = (
    int(s)
    for s in (
        State.HEALTHY,
        State.DEGRADED,
        State.RECOVERY_UNSAFE,
        State.QUARANTINE,
        State.HARMFUL,
        State.FAILED,
        State.UNKNOWN,
    )
)
# Severity for escalation/de-escalation; unknown sits below everything.
SEVERITY = np.zeros(len(State), dtype=np.int64)
SEVERITY[[H, D, RU, HA, Q, F, U]] = [0, 1, 2, 3, 4, 5, -1]

_ALL = frozenset(State)
ALLOWED_STATES: dict[EntityKind, frozenset[State]] = {
    EntityKind.GPU: _ALL,
    EntityKind.MIG: frozenset(
        {State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.HARMFUL, State.FAILED, State.UNKNOWN}
    ),
    EntityKind.NODE: frozenset(
        {State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.FAILED, State.UNKNOWN}
    ),
    EntityKind.LINK: frozenset(
        {State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.FAILED, State.UNKNOWN}
    ),
    EntityKind.SWITCH: frozenset({State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.UNKNOWN}),
    EntityKind.RACK: frozenset({State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.UNKNOWN}),
    EntityKind.CDU: frozenset({State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.UNKNOWN}),
    EntityKind.STORAGE: frozenset(
        {State.HEALTHY, State.DEGRADED, State.RECOVERY_UNSAFE, State.FAILED, State.UNKNOWN}
    ),
    EntityKind.JOB: frozenset({State.HEALTHY, State.DEGRADED, State.UNKNOWN}),
    # serving (``model.serving``): judged on their own signals; what their ends' nodes are is added
    # where routing reads them (``serving.view``). Pools carry no signal of their own.
    EntityKind.REPLICA: frozenset({State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.UNKNOWN}),
    EntityKind.PATH: frozenset({State.HEALTHY, State.DEGRADED, State.QUARANTINE, State.UNKNOWN}),
}


def allowed_matrix() -> npt.NDArray[np.bool_]:
    """(kind code, state) -> allowed. Kinds absent from ALLOWED_STATES are not classified."""
    out = np.zeros((len(KINDS), len(State)), dtype=bool)
    for k, kind in enumerate(KINDS):
        for s in ALLOWED_STATES.get(kind, frozenset()):
            out[k, int(s)] = True
    return out


@dataclass(frozen=True)
class ClassifierInputs:
    gfs: FloatArray
    gfs_recovery: FloatArray
    prs: FloatArray
    harm_ratio: FloatArray  # NaN: not judged (a GPU that runs no job)
    hard_fail: BoolArray
    floor: IntArray  # least state forced this tick (-1: none)
    fresh: BoolArray


@dataclass(frozen=True)
class Changes:
    index: IntArray
    before: IntArray
    after: IntArray
    reported: BoolArray  # False for the silent first discovery (unknown -> healthy)
    cleared_for: FloatArray  # de-escalations: how long the lower state had been called for; else 0


class Classifier:
    def __init__(
        self, kind_code: npt.NDArray[np.int8], config: ClassifierConfig, economics: EconomicsConfig
    ) -> None:
        n = kind_code.size
        self.config = config
        self.economics = economics
        self.allowed = allowed_matrix()[kind_code.astype(np.int64)]  # (n, n_states)
        self.classified: BoolArray = np.asarray(self.allowed.any(axis=1), dtype=bool)
        self.state = np.full(n, U, dtype=np.int64)
        self.entered = np.full(n, -np.inf)
        # Since when the target has stayed below the current state without a break (inf: it has not).
        self.clear_since = np.full(n, np.inf)
        self.seen = np.zeros(n, dtype=bool)
        self.offences = np.zeros(n)
        self.flaps = np.zeros(n)
        self.last_now = -np.inf

    def carry_over(self, change: WorldChange) -> None:
        """Per entity (global index): states, dwell and flap counts kept for entities that stay."""
        fwd = change.entities
        self.allowed = allowed_matrix()[change.new.kind_code.astype(np.int64)]
        self.classified = np.asarray(self.allowed.any(axis=1), dtype=bool)
        self.state = carry(self.state, fwd, U)
        self.entered = carry(self.entered, fwd, -np.inf)
        self.clear_since = carry(self.clear_since, fwd, np.inf)
        self.seen = carry(self.seen, fwd, False)
        self.offences = carry(self.offences, fwd, 0.0)
        self.flaps = carry(self.flaps, fwd, 0.0)

    def thresholds(self) -> tuple[FloatArray, FloatArray]:
        """Effective (degraded_enter, quarantine_enter) per entity after repeat-offender escalation."""
        c = self.config
        shift = c.repeat_threshold_step * np.minimum(self.offences, c.repeat_max_offences)
        return c.degraded_enter - shift, c.quarantine_enter - shift

    def target(self, now: float, x: ClassifierInputs) -> IntArray:
        """Next state per entity; advances the clear timers, so call it once per tick (``step``)."""
        c, e = self.config, self.economics
        cur = self.state
        d_in, q_in = self.thresholds()
        was_bad = np.isin(cur, (D, RU, Q, HA))
        degraded = x.gfs >= np.where(was_bad, c.degraded_exit, d_in)
        in_q = cur == Q
        quarantine = (x.gfs >= np.where(in_q, c.quarantine_exit, q_in)) | (
            degraded & (x.prs >= np.where(in_q, 0.8 * c.prs_quarantine, c.prs_quarantine))
        )
        recovery = x.gfs_recovery >= c.recovery_share * x.gfs
        harmful = x.harm_ratio >= np.where(cur == HA, e.harmful_exit_ratio, e.harmful_enter_ratio)
        # A harmful part that runs no job has no pace to be judged by (NaN): taken out of its job,
        # it is no healthier. It stays harmful (out of synchronous work) for ``diagnose_s``, or the
        # next job's restart picks it as a spare, finds it slow and swaps it out again; a repeat
        # offender (found harmful again once back: slow by nature) for a diagnosis per offence, up
        # to ``repeat_max_offences`` (held-out seed 16017: one slow GPU's rank swapped three times
        # in eight hours, each a 12-minute restart of its 64-GPU job).
        held_s = e.diagnose_s * np.clip(self.offences, 1.0, c.repeat_max_offences)
        harmful |= (cur == HA) & np.isnan(x.harm_ratio) & (now - self.entered < held_s)
        al = self.allowed

        tgt = np.full(cur.size, H, dtype=np.int64)
        tgt[degraded & al[:, D]] = D
        tgt[degraded & recovery & al[:, RU]] = RU
        tgt[harmful & al[:, HA]] = HA
        tgt[quarantine & al[:, Q]] = Q
        quarantine_elsewhere = quarantine & ~al[:, Q] & degraded & ~(recovery & al[:, RU])
        tgt[quarantine_elsewhere & al[:, D]] = D

        has_floor = x.floor >= 0
        floor = np.where(has_floor, x.floor, H)
        floor_ok = has_floor & al[np.arange(cur.size), floor] & (SEVERITY[floor] > SEVERITY[tgt])
        tgt[floor_ok] = floor[floor_ok]
        tgt[x.hard_fail & al[:, F]] = F

        in_f = cur == F
        holding = in_f & ~x.hard_fail & (now - self.entered < c.failed_hold_s)
        tgt[holding] = F
        released = in_f & ~x.hard_fail & ~holding & (SEVERITY[tgt] < SEVERITY[D])
        tgt[released & al[:, D]] = D

        stale = ~x.fresh & ~x.hard_fail & ~has_floor
        tgt[stale & np.isin(cur, (H, D, U))] = U
        hold = stale & np.isin(cur, (RU, Q, HA, F))
        tgt[hold] = cur[hold]

        flapping = self.flaps > c.flap_max_transitions
        dwell = np.where(flapping, c.min_dwell_s * c.flap_dwell_multiplier, c.min_dwell_s)
        de_escalation = (SEVERITY[tgt] < SEVERITY[cur]) & (tgt != U) & (cur != U)
        self.clear_since = np.where(de_escalation, np.minimum(self.clear_since, now), np.inf)
        # failed already waited out failed_hold_s without hard evidence: its release is not held again
        blocked = de_escalation & ~released & (now - self.clear_since < dwell)
        tgt[blocked] = cur[blocked]
        tgt[~self.classified] = U
        return tgt

    def reset(self, gidx: int, now: float) -> None:
        """Back to healthy after a repair; offences are kept (repeat offenders stay suspect)."""
        self.state[gidx] = H
        self.entered[gidx] = now
        self.clear_since[gidx] = np.inf
        self.seen[gidx] = True

    def step(self, now: float, x: ClassifierInputs) -> Changes:
        c = self.config
        if np.isfinite(self.last_now):
            dt = max(now - self.last_now, 0.0)
            self.offences *= 0.5 ** (dt / c.repeat_halflife_s)
            self.flaps *= np.exp(-dt / c.flap_window_s)
        self.last_now = now
        tgt = self.target(now, x)
        idx = np.flatnonzero(tgt != self.state)
        before = self.state[idx].copy()
        after = tgt[idx]
        reported = ~((before == U) & ~self.seen[idx] & (after == H))
        offence = (SEVERITY[before] <= 0) & (SEVERITY[after] >= 1)
        self.offences[idx[offence]] += 1.0
        self.flaps[idx[reported]] += 1.0
        since = self.clear_since[idx]
        cleared_for = np.where(np.isfinite(since), now - since, 0.0)
        self.state[idx] = after
        self.entered[idx] = now
        self.clear_since[idx] = np.inf
        self.seen[idx[after != U]] = True
        return Changes(index=idx, before=before, after=after, reported=reported, cleared_for=cleared_for)


def newly_failed_nodes(topology: Topology, changes: Changes) -> npt.NDArray[np.int64]:
    """Nodes (local indices) with a part (the node or a GPU: ``COUNTED_KINDS``) newly failed:
    one failure each."""
    hit = (changes.after == int(State.FAILED)) & (changes.before != int(State.FAILED))
    if not hit.any():
        return np.zeros(0, dtype=np.int64)
    gidx = changes.index[hit]
    local = topology.local[gidx]
    kinds = topology.kind_code[gidx]
    node = np.full(gidx.size, -1, dtype=np.int64)
    node[kinds == KIND_CODE[EntityKind.NODE]] = local[kinds == KIND_CODE[EntityKind.NODE]]
    gpu = kinds == KIND_CODE[EntityKind.GPU]
    node[gpu] = topology.gpu_node[local[gpu]]
    return np.unique(node[node >= 0])


def forced_out(floor: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Entities hard evidence holds at quarantine or worse this tick (an XID that asks for a reset)."""
    held: npt.NDArray[np.bool_] = (floor >= 0) & (
        SEVERITY[np.maximum(floor, 0)] >= SEVERITY[int(State.QUARANTINE)]
    )
    return held
