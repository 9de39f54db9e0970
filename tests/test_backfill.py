"""`trailgeo backfill`: training the tables from history, without alerting, exactly once."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import BT_IP, T0, US_IP, files_by_delivery, record, write_tree
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink, LocalLogSource
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.app.backfill import NoAlertSink, backfill
from trailgeo.app.detect import Dependencies, RunOptions, detect
from trailgeo.cli import main
from trailgeo.ports import PublishError

BASELINE_DAYS = 10


def baseline() -> list[dict[str, Any]]:
    """Ten days of alice from the US, one call every 6 hours (40 hourly buckets)."""
    return [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(4 * BASELINE_DAYS)]


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def test_given_history_when_backfilled_then_counts_are_trained_once_and_nothing_alerts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given ten days of alice's history, plus one call from BT within it (history, not news)
    history = [*baseline(), record(T0 + timedelta(days=5, minutes=30), ip=BT_IP)]
    write_tree(tmp_path, files_by_delivery(history))
    store, ledger, outbox = MemoryFrequencyStore(), MemoryLedger(), MemoryOutbox()
    deps = Dependencies(LocalLogSource(tmp_path), geo, store, ledger, outbox, NoAlertSink())
    end = T0 + timedelta(days=BASELINE_DAYS, hours=1)

    # When the ten days are backfilled, twice
    days_seen: list[int] = []
    first = backfill(
        deps, RunOptions(), end=end, days=BASELINE_DAYS + 1, on_day=lambda r: days_seen.append(1)
    )
    again = backfill(deps, RunOptions(), end=end, days=BASELINE_DAYS + 1)

    # Then every event is counted once, no alert is even queued, and the second pass changes nothing
    assert len(days_seen) == BASELINE_DAYS + 1
    assert first.events == len(history)
    assert first.files == len(list(tmp_path.rglob("*.json.gz")))
    assert store.partitions["M#ec2.amazonaws.com:DescribeInstances"]["C#US"].buckets == 40
    assert store.partitions["ORG"]["C#BT"].buckets == 1
    assert outbox.alerts == {}
    assert (again.files, again.events, again.counters_written) == (0, 0, 0)


def test_given_a_backfilled_deployment_when_the_first_scheduled_run_sees_a_new_country_then_it_alerts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given ten days of history backfilled into a fresh deployment
    attack_at = T0 + timedelta(days=BASELINE_DAYS, hours=3)
    write_tree(tmp_path, files_by_delivery([*baseline(), record(attack_at, ip=BT_IP)]))
    store, ledger, outbox = MemoryFrequencyStore(), MemoryLedger(), MemoryOutbox()
    source = LocalLogSource(tmp_path)
    backfill(
        Dependencies(source, geo, store, ledger, outbox, NoAlertSink()),
        RunOptions(),
        end=T0 + timedelta(days=BASELINE_DAYS),
        days=BASELINE_DAYS,
    )

    # When the schedule's first run after the attack fires
    tick = attack_at + timedelta(minutes=30)
    out = io.StringIO()
    report = detect(
        tick,
        Dependencies(source, geo, store, ledger, outbox, JsonLinesAlertSink(out), clock=lambda: tick),
        RunOptions(),
    )

    # Then the learning period is already over: the BT call alerts on day one (a medium alert, sent
    # once it has waited its schedule period to settle)
    assert report.alerts_raised == 1
    later = tick + RunOptions().settle
    clock = lambda: later  # noqa: E731
    detect(
        later,
        Dependencies(source, geo, store, ledger, outbox, JsonLinesAlertSink(out), clock=clock),
        RunOptions(),
    )
    assert json.loads(out.getvalue())["source"]["geo"]["country_iso_code"] == "BT"


def test_given_a_backfill_then_its_sink_refuses_to_publish() -> None:
    from tests.test_alerts import alert_for

    with pytest.raises(PublishError, match="does not publish"):
        NoAlertSink().publish(alert_for([record(T0, ip=BT_IP)]))


def test_given_a_bucket_and_a_table_when_the_cli_backfills_then_the_table_holds_the_counts(
    aws: Any, country_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a trail bucket with three days of alice's calls and an empty deployment table
    from tests.aws import BUCKET, REGION, TABLE, create_deployment

    create_deployment(aws)
    s3 = aws.client("s3", region_name=REGION)
    history = [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(12)]
    for key, body in files_by_delivery(history).items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    # When `trailgeo backfill` reads the bucket into the table
    code = main(
        [
            "backfill",
            "--bucket",
            BUCKET,
            "--table",
            TABLE,
            "--days",
            "4",
            "--end",
            (T0 + timedelta(days=3, hours=1)).isoformat(),
            "--geoip",
            str(country_test_mmdb),
            "--region",
            REGION,
        ]
    )

    # Then it reports every event, and the counters are in DynamoDB
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backfill"]["events"] == 12
    assert report["backfill"]["days"] == 4
    item = aws.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"pk": {"S": "M#ec2.amazonaws.com:DescribeInstances"}, "sk": {"S": "C#US"}}
    )["Item"]
    assert item["b"]["N"] == "12"
