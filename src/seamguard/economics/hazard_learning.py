"""The fleet's observed failure rate against nominal: what makes the hazard follow a changing world.

The nominal rates (``hazard.base_per_day``) are a prior. Most failures come without a precursor,
so no score sees a fleet whose parts fail twice as often as last month (a hot season, an aging
batch, a bad firmware); only the failures themselves do. The learner keeps two decayed sums: the
hard failures seen and the failures expected at nominal rates over the same time, both over the
parts whose failure the engine can call hard (``COUNTED_KINDS``: a GPU or a host; a node counts
once whatever of it failed). A link that goes down looks to telemetry like a link that is very
sick, so links are left out of both sums rather than undercounted. Their ratio, shrunk towards 1 by
``learn_prior_failures`` pseudo-failures, scales every nominal rate:

    scale = (prior + observed) / (prior + expected)

a gamma-Poisson posterior mean with exponential forgetting (half-life ``learn_halflife_s``), so a
small fleet's few failures barely move it and a large fleet's rate is tracked within days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seamguard.model.entities import EntityKind

COUNTED_KINDS = (EntityKind.GPU, EntityKind.NODE)


@dataclass
class HazardLearner:
    halflife_s: float
    prior_failures: float
    observed: float = 0.0  # decayed count of hard failures
    expected: float = 0.0  # decayed count expected at nominal rates
    last: float = math.nan

    def record(self, now: float, nominal_rate_per_s: float, failures: int) -> None:
        """Advance to ``now``: ``failures`` seen since the last call, at ``nominal_rate_per_s``
        expected over the fleet being watched."""
        if math.isnan(self.last):
            self.last = now
        dt = max(now - self.last, 0.0)
        keep = 0.5 ** (dt / self.halflife_s)
        # The expected count accrues continuously under decay: integral of r e^(-k(t-s)) ds.
        k = math.log(2.0) / self.halflife_s
        accrued = nominal_rate_per_s * (1.0 - keep) / k
        self.expected = self.expected * keep + accrued
        self.observed = self.observed * keep + failures
        self.last = now

    def scale(self) -> float:
        return (self.prior_failures + self.observed) / (self.prior_failures + self.expected)
