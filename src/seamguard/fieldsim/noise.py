"""The field suite's noise model: what real sensors add on top of the physics.

Written apart from the twin's labelled suite (``twin.labelled``) so that the engine, tuned on the synthetic suite's
Gaussian noise, meets noise it was not tuned to: correlated (AR(1)) wander with heavy-tailed
(Student-t) kicks, a constant bias per sensor, occasional multiplicative spikes, the
quantisation of the tool that reports the value, and a slow diurnal swing on facilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
DAY_S = 86_400.0


@dataclass(frozen=True)
class ArNoise:
    """An AR(1) process per series: stationary std ``sigma``, correlation time ``tau_s``.

    Innovations are Student-t with ``df`` degrees of freedom scaled to unit variance, so most
    steps are small and a few are several sigma: the kicks a Gaussian model never produces.
    """

    sigma: float
    tau_s: float
    df: float = 3.0

    def phi(self, dt_s: float) -> float:
        return math.exp(-dt_s / self.tau_s)

    def step(self, state: FloatArray, dt_s: float, rng: np.random.Generator) -> FloatArray:
        phi = self.phi(dt_s)
        return phi * state + self.sigma * math.sqrt(1.0 - phi * phi) * unit_t(rng, self.df, state.size)

    def initial(self, size: int, rng: np.random.Generator) -> FloatArray:
        """A draw from the stationary distribution: a run starts in the middle of the weather."""
        return self.sigma * unit_t(rng, self.df, size)


MAX_KICK = 8.0  # innovations are clipped here (in unit-variance terms): heavy, not unbounded


def unit_t(rng: np.random.Generator, df: float, size: int) -> FloatArray:
    """Student-t draws with unit variance (df > 2), clipped at ``MAX_KICK``: at df 3 about 0.1%
    of draws are 8 sigma or more, which would otherwise now and then be 30."""
    draws = rng.standard_t(df, size) * math.sqrt((df - 2.0) / df)
    return np.asarray(np.clip(draws, -MAX_KICK, MAX_KICK), dtype=np.float64)


def spikes(rng: np.random.Generator, size: int, rate: float, low: float, high: float) -> FloatArray:
    """Multipliers: ``low..high`` on a ``rate`` share of samples, 1 elsewhere."""
    hit = rng.random(size) < rate
    return np.where(hit, rng.uniform(low, high, size), 1.0)


def quantise(values: FloatArray, step: float) -> FloatArray:
    """What a tool with resolution ``step`` reports (DCGM temperatures: whole degrees)."""
    return np.round(values / step) * step


def diurnal(t: FloatArray | float, amplitude: float, phase_s: float) -> FloatArray:
    """A 24 h sinusoid: outdoor temperature reaching the facility water."""
    return np.asarray(amplitude * np.sin(2.0 * np.pi * (np.asarray(t) + phase_s) / DAY_S), dtype=np.float64)
