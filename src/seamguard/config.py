"""The engine's validated configuration: policy is data.

The packaged ``data/defaults.yaml`` is the documented default; a user file is merged over
it. Validation happens at load and an error names the file, the key and what was expected.

A leaf: it imports none of the engine's packages (which all import it), nor the sources',
actuators' or service's sections. Those sections (``SITE_SECTIONS``) share the user's file but
are the daemon's: ``seamguard.site_config`` validates them, and the engine leaves them alone.
"""

from __future__ import annotations

import math
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, model_validator

from seamguard.detector_config import DetectorsConfig
from seamguard.model.action_kinds import ActionKind
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.states import Admission, JobClass, State
from seamguard.strict_model import StrictModel, format_validation
from seamguard.yaml_input import merge_mappings, parse_yaml, read_yaml_text


class EngineConfig(StrictModel):
    tick_s: float = Field(gt=0)
    stale_after_s: float = Field(gt=0)
    observe_every_s: float = Field(gt=0)
    # A source whose sample times run further than this (or a tick, if longer) from their arrival,
    # against its peers, has its clock corrected (docs/scoring.md, "Time alignment").
    clock_skew_s: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "window_ticks" in data:
            raise ValueError(
                "window_ticks was removed: the history kept for trends now always covers "
                "scores.trend_window_s (and economics.smooth_s) at any tick_s; delete the key"
            )
        return data


class ScoresConfig(StrictModel):
    exposure_scale_gpus: float = Field(gt=0)
    trend_window_s: float = Field(gt=0)
    trend_halflife_s: float = Field(gt=0)
    trend_min_points: int = Field(ge=3)
    # A slope counts only by how far it stands out of its own noise: evidence is ramped on the
    # slope minus this many standard errors (docs/scoring.md, "Trends against their noise").
    trend_confidence_z: float = Field(ge=0)


class ClassifierConfig(StrictModel):
    degraded_enter: float = Field(gt=0, lt=1)
    degraded_exit: float = Field(ge=0, lt=1)
    quarantine_enter: float = Field(gt=0, le=1)
    quarantine_exit: float = Field(ge=0, lt=1)
    prs_quarantine: float = Field(gt=0, le=1)
    recovery_share: float = Field(gt=0, le=1)
    min_dwell_s: float = Field(ge=0)
    failed_hold_s: float = Field(ge=0)
    flap_window_s: float = Field(gt=0)
    flap_max_transitions: int = Field(ge=1)
    flap_dwell_multiplier: float = Field(ge=1)
    repeat_halflife_s: float = Field(gt=0)
    repeat_threshold_step: float = Field(ge=0, lt=0.5)
    repeat_max_offences: int = Field(ge=0)
    lemon_halflife_s: float = Field(gt=0)
    lemon_failures: float = Field(gt=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if not self.degraded_exit < self.degraded_enter:
            raise ValueError("degraded_exit must be below degraded_enter (hysteresis)")
        if not self.quarantine_exit < self.quarantine_enter:
            raise ValueError("quarantine_exit must be below quarantine_enter (hysteresis)")
        if not self.degraded_enter < self.quarantine_enter:
            raise ValueError("degraded_enter must be below quarantine_enter")
        lowest = self.degraded_enter - self.repeat_threshold_step * self.repeat_max_offences
        if lowest <= self.degraded_exit:
            raise ValueError(
                "repeat_threshold_step x repeat_max_offences would push degraded_enter to or below "
                f"degraded_exit ({lowest:.3f} <= {self.degraded_exit})"
            )
        return self


Criticality = Literal["exploratory", "standard", "release"]


# Kinds whose quarantine the planner turns into a drain or an island (``control.containment``).
CONTAINED_KINDS: tuple[EntityKind, ...] = (
    EntityKind.GPU, EntityKind.NODE, EntityKind.LINK, EntityKind.RACK, EntityKind.CDU, EntityKind.ROW,
    EntityKind.PDU, EntityKind.SWITCH,
)  # fmt: skip


class EconomicsConfig(StrictModel):
    restart_cost_s: float = Field(ge=0)
    horizon_s: float = Field(gt=0)
    harmful_enter_ratio: float = Field(gt=0)
    harmful_exit_ratio: float = Field(gt=0)
    min_slowdown: float = Field(ge=0)
    min_z: float = Field(ge=0)
    sku_spread: float = Field(ge=0, lt=1)
    smooth_s: float = Field(ge=0)
    criticality_weight: dict[Criticality, float]
    rebalance_s: float = Field(ge=0)
    rebalance_recovers: float = Field(ge=0, le=1)
    diagnose_s: float = Field(ge=0)
    slip_penalty: float = Field(ge=0)
    revalue_s: float = Field(
        gt=0, description="how often a tolerated quarantine is valued again (containment)"
    )
    fault_duration_s: dict[EntityKind, float] = Field(
        description="per kind of a quarantined entity, how long its fault is expected to last (containment)"
    )
    repair_s: float = Field(
        gt=0,
        description="how long a part that failed hard stays out: what a job with no spare waits (containment)",
    )

    @model_validator(mode="after")
    def _durations(self) -> Self:
        for kind in CONTAINED_KINDS:
            value = self.fault_duration_s.get(kind)
            if value is None:
                raise ValueError(
                    f"fault_duration_s: missing {kind.value} (every kind a quarantine may contain)"
                )
        for kind, value in self.fault_duration_s.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"fault_duration_s.{kind.value}: a duration must be finite and > 0 s, got {value}"
                )
        return self

    @model_validator(mode="after")
    def _weights(self) -> Self:
        missing = [c for c in ("exploratory", "standard", "release") if c not in self.criticality_weight]
        if missing:
            raise ValueError(f"criticality_weight: missing {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if not self.harmful_exit_ratio < self.harmful_enter_ratio:
            raise ValueError("harmful_exit_ratio must be below harmful_enter_ratio (hysteresis)")
        return self


class ThermalTripConfig(StrictModel):
    """A GPU heading for its shutdown temperature: the driver takes it off the bus (XID 79) and it
    stays out until someone looks at it. Not a rate: a time to trip, from the signal's confident
    trend (its trend rule's slope less ``scores.trend_confidence_z`` errors; control/thermal_trip.py)."""

    signal: str = Field(description="the temperature whose trend rule projects the trip")
    shutdown_c: float = Field(
        gt=0, description="the GPU's shutdown temperature (nvidia-smi: GPU Shutdown Temp)"
    )
    margin_c: float = Field(gt=0, description="only a GPU within this of shutdown_c is projected")
    domain_share: float = Field(
        gt=0,
        le=1,
        description="a domain's trips count when GPUs heading for shutdown sit on more than this share of its nodes",
    )
    within_s: float = Field(gt=0, description="a trip projected further out than this is not counted")
    act_within_s: float = Field(
        default=180.0,
        gt=0,
        description="containment weighs a projected trip once it is due within this; a domain still "
        "heating is valued again every tick, so waiting shows whether the climb levels off",
    )

    @model_validator(mode="after")
    def _act_before_horizon(self) -> Self:
        if self.act_within_s > self.within_s:
            raise ValueError(
                f"act_within_s ({self.act_within_s:g}) must not exceed within_s ({self.within_s:g})"
            )
        return self


class HazardConfig(StrictModel):
    thermal_trip: ThermalTripConfig | None = Field(default=None, description="null: no GPU trip is projected")
    base_per_day: dict[EntityKind, float]
    software_per_gpu_day: float = Field(ge=0)
    # Per part kind: the same evidence says more about a GPU (error counters foretell its XID)
    # than about an uplink (retransmits may last for days). A kind not named gains nothing.
    gfs_gain: dict[EntityKind, float]
    prs_gain: float = Field(ge=0)
    max_multiplier: float = Field(ge=1)
    # Signals whose evidence says a part may fail hard (errors, XIDs, a silent host). The rest
    # (clocks, step time, temperatures, latency) say it is slow: harm, not hazard.
    precursors: list[str]
    learn_halflife_s: float = Field(gt=0, description="memory of the observed failure rate")
    learn_prior_failures: float = Field(gt=0, description="weight of the nominal rates, in failures")
    learn_outlier_share: float = Field(ge=0, lt=1, description="prior probability of a fleet far off nominal")
    learn_outlier_mean: float = Field(gt=1, description="that fleet's mean rate multiplier")

    @model_validator(mode="after")
    def _rates(self) -> Self:
        for kind, rate in self.base_per_day.items():
            if not (rate >= 0 and math.isfinite(rate)):
                raise ValueError(f"base_per_day.{kind.value}: a rate must be finite and >= 0, got {rate}")
        for kind, gain in self.gfs_gain.items():
            if not (gain >= 0 and math.isfinite(gain)):
                raise ValueError(f"gfs_gain.{kind.value}: a gain must be finite and >= 0, got {gain}")
        return self


class JobCheckpointConfig(StrictModel):
    """What a job saves, how it may save it, and what it is worth (``docs/checkpointing.md``)."""

    state_gb_per_gpu: float = Field(gt=0)
    changed_share: float = Field(gt=0, le=1)
    incremental_every: int = Field(ge=1, description="in incremental mode, a full save every this many")
    host_copy_gbps_per_gpu: float = Field(ge=0, description="0: no room for a copy in host memory")
    peer_gbps_per_node: float = Field(ge=0, description="0: no copy on buddy nodes")
    overhead_s: float = Field(ge=0)
    collective_timeout_s: float = Field(gt=0)
    targets: list[str] = Field(default_factory=list, description="storage paths; empty: every path known")
    cost_per_gpu_hour: float = Field(ge=0)
    criticality: Criticality
    deadline: datetime | None = None
    remaining_work_h: float | None = Field(
        default=None, gt=0, description="at full pace; with deadline: slip risk"
    )
    restart_s: float | None = Field(
        default=None,
        ge=0,
        description="re-initialising the job after a restart, its restore excluded; "
        "None: economics.restart_cost_s",
    )


class StoragePathConfig(StrictModel):
    write_gbps: float = Field(gt=0)
    read_gbps: float = Field(gt=0)


class CheckpointConfig(StrictModel):
    defaults: JobCheckpointConfig
    jobs: dict[str, JobCheckpointConfig] = Field(
        default_factory=dict
    )  # each entry: overrides of ``defaults``
    storage: dict[str, StoragePathConfig]  # nameplate per path; ``default`` for any path not named
    replan_change: float = Field(gt=0, description="relative interval change that journals a new plan")

    @model_validator(mode="before")
    @classmethod
    def _job_overrides(cls, data: Any) -> Any:
        """A job entry names only what differs from ``defaults``."""
        if (
            isinstance(data, dict)
            and isinstance(data.get("jobs"), dict)
            and isinstance(data.get("defaults"), dict)
        ):
            base = data["defaults"]
            data = {**data, "jobs": {name: {**base, **(over or {})} if isinstance(over, dict) or over is None
                                         else over for name, over in data["jobs"].items()}}  # fmt: skip
        return data

    @model_validator(mode="after")
    def _default_path(self) -> Self:
        if "default" not in self.storage:
            raise ValueError("storage: needs a 'default' entry for paths not named")
        return self

    def for_job(self, name: str) -> JobCheckpointConfig:
        return self.jobs.get(name, self.defaults)

    def path(self, name: str) -> StoragePathConfig:
        return self.storage.get(name, self.storage["default"])


# Every history signal keeps this many ticks per entity (at 131,072 GPUs one tick of one GPU signal
# is 1 MB, and four GPU histories are kept): the bound refuses a mistyped tick (0.15 for 15) or
# window before it allocates gigabytes. A 1 s tick still holds a 10-minute trend window.
MAX_HISTORY_TICKS = 1024


StateName = Literal["healthy", "degraded", "recovery_unsafe", "quarantine", "harmful", "failed", "unknown"]


class Config(StrictModel):
    engine: EngineConfig
    detectors: DetectorsConfig
    scores: ScoresConfig
    classifier: ClassifierConfig
    economics: EconomicsConfig
    hazard: HazardConfig
    checkpoint: CheckpointConfig
    admissibility: dict[StateName, dict[JobClass, Admission]]
    actions: dict[EntityKind, dict[StateName, list[ActionKind]]]  # names checked against docs/actions.md

    @model_validator(mode="after")
    def _complete_matrix(self) -> Self:
        for state in State:
            row = self.admissibility.get(state.label)  # type: ignore[call-overload]
            if row is None:
                raise ValueError(f"admissibility: missing row for state {state.label!r}")
            missing = [c.value for c in JobClass if c not in row]
            if missing:
                raise ValueError(f"admissibility.{state.label}: missing job class(es) {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _precursors_scored(self) -> Self:
        """Each precursor a signal some rule scores (every rule's evidence counts), or
        ``rule:signal`` for one rule's only (``level:gpu.temp_c``: heat near the trip point)."""
        det = self.detectors
        rules: dict[str, set[str]] = {"level": set(det.level), "trend": set(det.trend), "peer": set(det.peer),
                                      "usual": set(det.usual), "counter": set(det.counter),
                                      "flag": set(det.flag)}  # fmt: skip
        scored = det.scored_signals()
        for entry in self.hazard.precursors:
            rule, _, name = entry.rpartition(":")
            if signal_catalog().get(name) is None:
                raise ValueError(
                    f"hazard.precursors: unknown signal {name!r} in {entry!r} (see docs/signals.md)"
                )
            if rule and rule not in rules:
                raise ValueError(f"hazard.precursors: {entry!r}: the rule is one of {', '.join(rules)}")
            if name not in (rules[rule] if rule else scored):
                raise ValueError(
                    f"hazard.precursors: no {rule or 'detector'} rule scores {name!r}, so {entry!r} could "
                    "never raise a failure rate: add the rule under detectors or drop it here"
                )
        if len(set(self.hazard.precursors)) != len(self.hazard.precursors):
            raise ValueError("hazard.precursors: list each signal once")
        trip = self.hazard.thermal_trip
        if trip is not None:
            known = signal_catalog().get(trip.signal)
            if known is None or known.entity is not EntityKind.GPU:
                raise ValueError(
                    f"hazard.thermal_trip.signal: {trip.signal!r} is not a GPU signal (docs/signals.md)"
                )
            if trip.signal not in det.trend:
                raise ValueError(
                    f"hazard.thermal_trip.signal: no trend rule scores {trip.signal!r}, so no trip could be "
                    "projected: add it under detectors.trend, or set hazard.thermal_trip to null"
                )
        return self

    def history_span_s(self) -> float:
        """The longest window read from history: trends, harm's pace, persisted readings."""
        return max(self.scores.trend_window_s, self.economics.smooth_s, *self.detectors.persist.values())

    def history_ticks(self) -> int:
        """Ticks of history each history signal keeps: a trend fitted over a third of its window
        (a short ring at a short tick) is a trend of noise."""
        return max(4, math.ceil(self.history_span_s() / self.engine.tick_s) + 1)

    @model_validator(mode="after")
    def _history_bounded(self) -> Self:
        longest = self.history_span_s()
        if not math.isfinite(longest) or not math.isfinite(self.engine.tick_s):
            raise ValueError(
                "engine.tick_s, scores.trend_window_s, economics.smooth_s and detectors.persist must be finite"
            )
        ticks = self.history_ticks()
        if ticks > MAX_HISTORY_TICKS:
            raise ValueError(
                f"the history a trend, harm or persist window needs is {ticks} ticks "
                f"({longest:g} s at engine.tick_s {self.engine.tick_s:g}); at most {MAX_HISTORY_TICKS}: "
                "shorten scores.trend_window_s, economics.smooth_s or detectors.persist, or lengthen the tick"
            )
        return self

    def admission(self, state: State, job_class: JobClass) -> Admission:
        return self.admissibility[state.label][job_class]  # type: ignore[index]

    def actions_for(self, kind: EntityKind, state: State) -> list[ActionKind]:
        per_state = self.actions.get(kind, {})
        return list(per_state.get(state.label, []))  # type: ignore[call-overload]


# The daemon's sections of the same file (``site_config.SiteConfig``, which a test holds to this set).
SITE_SECTIONS = frozenset({"sources", "safety", "actuators", "service", "ha", "serving"})


def _defaults_text() -> str:
    return resources.files("seamguard.data").joinpath("defaults.yaml").read_text(encoding="utf-8")


def default_policy() -> dict[str, Any]:
    """The packaged defaults as a mapping, every section (the engine's and the site's)."""
    return parse_yaml(_defaults_text(), "seamguard/data/defaults.yaml")


def read_policy(path: Path | None) -> tuple[dict[str, Any], str]:
    """The defaults merged with the user's file at ``path`` (if any), and the name errors give."""
    if path is None:
        return default_policy(), "defaults"
    return merge_mappings(default_policy(), parse_yaml(read_yaml_text(path, "config"), str(path))), str(path)


def engine_config(data: dict[str, Any], where: str) -> Config:
    """The engine's sections of a whole policy mapping, validated; the site's are left out."""
    try:
        return Config.model_validate({k: v for k, v in data.items() if k not in SITE_SECTIONS})
    except ValidationError as exc:
        raise format_validation(where, exc) from None


def load_config(path: Path | None = None) -> Config:
    """Defaults merged with ``path``; raises InputError naming the file and key on bad input."""
    return engine_config(*read_policy(path))


def config_from_mapping(override: dict[str, Any]) -> Config:
    """Defaults merged with an in-memory override (tests, the twin, the API)."""
    return engine_config(merge_mappings(default_policy(), override), "config")
