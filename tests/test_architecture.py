"""The package's architecture as a test: no import circles, imports only go down, no private names across rooms.

Every module of survey_cracks is parsed with `ast` (imports inside functions count; a
lazy import is still a dependency; imports under ``if TYPE_CHECKING:`` do not, as they
never run). A *room* is a subpackage (``survey_cracks/models/``); the root modules
(config, errors, tiling, background) and ``outputs/`` form the room ``root``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "survey_cracks"

# The rooms from the bottom up. A room may import its own modules and the rooms of lower
# tiers; rooms of one tier are peers and import neither each other nor anything above.
# Read from the code's own arrows:
# - root: typed config, errors, window geometry, background threads, atomic writers and styles: no I/O stack.
# - io reads rasters and annotations; edge (the torch-free runtime) and synthetic (procedural scenes) stand alone.
# - vectors turns heatmaps into polygons; evaluation scores them (evaluate reads heatmaps by vectors).
# - models is the network, its engines and export (export checks pixel F1 by evaluation, runs edge.runtime).
# - inference runs models over windows on Dask; training fits models; neither needs the other.
# - deliver writes the products; run orchestrates a survey (inference, deliver); cli parses and calls one of them.
TIERS: list[set[str]] = [
    {"root"},
    {"io"},
    {"edge", "synthetic"},
    {"vectors"},
    {"evaluation"},
    {"models"},
    {"inference", "training"},
    {"deliver"},
    {"run"},
    {"cli"},
]
ROOT_ROOM = {"config", "errors", "tiling", "background", "outputs", "tuning"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ROOT_ROOM:
        return "root"
    return parts[1]


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (they never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) of every survey_cracks import in ``path``."""
    here = module_name(path, root)
    package = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "survey_cracks"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "survey_cracks":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, "", node.lineno) if submodule in modules else (base, alias.name, node.lineno))
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, list[tuple[str, str, int]]]:
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    return {name: imports_of(path, set(paths), package) for name, path in sorted(paths.items())}


def cycles(graph: dict[str, list[tuple[str, str, int]]]) -> list[list[str]]:
    """The module circles (strongly connected components of more than one module, or a self-import)."""
    edges = {m: sorted({t for t, _, _ in targets if t in graph}) for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return found


def tier_of(room: str) -> int:
    return next(i for i, rooms in enumerate(TIERS) if room in rooms)


def violations(graph: dict[str, list[tuple[str, str, int]]]) -> list[str]:
    """Upward or sideways imports between rooms, and private names taken from another room."""
    found = []
    for module, targets in graph.items():
        for target, name, line in targets:
            source_room, target_room = room_of(module), room_of(target)
            if source_room == target_room:
                continue
            if tier_of(target_room) >= tier_of(source_room):
                found.append(f"{module}:{line} imports {target} ({source_room} may not import {target_room})")
            private = [part for part in [*target.split("."), name] if part.startswith("_") and not part.startswith("__")]
            if private:
                found.append(f"{module}:{line} takes private {'.'.join(private)} from {target} (room {target_room})")
    return found


def room_graph(graph: dict[str, list[tuple[str, str, int]]]) -> str:
    arrows: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for target, _, _ in targets:
            if room_of(module) != room_of(target):
                arrows[room_of(module)].add(room_of(target))
    return "\n".join(f"  {room} -> {', '.join(sorted(arrows[room]))}" for room in sorted(arrows, key=tier_of))


def test_every_room_has_a_tier():
    rooms = {room_of(module) for module in import_graph()}
    assert rooms <= set().union(*TIERS), f"rooms without a tier: {rooms - set().union(*TIERS)}"


def test_no_import_circles():
    graph = import_graph()
    assert not cycles(graph), f"import circles: {cycles(graph)}\nroom graph:\n{room_graph(graph)}"


def test_rooms_import_only_lower_rooms_and_no_private_names():
    graph = import_graph()
    found = violations(graph)
    assert not found, "\n".join(["imports against the room order:", *found, "room graph:", room_graph(graph)])


def test_the_check_catches_an_upward_import_a_circle_and_a_private_name(tmp_path):
    """The check itself can fail: a copy of a tiny package with each fault in it."""
    package = tmp_path / "survey_cracks"
    for room in ("models", "training", "io"):
        (package / room).mkdir(parents=True)
        (package / room / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text("from survey_cracks.errors import ConfigError\n")
    (package / "errors.py").write_text("def late():\n    from survey_cracks.config import X\n")
    (package / "models" / "network.py").write_text("def f():\n    from survey_cracks.training.segment import fit\n")
    (package / "training" / "data.py").write_text("from survey_cracks.io.raster import _private\n")
    (package / "io" / "raster.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                             "    from survey_cracks.training.data import x\n")
    graph = import_graph(package)
    assert cycles(graph) == [["survey_cracks.config", "survey_cracks.errors"]]
    found = violations(graph)
    assert any("survey_cracks.models.network:2 imports survey_cracks.training.segment" in v for v in found), found
    assert any("takes private _private from survey_cracks.io.raster" in v for v in found), found
    assert not any(v.startswith("survey_cracks.io.raster") for v in found), found  # TYPE_CHECKING is skipped
