"""Sensor faults are not equipment faults: the screen between the detectors and the scores.

Each tick, before the evidence is combined into GFS:

* a flatlined reading (``detectors.flatline``; the store tracks when each reading last
  changed) gives no evidence to any detector, the trend detector included (the store already
  reads it as missing; the trend reads its ring buffer);
* an uncorroborated reading (``detectors.corroborate``, ``scoring.corroboration``) gives none.

Both are announced once, when they start, as notices: at most ``NAMED`` entities by name and
a count of the rest, however many are affected (a BMS freezing every CDU at once is one
notice per signal, not one per CDU).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.model.catalog import Signal, SignalCatalog
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange, carry
from seamguard.scoring.corroboration import corroborate, drop
from seamguard.scoring.detectors import unit_text
from seamguard.scoring.evidence import Evidence, FloatArray
from seamguard.telemetry.store import TelemetryStore

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
NAMED = 3
# An uncorroborated reading is announced once its dropped evidence is at least this (a detector's
# own 0..1: halfway from warn to crit), when it claims a fault rather than noise near a bound.
CLAIM_MIN = 0.5
# ...and once it has gone uncorroborated this long without a break: at the start of a real fault
# one coupled reading can lead the other by minutes (throughput falls before latency has stayed
# past its gate), which is no sensor fault and not worth a notice.
CLAIM_AFTER_S = 300.0


class SensorScreen:
    """Screens each tick's evidence; remembers what it announced so a notice is given once."""

    def __init__(self, flatline: Iterable[str], corroborate: Mapping[str, Sequence[str]]) -> None:
        self.flatline = tuple(flatline)
        self.rules = {name: tuple(coupled) for name, coupled in corroborate.items()}
        self._was_flat: dict[str, BoolArray] = {}
        self._announced: dict[str, BoolArray] = {}  # rule signal -> uncorroborated episode announced
        self._dropped_since: dict[str, FloatArray] = {}  # rule signal -> since when dropped without a break

    def carry_over(self, change: WorldChange, catalog: SignalCatalog) -> None:
        """Each signal's memory (per entity of its kind) re-indexed: an announced fault stays announced."""

        def fwd(name: str) -> IntArray | None:
            kind = catalog[name].entity
            return None if change.same(kind) else change.kind(kind)

        for flags in (self._was_flat, self._announced):
            for name, values in flags.items():
                if (m := fwd(name)) is not None:
                    flags[name] = carry(values, m, False)
        for name, since in self._dropped_since.items():
            if (m := fwd(name)) is not None:
                self._dropped_since[name] = carry(since, m, np.inf)

    @classmethod
    def from_config(cls, config: Config) -> SensorScreen:
        return cls(config.detectors.flatline, config.detectors.corroborate)

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
        kept = [drop(ev, flat[ev.signal]) if ev.signal in flat else ev for ev in evidence]
        if not self.rules:
            return kept, notices
        result = corroborate(kept, self.rules, lambda name: np.isnan(store.current(name)))
        for name, coupled in self.rules.items():
            own = result.strength.get(name)
            if own is None:  # no detector reads the signal
                continue
            announced = self._announced.get(name)
            if announced is None:
                announced = self._announced[name] = np.zeros(own.size, dtype=bool)
            announced &= own > 0  # an episode ends when the reading gives no evidence at all
            lost = result.dropped.get(name)
            since = self._dropped_since.setdefault(name, np.full(own.size, np.inf))
            if lost is None:
                since.fill(np.inf)
                continue
            since[:] = np.where(lost, np.minimum(since, store.now), np.inf)
            new = lost & (own >= CLAIM_MIN) & ~announced & (store.now - since >= CLAIM_AFTER_S)
            announced |= new
            if new.any():
                sig = store.catalog[name]
                notices.append(_uncorroborated_notice(sig, coupled, topology, new, store.current(name)))
        return result.evidence, notices


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


def _uncorroborated_notice(
    sig: Signal, coupled: Sequence[str], topology: Topology, new: BoolArray, value: FloatArray
) -> str:
    local = np.flatnonzero(new)
    unit = unit_text(sig)
    shown = []
    for eid, i in zip(_named(topology, sig, local), local[:NAMED].tolist(), strict=True):
        v = float(value[i])
        shown.append(f"{eid} ({v:.4g}{' ' + unit if unit else ''})" if np.isfinite(v) else eid)
    where = f"{local.size} {sig.entity.value}s: " if local.size > 1 else ""
    others = ", ".join(coupled[:-1]) + (" or " if len(coupled) > 1 else "") + coupled[-1]
    return (
        f"{sig.name} on {where}{', '.join(shown)}{_more(local.size)} is not corroborated by {others} "
        f"of the same {sig.entity.value}: a sensor or load artefact, not an equipment fault; its "
        "evidence is dropped"
    )
