"""Calls that carry no country: stolen keys used through a VPC endpoint of the attacker's own account
(a private ``sourceIPAddress``: the "sneaky endpoints" technique), and public addresses the GeoIP
database has no country for. Both are scored from a location of their own (``VPCE:<account>``,
``unknown``) instead of being skipped; the organization's own endpoints stay skipped, counted."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import ACCOUNT, ALICE, T0, US_IP, files_by_delivery, record, trail_record, write_tree
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import ReplaySummary, replay
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.alerts import Alert
from trailgeo.core.records import TrailRecord, decode_trail_file
from trailgeo.core.render.asff import asff_finding, default_product_arn
from trailgeo.core.render.chatbot import chatbot_message
from trailgeo.core.render.email import email_body, email_subject
from trailgeo.core.render.slack import slack_message
from trailgeo.core.sources import endpoint_location
from trailgeo.core.tuning import Tuning

ATTACKER = "999988887777"  # the attacker's own AWS account, where their VPC and endpoint live
SISTER = "222233334444"  # another account of the organization, delivering to the same trail
PARTNER = "444455556666"  # a network account the tuning trusts (centralised endpoints)
ENDPOINT = "vpce-0a1b2c3d4e5f60718"
PRIVATE_IP = "10.1.2.3"
NOT_IN_GEOIP = "1.2.3.4"  # public, absent from MaxMind's GeoIP2-Country-Test database
ATTACK_AT = T0 + timedelta(days=10, hours=3)
ATTACK_METHODS = [("s3.amazonaws.com", "GetObject"), ("iam.amazonaws.com", "CreateAccessKey")]


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def baseline() -> list[dict[str, Any]]:
    """Ten days of alice calling DescribeInstances from the US, every 6 hours (40 hourly buckets)."""
    return [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]


def through_endpoint(owner: str | None, **fields: Any) -> list[dict[str, Any]]:
    """alice's keys calling GetObject and CreateAccessKey from a private address behind an endpoint
    owned by ``owner`` (None: CloudTrail names no owner)."""
    extra: dict[str, Any] = {"vpcEndpointId": ENDPOINT, **fields}
    if owner is not None:
        extra["vpcEndpointAccountId"] = owner
    return [
        record(ATTACK_AT + timedelta(minutes=m), source=source, name=name, ip=PRIVATE_IP, **extra)
        for m, (source, name) in enumerate(ATTACK_METHODS * 2)
    ]


def run_replay(
    logs: Path, geo: MaxMindGeoResolver, tuning: Tuning | None = None
) -> tuple[list[dict[str, Any]], ReplaySummary]:
    out = io.StringIO()
    options = RunOptions(tuning=tuning) if tuning is not None else RunOptions()
    summary, _ = replay(logs, geo, JsonLinesAlertSink(out), options)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def test_given_a_victim_with_history_when_stolen_keys_are_used_through_a_foreign_vpc_endpoint_then_it_alerts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given alice's ten days from the US, then her keys used from a private address behind an
    # interface endpoint of the attacker's own account
    write_tree(tmp_path, files_by_delivery(baseline() + through_endpoint(ATTACKER)))

    # When the trail is replayed
    alerts, summary = run_replay(tmp_path, geo)

    # Then one alert, scored from the location of that endpoint, says it is the endpoint of that account
    (alert,) = alerts
    assert alert["location"] == f"VPCE:{ATTACKER}"
    assert "geo" not in alert["source"]  # no country: ECS's country field stays absent
    assert alert["source"]["ip"] == [PRIVATE_IP]
    assert alert["aws"]["cloudtrail"]["vpc_endpoint_id"] == [ENDPOINT]
    assert alert["aws"]["cloudtrail"]["vpc_endpoint_account_id"] == ATTACKER
    assert alert["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE
    assert alert["score"] >= 90
    assert alert["country_new_to_organization"]
    assert alert["sensitive_methods"] == ["iam.amazonaws.com:CreateAccessKey"]
    assert alert["severity"] == "high"
    assert f"from VPC endpoint of account {ATTACKER} are unusual" in alert["explanation"]
    assert f"through a VPC endpoint owned by AWS account {ATTACKER}" in alert["explanation"]
    assert "Location: not a country." in alert["explanation"]
    assert "source_private" not in summary.records_skipped
    assert summary.events_geolocated == 40 + 4


def test_given_a_foreign_endpoint_alert_when_rendered_then_every_channel_names_the_endpoint_account(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given the alert for alice's keys used through the attacker's endpoint
    write_tree(tmp_path, files_by_delivery(baseline() + through_endpoint(ATTACKER)))
    (raw,) = run_replay(tmp_path, geo)[0]
    alert = Alert.model_validate(raw)

    # When it is rendered for e-mail, Slack, AWS Chatbot and Security Hub
    subject, body = email_subject(alert), email_body(alert)
    slack = json.dumps(slack_message(alert), ensure_ascii=False)
    chatbot = json.loads(chatbot_message(alert))
    finding = asff_finding(alert, default_product_arn("aws", "us-east-1", ACCOUNT))

    # Then each says "VPC endpoint of account <attacker>", never a "country VPCE:..."
    label = f"VPC endpoint of account {ATTACKER}"
    assert subject.startswith(f"[{alert.severity.upper()}] Unusual {label} for AWS command: 2 methods by ")
    assert f"From:     {label}  IPs: {PRIVATE_IP} via {ENDPOINT}" in body
    assert label in slack
    assert label in chatbot["content"]["title"]
    assert chatbot["metadata"]["summary"] == f"HIGH: unusual {label} for AWS command"
    assert f"Unusual {label} for AWS command by {ALICE}" == finding["Title"]
    assert label in finding["Description"]
    rendered = " ".join([subject, body, slack, json.dumps(chatbot), json.dumps(finding)])
    assert "country VPCE" not in rendered
    assert "from VPCE:" not in rendered


def test_given_calls_through_the_organizations_own_endpoint_then_no_alert_and_they_are_counted(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given the same calls through an endpoint of the file's own account (its S3 folder), and one
    # call from a private address that names no endpoint owner
    own = through_endpoint(ACCOUNT)
    unnamed = through_endpoint(None)[:1]
    write_tree(tmp_path, files_by_delivery(baseline() + own + unnamed))

    # When the trail is replayed
    alerts, summary = run_replay(tmp_path, geo)

    # Then nothing alerts; the organization's endpoint calls are counted as such, the other stays private
    assert alerts == []
    assert summary.records_skipped == Counter({"source_vpce_own": len(own), "source_private": 1})
    assert summary.events_geolocated == 40


def test_given_an_endpoint_account_trusted_in_the_tuning_then_its_calls_are_the_organizations(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given calls through an endpoint of a central network account, outside the file's own account
    write_tree(tmp_path, files_by_delivery(baseline() + through_endpoint(PARTNER)))
    trusted = Tuning(version=1, trusted_vpc_endpoint_accounts=(PARTNER,))

    # When replayed with that account in trusted_vpc_endpoint_accounts, and without
    alerts, summary = run_replay(tmp_path, geo, trusted)
    untrusted, _ = run_replay(tmp_path, geo)

    # Then the trusted endpoint's calls are skipped and counted; untrusted, they alert
    assert alerts == []
    assert summary.records_skipped == Counter({"source_vpce_own": 4})
    assert [a["location"] for a in untrusted] == [f"VPCE:{PARTNER}"]


def test_given_a_record_naming_another_account_as_endpoint_owner_and_recipient_then_its_folder_decides(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given the sister account delivering its own files (its calls through its own endpoint), and
    # in alice's account's folder calls whose records name the sister account as endpoint owner
    # and recipient: fields of a record, which make no account the organization's
    sisters = [
        record(T0 + timedelta(hours=6 * i), ip=PRIVATE_IP, account=SISTER, vpcEndpointAccountId=SISTER)
        for i in range(3)
    ]
    claimed = through_endpoint(SISTER, recipientAccountId=SISTER)
    write_tree(tmp_path, files_by_delivery(baseline() + claimed))
    write_tree(tmp_path, files_by_delivery(sisters, account=SISTER))

    # When the trail is replayed
    alerts, summary = run_replay(tmp_path, geo)

    # Then the calls in alice's folder are judged on that folder's account: they alert, from the
    # sister's endpoint; the sister's calls in its own folder are its own endpoint's
    assert [a["location"] for a in alerts] == [f"VPCE:{SISTER}"]
    assert summary.records_skipped == Counter({"source_vpce_own": len(sisters)})


def test_given_a_trusted_private_network_when_a_foreign_endpoint_uses_its_addresses_then_it_still_alerts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given 10.0.0.0/8 trusted (the corporate network) and the attacker's VPC numbered in it too
    # (records without an endpoint id: the evidence is the bare private address)
    write_tree(tmp_path, files_by_delivery(baseline() + through_endpoint(ATTACKER, vpcEndpointId=None)))
    tuning = Tuning.model_validate({"version": 1, "trusted_cidrs": ["10.0.0.0/8"]})

    # When the trail is replayed
    alerts, _ = run_replay(tmp_path, geo, tuning)

    # Then the trusted network does not cover another account's VPC
    assert [(a["location"], a["source"]["ip"]) for a in alerts] == [(f"VPCE:{ATTACKER}", [PRIVATE_IP])]


def test_given_a_public_address_absent_from_the_geoip_database_then_it_is_scored_as_an_unknown_location(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given alice's ten days from the US, then her keys used from an address the database lacks
    attack = [
        record(ATTACK_AT + timedelta(minutes=m), source=source, name=name, ip=NOT_IN_GEOIP)
        for m, (source, name) in enumerate(ATTACK_METHODS)
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + attack))

    # When the trail is replayed
    alerts, summary = run_replay(tmp_path, geo)

    # Then it alerts from the location "unknown", said to be no country; still counted as geo_unknown
    (alert,) = alerts
    assert alert["location"] == "unknown"
    assert "geo" not in alert["source"]
    assert alert["source"]["ip"] == [NOT_IN_GEOIP]
    assert alert["score"] >= 90
    assert "from unknown location (address not in the GeoIP database) are unusual" in alert["explanation"]
    assert "The GeoIP database has no country for the address(es)" in alert["explanation"]
    severity = alert["severity"].upper()
    assert email_subject(Alert.model_validate(alert)).startswith(
        f"[{severity}] Unusual location for AWS command: 2 methods from an address not in GeoIP by "
    )
    assert summary.records_skipped == Counter({"geo_unknown": 2})
    assert summary.events_geolocated == 40 + 2


def _records(*bodies: dict[str, Any]) -> list[TrailRecord]:
    return [trail_record(body) for body in bodies]


def _aggregate(geolocate: Any = None) -> RunAggregate:
    return RunAggregate(
        geolocate=geolocate or (lambda ip: "US" if ip == US_IP else None),
        trusted_endpoint_accounts=frozenset({PARTNER}),
    )


def test_given_a_file_mixing_sources_when_counted_alone_or_with_others_then_the_same_books_balance() -> None:
    # Given one file of the organization's account: public calls, calls through its own, a
    # trusted and a foreign endpoint (one without a method), a private address with no owner,
    # and an owner value that is no account id (only a forged record has one)
    when = datetime(2026, 10, 11, 3, 0, tzinfo=UTC)
    public = [record(when, ip=US_IP) for _ in range(2)]
    own = through_endpoint(ACCOUNT)[:2]
    trusted = through_endpoint(PARTNER)[:1]
    foreign = [*through_endpoint(ATTACKER)[:2], {**through_endpoint(ATTACKER)[0], "eventSource": None}]
    forged = through_endpoint("x" * 5000)[:1]
    unnamed = through_endpoint(None)[:1]
    file = _records(*public, *own, *trusted, *foreign, *forged, *unnamed)
    other = _records(record(when, ip=US_IP, account=SISTER))

    # When it is added alone, and together with another account's file
    alone = _aggregate()
    skipped = alone.add_records(file, folder=ACCOUNT)
    together = _aggregate()
    each = together.add_files([file, other], folders=[ACCOUNT, SISTER])

    # Then the foreign and forged calls are geolocated from their endpoints, the others skipped
    # by reason, the same either way, and every event is either geolocated or skipped
    assert skipped == each[0] == Counter({"source_vpce_own": 3, "source_private": 1, "no_method": 1})
    assert alone.geolocated == len(file) - 5 == together.geolocated - 1
    assert alone.geolocated + sum(skipped.values()) == alone.events == len(file)
    locations = {country for (_, _, country) in alone.groups}
    assert locations == {"US", f"VPCE:{ATTACKER}", "VPCE:other"}
    assert endpoint_location("x" * 5000) == "VPCE:other"
    assert alone.counters == {k: v for k, v in together.counters.items() if k in alone.counters}


def test_given_a_malformed_record_with_an_endpoint_owner_when_salvaged_then_the_owner_is_kept() -> None:
    # Given a file whose one record has a field of the wrong type (the slow path), beside a good one
    good = record(ATTACK_AT, ip=PRIVATE_IP, vpcEndpointAccountId=ATTACKER)
    bad = {**good, "userAgent": 5, "eventID": "bad-1"}
    data = json.dumps({"Records": [good, bad]}).encode()

    # When it is decoded
    decoded = decode_trail_file(data)

    # Then both records keep the endpoint's owner
    assert [r.vpcEndpointAccountId for r in decoded.records] == [ATTACKER, ATTACKER]
    assert decoded.skipped == Counter({"field_wrong_type": 1})
