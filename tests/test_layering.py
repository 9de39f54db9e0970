"""Every package says what it may import, in its docstring's ``May import:`` line, and keeps to it;
every top-level folder opens with a README saying what lives there.

The line names module prefixes of the project (`trailgeo.core` covers ``trailgeo.core.alerts``) and
third-party top-level names (`mypy_boto3_*` is a pattern), in backticks; the standard library is
always allowed. A module answers to its nearest package. Imports are read from the source at any
depth, type-only ones included (a type-only import still couples the layers).
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_import_graph import imports_of, module_files

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ((ROOT / "src", "trailgeo"), (ROOT / "tools" / "src", "trailgeo_tools"))
RULE = re.compile(r"^May import:(?P<rule>.*?)(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
ALWAYS = frozenset(sys.stdlib_module_names) | {"__future__"}


def rule_of(docstring: str | None) -> frozenset[str] | None:
    """The backticked names of a docstring's ``May import:`` paragraph; None without one."""
    found = RULE.search(docstring or "")
    return frozenset(re.findall(r"`([^`]+)`", found["rule"])) if found else None


def _allowed(name: str, rule: frozenset[str]) -> bool:
    return any(
        name == item or name.startswith(f"{item}.") or fnmatch.fnmatchcase(name, item) for item in rule
    )


def _packages() -> dict[str, Path]:
    """Every package of the project (dotted name -> its ``__init__.py``)."""
    return {
        name: path
        for source, package in SOURCES
        for name, path in module_files(source, package).items()
        if path.name == "__init__.py"
    }


def _every_module() -> dict[str, tuple[Path, str]]:
    """Every module (dotted name -> (file, the package it answers to))."""
    modules: dict[str, tuple[Path, str]] = {}
    for source, package in SOURCES:
        for name, path in module_files(source, package).items():
            modules[name] = (path, name if path.name == "__init__.py" else name.rsplit(".", 1)[0])
    return modules


def violations(
    modules: dict[str, tuple[Path, str]], rules: dict[str, frozenset[str]]
) -> dict[str, list[str]]:
    """Module -> the imports its package's rule does not allow."""
    known = modules.keys()
    found: dict[str, list[str]] = {}
    for name, (path, package) in sorted(modules.items()):
        inside, outside = imports_of(name, path, known)
        rule = rules[package]
        own = {m for m in inside if m == package or m.startswith(f"{package}.")}
        bad = sorted(m for m in inside - own if not _allowed(m, rule))
        bad += sorted(m for m in outside - ALWAYS if not _allowed(m, rule))
        if bad:
            found[name] = bad
    return found


def _rules() -> dict[str, frozenset[str]]:
    rules = {}
    for name, path in _packages().items():
        rule = rule_of(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))))
        assert rule is not None, f"{path.relative_to(ROOT)}: its docstring has no 'May import:' line"
        rules[name] = rule
    return rules


def test_given_a_module_importing_beyond_its_package_rule_then_it_is_named(tmp_path: Path) -> None:
    # Given a package allowed only the standard library and pkg.core, whose module imports boto3
    # inside a function and pkg.app at the top
    (tmp_path / "pkg" / "core").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text('"""Root.\n\nMay import: `pkg`.\n"""\n')
    (tmp_path / "pkg" / "app.py").write_text("")
    (tmp_path / "pkg" / "core" / "__init__.py").write_text('"""Core.\n\nMay import: `pkg.core`.\n"""\n')
    late_boto3 = "import json\nimport pkg.app\ndef f():\n    import boto3\n"
    (tmp_path / "pkg" / "core" / "x.py").write_text(late_boto3)
    modules = {
        name: (path, name if path.name == "__init__.py" else name.rsplit(".", 1)[0])
        for name, path in module_files(tmp_path, "pkg").items()
    }
    rules = {"pkg": rule_of("Root.\n\nMay import: `pkg`."), "pkg.core": rule_of("May import: `pkg.core`.")}

    # When the modules are held to their rules
    found = violations(modules, {k: v for k, v in rules.items() if v is not None})

    # Then the core module's two imports outside its rule are named, the standard library is not
    assert found == {"pkg.core.x": ["pkg.app", "boto3"]}


def test_given_every_package_then_its_modules_import_only_what_its_docstring_allows() -> None:
    # Given each package's "May import:" line
    rules = _rules()
    assert {"trailgeo.core", "trailgeo.adapters", "trailgeo.app", "trailgeo_tools"} <= rules.keys()

    # When every module's imports are read
    found = violations(_every_module(), rules)

    # Then each keeps to its package's line
    assert found == {}, "\n".join(f"{name} imports {', '.join(bad)}" for name, bad in found.items())


@pytest.mark.parametrize(
    ("package", "never"),
    [
        ("trailgeo.core", ("boto3", "botocore", "trailgeo.adapters", "trailgeo.app", "trailgeo.ports")),
        ("trailgeo.core.aggregate", ("boto3", "botocore", "trailgeo.adapters", "trailgeo.app")),
        ("trailgeo.core.render", ("boto3", "botocore", "trailgeo.adapters", "trailgeo.app", "pydantic")),
        ("trailgeo.adapters", ("trailgeo.app", "trailgeo.cli", "trailgeo_tools")),
        ("trailgeo.app.detect", ("boto3", "botocore", "trailgeo.adapters")),
        ("trailgeo.app.operate", ("boto3", "botocore", "trailgeo.adapters")),
        ("trailgeo.app", ("trailgeo.cli", "trailgeo_tools")),
    ],
)
def test_given_a_layer_then_its_rule_does_not_allow_what_the_architecture_forbids(
    package: str, never: tuple[str, ...]
) -> None:
    # Given the layer's own "May import:" line
    rule = _rules()[package]

    # When the names the architecture forbids it are looked up in it
    allowed = [name for name in never if _allowed(name, rule) or _allowed(f"{name}.x", rule)]

    # Then none is allowed: loosening a layer is a visible change of this test, not of a docstring
    assert allowed == []


def test_given_the_top_level_folders_then_each_opens_with_a_readme() -> None:
    # Given the repository's tracked top-level folders
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    folders = sorted({line.split("/", 1)[0] for line in listed if "/" in line and not line.startswith(".")})
    assert {"src", "tests", "functions", "layers", "docs", "requirements", "tools"} <= set(folders)

    # When each is looked at for a README.md with a first paragraph
    missing = [
        folder
        for folder in folders
        if not (ROOT / folder / "README.md").is_file()
        or not (ROOT / folder / "README.md").read_text(encoding="utf-8").strip()
    ]

    # Then every folder says what lives there
    assert missing == []


def test_given_the_product_and_its_tooling_then_only_the_wiring_builds_a_run_s_dependencies() -> None:
    # Given every module of the package and of the tooling
    modules = _every_module()

    # When the calls that build ``Dependencies`` are looked for
    builders = sorted(
        name
        for name, (path, _) in modules.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "Dependencies"
    )

    # Then app/wiring.py is the one place ports meet adapters
    assert set(builders) == {"trailgeo.app.wiring"}
