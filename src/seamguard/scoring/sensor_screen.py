"""Sensor faults are not equipment faults: the screen between the detectors and the scores.

Each tick, before the evidence is combined into GFS:

* a flatlined reading (``detectors.flatline``; the store tracks when each reading last
  changed) gives no evidence to any detector, the trend detector included (the store already
  reads it as missing; the trend reads its ring buffer).

It is announced once, when it starts, as a notice: at most ``NAMED`` entities by name and a
count of the rest, however many are affected (a BMS freezing every CDU at once is one notice
per signal, not one per CDU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.model.catalog import Signal
from seamguard.model.topology import Topology
from seamguard.scoring.detectors import unit_text
from seamguard.scoring.evidence import Evidence, FloatArray
from seamguard.telemetry.store import TelemetryStore

BoolArray = npt.NDArray[np.bool_]
NAMED = 3


class SensorScreen:
    """Screens each tick's evidence; remembers what it announced so a notice is given once."""

    def __init__(self, flatline: Iterable[str]) -> None:
        self.flatline = tuple(flatline)
        self._was_flat: dict[str, BoolArray] = {}

    @classmethod
    def from_config(cls, config: Config) -> SensorScreen:
        return cls(config.detectors.flatline)

    def screen(
        self, evidence: Sequence[Evidence], store: TelemetryStore, topology: Topology
    ) -> tuple[list[Evidence], list[str]]:
        """(the evidence that counts, notices of the sensor faults that started this tick)."""
        notices: list[str] = []
        flat: dict[str, BoolArray] = {}
        for name in self.flatline:
            stuck, value, held = store.flatlined(name)
            was = self._was_flat.get(name)
            self._was_flat[name] = stuck
            new = stuck if was is None else stuck & ~was
            if stuck.any():
                flat[name] = stuck
            if new.any():
                notices.append(_flatline_notice(store.catalog[name], topology, new, value, held))
        return [_drop(ev, flat[ev.signal]) if ev.signal in flat else ev for ev in evidence], notices


def _drop(ev: Evidence, mask: BoolArray) -> Evidence:
    """``ev`` with no evidence where ``mask`` (the same object when there was none to drop)."""
    if not np.any(mask & (ev.evidence > 0)):
        return ev
    return replace(ev, evidence=np.where(mask, 0.0, ev.evidence))


def _named(topology: Topology, sig: Signal, local: npt.NDArray[np.int64]) -> list[str]:
    members = topology.members[sig.entity]
    return [topology.ids[int(members[i])] for i in local[:NAMED].tolist()]


def _more(total: int) -> str:
    return f" and {total - NAMED} more" if total > NAMED else ""


def _flatline_notice(
    sig: Signal, topology: Topology, new: BoolArray, value: FloatArray, held: FloatArray
) -> str:
    local = np.flatnonzero(new)
    unit = unit_text(sig)
    shown = [
        f"{eid} at {float(value[i]):.6g}{' ' + unit if unit else ''} for {float(held[i]):.0f} s"
        for eid, i in zip(_named(topology, sig, local), local[:NAMED].tolist(), strict=True)
    ]
    where = f"{local.size} {sig.entity.value}s: " if local.size > 1 else ""
    return (
        f"{sig.name} flatlined on {where}{', '.join(shown)}{_more(local.size)}: one value far longer "
        "than the reading's noise allows, a stuck sensor; read as missing until it moves"
    )
