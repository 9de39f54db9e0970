"""Locations that are no country in the alert's ECS document and in every rendering.

Calls through another account's VPC endpoint are scored from ``VPCE:<account>`` and public addresses
the GeoIP database lacks from ``unknown`` (core/sources.py). Neither is an ISO 3166 code, so neither
may reach ``source.geo.country_iso_code``, nor anything but an address ``source.ip``: SIEM pipelines
map those as a country and as ECS's ``ip`` type, and reject or misread a document that breaks them.
Elastic's own CloudTrail pipeline documents (../shared/data, read in place) are the oracle for what
the shared fields hold.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.builders import ALICE, T0, US_IP, files_by_delivery, record, write_tree
from tests.conftest import SHARED_DATA, require
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import replay
from trailgeo.core.alerts import Alert
from trailgeo.core.render.asff import asff_finding, default_product_arn
from trailgeo.core.render.chatbot import chatbot_notification
from trailgeo.core.render.email import email_body, email_subject
from trailgeo.core.render.slack import slack_message

ELASTIC_EXPECTED = SHARED_DATA / "ecs-oracle" / "elastic-integrations-cloudtrail" / "pipeline"
ATTACKER = "999988887777"  # the attacker's own account, owner of the VPC endpoint
ENDPOINT = "vpce-0a1b2c3d4e5f60718"
PRIVATE_IP = "10.1.2.3"
NOT_IN_GEOIP = "1.2.3.4"  # public, absent from MaxMind's GeoIP2-Country-Test database
ATTACK_AT = T0 + timedelta(days=10, hours=3)
ATTACK = [("s3.amazonaws.com", "GetObject"), ("iam.amazonaws.com", "CreateAccessKey")]


def _alert(tmp_path: Path, mmdb: Path, ip: str, **fields: Any) -> dict[str, Any]:
    """The one alert for alice's keys used from ``ip`` after ten days from the US."""
    history = [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]
    attack = [
        record(ATTACK_AT + timedelta(minutes=m), source=source, name=name, ip=ip, **fields)
        for m, (source, name) in enumerate(ATTACK)
    ]
    write_tree(tmp_path, files_by_delivery(history + attack))
    out = io.StringIO()
    replay(tmp_path, MaxMindGeoResolver(mmdb), JsonLinesAlertSink(out), RunOptions())
    (alert,) = [json.loads(line) for line in out.getvalue().splitlines()]
    return dict(alert)


@pytest.fixture
def endpoint_alert(tmp_path: Path, country_test_mmdb: Path) -> dict[str, Any]:
    fields = {"vpcEndpointId": ENDPOINT, "vpcEndpointAccountId": ATTACKER}
    return _alert(tmp_path / "vpce", country_test_mmdb, PRIVATE_IP, **fields)


@pytest.fixture
def unknown_alert(tmp_path: Path, country_test_mmdb: Path) -> dict[str, Any]:
    return _alert(tmp_path / "unknown", country_test_mmdb, NOT_IN_GEOIP)


def _leaves(document: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every scalar; a list's items under the list's path, as ECS reads them."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(document, list):
        for item in document:
            yield from _leaves(item, path)
    else:
        yield path, document


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# The fields both documents carry whose values consumers parse, and the form Elastic writes.
ECS_FORMS: dict[str, Callable[[Any], bool]] = {
    "source.geo.country_iso_code": lambda v: isinstance(v, str) and re.fullmatch(r"[A-Z]{2}", v) is not None,
    "source.ip": _is_ip,
    "cloud.provider": lambda v: v == "aws",
}


def _elastic_documents() -> list[dict[str, Any]]:
    require(ELASTIC_EXPECTED, "Elastic CloudTrail pipeline expected documents")
    return [
        doc
        for path in sorted(ELASTIC_EXPECTED.glob("*-expected.json"))
        for doc in json.loads(path.read_text(encoding="utf-8"))["expected"]
    ]


@pytest.mark.corpus
@pytest.mark.parametrize("which", ["endpoint_alert", "unknown_alert"])
def test_given_an_alert_from_a_location_that_is_no_country_then_its_ecs_fields_read_as_elastic_s(
    which: str, request: pytest.FixtureRequest
) -> None:
    """Given an alert from a foreign VPC endpoint, or from an address the GeoIP database lacks,
    when its document is laid beside Elastic's expected CloudTrail documents, then every field both
    carry holds the same kind of value: a country field only with an ISO 3166 alpha-2 code (here:
    absent), ``source.ip`` only addresses, the provider ``aws``."""
    alert: dict[str, Any] = request.getfixturevalue(which)
    elastic = [leaf for doc in _elastic_documents() for leaf in _leaves(doc)]
    ours = list(_leaves(alert))

    # The oracle holds each form (so that the check below means something) ...
    for field, form in ECS_FORMS.items():
        values = [value for path, value in elastic if path == field]
        assert values, f"Elastic's documents have no {field}"
        assert all(form(value) for value in values), field
    # ... and so does the alert, wherever it carries the field
    for path, value in ours:
        if path in ECS_FORMS:
            assert ECS_FORMS[path](value), f"{path} = {value!r} is not what Elastic writes there"
    # The shared fields have Elastic's types (no number where Elastic has a string)
    elastic_types = {path: type(value) for path, value in elastic}
    for path, value in ours:
        if path in elastic_types:
            assert type(value) is elastic_types[path], path
    assert "geo" not in alert["source"]
    assert alert["location"] in {f"VPCE:{ATTACKER}", "unknown"}


def test_given_a_foreign_endpoint_alert_then_the_endpoint_facts_are_fields_of_their_own(
    endpoint_alert: dict[str, Any],
) -> None:
    """Given alice's keys used through the attacker's endpoint, when the alert is written, then the
    location, the endpoint and its owner are fields (no country, no endpoint in ``source.ip``)."""
    assert endpoint_alert["location"] == f"VPCE:{ATTACKER}"
    assert endpoint_alert["source"] == {"ip": [PRIVATE_IP]}
    assert endpoint_alert["aws"]["cloudtrail"]["vpc_endpoint_id"] == [ENDPOINT]
    assert endpoint_alert["aws"]["cloudtrail"]["vpc_endpoint_account_id"] == ATTACKER
    assert Alert.model_validate(endpoint_alert).country == f"VPCE:{ATTACKER}"


def test_given_a_country_alert_then_its_country_is_ecs_s_and_no_endpoint_field_appears(
    tmp_path: Path, country_test_mmdb: Path
) -> None:
    """Given alice's keys used from Bhutan, when the alert is written, then the country is both
    the location and ECS's country code, and no endpoint field is written."""
    alert = _alert(tmp_path, country_test_mmdb, "67.43.156.1")
    assert (alert["location"], alert["source"]["geo"]) == ("BT", {"country_iso_code": "BT"})
    assert set(alert["aws"]["cloudtrail"]) == {"user_identity"}


@pytest.mark.parametrize(
    ("location", "country"),
    [
        ("VPCE:999988887777", "VPCE:999988887777"),  # the value alerts carried before
        ("unknown", "unknown"),
        ("unknown", "US"),  # a country that is not the one scored
        ("DE", None),  # a country left out
        ("DE", "de"),
    ],
)
def test_given_a_document_whose_country_field_is_not_its_location_s_iso_code_then_it_is_refused(
    endpoint_alert: dict[str, Any], location: str, country: str | None
) -> None:
    """Given an alert document (a forged outbox item or message) whose country field holds
    something other than its location's ISO code, when it is read, then it is no alert."""
    document = {
        **endpoint_alert,
        "location": location,
        "aws": {"cloudtrail": {"user_identity": {"arn": ALICE}}},
    }
    document["source"] = {"ip": [PRIVATE_IP], **({"geo": {"country_iso_code": country}} if country else {})}

    with pytest.raises(ValidationError):
        Alert.model_validate(document)


def test_given_an_alert_queued_before_locations_had_a_field_then_it_reads_back_in_the_new_form(
    endpoint_alert: dict[str, Any], unknown_alert: dict[str, Any]
) -> None:
    """Given alerts written by the previous version (still pending in an outbox): the location in
    the country field and the endpoint beside the address, when read, then they read as today's."""
    cloudtrail = {"user_identity": endpoint_alert["aws"]["cloudtrail"]["user_identity"]}
    old_endpoint = {key: value for key, value in endpoint_alert.items() if key != "location"}
    old_endpoint["source"] = {
        "geo": {"country_iso_code": f"VPCE:{ATTACKER}"},
        "ip": [f"{PRIVATE_IP} via {ENDPOINT}"],
    }
    old_endpoint["aws"] = {"cloudtrail": cloudtrail}
    old_unknown = {key: value for key, value in unknown_alert.items() if key != "location"}
    old_unknown["source"] = {"geo": {"country_iso_code": "unknown"}, "ip": [NOT_IN_GEOIP]}

    assert Alert.model_validate(old_endpoint) == Alert.model_validate(endpoint_alert)
    assert Alert.model_validate(old_unknown) == Alert.model_validate(unknown_alert)


def _renderings(alert: Alert) -> dict[str, str]:
    finding = asff_finding(alert, default_product_arn("aws", "us-east-1", "111122223333"))
    return {
        "email subject": email_subject(alert),
        "email body": email_body(alert),
        "slack": json.dumps(slack_message(alert), ensure_ascii=False),
        "chatbot": json.dumps(chatbot_notification(alert), ensure_ascii=False),
        "security hub": json.dumps(finding, ensure_ascii=False),
    }


def test_given_an_alert_from_an_address_not_in_the_geoip_database_then_every_channel_says_so(
    unknown_alert: dict[str, Any],
) -> None:
    """Given the alert from an address the GeoIP database lacks, when rendered for e-mail, Slack,
    AWS Chatbot and Security Hub, then each says the address is not in the GeoIP database and
    none names "unknown" as if it were a country."""
    alert = Alert.model_validate(unknown_alert)
    rendered = _renderings(alert)

    for channel, text in rendered.items():
        assert "not in GeoIP" in text or "not in the GeoIP database" in text, channel
        assert "country unknown" not in text, channel
        assert not re.search(r"from unknown(?! location \(address not in the GeoIP database\))", text), (
            channel
        )
    assert (
        f"From:     unknown location (address not in the GeoIP database)  IPs: {NOT_IN_GEOIP}"
        in (rendered["email body"])
    )
    fields = asff_finding(alert, default_product_arn("aws", "us-east-1", "111122223333"))["ProductFields"]
    assert "trailgeo/Country" not in fields
    assert fields["trailgeo/Location"] == "unknown location (address not in the GeoIP database)"


def test_given_a_foreign_endpoint_alert_then_every_channel_says_through_which_endpoint_of_which_account(
    endpoint_alert: dict[str, Any],
) -> None:
    """Given the alert for calls through the attacker's endpoint, when rendered, then each channel
    names the VPC endpoint of that account and the endpoint id beside the address, never a country."""
    alert = Alert.model_validate(endpoint_alert)
    rendered = _renderings(alert)

    for channel, text in rendered.items():
        assert f"VPC endpoint of account {ATTACKER}" in text, channel
        assert "VPCE:" not in text, channel
        if channel != "email subject":  # 100 characters: the account, not the endpoint id
            assert ENDPOINT in text, channel
    assert f"IPs: {PRIVATE_IP} via {ENDPOINT}" in rendered["email body"]
    fields = asff_finding(alert, default_product_arn("aws", "us-east-1", "111122223333"))["ProductFields"]
    assert "trailgeo/Country" not in fields
    assert (fields["trailgeo/VpcEndpointIds"], fields["trailgeo/VpcEndpointAccountId"]) == (
        ENDPOINT,
        ATTACKER,
    )
