"""The scheduled Lambda handler against moto: S3 -> DynamoDB -> SNS (read through SQS)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.aws import (
    BUCKET,
    REGION,
    Deployment,
    FakeLambdaContext,
    create_deployment,
    load_function,
    receive_alerts,
    set_environment,
)
from tests.builders import ALICE, BT_IP, T0, US_IP, delivery_key, files_by_delivery, gz_file, record
from tests.conftest import EVENTS
from trailgeo.adapters.dynamodb import DynamoLedger

ORG = "o-a1b2c3d4e5"


def load_handler_module() -> ModuleType:
    return load_function("detector")


def scheduled_event(time: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "scheduled.json").read_text())
    event["time"] = time
    return event


@pytest.fixture
def deployment(aws: Any, monkeypatch: pytest.MonkeyPatch, country_test_mmdb: Path) -> Deployment:
    deployed = create_deployment(aws)
    set_environment(monkeypatch, deployed, str(country_test_mmdb), LEARNING_DAYS="0", LOOKBACK_MINUTES="1440")
    return deployed


def put_files(session: Any, files: dict[str, bytes]) -> None:
    s3 = session.client("s3", region_name=REGION)
    for key, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def table_items(session: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    dynamodb = session.client("dynamodb", region_name=REGION)
    items = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            items[(item["pk"]["S"], item["sk"]["S"])] = item
    return items


def test_given_a_trail_in_s3_when_the_schedule_fires_then_counts_land_in_dynamodb_and_alerts_on_sns(
    aws: Any, deployment: Deployment
) -> None:
    # Given: 24 hourly buckets of alice from the US (organization trail layout), plus noise to skip
    baseline = [record(T0 + timedelta(hours=h, minutes=3), ip=US_IP) for h in range(24)]
    put_files(aws, files_by_delivery(baseline, org=ORG))
    put_files(
        aws,
        {
            f"AWSLogs/{ORG}/111122223333/CloudTrail-Digest/us-east-1/2026/10/01/"
            "111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20261001T010000Z.json.gz": gz_file([]),
            f"AWSLogs/{ORG}/111122223333/CloudTrail/us-east-1/2026/10/01/not-a-trail-file.txt": b"hello",
        },
    )
    handler = load_handler_module()
    context = FakeLambdaContext()

    # When: a run looks back over the whole baseline day, then the attacker's file arrives
    first = handler.lambda_handler(scheduled_event("2026-10-02T00:15:00Z"), context)
    attack_at = T0 + timedelta(hours=25)
    attack = [
        record(
            attack_at + timedelta(minutes=m), ip=BT_IP, name=name, source=src, agent="python-requests/2.31"
        )
        for m, (src, name) in enumerate(
            [("ec2.amazonaws.com", "DescribeInstances"), ("iam.amazonaws.com", "ListUsers")]
        )
    ]
    attack_key = delivery_key(attack_at + timedelta(minutes=10), org=ORG)
    put_files(aws, {attack_key: gz_file(attack)})
    runtime = handler.runtime()
    second = handler.lambda_handler(scheduled_event("2026-10-02T01:15:00Z"), context)

    # Then: the baseline was counted once per hourly bucket, nothing alerted on it
    assert runtime is handler.runtime()  # built once per execution environment
    assert first["files_read"] == 24
    assert first["events_geolocated"] == 24
    assert first["alerts_raised"] == 0
    assert first["keys_skipped"] == {"key_other": 1, "prefix_cloudtrail-digest": 1}
    items = table_items(aws, deployment.table)
    pair = items[("M#ec2.amazonaws.com:DescribeInstances", "C#US")]
    assert pair["b"]["N"] == "24"
    assert "ev" not in pair  # no event tally: nothing in the table counts a re-delivery twice
    ledger = {k: v for k, v in items.items() if k[0].startswith("F#")}
    assert len(ledger) == 25  # one claim per file, done with its closed run record
    runs = {k[1]: v for k, v in items.items() if k[0] == "RUN"}
    assert {v["st"]["S"] for v in runs.values()} == {"closed"}
    assert {v["rid"]["S"] for v in ledger.values()} <= set(runs)
    done = DynamoLedger(aws.client("dynamodb"), deployment.table).status([k[0][2:] for k in ledger])
    assert {entry.state for entry in done.values()} == {"done"}

    # Then: the attack run published one alert with the ECS fields and filterable attributes
    assert second["alerts_raised"] == 1
    assert second["alerts_published"] == 1
    envelopes = receive_alerts(aws, deployment.queue_url)
    assert len(envelopes) == 1
    envelope = envelopes[0]
    assert envelope["Subject"].startswith(
        "Unusual country for AWS command: 2 methods from BT by arn:aws:iam::"
    )
    assert envelope["MessageAttributes"]["country"]["Value"] == "BT"
    assert envelope["MessageAttributes"]["severity"]["Value"] == "high"
    assert float(envelope["MessageAttributes"]["score"]["Value"]) >= 90
    alert = json.loads(envelope["Message"])
    assert alert["detected_at"].startswith("2026-10-02T01:15:00")
    assert alert["source"] == {"geo": {"country_iso_code": "BT"}, "ip": [BT_IP]}
    assert alert["aws"]["cloudtrail"]["user_identity"] == {
        "arn": ALICE,
        "type": "IAMUser",
        "access_key_id": "AKIAALICE0000000001",
    }
    assert alert["event"]["action"] == ["DescribeInstances", "ListUsers"]
    assert alert["event"]["provider"] == ["ec2.amazonaws.com", "iam.amazonaws.com"]
    assert alert["user_agent"]["original"] == ["python-requests/2.31"]
    assert alert["cloud"]["account"]["id"] == "111122223333"
    assert alert["first_event_time"] == attack[0]["eventTime"]
    assert alert["last_event_time"] == attack[1]["eventTime"]
    assert "never called from this country" in alert["explanation"]
    items_after = table_items(aws, deployment.table)
    outbox = items_after
    assert [v["st"]["S"] for k, v in outbox.items() if k[0] == "OUTBOX"] == ["sent"]

    # When: the same window runs again (a retry, or the next overlapping look-back)
    third = handler.lambda_handler(scheduled_event("2026-10-02T01:15:00Z"), context)

    # Then: no count changes and nothing is sent twice
    assert third["files_new"] == 0
    assert third["alerts_raised"] == 0
    assert receive_alerts(aws, deployment.queue_url) == []
    assert table_items(aws, deployment.table) == items_after


def test_given_a_file_that_lands_three_hours_late_then_the_next_run_reads_it_once(
    aws: Any, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: the default 2-hour look-back and runs at the real current time (S3 stamps LastModified)
    monkeypatch.setenv("LOOKBACK_MINUTES", "120")
    handler = load_handler_module()
    context = FakeLambdaContext()
    now = datetime.now(tz=UTC).replace(second=0, microsecond=0)
    tick = now - timedelta(minutes=now.minute % 15)
    on_time_at = tick - timedelta(minutes=10)
    put_files(aws, {delivery_key(on_time_at): gz_file([record(on_time_at - timedelta(minutes=5), ip=US_IP)])})
    first = handler.lambda_handler(scheduled_event(f"{tick:%Y-%m-%dT%H:%M:%SZ}"), context)

    # When: a file named three hours ago lands only now (outside the look-back by its name)
    late_at = tick - timedelta(hours=3)
    late_event = record(
        late_at - timedelta(minutes=5), ip=US_IP, name="ListBuckets", source="s3.amazonaws.com"
    )
    put_files(aws, {delivery_key(late_at): gz_file([late_event])})
    next_tick = tick + timedelta(minutes=15)
    second = handler.lambda_handler(scheduled_event(f"{next_tick:%Y-%m-%dT%H:%M:%SZ}"), context)
    third = handler.lambda_handler(
        scheduled_event(f"{next_tick + timedelta(minutes=15):%Y-%m-%dT%H:%M:%SZ}"), context
    )

    # Then: it is read by the next run, reported as late, and counted exactly once
    assert first["files_read"] == 1
    assert second["files_read"] == 1
    assert second["files_late"] == 1
    assert third["files_new"] == 0
    items = table_items(aws, deployment.table)
    assert items[("M#s3.amazonaws.com:ListBuckets", "C#US")]["b"]["N"] == "1"


def _baseline_then_attack(aws: Any, handler: ModuleType) -> dict[str, Any]:
    """A day of alice in the US, counted by a first run; then her key from BT; the second run's summary."""
    baseline = [record(T0 + timedelta(hours=h, minutes=3), ip=US_IP) for h in range(24)]
    put_files(aws, files_by_delivery(baseline, org=ORG))
    handler.lambda_handler(scheduled_event("2026-10-02T00:15:00Z"), FakeLambdaContext())
    attack_at = T0 + timedelta(hours=25)
    put_files(
        aws,
        {delivery_key(attack_at + timedelta(minutes=10), org=ORG): gz_file([record(attack_at, ip=BT_IP)])},
    )
    summary: dict[str, Any] = handler.lambda_handler(
        scheduled_event("2026-10-02T01:15:00Z"), FakeLambdaContext()
    )
    return summary


def test_given_an_allowlist_in_ssm_when_the_country_is_allowed_then_no_alert_and_the_run_says_why(
    aws: Any, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given alice's BT trip allowlisted in an SSM SecureString parameter
    aws.client("ssm", region_name=REGION).put_parameter(
        Name="/trailgeo/tuning",
        Type="SecureString",
        Value=f'version = 1\n[[allowed_countries]]\nprincipals = ["{ALICE}"]\ncountries = ["BT"]\n',
    )
    monkeypatch.setenv("TUNING_PARAMETER", "/trailgeo/tuning")

    # When the schedule fires after a day of baseline, then after the BT calls
    summary = _baseline_then_attack(aws, load_handler_module())

    # Then nothing is published, and the run counts the allowlisted alert
    assert summary["alerts_raised"] == 0
    assert summary["alerts_allowlisted"] == {"allowed_country": 1}
    assert receive_alerts(aws, deployment.queue_url) == []


def test_given_a_broken_tuning_parameter_on_a_cold_start_then_the_run_fails_naming_the_field(
    aws: Any, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.client("ssm", region_name=REGION).put_parameter(
        Name="/trailgeo/tuning", Type="String", Value='version = 1\nignored_principalz = ["x"]\n'
    )
    monkeypatch.setenv("TUNING_PARAMETER", "/trailgeo/tuning")
    handler = load_handler_module()

    with pytest.raises(ValueError, match="ignored_principalz"):
        handler.lambda_handler(scheduled_event("2026-10-02T01:15:00Z"), FakeLambdaContext())
