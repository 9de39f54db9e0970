"""The GeoResolver port's ASN lookups: one contract, run against the in-memory resolver and against
MaxMind's reader of an ASN database (MaxMind's GeoLite2-ASN test database, and the ASN database
the GeoIP layer ships)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.memory import MemoryGeoResolver
from trailgeo.core.networks import AsnInfo
from trailgeo.ports import GeoResolver

# In MaxMind's GeoLite2-ASN-Test.mmdb (and so given to the in-memory resolver alike).
KNOWN = {
    "1.128.0.1": AsnInfo(1221, "Telstra Pty Ltd"),
    "1.0.0.1": AsnInfo(15169, "Google Inc."),
    "2600:6000::1": AsnInfo(237, "Merit Network Inc."),
}
ABSENT = "203.0.113.9"  # TEST-NET-3: in no database
COUNTRIES = {"81.2.69.144": "GB"}

Resolver = Callable[..., GeoResolver]


@pytest.fixture(params=["memory", "maxmind"])
def resolver(request: pytest.FixtureRequest, country_test_mmdb: Path, asn_test_mmdb: Path) -> Resolver:
    """A resolver with (True) or without (False) an ASN database, as each implementation makes it."""
    if request.param == "memory":
        return lambda with_asn: MemoryGeoResolver(
            countries=dict(COUNTRIES), networks=dict(KNOWN) if with_asn else None
        )
    return lambda with_asn: MaxMindGeoResolver(country_test_mmdb, asn_test_mmdb if with_asn else None)


@pytest.mark.parametrize(("ip", "expected"), list(KNOWN.items()))
def test_given_an_asn_database_when_an_address_in_it_is_looked_up_then_its_number_and_organization(
    resolver: Resolver, ip: str, expected: AsnInfo
) -> None:
    # Given a resolver with an ASN database
    geo = resolver(with_asn=True)
    # When an address it holds is looked up (IPv4 and IPv6)
    found = geo.asn(ip)
    # Then its AS number and organization
    assert geo.has_asn
    assert found == expected


@pytest.mark.parametrize(
    "value", [ABSENT, "not an address", "", "ec2.amazonaws.com", "1.2.3.4.5", "x" * 10_000]
)
def test_given_an_asn_database_when_something_it_lacks_is_looked_up_then_none_and_no_error(
    resolver: Resolver, value: str
) -> None:
    # Given a resolver with an ASN database, When an address it lacks, or no address, is looked up
    # Then None, never an exception
    assert resolver(with_asn=True).asn(value) is None


def test_given_no_asn_database_when_looked_up_then_none_and_countries_still_resolve(
    resolver: Resolver,
) -> None:
    # Given a resolver without an ASN database
    geo = resolver(with_asn=False)
    # When an address is looked up, Then no AS, and the country lookups work as ever
    assert not geo.has_asn
    assert geo.asn("1.128.0.1") is None
    assert geo.country("81.2.69.144") == "GB"


def test_given_the_shipped_asn_database_when_cloud_addresses_are_looked_up_then_their_providers(
    country_test_mmdb: Path, asn_mmdb: Path
) -> None:
    # Given the GeoIP layer's ASN database behind the MaxMind adapter
    geo = MaxMindGeoResolver(country_test_mmdb, asn_mmdb)
    # When addresses of AWS (IPv4 and IPv6), Google and DigitalOcean are looked up
    # Then their ASes, with the database's organization names
    assert geo.asn("52.95.110.1") == AsnInfo(16509, "Amazon.com, Inc.")
    assert geo.asn("2600:1f18::1") == AsnInfo(14618, "Amazon.com, Inc.")
    assert geo.asn("8.8.8.8") == AsnInfo(15169, "Google LLC")
    assert geo.asn("134.209.1.1") == AsnInfo(14061, "DigitalOcean, LLC")
    assert geo.asn("10.0.0.1") is None
