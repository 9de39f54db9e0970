"""The hosting-provider evidence factor: an alert's source addresses looked up in an ASN database,
a hosting or cloud network raising the severity one level, shown by every channel; and what an
attacker can do about it (a residential proxy, crafted addresses, no ASN database at all)."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.builders import ACCOUNT, ALICE, T0, US_IP, files_by_delivery, record, write_tree
from tests.conftest import MAXMIND_TEST_DATA
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryGeoResolver
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import ReplaySummary, replay
from trailgeo.app.runtime import log_asn_database
from trailgeo.app.settings import Settings
from trailgeo.core.alert_builder import rarity_severity
from trailgeo.core.alerts import Alert, Network
from trailgeo.core.evidence import (
    HOSTING_PROVIDER,
    REGISTRY,
    EvidenceFactor,
    hosting_evidence,
    networks_of,
    raised,
    with_evidence,
)
from trailgeo.core.networks import (
    AsnInfo,
    PublicAddress,
    hosting_networks,
    hosting_provider,
    lookup_address,
    public_address,
)
from trailgeo.core.render.asff import asff_finding, default_product_arn, validate_finding
from trailgeo.core.render.chatbot import chatbot_message
from trailgeo.core.render.email import email_body
from trailgeo.core.render.slack import slack_message

ATTACKER_IP = "134.209.1.1"  # a DigitalOcean address (AS14061 in the shipped ASN database)
HOME_IP = "73.1.2.3"  # a consumer line (a residential proxy's exit looks the same)
DIGITALOCEAN = AsnInfo(14061, "DigitalOcean, LLC")
AMAZON = AsnInfo(16509, "Amazon.com, Inc.")
COMCAST = AsnInfo(7922, "Comcast Cable Communications, LLC")
ATTACK_AT = T0 + timedelta(days=10, hours=3)


def baseline() -> list[dict[str, Any]]:
    """Ten days of alice calling DescribeInstances from the US, every 6 hours (40 hourly buckets)."""
    return [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]


def attack(ip: str) -> list[dict[str, Any]]:
    """alice's key used from ``ip`` (a country the organization never saw), no sensitive method."""
    return [record(ATTACK_AT + timedelta(minutes=m), ip=ip) for m in range(3)]


def geo(networks: dict[str, AsnInfo] | None, attacker_ip: str = ATTACKER_IP) -> MemoryGeoResolver:
    countries = {US_IP: "US", attacker_ip: "BT", ATTACKER_IP: "BT", HOME_IP: "BT"}
    return MemoryGeoResolver(countries=countries, networks=networks)


def run(logs: Path, resolver: MemoryGeoResolver) -> tuple[list[dict[str, Any]], ReplaySummary]:
    out = io.StringIO()
    summary, _ = replay(logs, resolver, JsonLinesAlertSink(out), RunOptions())
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


# ---------------------------------------------------------------------------- the classifier


@pytest.mark.parametrize(
    ("asn", "provider"),
    [
        (AMAZON, "Amazon Web Services"),
        (AsnInfo(14618, "Amazon.com, Inc."), "Amazon Web Services"),
        (AsnInfo(396982, "Google LLC"), "Google Cloud"),
        (AsnInfo(8075, "Microsoft Corporation"), "Microsoft Azure"),
        (DIGITALOCEAN, "DigitalOcean"),
        (AsnInfo(16276, "OVH SAS"), "OVHcloud"),
        (AsnInfo(24940, "Hetzner Online GmbH"), "Hetzner"),
        (AsnInfo(63949, "Akamai Technologies, Inc."), "Linode (Akamai)"),
        (AsnInfo(20473, "The Constant Company, LLC"), "Vultr (The Constant Company, formerly Choopa)"),
        (AsnInfo(31898, "Oracle Corporation"), "Oracle Cloud"),
        (AsnInfo(45102, "Alibaba (US) Technology Co., Ltd."), "Alibaba Cloud"),
        (AsnInfo(132203, "Shenzhen Tencent Computer Systems Company Limited"), "Tencent Cloud"),
        (AsnInfo(51167, "Contabo GmbH"), "Contabo"),
        (AsnInfo(12876, "Scaleway SAS"), "Scaleway"),
        (AsnInfo(9009, "M247 Europe SRL"), "M247"),
        # by organization: another ASN of a listed provider, a plainly named hosting company
        (AsnInfo(4200000001, "Hetzner Online GmbH"), "Hetzner"),
        (AsnInfo(4200000002, "Netwise Hosting Ltd"), "a hosting provider"),
        (AsnInfo(4200000003, "Zeta Datacenters B.V."), "a hosting provider"),
        # consumer and business access networks: not hosting
        (COMCAST, None),
        (AsnInfo(701, "Verizon Business"), None),
        (AsnInfo(16591, "Google Fiber Inc."), None),  # Google, but a consumer ISP
        (AsnInfo(34947, "Alibaba Travel Company (LTD)"), None),
        (AsnInfo(39737, "Prime Telecom srl"), None),
        (None, None),
    ],
)
def test_given_an_autonomous_system_when_classified_then_hosting_and_cloud_networks_are_named(
    asn: AsnInfo | None, provider: str | None
) -> None:
    # Given an AS (or none), When classified, Then the provider it belongs to, None for an access network
    assert hosting_provider(asn) == provider


def test_given_the_shipped_asn_database_then_every_listed_hosting_asn_is_announced_there(
    asn_mmdb: Path,
) -> None:
    """The list in data/hosting_networks.json was checked against the database the layer ships;
    this keeps it so when the pinned release moves (`make lock`)."""
    import maxminddb

    # Given the hosting networks listed and the ASN database of the pinned release
    numbers = hosting_networks().by_number
    announced: dict[int, str] = {}
    with maxminddb.open_database(str(asn_mmdb)) as reader:
        for _, found in reader:
            if isinstance(found, dict):
                announced.setdefault(
                    int(found["autonomous_system_number"]), str(found.get("autonomous_system_organization"))
                )

    # Then each listed number is announced there, and none of the database's names of it is a
    # consumer network's
    missing = sorted(n for n in numbers if n not in announced)
    assert not missing, f"hosting ASNs no longer announced in the shipped database: {missing}"
    assert all(hosting_provider(AsnInfo(n, announced[n])) == numbers[n] for n in numbers)


# ---------------------------------------------------------------------------- crafted addresses


@pytest.mark.parametrize(
    ("source", "looked_up"),
    [
        ("134.209.1.1", "134.209.1.1"),
        ("::ffff:134.209.1.1", "134.209.1.1"),  # IPv4-mapped IPv6: the databases hold IPv4 at ::/96
        ("::FFFF:86D1:0101", "134.209.1.1"),
        ("2600:1f18::1", "2600:1f18::1"),
        ("2600:1F18:0:0::1", "2600:1f18::1"),
        ("fe80::1%eth0", None),  # link-local, zone index
        ("10.1.2.3", None),
        ("192.168.0.1", None),
        ("::ffff:10.0.0.1", None),
        ("127.0.0.1", None),
        ("::1", None),
        ("0.0.0.0", None),  # noqa: S104 - an address CloudTrail records carry, not a bind
        ("100.64.0.1", None),  # carrier-grade NAT
        ("169.254.169.254", None),
        ("224.0.0.1", None),
        ("ec2.amazonaws.com", None),  # AWS service host names
        ("AWS Internal", None),
        ("lambda.amazonaws.com", None),
        ("253.252.51.07", None),  # invalid octets (Stratus Red Team detonations)
        ("035.249.253.232", None),
        ("", None),
        ("x" * 100_000, None),
        ("1.2.3.4\n5.6.7.8", None),
    ],
)
def test_given_a_crafted_source_address_when_prepared_for_lookup_then_only_public_ips_in_canonical_form(
    source: str, looked_up: str | None
) -> None:
    # Given a sourceIPAddress as CloudTrail (or a forger) writes it, When prepared for the ASN lookup
    # Then a public address in its canonical form, IPv4 for an IPv4-mapped one, else nothing to look up
    assert lookup_address(source) == looked_up


def test_given_a_db_answering_for_anything_when_crafted_sources_are_checked_then_none_is_hosting() -> None:
    # Given an ASN lookup that names Amazon for any string it is asked about (a corrupt or forged
    # database), and sources that are no public address
    asked: list[str] = []

    def anything_is_amazon(ip: str) -> AsnInfo:
        asked.append(ip)
        return AMAZON

    sources = ["ec2.amazonaws.com", "AWS Internal", "10.0.0.1", "::ffff:192.168.1.1", "fe80::1", "not an ip"]

    # When their networks are looked up
    networks = networks_of(sources, anything_is_amazon)

    # Then none is looked up, none is a network and no evidence is found
    assert asked == []
    assert networks == []
    assert hosting_evidence(networks) == []


@pytest.mark.parametrize(
    ("source", "asn", "found"),
    [
        ("::ffff:3.120.1.9", AMAZON, PublicAddress("3.120.1.9", AMAZON, hosting=True)),
        ("73.1.2.3", COMCAST, PublicAddress("73.1.2.3", COMCAST, hosting=False)),
        ("73.1.2.3", None, PublicAddress("73.1.2.3", None, hosting=False)),  # the database lacks it
        ("10.0.0.1", AMAZON, None),  # no public address, whatever a database says
        ("ec2.amazonaws.com", AMAZON, None),
    ],
)
def test_given_a_source_address_then_one_decision_says_public_and_hosting_or_access(
    source: str, asn: AsnInfo | None, found: PublicAddress | None
) -> None:
    # Given a source and what the ASN database answers for it, When classified (the one place the
    # detector, the sign-ins' networks and their places decide it)
    classified = public_address(source, lambda _: asn)
    # Then a public address with its AS, hosting or access, or nothing
    assert classified == found
    assert classified is None or classified.access is not classified.hosting
    # and without an ASN database, no address is a hosting provider's
    without = public_address(source, None)
    assert without is None or (without.asn, without.hosting) == (None, False)


# ---------------------------------------------------------------------------- the factor and severity


def test_given_the_registry_then_every_factor_only_raises_and_a_lowering_one_is_refused() -> None:
    # Given the registry of evidence factors
    # Then each raises by zero levels or more, and the hosting factor by one
    assert REGISTRY["hosting_provider"] is HOSTING_PROVIDER
    assert all(factor.raises >= 0 for factor in REGISTRY.values())
    assert HOSTING_PROVIDER.raises == 1
    # When a factor that would lower a severity is declared, Then it is refused
    with pytest.raises(ValueError, match="only raise"):
        EvidenceFactor(name="consumer_isp", title="consumer ISP", raises=-1, description="")


@pytest.mark.parametrize(
    ("severity", "levels", "expected"),
    [
        ("low", 1, "medium"),
        ("medium", 1, "high"),
        ("high", 1, "critical"),
        ("critical", 1, "critical"),
        ("low", 0, "low"),
    ],
)
def test_given_a_severity_when_raised_then_it_goes_up_to_critical_and_no_further(
    severity: Any, levels: int, expected: str
) -> None:
    # Given a severity, When raised by some levels, Then at most critical
    assert raised(severity, levels) == expected


def test_given_a_brand_new_country_on_a_hosting_provider_when_it_alerts_then_one_severity_level_higher(
    tmp_path: Path,
) -> None:
    # Given alice's history in the US (and a busy hour of 20 calls on its second day), then her key
    # used from a DigitalOcean address in a country the organization never saw
    busy = [record(T0 + timedelta(days=1, minutes=m), ip=US_IP) for m in range(20)]
    write_tree(tmp_path, files_by_delivery(baseline() + busy + attack(ATTACKER_IP)))
    resolver = geo({US_IP: COMCAST, ATTACKER_IP: DIGITALOCEAN})

    # When the trail is replayed
    (alert,), summary = run(tmp_path, resolver)

    # Then the alert carries the network and the factor, one level above its score's severity
    assert alert["location"] == "BT"
    assert alert["severity"] == "high"
    assert rarity_severity(alert["score"]) == "medium"
    assert alert["networks"] == [
        {"ip": ATTACKER_IP, "asn": 14061, "organization": "DigitalOcean, LLC", "hosting": "DigitalOcean"}
    ]
    assert alert["evidence"] == [
        {
            "factor": "hosting_provider",
            "raises": 1,
            "text": f"hosting provider: AS14061 DigitalOcean, LLC ({ATTACKER_IP})",
        }
    ]
    assert "Evidence: hosting provider: AS14061 DigitalOcean, LLC" in alert["explanation"]
    # and only the alert's address was looked up, and her home line once a run that read her calls
    # (recorded for concurrent use across runs): never once a call, 60 of them (the hot path)
    lookups = Counter(resolver.asn_lookups)  # (the adapter keeps each address's answer)
    assert set(lookups) == {ATTACKER_IP, US_IP}
    assert lookups[US_IP] <= len({r["eventTime"][:15] for r in baseline() + busy}) < len(baseline() + busy)
    assert summary.networks == {"hosting": 1}


def test_given_a_residential_proxy_when_the_attack_alerts_then_the_factor_neither_raises_nor_lowers(
    tmp_path: Path,
) -> None:
    """A residential proxy (or a consumer VPN) defeats the hosting factor: the attack looks like a
    person at home. The factor only raises, so the brand-new country alerts exactly as without an
    ASN database: its absence is no evidence of innocence."""
    # Given the same attack from a consumer line in the new country, with and without an ASN database
    write_tree(tmp_path, files_by_delivery(baseline() + attack(HOME_IP)))

    # When replayed with an ASN database, and without one
    (with_asn,), _ = run(tmp_path, geo({US_IP: COMCAST, HOME_IP: COMCAST}, HOME_IP))
    (without,), summary = run(tmp_path, geo(None, HOME_IP))

    # Then the network is shown, no factor is present, and the severity is the rarity's alone
    assert with_asn["networks"] == [{"ip": HOME_IP, "asn": 7922, "organization": COMCAST.organization}]
    assert with_asn["evidence"] == []
    assert with_asn["severity"] == without["severity"] == rarity_severity(without["score"]) == "medium"
    assert "networks" not in without or without["networks"] == []
    assert summary.networks == {"unavailable": 1}


def test_given_an_ipv4_mapped_source_address_when_it_alerts_then_its_hosting_network_is_found(
    tmp_path: Path,
) -> None:
    # Given the attack from a DigitalOcean address written in its IPv4-mapped IPv6 form
    mapped = f"::ffff:{ATTACKER_IP}"
    write_tree(tmp_path, files_by_delivery(baseline() + attack(mapped)))
    resolver = geo({ATTACKER_IP: DIGITALOCEAN}, mapped)

    # When replayed
    (alert,), _ = run(tmp_path, resolver)

    # Then the address is looked up as the IPv4 address it is (and her home line, recorded for
    # concurrent use), and the factor raises the severity
    assert set(resolver.asn_lookups) == {ATTACKER_IP, US_IP}
    assert alert["evidence"][0]["factor"] == "hosting_provider"
    assert alert["severity"] == "high"


def test_given_no_asn_database_when_an_attack_alerts_then_country_detection_works_and_the_skip_is_counted(
    tmp_path: Path,
) -> None:
    # Given the attack from a hosting address, and no ASN database (a layer built without one)
    write_tree(tmp_path, files_by_delivery(baseline() + attack(ATTACKER_IP)))
    resolver = geo(None)

    # When replayed
    (alert,), summary = run(tmp_path, resolver)

    # Then it alerts on the country as ever, without networks or factors, and the run counts the
    # address it could not check
    assert alert["location"] == "BT"
    assert alert["severity"] == "medium"
    assert alert["evidence"] == []
    assert resolver.asn_lookups == []
    assert summary.networks == {"unavailable": 1}


# ---------------------------------------------------------------------------- every channel shows it


@pytest.fixture
def hosted_alert(tmp_path: Path) -> Alert:
    write_tree(tmp_path, files_by_delivery(baseline() + attack(ATTACKER_IP)))
    (raw,), _ = run(tmp_path, geo({ATTACKER_IP: DIGITALOCEAN}))
    return Alert.model_validate(raw)


def test_given_a_hosting_provider_alert_when_rendered_then_every_channel_names_the_network(
    hosted_alert: Alert,
) -> None:
    # Given the alert of an attack from DigitalOcean
    # When it is rendered for e-mail, Slack, AWS Chatbot and Security Hub
    body = email_body(hosted_alert)
    slack = json.dumps(slack_message(hosted_alert))
    chatbot = json.loads(chatbot_message(hosted_alert))["content"]["description"]
    finding = asff_finding(hosted_alert, default_product_arn("aws", "us-east-1", ACCOUNT))

    # Then each names the network and the factor in words
    words = "hosting provider: AS14061 DigitalOcean, LLC"
    assert "Network:  AS14061 DigitalOcean, LLC (hosting provider: DigitalOcean)" in body
    assert f"Evidence: {words} ({ATTACKER_IP}) (severity +1)" in body
    assert words in slack
    assert "*Network:*" in chatbot
    assert words in chatbot
    # and Security Hub gets the AS where GuardDuty puts it, and the factor in ProductFields
    remote = finding["Action"]["AwsApiCallAction"]["RemoteIpDetails"]
    assert remote["Organization"] == {"Asn": 14061, "AsnOrg": "DigitalOcean, LLC", "Org": "DigitalOcean"}
    assert remote["IpAddressV4"] == ATTACKER_IP
    assert remote["Country"] == {"CountryCode": "BT"}
    assert finding["Action"]["ActionType"] == "AWS_API_CALL"
    assert finding["ProductFields"]["trailgeo/EvidenceFactors"] == "hosting_provider"
    assert words in finding["ProductFields"]["trailgeo/Evidence"]
    assert finding["Severity"]["Label"] == "HIGH"
    assert validate_finding(finding) == []


def test_given_an_alert_written_before_evidence_existed_when_read_then_it_has_none_and_renders() -> None:
    # Given an alert document without the evidence and networks fields (pending in an outbox)
    alert = with_evidence(
        Alert.model_validate_json(
            json.dumps(
                {
                    "alert_id": "a" * 32,
                    "detected_at": "2026-10-25T18:15:00Z",
                    "score": 99.0,
                    "severity": "high",
                    "rule": {"threshold": 50},
                    "location": "BT",
                    "source": {"geo": {"country_iso_code": "BT"}, "ip": [ATTACKER_IP]},
                    "aws": {"cloudtrail": {"user_identity": {"arn": ALICE}}},
                    "event": {
                        "action": ["DescribeInstances"],
                        "provider": ["ec2.amazonaws.com"],
                        "start": "",
                        "end": "",
                    },
                    "user_agent": {"original": []},
                    "cloud": {"account": {"id": ACCOUNT}, "region": []},
                    "first_event_time": "",
                    "last_event_time": "",
                    "access_key_ids": [],
                    "explanation": "x",
                    "methods": [],
                    "principal_usual_countries": [],
                    "country_new_to_organization": True,
                    "country_new_to_principal": True,
                    "sensitive_methods": [],
                    "tactics": [],
                    "event_ids": [],
                    "omitted": {},
                }
            )
        ),
        [],
    )

    # Then it reads with no evidence, and renders without a network line
    assert alert.evidence == []
    assert alert.networks == []
    assert "Network:" not in email_body(alert)
    assert "Action" not in asff_finding(alert, default_product_arn("aws", "us-east-1", ACCOUNT))


def test_given_a_consumer_and_a_hosting_network_when_assessed_then_the_factor_names_the_hosting_one() -> None:
    # Given an alert's networks: a consumer line and an AWS address
    networks = [
        Network(ip=HOME_IP, asn=7922, organization=COMCAST.organization),
        Network(ip="3.5.1.2", asn=16509, organization="Amazon.com, Inc.", hosting="Amazon Web Services"),
    ]
    # When assessed
    (found,) = hosting_evidence(networks)
    # Then one factor, naming the hosting network and its address only
    assert found.text == "hosting provider: AS16509 Amazon.com, Inc. (3.5.1.2)"


# ---------------------------------------------------------------------------- settings and cold start

ENV = {
    "TRAIL_BUCKET": "org-trail",
    "TABLE_NAME": "trailgeo-state",
    "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:trailgeo-alerts",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("  ", None), ("/opt/geoip/asn.mmdb", Path("/opt/geoip/asn.mmdb"))],
)
def test_given_geoip_asn_path_when_settings_are_read_then_an_optional_path(
    value: str | None, expected: Path | None
) -> None:
    # Given GEOIP_ASN_PATH unset, empty or a path, When the settings are read
    # Then no ASN database, or that path
    env = ENV if value is None else {**ENV, "GEOIP_ASN_PATH": value}
    assert Settings.from_environ(env).geoip_asn_path == expected


@pytest.mark.parametrize(
    ("asn_file", "level", "message"),
    [
        ("absent.mmdb", "WARNING", "ASN database missing: hosting-provider evidence off"),
        ("README.md", "ERROR", "ASN database unusable: hosting-provider evidence off"),
        ("GeoLite2-ASN-Test.mmdb", "INFO", "ASN database ready"),
    ],
)
def test_given_an_asn_database_missing_unusable_or_fine_when_the_detector_cold_starts_then_the_log_says_so(
    country_test_mmdb: Path, caplog: pytest.LogCaptureFixture, asn_file: str, level: str, message: str
) -> None:
    # Given the detector's settings naming an ASN database that is absent, not a database, or fine
    path = MAXMIND_TEST_DATA / asn_file
    settings = Settings.from_environ({**ENV, "GEOIP_ASN_PATH": str(path)})
    resolver = MaxMindGeoResolver(country_test_mmdb, settings.geoip_asn_path)
    caplog.set_level("INFO", logger="trailgeo")

    # When the cold start reports on it
    log_asn_database(settings, SimpleNamespace(geo=resolver))  # type: ignore[arg-type]

    # Then one log line at that level says whether the factor is on, and why not; countries resolve
    (line,) = [r for r in caplog.records if "ASN database" in r.getMessage()]
    assert (line.levelname, line.getMessage()) == (level, message)
    if level != "INFO":
        assert str(path) in line.reason
    assert resolver.country("81.2.69.144") == "GB"


def test_given_an_alert_with_hundreds_of_addresses_when_assessed_then_at_most_twenty_are_looked_up() -> None:
    # Given 500 public addresses and an ASN lookup that counts its calls
    asked: list[str] = []

    def lookup(ip: str) -> AsnInfo:
        asked.append(ip)
        return DIGITALOCEAN

    addresses = [f"134.209.{i // 250}.{i % 250 + 1}" for i in range(500)]

    # When their networks are looked up
    networks = networks_of(addresses, lookup)

    # Then only the first twenty are (the alert's bounded list), and the factor names them once
    assert len(asked) == len(networks) == 20
    (found,) = hosting_evidence(networks)
    assert found.text.startswith(
        "hosting provider: AS14061 DigitalOcean, LLC (134.209.0.1, 134.209.0.2, 134.209.0.3 and more)"
    )


def test_given_the_shipped_databases_when_a_key_is_used_from_a_digitalocean_droplet_abroad_then_high(
    tmp_path: Path, dbip_mmdb: Path, asn_mmdb: Path
) -> None:
    # Given DB-IP Lite and the layer's ASN database; alice's ten days from a US consumer line
    # (Verizon), then her key used from a DigitalOcean address in Great Britain
    home, droplet = "96.253.26.224", "46.101.1.1"
    history = [record(T0 + timedelta(hours=6 * i, minutes=3), ip=home) for i in range(40)]
    write_tree(tmp_path, files_by_delivery(history + attack(droplet)))
    resolver = MaxMindGeoResolver(dbip_mmdb, asn_mmdb)

    # When the trail is replayed
    out = io.StringIO()
    summary, _ = replay(tmp_path, resolver, JsonLinesAlertSink(out), RunOptions())

    # Then the brand-new country alerts one level above its score's severity, naming the provider
    (alert,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (alert["location"], alert["score"], alert["severity"]) == ("GB", 100.0, "high")
    assert alert["networks"] == [
        {"ip": droplet, "asn": 14061, "organization": "DigitalOcean, LLC", "hosting": "DigitalOcean"}
    ]
    assert alert["evidence"][0]["text"] == f"hosting provider: AS14061 DigitalOcean, LLC ({droplet})"
    assert summary.networks == {"hosting": 1}
