"""The package's static import graph: no cycle anywhere, and the renderings depend on core alone.

The graph is read from the source (AST over src/trailgeo, imports at module level and inside
functions alike), so a cycle hidden behind a late import is found too. Imports under
``if TYPE_CHECKING:`` never run: they are left out of the cycle check (a class and its helpers may
name each other's types) but still count for the rule of what render may import.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"
PACKAGE = "trailgeo"
RENDER = "trailgeo.core.render"
CORE = "trailgeo.core"

Graph = Mapping[str, frozenset[str]]


def module_files(source: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``source``, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module ``from <base> import ...`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def _resolve(name: str, modules: Collection[str]) -> str | None:
    """The module of the package ``name`` is, or is inside (``trailgeo.core.alerts.Alert`` is
    ``trailgeo.core.alerts``); None for a name outside the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names an import loads: each ``import`` target; for ``from X import a`` the
    submodule ``X.a`` when there is one, else ``X`` (``_resolve`` decides)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    else:
        base = _base(node, module, is_package)
        yield from (f"{base}.{alias.name}" for alias in node.names)


def _type_only(tree: ast.AST) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:`` (they never run)."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}
        for statement in block.body
        for node in ast.walk(statement)
        if isinstance(node, ast.Import | ast.ImportFrom)
    }


def imports_of(
    module: str, path: Path, modules: Collection[str], *, runtime_only: bool = False
) -> tuple[frozenset[str], frozenset[str]]:
    """(the package's modules ``module`` imports, the top-level names of everything else it
    imports), reading every import statement of the file, at any depth; with ``runtime_only``,
    those under ``if TYPE_CHECKING:`` left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _type_only(tree) if runtime_only else set()
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and node not in skipped:
            for name in _targets(node, module, path.name == "__init__.py"):
                resolved = _resolve(name, modules)
                if resolved is None:
                    outside.add(name.split(".")[0])
                elif resolved != module:
                    inside.add(resolved)
    return frozenset(inside), frozenset(outside)


def import_graph(source: Path, package: str, skip: frozenset[str] = frozenset()) -> dict[str, frozenset[str]]:
    """Module -> the package's modules it imports, ``skip`` left out (as modules and as targets)."""
    modules = module_files(source, package)
    return {
        name: imports_of(name, path, modules.keys(), runtime_only=True)[0] - skip
        for name, path in modules.items()
        if name not in skip
    }


def cycles(graph: Graph) -> list[tuple[list[str], list[str]]]:
    """Each strongly connected component that holds a cycle (Tarjan), sorted, with one shortest
    cycle through it (``[a, b, ..., a]``)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(component, _cycle_in(graph, set(component))) for component in components]


def _cycle_in(graph: Graph, component: set[str]) -> list[str]:
    """A closed path through the component's first module (breadth-first: a shortest one)."""
    start = min(component)
    paths = {target: [start, target] for target in sorted(graph[start]) if target in component}
    frontier = list(paths)
    while start not in paths:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target in component and target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    return paths[start]


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_given_two_modules_importing_each_other_inside_a_function_then_the_cycle_is_found(
    tmp_path: Path,
) -> None:
    # Given a package whose module a imports b at the top and b imports a inside a function,
    # relatively, and whose module c imports a without being imported back
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/a.py": "from pkg.sub.b import thing\n",
            "pkg/sub/b.py": "def thing():\n    from . import a\n    return a\n",
            "pkg/c.py": "import json\nfrom pkg.sub import a\n",
        },
    )

    # When its graph is built and searched
    graph = import_graph(tmp_path, "pkg")
    found = cycles(graph)

    # Then the late import is an edge, and a <-> b is the one cycle
    assert graph["pkg.sub.b"] == {"pkg.sub.a"}
    assert graph["pkg.c"] == {"pkg.sub.a"}
    assert found == [(["pkg.sub.a", "pkg.sub.b"], ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"])]


def test_given_the_package_then_its_import_graph_has_no_cycle() -> None:
    # Given the package's import graph, tooling aside
    graph = import_graph(SOURCE, PACKAGE, skip=frozenset())
    assert len(graph) > 40  # the real tree, read whole

    # When its cycles are searched
    found = cycles(graph)

    # Then there are none
    assert found == [], "import cycles:\n" + "\n".join(
        f"{' -> '.join(cycle)} (modules in the loop: {', '.join(component)})" for component, cycle in found
    )


def test_given_the_renderings_then_they_import_only_core_and_the_standard_library() -> None:
    # Given every module of trailgeo.core.render
    modules = module_files(SOURCE, PACKAGE)
    render = {name: path for name, path in modules.items() if name == RENDER or name.startswith(f"{RENDER}.")}
    assert len(render) > 1

    # When their imports are read
    imports = {name: imports_of(name, path, modules) for name, path in render.items()}

    # Then each is of trailgeo.core or of the standard library (no boto3, no app, no adapters)
    outside_core = {
        name: sorted(m for m in inside if not m.startswith(f"{CORE}."))
        for name, (inside, _) in imports.items()
        if any(not m.startswith(f"{CORE}.") for m in inside)
    }
    not_stdlib = {
        name: sorted(outside - sys.stdlib_module_names - {"__future__"})
        for name, (_, outside) in imports.items()
        if outside - sys.stdlib_module_names - {"__future__"}
    }
    assert outside_core == {}
    assert not_stdlib == {}


def test_given_core_outside_the_renderings_then_none_of_it_imports_them() -> None:
    # Given the package's import graph
    graph = import_graph(SOURCE, PACKAGE, skip=frozenset())

    # When the modules of core that are no rendering are looked at
    model_side = {
        name: targets
        for name, targets in graph.items()
        if name.startswith(f"{CORE}.") and not (name == RENDER or name.startswith(f"{RENDER}."))
    }

    # Then none imports a rendering: the renderings read the model, never the other way
    reaching = {
        name: sorted(t for t in targets if t == RENDER or t.startswith(f"{RENDER}."))
        for name, targets in model_side.items()
        if any(t == RENDER or t.startswith(f"{RENDER}.") for t in targets)
    }
    assert model_side
    assert reaching == {}
