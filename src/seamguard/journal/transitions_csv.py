"""The TRANSITIONS.csv format of the telemetry contract, shared by ``score`` and the demo."""

from __future__ import annotations

from seamguard.journal.records import TransitionRecord

TRANSITION_HEADER = ("timestamp", "entity", "from_state", "to_state", "gfs", "prs", "fae", "reason")


def _fixed(value: float, places: int) -> str:
    """Fixed-point text without the "-0.0000" that a tiny negative rounding residue would print."""
    text = f"{value:.{places}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def transition_row(t: TransitionRecord) -> tuple[str, ...]:
    return (
        f"{t.ts:.3f}",
        t.entity,
        t.from_state,
        t.to_state,
        _fixed(t.gfs, 4),
        _fixed(t.prs, 4),
        _fixed(t.fae, 2),
        t.reason,
    )
