"""The signal catalog, shipped as data (``seamguard/data/signals.yaml``), and NVML's throttle
bits. The XID catalog is ``seamguard.model.xid``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml

from seamguard.model.entities import EntityKind


class SignalKind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    EVENT = "event"
    BITMASK = "bitmask"
    FLAG = "flag"

    @property
    def with_article(self) -> str:
        """ "a gauge", "an event": for messages that name a signal's kind."""
        return f"{'an' if self.value[0] in 'aeiou' else 'a'} {self.value}"


@dataclass(frozen=True)
class Signal:
    index: int
    name: str
    unit: str
    domain: str
    kind: SignalKind
    entity: EntityKind
    description: str
    # A gauge's physical range (inclusive); a value outside it is not a measurement.
    range: tuple[float, float] | None = None


@dataclass(frozen=True)
class SignalCatalog:
    signals: tuple[Signal, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.signals})

    def __len__(self) -> int:
        return len(self.signals)

    def get(self, name: str) -> Signal | None:
        by_name: dict[str, Signal] = self.__dict__["_by_name"]
        return by_name.get(name)

    def __getitem__(self, name: str) -> Signal:
        sig = self.get(name)
        if sig is None:
            raise KeyError(f"unknown signal {name!r}")
        return sig

    def names(self) -> list[str]:
        return [s.name for s in self.signals]


def _load_yaml(name: str) -> dict[str, Any]:
    text = resources.files("seamguard.data").joinpath(name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"packaged catalog {name} is not a mapping")
    return data


def _range(row: dict[str, Any], kind: SignalKind) -> tuple[float, float] | None:
    name = row.get("name")
    raw = row.get("range")
    if raw is None:
        if kind is SignalKind.GAUGE:
            raise ValueError(f"signal {name}: a gauge needs its physical range: [lo, hi]")
        return None
    if kind is not SignalKind.GAUGE:
        raise ValueError(f"signal {name}: only a gauge has a range, this is {kind.with_article}")
    if not (
        isinstance(raw, list)
        and len(raw) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw)
    ):
        raise ValueError(f"signal {name}: range must be [lo, hi], got {raw!r}")
    lo, hi = float(raw[0]), float(raw[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"signal {name}: range needs finite lo < hi, got [{raw[0]}, {raw[1]}]")
    return lo, hi


def catalog_from_rows(rows: Sequence[dict[str, Any]]) -> SignalCatalog:
    """The catalog from ``signals.yaml``'s rows; raises ValueError naming a signal whose range is
    missing (every gauge has one), misplaced (only gauges) or not lo < hi."""
    signals = []
    for i, r in enumerate(rows):
        kind = SignalKind(r["kind"])
        signals.append(
            Signal(
                index=i,
                name=r["name"],
                unit=r["unit"],
                domain=r["domain"],
                kind=kind,
                entity=EntityKind(r["entity"]),
                description=r.get("description", ""),
                range=_range(r, kind),
            )
        )
    return SignalCatalog(tuple(signals))


@cache
def signal_catalog() -> SignalCatalog:
    return catalog_from_rows(_load_yaml("signals.yaml")["signals"])


# NVML clocks-event reason bits. Only slowdowns the hardware imposes are evidence of
# a gray failure; idle, application clocks, power cap and sync boost are normal operation.
THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}
