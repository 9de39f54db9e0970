"""Shared fixtures: paths to the real corpora beside the project, and the GeoIP databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws
from moto.server import ThreadedMotoServer

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
