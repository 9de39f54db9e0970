"""docs/architecture.md's code layout names every module of the package in the row of its layer."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "trailgeo"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
TOOLS_ROW = "`src/trailgeo/` tools"


def _layout_rows() -> list[tuple[str, str]]:
    """The code layout table's rows: (first cell, the rest)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    rows = [line[2:] for line in section.splitlines() if line.startswith("| `")]
    return [(row.split(" | ", 1)[0], row.split(" | ", 1)[1]) for row in rows]


def _where_named(module: Path, rows: list[tuple[str, str]]) -> str:
    """The text that must name ``module``: its layer's list (core/, adapters/, app/), or for a
    module of the package itself the rows' first cells and the tools' row."""
    if module.parent != Path():
        layer = f"`src/trailgeo/{module.parent}/`"
        return " ".join(rest for first, rest in rows if first == layer)
    return " ".join(first if first != TOOLS_ROW else rest for first, rest in rows)


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
