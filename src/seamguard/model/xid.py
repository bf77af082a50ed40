"""The XID catalog (``seamguard/data/xid.yaml``): NVIDIA's published codes and what each one makes
seamguard do.

Each row records NVIDIA's *immediate-action* resolution bucket for the code (``nvidia``) and the
``resolution`` seamguard follows. What a resolution means for the engine (severity, evidence, the
least state it forces, the operator's action) is decided once, in ``RESOLUTION_POLICY``; a row
overrides one of those only with a ``why``, so every departure from NVIDIA's reading is written
down next to it. The file is validated when it is loaded: a bad row names its code and key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import yaml

from seamguard.model.states import State


class XidSeverity(StrEnum):
    INFO = "info"  # no evidence against the hardware
    WARN = "warn"  # worth a look; forces nothing
    CRITICAL = "critical"  # quarantine-worthy: the GPU needs an operator before it takes work again
    FATAL = "fatal"  # hard down


class XidResolution(StrEnum):
    """What has to happen after the XID; NVIDIA's immediate-action buckets, as seamguard can act on them."""

    IGNORE = "ignore"  # nothing (informational, or corrected by the hardware)
    RESTART_APP = "restart_app"  # the application's fault: restart it; the GPU is fine
    RESTART_VM = "restart_vm"  # restart the VM owning the GPU; the GPU is fine
    FOLLOW_OTHER = "follow_other"  # reported alongside another XID, whose resolution applies
    UPDATE_SOFTWARE = "update_software"  # driver/firmware (vGPU) mismatch: update software
    CHECK_UVM = "check_uvm"  # reset the GPU if UVM or vGPU is in use, otherwise nothing
    RESET_GPU = "reset_gpu"  # the GPU must be reset before it takes work again
    CHECK_MECHANICALS = "check_mechanicals"  # hands-on: seating, power and cables
    CONTACT_SUPPORT = "contact_support"  # unexpected on this GPU generation: NVIDIA support decides
    REBOOT_NODE = "reboot_node"  # the node must be rebooted (NVIDIA: restart bare metal)
    RMA = "rma"  # the GPU must be replaced (seamguard's reading of NVIDIA's RMA policy; no bucket of its own)


@dataclass(frozen=True)
class ResolutionPolicy:
    """What one resolution makes the engine do: ``evidence`` feeds GFS, ``state`` is forced at arrival."""

    severity: XidSeverity
    evidence: float
    state: State | None
    action: str  # the operator's action, as it reaches a decision's reason and a Slurm drain reason


# The one place that maps a resolution to engine behaviour. The application's faults carry no
# evidence and force nothing: the node is fine and draining it would punish the hardware for a
# software bug. Anything the operator must do to the GPU before it can work again forces at least
# quarantine (its node is drained); what leaves the GPU unusable until the node is rebooted or the
# GPU replaced forces failed.
RESOLUTION_POLICY: Mapping[XidResolution, ResolutionPolicy] = {
    XidResolution.IGNORE: ResolutionPolicy(XidSeverity.INFO, 0.0, None, "none: informational"),
    XidResolution.RESTART_APP: ResolutionPolicy(
        XidSeverity.INFO, 0.0, None, "restart the application; no node action"
    ),
    XidResolution.RESTART_VM: ResolutionPolicy(
        XidSeverity.INFO, 0.0, None, "restart the VM that owns the GPU; no node action"
    ),
    XidResolution.FOLLOW_OTHER: ResolutionPolicy(
        XidSeverity.INFO, 0.0, None, "none of its own: act on the XID it accompanies"
    ),
    XidResolution.UPDATE_SOFTWARE: ResolutionPolicy(
        XidSeverity.WARN, 0.0, None, "update the GPU driver and firmware; no node action"
    ),
    XidResolution.CHECK_UVM: ResolutionPolicy(
        XidSeverity.WARN, 0.4, None, "reset the GPU if UVM or vGPU is in use, otherwise none"
    ),
    XidResolution.RESET_GPU: ResolutionPolicy(
        XidSeverity.CRITICAL, 0.8, State.QUARANTINE, "drain the node and reset the GPU"
    ),
    XidResolution.CHECK_MECHANICALS: ResolutionPolicy(
        XidSeverity.CRITICAL,
        0.8,
        State.QUARANTINE,
        "drain the node; check the GPU's seating and power cables",
    ),
    XidResolution.CONTACT_SUPPORT: ResolutionPolicy(
        XidSeverity.CRITICAL, 0.7, State.QUARANTINE, "drain the node and contact NVIDIA support"
    ),
    XidResolution.REBOOT_NODE: ResolutionPolicy(
        XidSeverity.FATAL, 1.0, State.FAILED, "drain and reboot the node"
    ),
    XidResolution.RMA: ResolutionPolicy(
        XidSeverity.FATAL, 1.0, State.FAILED, "drain the node and RMA the GPU"
    ),
}

# NVIDIA's immediate-action buckets (the catalog's "Resolution Bucket (Immediate Action)") and the
# resolution each one means by default. The WORKFLOW_* and XID_154 buckets ask for a decision from
# text that DCGM does not deliver (the XID message's registers, Xid 154's recovery string), so each
# takes the action NVIDIA's workflow reaches when the code comes alone.
NVIDIA_BUCKETS: Mapping[str, XidResolution] = {
    "IGNORE": XidResolution.IGNORE,
    "RESTART_APP": XidResolution.RESTART_APP,
    "RESTART_VM": XidResolution.RESTART_VM,
    "WORKFLOW_XID_45": XidResolution.FOLLOW_OTHER,  # solo: restart Fabric Manager; else follow the other XID
    "UPDATE_SWFW": XidResolution.UPDATE_SOFTWARE,
    "CHECK_UVM": XidResolution.CHECK_UVM,
    "RESET_GPU": XidResolution.RESET_GPU,
    "WORKFLOW_XID_48": XidResolution.RESET_GPU,  # solo: RESET_GPU; with 63/64: drain and reset
    "WORKFLOW_NVLINK_ERR": XidResolution.RESET_GPU,  # "a GPU reset or node reboot is needed to clear this error"
    "WORKFLOW_NVLINK5_ERR": XidResolution.RESET_GPU,  # undecoded: the worst outcome of the 144-150 decode sheet
    "XID_154": XidResolution.RESET_GPU,  # the driver's recovery string is not in DCGM; reset is its usual ask
    "CHECK_MECHANICALS": XidResolution.CHECK_MECHANICALS,
    "CONTACT_SUPPORT": XidResolution.CONTACT_SUPPORT,
    "RESTART_BM": XidResolution.REBOOT_NODE,
}

# An XID the catalog does not know: weak evidence (a GPU that keeps raising them surfaces with other
# signals), no state forced (an unknown code must not drain a node on its own).
MAX_XID_CODE = 1024  # codes are below 256 today; a label past this is not an XID code
UNKNOWN_XID = ResolutionPolicy(XidSeverity.WARN, 0.3, None, "check the driver's release notes")

_E = TypeVar("_E", bound=StrEnum)
_REQUIRED = ("code", "name", "mnemonic", "nvidia", "resolution")
_OVERRIDES = ("severity", "evidence", "state", "action")
_KEYS = frozenset((*_REQUIRED, *_OVERRIDES, "why"))


@dataclass(frozen=True)
class Xid:
    code: int
    name: str
    mnemonic: str
    nvidia: str | None  # NVIDIA's immediate-action bucket as published; None where the catalog gives none
    resolution: XidResolution
    severity: XidSeverity
    evidence: float
    state: State | None
    action: str
    why: str | None = None  # why this row departs from NVIDIA's bucket or from RESOLUTION_POLICY

    @property
    def forces_hardware_action(self) -> bool:
        """An operator has to do something to the GPU or node (it forces at least quarantine)."""
        return self.state is not None

    def describe(self, when: str = "") -> str:
        """``XID 79 (GPU has fallen off the bus; NVIDIA RESTART_BM): drain and reboot the node``.

        The operator's action comes last so that it survives into decision and drain reasons;
        ``when`` (", 12 min ago") follows the code.
        """
        bucket = f"NVIDIA {self.nvidia}" if self.nvidia else "no NVIDIA bucket"
        return f"XID {self.code}{when} ({self.name}; {bucket}): {self.action}"


@dataclass(frozen=True)
class XidCatalog:
    version: str  # the NVIDIA catalog revision the rows were taken from (named in unknown-code notices)
    xids: Mapping[int, Xid]


class XidCatalogError(ValueError):
    """A malformed xid.yaml: the message names the file, the code (or row) and the key."""


def parse_xid_catalog(data: object, origin: str = "xid.yaml") -> XidCatalog:
    """Validate the parsed YAML and build the catalog; the first problem raises ``XidCatalogError``."""
    if not isinstance(data, dict):
        raise XidCatalogError(f"{origin}: expected a mapping with 'version' and 'xids'")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise XidCatalogError(f"{origin}: 'version' must name the NVIDIA catalog revision")
    rows = data.get("xids")
    if not isinstance(rows, list) or not rows:
        raise XidCatalogError(f"{origin}: 'xids' must be a non-empty list")
    xids: dict[int, Xid] = {}
    seen_at: dict[int, int] = {}
    for i, row in enumerate(rows, start=1):
        xid = _parse_row(row, i, origin)
        if xid.code in xids:
            raise XidCatalogError(
                f"{origin}: XID {xid.code}: key 'code': duplicate (rows {seen_at[xid.code]} and {i})"
            )
        xids[xid.code] = xid
        seen_at[xid.code] = i
    return XidCatalog(version=version.strip(), xids=dict(sorted(xids.items())))


def _parse_row(row: object, i: int, origin: str) -> Xid:
    if not isinstance(row, dict):
        raise XidCatalogError(f"{origin}: row {i}: expected a mapping, got {type(row).__name__}")
    code = row.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or code < 0:
        raise XidCatalogError(f"{origin}: row {i}: key 'code': expected a non-negative integer, got {code!r}")
    where = f"{origin}: XID {code}"

    def fail(key: str, problem: str) -> XidCatalogError:
        return XidCatalogError(f"{where}: key {key!r}: {problem}")

    unknown = sorted(set(row) - _KEYS)
    if unknown:
        raise fail(str(unknown[0]), f"unknown key (allowed: {', '.join(sorted(_KEYS))})")
    for key in _REQUIRED:
        if key not in row:
            raise fail(key, "missing")
    for key in ("name", "mnemonic"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise fail(key, "expected a non-empty string")
    nvidia = row["nvidia"]
    if nvidia is not None and nvidia not in NVIDIA_BUCKETS:
        raise fail("nvidia", f"{nvidia!r} is not an NVIDIA bucket ({', '.join(NVIDIA_BUCKETS)}) or null")
    resolution = _enum(XidResolution, row["resolution"], lambda p: fail("resolution", p))
    why = row.get("why")
    if why is not None and (not isinstance(why, str) or not why.strip()):
        raise fail("why", "expected a non-empty string")
    overridden = [k for k in _OVERRIDES if k in row]
    departs = nvidia is None or NVIDIA_BUCKETS[nvidia] is not resolution
    if (overridden or departs) and why is None:
        key = overridden[0] if overridden else "resolution"
        reason = (
            "overrides the resolution's policy"
            if overridden
            else ("has no NVIDIA bucket" if nvidia is None else f"departs from NVIDIA's {nvidia}")
        )
        raise fail(key, f"{reason}: say why in 'why'")
    policy = RESOLUTION_POLICY[resolution]
    severity = _enum(XidSeverity, row.get("severity", policy.severity.value), lambda p: fail("severity", p))
    evidence = row.get("evidence", policy.evidence)
    if not isinstance(evidence, int | float) or isinstance(evidence, bool) or not 0.0 <= evidence <= 1.0:
        raise fail("evidence", f"expected a number in [0, 1], got {evidence!r}")
    state = policy.state
    if "state" in row:
        try:
            state = None if row["state"] is None else State.parse(str(row["state"]))
        except ValueError as exc:
            raise fail("state", str(exc)) from None
    action = row.get("action", policy.action)
    if not isinstance(action, str) or not action.strip():
        raise fail("action", "expected a non-empty string")
    return Xid(
        code=code,
        name=row["name"].strip(),
        mnemonic=row["mnemonic"].strip(),
        nvidia=nvidia,
        resolution=resolution,
        severity=severity,
        evidence=float(evidence),
        state=state,
        action=action.strip(),
        why=why.strip() if why else None,
    )


def _enum(cls: type[_E], value: Any, fail: Callable[[str], XidCatalogError]) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise fail(f"{value!r} is not one of {', '.join(m.value for m in cls)}") from None


@cache
def packaged_xid_catalog() -> XidCatalog:
    text = resources.files("seamguard.data").joinpath("xid.yaml").read_text(encoding="utf-8")
    return parse_xid_catalog(yaml.safe_load(text), "seamguard/data/xid.yaml")


def xid_catalog() -> dict[int, Xid]:
    """Every known code; ``xid_catalog().get(code) is None`` means NVIDIA's catalog does not list it."""
    return dict(packaged_xid_catalog().xids)


def unknown_xid_notice_text(code: int) -> str:
    """The notice a source raises the first time it sees a code the catalog does not list."""
    version = packaged_xid_catalog().version
    return (
        f"XID {code} is not in NVIDIA's Xid catalog ({version} revision): counted as evidence "
        f"{UNKNOWN_XID.evidence:g} with no state forced; {UNKNOWN_XID.action}"
    )


def describe_xid(code: int, when: str = "") -> str:
    """One line naming the code, its meaning, NVIDIA's resolution and the operator's action."""
    xid = packaged_xid_catalog().xids.get(code)
    if xid is None:
        version = packaged_xid_catalog().version
        return f"XID {code}{when} (not in NVIDIA's Xid catalog, {version} revision): {UNKNOWN_XID.action}"
    return xid.describe(when)


def xid_markdown_table() -> str:
    """docs/signals.md's generated XID tables (scripts/xid_table.py writes them; a test compares).

    Three tables: what each resolution makes the engine do, the resolution each NVIDIA bucket
    means by default, and every code.
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def least(state: State | None) -> str:
        return state.label if state is not None else "-"

    policy = [
        "| resolution | severity | evidence | least state | operator action |",
        "|---|---|---|---|---|",
        *(
            f"| `{r.value}` | {p.severity.value} | {p.evidence:g} | {least(p.state)} | {cell(p.action)} |"
            for r, p in RESOLUTION_POLICY.items()
        ),
        f"| *(code not in the catalog)* | {UNKNOWN_XID.severity.value} | {UNKNOWN_XID.evidence:g} | "
        f"{least(UNKNOWN_XID.state)} | {cell(UNKNOWN_XID.action)} |",
    ]
    buckets = [
        "| NVIDIA bucket | resolution |",
        "|---|---|",
        *(f"| {b} | `{r.value}` |" for b, r in NVIDIA_BUCKETS.items()),
    ]
    codes = [
        "| XID | mnemonic | meaning | NVIDIA bucket | resolution | severity | evidence | least state "
        "| operator action | why it departs |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {x.code} | `{x.mnemonic}` | {cell(x.name)} | {x.nvidia or '-'} | `{x.resolution.value}` | "
            f"{x.severity.value} | {x.evidence:g} | {least(x.state)} | {cell(x.action)} | {cell(x.why or '')} |"
            for x in packaged_xid_catalog().xids.values()
        ),
    ]
    return "\n\n".join("\n".join(t) for t in (policy, buckets, codes))
