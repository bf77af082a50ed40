"""Admissibility: what each state still allows, per job class (the matrix lives in config)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.control.classifier import ALLOWED_STATES
from seamguard.model.entities import EntityKind
from seamguard.model.states import SYNCHRONOUS_CLASSES, Admission, JobClass, State
from seamguard.model.topology import Topology


def admission_row(config: Config, state: State) -> dict[JobClass, Admission]:
    return {jc: config.admission(state, jc) for jc in JobClass}


def describe_admission(config: Config, state: State) -> str:
    """One line, grouped by verdict: 'admit: async_batch_inference, exploratory; avoid: ...'."""
    row = admission_row(config, state)
    parts = []
    for verdict in Admission:
        classes = [jc.value for jc, v in row.items() if v is verdict]
        if classes:
            parts.append(f"{verdict.value}: {', '.join(classes)}")
    return "; ".join(parts)


ADMISSION_ORDER: tuple[Admission, ...] = (Admission.ADMIT, Admission.AVOID, Admission.DENY)


def admission_table(config: Config, job_class: JobClass) -> npt.NDArray[np.int64]:
    """state code -> 0 admit, 1 avoid, 2 deny for one job class."""
    return np.array([ADMISSION_ORDER.index(config.admission(s, job_class)) for s in State], dtype=np.int64)


def node_admission(
    config: Config,
    topology: Topology,
    states: npt.NDArray[np.int64],
    job_class: JobClass,
    lemons: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """Per node, the strictest verdict over everything its work would depend on.

    A node is only as admissible as the worst of itself, its GPUs, its uplink and the rack,
    CDU, PDU and row it sits in: a healthy node under a CDU that is losing flow is not a place
    to start a synchronous job. A node in ``lemons`` (``control.lemons``) is at best ``avoid``
    for synchronous classes: one of their ranks failing stops them all. Vectorised over the fleet (0 admit, 1 avoid, 2 deny).
    """
    table = admission_table(config, job_class)
    verdict = table[states]
    m = topology.members
    n_nodes = topology.count(EntityKind.NODE)
    out = verdict[m[EntityKind.NODE]].copy() if n_nodes else np.zeros(0, dtype=np.int64)
    if n_nodes == 0:
        return out
    if m[EntityKind.GPU].size:
        np.maximum.at(out, topology.gpu_node, verdict[m[EntityKind.GPU]])
    if m[EntityKind.LINK].size:
        out = np.maximum(out, verdict[m[EntityKind.LINK]])
    rack = verdict[m[EntityKind.RACK]][topology.node_rack]
    out = np.maximum(out, rack)
    for kind, parent in (
        (EntityKind.CDU, topology.rack_cdu[topology.node_rack]),
        (EntityKind.ROW, topology.rack_row[topology.node_rack]),
        (EntityKind.PDU, topology.node_pdu),
    ):
        if kind not in ALLOWED_STATES:  # never classified (rows, PDUs): unknown for good, says nothing
            continue
        ok = parent >= 0
        if m[kind].size and ok.any():
            out[ok] = np.maximum(out[ok], verdict[m[kind][parent[ok]]])
    if lemons is not None and job_class in SYNCHRONOUS_CLASSES:
        out = np.where(lemons, np.maximum(out, 1), out)
    return out
