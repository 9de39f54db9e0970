"""GeoIP country lookups against MaxMind's official test databases and DB-IP Lite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb
import pytest

from tests.conftest import MAXMIND_TEST_DATA, require
from trailgeo.adapters.geoip import GeoDatabaseError, MaxMindGeoResolver, asn_from_record, country_from_record

pytestmark = pytest.mark.corpus


def _test_db(name: str) -> Path:
    return require(MAXMIND_TEST_DATA / name, f"MaxMind test database {name}")


def _raw(path: Path, ip: str) -> Any:
    """The record as maxminddb returns it, to show what the resolver had to choose from."""
    with maxminddb.open_database(str(path)) as reader:
        return reader.get(ip)


# --- record layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"country_code": "US"}, "US"),  # DB-IP Lite layout
        ({"country_code": "de"}, "DE"),
        ({"country": {"iso_code": "GB"}}, "GB"),  # GeoIP2 / GeoLite2 layout
        ({"country": {"iso_code": "GB"}, "registered_country": {"iso_code": "US"}}, "GB"),
        ({"country": {"iso_code": "PH"}, "represented_country": {"iso_code": "US"}}, "PH"),
        ({"registered_country": {"iso_code": "US"}}, None),
        ({"continent": {"code": "EU"}}, None),
        ({"country": {"names": {"en": "Sweden"}}}, None),
        ({"country_code": "USA"}, None),
        ({"country_code": "1A"}, None),
        ({"country_code": 840}, None),
        ({"autonomous_system_number": 209}, None),
        ({}, None),
        (None, None),
        ("US", None),
        (["US"], None),
    ],
)
def test_given_database_record_when_country_read_then_only_country_iso_code_or_dbip_code(
    record: Any, expected: str | None
) -> None:
    """Given a record in either layout (or junk), when the country is read from it, then it is
    ``country.iso_code`` or DB-IP's ``country_code`` upper-cased, never the registered or
    represented country, else None."""
    assert country_from_record(record) == expected


# --- MaxMind test databases -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "country", "registered"),
    [
        ("81.2.69.144", "GB", "US"),
        ("89.160.20.128", "SE", "DE"),
        ("216.160.83.56", "US", "GB"),
        ("67.43.156.1", "BT", "RO"),
        ("2.125.160.216", "GB", "FR"),
    ],
)
@pytest.mark.parametrize("db_fixture", ["country_test_mmdb", "city_test_mmdb"])
def test_given_block_registered_elsewhere_when_looked_up_then_country_not_registered_country(
    db_fixture: str, ip: str, country: str, registered: str, request: pytest.FixtureRequest
) -> None:
    """Given a GeoIP2-Country-Test / GeoLite2-City-Test block whose registered_country differs
    from its country, when looked up, then the resolver answers the country."""
    path: Path = request.getfixturevalue(db_fixture)
    raw = _raw(path, ip)
    assert raw["country"]["iso_code"] == country
    assert raw["registered_country"]["iso_code"] == registered
    assert MaxMindGeoResolver(path).country(ip) == country


def test_given_represented_country_when_looked_up_then_country(city_test_mmdb: Path) -> None:
    """Given 202.196.224.0/20 (country PH, represented_country US), when looked up, then PH."""
    assert _raw(city_test_mmdb, "202.196.224.1")["represented_country"]["iso_code"] == "US"
    assert MaxMindGeoResolver(city_test_mmdb).country("202.196.224.1") == "PH"


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("2a02:cf40::1", "NO"),  # first and last addresses of 2a02:cf40::/29
        ("2a02:cf47:ffff:ffff:ffff:ffff:ffff:ffff", "NO"),
        ("2a02:cf48::1", None),  # just outside the /29
        ("2001:218::1", "JP"),
        ("2001:218:ffff::1", "JP"),
        ("2001:219::1", None),  # just outside 2001:218::/32
    ],
)
@pytest.mark.parametrize("db_fixture", ["country_test_mmdb", "city_test_mmdb"])
def test_given_ipv6_address_when_looked_up_then_country_of_its_block(
    db_fixture: str, ip: str, expected: str | None, request: pytest.FixtureRequest
) -> None:
    """Given an IPv6 address in (or just outside) a test block, when looked up, then its country."""
    assert MaxMindGeoResolver(request.getfixturevalue(db_fixture)).country(ip) == expected


def test_given_175_16_199_block_when_looked_up_then_city_db_has_it_and_geolite_country_db_not(
    city_test_mmdb: Path, country_test_mmdb: Path
) -> None:
    """Given 175.16.199.0/24, when looked up, then the City test DB says CN and the
    GeoLite2-Country test DB has no record (None). GeoIP2-Country-Test (the
    ``country_test_mmdb`` fixture) does contain the block: CN."""
    assert MaxMindGeoResolver(city_test_mmdb).country("175.16.199.1") == "CN"
    assert MaxMindGeoResolver(_test_db("GeoLite2-Country-Test.mmdb")).country("175.16.199.1") is None
    assert MaxMindGeoResolver(country_test_mmdb).country("175.16.199.1") == "CN"


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2001:db8::1", "10.0.0.1", "::ffff:8.8.8.8"])
@pytest.mark.parametrize("db_fixture", ["country_test_mmdb", "city_test_mmdb"])
def test_given_address_absent_from_database_when_looked_up_then_none(
    db_fixture: str, ip: str, request: pytest.FixtureRequest
) -> None:
    """Given an address the test DB has no record for, when looked up, then None."""
    assert MaxMindGeoResolver(request.getfixturevalue(db_fixture)).country(ip) is None


@pytest.mark.parametrize("value", ["not an ip", "253.252.51.07", ""])
def test_given_non_address_when_looked_up_then_none_not_exception(
    country_test_mmdb: Path, value: str
) -> None:
    """Given a string that is not an address, when looked up, then None (no ValueError escapes)."""
    assert MaxMindGeoResolver(country_test_mmdb).country(value) is None


def test_given_a_database_of_another_kind_when_opened_then_it_is_refused_with_its_type() -> None:
    """Given an IPv4-only format test database (database_type "Test", no country data), when the
    resolver is created, then GeoDatabaseError names the type: a wrong file fails at cold start,
    not as millions of silent geo_unknown skips."""
    path = _test_db("MaxMind-DB-test-ipv4-24.mmdb")
    with pytest.raises(ValueError, match="IPv6"):
        _raw(path, "2001:218::1")
    with pytest.raises(GeoDatabaseError, match="Test database"):
        MaxMindGeoResolver(path)


# --- DB-IP Lite (real data) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("8.8.8.8", "US"),
        ("80.128.0.1", "DE"),  # Deutsche Telekom
        ("2003::1", "DE"),  # Deutsche Telekom IPv6
        ("92.55.146.245", "RO"),  # Panther scenario attacker
        ("71.253.251.71", "US"),  # Panther scenario victim
        ("96.253.26.224", "US"),  # SANS lab admin
        ("3.238.12.183", "US"),  # SANS lab attacker
        ("10.0.0.1", None),
    ],
)
def test_given_dbip_lite_database_when_looked_up_then_country_code(
    dbip_mmdb: Path, ip: str, expected: str | None
) -> None:
    """Given DB-IP Lite's ``{"country_code": ..}`` layout, when real addresses are looked up,
    then their country."""
    resolver = MaxMindGeoResolver(dbip_mmdb)
    if expected is not None:
        assert _raw(dbip_mmdb, ip) == {"country_code": expected}
    assert resolver.country(ip) == expected


# --- broken and wrong databases ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        "maps-with-pointers.raw",  # a data section without a search tree or metadata
        "README.md",  # not a database at all
    ],
)
def test_given_unopenable_database_when_resolver_created_then_geo_database_error(name: str) -> None:
    """Given a file maxminddb cannot open, when the resolver is created, then GeoDatabaseError."""
    with pytest.raises(GeoDatabaseError, match="cannot open GeoIP database"):
        MaxMindGeoResolver(_test_db(name))


@pytest.mark.parametrize(
    ("name", "ips"),
    [
        # Corrupt data section: the reader raises InvalidDatabaseError for these addresses.
        ("GeoIP2-City-Test-Broken-Double-Format.mmdb", ["81.2.69.160", "216.160.83.56", "2001:218::1"]),
    ],
)
def test_given_corrupt_data_section_when_looked_up_then_none_per_lookup(name: str, ips: list[str]) -> None:
    """Given a database that opens but whose records are corrupt, when those addresses are looked
    up, then each lookup answers None instead of raising."""
    path = _test_db(name)
    resolver = MaxMindGeoResolver(path)
    for ip in ips:
        with pytest.raises(maxminddb.InvalidDatabaseError):
            _raw(path, ip)
        assert resolver.country(ip) is None


@pytest.mark.parametrize(
    "name", ["MaxMind-DB-test-broken-search-tree-24.mmdb", "MaxMind-DB-test-broken-pointers-24.mmdb"]
)
def test_given_broken_format_test_databases_when_opened_then_refused_before_any_lookup(name: str) -> None:
    """Given MaxMind's broken format-test databases (type "Test", records without any country),
    when the resolver is created, then GeoDatabaseError: they never reach a lookup."""
    path = _test_db(name)
    assert maxminddb.open_database(str(path)).metadata().database_type == "Test"
    with pytest.raises(GeoDatabaseError, match="without country data"):
        MaxMindGeoResolver(path)


def test_given_missing_file_when_resolver_created_then_geo_database_error(tmp_path: Path) -> None:
    """Given a path with no file (or a directory), when the resolver is created, then
    GeoDatabaseError saying it was not found."""
    with pytest.raises(GeoDatabaseError, match="not found"):
        MaxMindGeoResolver(tmp_path / "absent.mmdb")
    with pytest.raises(GeoDatabaseError, match="not found"):
        MaxMindGeoResolver(tmp_path)


def test_given_database_without_country_data_when_resolver_created_then_geo_database_error() -> None:
    """Given GeoLite2-ASN-Test.mmdb (no country in any record), when the resolver is created,
    then GeoDatabaseError."""
    with pytest.raises(GeoDatabaseError):
        MaxMindGeoResolver(_test_db("GeoLite2-ASN-Test.mmdb"))


# --- caching ----------------------------------------------------------------------------------


def test_given_repeated_address_when_looked_up_then_answered_from_cache(country_test_mmdb: Path) -> None:
    """Given an address already looked up, when looked up again, then the cache answers: the
    cache does not grow, and the answer survives closing the reader (which a reader call would
    not: a closed reader raises ValueError, which the resolver turns into None)."""
    resolver = MaxMindGeoResolver(country_test_mmdb)
    assert resolver.country("81.2.69.144") == "GB"
    assert resolver.country("8.8.8.8") is None  # absent answers are cached too
    assert len(resolver._cache) == 2
    assert resolver.country("81.2.69.144") == "GB"
    assert resolver.country("8.8.8.8") is None
    assert len(resolver._cache) == 2

    resolver.close()
    assert resolver.country("81.2.69.144") == "GB"
    assert resolver.country("89.160.20.128") is None  # new address: reader closed
    assert len(resolver._cache) == 3


# --- the ASN database (optional: the hosting-provider evidence) -------------------------------


def test_given_an_asn_path_with_no_file_when_the_resolver_is_created_then_countries_work_and_it_says_why(
    country_test_mmdb: Path, tmp_path: Path
) -> None:
    # Given a country database and an ASN path with no file behind it (a layer built without one)
    # When the resolver is created
    resolver = MaxMindGeoResolver(country_test_mmdb, tmp_path / "asn.mmdb")
    # Then the country lookups work, the ASN lookups answer None, and the error says why
    assert resolver.country("81.2.69.144") == "GB"
    assert not resolver.has_asn
    assert resolver.asn("81.2.69.144") is None
    assert resolver.asn_error is not None
    assert "ASN database not found" in resolver.asn_error


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("README.md", "cannot open ASN database"),  # not a database at all
        ("maps-with-pointers.raw", "cannot open ASN database"),  # a data section alone
        ("GeoIP2-City-Test-Invalid-Node-Count.mmdb", "cannot open ASN database"),
        ("GeoIP2-Country-Test.mmdb", "without AS numbers"),  # a country database given as ASN
        ("GeoIP2-City-Test-Broken-Double-Format.mmdb", "without AS numbers"),
    ],
)
def test_given_a_corrupt_or_wrong_asn_database_when_the_resolver_is_created_then_countries_still_work(
    country_test_mmdb: Path, name: str, reason: str
) -> None:
    # Given a file that is no usable ASN database
    # When the resolver is created with it
    resolver = MaxMindGeoResolver(country_test_mmdb, _test_db(name))
    # Then it does not fail: the country detection runs, the ASN lookups answer None, and why is kept
    assert resolver.country("81.2.69.144") == "GB"
    assert not resolver.has_asn
    assert resolver.asn("1.128.0.1") is None
    assert resolver.asn_error is not None
    assert reason in resolver.asn_error


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"autonomous_system_number": 16509, "autonomous_system_organization": "Amazon.com, Inc."},
            (16509, "Amazon.com, Inc."),
        ),
        ({"autonomous_system_number": 7018}, (7018, "")),  # GeoLite2-ASN ranges without a name
        (
            {"autonomous_system_number": 1221, "autonomous_system_organization": " x" * 500},
            (1221, ("x " * 100).strip()),
        ),
        ({"autonomous_system_number": "16509"}, None),
        ({"autonomous_system_number": True}, None),
        ({"autonomous_system_number": 0}, None),
        ({"autonomous_system_number": 2**32}, None),
        ({"country_code": "US"}, None),
        (None, None),
        ([16509], None),
    ],
)
def test_given_an_asn_record_when_read_then_only_a_valid_as_number_and_a_bounded_name(
    record: Any, expected: tuple[int, str] | None
) -> None:
    # Given a record of an ASN database (or junk), When read, Then an AS number in range and its name
    found = asn_from_record(record)
    assert (None if found is None else (found.number, found.organization)) == expected
