"""Locked dependencies: every environment the project creates installs from requirements/*.txt.

Tooling tier. The locks are read as text (no resolver runs here); the Lambda layer is built for
real from its lock with pip, as `sam build` does, and compared with the lock it came from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
LOCKS = ("pip", "tools", "dev", "bench", "layer", "build", "sam", "checkov")
IN_CI = os.environ.get("CI", "").lower() == "true"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_blocks(lock: Path) -> list[str]:
    """One string per requirement: its line and its continuation lines (the hashes)."""
    blocks: list[str] = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith((" ", "\t")) and blocks:
            blocks[-1] += "\n" + line
        else:
            blocks.append(line)
    return blocks


def pins(lock: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for block in requirement_blocks(lock):
        match = _PIN.match(block)
        assert match, f"{lock.name}: not pinned with ==: {block.splitlines()[0]}"
        found.setdefault(canonical(match[1]), set()).add(match[2])
    return found


def declared(requirements: list[str]) -> set[str]:
    return {canonical(m[1]) for r in requirements if (m := _NAME.match(r))}


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@pytest.mark.parametrize("lock", LOCKS)
def test_given_the_locks_when_read_then_every_requirement_is_pinned_with_hashes(lock: str) -> None:
    # Given a lock file
    blocks = requirement_blocks(REQUIREMENTS / f"{lock}.txt")

    # Then every requirement is one exact version with at least one sha256 (pip --require-hashes)
    assert blocks
    for block in blocks:
        assert _PIN.match(block), block
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), f"{lock}.txt: no hash for {block.split()[0]}"


def test_given_pyproject_then_the_dev_lock_and_the_layer_lock_hold_every_dependency_it_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = declared(project["dependencies"])
    dev = declared(project["optional-dependencies"]["dev"])
    bench = declared(project["optional-dependencies"]["bench"])

    assert runtime - pins(REQUIREMENTS / "layer.txt").keys() == set()
    assert (runtime | dev | {"setuptools", "wheel"}) - pins(REQUIREMENTS / "dev.txt").keys() == set()
    assert bench - pins(REQUIREMENTS / "bench.txt").keys() == set()


def test_given_the_tooling_then_the_dev_lock_holds_every_dependency_it_names() -> None:
    # Given tools/pyproject.toml (trailgeo-tools, installed into .venv with --no-deps after trailgeo)
    tools = tomllib.loads((ROOT / "tools" / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    # Then what it needs besides trailgeo itself is pinned in the dev lock, and it is not in the layer's
    assert "trailgeo" in declared(tools["dependencies"])
    assert declared(tools["dependencies"]) - {"trailgeo"} - pins(REQUIREMENTS / "dev.txt").keys() == set()
    assert canonical(tools["name"]) not in pins(REQUIREMENTS / "layer.txt")


def test_given_the_layer_lock_then_the_lambda_runs_the_versions_the_tests_ran() -> None:
    # The layer is resolved with the dev lock as constraints: what CI tested is what Lambda loads.
    dev = pins(REQUIREMENTS / "dev.txt")
    for name, versions in pins(REQUIREMENTS / "layer.txt").items():
        assert versions <= dev[name], f"{name}: layer {versions} but the tests ran {dev[name]}"


def test_given_the_makefiles_then_every_pip_install_is_hash_checked_or_installs_only_the_project() -> None:
    # Given every Makefile line that runs pip install (the venvs, the bench extra, the layer)
    makefiles = [ROOT / "Makefile", *sorted((ROOT / "layers").glob("*/Makefile"))]
    text = "\n".join(f.read_text(encoding="utf-8").replace("\\\n", " ") for f in makefiles)
    installs = [
        line for line in text.splitlines() if re.search(r"pip install|PIP_LOCKED\)|\(PIP\) install", line)
    ]

    # Then each one either requires hashes from a lock, or installs the project itself without deps
    assert installs
    for line in installs:
        hashed = "--require-hashes" in line or "$(PIP_LOCKED)" in line
        project_only = "--no-deps" in line and bool(re.search(r"-e \.(/tools)?$|trailgeo-\*\.whl", line))
        assert hashed or project_only, line
    assert not [line for line in installs if "--upgrade" in line]
    # and the development tooling goes into .venv only, never into a layer
    tooling = [line for line in installs if "./tools" in line]
    assert [line.split()[0] for line in tooling] == ["$(BIN)/python"]


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-s", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_given_no_saved_parameters_when_deploying_dry_then_the_first_deploy_is_guided(tmp_path: Path) -> None:
    # Given the shipped samconfig.toml, which saves no parameters
    # When `make deploy DRY_RUN=1` runs
    done = _make("deploy", "DRY_RUN=1")

    # Then it prints (and does not run) a guided deploy with the project's own sam
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{ROOT}/.venv-sam/bin/sam deploy --config-file {ROOT}/samconfig.toml --config-env default --guided"
    )


def test_given_saved_parameters_when_deploying_dry_then_it_deploys_from_samconfig(tmp_path: Path) -> None:
    # Given a samconfig.toml whose prod environment has saved parameters
    text = (ROOT / "samconfig.toml").read_text(encoding="utf-8")
    saved = text.replace(
        "[prod.deploy.parameters]\n",
        '[prod.deploy.parameters]\nparameter_overrides = "TrailBucketName=trail"\n',
    )
    config = tmp_path / "samconfig.toml"
    config.write_text(saved, encoding="utf-8")

    # When prod and default are deployed dry
    prod = _make("deploy", "DRY_RUN=1", "CONFIG_ENV=prod", f"SAMCONFIG={config}")
    default = _make("deploy", "DRY_RUN=1", f"SAMCONFIG={config}")

    # Then prod deploys from the file and default, which has none, is still guided
    assert prod.stdout.strip().endswith(f"--config-file {config} --config-env prod"), prod.stderr
    assert default.stdout.strip().endswith("--config-env default --guided"), default.stderr


def test_given_a_dry_delete_then_it_says_what_is_retained_and_deletes_nothing() -> None:
    done = _make("delete", "DRY_RUN=1")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(
        "sam delete --config-file " + f"{ROOT}/samconfig.toml --config-env default"
    )
    assert "DynamoDB table" in done.stderr
    assert "ExistingTableName=" in done.stderr


def test_given_the_geoip_layer_makefile_then_it_builds_the_pinned_db_ip_release() -> None:
    pinned = dict(
        re.findall(
            r"^((?:DBIP|ASN)_NPM_\w+) := (\S+)$",
            (REQUIREMENTS / "geoip.mk").read_text(encoding="utf-8"),
            re.M,
        )
    )
    done = subprocess.run(
        [
            "make",
            "-n",
            "-f",
            str(ROOT / "layers" / "geoip" / "Makefile"),
            "build-GeoIpLayer",
            "ARTIFACTS_DIR=/x",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned["DBIP_NPM_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{128}", pinned["DBIP_NPM_SHA512"])
    assert f'DBIP_NPM_VERSION="{pinned["DBIP_NPM_VERSION"]}"' in done.stdout
    assert f'DBIP_NPM_SHA512="{pinned["DBIP_NPM_SHA512"]}"' in done.stdout
    # and the ASN database's release, pinned and checked the same way
    assert pinned["ASN_NPM_PACKAGE"] == "@ip-location-db/asn"
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned["ASN_NPM_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{128}", pinned["ASN_NPM_SHA512"])
    assert f'ASN_NPM_VERSION="{pinned["ASN_NPM_VERSION"]}"' in done.stdout
    assert f'ASN_NPM_SHA512="{pinned["ASN_NPM_SHA512"]}"' in done.stdout


def test_given_make_geoip_then_the_asn_archive_is_checked_against_the_pin_before_it_is_converted() -> None:
    # Given the project's Makefile, When make prints how it builds the ASN database
    done = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), ".cache/geoip/asn.mmdb"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pinned = dict(re.findall(r"^(ASN_NPM_\w+) := (\S+)$", (REQUIREMENTS / "geoip.mk").read_text(), re.M))
    # Then it packs the pinned release, checks its SHA-512, and only then converts it
    script = done.stdout
    packed = script.index(f"npm pack --silent @ip-location-db/asn@{pinned['ASN_NPM_VERSION']}")
    checked = script.index(f"{pinned['ASN_NPM_SHA512']}  ip-location-db-asn-{pinned['ASN_NPM_VERSION']}.tgz")
    converted = script.index("layers/geoip/asn_mmdb.py")
    assert packed < checked < converted
    assert "sha512sum --check" in script


def test_given_a_db_ip_archive_that_is_not_the_pinned_one_then_the_layer_build_fails(tmp_path: Path) -> None:
    # Given the pinned release but another digest (a republished or tampered archive)
    if shutil.which("npm") is None:
        unavailable("npm is not on PATH (needed to fetch DB-IP Lite from the npm registry)")
    version = re.search(r"^DBIP_NPM_VERSION := (\S+)$", (REQUIREMENTS / "geoip.mk").read_text(), re.M)
    assert version
    sources = {"TRAILGEO_MMDB", "MAXMIND_LICENSE_KEY", "TRAILGEO_ASN_MMDB", "TRAILGEO_ASN"}
    env = {k: v for k, v in os.environ.items() if k not in sources}
    env |= {"DBIP_NPM_VERSION": version[1], "DBIP_NPM_SHA512": "0" * 128}

    # When the layer builds
    done = subprocess.run(
        ["sh", str(ROOT / "layers" / "geoip" / "build.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )

    # Then it stops, says why, and installs nothing
    assert done.returncode != 0
    assert "SHA-512 mismatch" in done.stderr
    assert not (tmp_path / "geoip" / "country.mmdb").exists()


def test_given_an_asn_archive_that_is_not_the_pinned_one_then_the_layer_build_fails(tmp_path: Path) -> None:
    # Given the pinned DB-IP release, and the pinned ASN release with another digest
    if shutil.which("npm") is None:
        unavailable("npm is not on PATH (needed to fetch the ASN database from the npm registry)")
    text = (REQUIREMENTS / "geoip.mk").read_text()
    pinned = dict(re.findall(r"^((?:DBIP|ASN)_NPM_\w+) := (\S+)$", text, re.M))
    sources = {"TRAILGEO_MMDB", "MAXMIND_LICENSE_KEY", "TRAILGEO_ASN_MMDB", "TRAILGEO_ASN"}
    env = {k: v for k, v in os.environ.items() if k not in sources}
    env |= {key: pinned[key] for key in ("DBIP_NPM_VERSION", "DBIP_NPM_SHA512", "ASN_NPM_VERSION")}
    env |= {"ASN_NPM_SHA512": "0" * 128}

    # When the layer builds
    done = subprocess.run(
        ["sh", str(ROOT / "layers" / "geoip" / "build.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )

    # Then it stops, says why, and installs no ASN database
    assert done.returncode != 0
    assert "@ip-location-db/asn" in done.stderr
    assert "SHA-512 mismatch" in done.stderr
    assert not (tmp_path / "geoip" / "asn.mmdb").exists()


def test_given_the_layer_lock_when_the_layer_builds_then_it_holds_exactly_the_locked_versions(
    tmp_path: Path,
) -> None:
    # Given the layer's Makefile, run as `sam build` runs it (another directory, ARTIFACTS_DIR set)
    python313 = shutil.which("python3.13")
    runs = (
        python313
        and subprocess.run([python313, "-c", "pass"], capture_output=True, check=False).returncode == 0
    )
    if python313 is None or not runs:
        unavailable("python3.13 does not run here (the Makefile's PYENV_VERSION puts it on PATH)")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    artifacts = tmp_path / "artifacts"
    done = subprocess.run(
        ["make", "-s", "-f", str(ROOT / "layers" / "trailgeo" / "Makefile"), "build-TrailgeoLayer"],
        cwd=scratch,
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts), "LAYER_PYTHON": str(python313)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # Then python/ holds the lock's versions, the package itself, and nothing that was not locked
    site = artifacts / "python"
    installed = {
        canonical(d.name.split("-")[0]): d.name.removesuffix(".dist-info").split("-")[1]
        for d in site.glob("*.dist-info")
    }
    locked = pins(REQUIREMENTS / "layer.txt")
    assert installed.pop("trailgeo") == _project_version()
    assert installed.keys() == locked.keys()
    for name, version in installed.items():
        assert version in locked[name], f"{name} {version} is not the locked {locked[name]}"
    assert (site / "trailgeo" / "core" / "records.py").exists()
    assert not list(tmp_path.rglob("*.egg-info")), "the build wrote into the tree"


def _project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])
