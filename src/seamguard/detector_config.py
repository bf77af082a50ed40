"""The detectors' rules (``detectors`` in the engine's config): which readings become evidence, how.

Part of the engine's config (``seamguard.config`` re-exports ``DetectorsConfig``), kept apart
so each module stays small; a leaf like it: it imports no engine package.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from seamguard.model.catalog import THROTTLE_BITS, SignalKind, signal_catalog
from seamguard.strict_model import StrictModel

Weight = Field(gt=0.0, le=1.0)


class _Band(StrictModel):
    """warn/crit bounds: evidence is 0 at warn and 1 at crit."""

    warn: float
    crit: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.crit > self.warn:
            raise ValueError(f"crit ({self.crit}) must be greater than warn ({self.warn})")
        return self


class LevelRule(StrictModel):
    """For direction high, crit > warn; for direction low (e.g. a minimum flow), crit < warn."""

    warn: float
    crit: float
    direction: Literal["high", "low"] = "high"
    weight: float = Weight
    recovery: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.direction == "high" and not self.crit > self.warn:
            raise ValueError(f"direction high needs crit ({self.crit}) above warn ({self.warn})")
        if self.direction == "low" and not self.crit < self.warn:
            raise ValueError(f"direction low needs crit ({self.crit}) below warn ({self.warn})")
        return self


class TrendRule(_Band):
    direction: Literal["rising", "falling"] = "rising"
    log: bool = False
    weight: float = Weight
    recovery: bool = False
    # Evidence only while the value is beyond this (above it when rising, below when falling):
    # a GPU warming from idle to its working temperature after a job starts is load, not a fault.
    beyond: float | None = None
    # The same gate relative to the entity's own usual level (its long-run geometric mean): a
    # backend's save traffic lifts its latency, by how much depends on the backend, not the site.
    beyond_usual: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.warn <= 0:
            raise ValueError("trend warn must be a positive slope; use direction to choose the sign")
        return self


class PeerRule(_Band):
    cohort: Literal["job", "work", "fleet", "cdu", "leaf", "model"]
    measure: Literal["relative", "absolute"] = "relative"
    z_min: float = Field(default=4.0, ge=0.0)
    direction: Literal["high", "low"] = "high"
    weight: float = Weight
    min_cohort: int = Field(default=4, ge=3)
    recovery: bool = False
    # Learn each entity's own usual offset from its cohort over this half-life and judge only the
    # change: real optics, like real sensors, differ from each other by a steady factor.
    baseline_halflife_s: float | None = Field(default=None, gt=0)


class UsualRule(_Band):
    """A reading against the entity's own usual level (``scoring.usual_level``): warn and crit are
    shares of it, below it (direction low) or above it. For what no cohort can judge: a site with
    two CDUs has no fleet of peers, and a pump that lost half its flow an hour ago no longer trends."""

    direction: Literal["high", "low"] = "low"
    weight: float = Weight
    recovery: bool = False

    @model_validator(mode="after")
    def _share(self) -> Self:
        if self.warn <= 0 or (self.direction == "low" and self.crit >= 1):
            raise ValueError("usual warn must be a positive share, and crit below 1 for direction low")
        return self


class CounterRule(_Band):
    per: Literal["second", "minute", "hour"] = "second"
    weight: float = Weight
    recovery: bool = False


class FlagRule(StrictModel):
    evidence: float = Weight
    recovery: bool = False


class ThrottleConfig(StrictModel):
    signal: str = "gpu.throttle_reasons"
    bits: dict[str, float]

    @model_validator(mode="after")
    def _known_bits(self) -> Self:
        known = set(THROTTLE_BITS.values())
        for name, w in self.bits.items():
            if name not in known:
                raise ValueError(f"unknown throttle bit {name!r}; known: {', '.join(sorted(known))}")
            if not 0 < w <= 1:
                raise ValueError(f"weight of throttle bit {name!r} must be in (0, 1], got {w}")
        return self


class XidConfig(StrictModel):
    signal: str = "gpu.xid"
    decay_halflife_s: float = Field(gt=0)


class HeartbeatConfig(StrictModel):
    signal: str = "node.heartbeat_age_s"
    fail_after_s: float = Field(gt=0)
    mass_stale_fraction: float = Field(gt=0, le=1)


class DetectorsConfig(StrictModel):
    level: dict[str, LevelRule] = Field(default_factory=dict)
    trend: dict[str, TrendRule] = Field(default_factory=dict)
    peer: dict[str, PeerRule] = Field(default_factory=dict)
    usual: dict[str, UsualRule] = Field(default_factory=dict)
    counter: dict[str, CounterRule] = Field(default_factory=dict)
    flag: dict[str, FlagRule] = Field(default_factory=dict)
    hard_counters: list[str] = Field(default_factory=list)
    # Noisy gauges: level and peer detectors read the median of the samples of the last so many
    # seconds (three at least), so one spike never counts; for a counter, its mean rate over them.
    persist: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(default_factory=dict)
    throttle: ThrottleConfig
    xid: XidConfig
    heartbeat: HeartbeatConfig
    # Sensor faults (docs/scoring.md): a gauge reporting exactly one value this many seconds is a
    # stuck sensor; a reading whose evidence no coupled reading of the same entity shares is not
    # believed (``scoring.corroboration``).
    flatline: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    corroborate: dict[str, list[str]] = Field(default_factory=dict)

    def scored_signals(self) -> set[str]:
        """Every signal some rule turns into evidence (hard counters fail a part outright)."""
        tables = (self.level, self.trend, self.peer, self.usual, self.counter, self.flag)
        return {name for table in tables for name in table} | {
            self.throttle.signal,
            self.xid.signal,
            self.heartbeat.signal,
        }

    @model_validator(mode="after")
    def _signals_exist(self) -> Self:
        catalog = signal_catalog()
        wanted: dict[str, tuple[SignalKind, ...]] = {}
        numeric: tuple[SignalKind, ...] = (SignalKind.GAUGE,)
        for table, kinds in (
            ("level", numeric),
            ("trend", numeric),
            ("usual", numeric),
            ("peer", (SignalKind.GAUGE, SignalKind.COUNTER)),  # a counter's peers compare rates
            ("persist", (SignalKind.GAUGE, SignalKind.COUNTER)),  # a counter's: its mean rate
            ("counter", (SignalKind.COUNTER,)),
            ("flag", (SignalKind.FLAG,)),
        ):
            for name in getattr(self, table):
                wanted[f"{table}.{name}"] = kinds
        for name in self.hard_counters:
            wanted[f"hard_counters.{name}"] = (SignalKind.COUNTER,)
        for name in self.flatline:
            wanted[f"flatline.{name}"] = numeric
        readings = (SignalKind.GAUGE, SignalKind.COUNTER, SignalKind.FLAG, SignalKind.BITMASK)
        for name, coupled in self.corroborate.items():
            wanted[f"corroborate.{name}"] = numeric
            for other in coupled:
                wanted[f"corroborate.{name}={other}"] = readings
        wanted[f"throttle.signal={self.throttle.signal}"] = (SignalKind.BITMASK,)
        wanted[f"xid.signal={self.xid.signal}"] = (SignalKind.EVENT,)
        wanted[f"heartbeat.signal={self.heartbeat.signal}"] = (SignalKind.GAUGE,)
        for key, kinds in wanted.items():
            name = key.split("=", 1)[1] if "=" in key else key.split(".", 1)[1]
            sig = catalog.get(name)
            if sig is None:
                raise ValueError(f"{key}: unknown signal {name!r} (see docs/signals.md)")
            if sig.kind not in kinds:
                expected = "/".join(k.value for k in kinds)
                raise ValueError(f"{key}: signal {name!r} is {sig.kind.with_article}, expected {expected}")
        for name, coupled in self.corroborate.items():
            kind = catalog[name].entity
            if not coupled:
                raise ValueError(f"corroborate.{name}: name at least one coupled signal")
            for other in coupled:
                if other == name or catalog[other].entity is not kind or coupled.count(other) > 1:
                    raise ValueError(
                        f"corroborate.{name}: {other!r} must be another signal of the same "
                        f"{kind.value}, listed once"
                    )
        return self
