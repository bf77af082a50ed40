"""Whole twin scenarios drawn at random, so that policies are judged on clusters nobody tuned for.

``sample_mapping(seed)`` draws one scenario as the mapping a scenario YAML file holds (so it can
be written out and re-run with ``--scenario FILE``); ``sample_scenario(seed)`` validates it. The
draw is a pure function of the seed (one numpy Generator, keyed apart from the twin's own streams)
and of ``Bounds``, which tests shrink to keep runs short.

Two families share the draw. ``mixed``: any cluster shape, job mix and fault kinds, uniform over
the kinds the twin knows. ``crowded`` (one draw in five): the shape no built-in scenario has and
where containment is most tempting and least affordable: almost no spares, two synchronous
training jobs beside online serving, a CDU's supply water warming for hours under them, a
congested leaf, a slow checkpoint backend, a degrading cold plate and a hung job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from seamguard.errors import InputError
from seamguard.model.inventory import NodeRecord
from seamguard.model.states import JobClass
from seamguard.twin.cluster import ClusterSpec, generate_cluster
from seamguard.twin.faults import FAULT_KINDS, HardEffect
from seamguard.twin.scenario import Scenario, scenario_from_mapping

SAMPLER_KEY = 0x5A3B  # the Generator's first key word: draws never share a stream with a world's
FAMILIES = ("mixed", "crowded")
CROWDED_SHARE = 0.2
CROWDED_KINDS = ("supply_temp_rise", "switch_congestion", "storage_tail", "thermal_interface", "job_hang")
# Serving-path kinds act only on a disaggregated deployment (``twin.serving``), which sampled
# scenarios do not run: drawn, they would cost nothing.
HARMFUL_KINDS = tuple(k for k, spec in FAULT_KINDS.items() if not spec.benign and not spec.serving)
BENIGN_KINDS = tuple(k for k, spec in FAULT_KINDS.items() if spec.benign)
# Severity ranges where the kind's own scale differs from "1 = the reference fault".
SEVERITY = {"cdu_flow_loss": (0.2, 0.9), "supply_temp_rise": (0.3, 1.5), "psu_loss": (0.3, 1.2)}
DEFAULT_SEVERITY = (0.3, 1.5)
ON_JOB_SHARE = 0.85  # faults land on nodes that run work this often; the rest hit spares or idle ones
HOUR = 3600.0


@dataclass(frozen=True)
class Bounds:
    """The distribution's support. Defaults are the issue's; tests shrink sizes and durations.

    ``gpu_hours`` caps GPUs x hours: the twin's cost grows with both, and 40 scenarios x 4
    policies must run in well under an hour on two cores (docs/twin.md gives the measurement).
    """

    gpus: tuple[int, int] = (64, 4096)
    duration_h: tuple[float, float] = (4.0, 48.0)
    gpu_hours: float = 49_152.0
    spare_fraction: tuple[float, float] = (0.0, 0.10)
    restart_min: tuple[float, float] = (2.0, 20.0)
    faults: tuple[int, int] = (2, 7)
    confounders: tuple[int, int] = (1, 3)

    def __post_init__(self) -> None:
        checks = (
            ("gpus", self.gpus, 16),
            ("duration_h", self.duration_h, 1e-9),
            ("spare_fraction", self.spare_fraction, 0.0),
            ("restart_min", self.restart_min, 0.0),
            ("faults", self.faults, 0),
            ("confounders", self.confounders, 0),
        )
        for name, (lo, hi), least in checks:
            if not least <= lo <= hi:
                raise InputError(f"sampler bounds.{name}", f"need {least} <= low <= high, got ({lo}, {hi})")
        if 1 << (self.gpus[1].bit_length() - 1) < self.gpus[0]:  # shapes are powers of two per CDU
            raise InputError("sampler bounds.gpus", f"({self.gpus[0]}, {self.gpus[1]}) holds no power of two")
        if self.spare_fraction[1] >= 0.5:
            raise InputError(
                "sampler bounds.spare_fraction", f"high must be below 0.5, got {self.spare_fraction[1]}"
            )
        if self.gpu_hours < self.gpus[0] * self.duration_h[0]:
            raise InputError(
                "sampler bounds.gpu_hours",
                f"{self.gpu_hours:g} cannot hold the smallest cluster for the shortest run "
                f"({self.gpus[0]} GPUs x {self.duration_h[0]:g} h)",
            )

    def with_duration(self, hours: float) -> Bounds:
        """Every draw lasts ``hours`` (``--duration-h``: quick runs), the rest of the support kept."""
        if not hours > 0:
            raise InputError("--duration-h", f"must be positive, got {hours:g}")
        return replace(self, duration_h=(hours, hours), gpu_hours=max(self.gpu_hours, self.gpus[0] * hours))


@dataclass(frozen=True)
class Facts:
    """What a results table says about a sampled scenario, read back from the scenario itself."""

    name: str
    gpus: int
    nodes: int
    spares: int
    restart_min: float
    duration_h: float
    kinds: tuple[str, ...]  # declared faults and confounders, in onset order

    @classmethod
    def of(cls, scenario: Scenario) -> Facts:
        c = scenario.cluster
        training = [j.restart_s for j in scenario.jobs if j.training]
        return cls(
            name=scenario.name, gpus=c.nodes * c.gpus_per_node, nodes=c.nodes,
            spares=c.nodes - sum(j.nodes for j in scenario.jobs),
            restart_min=(max(training) if training else 0.0) / 60.0, duration_h=scenario.duration_h,
            kinds=tuple(f.kind for f in sorted(scenario.faults, key=lambda f: f.onset_h)),
        )  # fmt: skip


def check_sample(count: int, first_seed: int) -> None:
    """Refuse a sample size below one or a negative first seed, naming the option."""
    if count < 1:
        raise InputError("--sample", f"need at least one scenario, got {count}")
    if first_seed < 0:
        raise InputError("--seed", f"must be non-negative, got {first_seed}")


def sample_scenario(seed: int, bounds: Bounds | None = None) -> Scenario:
    return scenario_from_mapping(sample_mapping(seed, bounds), f"sampled scenario (seed {seed})")


def sample_mapping(seed: int, bounds: Bounds | None = None) -> dict[str, Any]:
    """One scenario as a YAML-ready mapping (plain ints, floats, strings, lists and dicts)."""
    if seed < 0:
        raise InputError("sampler seed", f"must be non-negative, got {seed}")
    b = bounds or Bounds()
    rng = np.random.default_rng([SAMPLER_KEY, seed])
    family = "crowded" if rng.random() < CROWDED_SHARE else "mixed"
    cluster = _cluster(rng, b)
    spec = ClusterSpec(
        **{
            k: cluster[k]
            for k in ("cdus", "racks_per_cdu", "nodes_per_rack", "gpus_per_node", "nodes_per_leaf")
        }
    )
    inventory = generate_cluster(spec).nodes
    nodes = len(inventory)
    gpus = nodes * spec.gpus_per_node
    duration = max(
        math.floor(min(_uniform(rng, b.duration_h), b.gpu_hours / gpus) * 100) / 100, b.duration_h[0]
    )
    spare_hi = min(b.spare_fraction[1], 0.01) if family == "crowded" else b.spare_fraction[1]
    spares = math.floor(_uniform(rng, (b.spare_fraction[0], max(spare_hi, b.spare_fraction[0]))) * nodes)
    spares = min(spares, nodes - 2)  # two nodes at least run work
    restart_s = _round(_uniform(rng, b.restart_min) * 60.0, 0)
    jobs = _jobs(rng, family, nodes - spares, cluster, restart_s, duration)
    placed = _placement(jobs)
    faults = _faults(rng, family, b, duration, inventory, placed, jobs, cluster)
    data: dict[str, Any] = {
        "name": f"sample-{seed}-{family}",
        "description": (
            f"Drawn by seamguard.twin.sampler from seed {seed} ({family} family): {gpus:,} GPUs, "
            f"{spares} spare node(s), restarts of {restart_s / 60:.1f} min."
        ),
        "sources": ["seamguard.twin.sampler: every number here is a draw, none is a measurement."],
        "duration_h": duration,
        "cluster": cluster,
        "jobs": jobs,
        "physics": {"ambient": {
            "supply_c": _round(_uniform(rng, (28.0, 31.0)), 2),
            "diurnal_amplitude_c": _round(_uniform(rng, (0.25, 2.0)), 2),
            "peak_hour_utc": _round(_uniform(rng, (12.0, 18.0)), 2),
        }},
        "faults": faults,
        "hazard_preset": "llama3-405b",
        "hazard_scale": _round(_log_uniform(rng, (1.0, 10.0)), 2),
        "operations": {"repair_h": _round(_log_uniform(rng, (4.0, 48.0)), 1)},
    }  # fmt: skip
    if rng.random() < 0.2:
        data["hazard_drift"] = [
            {
                "at_h": _round(_uniform(rng, (0.2, 0.8)) * duration, 2),
                "scale": _round(_log_uniform(rng, (0.5, 4.0)), 2),
            }
        ]
    if rng.random() < 0.2:
        data["lemons"] = {
            "nodes": int(rng.integers(1, 4)),
            "multiplier": _round(_log_uniform(rng, (10.0, 300.0)), 0),
        }
    return data


# ---- the cluster -----------------------------------------------------------------------------------


def _cluster(rng: np.random.Generator, b: Bounds) -> dict[str, Any]:
    """CDUs x racks x nodes x GPUs near a log-uniform GPU count, always within ``b.gpus``."""
    target = _log_uniform(rng, (float(b.gpus[0]), float(b.gpus[1])))
    gpn = 8 if rng.random() < 0.85 else 4
    per_rack = int(rng.choice([n for n in (2, 4, 8) if n * gpn <= b.gpus[1]] or [1]))
    # Several CDUs when the size allows: a facility fault should hit part of the cluster, not all.
    fits = [r for r in (2, 4, 8, 16) if 2 * r * per_rack * gpn <= target] or [1]
    racks_per_cdu = int(rng.choice(fits))
    unit = racks_per_cdu * per_rack * gpn
    lo, hi = math.ceil(b.gpus[0] / unit), max(b.gpus[1] // unit, 1)
    cdus = int(min(max(round(target / unit), lo), hi))
    nodes = cdus * racks_per_cdu * per_rack
    leaf = int(rng.choice([n for n in (8, 16, 32) if n <= max(nodes // 2, 8)]))
    storage = ["ckpt0", "ckpt1"] if rng.random() < 0.6 else ["ckpt0"]
    return {"cdus": cdus, "racks_per_cdu": racks_per_cdu, "nodes_per_rack": per_rack, "gpus_per_node": gpn,
            "nodes_per_leaf": leaf, "storage": storage}  # fmt: skip


# ---- the jobs --------------------------------------------------------------------------------------

# The classes a mixed draw fills the rest of the cluster with, and how often.
OTHER_CLASSES = (
    (JobClass.SYNC_TRAINING, 0.25), (JobClass.PIPELINE_TRAINING, 0.2), (JobClass.ONLINE_DECODE, 0.15),
    (JobClass.ONLINE_PREFILL, 0.1), (JobClass.ASYNC_BATCH_INFERENCE, 0.2), (JobClass.EXPLORATORY, 0.1),
)  # fmt: skip


def _jobs(
    rng: np.random.Generator,
    family: str,
    used: int,
    cluster: dict[str, Any],
    restart_s: float,
    duration: float,
) -> list[dict[str, Any]]:
    """One large synchronous job first, then a mix; node counts add up to ``used`` exactly."""
    if family == "crowded":
        sync = max(round(used * _uniform(rng, (0.7, 0.85))), 2)
        first = sync - sync // 2  # the larger half first
        online = used - sync
        sizes = [(JobClass.SYNC_TRAINING, first), (JobClass.SYNC_TRAINING, sync - first)]
        if online >= 2:
            decode = max(online // 2, 1)
            sizes += [(JobClass.ONLINE_DECODE, decode), (JobClass.ONLINE_PREFILL, online - decode)]
        elif online == 1:
            sizes.append((JobClass.ONLINE_DECODE, 1))
    else:
        large = max(round(used * _uniform(rng, (0.3, 0.7))), 1)
        sizes, left = [(JobClass.SYNC_TRAINING, large)], used - large
        classes, weights = zip(*OTHER_CLASSES, strict=True)
        while left > 0:
            if len(sizes) >= 5 and left <= large:
                n = left
            else:  # never larger than the large job: it stays the largest
                n = min(max(round(left * _uniform(rng, (0.25, 0.75))), 1), large)
            cls = classes[int(rng.choice(len(classes), p=np.asarray(weights) / sum(weights)))]
            sizes.append((cls, n))
            left -= n
    return [
        _job(rng, f"{_short(cls)}{i}", cls, n, cluster, restart_s, duration, first=i == 0)
        for i, (cls, n) in enumerate(sizes)
        if n > 0
    ]


def _short(cls: JobClass) -> str:
    return {
        JobClass.SYNC_TRAINING: "train", JobClass.PIPELINE_TRAINING: "pipe", JobClass.ONLINE_DECODE: "decode",
        JobClass.ONLINE_PREFILL: "prefill", JobClass.ASYNC_BATCH_INFERENCE: "batch", JobClass.EXPLORATORY: "explore",
    }[cls]  # fmt: skip


def _job(
    rng: np.random.Generator, name: str, cls: JobClass, nodes: int, cluster: dict[str, Any],
    restart_s: float, duration: float, *, first: bool,
) -> dict[str, Any]:  # fmt: skip
    job: dict[str, Any] = {"name": name, "class": cls.value, "nodes": nodes}
    if cls in (JobClass.SYNC_TRAINING, JobClass.PIPELINE_TRAINING):
        job.update(
            step_s=_round(_uniform(rng, (1.0, 6.0)), 2), comm_share=_round(_uniform(rng, (0.1, 0.4)), 2),
            checkpoint_gb=_round(max(nodes * _uniform(rng, (8.0, 40.0)), 20.0), 0), restart_s=restart_s,
        )  # fmt: skip
        if len(cluster["storage"]) > 1 and rng.random() < 0.5:
            job["fallback_storage"] = cluster["storage"][1]
    elif cls in (JobClass.ONLINE_DECODE, JobClass.ONLINE_PREFILL):
        lo, hi = (0.02, 0.1) if cls is JobClass.ONLINE_DECODE else (0.1, 0.5)
        job.update(
            step_s=_round(_uniform(rng, (lo, hi)), 3), slo_factor=_round(_uniform(rng, (1.15, 1.5)), 2),
            slot_restart_s=_round(_uniform(rng, (60.0, 600.0)), 0), criticality=_round(_uniform(rng, (1.0, 3.0)), 2),
        )  # fmt: skip
    else:
        job.update(
            batch_s=_round(_uniform(rng, (20.0, 300.0)), 0),
            slot_restart_s=_round(_uniform(rng, (60.0, 600.0)), 0),
        )
        if cls is JobClass.EXPLORATORY:
            job["criticality"] = _round(_uniform(rng, (0.3, 0.8)), 2)
    # Load swings: work that arrives or leaves mid-run (never the large job: it is the one at risk).
    if not first and rng.random() < 0.25:
        if rng.random() < 0.5:
            job["start_h"] = _round(_uniform(rng, (0.1, 0.5)) * duration, 2)
        else:
            job["end_h"] = _round(_uniform(rng, (0.5, 0.9)) * duration, 2)
    return job


def _placement(jobs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Each job's node block [start, stop): the twin places jobs in contiguous blocks, in order."""
    out, at = [], 0
    for j in jobs:
        out.append((at, at + int(j["nodes"])))
        at += int(j["nodes"])
    return out


# ---- the faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """What a fault may be aimed at: node records, job blocks, names."""

    inventory: tuple[NodeRecord, ...]
    placed: list[tuple[int, int]]
    jobs: list[dict[str, Any]]
    storage: list[str]
    gpus_per_node: int


def _faults(
    rng: np.random.Generator, family: str, b: Bounds, duration: float, inventory: tuple[NodeRecord, ...],
    placed: list[tuple[int, int]], jobs: list[dict[str, Any]], cluster: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    where = _Where(inventory, placed, jobs, list(cluster["storage"]), int(cluster["gpus_per_node"]))
    out: list[dict[str, Any]] = []
    if family == "crowded":
        sync = [i for i, j in enumerate(jobs) if j["class"] == JobClass.SYNC_TRAINING.value]
        for kind in CROWDED_KINDS:
            out.append(_fault(rng, kind, duration, where, among=sync, long=kind == "supply_temp_rise"))
        extra = int(rng.integers(0, 3))
    else:
        extra = int(rng.integers(b.faults[0], b.faults[1] + 1))
    for _ in range(extra):
        out.append(_fault(rng, str(rng.choice(HARMFUL_KINDS)), duration, where))
    for _ in range(int(rng.integers(b.confounders[0], b.confounders[1] + 1))):
        out.append(_fault(rng, str(rng.choice(BENIGN_KINDS)), duration, where))
    return sorted(out, key=lambda f: (f["onset_h"], f["target"], f["kind"]))


def _node(rng: np.random.Generator, where: _Where, among: list[int] | None = None) -> int:
    """A node running work (mostly), or any node; ``among`` restricts to those jobs' nodes."""
    pool = among if among is not None else list(range(len(where.jobs)))
    if among is None and rng.random() >= ON_JOB_SHARE:
        return int(rng.integers(0, len(where.inventory)))
    blocks = [where.placed[i] for i in pool]
    sizes = np.array([stop - start for start, stop in blocks], dtype=float)
    start, stop = blocks[int(rng.choice(len(blocks), p=sizes / sizes.sum()))]
    return int(rng.integers(start, stop))


def _target(rng: np.random.Generator, kind: str, where: _Where, among: list[int] | None) -> str:
    target = FAULT_KINDS[kind].target.value
    if target == "job":  # software faults stop training jobs (as the twin's hazards do)
        training = [
            i for i, j in enumerate(where.jobs) if j["class"] in ("sync_training", "pipeline_training")
        ]
        return f"job/{where.jobs[int(rng.choice(among or training))]['name']}"
    if target == "storage":  # the first backend carries every job's saves; the second only fallbacks
        return f"storage/{where.storage[0] if rng.random() < 0.8 else where.storage[-1]}"
    rec = where.inventory[_node(rng, where, among)]
    return {
        "cdu": f"cdu/{rec.cdu}", "rack": f"rack/{rec.rack}", "switch": f"switch/{rec.leaf}",
        "node": f"node/{rec.node}", "link": f"link/{rec.node}",
        "gpu": f"gpu/{rec.node}/{int(rng.integers(0, where.gpus_per_node))}",
    }[target]  # fmt: skip


def _fault(
    rng: np.random.Generator, kind: str, duration: float, where: _Where,
    among: list[int] | None = None, *, long: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One declared fault: onset, gray ramp, severity, how long a facility fault lasts, hard or not.

    ``long``: the ramp and the condition last hours (the crowded family's warming supply water).
    """
    spec = FAULT_KINDS[kind]
    onset = _uniform(rng, (0.05, 0.5 if long else 0.8)) * duration
    f: dict[str, Any] = {
        "kind": kind,
        "target": _target(rng, kind, where, among),
        "onset_h": _round(onset, 3),
    }
    if kind == "exporter_silent":
        f["ramp_h"] = _round(_log_uniform(rng, (0.1, 2.0)), 3)  # how long the exporter stays silent
    elif long:
        f["ramp_h"] = _round(min(_log_uniform(rng, (1.0, 6.0)), 0.8 * (duration - onset)), 3)
    elif spec.hard is HardEffect.NONE or not spec.hard_by_default or rng.random() < 0.7:
        f["ramp_h"] = _round(_log_uniform(rng, (0.1, 6.0)), 3)  # a gray phase a policy may see
    if kind != "exporter_silent":
        f["severity"] = _round(_uniform(rng, SEVERITY.get(kind, DEFAULT_SEVERITY)), 3)
    if spec.facility and spec.target.value in ("cdu", "rack", "switch", "storage"):
        last = (duration - onset) * _uniform(rng, (0.8, 1.2)) if long else _log_uniform(rng, (0.5, 12.0))
        f["duration_h"] = _round(max(last, f.get("ramp_h", 0.0) + 0.1), 3)
    if spec.hard is not HardEffect.NONE and not spec.hard_by_default:
        f["hard"] = bool(rng.random() < 0.4)
    return f


# ---- draws -----------------------------------------------------------------------------------------


def _uniform(rng: np.random.Generator, span: tuple[float, float]) -> float:
    return float(rng.uniform(span[0], span[1])) if span[1] > span[0] else float(span[0])


def _log_uniform(rng: np.random.Generator, span: tuple[float, float]) -> float:
    lo, hi = span
    return math.exp(float(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


def _round(x: float, digits: int) -> float:
    """Short numbers in the YAML a user reads; the scenario is the rounded one, not the raw draw."""
    return float(round(x, digits))


def sample_yaml(seed: int, bounds: Bounds | None = None) -> str:
    """The scenario file of ``sample_scenario(seed, bounds)``: ``--scenario FILE`` loads the same one."""
    import yaml

    head = (
        f"# seamguard simulate --scenario THIS_FILE --seeds 1 --first-seed {seed}: the sampled run again.\n"
    )
    return head + yaml.safe_dump(sample_mapping(seed, bounds), sort_keys=False, width=110)
