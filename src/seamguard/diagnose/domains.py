"""Which failure domains each node sits in, kept in the journal so that ``seamguard explain`` can
name an entity's upstream cause (a GPU whose CDU is quarantined says so) and a domain's effect
(the GPUs that turned unwell after their CDU did) from the journal alone.

Stored as one JSON meta value (``domains``): per node, its rack, CDU, leaf switch, PDU and storage
backend. About 60 bytes a node: a 16,384-node fleet is one megabyte, written when the writer
starts and again when the daemon's world changes.
"""

from __future__ import annotations

import json

from seamguard.journal.base import Journal
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology

META_KEY = "domains"
_FIELDS = ("rack", "cdu", "switch", "pdu", "storage")


def record_domains(journal: Journal, topology: Topology) -> None:
    """Keep ``topology``'s map in ``journal`` (at a writer's start, and when the world changes)."""
    journal.set_meta(META_KEY, domains_json(topology))


def domains_json(topology: Topology) -> str:
    names = topology.names
    rack, cdu = names[EntityKind.RACK], names[EntityKind.CDU]
    leaf, pdu, sto = names[EntityKind.SWITCH], names[EntityKind.PDU], names[EntityKind.STORAGE]
    out: dict[str, list[str]] = {}
    for i, node in enumerate(names[EntityKind.NODE]):
        r = int(topology.node_rack[i])
        p, s = int(topology.node_pdu[i]), int(topology.node_storage[i])
        out[node] = [rack[r], cdu[int(topology.rack_cdu[r])], leaf[int(topology.node_leaf[i])],
                     pdu[p] if p >= 0 else "", sto[s] if s >= 0 else ""]  # fmt: skip
    return json.dumps(out, separators=(",", ":"))


class Domains:
    """The journal's map read back: an entity's domains upstream, a domain's nodes below."""

    def __init__(self, raw: str) -> None:
        self._nodes: dict[str, list[str]] = json.loads(raw)

    def node_of(self, entity: str) -> str | None:
        parts = entity.split("/")
        if parts[0] in ("node", "gpu", "link", "nic", "mig") and len(parts) > 1 and parts[1] in self._nodes:
            return parts[1]
        return None

    def upstream(self, entity: str) -> list[str]:
        """The entities ``entity`` depends on, nearest first: its node and uplink, rack, CDU, leaf,
        PDU and storage backend (an entity wider than a node: none known here)."""
        node = self.node_of(entity)
        if node is None:
            return []
        out = [f"node/{node}", f"link/{node}"]
        out += [f"{kind}/{name}" for kind, name in zip(_FIELDS, self._nodes[node], strict=True) if name]
        return [e for e in out if e != entity]

    def nodes_below(self, domain: str) -> list[str]:
        """Nodes in a rack, CDU, leaf, PDU or storage backend (a node: itself)."""
        kind, _, name = domain.partition("/")
        if kind == "node":
            return [name] if name in self._nodes else []
        if kind not in _FIELDS:
            return []
        at = _FIELDS.index(kind)
        return [n for n, d in self._nodes.items() if d[at] == name]
