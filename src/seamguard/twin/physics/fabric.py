"""Fabric: link latency and retransmits, and what they do to a job's collectives.

A node's uplink has a nominal round-trip latency; a marginal link (bad optic, dirty connector)
first retransmits more and more (rate grows ``retransmit_growth``-fold at full severity over
the first half of the degradation), then loses effective bandwidth, seen as latency growing to
``1 + gray_latency_rise x severity x progress²`` times nominal. A congested leaf raises the
latency of every link under it. A synchronous collective runs at its slowest link:

    comm_factor = 1 + collective_gain x max(0, latency_factor - collective_knee)

so modest latency noise costs nothing and a latency-toxic link stalls the whole job. Rerouting
(adaptive routing, another rail) replaces a link's own factor by ``1 + reroute_penalty``; the leaf's
congestion stays, since every path of the node crosses its leaf.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from seamguard.twin.physics.params import Params

FloatArray = npt.NDArray[np.float64]


class FabricParams(Params):
    latency_us: float = Field(default=2.0, gt=0)
    latency_noise: float = Field(default=0.02, ge=0)
    retransmits_per_s: float = Field(default=0.5, ge=0)
    errors_per_s: float = Field(default=0.001, ge=0)
    gray_latency_rise: float = Field(default=2.0, ge=0)
    retransmit_growth: float = Field(default=1000.0, ge=1)
    collective_knee: float = Field(default=1.5, ge=1)
    collective_gain: float = Field(default=0.5, ge=0)
    reroute_penalty: float = Field(default=0.05, ge=0)
    switch_buffer_pct: float = Field(default=30.0, ge=0, le=100)
    congestion_latency_rise: float = Field(default=1.5, ge=0, description="leaf congestion at severity 1")


def gray_latency_factor(p: FabricParams, severity: float, progress: float) -> float:
    return 1.0 + p.gray_latency_rise * severity * progress * progress


def retransmit_multiplier(p: FabricParams, severity: float, progress: float) -> float:
    """Rate multiplier: exponential growth over the first half, then held."""
    growth = max(p.retransmit_growth * severity, 2.0)
    return float(growth ** min(2.0 * progress, 1.0))


def comm_factor(
    p: FabricParams, link_factor: FloatArray, leaf_factor: FloatArray, rerouted: npt.NDArray[np.bool_]
) -> FloatArray:
    """Per node, its collectives' time factor. A reroute takes the node's traffic off its own
    uplink, not off its leaf: every path of a node crosses the leaf it hangs from, so a congested
    leaf's latency stays (a rerouted link on a healthy leaf costs only ``reroute_penalty``)."""
    raw = 1.0 + p.collective_gain * np.maximum(link_factor * leaf_factor - p.collective_knee, 0.0)
    leaf = 1.0 + p.collective_gain * np.maximum(leaf_factor - p.collective_knee, 0.0)
    return np.where(rerouted, leaf + p.reroute_penalty, raw)
