"""docs/architecture.md's code layout names every module of the package in the row of its layer,
and every module of the development tooling (tools/) in the tooling's row."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "trailgeo"
TOOLS_PACKAGE = ROOT / "tools" / "src" / "trailgeo_tools"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
TOOLS_ROW = "`tools/src/trailgeo_tools/`"


def _layout_rows() -> list[tuple[str, str]]:
    """The code layout table's rows: (first cell, the rest)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    rows = [line[2:] for line in section.splitlines() if line.startswith("| `")]
    return [(row.split(" | ", 1)[0], row.split(" | ", 1)[1]) for row in rows]


def _where_named(module: Path, rows: list[tuple[str, str]]) -> str:
    """The text that must name ``module``: its layer's list (core/, adapters/, app/), or for a
    module of the package itself the rows' first cells."""
    if module.parent != Path():
        layer = f"`src/trailgeo/{module.parent}/`"
        return " ".join(rest for first, rest in rows if first == layer)
    return " ".join(first for first, _ in rows)


def test_given_the_package_then_the_architecture_code_layout_names_every_module() -> None:
    # Given every module of the package (package markers aside) and the code layout table
    modules = sorted(
        path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"
    )
    rows = _layout_rows()

    # When each is looked for where its layer is described
    missing = [
        str(module)
        for module in modules
        if not re.search(rf"`(src/trailgeo/)?{re.escape(module.stem)}(\.py)?`", _where_named(module, rows))
    ]

    # Then none is missing
    assert missing == []


def test_given_the_tooling_then_the_architecture_code_layout_names_every_module_in_its_row() -> None:
    # Given every module of the development tooling (package markers aside) and the tooling's row
    modules = sorted(
        path.stem for path in TOOLS_PACKAGE.glob("*.py") if path.name not in {"__init__.py", "__main__.py"}
    )
    (named,) = [rest for first, rest in _layout_rows() if first == TOOLS_ROW]

    # Then each is named there (the product's own cli.py is another module of the same name)
    assert modules
    assert [module for module in modules if f"`{module}`" not in named] == []
