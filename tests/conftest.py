"""Shared fixtures: paths to the real corpora beside the project, and the GeoIP databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws
from moto.server import ThreadedMotoServer

from tests.aws import create_deployment

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MAXMIND_TEST_DATA = SHARED_DATA / "geoip" / "maxmind-test" / "test-data"
EVENTS = ROOT / "events"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(path: Path, what: str) -> Path:
    """Corpora must be there in CI (fail loudly); elsewhere a missing one skips with the reason."""
    if path.exists():
        return path
    if IN_CI:
        pytest.fail(f"{what} missing at {path} (CI must have ../shared beside the clone)")
    pytest.skip(f"{what} not available at {path}")
    raise AssertionError  # unreachable: skip raises


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require(SHARED_DATA, "shared test corpora")


@pytest.fixture(scope="session")
def city_test_mmdb() -> Path:
    return require(MAXMIND_TEST_DATA / "GeoLite2-City-Test.mmdb", "MaxMind GeoLite2 City test database")


@pytest.fixture(scope="session")
def country_test_mmdb() -> Path:
    return require(MAXMIND_TEST_DATA / "GeoIP2-Country-Test.mmdb", "MaxMind GeoIP2 Country test database")


@pytest.fixture(scope="session")
def dbip_mmdb() -> Path:
    """DB-IP Lite country (CC BY 4.0); `make test` fetches it and sets TRAILGEO_DBIP_MMDB."""
    value = os.environ.get("TRAILGEO_DBIP_MMDB")
    if not value:
        if IN_CI:
            pytest.fail("TRAILGEO_DBIP_MMDB is not set; `make test` sets it")
        pytest.skip("TRAILGEO_DBIP_MMDB not set (run through `make test`)")
    return require(Path(value), "DB-IP Lite country database")


@pytest.fixture(scope="session")
def asn_mmdb() -> Path:
    """The GeoIP layer's ASN database (@ip-location-db/asn, CC BY 4.0, converted to a MaxMind DB);
    `make test` builds it and sets TRAILGEO_ASN_CACHE_MMDB."""
    value = os.environ.get("TRAILGEO_ASN_CACHE_MMDB")
    if not value:
        if IN_CI:
            pytest.fail("TRAILGEO_ASN_CACHE_MMDB is not set; `make test` sets it")
        pytest.skip("TRAILGEO_ASN_CACHE_MMDB not set (run through `make test`)")
    return require(Path(value), "ASN database (make geoip)")


@pytest.fixture(scope="session")
def asn_test_mmdb() -> Path:
    return require(MAXMIND_TEST_DATA / "GeoLite2-ASN-Test.mmdb", "MaxMind GeoLite2 ASN test database")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 session whose clients talk to moto in-process (never to AWS, never to a server)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


@dataclass(frozen=True)
class Backend:
    """Where a contract case runs: the in-memory fakes (``session`` None) or the adapters against a
    deployment provisioned in moto (``session`` its boto3 session)."""

    kind: str  # "memory" or "aws"
    session: Any = None

    def client(self, service: str) -> Any:
        assert self.session is not None, "the in-memory backend has no AWS client"
        return self.session.client(service)


@pytest.fixture(params=["memory", "aws"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """One contract suite, run twice: on the fakes, then on the adapters (moto, deployment made)."""
    if request.param == "memory":
        return Backend("memory")
    session = request.getfixturevalue("aws")
    create_deployment(session)
    return Backend("aws", session)


def reset_moto(url: str) -> None:
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()


@pytest.fixture
def moto_server_url() -> Iterator[str]:
    """moto's server on 127.0.0.1, on a free port. Every moto server and ``mock_aws`` of this process
    shares moto's in-process backends: reset before and after, so that no test sees another's
    tables and buckets."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    reset_moto(url)
    yield url
    reset_moto(url)
    server.stop()


# ---- Test tiers (`make unit`, `make contract`, ...; `make test` runs them all) ------------------
# A test's tier is the one it names (@pytest.mark.handler), else its file's when the file is
# listed here; otherwise "handler" when it uses
# AWS through moto (the fixtures below, or mock_aws in the test itself: INLINE_MOTO), else "unit".
# Unit tests run with the network refused (NoNetworkError), so a misfiled test fails loudly.
FILE_TIERS: dict[str, str] = {
    "test_quarantine_contract.py": "contract",
    "test_operations_contract.py": "contract",
    "test_contract_ledger.py": "contract",
    "test_contract_outbox.py": "contract",
    "test_contract_counters.py": "contract",
    "test_contract_fanout.py": "contract",
    "test_contract_trail.py": "contract",
    "test_contract_intake.py": "contract",
    "test_contract_geo.py": "contract",
    "test_cli_habits.py": "app",  # the operator CLI in subprocesses
    "test_template.py": "infra",
    "test_checkov.py": "infra",
    "test_deploy_limits.py": "infra",
    "test_docs_match_template.py": "infra",
    "test_locks.py": "infra",
    "test_architecture_modules.py": "infra",
    "test_house_rules.py": "infra",
    "test_import_graph.py": "unit",  # reads the source only: no network, no AWS
    "test_hot_path_equivalence.py": "unit",  # the hot path against its plain formulations
    "test_layering.py": "infra",  # reads the source and git's file list
    "test_layer_contents.py": "infra",  # builds the layer's wheel
    "test_soak.py": "tooling",
    "test_demo.py": "tooling",
    "test_simulate.py": "tooling",
    "test_simulate_vpce.py": "tooling",
    "test_evaluation.py": "tooling",
    "test_enterprise.py": "tooling",
    "test_ablation.py": "tooling",  # the evaluation's ablation, on replayed alerts
    "test_country_distances.py": "tooling",  # trailgeo-tools country-distances
    "test_bench.py": "tooling",
    "test_corpus.py": "tooling",
}
TIERS = ("unit", "contract", "app", "handler", "infra", "tooling")
# Fixtures that reach AWS through moto, or a stand-in server on 127.0.0.1 (Slack's webhook).
AWS_FIXTURES = frozenset({"aws", "moto_server_url", "deployment", "slack"})
INLINE_MOTO = frozenset({"test_fanout.py", "test_adversary_hardening.py"})


class NoNetworkError(RuntimeError):
    """A unit test opened a network connection: it belongs to another tier."""


def tier_of(item: pytest.Item) -> str:
    for tier in TIERS:  # a test may name its tier itself
        if item.get_closest_marker(tier) is not None:
            return tier
    name = item.path.name
    if name in FILE_TIERS:
        return FILE_TIERS[name]
    if name in INLINE_MOTO or AWS_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "handler"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        named = [t for t in TIERS if item.get_closest_marker(t) is not None]
        if len(named) > 1:
            raise pytest.UsageError(f"{item.nodeid} names several tiers: {named}")
        if not named:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _unit_tests_have_no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*_: object, **__: object) -> None:
        raise NoNetworkError(f"{request.node.nodeid} is a unit test and opened a connection")

    monkeypatch.setattr("socket.socket.connect", refuse)
    monkeypatch.setattr("socket.create_connection", refuse)
