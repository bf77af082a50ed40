"""Layers that point one way: no import cycle between the packages of ``src/seamguard``.

A package is the first name under ``seamguard`` (``control``, ``telemetry`` with its sources,
``config`` for the module ``config.py``). Every import counts, at the top of a module or inside a
function, relative or absolute; only those under ``if TYPE_CHECKING:`` are left out (they are not
run). A cycle is named with one import line per arrow, so the line to move is the one printed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PACKAGE = "seamguard"


def _module_name(path: Path, src: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).split(".")[-1] == "TYPE_CHECKING":
            hidden.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return hidden


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Every module name ``node`` may load (``from a import b`` may load ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        anchor = here[: len(here) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def imports(src: Path = SRC) -> Iterator[tuple[str, str, str]]:
    """(importing module, imported module, ``file:line``) for every import of ``seamguard``."""
    for path in sorted((src / ROOT_PACKAGE).rglob("*.py")):
        module, is_package = _module_name(path, src)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        hidden = _type_checking_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in hidden:
                for name in _imported(node, module, is_package):
                    if name.startswith(f"{ROOT_PACKAGE}."):
                        yield module, name, f"{path.relative_to(src)}:{node.lineno}"


def package_of(module: str) -> str:
    return module.split(".")[1]


def package_graph(src: Path = SRC) -> nx.DiGraph:
    """Packages as nodes; an edge carries the first import line (``where``) that makes it."""
    graph = nx.DiGraph()
    for importer, imported, where in imports(src):
        a, b = package_of(importer), package_of(imported)
        if a != b and not graph.has_edge(a, b):
            graph.add_edge(a, b, where=where)
    return graph


def cycles(graph: nx.DiGraph) -> list[str]:
    """One cycle per strongly connected set of packages, each arrow with its import line."""
    named = []
    for component in nx.strongly_connected_components(graph):
        if len(component) < 2:
            continue
        cycle = nx.find_cycle(graph.subgraph(component))
        first = min(range(len(cycle)), key=lambda i: cycle[i][0])  # read from its first name, alphabetically
        cycle = cycle[first:] + cycle[:first]
        named.append(
            " -> ".join(f"{a} ({graph.edges[a, b]['where']})" for a, b in cycle) + f" -> {cycle[0][0]}"
        )
    return sorted(named)


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph()
    assert {"config", "control", "economics", "scoring", "telemetry", "actuators", "agent"} <= set(graph)
    found = cycles(graph)
    assert not found, "import cycles between packages:\n" + "\n".join(found)


def test_the_engine_config_is_a_leaf() -> None:
    """``config`` imports only the base modules, ``model`` and the detectors' rules (itself such
    a leaf): every engine package imports it."""
    graph = package_graph()
    base = {"errors", "model", "strict_model", "yaml_input"}
    for module, allowed in (("config", base | {"detector_config"}), ("detector_config", base)):
        assert set(graph.successors(module)) <= allowed, {
            b: graph.edges[module, b]["where"] for b in graph.successors(module) if b not in allowed
        }


def test_a_back_import_is_caught_and_named(tmp_path: Path) -> None:
    """The check itself bites: a function-level import of ``control`` from ``config`` (the cycle
    this file was written against) is found and named with its line."""
    package = tmp_path / ROOT_PACKAGE
    for name, text in {
        "__init__.py": "",
        "config.py": "def load():\n    from seamguard.control.safety import SafetyConfig\n",
        "control/__init__.py": "",
        "control/safety.py": "from typing import TYPE_CHECKING\nfrom seamguard import config\n"
        "if TYPE_CHECKING:\n    from seamguard.agent import advisor\n",
        "agent/__init__.py": "from ..control import safety\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    graph = package_graph(tmp_path)
    assert set(graph.edges) == {("config", "control"), ("control", "config"), ("agent", "control")}
    assert cycles(graph) == [
        "config (seamguard/config.py:2) -> control (seamguard/control/safety.py:2) -> config"
    ]


MAX_MODULE_LINES = 500


def test_every_module_is_under_500_lines() -> None:
    """A module past this has more than one job: split it before it grows further."""
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: {long}"
