"""The TRANSITIONS.csv format of the telemetry contract, shared by ``score`` and the demo."""

from __future__ import annotations

from seamguard.journal.records import TransitionRecord

TRANSITION_HEADER = ("timestamp", "entity", "from_state", "to_state", "gfs", "prs", "fae", "reason")


def transition_row(t: TransitionRecord) -> tuple[str, ...]:
    return (
        f"{t.ts:.3f}",
        t.entity,
        t.from_state,
        t.to_state,
        f"{t.gfs:.4f}",
        f"{t.prs:.4f}",
        f"{t.fae:.2f}",
        t.reason,
    )
