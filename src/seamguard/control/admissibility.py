"""Admissibility: what each state still allows, per job class (the matrix lives in config)."""

from __future__ import annotations

from seamguard.config import Config
from seamguard.model.states import Admission, JobClass, State


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
