"""What peer comparisons remember across ticks: when an outlier may count at once, and each
entity's own usual offset from its cohort.

**Timing.**
Members of a cohort are sampled at different moments (each exporter has its own scrape phase
and cadence), so while the whole cohort changes (a job's input stall starting or ending) the
members sampled first or last disagree with the median for up to one sampling interval, and
look like outliers. Samples taken together by one exporter (a node's GPUs) share that timing:
one GPU standing out from the GPUs scraped with it is a real outlier and counts in the tick it
arrives (a PCIe downtrain is caught at once), but when every member of a clock domain stands
out together, or a member is alone in its domain (a link, a rack), the outlier counts only once
the entity's previous distinct sample stood out too. A timing artefact never lasts two samples.
A member with no new sample this tick (a missed scrape) is not judged afresh: its reading is the
previous tick's, and against peers whose newer readings moved together (a job's input stall
ending) it would stand out alone, a straggler of one tick that drained a node on held-out seed
8011. It keeps whether its latest sample counted, for as long as it still stands out.

**Baselines** (a rule's ``baseline_halflife_s``). Some entities differ from their peers by a
steady factor that is no fault: one optic retransmits three times as often as the next all its
life. For such rules each entity's readings and its cohort's median at the same ticks are
averaged with that half-life, only while the entity carries no evidence; their ratio (relative
measures) or difference (absolute ones) is its offset, removed before the comparison, so what
is judged is the change. A ratio of averages, not an average of ratios: at a few retransmits a
minute each reading is mostly counting noise, and the log of a noisy ratio is biased. The
first readings (a warm-up, ``learnt_average``) are averaged before the entity is judged at all: an entity that is
already failing when seamguard starts is taken as its own normal (docs/scoring.md says so).

**Against what the offset is learnt.** The cohort's level a baseline is learnt against is the
median of its learnt, quiet members' readings with their own offsets removed: the level each
member is judged against (``detectors.peer`` takes the median of those same values), and one that
does not move with the cohort's membership. Against the median of raw readings, an entity's offset
held the factors of whoever was in its cohort while it learnt: an idle uplink learnt at 1.4x the
idle links of the first hour read 162% above the idle links of the seventh at its unchanged rate,
once the jobs had swapped which links were idle (field suite, held-out seed 1220). A member
joining is learnt against the incumbents' common level, so every learnt member holds the same
one, whoever comes and goes; one incumbent is enough (its readings are noisy, but no noisier than
the newcomer's own, which its baseline averages anyway). An incumbent that stood out when last
judged is no anchor, though it is not judged while the newcomers learn (a cohort under
``min_cohort``): they would learn its failing rate as their cohort's and clear it. Only where no
member can anchor (seamguard starting, a job's links all joining its cohort at once) is the raw
median the level: the members learning together then share it. Weighed and not chosen: learning again once the
cohort's membership has turned over (per member, its cohort's joins and leaves since it started
learning) leaves a cohort that churns all the time (idle links, with jobs starting and ending)
unjudged for a warm-up at every turnover and takes an optic failing at that moment for its own
normal; the level used here costs no state and no unjudged tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange, carry
from seamguard.scoring.cohorts import translate_groups
from seamguard.scoring.groupstats import group_median
from seamguard.scoring.learnt_average import average_in, decay_since, learnt
from seamguard.telemetry.clock import clock_domains

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_FACTOR = 8.0


@dataclass
class _RuleState:
    kind: EntityKind
    domain: IntArray  # per member (local order): the global index of its clock domain
    current: BoolArray  # stood out on its latest sample
    previous: BoolArray  # stood out on the sample before
    stood_out: BoolArray  # stood out when last judged (a member not judged keeps its last word)
    counted: BoolArray  # its latest sample's outlier counted (``gate``)
    sample_ts: FloatArray  # time of the latest sample judged
    group: IntArray  # the cohort each member was in on the last tick
    joined_at: FloatArray  # since when it has been in that cohort
    own: FloatArray  # averaged readings of the entity...
    cohort: FloatArray  # ...and of its cohort's level at the same ticks
    seen: IntArray  # observations learnt from
    learnt_at: float = -np.inf


# Each per-member field of ``_RuleState`` as a fresh start has it (value, dtype): what a member
# gets at the start, when it joins and when it is repaired.
_FRESH: dict[str, tuple[object, type]] = {
    "current": (False, np.bool_),
    "previous": (False, np.bool_),
    "stood_out": (False, np.bool_),
    "counted": (False, np.bool_),
    "sample_ts": (-np.inf, np.float64),
    "group": (-2, np.int64),
    "joined_at": (-np.inf, np.float64),
    "own": (0.0, np.float64),
    "cohort": (0.0, np.float64),
    "seen": (0, np.int64),
}


class PeerMemory:
    def __init__(self, topology: Topology, rules: dict[str, EntityKind]) -> None:
        domains = clock_domains(topology)
        self.n_domains = topology.n_entities
        self._rules: dict[str, _RuleState] = {}
        for name, kind in rules.items():
            n = topology.count(kind)
            fresh: dict[str, Any] = {f: np.full(n, fill, dtype=dt) for f, (fill, dt) in _FRESH.items()}
            self._rules[name] = _RuleState(kind=kind, domain=domains[topology.members[kind]], **fresh)

    def carry_over(self, change: WorldChange, cohorts: Mapping[str, str]) -> None:
        """Onto ``change.new``: members that stay keep their timing and learnt baselines, and the
        cohort they were in is renumbered as the new world numbers it (``cohorts``: rule -> cohort)."""
        domains = clock_domains(change.new)
        self.n_domains = change.new.n_entities
        for name, st in self._rules.items():
            st.domain = domains[change.new.members[st.kind]]
            fwd = change.kind(st.kind)
            st.group = translate_groups(cohorts[name], st.kind, carry(st.group, fwd, -2), change)
            if change.same(st.kind):
                continue
            for f, (fill, _dt) in _FRESH.items():
                if f != "group":  # renumbered above
                    setattr(st, f, carry(getattr(st, f), fwd, fill))

    def forget(self, topology: Topology, entities: IntArray) -> None:
        """A repaired part (a new optic, a reseated GPU) starts afresh: no timing history, and its
        own normal is learnt again before it is judged."""
        for st in self._rules.values():
            pick = topology.local_index(st.kind, entities)
            for f, (fill, _dt) in _FRESH.items():
                getattr(st, f)[pick] = fill

    def gate(self, name: str, outlier: BoolArray, in_cohort: BoolArray, last_seen: FloatArray) -> BoolArray:
        """Which of this tick's outliers count (see the module docstring); remembers them."""
        st = self._rules[name]
        stood_out = np.bincount(st.domain[outlier], minlength=self.n_domains)
        members = np.bincount(st.domain[in_cohort], minlength=self.n_domains)
        alone = outlier & (members[st.domain] >= 2) & (stood_out[st.domain] == 1)
        new = last_seen > st.sample_ts
        st.previous = np.where(new, st.current, st.previous)
        st.current = outlier.copy()
        st.stood_out = np.where(in_cohort, outlier, st.stood_out)
        st.sample_ts = np.where(new, last_seen, st.sample_ts)
        st.counted = np.where(new, alone | (outlier & st.previous), st.counted & outlier)
        return st.counted.copy()

    def settled(
        self, name: str, value: FloatArray, groups: IntArray, now: float, settle_s: float
    ) -> FloatArray:
        """``value`` without the members that changed cohort (a job started or ended on their
        node) less than ``settle_s`` ago: a median over recent samples would still hold the old
        load, and be compared with peers under the new one."""
        st = self._rules[name]
        moved = groups != st.group
        st.joined_at[moved] = now
        st.group = groups.copy()
        # a baseline learnt under the old load (an idle link counts a retransmit a minute: mostly
        # noise) is no baseline under the new one: it is learnt again
        st.own[moved] = st.cohort[moved] = 0.0
        st.seen[moved] = 0
        return np.where(now - st.joined_at >= settle_s, value, np.nan)

    def without_baseline(self, name: str, value: FloatArray, relative: bool) -> FloatArray:
        """``value`` with each entity's learnt offset removed; NaN (not judged) until learnt."""
        st = self._rules[name]
        adjusted = value * self._factor(st) if relative else value - (st.own - st.cohort)
        return np.where(learnt(st.seen), adjusted, np.nan)

    @staticmethod
    def _factor(st: _RuleState) -> FloatArray:
        """cohort / own, kept within MAX_FACTOR either way: no part is that different from its
        peers all its life, and a warm-up that counted almost nothing must not say it is."""
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(st.own > 0, st.cohort / st.own, np.where(st.cohort > 0, MAX_FACTOR, 1.0))
        return np.clip(k, 1.0 / MAX_FACTOR, MAX_FACTOR)

    def scaling(self, name: str) -> FloatArray:
        """Per entity: the factor ``without_baseline`` multiplies a relative value by (1 until learnt)."""
        st = self._rules[name]
        return np.where(learnt(st.seen), self._factor(st), 1.0)

    def learn_baseline(self, name: str, raw: FloatArray, judged: FloatArray, groups: IntArray, n_groups: int,
                       *, quiet: BoolArray, now: float, halflife_s: float) -> None:  # fmt: skip
        """Average each quiet entity's reading and its cohort's level into its baseline: the level
        is the median of ``judged`` (readings without their offsets, NaN until learnt) over the
        members that did not stand out when last judged, or of ``raw`` where there is none (see
        the module docstring)."""
        st = self._rules[name]
        n = max(n_groups, 1)
        med, counts = group_median(raw, groups, n)
        anchor = quiet & ~st.stood_out  # not judged is not cleared: a failing member anchors nothing
        common, learnt_counts = group_median(np.where(anchor, judged, np.nan), groups, n)
        level = np.where(learnt_counts > 0, common, med)
        g = np.where(groups >= 0, groups, 0)
        ok = (groups >= 0) & (counts[g] >= 3) & np.isfinite(raw) & np.isfinite(level[g]) & quiet
        decay = decay_since(st.learnt_at, now, halflife_s)
        average_in(st.seen, ok, decay, (st.own, raw), (st.cohort, level[g]))
        st.learnt_at = now
