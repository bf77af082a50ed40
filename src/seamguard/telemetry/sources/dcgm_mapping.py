"""dcgm-exporter's field names -> the engine's catalog, as data (``seamguard/data/dcgm.yaml``).

Kept apart from the per-series machinery (``dcgm.py``) so that the twin's exporter, the
Prometheus query and the docs read one table without the scrape path.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml

from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.model.entities import EntityKind


class Role(IntEnum):
    VALUE = 0
    SUM = 1
    XID_WINDOW = 2  # DCGM_EXP_XID_ERRORS_COUNT: XID records per GPU and code in a sliding window
    XID_GAUGE = 3  # DCGM_FI_DEV_XID_ERRORS: the last XID's code
    XID_TOTAL = 4  # DCGM_EXP_XID_ERRORS_TOTAL: XIDs per GPU and code since the exporter started


_ROLES = {
    "value": Role.VALUE, "sum": Role.SUM, "xid_window": Role.XID_WINDOW, "xid_gauge": Role.XID_GAUGE,
    "xid_total": Role.XID_TOTAL,
}  # fmt: skip
XID_ROLES = frozenset({Role.XID_WINDOW, Role.XID_GAUGE, Role.XID_TOTAL})


@dataclass(frozen=True)
class FieldMap:
    field: str  # the exporter's metric name
    signal: str
    signal_index: int
    role: Role
    index: int  # position in the table: series of one field on one GPU are copies of each other
    scale: float = 1.0
    offset: float = 0.0
    default: bool = True  # exported by dcgm-exporter's stock etc/default-counters.csv
    render: bool = False  # the field the twin's exporter writes for the signal
    # With MIG on, a series carrying GPU_I_ID belongs to that GPU instance when the field is
    # measured per instance (this signal, a ``mig.*`` one); otherwise it is a copy of the
    # GPU's own value, read once per GPU.
    instance_signal: str = ""
    instance_signal_index: int = -1


@dataclass(frozen=True)
class DcgmMapping:
    fields: dict[str, FieldMap]
    known_unmapped: frozenset[str]  # fields seen in the field that seamguard reads no signal from

    def rendered(self) -> dict[str, list[FieldMap]]:
        """signal -> the fields the twin's exporter writes for it."""
        out: dict[str, list[FieldMap]] = {}
        for f in self.fields.values():
            if f.render:
                out.setdefault(f.signal, []).append(f)
        return out


@cache
def dcgm_mapping() -> DcgmMapping:
    """The packaged mapping, checked against the signal catalog."""
    text = resources.files("seamguard.data").joinpath("dcgm.yaml").read_text(encoding="utf-8")
    return parse_mapping(yaml.safe_load(text), "seamguard/data/dcgm.yaml")


_KEYS = {"signal", "role", "scale", "offset", "default", "render", "instance_signal"}


def parse_mapping(data: Any, where: str) -> DcgmMapping:
    from seamguard.errors import InputError

    catalog = signal_catalog()
    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        raise InputError(where, "expected a mapping with a 'fields' table")
    fields: dict[str, FieldMap] = {}
    for name, row in data["fields"].items():
        at = f"{where}: fields.{name}"
        if not isinstance(row, dict) or "signal" not in row:
            raise InputError(at, "expected {signal: ..., role?, scale?, offset?, default?, instance_signal?}")
        extra = sorted(set(row) - _KEYS)
        if extra:
            raise InputError(at, f"unknown key(s) {', '.join(extra)}; expected {', '.join(sorted(_KEYS))}")
        sig = catalog.get(str(row["signal"]))
        if sig is None:
            raise InputError(at, f"unknown signal {row['signal']!r}")
        if sig.entity is not EntityKind.GPU:
            raise InputError(at, f"signal {sig.name} belongs to {sig.entity.value} entities, not GPUs")
        role = _ROLES.get(str(row.get("role", "value")))
        if role is None:
            raise InputError(at, f"role must be one of {', '.join(_ROLES)}, got {row.get('role')!r}")
        if (role in XID_ROLES) != (sig.kind is SignalKind.EVENT):
            raise InputError(at, f"role {row.get('role', 'value')} does not fit {sig.kind} signal {sig.name}")
        if role is Role.SUM and sig.kind is not SignalKind.COUNTER:
            raise InputError(at, f"role sum needs a counter signal, {sig.name} is {sig.kind.with_article}")
        inst_name = str(row.get("instance_signal", ""))
        inst_index = -1
        if inst_name:
            inst = catalog.get(inst_name)
            if inst is None or inst.entity is not EntityKind.MIG:
                raise InputError(at, f"instance_signal {inst_name!r} is not a mig.* signal of the catalog")
            if inst.kind is not sig.kind or role is not Role.VALUE:
                raise InputError(
                    at, f"instance_signal {inst_name} must be a plain value of {sig.name}'s kind"
                )
            inst_index = inst.index
        fields[str(name)] = FieldMap(
            field=str(name),
            signal=sig.name,
            signal_index=sig.index,
            role=role,
            index=len(fields),
            scale=float(row.get("scale", 1.0)),
            offset=float(row.get("offset", 0.0)),
            default=bool(row.get("default", True)),
            render=bool(row.get("render", False)),
            instance_signal=inst_name,
            instance_signal_index=inst_index,
        )
    unmapped = frozenset(str(x) for x in data.get("known_unmapped", ()))
    both = sorted(unmapped & set(fields))
    if both:
        raise InputError(f"{where}: known_unmapped", f"{both[0]} is also mapped under fields")
    return DcgmMapping(fields, unmapped)
