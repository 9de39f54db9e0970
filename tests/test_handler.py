"""The scheduled Lambda handler against moto: S3 -> DynamoDB -> SNS (read through SQS)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.aws import (
    BUCKET,
    REGION,
    ROOT,
    Deployment,
    FakeLambdaContext,
    create_deployment,
    load_function,
    receive_alerts,
    set_environment,
    table_items,
)
from tests.builders import (
    ACCOUNT,
    ALICE,
    BT_IP,
    T0,
    US_IP,
    delivery_key,
    files_by_delivery,
    gz_file,
    record,
)
from tests.conftest import EVENTS
from trailgeo.adapters.dynamodb import DynamoLedger
from trailgeo.app.runtime import REASONS
from trailgeo.observability import OTHER

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
        "[HIGH] Unusual country for AWS command: 2 methods from BT by arn:aws:iam::"
    )
    assert envelope["MessageAttributes"]["country"]["Value"] == "BT"
    assert envelope["MessageAttributes"]["severity"]["Value"] == "high"
    assert envelope["MessageAttributes"]["notification"]["Value"] == "new"  # for a paging filter policy
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


@pytest.mark.parametrize("asn_database", ["GeoLite2-ASN-Test.mmdb", "absent.mmdb"])
def test_given_an_asn_database_in_the_layer_or_not_when_the_schedule_fires_then_the_alert_names_its_network(
    aws: Any, deployment: Deployment, monkeypatch: pytest.MonkeyPatch, asn_test_mmdb: Path, asn_database: str
) -> None:
    # Given the function's GEOIP_ASN_PATH naming an ASN database (MaxMind's test one), or a file
    # the layer does not have; a day of alice from the US, then her key used from Bhutan
    monkeypatch.setenv("GEOIP_ASN_PATH", str(asn_test_mmdb.with_name(asn_database)))
    baseline = [record(T0 + timedelta(hours=h, minutes=3), ip=US_IP) for h in range(24)]
    put_files(aws, files_by_delivery(baseline, org=ORG))
    handler = load_handler_module()
    context = FakeLambdaContext()
    handler.lambda_handler(scheduled_event("2026-10-02T00:15:00Z"), context)
    attack_at = T0 + timedelta(hours=25)
    put_files(
        aws,
        {delivery_key(attack_at + timedelta(minutes=10), org=ORG): gz_file([record(attack_at, ip=BT_IP)])},
    )

    # When the schedule fires after the attack
    summary = handler.lambda_handler(scheduled_event("2026-10-02T01:15:00Z"), context)

    # Then the alert goes out either way; with the database it names the address's network (AS35908,
    # not a hosting provider: no factor, the rarity's severity), without it the run counts the skip
    (envelope,) = receive_alerts(aws, deployment.queue_url)
    alert = json.loads(envelope["Message"])
    assert alert["location"] == "BT"
    assert alert["severity"] == "medium"
    assert alert["evidence"] == []
    if asn_database == "absent.mmdb":
        assert alert["networks"] == []
        assert summary["networks"] == {"unavailable": 1}
    else:
        assert alert["networks"] == [{"ip": BT_IP, "asn": 35908, "organization": ""}]
        assert summary["networks"] == {"other": 1}


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
    later = [
        handler.lambda_handler(
            scheduled_event(f"{tick + n * timedelta(minutes=15):%Y-%m-%dT%H:%M:%SZ}"), context
        )
        for n in range(1, 6)
    ]

    # Then: it is read within the hour (by the next run, or, when its day prefix is one only the
    # late tolerance keeps in play, by the first run of the next hour), reported as late, and
    # counted exactly once
    assert first["files_read"] == 1
    read = [summary["files_read"] for summary in later]
    assert sum(read) == 1
    assert read.index(1) < 4
    assert later[read.index(1)]["files_late"] == 1
    assert later[-1]["files_new"] == 0
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


# ---------------------------------------------------------------------------- metrics and logs


def emf_documents(output: str) -> list[dict[str, Any]]:
    """The Embedded Metric Format documents among the JSON lines of ``output``."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' in line]


def data_points(documents: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric name, dimensions) of every metric in the documents."""
    points = []
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            names = {name for dimension_set in directive["Dimensions"] for name in dimension_set}
            dimensions = {name: document[name] for name in names}
            points.extend(
                (directive["Namespace"], metric["Name"], dimensions) for metric in directive["Metrics"]
            )
    return points


# A cold start in a fresh interpreter: Powertools reads its environment once, at import.
COLD_START = """
import json, os, sys
from datetime import datetime, UTC
import boto3
from moto import mock_aws
with mock_aws():
    from tests.aws import FakeLambdaContext, create_deployment, environment, load_function
    from tests.builders import delivery_key
    session = boto3.session.Session(region_name="us-east-1")
    deployment = create_deployment(session)
    settings = environment(deployment, sys.argv[1], LEARNING_DAYS="0", LOOKBACK_MINUTES="1440")
    os.environ.update({k: v for k, v in settings.items() if not k.startswith("POWERTOOLS_")})
    key = delivery_key(datetime(2026, 10, 1, 1, tzinfo=UTC))
    session.client("s3").put_object(Bucket=deployment.bucket, Key=key, Body=b"not gzip")
    event = {"version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-10-02T00:15:00Z", "region": "us-east-1",
             "resources": [], "detail": {}}
    load_function("detector").lambda_handler(event, FakeLambdaContext())
"""


def cold_start(geoip: Path, **variables: str) -> str:
    """Standard output of one scheduled run in a new process with ``variables`` in its environment."""
    cleared = {"AWS_ENDPOINT_URL", "AWS_PROFILE", "LOG_LEVEL", "POWERTOOLS_LOG_LEVEL", "AWS_LAMBDA_LOG_LEVEL"}
    env = {k: v for k, v in os.environ.items() if k not in cleared and not k.startswith("POWERTOOLS_")}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    done = subprocess.run(
        [sys.executable, "-c", COLD_START, str(geoip)],
        cwd=ROOT,
        env=env | variables,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_given_a_stack_s_powertools_names_and_log_level_when_it_cold_starts_then_metrics_and_logs_use_them(
    country_test_mmdb: Path,
) -> None:
    # Given the names template.yaml gives a stack, and Lambda's application log level WARN
    # When the detector cold-starts and runs over a bucket holding one unreadable file
    output = cold_start(
        country_test_mmdb,
        POWERTOOLS_SERVICE_NAME="stack-a",
        POWERTOOLS_METRICS_NAMESPACE="trailgeo/stack-a",
        AWS_LAMBDA_LOG_LEVEL="WARN",
    )

    # Then every metric, the per-reason ones included, is in the stack's namespace and service
    points = data_points(emf_documents(output))
    assert {"ColdStart", "FilesRead", "FilesSkipped"} <= {name for _, name, _ in points}
    assert {namespace for namespace, _, _ in points} == {"trailgeo/stack-a"}
    assert {dimensions["service"] for _, _, dimensions in points} == {"stack-a"}
    (skipped,) = [dimensions for _, name, dimensions in points if name == "FilesSkipped"]
    assert skipped == {"service": "stack-a", "reason": "not_gzip"}
    # And the log lines carry the service, at the level Lambda set (INFO lines are not written)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith('{"level"')]
    assert [(line["level"], line["message"]) for line in lines] == [("WARNING", "object skipped")]
    assert {line["service"] for line in lines} == {"stack-a"}


def test_given_no_powertools_names_when_it_cold_starts_then_service_and_namespace_are_trailgeo(
    country_test_mmdb: Path,
) -> None:
    # Given none of the variables (the CLI, replay, a local run)
    output = cold_start(country_test_mmdb)

    # Then the metrics still go to trailgeo, and INFO lines (Powertools' default level) are written
    points = data_points(emf_documents(output))
    assert {(namespace, dimensions["service"]) for namespace, _, dimensions in points} == {
        ("trailgeo", "trailgeo")
    }
    messages = [json.loads(line)["message"] for line in output.splitlines() if line.startswith('{"level"')]
    assert "run finished" in messages


def test_given_a_bucket_writer_s_folders_when_the_schedule_fires_then_skip_metrics_keep_known_reasons(
    aws: Any, deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 30 folders of made-up names beside CloudTrail/ under an account (each was once a new
    # "prefix_<name>" skip reason), and a CloudTrail digest
    put_files(aws, {f"AWSLogs/{ACCOUNT}/Made-Up-{n}/x.json.gz": b"x" for n in range(30)})
    put_files(aws, {f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2026/10/01/d.json.gz": b"x"})
    put_files(aws, files_by_delivery([record(T0 + timedelta(minutes=3), ip=US_IP)]))
    capsys.readouterr()

    # When the schedule fires
    summary = load_handler_module().lambda_handler(
        scheduled_event("2026-10-02T00:15:00Z"), FakeLambdaContext()
    )

    # Then the run summary and the metrics count them under one fixed reason (the log lines name
    # them): one metric per skip kind, its reason dimension limited to the known reasons
    assert summary["keys_skipped"] == {"prefix_other": 30, "prefix_cloudtrail-digest": 1}
    points = data_points(emf_documents(capsys.readouterr().out))
    by_reason = [(name, dimensions["reason"]) for _, name, dimensions in points if "reason" in dimensions]
    assert ("KeysSkipped", "prefix_other") in by_reason
    assert ("KeysSkipped", "prefix_cloudtrail-digest") in by_reason
    assert all("." not in name for _, name, _ in points)
    for name, reason in by_reason:
        assert reason in REASONS[name] | {OTHER}, (name, reason)
    assert len(by_reason) == len(set(by_reason))  # one data point per (metric, reason) and run


# Where the detector names a skip reason in its source: every one must be a known reason.
REASON_PATTERNS = {
    "FilesSkipped": (
        r'(?:UnreadablePayload|MalformedFile|ObjectUnreadable)Error\(\s*"(\w+)"',
        r'(?:UnreadablePayload|MalformedFile|ObjectUnreadable)Error\(\s*"\w+" if .+? else "(\w+)"',
        r'problem or "(\w+)"',
        r'except ObjectGoneError:\s+return key, None, "(\w+)"',
    ),
    "RecordsSkipped": (r'(?<!_)skipped\["(\w+)"\]',),
    "KeysSkipped": (r'skipped\["(prefix_\w+)"\]', r'_skip\(\s*\w+,\s*"(prefix_\w+)"'),
}


def test_given_the_source_when_it_names_a_skip_reason_then_the_metrics_know_it() -> None:
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for path in (ROOT / "src" / "trailgeo").rglob("*.py")
        if path.name != "runtime.py"
    )
    unknown = {}
    for name, patterns in REASON_PATTERNS.items():
        found = {reason for pattern in patterns for reason in re.findall(pattern, source)}
        assert found, name
        if name == "RecordsSkipped":
            found -= REASONS["KeysSkipped"]
        unknown[name] = sorted(found - REASONS[name])
    assert unknown == {name: [] for name in REASON_PATTERNS}
