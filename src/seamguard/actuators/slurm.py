"""Slurm as an actuator: drain and resume nodes, and set seamguard's own node features.

Safety rules, checked against the node's live state just before acting:

- A node in an active MAINT reservation, or carrying the MAINTENANCE or RESERVED flag, is
  not touched (``REFUSED``): someone planned that window, and seamguard does not act inside it.
- Seamguard's drain reasons start with ``seamguard:``. A node drained with any other reason was
  drained by someone else: seamguard never resumes it (``REFUSED``) nor rewrites its reason
  (a drain request finds it ``ALREADY`` drained and leaves it as is).
- Only features starting with ``feature_prefix`` (``sg_``) are seamguard's; the node's other
  features are kept as they are.

The node and the reservations are read with ``SlurmReader``, in the same forms as the source
(``--json`` where the installed Slurm has it, else text; the records are the same either way).
Every command runs with the configured timeout; a failing one is ``FAILED`` with its stderr.
There is no compare-and-set in ``scontrol update``: a change made by someone else between the
read and the update is not detected (the window is one command long).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from seamguard.actuators.base import before_side_effect
from seamguard.model.actions import Action, ActionResult, ActionStatus
from seamguard.telemetry.sources.slurm import SlurmReader, read_nodes, read_reservations
from seamguard.telemetry.sources.slurm_commands import SlurmConfig, run_command
from seamguard.telemetry.sources.slurm_records import REASON_PREFIX, SlurmNode

# The planner's admissibility actions on a degraded node become a feature jobs can avoid
# (``--constraint=sg_ok`` on healthy nodes, see docs/slurm.md): add on entry, remove on recovery.
ADMISSION = {"restrict_admission": "add", "restore_admission": "remove"}
DEGRADED_FEATURE = "degraded"  # after the prefix: sg_degraded
KINDS = frozenset({"drain_node", "resume_node", "set_features", *ADMISSION})


def node_of(target: str) -> str:
    """``node/n0123`` or ``gpu/n0123/5`` -> ``n0123`` (a GPU's drain is its node's)."""
    parts = target.split("/")
    if len(parts) >= 2 and parts[0] in ("node", "gpu") and parts[1]:
        return parts[1]
    raise ValueError(f"slurm actuator acts on node/NAME or gpu/NAME/I targets, got {target!r}")


def drain_reason(action: Action, max_bytes: int) -> str:
    """``seamguard: <state> <top evidence>`` on one line, cut to ``max_bytes`` UTF-8 bytes."""
    reason = action.reason
    cause, sep, why = reason.partition(f" {action.state}: ")
    if sep and " " not in cause:  # the planner's "<cause> <state>: <why>": name the state once
        reason = f"{cause}: {why}"
    text = " ".join(f"{REASON_PREFIX} {action.state} {reason}".split())
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode(errors="ignore").rstrip() + "..."


def _describe(node: SlurmNode) -> str:
    who = f" [{node.reason_user}]" if node.reason_user else ""
    return f"{node.name} is {node.raw_state}" + (f", reason {node.reason!r}{who}" if node.reason else "")


def _features_param(action: Action, prefix: str) -> tuple[tuple[str, ...] | None, set[str], set[str]]:
    """``features`` (the complete set of seamguard features; empty clears them) or ``add``/``remove``."""

    def names(key: str) -> tuple[str, ...]:
        out = tuple(f.strip() for f in action.param(key).split(",") if f.strip())
        foreign = [f for f in out if not f.startswith(prefix) or not re.fullmatch(r"[\w.-]+", f)]
        if foreign:
            raise ValueError(
                f"set_features {key}={action.param(key)!r}: seamguard only manages features named "
                f"{prefix}<word>, got {', '.join(foreign)}"
            )
        return out

    given = dict(action.params)
    if "features" in given:
        return names("features"), set(), set()
    if "add" not in given and "remove" not in given:
        raise ValueError("set_features needs a 'features' param, or 'add'/'remove'")
    return None, set(names("add")), set(names("remove"))


@dataclass  # not frozen: the Actuator protocol declares name and kinds as settable attributes
class SlurmActuator:
    """Carries out drain_node, resume_node and set_features (and the planner's restrict_admission /
    restore_admission, as the ``sg_degraded`` feature) with ``scontrol``."""

    config: SlurmConfig = field(default_factory=SlurmConfig)
    name: str = "slurm"
    kinds: frozenset[str] = KINDS
    # Reads the node and the reservations in the same forms as the source (--json where the
    # installed Slurm has it, else text), remembering which works; records are the same either way.
    reader: SlurmReader = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reader = SlurmReader(self.config)

    def apply(self, action: Action, now: float) -> ActionResult:
        if action.kind not in self.kinds:
            raise ValueError(
                f"slurm actuator does not carry out {action.kind!r}; kinds: {sorted(self.kinds)}"
            )
        if not action.target.startswith(("node/", "gpu/")):  # a rack's or a pool's: not a Slurm node
            why = f"Slurm acts on nodes; {action.target} is not a node or a GPU"
            return self._result(action, now, ActionStatus.SKIPPED, why)
        node_name = node_of(action.target)
        feature = f"{self.config.feature_prefix}{DEGRADED_FEATURE}"
        asked = (
            replace(action, kind="set_features", params=((ADMISSION[action.kind], feature),))
            if action.kind in ADMISSION
            else action
        )
        # Bad params are a programming error: raised before any command runs.
        wanted = _features_param(asked, self.config.feature_prefix) if asked.kind == "set_features" else None
        node, why = self._read(node_name)
        if node is None:
            return self._result(action, now, ActionStatus.FAILED, why)
        blocked = self._maintenance(node)
        if blocked is not None:
            return self._result(action, now, *blocked)
        if action.kind == "drain_node":
            status, detail = self._drain(node, action)
        elif action.kind == "resume_node":
            status, detail = self._resume(node)
        else:
            assert wanted is not None
            status, detail = self._set_features(node, *wanted)
        return self._result(action, now, status, detail)

    # ------------------------------------------------------------ steps

    def _result(self, action: Action, now: float, status: ActionStatus, detail: str) -> ActionResult:
        return ActionResult(action, self.name, status, detail, now)

    def _read(self, name: str) -> tuple[SlurmNode | None, str]:
        nodes, notices = read_nodes(self.config, (name,), self.reader)
        match = [n for n in nodes if n.name == name]
        if match:
            return match[0], ""
        return None, "; ".join(str(n) for n in notices) or f"node {name} not in the scontrol output"

    def _maintenance(self, node: SlurmNode) -> tuple[ActionStatus, str] | None:
        """REFUSED inside a maintenance window or reservation; FAILED if that cannot be checked."""
        if node.reserved:
            return (
                ActionStatus.REFUSED,
                f"{_describe(node)}: in a maintenance window or reservation, not touched",
            )
        resv, notices = read_reservations(self.config, self.reader)
        if resv is None:
            return ActionStatus.FAILED, "could not check reservations: " + "; ".join(str(n) for n in notices)
        for r in resv:
            if r.active and r.maintenance and node.name in r.nodes:
                return (
                    ActionStatus.REFUSED,
                    f"{node.name} is in active maintenance reservation {r.name}, not touched",
                )
        return None

    def _update(self, node: str, *settings: str) -> tuple[bool, str]:
        before_side_effect()
        res = run_command(self.config, [self.config.scontrol, "update", f"NodeName={node}", *settings])
        return res.ok, "" if res.ok else f"{res.where}: {res.problem}"

    def _drain(self, node: SlurmNode, action: Action) -> tuple[ActionStatus, str]:
        if node.drained_by_seamguard:
            return ActionStatus.ALREADY, f"already drained by seamguard: {_describe(node)}"
        if node.drained:
            return ActionStatus.ALREADY, f"already drained by someone else, left as is: {_describe(node)}"
        reason = drain_reason(action, self.config.reason_max_bytes)
        ok, err = self._update(node.name, "State=DRAIN", f"Reason={reason}")
        if not ok:
            return ActionStatus.FAILED, err
        after, why = self._read(node.name)
        if after is None or not after.drained_by_seamguard:
            return (
                ActionStatus.FAILED,
                f"drain not visible after the update: {_describe(after) if after else why}",
            )
        return ActionStatus.DONE, f"drained: {_describe(after)}"

    def _resume(self, node: SlurmNode) -> tuple[ActionStatus, str]:
        if not node.drained:
            return ActionStatus.ALREADY, f"not drained: {_describe(node)}"
        if not node.drained_by_seamguard:
            return ActionStatus.REFUSED, f"drained by someone else, not resumed: {_describe(node)}"
        ok, err = self._update(node.name, "State=RESUME")
        if not ok:
            return ActionStatus.FAILED, err
        after, why = self._read(node.name)
        if after is None or after.drained:
            return (
                ActionStatus.FAILED,
                f"still drained after the update: {_describe(after) if after else why}",
            )
        return ActionStatus.DONE, f"resumed: {_describe(after)}"

    def _set_features(
        self, node: SlurmNode, exact: tuple[str, ...] | None, add: set[str], remove: set[str]
    ) -> tuple[ActionStatus, str]:
        prefix = self.config.feature_prefix
        if exact is not None:  # the complete set of seamguard's features
            add = set(exact)
            remove = {f for f in (*node.features, *node.active_features) if f.startswith(prefix)} - add
        avail = [f for f in node.features if f not in remove] + sorted(add - set(node.features))
        active = [f for f in node.active_features if f not in remove] + sorted(
            add - set(node.active_features)
        )
        active = [f for f in active if f in avail or not f.startswith(prefix)]
        if avail == list(node.features) and active == list(node.active_features):
            return ActionStatus.ALREADY, f"{node.name} features already {','.join(avail) or '(none)'}"
        ok, err = self._update(
            node.name, f"AvailableFeatures={','.join(avail)}", f"ActiveFeatures={','.join(active)}"
        )
        if not ok:
            return ActionStatus.FAILED, err
        after, why = self._read(node.name)
        if after is None or set(after.features) != set(avail) or set(after.active_features) != set(active):
            seen = f"{','.join(after.features)} / {','.join(after.active_features)}" if after else why
            return ActionStatus.FAILED, f"features not as set after the update: {seen}"
        return (
            ActionStatus.DONE,
            f"{node.name} features {','.join(avail) or '(none)'} (active {','.join(active) or '(none)'})",
        )
