"""The one vocabulary of actions: every kind the planner, the safety layer, the actuators and the
twin speak, with one table of what each means, where it lands and what undoes it.

A kind that takes capacity out of service (``takes_capacity``) is a quarantine: the safety layer
counts it against the budgets and releases it with ``RESUME_NODE`` once its causes have been
healthy for the recovery delay. A kind that undoes another (``undoes``) is held by the safety
layer while the quarantine it follows still stands. Names are strings on the wire and in the
journal (a ``StrEnum``), so journals written before this table read back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActionKind(StrEnum):
    RESTRICT_ADMISSION = "restrict_admission"
    RESTORE_ADMISSION = "restore_admission"
    CHECKPOINT_NOW = "checkpoint_now"
    CHECKPOINT_PLAN = "checkpoint_plan"
    REBALANCE = "rebalance"
    REPLACE_RANK = "replace_rank"
    DRAIN_NODE = "drain_node"
    CORDON_NODE = "cordon_node"
    RESUME_NODE = "resume_node"
    RESET_GPU = "reset_gpu"
    REROUTE = "reroute"
    DISABLE_LINK = "disable_link"
    ISOLATE_SWITCH = "isolate_switch"
    RESTORE_ROUTE = "restore_route"
    ISLAND_DOMAIN = "island_domain"
    AVOID_FOR_CHECKPOINT = "avoid_for_checkpoint"
    PREFER_OTHER_CHECKPOINT_TARGET = "prefer_other_checkpoint_target"
    SWITCH_CHECKPOINT_TARGET = "switch_checkpoint_target"
    RESTORE_CHECKPOINT_TARGET = "restore_checkpoint_target"
    SET_FEATURES = "set_features"
    SET_WEIGHT = "set_weight"


class Lands(StrEnum):
    """What entity a decision on a part resolves to."""

    ENTITY = "entity"  # the part itself (a link, a switch, a rack, a storage backend)
    NODE = "node"  # the node carrying it (a GPU's drain is its node's)
    JOBS = "jobs"  # every job that depends on it


@dataclass(frozen=True)
class KindSpec:
    meaning: str
    lands: Lands = Lands.ENTITY
    takes_capacity: bool = False  # a quarantine: budgeted, released by RESUME_NODE
    whole_domain: bool = False  # contains a rack, CDU or leaf at once: one decision for the budgets
    undoes: tuple[ActionKind, ...] = ()  # the kinds this one reverses


K = ActionKind
KINDS: dict[ActionKind, KindSpec] = {
    K.RESTRICT_ADMISSION: KindSpec("no new work of the classes the state forbids; running work stays"),
    K.RESTORE_ADMISSION: KindSpec("admission back to the state's rules", undoes=(K.RESTRICT_ADMISSION,)),
    K.CHECKPOINT_NOW: KindSpec("every job depending on the part saves now", Lands.JOBS),
    K.CHECKPOINT_PLAN: KindSpec(
        "the job's checkpoint plan changed (mode, target, interval): its runtime's advisor reads it",
        Lands.JOBS,
    ),
    K.REBALANCE: KindSpec("shift work off a slow rank (a smaller micro-batch on it)", Lands.NODE),
    K.REPLACE_RANK: KindSpec(
        "at the job's next restart its rank(s) on this part move to a spare; the node stays in service"
    ),
    K.DRAIN_NODE: KindSpec(
        "no new work on the node (Slurm drain, Kubernetes cordon and evict); a running job leaves it at "
        "its next restart, or now when its runtime restarts it elsewhere",
        Lands.NODE,
        takes_capacity=True,
    ),
    K.CORDON_NODE: KindSpec("no new pods on the node; running pods stay", Lands.NODE, takes_capacity=True),
    K.RESUME_NODE: KindSpec(
        "the node back in service (a quarantine released)",
        Lands.NODE,
        undoes=(K.DRAIN_NODE, K.CORDON_NODE, K.ISLAND_DOMAIN, K.DISABLE_LINK, K.ISOLATE_SWITCH),
    ),
    K.RESET_GPU: KindSpec("reset the GPU once its node is idle", Lands.NODE),
    K.REROUTE: KindSpec("move the traffic off the link or switch; it stays up"),
    K.DISABLE_LINK: KindSpec("take the node's uplink down: the node leaves service", takes_capacity=True),
    K.ISOLATE_SWITCH: KindSpec(
        "take the leaf switch out: its nodes leave service", takes_capacity=True, whole_domain=True
    ),
    K.RESTORE_ROUTE: KindSpec("traffic back onto the link or switch", undoes=(K.REROUTE,)),
    K.ISLAND_DOMAIN: KindSpec(
        "move every job out of the rack or CDU and admit nothing there",
        takes_capacity=True,
        whole_domain=True,
    ),
    K.AVOID_FOR_CHECKPOINT: KindSpec("checkpoints leave the GPU's host memory out of their copies"),
    K.PREFER_OTHER_CHECKPOINT_TARGET: KindSpec("jobs save to their fallback backend when it is healthier"),
    K.SWITCH_CHECKPOINT_TARGET: KindSpec("jobs saving to this backend move to their fallback"),
    K.RESTORE_CHECKPOINT_TARGET: KindSpec(
        "jobs back onto their primary backend",
        undoes=(K.AVOID_FOR_CHECKPOINT, K.PREFER_OTHER_CHECKPOINT_TARGET, K.SWITCH_CHECKPOINT_TARGET),
    ),
    K.SET_FEATURES: KindSpec("set the node's scheduler features (params: features)", Lands.NODE),
    K.SET_WEIGHT: KindSpec(
        "set the load-balancer weight (params: weight) of the server that is the entity: a node, a serving replica"
    ),
}

QUARANTINE_KINDS = frozenset(k for k, s in KINDS.items() if s.takes_capacity)
CONTAINMENT_KINDS = frozenset(k for k, s in KINDS.items() if s.whole_domain)
RELEASE_KIND = ActionKind.RESUME_NODE
# Undos the safety layer holds while a quarantine they follow stands: every undo but the release.
UNDO_KINDS = frozenset(k for k, s in KINDS.items() if s.undoes and k is not RELEASE_KIND)


def kind_table_markdown() -> str:
    """The table as docs/actions.md shows it (a test keeps the page equal to this)."""
    rows = ["| kind | lands on | takes capacity | undoes | what it does |", "|---|---|---|---|---|"]
    for k, s in KINDS.items():
        undoes = ", ".join(f"`{u.value}`" for u in s.undoes) or "-"
        takes = ("a whole domain" if s.whole_domain else "yes") if s.takes_capacity else "no"
        rows.append(f"| `{k.value}` | {s.lands.value} | {takes} | {undoes} | {s.meaning} |")
    return "\n".join(rows)
