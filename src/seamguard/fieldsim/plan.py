"""One run of the field suite, fully laid out: fleet, faults with their reach, confounders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.fieldsim.confounders import Confounder
from seamguard.fieldsim.faults import Fault
from seamguard.fieldsim.fleet import Fleet, StoragePlan
from seamguard.fieldsim.labels import ConfounderLabel


@dataclass(frozen=True)
class PlannedFault:
    fault: Fault
    entity: str
    reach: frozenset[str]


@dataclass(frozen=True)
class FieldPlan:
    seed: int
    start: float
    duration_s: float
    storage: StoragePlan
    capacity_gbps: npt.NDArray[np.float64]  # per storage backend (topology order), GB/s
    fleet: Fleet
    faults: tuple[PlannedFault, ...]
    confounders: tuple[Confounder, ...]
    confounder_labels: tuple[ConfounderLabel, ...]

    @property
    def end(self) -> float:
        return self.start + self.duration_s
