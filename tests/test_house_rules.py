"""House rules the linter enforces, checked so that they cannot be switched off unnoticed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_given_the_ruff_configuration_then_the_complexity_gate_is_on_at_fifteen_at_most() -> None:
    # Given pyproject.toml's ruff settings
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]

    # Then McCabe's complexity is selected, never ignored, with a maximum of 15 or less
    assert "C90" in lint["select"]
    assert not {"C90", "C901"} & set(lint.get("ignore", []))
    assert lint["mccabe"]["max-complexity"] <= 15


def test_given_the_source_then_only_the_hot_loop_is_excused_from_the_complexity_gate() -> None:
    # Given every noqa naming C901 in the package and in the development tooling (tools/)
    excused = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "tools" / "src").rglob("*.py")])
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"noqa:[^#]*\bC901\b", line)
    ]

    # Then there is one, the per-event loop of the aggregate, and it says why
    assert len(excused) == 1, excused
    assert excused[0].startswith("src/trailgeo/core/aggregate/accumulate.py:")


def test_given_the_linters_then_they_cover_the_development_tooling_too() -> None:
    # Given pyproject.toml's ruff and mypy settings
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]

    # Then ruff knows tools/src as first-party sources and mypy (strict) checks the tooling's package
    assert "tools/src" in tool["ruff"]["src"]
    assert "tools/src/trailgeo_tools" in tool["mypy"]["files"]
    assert tool["mypy"]["strict"] is True
