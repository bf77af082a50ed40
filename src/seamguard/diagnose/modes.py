"""Which failure mode is costing a running job throughput now, where, how much, and what to do.

Each tick, per job (``diagnose.job_signals``), in order of what can be said most surely:

1. **hang**: its steps stopped arriving (longer than ``hang_after`` its usual step, and at least
   ``hang_min_s``) while it runs;
2. **checkpoint stall**: its last checkpoint took ``ckpt_slow`` times longer than its usual one;
3. when it runs ``min_slowdown`` slower than its own usual pace (or a few ranks hold it back):
   **straggler** (a few ranks over the median, none of its seams unwell), **thermal or power
   limit** (its GPUs throttled, or its racks, CDUs or PDUs unwell), **network** (its links or leaf
   switches unwell), **storage I/O limit** (its storage backend unwell), and **input stall** when
   every rank slows alike, its GPUs idle more, and nothing it depends on is unwell: the one mode
   that blames no part;
4. otherwise **healthy**, and **at risk** while a part it depends on is unwell but its pace is not
   hurt yet: the window before a gradual fault's impact, in which the planner already acts (an
   early checkpoint, admission restricted, the critical job moved). When the impact comes, the
   finding carries the lead time that window gave (``lead_time_s``), and the journal keeps it.

A job's usual pace, checkpoint time and GPU use are learnt from its own healthy ticks (an
exponential average with a long time constant, frozen while any mode is found, so a fault that
ramps is not learnt as the norm). Rules, not a learnt classifier: each says why in words an
operator can check, and the labelled suite (``bench/diagnose.py``) measures how often they are right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from seamguard.diagnose.job_signals import JobSignals


class Mode(StrEnum):
    HEALTHY = "healthy"
    HANG = "hang"
    CHECKPOINT_STALL = "checkpoint_stall"
    STRAGGLER = "straggler"
    THERMAL_POWER = "thermal_power"
    NETWORK = "network"
    STORAGE_IO = "storage_io"
    INPUT_STALL = "input_stall"


# What to do about each, for a person, and the action seamguard's planner takes for it.
MITIGATION: dict[Mode, tuple[str, str | None]] = {
    Mode.HANG: ("restart the job from its last checkpoint; if one node stopped answering, leave it out", "replace_rank"),
    Mode.CHECKPOINT_STALL: ("save to the fallback backend or to host memory first (tiered) until the backend recovers",
                            "switch_checkpoint_target"),
    Mode.STRAGGLER: ("move the slow ranks to spares at the job's next restart", "replace_rank"),
    Mode.THERMAL_POWER: ("checkpoint now; move the job out of the hot or power-limited domain, or call facilities",
                         "checkpoint_now"),
    Mode.NETWORK: ("route around the gray link or switch, or move the job off the leaf", "reroute"),
    Mode.STORAGE_IO: ("stage the data on another backend or local disk; admit no new readers there", "restrict_admission"),
    Mode.INPUT_STALL: ("no part is at fault: more data-loader workers, prefetching or faster preprocessing", None),
}  # fmt: skip


RISK_MITIGATION = (
    "not slowing it yet: seamguard's planner acts on the unwell parts now (its checkpoints come sooner "
    "as their hazard rises, no new synchronous work goes there, the job moves if tolerating costs more)"
)


@dataclass(frozen=True)
class DiagnoseConfig:
    min_slowdown: float = 0.08  # the job's pace this much under its usual before a mode is named
    hang_after: float = 10.0  # steps missing for this many usual step times...
    hang_min_s: float = 60.0  # ...and at least this long (a minute: three missed reports at 20 s)
    ckpt_slow: float = 2.0  # a checkpoint this many times its usual duration
    straggler_spread: float = 0.12  # slowest rank over the median
    straggler_share: float = 0.25  # at most this share of ranks slow: more is the whole job
    util_drop_pct: float = 10.0  # GPU use down this many points: ranks waiting for input
    read_slow: float = 2.0  # its storage's reads this many times slower than usual: an I/O limit
    learn_s: float = 3600.0  # time constant of the usual pace, checkpoint and use
    confirm_ticks: int = 2  # a change of mode is named once judged on this many ticks in a row
    busy_util_pct: float = 50.0  # a silent job's GPUs busier than this: spinning in a collective (hung)


@dataclass(frozen=True)
class Finding:
    job: str
    mode: Mode
    confidence: float
    entities: tuple[str, ...]  # what it points at (none for an input stall: no part is at fault)
    evidence: tuple[str, ...]
    since: float
    cost_gpu_h: float  # GPU-hours lost to it so far
    rate_gpu_h_per_h: float  # GPU-hours it costs per hour now
    mitigation: str
    action: str | None
    risk: tuple[str, ...] = ()  # while healthy: unwell parts it depends on, not hurting it yet
    risk_since: float = math.nan  # when they were first seen (the lead time's start)
    lead_time_s: float = math.nan  # a mode named after a risk: how long before its impact the risk was named
    held_back_gpu_s_per_s: float = math.nan  # healthy GPUs' time its entities hold back (``diagnose.blast``)

    def to_json(self) -> dict[str, object]:
        """JSON-safe: a time or figure not known (a healthy job's ``since``) is null."""

        def num(x: float, places: int = 4) -> float | None:
            return round(x, places) if math.isfinite(x) else None

        return {"job": self.job, "mode": self.mode.value, "confidence": num(self.confidence, 3),
                "entities": list(self.entities), "evidence": list(self.evidence), "since": num(self.since, 3),
                "cost_gpu_h": num(self.cost_gpu_h), "rate_gpu_h_per_h": num(self.rate_gpu_h_per_h),
                "mitigation": self.mitigation, "action": self.action, "risk": list(self.risk),
                "risk_since": num(self.risk_since, 3), "lead_time_s": num(self.lead_time_s, 1),
                "held_back_gpu_s_per_s": num(self.held_back_gpu_s_per_s)}  # fmt: skip


@dataclass
class _Usual:
    step: float = math.nan
    ckpt: float = math.nan
    util: float = math.nan
    read: float = math.nan  # its storage's usual read latency
    last_ckpt: float = math.nan  # the last save's duration, kept until the next one ends
    mode: Mode = Mode.HEALTHY  # the mode named now
    since: float = math.nan
    cost: float = 0.0
    last: float = math.nan
    candidate: Mode = Mode.HEALTHY  # a different mode judged on ``seen`` ticks in a row, not named yet
    seen: int = 0
    finding: Finding | None = None  # the last finding named (kept while a change awaits confirmation)
    risk_since: float = math.nan  # an unwell dependency first seen while the job was still healthy
    lead: float = math.nan  # the lead time the risk gave the mode named now


@dataclass
class Diagnoser:
    config: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    usual: dict[str, _Usual] = field(default_factory=dict)

    def tick(self, s: JobSignals) -> list[Finding]:
        out: list[Finding] = []
        for i, job in enumerate(s.jobs):
            u = self.usual.setdefault(job, _Usual())
            mode, conf, entities, evidence, slowdown = self._judge(s, i, u)
            dt = 0.0 if math.isnan(u.last) else max(s.now - u.last, 0.0)
            u.last = s.now
            risk = _risk(s, i) if mode is Mode.HEALTHY else ()
            if mode is Mode.HEALTHY:  # the risk window runs while judged healthy with an unwell dependency
                u.risk_since = (u.risk_since if math.isfinite(u.risk_since) else s.now) if risk else math.nan
            # the share of its GPU time lost: a hung or stalled job (slowdown 1.0 by convention) loses it all
            rate = float(s.gpus[i]) * (
                1.0 if slowdown >= 1.0 else slowdown / (1.0 + slowdown) if slowdown > 0 else 0.0
            )
            if mode is not u.mode:
                # A change is named once it is seen on ``confirm_ticks`` ticks in a row (one noisy
                # tick is no mode); a hang, already judged over a minute of silence, at once.
                u.seen = u.seen + 1 if mode is u.candidate else 1
                u.candidate = mode
                if mode is not Mode.HANG and u.seen < self.config.confirm_ticks:
                    if u.mode is Mode.HEALTHY:  # not learnt from: something may be starting
                        out.append(_healthy(job, conf, evidence, u, risk))
                    else:
                        assert u.finding is not None
                        u.cost += u.finding.rate_gpu_h_per_h * dt / 3600.0
                        u.finding = replace(u.finding, cost_gpu_h=u.cost)
                        out.append(u.finding)
                    continue
                if u.mode is Mode.HEALTHY:  # an impact: the lead time its risk window gave, if any
                    u.lead = s.now - u.risk_since if math.isfinite(u.risk_since) else math.nan
                u.mode, u.since, u.cost = mode, s.now, 0.0
            elif mode is not Mode.HEALTHY:
                u.cost += rate * dt / 3600.0
            u.candidate, u.seen = mode, 0
            if mode is Mode.HEALTHY:
                if (
                    s.now - float(s.step_seen[i]) <= self.config.hang_min_s
                ):  # a restart's idle ticks teach nothing
                    self._learn(s, i, u, dt)
                u.finding, u.lead = None, math.nan
                out.append(_healthy(job, conf, evidence, u, risk))
                continue
            u.risk_since = math.nan
            text, action = MITIGATION[mode]
            u.finding = Finding(job, mode, conf, entities, evidence, u.since, u.cost, rate, text, action,
                                lead_time_s=u.lead)  # fmt: skip
            out.append(u.finding)
        return out

    def _judge(
        self, s: JobSignals, i: int, u: _Usual
    ) -> tuple[Mode, float, tuple[str, ...], tuple[str, ...], float]:
        c = self.config
        step, ckpt, util, spread = (
            float(s.step_s[i]),
            float(s.ckpt_s[i]),
            float(s.util[i]),
            float(s.rank_spread[i]),
        )
        usual_step = u.step if math.isfinite(u.step) else step
        quiet = s.now - float(s.step_seen[i])
        if math.isfinite(u.step) and quiet > max(c.hang_after * u.step, c.hang_min_s):
            storage = s.unwell["storage"][i]
            if storage:  # a blocking save that cannot finish stops the steps too: not a hung collective
                why = f"no step for {quiet:.0f} s while {', '.join(storage[:2])} is unwell: a save is stalled"
                return Mode.CHECKPOINT_STALL, 0.7, storage, (why,), 1.0
            # A hung collective spins: its GPUs stay busy while no step ends. A job that crashed
            # and is restarting (a node rebooted, a thermal trip) leaves them idle. Use unknown:
            # judged by what surrounds it, as before.
            spinning = not (math.isfinite(util) and util < c.busy_util_pct)  # unknown use: as before
            facilities, throttled = s.unwell["facilities"][i], s.throttled[i]
            # Stopped under an unwell rack, CDU or PDU is the heat (a trip, or a collective hung on a
            # GPU that tripped); throttle bits alone only when its GPUs idle: spinning GPUs hit
            # their power cap without a thermal cause.
            if facilities or ((not spinning or not math.isfinite(util)) and throttled):
                why = f"no step for {quiet:.0f} s under {', '.join((*facilities, *throttled)[:3])}"
                return Mode.THERMAL_POWER, 0.6, (*facilities, *throttled[:8]), (why,), 1.0
            if not spinning:
                why = f"no step for {quiet:.0f} s, its GPUs idle ({util:.0f} % busy): restarting, not hung"
                return Mode.HEALTHY, 0.6, (), (why,), 0.0
            return (
                Mode.HANG,
                0.9,
                (f"job/{s.jobs[i]}",),
                (f"no step for {quiet:.0f} s (usual step {u.step:.2f} s)"
                 + (f", its GPUs {util:.0f} % busy: a collective waiting" if math.isfinite(util) else ""),),
                1.0,
            )  # fmt: skip
        slowdown = step / usual_step - 1.0 if math.isfinite(step) and usual_step > 0 else 0.0
        if math.isfinite(ckpt):  # a save's duration is seen once, when it ends: kept until the next
            u.last_ckpt = ckpt
        ckpt = u.last_ckpt
        if math.isfinite(ckpt) and math.isfinite(u.ckpt) and ckpt >= c.ckpt_slow * u.ckpt:
            storage = s.unwell["storage"][i]
            return (Mode.CHECKPOINT_STALL, 0.8 if storage else 0.6, storage,
                    (f"checkpoint took {ckpt:.0f} s, {ckpt / u.ckpt:.1f}× its usual {u.ckpt:.0f} s",), slowdown)  # fmt: skip
        slow = s.slow_ranks[i]
        straggling = (
            math.isfinite(spread)
            and spread >= c.straggler_spread
            and 0 < len(slow) <= c.straggler_share * s.gpus[i]
        )
        if slowdown < c.min_slowdown and not straggling:
            return Mode.HEALTHY, 0.8, (), (), max(slowdown, 0.0)
        pace = f"steps {slowdown:+.0%} against its usual {usual_step:.2f} s"
        throttled, facilities = s.throttled[i], s.unwell["facilities"][i]
        # A GPU throttled now and then (a power cap under load) is no limit on the job: it is one
        # when the slow ranks are the throttled ones, when many of its GPUs are, or when a rack,
        # CDU or PDU it sits on is unwell.
        hot_slow = tuple(g for g in slow if g in set(throttled))
        widely = len(throttled) >= c.straggler_share * s.gpus[i]
        if hot_slow or facilities or widely:
            named = hot_slow or throttled
            return (Mode.THERMAL_POWER, 0.85 if (hot_slow or widely) and facilities else 0.7, (*facilities, *named[:8]),
                    (pace, *(f"{len(named)} of its GPU(s) throttled (thermal or power)",) * bool(named),
                     *(f"{e} unwell" for e in facilities[:3])), slowdown)  # fmt: skip
        if straggling:
            return (Mode.STRAGGLER, 0.85, slow[:8],
                    (f"slowest rank {spread:+.0%} over the median; {len(slow)} of {s.gpus[i]:.0f} ranks slow", pace), slowdown)  # fmt: skip
        fabric, storage = s.unwell["fabric"][i], s.unwell["storage"][i]
        if fabric:
            return Mode.NETWORK, 0.8, fabric, (pace, *(f"{e} unwell" for e in fabric[:3])), slowdown
        read = float(s.read_ms[i])
        reads_slow = math.isfinite(read) and math.isfinite(u.read) and read >= c.read_slow * u.read
        if storage or reads_slow:
            reads = (f"its storage reads {read:.0f} ms, {read / u.read:.1f}× usual",) if reads_slow else ()
            return (Mode.STORAGE_IO, 0.8 if storage and reads_slow else 0.7, storage, (pace, *reads,
                    *(f"{e} unwell" for e in storage[:3])), slowdown)  # fmt: skip
        idle = u.util - util if math.isfinite(util) and math.isfinite(u.util) else math.nan
        conf = 0.8 if math.isfinite(idle) and idle >= c.util_drop_pct else 0.5
        said = (
            f"its GPUs {idle:.0f} points less busy than usual"
            if math.isfinite(idle)
            else "its GPUs' use unknown"
        )
        return (
            Mode.INPUT_STALL,
            conf,
            (),
            (pace, "every rank alike, no part it depends on unwell", said),
            slowdown,
        )

    def _learn(self, s: JobSignals, i: int, u: _Usual, dt: float) -> None:
        a = 1.0 - math.exp(-dt / self.config.learn_s) if dt > 0 else 1.0
        for name in ("step", "ckpt", "util", "read"):
            value = float({"step": s.step_s, "ckpt": s.ckpt_s, "util": s.util, "read": s.read_ms}[name][i])
            if not np.isfinite(value):
                continue
            old = getattr(u, name)
            setattr(u, name, value if not math.isfinite(old) else old + a * (value - old))


def _risk(s: JobSignals, i: int) -> tuple[str, ...]:
    """The unwell parts a job depends on, every seam at once (its own GPUs included)."""
    return tuple(sorted({e for seam in s.unwell.values() for e in seam[i]}))


def _healthy(job: str, conf: float, evidence: tuple[str, ...], u: _Usual, risk: tuple[str, ...]) -> Finding:
    """A healthy finding; at risk while ``risk`` is not empty, with the window's start."""
    if not risk:
        return Finding(job, Mode.HEALTHY, conf, (), evidence, u.since, 0.0, 0.0, "", None)
    said = f"{', '.join(risk[:3])}{' and more' if len(risk) > 3 else ''} unwell, its pace not hurt yet"
    return Finding(job, Mode.HEALTHY, conf, (), (*evidence, said), u.since, 0.0, 0.0, RISK_MITIGATION, None,
                   risk=risk, risk_since=u.risk_since)  # fmt: skip
