"""The wheel TrailgeoLayer installs holds the product only: what the Lambdas and the operator CLI run.

The wheel is built as layers/trailgeo/Makefile builds it (``pip wheel --no-deps
--no-build-isolation`` of a copy of the files its PKG_FILES names), with the setuptools and wheel
of the running interpreter; its modules are then listed and their imports read (AST), never run.
Development tooling (simulator, evaluation, benchmark, demo) lives in tools/ (``trailgeo-tools``).
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER_MAKEFILE = ROOT / "layers" / "trailgeo" / "Makefile"
PACKAGE = ROOT / "src" / "trailgeo"
# How the layer's Makefile builds the wheel from its copy of the sources (./pkg).
WHEEL_COMMAND = "wheel --quiet --no-deps --no-build-isolation --wheel-dir wheels ./pkg"

# The product's top level: the detector's layers (core, adapters, app), the protocols between
# them, logging and metrics, and the operator CLI (``trailgeo``, ``python -m trailgeo``).
PRODUCT_TOP_LEVEL = {
    "trailgeo",
    "trailgeo.__main__",
    "trailgeo.adapters",
    "trailgeo.app",
    "trailgeo.cli",
    "trailgeo.core",
    "trailgeo.observability",
    "trailgeo.ports",
}
TOOLING = ("simulate", "evaluation", "bench", "bench_scale", "bench_common", "demo")
# Packages that are development dependencies only: not in requirements/layer.txt, not in Lambda.
DEV_ONLY_IMPORTS = {"moto", "pytest", "trailgeo_tools"}


def _pkg_files() -> list[str]:
    """What the Makefile's PKG_FILES copies: its literal entries, and its $(wildcard) patterns
    of the repository root as they match here."""
    text = LAYER_MAKEFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = re.search(r"^PKG_FILES := (.+)$", text, re.MULTILINE)
    assert found, "layers/trailgeo/Makefile no longer defines PKG_FILES"
    definition = found[1]
    literal = definition.split("$(", 1)[0].split()
    patterns = re.findall(r"\$\(ROOT\)/(\S+?)(?=[\s)])", definition)
    matched = sorted({path.name for pattern in patterns for path in ROOT.glob(pattern)})
    return [*literal, *matched]


@pytest.fixture(scope="module")
def layer_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trailgeo wheel, built once for this file's tests as the layer's Makefile builds it."""
    makefile = LAYER_MAKEFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    assert WHEEL_COMMAND in makefile, "the layer's Makefile builds its wheel another way: update this test"
    workdir = tmp_path_factory.mktemp("layer-wheel")
    pkg = workdir / "pkg"
    pkg.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in _pkg_files():
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, pkg / name, ignore=ignore)
        else:
            shutil.copy2(source, pkg / name)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", *WHEEL_COMMAND.split()],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (workdir / "wheels").glob("trailgeo-*.whl")
    return wheel


def _module(path: str) -> str:
    parts = PurePosixPath(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _python_files(wheel: zipfile.ZipFile) -> dict[str, str]:
    return {
        name: wheel.read(name).decode("utf-8")
        for name in wheel.namelist()
        if name.endswith(".py") and ".dist-info/" not in name
    }


def _imports(path: str, source: str) -> set[str]:
    """Every module the file at ``path`` imports (relative imports resolved against its package),
    names as a literal to ``import_module``, or runs in a child (``[sys.executable, "-m", X]``)."""
    package = PurePosixPath(path).parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
        elif isinstance(node, ast.List | ast.Tuple):
            items = [item.value if isinstance(item, ast.Constant) else None for item in node.elts]
            names.update(str(run) for flag, run in itertools.pairwise(items) if flag == "-m" and run)
    return names


def test_given_the_layer_wheel_then_its_top_level_is_exactly_the_product(layer_wheel: Path) -> None:
    # Given the wheel the layer installs
    with zipfile.ZipFile(layer_wheel) as wheel:
        # When its modules are listed
        modules = {_module(name) for name in _python_files(wheel)}
        tops = {name.split("/", 1)[0] for name in wheel.namelist() if ".dist-info/" not in name}

    # Then it holds one package, trailgeo, whose top level is the product's and nothing else
    assert tops == {"trailgeo"}
    assert {m for m in modules if m.count(".") <= 1} == PRODUCT_TOP_LEVEL
    # and every module of the package's sources (the layers' modules included), no stale build output
    sources = {_module(path.relative_to(PACKAGE.parent).as_posix()) for path in PACKAGE.rglob("*.py")}
    assert modules == sources


def test_given_the_layer_wheel_then_no_development_tooling_is_in_it(layer_wheel: Path) -> None:
    # Given the wheel the layer installs
    with zipfile.ZipFile(layer_wheel) as wheel:
        modules = {_module(name) for name in _python_files(wheel)}
        entry_points = next(
            wheel.read(name).decode("utf-8")
            for name in wheel.namelist()
            if name.endswith(".dist-info/entry_points.txt")
        )
        data = {name for name in wheel.namelist() if not name.endswith(".py") and ".dist-info/" not in name}

    # Then no simulator, evaluation, benchmark or demo module, nor the tools' package, is in it
    assert sorted(m for m in modules if m.split(".")[-1] in TOOLING or m.startswith("trailgeo_tools")) == []
    # and its one console script is the operator CLI; its data are the type marker, the method list,
    # the hosting networks and the distances between countries
    assert re.findall(r"^(\S+) = (\S+)$", entry_points, re.MULTILINE) == [("trailgeo", "trailgeo.cli:main")]
    assert data == {
        "trailgeo/py.typed",
        "trailgeo/data/attack_methods.json",
        "trailgeo/data/hosting_networks.json",
        "trailgeo/data/country_distances.json",
    }


def test_given_the_layer_wheel_then_no_module_imports_a_development_dependency(
    layer_wheel: Path,
) -> None:
    # Given every module of the wheel the layer installs
    with zipfile.ZipFile(layer_wheel) as wheel:
        files = _python_files(wheel)

    # When their imports are read
    imported = {name: _imports(name, source) for name, source in files.items()}

    # Then none imports moto, pytest or the tools' package (lazily inside a function included)
    offending = {
        name: sorted(i for i in names if i.split(".")[0] in DEV_ONLY_IMPORTS)
        for name, names in imported.items()
    }
    assert {name: found for name, found in offending.items() if found} == {}
    # and the scan does see the package's own imports (it cannot pass by reading nothing)
    assert "trailgeo.core.aggregate" in imported["trailgeo/app/detect/ingest.py"]
