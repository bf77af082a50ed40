"""YAML from users (``--config``, scenarios), read within bounds.

``yaml.safe_load`` refuses arbitrary objects but not an alias bomb: a 300-byte document whose
anchors refer to anchors nine deep stands for a billion nodes, and whatever walks the result
(the config merge, validation) runs for minutes and takes gigabytes. So, before anything is
built from it:

- the document is at most ``MAX_YAML_BYTES`` (a config is kilobytes; a scenario tens of them);
- at most ``MAX_ALIASES`` aliases (``*name``): anchors are for sharing a block a few times, and no
  seamguard file needs more;
- at most ``MAX_EXPANDED_NODES`` nodes once every alias is counted at its full size, and no alias
  inside its own anchor (a recursive document).

Each refusal names the file, the line and what was over its bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from seamguard.errors import InputError

MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 1_000_000


class YamlLimitError(yaml.MarkedYAMLError):
    """A document over one of this module's bounds (not a syntax error)."""


class BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that counts aliases as it composes and sizes each document before it is
    constructed: a bomb is refused after reading its few hundred bytes, never expanded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlLimitError(
                    problem=f"more than {MAX_ALIASES} aliases (*name); refused as an alias bomb",
                    problem_mark=mark,
                )
        return super().compose_node(parent, index)

    def compose_document(self) -> Node | None:
        node: Node | None = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes under ``node`` with every alias expanded; linear in the distinct nodes (memoised)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise YamlLimitError(
            problem="an alias inside its own anchor (a recursive document)", problem_mark=node.start_mark
        )
    open_.add(key)
    children: list[Node] = []
    if isinstance(node, SequenceNode):
        children = list(node.value)
    elif isinstance(node, MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1 + sum(_expanded_size(c, sizes, open_) for c in children)
    if total > MAX_EXPANDED_NODES:
        raise YamlLimitError(
            problem=f"aliases expand to more than {MAX_EXPANDED_NODES:,} nodes; refused as an alias bomb",
            problem_mark=node.start_mark,
        )
    open_.discard(key)
    sizes[key] = total
    return total


def load_yaml(text: str, where: str) -> Any:
    """One YAML document within the bounds; InputError naming ``where`` (and the line) if not."""
    if len(text) > MAX_YAML_BYTES:  # a character is at least one byte
        raise InputError(
            where, f"{len(text):,} characters of YAML; at most {MAX_YAML_BYTES:,} bytes are read"
        )
    try:
        return yaml.load(text, Loader=BoundedLoader)  # BoundedLoader is a SafeLoader
    except YamlLimitError as exc:
        raise InputError(_at(where, exc), str(exc.problem)) from None
    except yaml.YAMLError as exc:
        raise InputError(_at(where, exc), f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise InputError(where, "YAML nested too deeply") from None


def _at(where: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where


def read_yaml_text(path: Path, what: str) -> str:
    """The file's text, never more than the bound read (a FIFO or /dev/zero included);
    ``what`` names it in errors ("config", "scenario")."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise InputError(str(path), f"cannot read {what}: {exc.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise InputError(str(path), f"{what} is over {MAX_YAML_BYTES:,} bytes (a {what} is kilobytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"{what} is not UTF-8 text (byte {exc.start})") from None


def merge_mappings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = value
    return out


def parse_yaml(text: str, where: str) -> dict[str, Any]:
    """A YAML mapping from a user, within ``yaml_input``'s bounds (size, aliases, expansion)."""
    data = load_yaml(text, where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(where, f"expected a mapping at the top level, got {type(data).__name__}")
    return data
