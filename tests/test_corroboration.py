"""Corroborated severity: a location's rarity alone is worth a look (medium), and only evidence
beside it pages (high): a client the identity never ran (``new_client``), a rented server
(``hosting_provider``) that is not the organization's own egress (``shared_egress``). And what an
attacker can do about each: copy the victim's agent, flood made-up agents, borrow colleagues."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import ACCOUNT, ALICE, BOB, T0, US_IP, files_by_delivery, record, trail_record, write_tree
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryGeoResolver
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import replay
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.alert_builder import rarity_severity
from trailgeo.core.alerts import Alert
from trailgeo.core.clients import OTHER, client_family
from trailgeo.core.counters import CLIENTS_PARTITION_PREFIX, TOTAL, clients_partition
from trailgeo.core.evidence import (
    FACTORS,
    MIN_CLIENT_HISTORY_HOURS,
    MIN_EGRESS_HOURS,
    ORG_EGRESS_REASON,
    REGISTRY,
    client_evidence,
    concurrent_evidence,
    held_out_clients,
    held_out_slots,
    is_person,
    learned_egress,
    new_sensitive_methods,
    raised,
    travel_evidence,
)
from trailgeo.core.geography import CountryDistances, country_distances
from trailgeo.core.identities import permission_set_of
from trailgeo.core.networks import AsnInfo
from trailgeo.core.render.email import email_subject
from trailgeo.core.scoring import ScoringPolicy

CLI_V2 = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5 exe/x86_64.ubuntu.22"
KALI_CLI = "aws-cli/1.18.69 Python/2.7.18 Linux/6.5.0-kali3-amd64 botocore/1.16.19"
ATTACK_AT = T0 + timedelta(days=10, hours=3)
FOREIGN_IP = "67.43.156.1"  # BT in the memory resolver below
VPN_IP = "3.120.1.9"  # an EC2 address in Frankfurt: the organization's VPN gateway
DE_IP = "91.0.0.1"
AMAZON = AsnInfo(16509, "Amazon.com, Inc.")
COMCAST = AsnInfo(7922, "Comcast Cable Communications, LLC")
CAROL = f"arn:aws:iam::{ACCOUNT}:user/carol"
DAVE = f"arn:aws:iam::{ACCOUNT}:user/dave"
ERIN = f"arn:aws:iam::{ACCOUNT}:user/erin"


def history(arn: str = ALICE, ip: str = US_IP, agent: str = CLI_V2, hours: int = 40) -> list[dict[str, Any]]:
    """``hours`` hourly buckets of ``arn`` calling from ``ip`` with ``agent``, every 6 hours."""
    key = "AKIA" + arn[-5:].upper().rjust(16, "0")
    return [
        record(T0 + timedelta(hours=6 * i, minutes=3), ip=ip, arn=arn, agent=agent, key=key)
        for i in range(hours)
    ]


def calls(ip: str, agent: str, arn: str = ALICE, at: Any = ATTACK_AT) -> list[dict[str, Any]]:
    key = "AKIA" + arn[-5:].upper().rjust(16, "0")
    return [record(at + timedelta(minutes=m), ip=ip, arn=arn, agent=agent, key=key) for m in range(3)]


def replayed(
    tmp_path: Path,
    records: list[dict[str, Any]],
    geo: MemoryGeoResolver,
    options: RunOptions | None = None,
) -> list[dict[str, Any]]:
    write_tree(tmp_path, files_by_delivery(records))
    out = io.StringIO()
    replay(tmp_path, geo, JsonLinesAlertSink(out), options or RunOptions())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def resolver(networks: dict[str, AsnInfo] | None = None) -> MemoryGeoResolver:
    countries = {US_IP: "US", FOREIGN_IP: "BT", VPN_IP: "DE", DE_IP: "DE"}
    return MemoryGeoResolver(countries=countries, networks=networks)


# ---------------------------------------------------------------------------- client families


@pytest.mark.parametrize(
    ("agent", "family"),
    [
        (CLI_V2, "aws-cli/2 linux"),
        (KALI_CLI, "aws-cli/1 linux"),
        ("aws-cli/2.15.17 Python/3.11.6 Darwin/23.3.0 exe/x86_64 prompt/off", "aws-cli/2 macos"),
        (
            "Boto3/1.34.44 md/Botocore#1.34.44 ua/2.0 os/macos#23.3.0 md/arch#arm64 lang/python#3.11.7",
            "boto3/1 macos",
        ),
        (
            (
                "APN/1.0 HashiCorp/1.0 Terraform/1.7.4 (+https://www.terraform.io) "
                "terraform-provider-aws/5.40.0 aws-sdk-go-v2/1.25.2 os/linux lang/go#1.21.8"
            ),
            "terraform/1 linux",
        ),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/122.0.0.0", "browser windows"),
        ("aws-sdk-go/1.44.300 (go1.20.5; linux; amd64)", "aws-sdk-go/1 linux"),
        ("python-requests/2.31", "python-requests/2 other"),
        ("aws-cli/123456789 Linux", "aws-cli/12 linux"),  # the caller's digits, bounded
        ("my-own-scanner v0.1", OTHER),
        ("AWS Internal", None),
        ("ec2.amazonaws.com", None),
        ("console.amazonaws.com", None),
        ("", None),
        (None, None),
    ],
)
def test_given_a_user_agent_when_classified_then_its_family_is_product_major_and_os(
    agent: str | None, family: str | None
) -> None:
    # Given a userAgent, When classified, Then its family (None for AWS's own calls)
    assert client_family(agent) == family


def test_given_a_megabyte_agent_when_classified_then_only_its_head_is_read() -> None:
    # Given an agent whose product token sits after 1 MB of padding
    agent = "x" * 1_000_000 + " Boto3/1.34.0 os/linux"
    assert client_family(agent[-30:]) == "boto3/1 linux"
    # When classified, Then it is read no further than its head: an unknown client
    assert client_family(agent) == OTHER


# ---------------------------------------------------------------------------- the model


def test_given_the_registry_then_new_client_and_shared_egress_are_factors() -> None:
    assert {"hosting_provider", "new_client", "new_sensitive_method", "shared_egress"} <= FACTORS
    assert REGISTRY["new_client"].raises == 1
    assert REGISTRY["shared_egress"].raises == 0  # shown, weighs nothing


@pytest.mark.parametrize(("score", "expected"), [(100.0, "medium"), (75.0, "medium"), (74.9, "low")])
def test_given_a_rarity_score_when_it_alone_sets_the_severity_then_it_never_pages(
    score: float, expected: str
) -> None:
    assert rarity_severity(score) == expected


def test_given_too_little_client_history_when_assessed_then_no_client_is_new() -> None:
    # Given an identity with a day less one hour of client history, and one with a full day
    known = {"aws-cli/2 linux": (23, 1.0)}
    # When a never-used family appears, Then it is evidence only with enough history
    assert client_evidence([KALI_CLI], known, MIN_CLIENT_HISTORY_HOURS - 1) is None
    found = client_evidence([KALI_CLI], known, MIN_CLIENT_HISTORY_HOURS)
    assert found is not None
    assert found.text.startswith("new client: aws-cli/1 linux, never used by this identity in 24 hours")
    assert "(usually aws-cli/2 linux)" in found.text


# ---------------------------------------------------------------------------- end to end


def test_given_a_stolen_key_used_with_the_thiefs_client_when_it_alerts_then_high_with_new_client(
    tmp_path: Path,
) -> None:
    # Given alice's 40 hours from the US with the AWS CLI v2, then her key from BT with a CLI v1 on Kali
    alerts = replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI), resolver())

    # When it alerts, Then the rarity's medium is raised to high by the new client, which it names
    (alert,) = alerts
    assert (alert["location"], alert["score"], alert["severity"]) == ("BT", 100.0, "high")
    assert [e["factor"] for e in alert["evidence"]] == ["new_client"]
    assert "Evidence: new client: aws-cli/1 linux" in alert["explanation"]


def test_given_a_traveller_with_her_own_client_when_it_alerts_then_medium_without_evidence(
    tmp_path: Path,
) -> None:
    # Given alice's history, then alice herself in BT with her own CLI (a trip): the same calls
    alerts = replayed(tmp_path, history() + calls(FOREIGN_IP, CLI_V2), resolver())

    # Then an alert, worth a look, but no page: medium, no factor
    (alert,) = alerts
    assert (alert["location"], alert["severity"], alert["evidence"]) == ("BT", "medium", [])


def test_given_an_attacker_who_copies_the_victims_agent_when_it_alerts_then_still_alerted_at_medium(
    tmp_path: Path,
) -> None:
    """The agent is the caller's to write: copying it defeats the factor (threat model). The
    absence of the factor lowers nothing: the location's rarity still alerts, at medium."""
    alerts = replayed(tmp_path, history() + calls(FOREIGN_IP, CLI_V2), resolver())
    assert [(a["location"], a["severity"]) for a in alerts] == [("BT", "medium")]


def test_given_a_new_identity_when_its_first_calls_come_from_a_new_country_then_no_client_is_new(
    tmp_path: Path,
) -> None:
    # Given an organization's history (alice), then bob's very first calls, from BT (a new hire)
    alerts = replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI, arn=BOB), resolver())

    # Then bob alerts on the country, without the new-client factor (he has no clients on record)
    (alert,) = alerts
    assert alert["aws"]["cloudtrail"]["user_identity"]["arn"] == BOB
    assert alert["evidence"] == []
    assert alert["severity"] == rarity_severity(alert["score"])


def test_given_the_factors_left_out_when_replayed_then_the_rarity_alone_sets_the_severity(
    tmp_path: Path,
) -> None:
    # Given the stolen-key attack, When replayed with no factor enabled (the evaluation's ablation)
    alerts = replayed(
        tmp_path, history() + calls(FOREIGN_IP, KALI_CLI), resolver(), RunOptions(factors=frozenset())
    )
    # Then the alert is the rarity's alone
    (alert,) = alerts
    assert (alert["severity"], alert["evidence"]) == ("medium", [])


def test_given_an_attacker_flooding_made_up_agents_when_counted_then_an_identity_gets_a_bounded_few_families(
    tmp_path: Path,
) -> None:
    """Every family is an item of the identity's history: a thousand agents in one run must not be
    a thousand writes (nor a thousand products: the vocabulary is closed)."""
    # Given alice's key calling with 1,000 agents of every known product, versions and OSes made up
    products = ("aws-cli", "Boto3", "aws-sdk-go", "aws-sdk-java", "Terraform", "curl", "Mozilla")
    systems = ("Linux", "Darwin", "Windows", "Plan9")
    records = [
        record(
            ATTACK_AT + timedelta(seconds=i),
            ip=FOREIGN_IP,
            agent=f"{products[i % 7]}/{i % 97} {systems[i % 4]} build-{i}",
        )
        for i in range(1000)
    ]
    aggregate = RunAggregate(geolocate=lambda ip: "BT")
    for item in records:
        aggregate.add(trail_record(item))

    # When the run's counters are derived
    families = {
        key[1] for key in aggregate.counters if key[0] == clients_partition(ALICE) and key[1] != TOTAL
    }

    # Then alice's partition holds at most MAX_CLIENT_FAMILIES families, and nothing else is a client
    assert 0 < len(families) <= 8  # MAX_CLIENT_FAMILIES
    clients = {key[0] for key in aggregate.counters if key[0].startswith(CLIENTS_PARTITION_PREFIX)}
    assert clients == {clients_partition(ALICE)}


def test_given_the_organizations_vpn_on_a_cloud_instance_when_a_colleague_abroad_uses_it_then_not_raised(
    tmp_path: Path,
) -> None:
    # Given three colleagues who live in DE, and the VPN gateway on EC2 in Frankfurt that they and
    # alice (US) go through one day, its first: a country new to her, an egress not learned yet
    colleagues = [history(arn, DE_IP) for arn in (CAROL, DAVE, ERIN)]
    today = [calls(VPN_IP, CLI_V2, arn) for arn in (CAROL, DAVE, ERIN, ALICE)]
    records = history() + [r for h in colleagues for r in h] + [r for c in today for r in c]
    networks = {VPN_IP: AMAZON, US_IP: COMCAST}

    # When replayed
    alerts = replayed(tmp_path, records, resolver(networks))

    # Then alice alerts on DE, the gateway is named as the organization's own egress, and the
    # hosting provider does not raise the severity
    (alert,) = alerts
    assert alert["location"] == "DE"
    assert [e["factor"] for e in alert["evidence"]] == ["shared_egress"]
    assert alert["severity"] == rarity_severity(alert["score"])
    assert "other identities for whom the country is usual" in alert["explanation"]


def test_given_an_attacker_on_a_cloud_instance_of_their_own_when_it_alerts_then_the_hosting_provider_raises(
    tmp_path: Path,
) -> None:
    """The attacker cannot borrow the organization's egress: colleagues for whom the country is
    usual call from the gateway, not from the attacker's instance."""
    # Given the same colleagues on the gateway, and alice's key used from another EC2 address in DE
    attacker_ip = "3.120.77.1"
    colleagues = [history(arn, VPN_IP) for arn in (CAROL, DAVE, ERIN)]
    today = [calls(VPN_IP, CLI_V2, arn) for arn in (CAROL, DAVE, ERIN)] + [calls(attacker_ip, CLI_V2)]
    records = history() + [r for h in colleagues for r in h] + [r for c in today for r in c]
    geo = resolver({VPN_IP: AMAZON, attacker_ip: AMAZON, US_IP: COMCAST})
    geo.countries[attacker_ip] = "DE"

    # When replayed
    alerts = replayed(tmp_path, records, geo)

    # Then the hosting provider raises alice's alert
    (alert,) = alerts
    assert [e["factor"] for e in alert["evidence"]] == ["hosting_provider"]
    assert alert["severity"] == "high"


def test_given_only_one_colleague_on_the_address_when_it_alerts_then_the_hosting_provider_still_raises(
    tmp_path: Path,
) -> None:
    """One colleague is not enough: an attacker holding two stolen keys, one of a person for whom
    the country is usual, must not lift the factor for the other."""
    records = history() + history(CAROL, VPN_IP) + calls(VPN_IP, CLI_V2, CAROL) + calls(VPN_IP, CLI_V2)
    alerts = replayed(tmp_path, records, resolver({VPN_IP: AMAZON, US_IP: COMCAST}))
    (alert,) = alerts
    assert [e["factor"] for e in alert["evidence"]] == ["hosting_provider"]
    assert alert["severity"] == "high"


# ---------------------------------------------------------------------------- sensitive methods


def sensitive_calls(name: str, source: str, arn: str = ALICE, at: Any = ATTACK_AT) -> list[dict[str, Any]]:
    key = "AKIA" + arn[-5:].upper().rjust(16, "0")
    return [
        record(at + timedelta(minutes=m), ip=FOREIGN_IP, arn=arn, key=key, name=name, source=source)
        for m in range(2)
    ]


def test_given_a_sensitive_method_the_identity_never_called_when_it_alerts_then_high(tmp_path: Path) -> None:
    # Given alice's 40 hours of DescribeInstances, then her key creating an access key from BT
    # with her own client
    alerts = replayed(
        tmp_path, history() + sensitive_calls("CreateAccessKey", "iam.amazonaws.com"), resolver()
    )

    # Then the sensitive method, new to her, raises the rarity's medium to high
    (alert,) = alerts
    assert alert["sensitive_methods"] == ["iam.amazonaws.com:CreateAccessKey"]
    assert [e["factor"] for e in alert["evidence"]] == ["new_sensitive_method"]
    assert alert["severity"] == "high"


def test_given_an_everyday_sensitive_method_when_a_traveller_calls_it_abroad_then_medium(
    tmp_path: Path,
) -> None:
    """An engineer's everyday AssumeRole or ECR login goes with them on a trip: rare in the new
    country, sensitive by the catalogue, but in their own history, so no page."""
    # Given alice assuming roles every day from the US, then from BT
    assume = [
        record(
            T0 + timedelta(hours=6 * i, minutes=5),
            name="AssumeRole",
            source="sts.amazonaws.com",
            key="AKIA" + "ALICE".rjust(16, "0"),
        )
        for i in range(40)
    ]
    alerts = replayed(
        tmp_path, history() + assume + sensitive_calls("AssumeRole", "sts.amazonaws.com"), resolver()
    )

    # Then the alert lists the sensitive method, but nothing raises it
    (alert,) = alerts
    assert alert["sensitive_methods"] == ["sts.amazonaws.com:AssumeRole"]
    assert (alert["severity"], alert["evidence"]) == ("medium", [])


def _gateway_shared(
    hours: int, days: float, arns: tuple[str, ...] = (CAROL, DAVE, ERIN)
) -> list[dict[str, Any]]:
    """``arns`` (their home line in DE) on the EC2 address VPN_IP together in ``hours`` hours spread
    over ``days`` days before the attack's."""
    homes = [r for arn in arns for r in history(arn, DE_IP)]
    start = ATTACK_AT - timedelta(days=days)
    step = timedelta(days=days) / hours
    return homes + [
        r for i in range(hours) for arn in arns for r in calls(VPN_IP, CLI_V2, arn, at=start + i * step)
    ]


def replayed_with_report(
    tmp_path: Path, records: list[dict[str, Any]], geo: MemoryGeoResolver
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The alerts of a replay and the alerts its runs held back, by reason."""
    write_tree(tmp_path, files_by_delivery(records))
    out, held = io.StringIO(), Counter[str]()
    replay(
        tmp_path,
        geo,
        JsonLinesAlertSink(out),
        RunOptions(),
        on_tick=lambda r: held.update(r.alerts_allowlisted),
    )
    return [json.loads(line) for line in out.getvalue().splitlines()], held


def test_given_a_gateway_colleagues_shared_for_days_when_one_person_uses_it_alone_then_held_and_counted(
    tmp_path: Path,
) -> None:
    """Colleagues share the VPN gateway every working day; another day one person goes through it
    alone. The gateway is the organization's learned egress: it says where the gateway is, not
    where she is, and her calls through it carry nothing else: no alert, one count."""
    # Given three DE colleagues together on the gateway in 10 hours over 5 days, then alice (US)
    # alone on it with her own client
    records = history() + _gateway_shared(hours=10, days=5) + calls(VPN_IP, CLI_V2)

    # When replayed with the gateway in Amazon's network
    alerts, held = replayed_with_report(tmp_path, records, resolver({VPN_IP: AMAZON, US_IP: COMCAST}))

    # Then alice does not alert, and the run counts the alert it held at the egress
    assert [a for a in alerts if a["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE] == []
    assert held == Counter({ORG_EGRESS_REASON: 1})


def test_given_weeks_of_held_calls_through_the_gateway_when_her_key_is_used_from_that_country_then_it_alerts(
    tmp_path: Path,
) -> None:
    """Calls held at the gateway say nothing of where she is: they do not make its country hers.
    A thief with her key and her agent on a home line in that country still alerts."""
    # Given the learned gateway, alice on it alone in 20 hours over the following days (held), then
    # her key from a DE home line with her own client
    gateway_days = [
        r for i in range(20) for r in calls(VPN_IP, CLI_V2, at=ATTACK_AT + timedelta(hours=3 + 5 * i))
    ]
    thief = calls(DE_IP, CLI_V2, at=ATTACK_AT + timedelta(days=6))
    records = history(hours=80) + _gateway_shared(hours=10, days=5) + gateway_days + thief

    # When replayed
    alerts, held = replayed_with_report(tmp_path, records, resolver({VPN_IP: AMAZON, US_IP: COMCAST}))

    # Then every gateway run was held, and the DE home line alerts: DE is still not hers
    assert held[ORG_EGRESS_REASON] >= 10
    (alert,) = [a for a in alerts if a["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE]
    assert alert["location"] == "DE"
    assert alert["source"]["ip"] == [DE_IP]


def test_given_weeks_of_held_calls_through_the_gateway_then_its_country_is_no_more_common_for_the_org(
    tmp_path: Path,
) -> None:
    """An insider (or a user of the VPN) sends calls through the foreign gateway for weeks: held,
    they must not make its country more common for the organization, or a thief there would score
    lower for everyone."""
    # Given the learned gateway, then bob's key from a DE home line days later; with and without
    # 40 hours of alice's calls held at the gateway before it
    held_weeks = [
        r for i in range(40) for r in calls(VPN_IP, CLI_V2, at=ATTACK_AT + timedelta(hours=3 + 5 * i))
    ]
    thief = calls(DE_IP, CLI_V2, BOB, at=ATTACK_AT + timedelta(days=9))
    base = history() + history(BOB) + _gateway_shared(hours=10, days=5) + thief
    geo = resolver({VPN_IP: AMAZON, US_IP: COMCAST})

    # When both are replayed
    with_held, held = replayed_with_report(tmp_path / "with", base + held_weeks, geo)
    without, _ = replayed_with_report(tmp_path / "without", base, geo)

    # Then the 40 hours were held, and bob's alert scores the same either way
    assert held[ORG_EGRESS_REASON] == 40
    (bob,) = [a for a in with_held if a["aws"]["cloudtrail"]["user_identity"]["arn"] == BOB]
    (bob_alone,) = [a for a in without if a["aws"]["cloudtrail"]["user_identity"]["arn"] == BOB]
    assert bob["score"] == pytest.approx(bob_alone["score"], abs=0.5)


def test_given_the_learned_gateway_when_a_new_client_calls_through_it_then_it_still_alerts(
    tmp_path: Path,
) -> None:
    """Whoever is on the VPN is hidden behind it, so what they run still counts: a client alice never
    used, through the organization's egress, pages."""
    # Given the learned gateway, then alice's key through it with a client she never ran
    records = history() + _gateway_shared(hours=10, days=5) + calls(VPN_IP, KALI_CLI)

    # When replayed
    alerts, held = replayed_with_report(tmp_path, records, resolver({VPN_IP: AMAZON, US_IP: COMCAST}))

    # Then she alerts: the egress shown (weighs nothing), the new client raising it; nothing held
    (alert,) = [a for a in alerts if a["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE]
    assert [e["factor"] for e in alert["evidence"]] == ["shared_egress", "new_client"]
    assert "within 30 days" in alert["evidence"][0]["text"]
    assert alert["severity"] == "high"
    assert held == Counter()


@pytest.mark.parametrize(("hours", "days"), [(6, 3), (12, 0.5)], ids=["few-hours", "within-a-day"])
def test_given_an_attacker_who_shares_their_instance_with_two_stolen_keys_when_a_third_calls_then_not_held(
    tmp_path: Path, hours: int, days: float
) -> None:
    """An attacker holding keys of two people who live in DE calls from their EC2 address with both
    (no alert: DE is usual for them) to have it learned as egress, then uses alice's key with her
    own client from it. It is not learned before it was shared in MIN_EGRESS_HOURS hours, the first
    more than a day before: alice alerts."""
    # Given the attacker's instance shared by the two keys in too few hours, or all within a day
    records = history() + _gateway_shared(hours, days, (CAROL, DAVE)) + calls(VPN_IP, CLI_V2)

    # When replayed
    alerts, held = replayed_with_report(tmp_path, records, resolver({VPN_IP: AMAZON, US_IP: COMCAST}))

    # Then alice alerts on DE, and nothing is held
    (alert,) = [a for a in alerts if a["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE]
    assert alert["location"] == "DE"
    assert held == Counter()


def test_given_shared_hosting_counters_when_judged_then_learned_only_after_enough_hours_and_a_day() -> None:
    at = ATTACK_AT
    old, recent = "2026-01-01T00:00:00Z", at.strftime("%Y-%m-%dT%H:%M:%SZ")
    first = (at - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Enough hours, first two days ago, last now: learned
    assert learned_egress(MIN_EGRESS_HOURS, first, recent, at)
    # One hour short; first within the day; last beyond the memory; never seen
    assert not learned_egress(MIN_EGRESS_HOURS - 1, first, recent, at)
    assert not learned_egress(MIN_EGRESS_HOURS, recent, recent, at)
    assert not learned_egress(MIN_EGRESS_HOURS, old, old, at)
    assert not learned_egress(MIN_EGRESS_HOURS, None, None, at)


def test_given_an_address_only_alerting_identities_shared_when_alice_uses_it_later_then_hosting_still_raises(
    tmp_path: Path,
) -> None:
    """An attacker's instance is never recorded as egress: the identities calling from it are new
    there (they alert), never colleagues for whom its country is usual."""
    # Given two stolen keys (carol's, dave's) used from the attacker's EC2 address in DE for days,
    # each new there, then alice's key from the same address
    attacker_ip = "3.120.77.1"
    stolen = [r for arn in (CAROL, DAVE) for r in history(arn, US_IP)] + [
        r
        for arn in (CAROL, DAVE)
        for r in calls(attacker_ip, KALI_CLI, arn, at=ATTACK_AT - timedelta(days=2))
    ]
    geo = resolver({attacker_ip: AMAZON, US_IP: COMCAST})
    geo.countries[attacker_ip] = "DE"
    alerts = replayed(tmp_path, history() + stolen + calls(attacker_ip, CLI_V2), geo)

    # Then alice's alert carries the hosting provider
    (alert,) = [a for a in alerts if a["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE]
    assert "hosting_provider" in [e["factor"] for e in alert["evidence"]]
    assert alert["severity"] == "high"


# ---------------------------------------------------------------------------- re-alerts in the window


def _calls_of(name: str, source: str, ip: str, at: Any) -> list[dict[str, Any]]:
    key = "AKIA" + ALICE[-5:].upper().rjust(16, "0")
    return [record(at + timedelta(minutes=m), ip=ip, key=key, name=name, source=source) for m in range(2)]


def test_given_a_traveller_who_reads_her_usual_secret_then_no_re_alert_but_a_new_access_key_re_alerts(
    tmp_path: Path,
) -> None:
    """Within the suppression window a sensitive method pages again only when it is news for the
    identity: the engineer's daily GetSecretValue abroad is not, a first CreateAccessKey is. And
    the routine call does not spend the window's one escalation (an attacker cannot open with the
    victim's everyday sensitive call to make their backdoor a suppressed repeat)."""
    # Given alice's history from the US, reading a secret every day besides her EC2 calls
    routine = [
        r
        for day in range(10)
        for r in _calls_of("GetSecretValue", "secretsmanager.amazonaws.com", US_IP, T0 + timedelta(days=day))
    ]
    # When she alerts from BT, reads the same secret there 2 hours later, and 4 hours later her
    # key creates an access key from BT
    trip = (
        calls(FOREIGN_IP, CLI_V2)
        + _calls_of(
            "GetSecretValue", "secretsmanager.amazonaws.com", FOREIGN_IP, ATTACK_AT + timedelta(hours=2)
        )
        + _calls_of("CreateAccessKey", "iam.amazonaws.com", FOREIGN_IP, ATTACK_AT + timedelta(hours=4))
    )
    alerts = replayed(tmp_path, history() + routine + trip, resolver())

    # Then the first alert, no re-alert for the routine secret, and one for the access key
    first, second = alerts
    assert first["follows_alert_id"] is None
    assert second["follows_alert_id"] == first["alert_id"]
    assert second["sensitive_methods"] == ["iam.amazonaws.com:CreateAccessKey"]
    assert [e["factor"] for e in second["evidence"]] == ["new_sensitive_method"]


def test_given_a_re_alert_no_more_severe_than_the_first_then_an_update_else_an_escalation(
    tmp_path: Path,
) -> None:
    """The team was paged at critical for a thief on a rented server with their own tools: the
    backdoor key two hours later is told in the same thread (an update, SNS attribute
    ``notification=update``); after a medium alert the same backdoor pages (an escalation)."""
    key = "AKIA" + ALICE[-5:].upper().rjust(16, "0")
    backdoor = [
        record(
            ATTACK_AT + timedelta(hours=2, minutes=m),
            ip=FOREIGN_IP,
            key=key,
            agent=agent,
            name=name,
            source=src,
        )
        for m, (agent, name, src) in enumerate([(KALI_CLI, "CreateAccessKey", "iam.amazonaws.com")] * 2)
    ]
    # Given a critical first alert (hosting provider, new client), When the backdoor follows
    loud = replayed(
        tmp_path / "loud",
        history() + calls(FOREIGN_IP, KALI_CLI) + backdoor,
        resolver({FOREIGN_IP: AMAZON, US_IP: COMCAST}),
    )
    # Then the re-alert is an update in the first alert's thread
    first, second = (Alert.model_validate(a) for a in loud)
    assert (first.severity, second.severity) == ("critical", "critical")
    assert (second.follows_alert_id, second.quiet_update, second.notification) == (
        first.alert_id,
        True,
        "update",
    )
    assert email_subject(second).startswith("[CRITICAL] Update: ")

    # Given a medium first alert (her own client from a home line), When the same backdoor follows
    quiet_first = [r | {"userAgent": CLI_V2} for r in backdoor]
    told = replayed(tmp_path / "told", history() + calls(FOREIGN_IP, CLI_V2) + quiet_first, resolver())
    # Then the re-alert, high, pages as an escalation
    first, second = (Alert.model_validate(a) for a in told)
    assert (first.severity, second.severity) == ("medium", "high")
    assert (second.quiet_update, second.notification) == (False, "escalation")


# ---------------------------------------------------------------------------- the permission set's routine

POWER_USER = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_PowerUserAccess_0123456789abcdef"
OTHER_ACCOUNT = "210987654321"


def _sso(user: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:sts::{account}:assumed-role/AWSReservedSSO_PowerUserAccess_0123456789abcdef/{user}"


def _secrets(arn: str, days: range, ip: str = US_IP) -> list[dict[str, Any]]:
    """``arn`` reading a secret once a day, at 10:00 on each day of ``days``."""
    account = arn.split(":")[4]
    return [
        record(
            T0 + timedelta(days=d, hours=10),
            arn=arn,
            key="ASIA" + arn[-5:].upper().rjust(16, "0"),
            ip=ip,
            name="GetSecretValue",
            source="secretsmanager.amazonaws.com",
            account=account,
        )
        for d in days
    ]


def _abroad_reading_a_secret(arn: str) -> list[dict[str, Any]]:
    return [
        *calls(FOREIGN_IP, CLI_V2, arn),
        record(
            ATTACK_AT + timedelta(minutes=5),
            arn=arn,
            key="ASIA" + arn[-5:].upper().rjust(16, "0"),
            ip=FOREIGN_IP,
            name="GetSecretValue",
            source="secretsmanager.amazonaws.com",
        ),
    ]


def test_given_a_method_routine_for_her_permission_set_when_she_first_calls_it_abroad_then_no_factor(
    tmp_path: Path,
) -> None:
    """Colleagues of the same permission set in the account read secrets every day: alice's first
    GetSecretValue, on a trip, is her job catching up with her, not a thief's."""
    # Given bob and carol (PowerUserAccess) reading a secret daily, alice (PowerUserAccess) never
    alice = _sso("alice@example.com")
    team = _secrets(_sso("bob@example.com"), range(9)) + _secrets(_sso("carol@example.com"), range(9))
    # When alice, from BT, reads one
    alerts = replayed(tmp_path, history(alice) + team + _abroad_reading_a_secret(alice), resolver())

    # Then she alerts, listing it, at the rarity's medium: no sensitive method new to her role's work
    (alert,) = alerts
    assert alert["sensitive_methods"] == ["secretsmanager.amazonaws.com:GetSecretValue"]
    assert (alert["severity"], alert["evidence"]) == ("medium", [])


def test_given_the_permission_set_of_another_account_when_she_first_calls_it_abroad_then_still_new(
    tmp_path: Path,
) -> None:
    """Peers are the permission set in the same account: a team elsewhere, or a role's or an IAM
    user's calls, do not make a method routine (what one compromised principal could do)."""
    # Given the same permission set's people reading secrets daily, but in another account
    alice = _sso("alice@example.com")
    elsewhere = _secrets(_sso("bob@example.com", OTHER_ACCOUNT), range(9)) + _secrets(
        _sso("carol@example.com", OTHER_ACCOUNT), range(9)
    )
    alerts = replayed(tmp_path, history(alice) + elsewhere + _abroad_reading_a_secret(alice), resolver())

    # Then the method is new to alice and to her peers in her account: raised to high
    (alert,) = alerts
    assert [e["factor"] for e in alert["evidence"]] == ["new_sensitive_method"]
    assert alert["severity"] == "high"


@pytest.mark.parametrize(
    ("known", "peers", "new"),
    [
        ({}, {}, ("iam:CreateAccessKey",)),
        ({}, {"iam:CreateAccessKey": (2, 1.0)}, ("iam:CreateAccessKey",)),  # two hours: not yet routine
        ({}, {"iam:CreateAccessKey": (3, 1.0)}, ()),  # routine for the team
        ({"iam:CreateAccessKey": (1, 1.0)}, {}, ()),  # her own
    ],
)
def test_given_her_and_her_peers_history_then_a_sensitive_method_is_news_only_for_both(
    known: dict[str, tuple[int, float]], peers: dict[str, tuple[int, float]], new: tuple[str, ...]
) -> None:
    assert new_sensitive_methods(["iam:CreateAccessKey"], known, 48, peers) == new


def test_given_principals_then_only_identity_center_users_have_a_permission_set() -> None:
    assert permission_set_of(_sso("alice@example.com")) == POWER_USER
    assert permission_set_of(f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci-1") is None
    assert permission_set_of(ALICE) is None
    assert permission_set_of(POWER_USER) is None  # no session: not a caller


# ---------------------------------------------------------------- what an alerted subject's calls teach

IAM = "iam.amazonaws.com"
MAC_CLI = "aws-cli/2.15.17 Python/3.11.6 Darwin/23.3.0 exe/x86_64 prompt/off"  # a new laptop's


def _kali_backdoor(at: Any) -> list[dict[str, Any]]:
    """alice's key creating an access key from BT with a Kali CLI, twice from ``at``."""
    key = "AKIA" + ALICE[-5:].upper().rjust(16, "0")
    return [
        record(
            at + timedelta(minutes=m),
            ip=FOREIGN_IP,
            key=key,
            agent=KALI_CLI,
            name="CreateAccessKey",
            source=IAM,
        )
        for m in range(2)
    ]


def test_given_a_thiefs_probe_when_they_return_days_later_then_their_client_is_still_new(
    tmp_path: Path,
) -> None:
    """A thief probes the key once (one call, their own client), waits out the suppression window,
    and comes back for the backdoor: their probe must not have made their client the victim's."""
    key = "AKIA" + ALICE[-5:].upper().rjust(16, "0")
    probe = [record(ATTACK_AT, ip=FOREIGN_IP, key=key, agent=KALI_CLI, name="GetCallerIdentity")]
    backdoor = _kali_backdoor(ATTACK_AT + timedelta(days=4))
    # Given alice's 40 hours from the US with her CLI v2, When her key is probed from BT with a
    # CLI v1 on Kali, and four days later creates an access key from there with the same client
    first, second = replayed(tmp_path, history() + probe + backdoor, resolver())

    # Then both alerts name the new client: the probe's hours, quarantined, taught no client
    assert [e["factor"] for e in first["evidence"]] == ["new_client"]
    assert [e["factor"] for e in second["evidence"]] == ["new_client", "new_sensitive_method"]
    assert (first["severity"], second["severity"]) == ("high", "critical")


def test_given_a_thiefs_recon_when_their_backdoor_follows_within_the_window_then_an_escalation(
    tmp_path: Path,
) -> None:
    """The recon run's hours taught the thief's client; the backdoor two hours later was then high
    like the recon, a quiet update in its thread. Judged without them it is critical, as one run
    holding both would be; the recon's page, two hours old and unresolved, no longer holds: the
    escalation pages."""
    backdoor = _kali_backdoor(ATTACK_AT + timedelta(hours=2))
    # Given alice's history, When her key's recon from BT (a home line, a Kali CLI) alerts, and the
    # backdoor follows two hours later
    first, second = (
        Alert.model_validate(a)
        for a in replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI) + backdoor, resolver())
    )

    # Then the re-alert still names the new client and pages as an escalation, at critical
    assert (first.severity, second.severity) == ("high", "critical")
    assert [e.factor for e in second.evidence] == ["new_client", "new_sensitive_method"]
    assert (second.follows_alert_id, second.quiet_update, second.notification) == (
        first.alert_id,
        False,
        "escalation",
    )


def test_given_a_traveller_with_a_new_laptop_when_she_calls_again_the_next_day_then_no_new_alert(
    tmp_path: Path,
) -> None:
    """Her new laptop's client, told with her first alert, is still not hers (it only ever called
    from the alerted country), but no news: a repeat it alone would corroborate stays suppressed."""
    trip = calls(FOREIGN_IP, MAC_CLI) + calls(FOREIGN_IP, MAC_CLI, at=ATTACK_AT + timedelta(days=1))
    # Given alice's history, When she calls from BT with a new laptop two days running
    alerts = replayed(tmp_path, history() + trip, resolver())

    # Then one alert, for the first day
    (alert,) = alerts
    assert [e["factor"] for e in alert["evidence"]] == ["new_client"]


def _office_hours(days: int) -> list[dict[str, Any]]:
    """alice from the US on weekdays, 09:00-12:00 there (14:00-17:00 UTC), for ``days`` days."""
    return [
        record(T0 + timedelta(days=d, hours=h, minutes=5))
        for d in range(days)
        if (T0 + timedelta(days=d)).weekday() < 5
        for h in (14, 15, 16)
    ]


def test_given_a_thiefs_probe_at_night_when_they_return_at_that_hour_then_it_is_still_unusual(
    tmp_path: Path,
) -> None:
    """The probe's hour is the thief's, not the victim's: it must not make 02:00 a working hour."""
    key = "AKIAALICE0000000001"
    probe_at = T0 + timedelta(days=46, hours=20, minutes=30)  # a Monday, 02:30 in BT
    probe = [record(probe_at, ip=FOREIGN_IP, key=key, name="GetCallerIdentity")]
    back = probe_at + timedelta(days=2)
    backdoor = [
        record(back + timedelta(minutes=m), ip=FOREIGN_IP, key=key, name="CreateAccessKey", source=IAM)
        for m in range(2)
    ]
    # Given six weeks of alice's office hours, When her key (her own client) is probed from BT at
    # 02:30 there, and two days later creates an access key from there at the same hour
    first, second = replayed(tmp_path, _office_hours(45) + probe + backdoor, resolver())

    # Then both alerts find the hour unusual: the probe's hour, quarantined, taught no habit
    assert [e["factor"] for e in first["evidence"]] == ["unusual_hour"]
    assert [e["factor"] for e in second["evidence"]] == ["new_sensitive_method", "unusual_hour"]


@pytest.mark.parametrize(
    ("held", "known", "hours"),
    [
        (0, {"aws-cli/2 linux": (40, 9.0), "aws-cli/1 linux": (1, 0.5)}, 41),
        (1, {"aws-cli/2 linux": (39, 9.0), "aws-cli/1 linux": (0, 0.5)}, 40),
        (50, {"aws-cli/2 linux": (0, 9.0), "aws-cli/1 linux": (0, 0.5)}, 0),
    ],
)
def test_given_held_hours_then_each_client_family_loses_them(
    held: int, known: dict[str, tuple[int, float]], hours: int
) -> None:
    families = {"aws-cli/2 linux": (40, 9.0), "aws-cli/1 linux": (1, 0.5)}
    assert held_out_clients(families, 41, held) == (known, hours)


def test_given_held_slots_then_each_hour_is_taken_from_its_slot_once() -> None:
    known = {"wd09": (50, 9.0), "wd02": (1, 0.1)}
    # Two held hours at 02:00 on weekdays: one was counted there, the other never (nothing below 0)
    assert held_out_slots(known, 51, ["wd02", "wd02", "we03"]) == ({"wd09": (50, 9.0), "wd02": (0, 0.1)}, 50)
    assert held_out_slots(known, 51, []) == (known, 51)


# ---------------------------------------------------------------------------- two countries at once

ROLE_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/session-1"
EC2_US_IP = "3.80.1.9"  # an EC2 address in Virginia


def test_given_a_person_at_home_when_her_key_calls_from_abroad_in_the_same_hour_then_raised(
    tmp_path: Path,
) -> None:
    """The thief with alice's key and her own user agent, on a home line abroad, while she works
    from home: nobody is in two countries at once."""
    # Given alice's history from the US, then her calls from home and, 5 minutes later, her key
    # from BT with her own client (delivered together, read by one run)
    at_home = calls(US_IP, CLI_V2)
    abroad = calls(FOREIGN_IP, CLI_V2, at=ATTACK_AT + timedelta(minutes=5))

    # When replayed with an ASN database that knows both as access networks
    alerts = replayed(tmp_path, history() + at_home + abroad, resolver({US_IP: COMCAST}))

    # Then the BT alert carries the factor and pages
    (alert,) = alerts
    assert alert["location"] == "BT"
    assert [e["factor"] for e in alert["evidence"]] == ["concurrent_use"]
    assert "also called from US" in alert["evidence"][0]["text"]
    assert alert["severity"] == "high"


@pytest.mark.parametrize(
    ("home_ip", "abroad_ip", "gap"),
    [
        (US_IP, FOREIGN_IP, timedelta(hours=3)),  # she flew: hours apart
        (EC2_US_IP, FOREIGN_IP, timedelta(minutes=5)),  # her own script on EC2 at home runs on
        (US_IP, VPN_IP, timedelta(minutes=5)),  # she is on the VPN gateway as well as her home line
    ],
    ids=["hours-apart", "own-script-on-ec2", "on-the-vpn"],
)
def test_given_a_traveller_her_script_or_the_vpn_when_two_countries_are_near_in_time_then_no_factor(
    tmp_path: Path, home_ip: str, abroad_ip: str, gap: timedelta
) -> None:
    # Given alice's calls from home_ip, then from abroad_ip after gap
    geo = resolver({US_IP: COMCAST, EC2_US_IP: AMAZON, VPN_IP: AMAZON})
    geo.countries[EC2_US_IP] = "US"
    records = history() + calls(home_ip, CLI_V2) + calls(abroad_ip, CLI_V2, at=ATTACK_AT + gap)

    # When replayed
    alerts = replayed(tmp_path, records, geo)

    # Then the alert from abroad has no concurrent use
    (alert,) = alerts
    assert alert["location"] == geo.countries[abroad_ip]
    assert "concurrent_use" not in [e["factor"] for e in alert["evidence"]]


def test_given_a_role_used_from_two_countries_at_once_then_no_factor(tmp_path: Path) -> None:
    """A role is whoever assumes it: two engineers in two countries are no stolen key."""
    # Given a role's sessions from the US for days, then from the US and from BT in the same hour
    records = (
        history(ROLE_SESSION)
        + calls(US_IP, CLI_V2, ROLE_SESSION)
        + calls(FOREIGN_IP, CLI_V2, ROLE_SESSION, at=ATTACK_AT + timedelta(minutes=5))
    )

    # When replayed
    alerts = replayed(tmp_path, records, resolver({US_IP: COMCAST}))

    # Then the role's alert has no concurrent use
    (alert,) = alerts
    assert alert["evidence"] == []


def test_given_identities_when_asked_whether_one_person_then_users_and_identity_center_only() -> None:
    assert is_person(ALICE)
    assert is_person("sso:alice@example.com")
    assert not is_person(f"arn:aws:iam::{ACCOUNT}:role/deployer")
    assert not is_person(f"arn:aws:iam::{ACCOUNT}:root")


def test_given_hours_when_judged_then_concurrent_only_within_an_hour() -> None:
    assert concurrent_evidence({100}, {"US": {101}}) is not None
    assert concurrent_evidence({100}, {"US": {100}, "DE": {99}}) is not None
    assert concurrent_evidence({100}, {"US": {102}}) is None
    assert concurrent_evidence({100}, {}) is None


# DE, where carol, dave and erin live, scores about 86 for alice: under this threshold.
STRICT = RunOptions(policy=ScoringPolicy(threshold=95.0))
DE_COLLEAGUES = [r for arn in (CAROL, DAVE, ERIN) for r in history(arn, DE_IP)]


def test_given_a_country_under_the_threshold_when_the_person_is_at_home_at_the_same_time_then_it_alerts(
    tmp_path: Path,
) -> None:
    """A hijacked session used from a colleague's country scores under the threshold (the
    organization works there), with the victim's own agent and everyday methods. The victim at
    home in the same hour is what gives it away."""
    # Given alice's history from the US, then, in one run, her calls from home and from DE
    records = (
        history()
        + DE_COLLEAGUES
        + calls(US_IP, CLI_V2)
        + calls(DE_IP, CLI_V2, at=ATTACK_AT + timedelta(minutes=5))
    )

    # When replayed with a threshold no group here reaches
    alerts = replayed(tmp_path, records, resolver({US_IP: COMCAST}), STRICT)

    # Then DE alerts for two countries at once, its explanation saying it was under the threshold
    (alert,) = alerts
    assert alert["location"] == "DE"
    assert [e["factor"] for e in alert["evidence"]] == ["concurrent_use"]
    assert alert["score"] < 95.0
    assert alert["severity"] == raised(rarity_severity(alert["score"]), 1)
    assert "under the threshold 95" in alert["explanation"]
    assert alert["rule"]["threshold"] == 95.0


@pytest.mark.parametrize(
    ("home_ip", "gap", "history_hours"),
    [
        (US_IP, timedelta(hours=9), 40),  # she flew (a flight's 9 hours): read by another run
        (EC2_US_IP, timedelta(minutes=5), 40),  # her script on EC2 at home
        (US_IP, timedelta(minutes=5), 3),  # a new user: too little history to know her countries
    ],
    ids=["hours-apart", "own-script-on-ec2", "new-user"],
)
def test_given_a_country_under_the_threshold_without_a_second_person_then_no_alert(
    tmp_path: Path, home_ip: str, gap: timedelta, history_hours: int
) -> None:
    # Given alice's calls from home_ip, then from DE after gap
    geo = resolver({US_IP: COMCAST, EC2_US_IP: AMAZON})
    geo.countries[EC2_US_IP] = "US"
    records = (
        history(hours=history_hours)
        + DE_COLLEAGUES
        + calls(home_ip, CLI_V2)
        + calls(DE_IP, CLI_V2, at=ATTACK_AT + gap)
    )

    # When replayed with a threshold no group reaches, Then no alert
    assert replayed(tmp_path, records, geo, STRICT) == []


# ------------------------------------------------------------- two countries at once, across runs


@pytest.mark.parametrize("threshold", [None, 95.0], ids=["above-the-threshold", "under-the-threshold"])
def test_given_her_calls_from_home_read_by_the_run_before_when_her_key_calls_from_abroad_then_raised(
    tmp_path: Path, threshold: float | None
) -> None:
    """Which run reads a file is the delivery's timing, not the thief's doing: alice at home at
    02:35, read by the 03:00 run; her key from abroad at 03:05, read by the 03:30 run. Half an hour
    apart is still nobody's journey (the same-run rule missed it)."""
    # Given alice's history from the US, her calls from home 25 minutes before her key's from
    # abroad (BT; DE, a colleague's country, under the strict threshold), in files two runs read
    abroad_ip = FOREIGN_IP if threshold is None else DE_IP
    records = (
        history()
        + DE_COLLEAGUES
        + calls(US_IP, CLI_V2, at=ATTACK_AT - timedelta(minutes=25))
        + calls(abroad_ip, CLI_V2, at=ATTACK_AT + timedelta(minutes=5))
    )
    options = STRICT if threshold is not None else None

    # When replayed with an ASN database that knows both as access networks
    alerts = replayed(tmp_path, records, resolver({US_IP: COMCAST}), options)

    # Then the alert from abroad carries the factor (under the threshold: alerts for it)
    (alert,) = alerts
    assert alert["location"] == ("BT" if threshold is None else "DE")
    assert [e["factor"] for e in alert["evidence"]] == ["concurrent_use"]
    assert "also called from US" in alert["evidence"][0]["text"]
    assert alert["severity"] == raised(rarity_severity(alert["score"]), 1)


@pytest.mark.parametrize(
    ("home_ip", "gap"),
    [
        (US_IP, timedelta(hours=3)),  # hours apart, read by runs hours apart (impossible travel: below)
        (EC2_US_IP, timedelta(minutes=30)),  # her script on EC2 at home, read by the run before
        (VPN_IP, timedelta(minutes=30)),  # on the VPN gateway (DE) before, her home line after
    ],
    ids=["hours-apart", "own-script-on-ec2", "on-the-vpn"],
)
def test_given_an_earlier_runs_calls_from_a_hosting_address_or_hours_before_then_no_factor(
    tmp_path: Path, home_ip: str, gap: timedelta
) -> None:
    """What the run before recorded of her is only her calls from access networks: her own script
    on a cloud instance and the organization's VPN gateway are no second person."""
    # Given alice's history from the US and from DE (she uses the VPN), her calls from home_ip, then
    # from BT after gap (another run)
    geo = resolver({US_IP: COMCAST, EC2_US_IP: AMAZON, VPN_IP: AMAZON})
    geo.countries[EC2_US_IP] = "US"
    at = ATTACK_AT + timedelta(minutes=5)
    records = history() + history(ip=VPN_IP, hours=20) + calls(home_ip, CLI_V2, at=at - gap)
    records += calls(FOREIGN_IP, CLI_V2, at=at)

    # When replayed
    alerts = replayed(tmp_path, records, geo)

    # Then the BT alert has no concurrent use
    (alert,) = alerts
    assert alert["location"] == "BT"
    assert "concurrent_use" not in [e["factor"] for e in alert["evidence"]]


# ---------------------------------------------------------------------------------- impossible travel

CA_IP = "24.48.0.1"  # a Canadian home line (Videotron)
HOUR = 498_788  # 2026-11-25 20:00 UTC, in hours since the epoch
KM = {("US", "BT"): 7300, ("CA", "BT"): 7000, ("US", "CA"): 0, ("US", "DE"): 4700}


def _km(a: str, b: str) -> int | None:
    return 0 if a == b else KM.get((a, b), KM.get((b, a)))


@pytest.mark.parametrize(
    ("whereabouts", "found"),
    [
        ({"called": {"US": {HOUR - 3}}}, True),  # 3 buckets apart: at most 4 hours, 4,000 km < 7,300
        ({"called": {"US": {HOUR - 6}}}, True),  # at most 7 hours: 7,000 km < 7,300
        ({"called": {"US": {HOUR - 7}}}, False),  # at most 8 hours: an airliner could have made it
        ({"called": {"US": {HOUR + 2}}}, True),  # after the calls: back home too soon
        ({"signed in": {"CA": {HOUR - 1}}}, True),
        ({"called": {"BT": {HOUR - 1}}}, False),  # the calls' own country
        ({"called": {"XX": {HOUR}}}, False),  # a country the table lacks: nothing known
        ({"called": {}, "signed in": {}}, False),
    ],
    ids=["3h", "6h", "7h", "after", "signed-in", "own-country", "unknown", "nothing"],
)
def test_given_whereabouts_when_judged_then_only_a_journey_faster_than_an_airliner_is_impossible(
    whereabouts: dict[str, dict[str, set[int]]], found: bool
) -> None:
    # Given calls from BT in HOUR, When the person's other whereabouts are judged
    evidence = travel_evidence("BT", {HOUR}, whereabouts, _km)

    # Then only a journey over TRAVEL_KMH is impossible
    assert (evidence is not None) is found
    if evidence is not None:
        assert evidence.factor == "impossible_travel"
        assert evidence.raises == 1


def test_given_neighbours_in_the_same_hour_then_never_impossible() -> None:
    """A commuter's office across the border, a home line geolocated there: 0 km apart."""
    assert travel_evidence("CA", {HOUR}, {"called": {"US": {HOUR}}}, _km) is None


def test_given_the_evidence_then_it_says_where_when_and_how_far() -> None:
    evidence = travel_evidence("BT", {HOUR, HOUR + 1}, {"signed in": {"US": {HOUR - 2, HOUR - 5}}}, _km)
    assert evidence is not None
    assert evidence.text == (
        "impossible travel: the same person signed in from US (2026-11-25 18:00 UTC, a consumer or "
        "business network), 2 hours from these calls from BT; the two countries are at least 7,300 km "
        "apart, more than 1,000 km an hour covers in 3 hours"
    )


def test_given_the_shipped_table_then_neighbours_are_0_and_continents_apart() -> None:
    # Given the table shipped with trailgeo
    table = country_distances()

    # Then neighbours, and countries an hour's flight apart, are never too far
    for a, b in [("DE", "NL"), ("US", "CA"), ("GB", "IE"), ("FR", "ES"), ("US", "MX"), ("IN", "PK")]:
        assert table.km(a, b) == 0, (a, b)
    # and continents are thousands of km apart, whichever way round
    for a, b in [("US", "IN"), ("DE", "JP"), ("BR", "JP"), ("CA", "IN"), ("US", "VN")]:
        km = table.km(a, b)
        assert km is not None, (a, b)
        assert km >= 6000, (a, b, km)
        assert table.km(b, a) == km
    assert table.km("DE", "DE") == 0
    assert table.km("DE", "ZZ") is None
    assert "ZZ" not in table
    assert "DE" in table


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"countries": ["DE", "FR"], "distances": [[1]], "unit_km": 100},  # a row missing
        {"countries": ["DE", "FR"], "distances": [[1], [2]], "unit_km": 100},  # the last row not empty
        {"countries": ["DE", "FR"], "distances": [[-1], []], "unit_km": 100},
        {"countries": ["DEU", "FR"], "distances": [[1], []], "unit_km": 100},
        {"countries": ["DE", "FR"], "distances": [[1], []], "unit_km": 0},
        [],
    ],
)
def test_given_a_malformed_table_then_a_clear_error(document: Any) -> None:
    with pytest.raises(ValueError, match="country distances"):
        CountryDistances(document)


def test_given_her_calls_from_home_hours_before_her_key_calls_from_far_away_then_raised(
    tmp_path: Path,
) -> None:
    """Three hours after her last call from home in the US, her key calls from Bhutan: no flight
    does that. A run apart, and hours apart, so not "two countries at once"."""
    # Given alice's history from the US, her calls from home, then her key's from BT 3 hours later
    records = history() + calls(US_IP, CLI_V2, at=ATTACK_AT - timedelta(hours=3))
    records += calls(FOREIGN_IP, CLI_V2)

    # When replayed with an ASN database that knows her home line, with the factor and without
    alerts = replayed(tmp_path, records, resolver({US_IP: COMCAST}))
    without = replayed(
        tmp_path / "without",
        records,
        resolver({US_IP: COMCAST}),
        RunOptions(factors=FACTORS - {"impossible_travel"}),
    )

    # Then the alert from abroad carries the factor, one level up; without it, the rarity alone
    (alert,) = alerts
    assert alert["location"] == "BT"
    assert [e["factor"] for e in alert["evidence"]] == ["impossible_travel"]
    assert "called from US" in alert["evidence"][0]["text"]
    assert alert["severity"] == raised(rarity_severity(alert["score"]), 1)
    (plain_alert,) = without
    assert plain_alert["evidence"] == []
    assert plain_alert["severity"] == rarity_severity(plain_alert["score"])


@pytest.mark.parametrize(
    ("home_ip", "gap"),
    [
        (US_IP, timedelta(hours=9)),  # long enough to have flown
        (EC2_US_IP, timedelta(hours=3)),  # her script on a cloud instance: nobody's whereabouts
        (CA_IP, timedelta(hours=3)),  # her other home, in Canada, and BT 3 hours later: raised
    ],
    ids=["could-have-flown", "own-script-on-ec2", "from-canada"],
)
def test_given_her_earlier_calls_when_a_journey_was_possible_or_from_a_server_then_no_factor(
    tmp_path: Path, home_ip: str, gap: timedelta
) -> None:
    # Given alice's history from the US and CA, her calls from home_ip, then from BT after gap
    geo = resolver({US_IP: COMCAST, EC2_US_IP: AMAZON, CA_IP: AsnInfo(5769, "Videotron Telecom Ltee")})
    geo.countries.update({EC2_US_IP: "US", CA_IP: "CA"})
    records = history() + history(ip=CA_IP, hours=20) + calls(home_ip, CLI_V2, at=ATTACK_AT - gap)
    records += calls(FOREIGN_IP, CLI_V2)

    # When replayed
    alerts = replayed(tmp_path, records, geo)

    # Then impossible travel only from the Canadian home line 3 hours before
    (alert,) = alerts
    assert alert["location"] == "BT"
    assert ("impossible_travel" in [e["factor"] for e in alert["evidence"]]) is (home_ip == CA_IP)
