"""The fleet's observed failure rate against nominal: what makes the hazard follow a changing world.

The nominal rates (``hazard.base_per_day``) are a prior. Most failures come without a precursor,
so no score sees a fleet whose parts fail twice as often as last month (a hot season, an aging
batch, a bad firmware); only the failures themselves do. The learner keeps two decayed sums: the
hard failures seen and the failures expected at nominal rates over the same time. What is counted
on each side is the engine's (``control.failure_tally``): parts the classifier fails
(``COUNTED_KINDS``: a GPU or a host, a node once whatever of it failed; a link that goes down
looks like a very sick one, so links are left out of both sums), and each failure a job's runtime
reports, with that job's software and uplink rates expected.

Their ratio scales every nominal rate. The prior on that scale is a mixture of two gammas:

- a fleet like the nominal one (share ``1 - learn_outlier_share``): mean 1, weighing like
  ``learn_prior_failures`` failures, so one unlucky failure barely moves it;
- a fleet far off nominal (``learn_outlier_share``): shape 1, mean ``learn_outlier_mean``, wide
  enough that a run of failures a small fleet should not see is believed within hours.

The scale is the posterior mean with exponential forgetting (half-life ``learn_halflife_s``): each
component's gamma-Poisson mean ``(a + observed) / (b + expected)``, weighted by how well it
predicted the count seen (its negative-binomial likelihood). With one component (share 0) this is
``(prior + observed) / (prior + expected)``. A single gamma cannot do both jobs: three failures'
weight leaves a 64-GPU fleet failing fifty times its nominal rate at x1.7 for days, and a weak one
lets one chance failure set every checkpoint interval. A large fleet's count is big enough that
the first component tracks it either way (a tripled rate reads about x3 within a day).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seamguard.config import HazardConfig
from seamguard.model.entities import EntityKind

COUNTED_KINDS = (EntityKind.GPU, EntityKind.NODE)


@dataclass
class HazardLearner:
    halflife_s: float
    prior_failures: float
    outlier_share: float = 0.0  # prior probability that the fleet is far off nominal
    outlier_mean: float = 20.0  # that fleet's mean rate multiplier
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
        n, e = self.observed, self.expected
        components = [(1.0 - self.outlier_share, self.prior_failures, self.prior_failures)]
        if self.outlier_share > 0:
            components.append((self.outlier_share, 1.0, 1.0 / self.outlier_mean))
        # log of each component's weight times its marginal likelihood of n (the terms shared by
        # both, n! and e^n, left out); weighed in logs, as a large fleet's counts underflow.
        logs = [math.log(w) + math.lgamma(a + n) - math.lgamma(a) + a * math.log(b / (b + e)) - n * math.log(b + e)
                for w, a, b in components]  # fmt: skip
        top = max(logs)
        weights = [math.exp(v - top) for v in logs]
        means = [(a + n) / (b + e) for _, a, b in components]
        return sum(w * m for w, m in zip(weights, means, strict=True)) / sum(weights)


def learner_for(config: HazardConfig) -> HazardLearner:
    """A learner with the site's prior and memory, starting from nothing seen."""
    return HazardLearner(config.learn_halflife_s, config.learn_prior_failures,
                         config.learn_outlier_share, config.learn_outlier_mean)  # fmt: skip
