"""When a peer outlier may count at once, and when it must be seen on two samples first.

Members of a cohort are sampled at different moments (each exporter has its own scrape phase
and cadence), so while the whole cohort changes (a job's input stall starting or ending) the
members sampled first or last disagree with the median for up to one sampling interval, and
look like outliers. Samples taken together by one exporter (a node's GPUs) share that timing:
one GPU standing out from the GPUs scraped with it is a real outlier and counts in the tick it
arrives (a PCIe downtrain is caught at once), but when every member of a clock domain stands
out together, or a member is alone in its domain (a link, a rack), the outlier counts only once
the entity's previous distinct sample stood out too. A timing artefact never lasts two samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.telemetry.clock import clock_domains

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class _RuleState:
    domain: IntArray  # per member (local order): the global index of its clock domain
    current: BoolArray  # stood out on its latest sample
    previous: BoolArray  # stood out on the sample before
    sample_ts: FloatArray  # time of the latest sample judged


class PeerMemory:
    def __init__(self, topology: Topology, rules: dict[str, EntityKind]) -> None:
        domains = clock_domains(topology)
        self.n_domains = topology.n_entities
        self._rules: dict[str, _RuleState] = {}
        for name, kind in rules.items():
            n = topology.count(kind)
            self._rules[name] = _RuleState(
                domain=domains[topology.members[kind]],
                current=np.zeros(n, dtype=bool),
                previous=np.zeros(n, dtype=bool),
                sample_ts=np.full(n, -np.inf),
            )

    def gate(self, name: str, outlier: BoolArray, in_cohort: BoolArray, last_seen: FloatArray) -> BoolArray:
        """Which of this tick's outliers count (see the module docstring); remembers them."""
        st = self._rules[name]
        stood_out = np.bincount(st.domain[outlier], minlength=self.n_domains)
        members = np.bincount(st.domain[in_cohort], minlength=self.n_domains)
        alone = outlier & (members[st.domain] >= 2) & (stood_out[st.domain] == 1)
        new = last_seen > st.sample_ts
        st.previous = np.where(new, st.current, st.previous)
        st.current = outlier.copy()
        st.sample_ts = np.where(new, last_seen, st.sample_ts)
        return np.asarray(alone | (outlier & st.previous), dtype=bool)
