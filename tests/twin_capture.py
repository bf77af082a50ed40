"""A twin run's telemetry, captured at its emitter: what the exporter and BMS tests serve."""

from __future__ import annotations

from typing import Any

from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.sim import Twin
from seamguard.twin.world import World, build_world


def captured_run(scenario: dict[str, Any], seed: int) -> tuple[World, tuple[TelemetryBatch, ...]]:
    """Every telemetry batch the twin emits over ``scenario`` (policy ``binary``, fixed seed)."""
    world = build_world(scenario_from_mapping(scenario), seed)
    twin = Twin(world, "binary")
    got: list[TelemetryBatch] = []
    emit = twin.emitter.emit

    def capture(*args: Any, **kwargs: Any) -> TelemetryBatch:
        batch = emit(*args, **kwargs)
        got.append(batch)
        return batch

    twin.emitter.emit = capture  # type: ignore[method-assign]
    twin.run()
    return world, tuple(got)
