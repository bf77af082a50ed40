"""When each GPU's heat reaches its shutdown temperature, if it keeps climbing as it does now.

A GPU that reaches its shutdown temperature is taken off the bus by the driver (XID 79) and is
out until someone has looked at it: a failure, but not one that comes at a rate. Its time is
what the temperature's own trend projects: the trend rule's slope less ``scores.trend_confidence_z``
standard errors (the slowest climb the readings allow), counted only where that climb passes the
rule's own threshold and the GPU is already past ``above_c``: warming up to work climbs as fast
from idle and levels off below it. (The rule's ``beyond`` gate, which asks the whole trend window
to sit past its level, would hold a climb from 70 °C back for most of the minutes it has left.)
The containment stage weighs a projected trip against islanding the domain
(``hazard.thermal_trip``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.model.entities import EntityKind
from seamguard.scoring.evidence import Evidence
from seamguard.telemetry.store import TelemetryStore

FloatArray = npt.NDArray[np.float64]


def trip_in_s(config: Config, evidence: Sequence[Evidence], store: TelemetryStore) -> FloatArray:
    """Per GPU, seconds until its reading reaches ``hazard.thermal_trip.shutdown_c`` at its
    confident climb; inf where it is not confidently climbing, not read, or would take longer than
    ``within_s``. A GPU already at or past its shutdown temperature and still climbing is due now (0)."""
    trip = config.hazard.thermal_trip
    n = store.topology.count(EntityKind.GPU)
    rule = (
        None
        if trip is None
        else next((e for e in evidence if e.detector == "trend" and e.signal == trip.signal), None)
    )
    if trip is None or rule is None:  # no trip projected (null), or the rule scored nothing yet
        return np.full(n, np.inf)
    temp = store.current(trip.signal)
    climb = rule.measure - config.scores.trend_confidence_z * rule.extra  # per minute
    confident = rule.evidence if rule.support is None else rule.support  # before the beyond gate
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = np.maximum(trip.shutdown_c - temp, 0.0) / climb * 60.0
        heading = (confident > 0) & (climb > 0) & (temp >= trip.above_c) & (seconds <= trip.within_s)
    return np.where(heading, seconds, np.inf)
