"""layers/geoip/asn_mmdb.py: the ASN CSV release converted to a MaxMind DB that maxminddb (and so
the adapter) reads, range for range, reproducibly."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from types import ModuleType

import maxminddb
import pytest

from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.core.networks import AsnInfo

ROOT = Path(__file__).resolve().parents[1]


def converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asn_mmdb", ROOT / "layers" / "geoip" / "asn_mmdb.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert(out: Path, version: str, *csvs: Path) -> int:
    return int(converter().main(["asn_mmdb.py", str(out), version, *map(str, csvs)]))


IPV4 = '''1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."
1.0.4.0,1.0.7.255,38803,Gtelecom Pty Ltd
3.5.0.0,3.5.255.255,16509,"Amazon.com, Inc."
3.5.128.0,3.5.128.255,7922,overlapping the range before: dropped
50.0.0.1,50.0.0.6,14061,"DigitalOcean, LLC"
255.255.255.0,255.255.255.255,64512,"Ünïcödé Networks ""quoted"""
not,an,address,row
9.9.9.9,9.9.9.8,1,reversed: dropped
'''
IPV6 = """2001:4860::,2001:4860:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC
2a05:d018::,2a05:d018:ffff:ffff:ffff:ffff:ffff:ffff,16509,"Amazon.com, Inc."
"""


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "v4.csv").write_text(IPV4, encoding="utf-8")
    (tmp_path / "v6.csv").write_text(IPV6, encoding="utf-8")
    out = tmp_path / "asn.mmdb"
    code = convert(out, "2.3.2026061719", tmp_path / "v4.csv", tmp_path / "v6.csv")
    assert code == 0
    return out


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("1.0.0.0", (13335, "Cloudflare, Inc.")),
        ("1.0.0.255", (13335, "Cloudflare, Inc.")),
        ("1.0.1.0", None),  # the gap between two ranges
        ("1.0.5.77", (38803, "Gtelecom Pty Ltd")),
        ("3.5.128.1", (16509, "Amazon.com, Inc.")),  # the overlapping row lost to the first
        ("50.0.0.0", None),  # ranges that are no CIDR block: exact at both ends
        ("50.0.0.1", (14061, "DigitalOcean, LLC")),
        ("50.0.0.6", (14061, "DigitalOcean, LLC")),
        ("50.0.0.7", None),
        ("255.255.255.255", (64512, 'Ünïcödé Networks "quoted"')),
        ("9.9.9.9", None),
        ("2001:4860:4860::8888", (15169, "Google LLC")),
        ("2a05:d018::1", (16509, "Amazon.com, Inc.")),
        ("2a05:d019::1", None),
        ("::1", None),
    ],
)
def test_given_csv_ranges_when_converted_then_maxminddb_reads_each_address_s_as(
    built: Path, ip: str, expected: tuple[int, str] | None
) -> None:
    # Given the converted database, When an address is looked up through maxminddb
    with maxminddb.open_database(str(built)) as reader:
        record = reader.get(ip)
    # Then the range's AS number and organization, in GeoLite2-ASN's layout, or nothing
    found = (
        None
        if record is None
        else (record["autonomous_system_number"], record["autonomous_system_organization"])
    )
    assert found == expected


def test_given_the_converted_database_then_the_adapter_opens_it_as_an_asn_database(
    built: Path, country_test_mmdb: Path
) -> None:
    # Given the converted database, When the adapter opens it beside a country database
    geo = MaxMindGeoResolver(country_test_mmdb, built)
    # Then it is an ASN database and answers
    assert geo.has_asn, geo.asn_error
    assert geo.asn("3.5.1.2") == AsnInfo(16509, "Amazon.com, Inc.")
    with maxminddb.open_database(str(built)) as reader:
        meta = reader.metadata()
    assert meta.database_type == "ip-location-db-ASN"
    assert meta.ip_version == 6
    assert meta.build_epoch == 1781722800  # 2026-06-17T19:00:00Z, from the release's version


def test_given_the_same_release_when_converted_twice_then_the_same_bytes(built: Path, tmp_path: Path) -> None:
    # Given a database converted from a release, When converted again, Then byte for byte the same
    again = tmp_path / "again.mmdb"
    code = convert(again, "2.3.2026061719", tmp_path / "v4.csv", tmp_path / "v6.csv")
    assert code == 0
    assert again.read_bytes() == built.read_bytes()


def test_given_many_adjacent_ranges_when_converted_then_every_boundary_holds(tmp_path: Path) -> None:
    # Given 300 ranges of odd sizes, back to back, with a gap after every tenth
    rows, start, expected = [], int(ipaddress.ip_address("20.0.0.0")), []
    for i in range(300):
        size = 1 + (i * 37) % 700
        first, last = ipaddress.ip_address(start), ipaddress.ip_address(start + size - 1)
        rows.append(f"{first},{last},{1000 + i},Org {i}")
        expected.append((start, start + size - 1, 1000 + i))
        start += size + (5 if i % 10 == 9 else 0)
    (tmp_path / "v4.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "asn.mmdb"
    assert convert(out, "1.0.0", tmp_path / "v4.csv") == 0

    # When each range's first and last address, and the addresses around it, are looked up
    with maxminddb.open_database(str(out)) as reader:
        # Then each range answers its own AS at both ends, and a gap answers nothing
        for first, last, asn in expected:
            assert reader.get(str(ipaddress.ip_address(first)))["autonomous_system_number"] == asn
            assert reader.get(str(ipaddress.ip_address(last)))["autonomous_system_number"] == asn
        assert reader.get(str(ipaddress.ip_address(expected[9][1] + 1))) is None
        assert reader.get(str(ipaddress.ip_address(expected[0][0] - 1))) is None
