"""The signal catalog, shipped as data (``seamguard/data/signals.yaml``), and NVML's throttle
bits. The XID catalog is ``seamguard.model.xid``."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Signal:
    index: int
    name: str
    unit: str
    domain: str
    kind: SignalKind
    entity: EntityKind
    description: str


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


@cache
def signal_catalog() -> SignalCatalog:
    rows = _load_yaml("signals.yaml")["signals"]
    return SignalCatalog(
        tuple(
            Signal(
                index=i,
                name=r["name"],
                unit=r["unit"],
                domain=r["domain"],
                kind=SignalKind(r["kind"]),
                entity=EntityKind(r["entity"]),
                description=r.get("description", ""),
            )
            for i, r in enumerate(rows)
        )
    )


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
