"""Elastic's CloudTrail ingest pipeline as an external oracle for the fields we share with it.

For each CloudTrail record Elastic's pipeline tests feed in (``inputs_from_event_original``),
the ECS document Elastic expects (``pipeline/*-expected.json``, matched on ``event.original``)
is compared with what trailgeo decodes, classifies and geolocates. Elastic's ``source.geo`` in
those documents comes from GeoLite2-City-Test.mmdb, so the same database is used here. The
files are Elastic License 2.0: read in place, never copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, require
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.core.aggregate import method_of, principal_of
from trailgeo.core.records import TrailRecord, decode_trail_file
from trailgeo.core.sources import SourceKind, classify_source

pytestmark = pytest.mark.corpus

ORACLE = SHARED_DATA / "ecs-oracle" / "elastic-integrations-cloudtrail"
INPUTS = ORACLE / "inputs_from_event_original"
EXPECTED = ORACLE / "pipeline"


def _cases() -> list[Any]:
    if not INPUTS.is_dir():
        return [pytest.param(None, 0, id="oracle-missing")]
    return [
        pytest.param(path.name, number, id=f"{path.name}:{number}")
        for path in sorted(INPUTS.glob("*.log"))
        for number, line in enumerate(path.read_bytes().splitlines(), start=1)
        if line.strip()
    ]


CASES = _cases()


def _oracle(name: str | None, number: int) -> tuple[bytes, dict[str, Any]]:
    require(INPUTS, "Elastic CloudTrail pipeline test inputs")
    assert name is not None
    line = (INPUTS / name).read_bytes().splitlines()[number - 1]
    expected = json.loads((EXPECTED / f"{name}-expected.json").read_text(encoding="utf-8"))["expected"]
    matches = [doc for doc in expected if doc.get("event", {}).get("original") == line.decode()]
    assert len(matches) == 1, f"{name}:{number}: {len(matches)} expected documents carry this line"
    return line, matches[0]


def _decode_line(line: bytes) -> TrailRecord:
    decoded = decode_trail_file(b'{"Records":[' + line + b"]}")
    assert not decoded.skipped
    assert len(decoded.records) == 1
    return decoded.records[0]


def _get(document: dict[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _or_none(value: str | None) -> str | None:
    """Elastic drops empty strings; so does the comparison."""
    return value or None


@pytest.fixture(scope="module")
def city_geo(city_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(city_test_mmdb)


def test_given_oracle_folder_when_cases_collected_then_all_twelve_records_present() -> None:
    """Given Elastic's pipeline inputs, when collected, then there are the 12 records of the
    README (one per line, ten files), so a shrinking corpus cannot pass silently."""
    require(INPUTS, "Elastic CloudTrail pipeline test inputs")
    assert len(CASES) == 12
    assert len({case.values[0] for case in CASES}) == 10


@pytest.mark.parametrize(("name", "number"), CASES)
def test_given_elastic_input_when_decoded_then_shared_fields_match_elastic_expected_document(
    name: str | None, number: int, city_geo: MaxMindGeoResolver
) -> None:
    """Given one CloudTrail record from Elastic's pipeline tests, when trailgeo decodes,
    classifies and geolocates it, then every field both sides map agrees with Elastic's
    expected ECS document."""
    line, doc = _oracle(name, number)
    record = _decode_line(line)
    identity = record.userIdentity

    assert _get(doc, "event.action") == record.eventName
    assert _get(doc, "event.provider") == record.eventSource
    assert _get(doc, "cloud.region") == record.awsRegion
    assert _get(doc, "user_agent.original") == record.userAgent
    assert _get(doc, "aws.cloudtrail.event_type") == record.eventType
    assert _get(doc, "aws.cloudtrail.recipient_account_id") == record.recipientAccountId
    # The category the Events setting reads: Management in four records (Elastic's PutObject
    # sample among them), Insight in one (no method: skipped as no_method whatever the setting)
    assert _get(doc, "aws.cloudtrail.event_category") == record.eventCategory
    # Elastic's cloud.account.id is userIdentity.accountId; without one, the newer expected
    # documents fall back to recipientAccountId (AWSService AssumeRole) while the older Insight
    # document has none. trailgeo keys alerts on recipientAccountId, else userIdentity.accountId:
    # wherever Elastic names an account, it is the same one.
    elastic_account = _get(doc, "cloud.account.id")
    if identity is not None and identity.accountId:
        assert elastic_account == identity.accountId
    elif elastic_account is not None:
        assert elastic_account == record.recipientAccountId
    if elastic_account is not None:
        assert elastic_account == (record.recipientAccountId or (identity and identity.accountId))

    # The source: the address always, the IP only when it is one, geo only when located.
    assert _get(doc, "source.address") == record.sourceIPAddress
    kind, ip = classify_source(record.sourceIPAddress)
    assert _get(doc, "source.ip") == ip
    elastic_country = _get(doc, "source.geo.country_iso_code")
    ours = city_geo.country(ip) if kind is SourceKind.PUBLIC and ip else None
    assert elastic_country == ours

    # The identity: Elastic omits empty strings (the Identity Center record's "arn": "").
    assert _get(doc, "aws.cloudtrail.user_identity.arn") == _or_none(identity and identity.arn)
    assert _get(doc, "aws.cloudtrail.user_identity.type") == _or_none(identity and identity.type)
    assert _get(doc, "aws.cloudtrail.user_identity.access_key_id") == _or_none(
        identity and identity.accessKeyId
    )
    assert _get(doc, "aws.cloudtrail.user_identity.invoked_by") == _or_none(identity and identity.invokedBy)

    # The principal we count under: Elastic's ARN when it has one, else type:user.id, else type.
    elastic_arn = _get(doc, "aws.cloudtrail.user_identity.arn")
    elastic_type = _get(doc, "aws.cloudtrail.user_identity.type")
    elastic_user_id = _get(doc, "user.id")
    if elastic_arn:
        assert principal_of(record) == elastic_arn
    elif elastic_type and elastic_user_id:
        assert principal_of(record) == f"{elastic_type}:{elastic_user_id}"
    else:
        assert principal_of(record) == (elastic_type or "unknown")

    # A method key exactly when Elastic has both action and provider.
    both = _get(doc, "event.provider") and _get(doc, "event.action")
    assert method_of(record) == (f"{record.eventSource}:{record.eventName}" if both else None)


def test_given_insight_record_when_decoded_then_no_method_source_or_principal_like_elastic() -> None:
    """Given CloudTrail Insight's record (eventSource/eventName only inside insightDetails), when
    decoded, then, as Elastic maps no event.action/provider/source for it, trailgeo has no method
    key, a missing source and principal "unknown", so it would be skipped, never scored."""
    line, doc = _oracle("test-insight-json.log", 1)
    record = _decode_line(line)
    assert _get(doc, "aws.cloudtrail.event_category") == "Insight"
    assert _get(doc, "aws.cloudtrail.flattened.insight_details.eventName") == "AttachUserPolicy"
    assert _get(doc, "event.action") is None
    assert _get(doc, "event.provider") is None
    assert _get(doc, "source") is None
    assert record.eventType == "AwsCloudTrailInsight"
    assert (record.eventName, record.eventSource, record.userIdentity) == (None, None, None)
    assert method_of(record) is None
    assert classify_source(record.sourceIPAddress).kind is SourceKind.MISSING
    assert principal_of(record) == "unknown"
