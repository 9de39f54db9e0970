"""Notification intake (``Intake=Notifications``) against moto: new files named by the trail's SNS
notifications, EventBridge's Object Created or S3 event notifications on an SQS queue, the ledger
as the exactly-once guard, and reconciliation's listing as the net for what notifications miss."""

from __future__ import annotations

import functools
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tests.aws import (
    Deployment,
    FakeLambdaContext,
    create_deployment,
    deps_for,
    emitted_metrics,
    load_function,
    set_environment,
)
from tests.builders import ACCOUNT, T0, US_IP, delivery_key, gz_file, record
from trailgeo.adapters import intake
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.intake import (
    MAX_KEYS_PER_MESSAGE,
    PoisonedMessageError,
    SqsNotificationIntake,
    files_named,
)
from trailgeo.app.detect import RunOptions, RunReport, detect
from trailgeo.app.detect.intake import reconcile_due
from trailgeo.app.settings import Settings, SettingsError
from trailgeo.core.scoring import ScoringPolicy

# Runs at 02:30 and 02:45 do not reconcile (hourly: the run of the hour's first quarter does).
QUIET = T0 + timedelta(hours=2, minutes=30)
RECONCILING = T0 + timedelta(hours=3)
OPTIONS = RunOptions(policy=ScoringPolicy(learning_days=0, learning_buckets=0))
ORG = "o-exampleorgid"


# ---- the world --------------------------------------------------------------------------------


def trail_files(count: int, *, first: datetime = QUIET - timedelta(minutes=60)) -> dict[str, bytes]:
    """``count`` organization-trail files, five minutes apart, of two events each."""
    files = {}
    for n in range(count):
        when = first + timedelta(minutes=5 * n)
        key = delivery_key(when, account=f"{int(ACCOUNT) + n % 3:012d}", org=ORG)
        files[key] = gz_file([record(when - timedelta(minutes=2), ip=US_IP)] * 2)
    return files


def cloudtrail_notice(bucket: str, *keys: str, raw: bool = False) -> str:
    """CloudTrail's per-file notification, as SNS delivers it to SQS (or raw)."""
    message = json.dumps({"s3Bucket": bucket, "s3ObjectKey": list(keys)})
    if raw:
        return message
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "5f1d-sns",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:cloudtrail-notices",
            "Message": message,
            "Timestamp": "2026-10-01T02:20:00.000Z",
        }
    )


def object_created(bucket: str, key: str) -> str:
    """EventBridge's Object Created for the trail bucket, as a rule delivers it to SQS."""
    return json.dumps(
        {
            "version": "0",
            "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-10-01T02:20:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": 120}},
        }
    )


def s3_event(bucket: str, key: str) -> str:
    """An S3 event notification: the key URL-encoded."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/")}},
                }
            ]
        }
    )


class Calls:
    """Every AWS request the session's clients make, by operation (and the keys GetObject read)."""

    def __init__(self, aws: Any) -> None:
        self.operations: Counter[str] = Counter()
        self.read: Counter[str] = Counter()
        aws.events.register("before-parameter-build", self._count)

    def _count(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.operations[model.name] += 1
        if model.name == "GetObject":
            self.read[params["Key"]] += 1


@dataclass
class Trail:
    """A deployment in moto with an intake queue (as IntakeQueue: 900 s visibility), and what the
    tests do with it: put files in the bucket, send messages, run, count what is left."""

    aws: Any
    geo: MaxMindGeoResolver
    deployment: Deployment
    url: str

    @property
    def bucket(self) -> str:
        return self.deployment.bucket

    def put(self, files: dict[str, bytes]) -> dict[str, bytes]:
        s3 = self.aws.client("s3")
        for key, body in files.items():
            s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return files

    def send(self, *bodies: str) -> None:
        sqs = self.aws.client("sqs")
        for body in bodies:
            sqs.send_message(QueueUrl=self.url, MessageBody=body)

    def visibility(self, seconds: int) -> None:
        self.aws.client("sqs").set_queue_attributes(
            QueueUrl=self.url, Attributes={"VisibilityTimeout": str(seconds)}
        )

    def left(self) -> int:
        """Messages not deleted yet, visible or in flight."""
        names: Any = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = self.aws.client("sqs").get_queue_attributes(QueueUrl=self.url, AttributeNames=names)
        return sum(int(attributes["Attributes"][name]) for name in names)

    def run(self, at: datetime, options: RunOptions = OPTIONS, *, concurrency: int = 1) -> RunReport:
        """One run with notification intake. One request at a time unless told: moto's queue is not
        safe for concurrent receives and deletes (two may get one message, or undo each other's
        delete), which SQS is; the test of a parallel drain checks what holds even then."""
        deps = deps_for(self.aws, self.geo, self.deployment, at)
        deps.intake = SqsNotificationIntake(
            self.aws.client("sqs"), self.url, self.bucket, concurrency=concurrency, wait_seconds=0
        )
        return detect(at, deps, options)


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


@pytest.fixture
def trail(aws: Any, geo: MaxMindGeoResolver) -> Trail:
    """An empty trail bucket and intake queue; tests put their files and send their messages."""
    deployment = create_deployment(aws)
    url = aws.client("sqs").create_queue(
        QueueName="trailgeo-intake", Attributes={"VisibilityTimeout": "900"}
    )["QueueUrl"]
    return Trail(aws, geo, deployment, url)


# ---- the message shapes ----------------------------------------------------------------------


def test_given_each_senders_shape_then_the_bucket_and_key_named_are_read_from_it() -> None:
    # Given one key, with a character S3 event notifications URL-encode in a trail prefix
    key = "logs v2/AWSLogs/111122223333/CloudTrail/us-east-1/2026/10/01/x.json.gz"

    # When each sender's message is parsed
    shapes = {
        "sns": files_named(cloudtrail_notice("b", key)),
        "raw": files_named(cloudtrail_notice("b", key, raw=True)),
        "eventbridge": files_named(object_created("b", key)),
        "s3": files_named(s3_event("b", key)),
        "s3 via sns": files_named(json.dumps({"Type": "Notification", "Message": s3_event("b", key)})),
    }

    # Then every one names the same object, the S3 event's key decoded
    assert s3_event("b", key) != s3_event("b", key).replace("+", " ")  # the key was encoded
    assert shapes == {name: [("b", key)] for name in shapes}


def test_given_messages_naming_no_new_object_then_they_name_nothing_and_are_not_poison() -> None:
    # Given S3's test event, a deletion through EventBridge, and a non-creation S3 event
    deleted = json.loads(object_created("b", "k"))
    deleted["detail-type"] = "Object Deleted"
    removed = json.loads(s3_event("b", "k"))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"

    # When parsed, Then they name nothing and raise nothing
    assert files_named(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    assert files_named(json.dumps(deleted)) == []
    assert files_named(json.dumps(removed)) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "not_a_notification"),
        (json.dumps({"hello": "world"}), "not_a_notification"),
        (json.dumps({"s3Bucket": "b", "s3ObjectKey": [{"nested": 1}]}), "not_a_notification"),
        (json.dumps({"s3Bucket": "b", "s3ObjectKey": ["k"] * (MAX_KEYS_PER_MESSAGE + 1)}), "too_many_keys"),
        (json.dumps({"s3Bucket": "b", "s3ObjectKey": ["k" * 300_000]}), "too_large"),
        (json.dumps({"Type": "Notification", "Message": "[]"}), "not_a_notification"),
        ("[" * 150_000 + "]" * 150_000, "too_large"),
        ("[" * 50_000 + "]" * 50_000, "invalid_json"),
    ],
)
def test_given_a_poisoned_message_then_parsing_names_its_reason(body: str, reason: str) -> None:
    with pytest.raises(PoisonedMessageError) as raised:
        files_named(body)
    assert raised.value.reason == reason


# ---- the run ----------------------------------------------------------------------------------


def test_given_notifications_when_a_run_drains_the_queue_then_it_reads_those_files_and_lists_nothing(
    trail: Trail,
) -> None:
    # Given six files in the bucket and one notification of each, in the three senders' shapes
    files = trail.put(trail_files(6))
    keys = list(files)
    trail.send(*(cloudtrail_notice(trail.bucket, key) for key in keys[:2]))
    trail.send(*(object_created(trail.bucket, key) for key in keys[2:4]))
    trail.send(*(s3_event(trail.bucket, key) for key in keys[4:]))
    calls = Calls(trail.aws)

    # When a run that does not reconcile drains the queue
    report = trail.run(QUIET)

    # Then it read each file once, listed nothing, and deleted every message
    assert calls.read == Counter(dict.fromkeys(keys, 1))
    assert calls.operations["ListObjectsV2"] == 0
    assert (report.files_read, report.events, report.intake_messages) == (6, 12, 6)
    assert trail.left() == 0
    assert not report.reconciled


def test_given_many_notifications_when_drained_in_parallel_then_each_file_is_read_exactly_once(
    trail: Trail,
) -> None:
    # Given thirty notified files
    files = trail.put(trail_files(30, first=QUIET - timedelta(minutes=150)))
    trail.send(*(cloudtrail_notice(trail.bucket, key) for key in files))
    calls = Calls(trail.aws)

    # When a run drains the queue eight receives at a time
    report = trail.run(QUIET, concurrency=8)

    # Then every file is read exactly once (a message handed out twice is one ledger no-op more)
    assert calls.read == Counter(dict.fromkeys(files, 1))
    assert report.files_read == 30
    assert calls.operations["ReceiveMessage"] >= 3


def test_given_a_message_whose_delete_was_lost_when_sqs_delivers_it_again_then_its_files_are_read_once(
    trail: Trail,
) -> None:
    # Given a notification, and a run whose DeleteMessageBatch fails (as if it died right after
    # its files were done), with a one-second visibility timeout
    files = trail.put(trail_files(2))
    trail.visibility(1)
    trail.send(cloudtrail_notice(trail.bucket, *files))

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "lost"}}, "DeleteMessageBatch")

    trail.aws.events.register("before-call.sqs.DeleteMessageBatch", refuse, unique_id="refuse")
    first = trail.run(QUIET)
    trail.aws.events.unregister("before-call.sqs.DeleteMessageBatch", unique_id="refuse")
    assert first.files_read == 2
    assert trail.left() == 1

    # When SQS delivers it again to the next run
    time.sleep(1.2)
    calls = Calls(trail.aws)
    second = trail.run(QUIET + timedelta(minutes=15))

    # Then the ledger makes it a no-op: nothing read, nothing counted twice, the message deleted
    assert second.intake_messages == 1
    assert (second.files_new, second.files_read, second.events) == (0, 0, 0)
    assert calls.operations["GetObject"] == 0
    assert trail.left() == 0


def test_given_two_messages_naming_the_same_file_then_it_is_read_once_and_both_are_deleted(
    trail: Trail,
) -> None:
    # Given a file named by the trail's SNS notification and by EventBridge (both sources on)
    files = trail.put(trail_files(1))
    (key,) = files
    trail.send(cloudtrail_notice(trail.bucket, key), object_created(trail.bucket, key))
    calls = Calls(trail.aws)

    # When a run drains the queue
    report = trail.run(QUIET)

    # Then the file is read once, and both messages are gone
    assert calls.read == Counter({key: 1})
    assert (report.intake_messages, report.events) == (2, 2)
    assert trail.left() == 0


def test_given_files_notified_out_of_order_then_each_is_read_once_whatever_the_order(
    trail: Trail,
) -> None:
    # Given three files whose notifications arrive latest first, the oldest only after a run
    files = trail.put(trail_files(3))
    oldest, middle, newest = files
    trail.send(cloudtrail_notice(trail.bucket, newest), cloudtrail_notice(trail.bucket, middle))
    first = trail.run(QUIET)
    trail.send(cloudtrail_notice(trail.bucket, oldest), cloudtrail_notice(trail.bucket, newest))
    calls = Calls(trail.aws)

    # When the next run drains the queue
    second = trail.run(QUIET + timedelta(minutes=15))

    # Then the oldest is read then, and the newest (named again) is not read twice
    assert first.files_read == 2
    assert calls.read == Counter({oldest: 1})
    assert second.files_read == 1
    assert trail.left() == 0


def test_given_a_file_the_notifications_missed_when_the_hourly_run_reconciles_then_it_is_read_and_counted(
    trail: Trail,
) -> None:
    # Given four files and notifications of three (one lost on the way)
    files = trail.put(trail_files(4))
    *notified, lost = files
    trail.send(*(cloudtrail_notice(trail.bucket, key) for key in notified))
    quiet = trail.run(QUIET)
    assert (quiet.files_read, quiet.reconciled) == (3, False)

    # When the run of the next hour's first quarter reconciles (one more notification meanwhile)
    later = trail_files(1, first=RECONCILING - timedelta(minutes=20))
    for key, body in later.items():
        trail.aws.client("s3").put_object(Bucket=trail.bucket, Key=key, Body=body)
    trail.send(*(cloudtrail_notice(trail.bucket, key) for key in later))
    calls = Calls(trail.aws)
    report = trail.run(RECONCILING)

    # Then it lists the window, reads the missed file (and the notified one), and counts one miss
    assert reconcile_due(RECONCILING, OPTIONS.reconcile_every)
    assert not reconcile_due(QUIET, OPTIONS.reconcile_every)
    assert report.reconciled
    assert calls.operations["ListObjectsV2"] > 0
    assert calls.read == Counter({lost: 1, **dict.fromkeys(later, 1)})
    assert report.files_missed_by_notifications == 1
    emitted = emitted_metrics(report)
    assert emitted["FilesMissedByNotifications"] == [1.0]


def test_given_notifications_on_time_when_the_run_reconciles_then_no_file_is_counted_as_missed(
    trail: Trail,
) -> None:
    # Given every file notified, the last one delivered within the grace before the run
    files = trail.put(trail_files(4, first=RECONCILING - timedelta(minutes=25)))
    *on_time, just_in = files
    trail.send(*(cloudtrail_notice(trail.bucket, key) for key in on_time))

    # When the reconciling run finds the last one before its notification
    report = trail.run(RECONCILING)

    # Then it reads all four, and counts no miss (the last one's notice may still be on its way)
    assert (report.files_read, report.files_missed_by_notifications) == (4, 0)
    assert report.reconciled
    assert emitted_metrics(report)["FilesMissedByNotifications"] == [0.0]
    assert just_in


def test_given_poisoned_messages_among_good_ones_then_the_good_files_are_read_and_the_poison_counted(
    trail: Trail,
) -> None:
    # Given good notifications between an unparseable body, a message naming too many keys and
    # one of an unknown shape
    files = trail.put(trail_files(3))
    keys = list(files)
    trail.send(
        cloudtrail_notice(trail.bucket, keys[0]),
        "{this is not json",
        json.dumps({"s3Bucket": trail.bucket, "s3ObjectKey": [keys[1]] * (MAX_KEYS_PER_MESSAGE + 1)}),
        cloudtrail_notice(trail.bucket, keys[1]),
        json.dumps({"detail": "nothing"}),
        s3_event(trail.bucket, keys[2]),
    )

    # When a run drains the queue
    report = trail.run(QUIET)

    # Then the good files are read, the poison counted by reason and deleted, the run not stopped
    assert report.files_read == 3
    assert report.intake_poisoned == Counter({"invalid_json": 1, "too_many_keys": 1, "not_a_notification": 1})
    assert emitted_metrics(report)["IntakeMessagesPoisoned"] == [3.0]
    assert trail.left() == 0


def test_given_keys_of_another_bucket_or_outside_the_trail_then_they_are_counted_and_never_read(
    trail: Trail,
) -> None:
    # Given real files, and notifications naming: the real key under another bucket's name, a
    # gzip put outside AWSLogs/, one nested under a second AWSLogs/, a digest, and a real file
    files = trail.put(trail_files(1))
    (key,) = files
    outside = "uploads/" + key
    nested = "AWSLogs/999988887777/extra/" + key
    digest = key.replace("/CloudTrail/", "/CloudTrail-Digest/").replace("_CloudTrail_", "_CloudTrail-Digest_")
    s3 = trail.aws.client("s3")
    for other in (outside, nested, digest):
        s3.put_object(Bucket=trail.bucket, Key=other, Body=files[key])
    trail.send(
        cloudtrail_notice("attacker-bucket", key),
        cloudtrail_notice(trail.bucket, outside, nested, digest, key),
    )
    calls = Calls(trail.aws)

    # When a run drains the queue
    report = trail.run(QUIET)

    # Then only the trail's file is read; the others are skips by reason; both messages are gone
    assert calls.read == Counter({key: 1})
    assert report.keys_skipped == Counter(
        {"notification_other_bucket": 1, "notification_outside_prefix": 2, "key_digest": 1}
    )
    assert trail.left() == 0


def test_given_a_notice_of_a_file_named_before_the_late_tolerance_then_it_is_not_read(
    trail: Trail,
) -> None:
    # Given a file named two days before the run (a bucket writer's, or a notice replayed), which
    # the listing would not read either
    files = trail.put(trail_files(1, first=QUIET - timedelta(days=2)))
    trail.send(cloudtrail_notice(trail.bucket, *files))
    calls = Calls(trail.aws)

    # When a run drains the queue
    report = trail.run(QUIET)

    # Then the file is a stale skip, not read, and its message deleted
    assert calls.operations["GetObject"] == 0
    assert report.keys_skipped["notification_stale"] == 1
    assert trail.left() == 0


def test_given_a_file_named_after_the_runs_time_then_its_message_waits_for_the_next_run(
    trail: Trail,
) -> None:
    # Given a notification of a file delivered two minutes after the run's scheduled time
    files = trail.put(trail_files(1, first=QUIET + timedelta(minutes=2)))
    trail.send(cloudtrail_notice(trail.bucket, *files))

    # When the run drains the queue, and then the next one
    first = trail.run(QUIET)
    left = trail.left()
    second = trail.run(QUIET + timedelta(minutes=15))

    # Then the first keeps the message (visible again at once), the next reads the file
    assert (first.files_read, first.intake_kept, left) == (0, 1, 1)
    assert second.files_read == 1
    assert trail.left() == 0


def test_given_files_handed_back_then_their_messages_are_kept_until_a_run_reads_them(
    trail: Trail,
) -> None:
    # Given two notified files, and S3 throttling the reads of one of them in the first run
    files = trail.put(trail_files(2))
    throttled, fine = files
    trail.send(cloudtrail_notice(trail.bucket, throttled), cloudtrail_notice(trail.bucket, fine))

    def slow_down(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == throttled:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "GetObject")

    trail.aws.events.register("before-parameter-build.s3.GetObject", slow_down, unique_id="slow")
    first = trail.run(QUIET)
    trail.aws.events.unregister("before-parameter-build.s3.GetObject", unique_id="slow")

    # When the next run drains the queue
    second = trail.run(QUIET + timedelta(minutes=15))

    # Then the throttled file's message was kept and brings it to the next run: nothing lost
    assert (first.files_read, first.files_released, first.intake_kept) == (1, 1, 1)
    assert (second.intake_messages, second.files_read) == (1, 1)
    assert trail.left() == 0


def test_given_a_flood_of_messages_when_a_run_has_a_budget_then_it_stops_there_and_the_rest_waits(
    trail: Trail,
) -> None:
    # Given 60 forged notices of keys outside the trail queued before 3 real ones
    files = trail.put(trail_files(3))
    forged = [cloudtrail_notice(trail.bucket, f"junk/{n}.json.gz") for n in range(60)]
    trail.send(*forged, *(cloudtrail_notice(trail.bucket, key) for key in files))
    budget = RunOptions(policy=OPTIONS.policy, intake_messages=40)

    # When runs with a budget of 40 messages drain the queue
    first = trail.run(QUIET, budget)
    second = trail.run(QUIET + timedelta(minutes=15), budget)

    # Then each stops at its budget (the backlog flagged, no miss counted), the forged keys are
    # skips, and the real files are read once all the same
    assert first.intake_messages <= 40
    assert first.intake_backlog
    assert first.files_read + second.files_read == 3
    assert (
        first.keys_skipped["notification_outside_prefix"] + second.keys_skipped["notification_outside_prefix"]
        == 60
    )
    assert trail.left() == 0


def test_given_a_queue_that_refuses_when_a_run_starts_then_it_lists_the_window_instead(
    trail: Trail,
) -> None:
    # Given files in the bucket, and the queue refusing the function (a policy gone wrong)
    trail.put(trail_files(2))

    def denied(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ReceiveMessage")

    trail.aws.events.register("before-call.sqs.ReceiveMessage", denied, unique_id="denied")

    # When a run that would not reconcile starts
    report = trail.run(QUIET)

    # Then it lists its window and reads the files, saying the queue failed
    assert report.intake_failed
    assert report.reconciled
    assert report.files_read == 2
    assert emitted_metrics(report)["IntakeFailed"] == [1.0]


# ---- settings ---------------------------------------------------------------------------------


def test_given_notifications_without_a_queue_then_the_settings_are_refused() -> None:
    environ = {
        "TRAIL_BUCKET": "trail-bucket",
        "TABLE_NAME": "table",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
        "INTAKE": "Notifications",
    }
    with pytest.raises(SettingsError, match="INTAKE_QUEUE_URL"):
        Settings.from_environ(environ)
    with pytest.raises(SettingsError, match="RECONCILE_MINUTES"):
        Settings.from_environ({**environ, "INTAKE_QUEUE_URL": "https://q", "RECONCILE_MINUTES": "50"})
    settings = Settings.from_environ(
        {**environ, "INTAKE_QUEUE_URL": "https://q", "RECONCILE_MINUTES": "1440"}
    )
    assert settings.run_options().reconcile_every == timedelta(days=1)
    assert Settings.from_environ({**environ, "INTAKE": "List"}).intake == "List"


@pytest.mark.parametrize(
    "every", [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=6), timedelta(days=1)]
)
def test_given_a_reconciliation_interval_then_one_run_in_each_interval_reconciles(every: timedelta) -> None:
    # Given a day of runs 15 minutes apart, at an offset as EventBridge's rate schedules have
    start = T0 + timedelta(minutes=7)
    runs = [start + timedelta(minutes=15 * n) for n in range(4 * 24)]

    # When each asks whether it reconciles
    due = [at for at in runs if reconcile_due(at, every)]

    # Then one in each interval does, evenly spaced
    assert len(due) == timedelta(days=1) // every
    assert all(b - a == every for a, b in pairwise(due))


# ---- the deployed handler, fan-out included ----------------------------------------------------


@pytest.mark.handler
def test_given_notifications_and_fan_out_when_the_handler_runs_then_alerts_and_tables_equal_list_mode(
    country_test_mmdb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the fan-out tests' day of trail with an attack, and the single Lambda's alerts and
    # tables over it in List mode
    from tests.test_fanout import PARTIALS, SETTINGS, TICKS, TRAIL, alerts, drain, scheduled, state
    from tests.test_fanout import world as fanout_world

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        session, deployment, _ = fanout_world()
        set_environment(monkeypatch, deployment, str(country_test_mmdb), **SETTINGS)
        listing = load_function("detector")
        for tick in TICKS:
            listing.lambda_handler(scheduled(tick), FakeLambdaContext())
        reference_state = state(session, deployment.table)
        reference_alerts = alerts(session, deployment.queue_url)

    # When the same trail is notified file by file (latest first) on an intake queue, and the
    # handler runs in Notifications mode and fan-out mode at the same ticks, neither reconciling
    with mock_aws():
        session, deployment, tasks_url = fanout_world()
        intake_url = session.client("sqs").create_queue(
            QueueName="trailgeo-intake",
            Attributes={"VisibilityTimeout": "900"},  # as IntakeQueue's
        )["QueueUrl"]
        for key in reversed(TRAIL):
            session.client("sqs").send_message(
                QueueUrl=intake_url, MessageBody=cloudtrail_notice(deployment.bucket, key)
            )
        set_environment(
            monkeypatch,
            deployment,
            str(country_test_mmdb),
            **SETTINGS,
            INTAKE="Notifications",
            INTAKE_QUEUE_URL=intake_url,
            FANOUT_QUEUE_URL=tasks_url,
            PARTIALS_BUCKET=PARTIALS,
            FILES_PER_TASK="7",
        )
        # moto's SQS is not safe for parallel requests (two receives can take one message, its
        # pending groups are iterated while changed); real SQS is. The run drains one at a time.
        monkeypatch.setattr(
            intake, "SqsNotificationIntake", functools.partial(SqsNotificationIntake, concurrency=1)
        )
        notified = load_function("detector")
        rng = random.Random(5)
        summaries = []
        for tick in TICKS:
            summaries.append(notified.lambda_handler(scheduled(tick), FakeLambdaContext()))
            assert all(not r["batchItemFailures"] for r in drain(session, tasks_url, notified, rng))
        notified_state = state(session, deployment.table)
        notified_alerts = alerts(session, deployment.queue_url)

    # Then the planner took its files from the queue, listed nothing, kept the files named after
    # the first tick for the second, and the workers' alerts and tables are List mode's
    assert not any(reconcile_due(tick, timedelta(hours=1)) for tick in TICKS)
    # (moto's queue may hand one message to two of the parallel receives: SQS delivers at least once)
    assert summaries[0]["intake_messages"] >= len(TRAIL)
    assert summaries[0]["intake_kept"] > 0
    assert sum(s["files_new"] for s in summaries) == len(TRAIL)
    assert [s["tasks_dispatched"] > 0 for s in summaries] == [True, True]
    assert notified_state == reference_state
    assert notified_alerts == reference_alerts
    assert [a["source"]["geo"]["country_iso_code"] for a in notified_alerts] == ["BT"]
