"""Scenario files: the cluster, its jobs, physics, faults, hazards and the policies' settings.

A scenario is YAML validated at load; a bad file fails naming the file, the key and what was
expected. Built-in scenarios live in ``seamguard/data/scenarios`` (each documents where its
numbers come from); ``seamguard simulate --scenario NAME|FILE`` takes either.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seamguard.errors import InputError
from seamguard.model.entities import kind_of
from seamguard.model.states import TRAINING_CLASSES, JobClass
from seamguard.strict_model import format_validation
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.faults import hard_default as hard_default  # re-exported: policies import it from here
from seamguard.twin.physics.ambient import AmbientParams
from seamguard.twin.physics.compute import ComputeParams
from seamguard.twin.physics.cooling import CoolingParams
from seamguard.twin.physics.fabric import FabricParams
from seamguard.twin.physics.memory import MemoryParams
from seamguard.twin.physics.power import PowerParams
from seamguard.twin.physics.storage import StorageParams
from seamguard.twin.serving_config import Serving
from seamguard.yaml_input import parse_yaml, read_yaml_text

ONLINE = frozenset({JobClass.ONLINE_PREFILL, JobClass.ONLINE_DECODE})
RUNNABLE = frozenset(JobClass) - {JobClass.CHECKPOINT_PATH}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _bare(value: str, what: str) -> str:
    if not value or "/" in value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be a bare name without '/' or spaces, got {value!r}")
    return value


class Cluster(_Strict):
    cdus: int = Field(ge=1)
    racks_per_cdu: int = Field(ge=1)
    nodes_per_rack: int = Field(ge=1)
    gpus_per_node: int = Field(default=8, ge=1, le=64)
    nodes_per_leaf: int = Field(default=16, ge=1)
    storage: tuple[str, ...] = ("ckpt0",)
    gpu_model: str = "H100-SXM5-80GB"

    @model_validator(mode="after")
    def _names(self) -> Self:
        if not self.storage:
            raise ValueError("storage: at least one checkpoint backend is needed")
        for s in self.storage:
            _bare(s, "storage name")
        if len(set(self.storage)) != len(self.storage):
            raise ValueError("storage: backend names must be distinct")
        return self

    @property
    def nodes(self) -> int:
        return self.cdus * self.racks_per_cdu * self.nodes_per_rack


class Job(_Strict):
    name: str
    job_class: JobClass = Field(alias="class")
    nodes: int = Field(ge=1)
    step_s: float = Field(default=2.0, gt=0)
    comm_share: float = Field(default=0.2, ge=0, lt=1, description="share of a step spent in collectives")
    checkpoint_gb: float = Field(default=500.0, gt=0)
    storage: str | None = None  # default: the cluster's first backend
    fallback_storage: str | None = None
    restart_s: float = Field(default=300.0, ge=0, description="re-initialisation, restore excluded")
    slot_restart_s: float = Field(
        default=120.0, ge=0, description="inference: bring up a replacement replica"
    )
    batch_s: float = Field(default=60.0, ge=0, description="async inference: work in flight on one node")
    slo_factor: float = Field(default=1.25, gt=1, description="online: latency objective over nominal")
    start_h: float = Field(default=0.0, ge=0)
    end_h: float | None = Field(default=None, gt=0)
    criticality: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _bare(self.name, "job name")
        if self.job_class not in RUNNABLE:
            raise ValueError(f"class {self.job_class.value!r} is a path, not a job the twin can run")
        if self.end_h is not None and not self.end_h > self.start_h:
            raise ValueError(f"end_h ({self.end_h}) must be after start_h ({self.start_h})")
        return self

    @property
    def training(self) -> bool:
        return self.job_class in TRAINING_CLASSES


class Physics(_Strict):
    ambient: AmbientParams = AmbientParams()
    cooling: CoolingParams = CoolingParams()
    compute: ComputeParams = ComputeParams()
    power: PowerParams = PowerParams()
    fabric: FabricParams = FabricParams()
    storage: StorageParams = StorageParams()
    memory: MemoryParams = MemoryParams()


class DeclaredFault(_Strict):
    kind: str
    target: str
    onset_h: float = Field(ge=0)
    ramp_h: float = Field(default=0.0, ge=0)
    severity: float = Field(default=1.0, gt=0, le=2)
    duration_h: float | None = Field(default=None, gt=0, description="facility faults: how long it lasts")
    hard: bool | None = None  # default: the kind's (link_gray may end down with hard: true)
    xid: int | None = Field(default=None, ge=0)
    repair_h: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        spec = FAULT_KINDS.get(self.kind)
        if spec is None:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        try:
            got = kind_of(self.target)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if got is not spec.target:
            raise ValueError(f"fault {self.kind} targets a {spec.target.value}, got {self.target!r}")
        if self.kind == "exporter_silent" and self.ramp_h <= 0:
            raise ValueError("exporter_silent needs ramp_h > 0 (how long the exporter stays silent)")
        return self


class HazardStep(_Strict):
    """From ``at_h`` on, every background rate is ``scale`` times what ``hazard_scale`` sets
    (a hot season, an aging batch, a bad firmware rollout): what a static interval cannot see."""

    at_h: float = Field(ge=0)
    scale: float = Field(ge=0)


class Hazard(_Strict):
    """Background failures: a Poisson process per component of the kind's target type.

    For job-level kinds (software crashes, hangs) the rate is per GPU of the job: software
    faults grow with the number of ranks that can hit them.
    """

    name: str
    kind: str
    per_component_day: float = Field(ge=0)
    precursor_probability: float = Field(default=0.0, ge=0, le=1)
    precursor_h: tuple[float, float] = (0.5, 2.0)  # log-uniform range of the gray phase
    severity: tuple[float, float] = (1.0, 1.0)
    duration_h: float | None = Field(default=None, gt=0)
    hard: bool | None = None
    repair_h: float | None = Field(default=None, ge=0)
    published_count: int | None = Field(
        default=None, ge=0, description="what the source reports, for the docs"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        lo, hi = self.precursor_h
        if not 0 < lo <= hi:
            raise ValueError(f"precursor_h must be 0 < low <= high, got {self.precursor_h}")
        slo, shi = self.severity
        if not 0 < slo <= shi <= 2:
            raise ValueError(f"severity must be 0 < low <= high <= 2, got {self.severity}")
        return self


class Lemons(_Strict):
    """A few nodes that fail again and again: their node and GPU hazards are multiplied."""

    nodes: int = Field(default=0, ge=0)
    multiplier: float = Field(default=10.0, ge=1)


class Operations(_Strict):
    """What people and schedulers do, the same under every policy."""

    diagnose_h: float = Field(default=2.0, ge=0, description="a drained node with nothing wrong comes back")
    repair_h: float = Field(default=24.0, ge=0, description="default component repair time")
    triage_h: float = Field(default=1.0, ge=0, description="a failed node no signal names is found by hand")
    hang_timeout_s: float = Field(default=600.0, ge=0, description="NCCL watchdog")
    sdc_detect_h: float = Field(default=2.0, ge=0, description="silent corruption is noticed (loss spike)")
    min_checkpoint_gap_s: float = Field(default=120.0, ge=0, description="least time between two saves")


class BinaryPolicy(_Strict):
    checkpoint_interval_min: float = Field(default=30.0, gt=0)
    health_check_s: float = Field(default=300.0, gt=0, description="NHC / Slurm HealthCheckInterval")
    temp_limit_c: float = Field(default=92.0)
    heartbeat_limit_s: float = Field(default=120.0, gt=0)


class YoungDalyPolicy(_Strict):
    health_check_s: float = Field(default=300.0, gt=0)
    temp_limit_c: float = Field(default=92.0)
    heartbeat_limit_s: float = Field(default=120.0, gt=0)
    mtbf_h: float | None = Field(default=None, gt=0, description="default: from the scenario's hazards")


class SeamguardPolicy(_Strict):
    config: dict[str, Any] = {}  # engine config overrides (docs/config.md)


class Policies(_Strict):
    binary: BinaryPolicy = BinaryPolicy()
    young_daly: YoungDalyPolicy = Field(default=YoungDalyPolicy(), alias="young-daly")
    seamguard: SeamguardPolicy = SeamguardPolicy()


class Observation(_Strict):
    """Where policies see telemetry: everywhere (``full``), or per cell around faults (``windows``)."""

    mode: Literal["full", "windows"] = "full"
    cell_racks: int = Field(default=16, ge=1)
    warmup_min: float = Field(default=20.0, ge=0)
    cooldown_min: float = Field(default=15.0, ge=0)
    quiet_step_min: float = Field(default=10.0, gt=0, description="step length between windows")
    dropout: float = Field(default=0.01, ge=0, lt=0.5)
    sentinel_rate: float = Field(default=0.0005, ge=0, lt=0.1)


class Scenario(_Strict):
    name: str
    description: str = ""
    sources: tuple[str, ...] = ()
    duration_h: float = Field(gt=0)
    tick_s: float = Field(default=30.0, gt=0)
    cluster: Cluster
    jobs: tuple[Job, ...]
    physics: Physics = Physics()
    faults: tuple[DeclaredFault, ...] = ()
    hazard_preset: str | None = None  # a shipped hazard table (data/hazards/<name>.yaml), before `hazards`
    hazard_scale: float = Field(default=1.0, ge=0, description="multiplies every background rate")
    hazards: tuple[Hazard, ...] = ()
    hazard_drift: tuple[HazardStep, ...] = ()
    lemons: Lemons = Lemons()
    operations: Operations = Operations()
    policies: Policies = Policies()
    observation: Observation = Observation()
    serving: Serving | None = None  # disaggregated prefill/decode (twin.serving); None: per-replica model

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.jobs:
            raise ValueError("jobs: at least one job is needed")
        names = [j.name for j in self.jobs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"jobs: duplicate name(s) {', '.join(sorted(dup))}")
        need = sum(j.nodes for j in self.jobs)
        if need > self.cluster.nodes:
            raise ValueError(f"jobs need {need} nodes but the cluster has {self.cluster.nodes}")
        for j in self.jobs:
            for s in (j.storage, j.fallback_storage):
                if s is not None and s not in self.cluster.storage:
                    raise ValueError(
                        f"job {j.name}: storage {s!r} is not one of {', '.join(self.cluster.storage)}"
                    )
            if j.end_h is not None and j.end_h > self.duration_h:
                raise ValueError(
                    f"job {j.name}: end_h {j.end_h} is after the scenario's end ({self.duration_h} h)"
                )
        for i, f in enumerate(self.faults):
            if f.onset_h >= self.duration_h:
                raise ValueError(
                    f"faults.{i}: onset_h {f.onset_h} is not before the end ({self.duration_h} h)"
                )
        for h in self.hazards:
            if FAULT_KINDS[h.kind].benign:
                raise ValueError(f"hazard {h.name}: {h.kind} is benign; declare confounders under faults")
        if self.serving is not None:
            classes = {j.name: j.job_class for j in self.jobs}
            for pool, want in (
                (self.serving.prefill, JobClass.ONLINE_PREFILL),
                (self.serving.decode, JobClass.ONLINE_DECODE),
            ):
                for name in pool:
                    if classes.get(name) is not want:
                        raise ValueError(f"serving: {name!r} is not an {want.value} job of the scenario")
        if self.lemons.nodes > self.cluster.nodes:
            raise ValueError(
                f"lemons.nodes ({self.lemons.nodes}) exceeds the cluster's {self.cluster.nodes} nodes"
            )
        return self

    @property
    def duration_s(self) -> float:
        return self.duration_h * 3600.0

    def storage_of(self, job: Job) -> str:
        return job.storage or self.cluster.storage[0]


def hazard_presets() -> list[str]:
    root = resources.files("seamguard.data").joinpath("hazards")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _expand_preset(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``hazard_preset: NAME`` puts the shipped table's hazards before the scenario's own."""
    name = data.get("hazard_preset")
    if name is None:
        return data
    if not isinstance(name, str) or name not in hazard_presets():
        raise InputError(
            f"{where}: key hazard_preset",
            f"unknown preset {name!r}; expected one of {', '.join(hazard_presets())}",
        )
    res = resources.files("seamguard.data").joinpath("hazards").joinpath(f"{name}.yaml")
    preset = parse_yaml(res.read_text(encoding="utf-8"), f"hazard preset {name}")
    own = data.get("hazards") or []
    if not isinstance(own, list):
        raise InputError(f"{where}: key hazards", "expected a list of hazards")
    out = dict(data)
    out["hazards"] = list(preset.get("hazards", [])) + list(own)
    return out


def builtin_names() -> list[str]:
    root = resources.files("seamguard.data").joinpath("scenarios")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _validate(data: dict[str, Any], where: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise format_validation(where, exc) from None


def scenario_from_mapping(data: dict[str, Any], where: str = "scenario") -> Scenario:
    """A scenario built in code (benches, tests), with ``hazard_preset`` expanded as from a file."""
    return _validate(_expand_preset(data, where), where)


def load_scenario(name_or_path: str, overrides: dict[str, Any] | None = None) -> Scenario:
    """A built-in scenario by name, or a YAML file; ``overrides`` are merged over it (tests, CLI)."""
    from seamguard.yaml_input import merge_mappings

    path = Path(name_or_path)
    if name_or_path in builtin_names():
        res = resources.files("seamguard.data").joinpath("scenarios").joinpath(f"{name_or_path}.yaml")
        where, text = f"scenario {name_or_path}", res.read_text(encoding="utf-8")
    elif path.suffix in (".yaml", ".yml") or path.exists():
        text = read_yaml_text(path, "scenario")
        where = str(path)
    else:
        raise InputError(
            "--scenario",
            f"{name_or_path!r} is neither a built-in scenario ({', '.join(builtin_names())}) nor a file",
        )
    data = parse_yaml(text, where)
    if overrides:
        data = merge_mappings(data, overrides)
    return _validate(_expand_preset(data, where), where)
