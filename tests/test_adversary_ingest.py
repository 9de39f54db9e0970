"""An attacker who knows how trailgeo ingests CloudTrail: forged event times that would make their
country familiar, oversize names and strings that would stop runs, alerts that cannot be published.

Each test fails without the defence it names in docs/threat-model.md.
"""

from __future__ import annotations

import io
import json
import random
import string
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.aws import Deployment, create_deployment, deps_for, receive_alerts, table_items
from tests.builders import (
    ACCOUNT,
    ALICE,
    BOB,
    BT_IP,
    T0,
    US_IP,
    delivery_key,
    files_by_delivery,
    gz_file,
    record,
    trail_record,
    write_tree,
)
from tests.test_alerts import alert_for
from tests.test_hostile_input import LogLines, log_lines  # noqa: F401 - the fixture, by name
from trailgeo.adapters.aws import MAX_LOGGED_NAME_CHARS, MAX_LOGGED_SKIPS, S3LogSource, SnsAlertSink
from trailgeo.adapters.dynamodb import OUTBOX_PARTITION, DynamoOutbox
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink, LocalLogSource
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect, publish_pending, read_batch
from trailgeo.app.replay import replay
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.counters import event_hours
from trailgeo.core.render import envelope as sns_envelope
from trailgeo.core.scoring import ScoringPolicy
from trailgeo.ports import AlertRefusedError, BatchTooLargeError

ATTACK_AT = T0 + timedelta(days=10, hours=3)
TRAINED = RunOptions(policy=ScoringPolicy(learning_days=0))
# Publishing at once, not after the wait to settle (app/detect/publish.py: tests/test_settle.py)
AT_ONCE = RunOptions(settle=timedelta(0))
DESCRIBE = "M#ec2.amazonaws.com:DescribeInstances"


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def put(session: Any, files: dict[str, bytes]) -> None:
    s3 = session.client("s3")
    for key, body in files.items():
        s3.put_object(Bucket="org-trail-bucket", Key=key, Body=body)


# --------------------------------------------------------------------------------------------------
# Forged event times (issue 13, item 3)
# --------------------------------------------------------------------------------------------------
def test_given_a_2099_record_of_the_victim_from_the_attackers_country_when_they_attack_then_it_scores_100(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given ten days of alice calling from the US, and a file a bucket writer planted on day two
    # (the learning week: nothing alerts, so nothing is quarantined), under a valid delivery name,
    # holding one record dated 2099: alice, from BT, the country the attack will come from. Its
    # forward-decay weight would be 2^457 times a call's of 2026: BT familiar until 2099, the US unusual.
    history = [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]
    attack = [record(ATTACK_AT + timedelta(minutes=m), ip=BT_IP) for m in range(3)]
    forged = record(datetime(2099, 1, 1, tzinfo=UTC), ip=BT_IP)
    planted = {delivery_key(T0 + timedelta(days=2, minutes=10)): gz_file([forged])}
    write_tree(tmp_path, files_by_delivery(history + attack) | planted)

    # When the trail is replayed, tick by tick
    out = io.StringIO()
    summary, state = replay(tmp_path, geo, JsonLinesAlertSink(out), RunOptions())

    # Then the forged record is skipped and counted as such, no counter holds an hour past the
    # last run, and the attack from BT is the one alert, scoring 100
    assert summary.records_skipped["event_time_out_of_window"] == 1
    newest = max(
        h for items in state.store.partitions.values() for s in items.values() for h in s.recent_hours
    )
    assert newest <= hour_of(ATTACK_AT) + 1
    (alert,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert alert["source"]["geo"]["country_iso_code"] == "BT"
    assert alert["score"] == 100


def test_given_events_around_their_files_delivery_when_added_then_a_day_before_to_an_hour_after_count() -> (
    None
):
    # Given one file delivered at 12:05 holding events 25 and 23 hours before, and 1 and 2 hours
    # after, its delivery; and a run scheduled at 12:15
    delivered = datetime(2026, 10, 5, 12, 5, tzinfo=UTC)
    scheduled = delivered + timedelta(minutes=10)
    offsets = [timedelta(hours=-25), timedelta(hours=-23), timedelta(hours=1), timedelta(hours=2)]
    records = [trail_record(record(delivered + offset, ip=US_IP)) for offset in offsets]
    aggregate = RunAggregate(geolocate=lambda ip: "US")

    # When the file is added with its window
    (skipped,) = aggregate.add_files([records], hours=[event_hours(delivered, scheduled)])

    # Then the two inside count, the two outside are skipped under their own reason
    assert skipped == {"event_time_out_of_window": 2}
    assert aggregate.counters[(DESCRIBE, "C#US")].hours == {
        hour_of(delivered + offsets[1]),
        hour_of(delivered + offsets[2]),
    }
    # And a name with no delivery time, or one later than the run, counts as delivered at the run
    assert event_hours(None, scheduled) == event_hours(scheduled, scheduled)
    assert event_hours(datetime(2099, 1, 1, tzinfo=UTC), scheduled) == event_hours(scheduled, scheduled)


def test_given_a_file_named_and_dated_2099_when_a_run_is_made_to_read_it_then_no_hour_past_the_run_counts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given a file both named and dated 2099 (no listing picks it up, but a forged fan-out task
    # or a run told to read it could name it)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    key = delivery_key(future + timedelta(minutes=5))
    write_tree(tmp_path, {key: gz_file([record(future, ip=BT_IP)])})
    deps = Dependencies(
        source=LocalLogSource(tmp_path),
        geo=geo,
        store=MemoryFrequencyStore(),
        ledger=MemoryLedger(),
        outbox=MemoryOutbox(),
        sink=JsonLinesAlertSink(io.StringIO()),
    )
    tick = ATTACK_AT
    report = RunReport(scheduled_at=tick, window_start=tick, window_end=tick)

    # When a run scheduled in 2026 reads it
    aggregate, outcomes, _ = read_batch([key], deps, RunOptions(read_concurrency=1), report)

    # Then it is read, and its event is skipped: the weight of no hour beyond the run is ever added
    assert outcomes == {key: "done"}
    assert aggregate.counters == {}
    assert aggregate.skipped == {"event_time_out_of_window": 1}


# --------------------------------------------------------------------------------------------------
# Oversize names and strings (issue 13, item 6, and the run record's limit)
# --------------------------------------------------------------------------------------------------
def test_given_hundreds_of_long_named_objects_in_a_window_when_the_run_plans_then_the_real_files_are_scored(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given a window holding three real delivery files and 600 objects that a bucket writer named
    # like them but with a 900-character random unique part (S3 keys run to 1,024 bytes): together
    # their keys pack to more than a run record can hold
    deployment = create_deployment(aws)
    real = files_by_delivery([record(T0 + timedelta(minutes=m), ip=US_IP) for m in range(0, 45, 15)])
    rng = random.Random(13)
    long_named = {
        delivery_key(
            T0 + timedelta(minutes=30), unique="".join(rng.choices(string.ascii_letters, k=900))
        ): b"x"
        for _ in range(600)
    }
    put(aws, real | long_named)
    tick = T0 + timedelta(hours=1)

    # When the schedule fires
    report = detect(tick, deps_for(aws, geo, deployment, tick), RunOptions())

    # Then the run completes, the long names are counted as skipped keys, the real files scored
    assert report.keys_skipped == {"key_other": 600}
    assert report.files_read == len(real) == 3
    assert table_items(aws, deployment.table)[(DESCRIBE, "C#US")]["b"]["N"] == "1"


@dataclass(slots=True)
class SmallRunRecords(MemoryLedger):
    """A ledger whose run records hold three keys at most, as DynamoDB's 400 KB holds so many."""

    def begin(self, run_id: str, keys: Any, lease_until: datetime, now: datetime) -> None:
        if len(keys) > 3:
            raise BatchTooLargeError(f"{len(keys)} keys")
        MemoryLedger.begin(self, run_id, keys, lease_until, now)


def test_given_a_batch_whose_run_record_would_be_too_large_when_planned_then_it_is_split_and_all_files_count(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given ten delivery files in one window and a ledger whose run records hold three keys
    files = files_by_delivery([record(T0 + timedelta(minutes=5 * m), ip=US_IP) for m in range(10)], minutes=5)
    write_tree(tmp_path, files)
    store, ledger = MemoryFrequencyStore(), SmallRunRecords()
    deps = Dependencies(
        source=LocalLogSource(tmp_path),
        geo=geo,
        store=store,
        ledger=ledger,
        outbox=MemoryOutbox(),
        sink=JsonLinesAlertSink(io.StringIO()),
    )

    # When one run plans them as one batch
    report = detect(T0 + timedelta(hours=1), deps, RunOptions(read_concurrency=1))

    # Then the batch is split until each run record fits, and every file is read once
    assert (report.files_new, report.files_read) == (10, 10)
    assert {entry.state for entry in ledger.entries.values()} == {"done"}
    assert store.partitions[DESCRIBE]["C#US"].buckets == 1


def test_given_folders_no_region_or_service_is_named_when_listed_then_fixed_reasons_and_bounded_log_lines(
    aws: Any,
    log_lines: LogLines,  # noqa: F811
) -> None:
    # Given 30 folders under CloudTrail/ whose 200-character names are no AWS region (each with a
    # file named to match it), 25 made-up folders beside CloudTrail/, and one real delivery file
    deployment = create_deployment(aws)
    odd = [f"zz-{'q' * 200}{n:02d}-1" for n in range(30)]
    when = T0 + timedelta(minutes=20)
    put(
        aws,
        {
            delivery_key(when, region=region): gz_file([record(when - timedelta(minutes=5), ip=BT_IP)])
            for region in odd
        },
    )
    put(aws, {f"AWSLogs/{ACCOUNT}/Made-Up-{'x' * 500}-{n}/f.json.gz": b"x" for n in range(25)})
    real = delivery_key(when)
    put(aws, {real: gz_file([record(when - timedelta(minutes=5), ip=US_IP)])})
    source = S3LogSource(aws.client("s3"), deployment.bucket)

    # When the window is listed
    window = source.list_window(T0, T0 + timedelta(hours=1))

    # Then only the real file is listed; the rest is counted under fixed reasons (never one reason
    # per name), and logged one by one only up to a bound, each name cut
    assert [obj.key for obj in window.objects] == [real]
    assert window.skipped == {"prefix_bad_region": 30, "prefix_other": 25}
    lines = [line for line in log_lines() if "skip" in line.get("message", "")]
    named = [line for line in lines if line["message"] == "prefix skipped"]
    assert len(named) == 2 * MAX_LOGGED_SKIPS
    assert max(len(line["key"]) for line in named) <= MAX_LOGGED_NAME_CHARS
    assert len(lines) == len(named) + 2  # one line per reason once it stops naming them


def trained(aws: Any, geo: MaxMindGeoResolver) -> Deployment:
    """A deployment whose table holds a day of alice calling DescribeInstances from the US."""
    deployment = create_deployment(aws)
    put(aws, files_by_delivery([record(T0 + timedelta(hours=h, minutes=3), ip=US_IP) for h in range(24)]))
    tick = T0 + timedelta(days=1)
    detect(tick, deps_for(aws, geo, deployment, tick), RunOptions(lookback=timedelta(days=1), alerting=False))
    return deployment


def attack_run(
    aws: Any,
    geo: MaxMindGeoResolver,
    deployment: Deployment,
    attack: list[dict[str, Any]],
    options: RunOptions,
) -> RunReport:
    attack_at = T0 + timedelta(hours=25)
    put(aws, {delivery_key(attack_at + timedelta(minutes=10)): gz_file(attack)})
    tick = attack_at + timedelta(minutes=30)
    return detect(tick, deps_for(aws, geo, deployment, tick), options)


def test_given_a_principal_and_method_of_four_byte_characters_when_counted_then_every_key_fits_dynamodb(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given a trained table, and records (a bucket writer's) whose ARN is 600 emoji and whose
    # method is 200 emoji on either side: 512 characters of them are 2,048 bytes, over DynamoDB's
    # key limits (2,048 bytes a partition key, 1,024 a sort key)
    deployment = trained(aws, geo)
    emoji = "\U0001f600"
    arn = f"arn:aws:iam::{ACCOUNT}:user/{emoji * 600}"
    attack = [record(T0 + timedelta(hours=25), ip=BT_IP, arn=arn, source=emoji * 200, name=emoji * 200)]

    # When the run counts them, with the per-user method detector on
    report = attack_run(
        aws,
        geo,
        deployment,
        attack,
        RunOptions(policy=TRAINED.policy, detectors=frozenset({"country", "user_method"})),
    )

    # Then it completes, and every key it wrote is within DynamoDB's limits
    assert report.events_geolocated == 1
    keys = list(table_items(aws, deployment.table))
    assert max(len(pk.encode()) for pk, _ in keys) <= 2048
    assert max(len(sk.encode()) for _, sk in keys) <= 1024
    assert any(
        pk.startswith(f"P#arn:aws:iam::{ACCOUNT}:user/{emoji}") and pk.endswith("…[truncated]")
        for pk, _ in keys
    )


def test_given_a_megabyte_identity_type_on_a_rare_call_when_it_alerts_then_the_alert_is_stored_and_published(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given a trained table, and alice's key used from BT in a record whose userIdentity.type is
    # a megabyte long (an outbox item holds 400 KB)
    deployment = trained(aws, geo)
    hostile = record(T0 + timedelta(hours=25), ip=BT_IP)
    hostile["userIdentity"]["type"] = "T" * 1_000_000

    # When the run scores it
    report = attack_run(aws, geo, deployment, [hostile], replace(TRAINED, settle=timedelta(0)))

    # Then the alert is queued and published, its identity type cut
    assert (report.alerts_raised, report.alerts_published, report.alerts_parked) == (1, 1, 0)
    (envelope,) = receive_alerts(aws, deployment.queue_url)
    published = json.loads(envelope["Message"])
    assert published["aws"]["cloudtrail"]["user_identity"]["type"] == "T" * 64 + "…[truncated]"


# --------------------------------------------------------------------------------------------------
# Alerts that cannot be published (issue 13, item 6)
# --------------------------------------------------------------------------------------------------
def test_given_sns_refusing_one_alert_for_its_content_when_published_then_it_is_parked_and_the_next_goes_out(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given two pending alerts, and SNS refusing the first one published (InvalidParameter, as for
    # a message it will never take)
    deployment = create_deployment(aws)
    deps = deps_for(aws, geo, deployment, ATTACK_AT)
    pending = sorted(
        (alert_for([record(T0, ip=BT_IP, arn=arn)]) for arn in (ALICE, BOB)), key=lambda a: a.alert_id
    )
    for alert in pending:
        assert deps.outbox.put(alert)
    calls: list[int] = []

    def refuse_the_first(**_: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ClientError({"Error": {"Code": "InvalidParameter", "Message": "injected"}}, "Publish")

    deps.sink.client.meta.events.register("before-call.sns.Publish", refuse_the_first)  # type: ignore[attr-defined]

    # When pending alerts are published, then again at the next run
    first = RunReport(scheduled_at=ATTACK_AT, window_start=ATTACK_AT, window_end=ATTACK_AT)
    publish_pending(deps, first, AT_ONCE)
    second = RunReport(scheduled_at=ATTACK_AT, window_start=ATTACK_AT, window_end=ATTACK_AT)
    publish_pending(deps, second, AT_ONCE)

    # Then the refused alert is parked (kept, with why, counted) and the other one goes out; the
    # next run does not try the parked one again
    assert (first.alerts_parked, first.alerts_published, first.alerts_pending) == (1, 1, 0)
    assert (second.alerts_parked, second.alerts_published, second.alerts_pending) == (0, 0, 0)
    assert len(calls) == 2
    item = table_items(aws, deployment.table)[(OUTBOX_PARTITION, f"A#{pending[0].alert_id}")]
    assert item["st"]["S"] == "parked"
    assert "InvalidParameter" in item["parked_reason"]["S"]
    (envelope,) = receive_alerts(aws, deployment.queue_url)
    assert json.loads(envelope["Message"])["alert_id"] == pending[1].alert_id


def test_given_an_alert_too_large_for_sns_even_compacted_when_published_then_the_sink_refuses_it(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an SNS message limit no alert fits in, even compacted
    deployment = create_deployment(aws)
    monkeypatch.setattr(sns_envelope, "SNS_MESSAGE_LIMIT", 500)

    # When an alert is published, then the sink says it is refused (parked by the run), not broken
    with pytest.raises(AlertRefusedError, match="too_large"):
        SnsAlertSink(aws.client("sns"), deployment.topic_arn).publish(alert_for([record(T0, ip=BT_IP)]))


def test_given_an_outbox_item_that_is_no_alert_when_pending_are_read_then_it_is_parked_and_others_go_out(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given an outbox holding an item whose document is no alert, beside a real pending alert
    deployment = create_deployment(aws)
    deps = deps_for(aws, geo, deployment, ATTACK_AT)
    aws.client("dynamodb").put_item(
        TableName=deployment.table,
        Item={
            "pk": {"S": OUTBOX_PARTITION},
            "sk": {"S": "A#broken"},
            "st": {"S": "pending"},
            "doc": {"S": "{}"},
        },
    )
    real = alert_for([record(T0, ip=BT_IP)])
    deps.outbox.put(real)

    # When pending alerts are published
    report = RunReport(scheduled_at=ATTACK_AT, window_start=ATTACK_AT, window_end=ATTACK_AT)
    publish_pending(deps, report, AT_ONCE)

    # Then the real one goes out and the broken one is parked
    assert report.alerts_published == 1
    assert table_items(aws, deployment.table)[(OUTBOX_PARTITION, "A#broken")]["st"]["S"] == "parked"


def test_given_an_alert_document_over_an_items_limit_when_queued_then_it_is_stored_compacted(
    aws: Any,
) -> None:
    # Given an alert whose document is over DynamoDB's 400 KB item limit
    deployment = create_deployment(aws)
    huge = alert_for([record(T0, ip=BT_IP)]).model_copy(update={"explanation": "x" * 500_000})

    # When it is queued
    outbox = DynamoOutbox(aws.client("dynamodb"), deployment.table)
    assert outbox.put(huge)

    # Then it is stored compacted, with the cut marked
    (stored,) = outbox.pending()
    assert stored.alert_id == huge.alert_id
    assert stored.explanation.endswith("[truncated]")
    assert len(stored.explanation) < 3000
