"""Continuous mode (``Continuous=Enabled``): an event-driven run on one batch of the intake queue's
notifications, as Lambda's SQS event source hands it over, against moto. The same pipeline as a
scheduled run's, under the same ledger; what it leaves to the schedule (listing, takeovers, the
watermark); and what a bucket writer or a queue sender can and cannot do with it."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws import FakeLambdaContext, deps_for, emitted_metrics, load_function, set_environment
from tests.builders import BT_IP, T0, US_IP, delivery_key, files_by_delivery, gz_file, record, write_tree
from tests.test_detect import counts
from tests.test_intake import (
    OPTIONS,
    QUIET,
    Calls,
    Trail,
    cloudtrail_notice,
    geo,
    object_created,
    s3_event,
    trail,
    trail_files,
)
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.intake import MAX_EVENT_RECORDS, SqsEventIntake
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect, detect_arrivals
from trailgeo.app.replay import arrival_batches, replay
from trailgeo.app.settings import SettingsError
from trailgeo.ports import IntakeError

__all__ = ["geo", "trail"]  # the fixtures, by name

ARRIVED = QUIET + timedelta(minutes=3)  # between two ticks: no scheduled run would be due


def sqs_event(*bodies: str, sender: str = "AIDAEXAMPLESENDER") -> dict[str, Any]:
    """An SQS event as Lambda's event source mapping delivers it, one record a message."""
    return {
        "Records": [
            {
                "messageId": f"msg-{n}",
                "receiptHandle": f"receipt-{n}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SenderId": sender},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:trailgeo-intake",
                "awsRegion": "us-east-1",
            }
            for n, body in enumerate(bodies)
        ]
    }


def arrivals_run(
    trail: Trail, event: dict[str, Any], *, at: datetime = ARRIVED
) -> tuple[RunReport, SqsEventIntake, Dependencies]:
    """An event-driven run at ``at`` on ``event``, through the adapters (moto)."""
    deps = deps_for(trail.aws, trail.geo, trail.deployment, at)
    batch = SqsEventIntake.from_event(event, trail.bucket)
    deps.intake = batch
    return detect_arrivals(at, deps, OPTIONS), batch, deps


# ---- the run on a batch ------------------------------------------------------------------------


def test_given_a_batch_of_notices_when_an_arrivals_run_takes_it_then_it_reads_those_files_and_keeps_none(
    trail: Trail,
) -> None:
    # Given four files, named by a batch in the trail's SNS shape and EventBridge's, one file twice
    files = trail.put(trail_files(4))
    keys = list(files)
    event = sqs_event(
        cloudtrail_notice(trail.bucket, keys[0], keys[1]),
        object_created(trail.bucket, keys[2]),
        s3_event(trail.bucket, keys[3]),
        object_created(trail.bucket, keys[0]),
    )
    calls = Calls(trail.aws)

    # When an event-driven run takes the batch
    report, batch, deps = arrivals_run(trail, event)

    # Then it read each file once, listed nothing, and the event source deletes every message
    assert calls.read == Counter(dict.fromkeys(keys, 1))
    assert calls.operations["ListObjectsV2"] == 0
    assert (report.arrivals, report.files_read, report.events, report.intake_messages) == (True, 4, 8, 4)
    assert batch.failures() == []
    # And it left the watermark to the schedule
    assert deps.ledger.watermark() is None


def test_given_a_file_named_after_the_runs_time_then_only_its_message_comes_back_unread(
    trail: Trail,
) -> None:
    # Given a batch naming a delivered file and one named an hour ahead (a bucket writer's, or a skewed clock)
    files = trail_files(1)
    future = delivery_key(ARRIVED + timedelta(hours=1))
    files[future] = gz_file([record(ARRIVED, ip=US_IP)])
    trail.put(files)
    (delivered, _) = files
    event = sqs_event(cloudtrail_notice(trail.bucket, delivered), cloudtrail_notice(trail.bucket, future))
    calls = Calls(trail.aws)

    # When an event-driven run takes the batch
    report, batch, _ = arrivals_run(trail, event)

    # Then the future file is not read, and its message alone is reported failed: it comes back
    assert calls.read == Counter({delivered: 1})
    assert report.intake_kept == 1
    assert batch.failures() == ["msg-1"]


# ---- what it leaves to the schedule -----------------------------------------------------------


def test_given_a_dead_run_when_an_arrivals_run_starts_then_it_leaves_the_takeover_to_the_schedule(
    trail: Trail,
) -> None:
    # Given a run that claimed two files and died (its lease over by ARRIVED)
    files = trail.put(trail_files(2))
    dead = deps_for(trail.aws, trail.geo, trail.deployment, QUIET - timedelta(hours=1))
    dead.ledger.begin("dead-run", list(files), QUIET - timedelta(minutes=40), QUIET - timedelta(hours=1))
    dead.ledger.claim(list(files), "dead-run", QUIET - timedelta(minutes=40), QUIET - timedelta(hours=1))
    third = delivery_key(QUIET, account="210987654321")
    trail.aws.client("s3").put_object(Bucket=trail.bucket, Key=third, Body=gz_file([record(QUIET, ip=US_IP)]))
    calls = Calls(trail.aws)

    # When an event-driven run takes a batch naming a new file
    report, batch, _ = arrivals_run(trail, sqs_event(cloudtrail_notice(trail.bucket, third)))

    # Then it read that file only: the dead run's batch (which may be the one that kills its
    # reader) is taken over by the next scheduled run, not by every arrival
    assert calls.read == Counter({third: 1})
    assert report.files_recovered == 0
    assert batch.failures() == []
    scheduled = detect(
        QUIET + timedelta(minutes=15), deps_for(trail.aws, trail.geo, trail.deployment, ARRIVED), OPTIONS
    )
    assert scheduled.files_recovered == 2


def test_given_an_outage_when_arrivals_runs_go_on_then_the_next_scheduled_run_still_catches_up(
    trail: Trail,
) -> None:
    # Given a scheduled run six hours ago, then an outage of the schedule, and a file delivered
    # in it that no notification named
    trail.put(trail_files(1, first=QUIET - timedelta(hours=4)))
    before = QUIET - timedelta(hours=6)
    detect(before, deps_for(trail.aws, trail.geo, trail.deployment, before), OPTIONS)
    fresh = trail_files(1, first=QUIET)
    for key, body in fresh.items():
        trail.aws.client("s3").put_object(Bucket=trail.bucket, Key=key, Body=body)

    # When event-driven runs go on (a notification arrives), then the schedule comes back
    arrivals_run(trail, sqs_event(cloudtrail_notice(trail.bucket, *fresh)))
    back = QUIET + timedelta(minutes=15)
    report = detect(back, deps_for(trail.aws, trail.geo, trail.deployment, back), OPTIONS)

    # Then the arrivals did not move the watermark: the scheduled run lists from it and reads the
    # file no message named, though it fell out of its own look-back
    assert report.catch_up
    assert report.files_read == 1


# ---- the handler ------------------------------------------------------------------------------


def test_given_continuous_mode_when_the_handler_takes_a_batch_then_it_answers_with_the_messages_to_keep(
    trail: Trail, country_test_mmdb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the deployed function's environment with notification intake, and a batch naming a
    # delivered file, a future one and a poisoned message
    files = trail.put(trail_files(1))
    (key,) = files
    future = delivery_key(T0 + timedelta(days=400))
    set_environment(
        monkeypatch,
        trail.deployment,
        str(country_test_mmdb),
        INTAKE="Notifications",
        INTAKE_QUEUE_URL=trail.url,
    )
    detector = load_function("detector")
    event = sqs_event(
        cloudtrail_notice(trail.bucket, key), cloudtrail_notice(trail.bucket, future), "{not json"
    )

    # When the handler runs
    answer = detector.arrivals_handler(event, FakeLambdaContext())

    # Then the future file's message comes back; the read one and the poisoned one are deleted
    assert answer == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}


def test_given_list_intake_when_an_intake_batch_reaches_the_handler_then_it_is_refused(
    trail: Trail, country_test_mmdb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_environment(monkeypatch, trail.deployment, str(country_test_mmdb))
    detector = load_function("detector")
    with pytest.raises(SettingsError):
        detector.arrivals_handler(sqs_event(cloudtrail_notice(trail.bucket, "k")), FakeLambdaContext())


# ---- the adversary: a bucket writer, a queue sender ----------------------------------------------


def test_given_poisoned_messages_in_a_batch_then_they_are_counted_and_deleted_and_the_good_files_read(
    trail: Trail,
) -> None:
    # Given a batch of one good notification among messages that are no notification at all
    files = trail.put(trail_files(1))
    (key,) = files
    event = sqs_event(
        "{not json",
        json.dumps({"hello": "world"}),
        json.dumps({"s3Bucket": trail.bucket, "s3ObjectKey": ["k"] * 500}),
        cloudtrail_notice(trail.bucket, key),
    )

    # When an event-driven run takes it
    report, batch, _ = arrivals_run(trail, event)

    # Then the good file is read, each poisoned message counted by reason, and none comes back: a
    # message that can never name a file would otherwise be retried (and invoke) ten times
    assert report.files_read == 1
    assert report.intake_poisoned == Counter({"invalid_json": 1, "not_a_notification": 1, "too_many_keys": 1})
    assert batch.failures() == []
    assert emitted_metrics(report)["IntakeMessagesPoisoned"] == [3.0]


def test_given_a_flood_of_objects_outside_the_trail_then_a_batch_reads_nothing_and_keeps_nothing(
    trail: Trail,
) -> None:
    # Given a bucket writer's thousand objects beside the trail's files (another folder, the
    # digests, another bucket's name): EventBridge names each of them

    bodies = [object_created(trail.bucket, f"AWSLogs/123456789012/Config/x{n}.json.gz") for n in range(500)]
    bodies += [object_created("other-bucket", delivery_key(QUIET)) for _ in range(500)]
    calls = Calls(trail.aws)

    # When an event-driven run takes the batch
    report, batch, _ = arrivals_run(trail, sqs_event(*bodies))

    # Then nothing is read, the keys are counted skips, and every message is deleted at once
    assert calls.operations["GetObject"] == 0
    assert report.keys_skipped["notification_other_bucket"] == 500
    assert sum(report.keys_skipped.values()) == 1000
    assert batch.failures() == []


def test_given_an_event_of_more_records_than_the_event_source_sends_then_it_is_refused_whole() -> None:
    event = sqs_event(*(["{}"] * (MAX_EVENT_RECORDS + 1)))
    with pytest.raises(IntakeError):
        SqsEventIntake.from_event(event, "b")


def test_given_a_message_the_scheduled_run_drained_when_its_file_also_arrives_in_a_batch_then_it_is_read_once(
    trail: Trail,
) -> None:
    # Given a file named on the queue (the trail's topic) and in a batch (EventBridge's event)
    files = trail.put(trail_files(1))
    (key,) = files
    trail.send(cloudtrail_notice(trail.bucket, key))
    calls = Calls(trail.aws)

    # When the event-driven run and then the scheduled run's drain both see it
    first, batch, _ = arrivals_run(trail, sqs_event(object_created(trail.bucket, key)))
    second = trail.run(QUIET + timedelta(minutes=15))

    # Then it is read once, and both messages are done with
    assert calls.read == Counter({key: 1})
    assert (first.files_read, second.files_read, second.intake_messages) == (1, 0, 1)
    assert batch.failures() == []


# ---- the replay's continuous tick schedule ---------------------------------------------------------


def test_given_deliveries_then_the_event_source_hands_a_batch_over_a_window_after_its_first_file() -> None:
    # Given files delivered at 0:00, 0:00:30, 0:02 and 0:02:30, and a 60-second batching window
    times = [T0, T0 + timedelta(seconds=30), T0 + timedelta(minutes=2), T0 + timedelta(minutes=2, seconds=30)]

    # When the event source's invocations are laid out, Then two batches: each opened by its first
    # delivery, handed over a window later with what arrived by then
    assert arrival_batches(times, timedelta(seconds=60)) == [
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=3),
    ]
    assert arrival_batches([], timedelta(seconds=60)) == []


def test_given_an_attack_when_replayed_in_continuous_mode_then_it_is_detected_a_window_after_its_file(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given ten days of a principal's calls from the US, then calls from BT, delivered at 03:20
    history = [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]
    attack_at = T0 + timedelta(days=10, hours=3)
    write_tree(tmp_path, files_by_delivery([*history, record(attack_at, ip=BT_IP)]))
    delivered = attack_at + timedelta(minutes=20)

    # When replayed on the 15-minute schedule, and in continuous mode with a 60-second window
    alerts = {}
    states = {}
    for mode, window in (("schedule", None), ("continuous", timedelta(seconds=60))):
        out = io.StringIO()
        summary, states[mode] = replay(
            tmp_path, geo, JsonLinesAlertSink(out), RunOptions(), continuous=window
        )
        alerts[mode] = [json.loads(line) for line in out.getvalue().splitlines()]
        if window is not None:
            assert summary.arrival_runs == len(files_by_delivery(history)) + 1

    # Then one alert each: the schedule's at the next tick (03:30), continuous mode's a window
    # after the delivery (03:21); and the tables count the same
    assert [a["detected_at"] for a in alerts["schedule"]] == [
        f"{delivered + timedelta(minutes=10):%Y-%m-%dT%H:%M:%SZ}"
    ]
    assert [a["detected_at"] for a in alerts["continuous"]] == [
        f"{delivered + timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ}"
    ]
    assert counts(states["continuous"].store) == counts(states["schedule"].store)
