"""Telemetry sources: each reads one foreign system and normalises it into the engine's catalog."""
