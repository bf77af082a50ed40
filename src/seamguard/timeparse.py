"""Parsing times given on the command line: unix seconds or ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(text: str) -> float:
    """Unix seconds (``1700000000``) or ISO 8601 (``2026-11-20T14:05:00Z``; naive means UTC)."""
    raw = text.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither unix seconds nor an ISO 8601 time (e.g. 2026-11-20T14:05:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def format_time(ts: float) -> str:
    """UTC, to the second; a time no calendar holds (a stray ms timestamp) prints as its number."""
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"{ts:.0f} (unix seconds, out of calendar range)"
