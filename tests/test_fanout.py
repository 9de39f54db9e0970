"""Fan-out mode end to end against moto: the scheduled run plans and sends tasks to SQS, workers
of the same code (``task_handler``) read them, the last one reduces. Same alerts, same tables
as the single Lambda on the same data."""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tests.aws import (
    Deployment,
    FakeLambdaContext,
    create_deployment,
    deps_for,
    load_function,
    receive_alerts,
    set_environment,
)
from tests.builders import (
    BOB,
    BT_IP,
    GB_IP,
    SE_IP,
    T0,
    US_IP,
    files_by_delivery,
    record,
)
from tests.conftest import EVENTS
from trailgeo.adapters.aws import S3LogSource
from trailgeo.adapters.fanout import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    DynamoFanoutTracker,
    FanoutError,
    S3PartialStore,
    SqsTaskQueue,
    message_batches,
)
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import (
    MemoryFanoutTracker,
    MemoryFrequencyStore,
    MemoryLedger,
    MemoryOutbox,
    MemoryPartialStore,
)
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect
from trailgeo.app.fanout import FANOUT_LEASE, REDUCE_LEASE, Fanout, plan, run_task, task_parts
from trailgeo.core.scoring import ScoringPolicy
from trailgeo.ports import FanoutTask, TransientReadError

REGION = "us-east-1"
PARTIALS = "trailgeo-partials"
ATTACK_AT = T0 + timedelta(hours=22)
BOOKKEEPING = ("F#", "RUN", "STATE", "FANOUT", "OUTBOX")


def trail() -> dict[str, bytes]:
    """22 hours of alice (US) and bob (GB, SE) in 5-minute files, then alice's key used from BT."""
    rng = random.Random(11)
    events = []
    for minute in range(0, 22 * 60, 7):
        when = T0 + timedelta(minutes=minute)
        events.append(record(when, ip=US_IP, name=rng.choice(["DescribeInstances", "ListBuckets"])))
        if minute % 3 == 0:
            events.append(record(when, ip=rng.choice([GB_IP, SE_IP]), arn=BOB, key="AKIABOB00000000001"))
    events += [
        record(
            ATTACK_AT + timedelta(minutes=m), ip=BT_IP, name=name, source=source, agent="python-requests/2.31"
        )
        for m, (source, name) in enumerate(
            [("sts.amazonaws.com", "GetCallerIdentity"), ("iam.amazonaws.com", "CreateAccessKey")]
        )
    ]
    return files_by_delivery(events, minutes=5)


TRAIL = trail()


def world() -> tuple[Any, Deployment, str]:
    """Inside mock_aws: the deployment with the trail in its bucket, the partials bucket and the
    fan-out queue (its URL)."""
    session = boto3.session.Session(region_name=REGION)
    deployment = create_deployment(session)
    s3 = session.client("s3")
    for key, body in TRAIL.items():
        s3.put_object(Bucket=deployment.bucket, Key=key, Body=body)
    s3.create_bucket(Bucket=PARTIALS)
    queue_url = session.client("sqs").create_queue(QueueName="trailgeo-fanout")["QueueUrl"]
    return session, deployment, queue_url


SINGLE_LAMBDA_STATES: dict[tuple[Path, datetime], dict[tuple[str, str], Any]] = {}


def single_lambda_state(geo: MaxMindGeoResolver, tick: datetime) -> dict[tuple[str, str], Any]:
    """The tables one single-Lambda run over the whole trail leaves, in a world of its own: the same
    for every test of the same database and tick, so it is run once and each test gets a copy."""
    if (geo.path, tick) not in SINGLE_LAMBDA_STATES:
        with mock_aws():
            session, deployment, _ = world()
            detect(tick, deps_for(session, geo, deployment, tick), OPTIONS)
            SINGLE_LAMBDA_STATES[geo.path, tick] = state(session, deployment.table)
    return copy.deepcopy(SINGLE_LAMBDA_STATES[geo.path, tick])


def state(session: Any, table: str) -> dict[tuple[str, str], Any]:
    """Counters, suppressions and alerts: everything but the run's own bookkeeping."""
    items = {}
    for page in session.client("dynamodb").get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            if not item["pk"]["S"].startswith(BOOKKEEPING):
                items[item["pk"]["S"], item["sk"]["S"]] = item
    return items


def alerts(session: Any, queue_url: str) -> list[dict[str, Any]]:
    return sorted(
        (json.loads(envelope["Message"]) for envelope in receive_alerts(session, queue_url)),
        key=lambda a: a["alert_id"],
    )


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    template = json.loads((EVENTS / "fanout-task.json").read_text())["Records"][0]
    return {
        "Records": [
            template | {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"]}
            for m in messages
        ]
    }


def drain(session: Any, queue_url: str, handler: Any, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Deliver the queue's tasks to ``task_handler`` in random order, one or several per event,
    deleting what succeeded (as the Lambda event source mapping does)."""
    sqs = session.client("sqs")
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return
        rng.shuffle(messages)
        cut = rng.randint(1, len(messages))
        for group in (messages[:cut], messages[cut:]):
            if not group:
                continue
            response = handler.task_handler(sqs_event(group), FakeLambdaContext())
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            for message in group:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            yield response


def scheduled(time: datetime) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "scheduled.json").read_text())
    event["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return event


TICKS = (T0 + timedelta(hours=21, minutes=45), ATTACK_AT + timedelta(minutes=15))
SETTINGS = {"LEARNING_DAYS": "0", "LEARNING_BUCKETS": "0", "LOOKBACK_MINUTES": "1440"}


def test_given_the_same_trail_when_fanned_out_then_alerts_and_tables_equal_the_single_lambda(
    country_test_mmdb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: the single Lambda's alerts and tables over a day of trail and an attack
    with mock_aws():
        session, deployment, _ = world()
        set_environment(monkeypatch, deployment, str(country_test_mmdb), **SETTINGS)
        single = load_function("detector")
        single_runs = [single.lambda_handler(scheduled(tick), FakeLambdaContext()) for tick in TICKS]
        reference_state = state(session, deployment.table)
        reference_alerts = alerts(session, deployment.queue_url)

    # When: the same data goes through fan-out mode, tasks of 7 files delivered in random order
    with mock_aws():
        session, deployment, queue_url = world()
        set_environment(
            monkeypatch,
            deployment,
            str(country_test_mmdb),
            **SETTINGS,
            FANOUT_QUEUE_URL=queue_url,
            PARTIALS_BUCKET=PARTIALS,
            FILES_PER_TASK="7",
        )
        fanned = load_function("detector")
        rng = random.Random(3)
        planned = []
        for tick in TICKS:
            planned.append(fanned.lambda_handler(scheduled(tick), FakeLambdaContext()))
            responses = list(drain(session, queue_url, fanned, rng))
            assert all(not r["batchItemFailures"] for r in responses)
        fanout_state = state(session, deployment.table)
        fanout_alerts = alerts(session, deployment.queue_url)
        leftovers = session.client("s3").list_objects_v2(Bucket=PARTIALS).get("KeyCount", 0)

    # Then: the planner read nothing itself, the workers did it all, and nothing differs
    assert planned[0]["tasks_dispatched"] > 10
    assert single_runs[0]["files_read"] + single_runs[1]["files_read"] == len(TRAIL)
    assert [p["files_read"] for p in planned] == [0, 0]
    assert single_runs[1]["alerts_raised"] == 1
    assert fanout_state == reference_state
    assert fanout_alerts == reference_alerts
    assert [a["source"]["geo"]["country_iso_code"] for a in fanout_alerts] == ["BT"]
    assert leftovers == 0  # partials are deleted by the reduce


def fanout_of(session: Any, deployment: Deployment, queue_url: str) -> Fanout:
    return Fanout(
        queue=SqsTaskQueue(session.client("sqs"), queue_url),
        partials=S3PartialStore(session.client("s3"), PARTIALS),
        tracker=DynamoFanoutTracker(session.client("dynamodb"), deployment.table),
        files_per_task=9,
    )


def tasks_in(session: Any, queue_url: str) -> list[FanoutTask]:
    sqs = session.client("sqs")
    tasks = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            tasks.append(FanoutTask.from_json(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return tasks


def fan_out(
    session: Any,
    deployment: Deployment,
    queue_url: str,
    geo: MaxMindGeoResolver,
    tick: datetime,
    fanout: Fanout | None = None,
) -> tuple[Dependencies, Fanout, RunReport, list[FanoutTask]]:
    """Inside mock_aws: the scheduled run at ``tick`` in fan-out mode (``fanout``, or a new one);
    its dependencies, the fan-out, its report and the tasks it queued (taken off the queue)."""
    deps = deps_for(session, geo, deployment, tick)
    fanout = fanout or fanout_of(session, deployment, queue_url)
    planned = plan(tick, deps, OPTIONS, fanout)
    return deps, fanout, planned, tasks_in(session, queue_url)


OPTIONS = RunOptions(
    lookback=timedelta(hours=24),
    policy=ScoringPolicy(learning_days=0, learning_buckets=0),
    lease=FANOUT_LEASE,
    settle=timedelta(0),  # published by the reduce that raised them: the subject is the reduce, not the wait
)


def test_given_workers_that_died_when_the_lease_ends_then_a_later_run_takes_the_batch_over_exactly(
    country_test_mmdb: Path,
) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    tick = TICKS[1]
    reference = single_lambda_state(geo, tick)

    with mock_aws():
        # Given a fanned-out batch whose tasks were half done, then the workers died (DLQ)
        session, deployment, queue_url = world()
        deps, fanout, planned, tasks = fan_out(session, deployment, queue_url, geo, tick)
        assert planned.tasks_dispatched == len(tasks) > 2
        for task in tasks[: len(tasks) // 2]:
            assert run_task(task, deps, OPTIONS, fanout).reduced is None
        assert state(session, deployment.table) == {}  # nothing counted before the reduce

        # When the next run comes before the fan-out lease ends, then it leaves the batch alone
        soon = tick + timedelta(minutes=15)
        early = plan(
            soon,
            deps_for(session, geo, deployment, soon),
            OPTIONS,
            fanout,
        )
        assert early.files_recovered == 0
        assert early.files_in_progress_elsewhere == len(TRAIL)

        # When a run comes after it, then it takes the batch over in-process, under its run id
        later = tick + FANOUT_LEASE + timedelta(minutes=15)
        late_deps = deps_for(session, geo, deployment, later)
        takeover = plan(later, late_deps, OPTIONS, fanout)
        assert takeover.files_recovered == len(TRAIL)
        assert takeover.tasks_dispatched == 0

        # And a dead task delivered at last changes nothing: the batch is closed
        for task in tasks[len(tasks) // 2 :]:
            run_task(task, late_deps, OPTIONS, fanout)
        assert state(session, deployment.table) == reference


def test_given_the_last_task_delivered_twice_then_the_batch_is_reduced_once(country_test_mmdb: Path) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    tick = TICKS[1]
    with mock_aws():
        session, deployment, queue_url = world()
        baseline, fanout, _, baseline_tasks = fan_out(session, deployment, queue_url, geo, TICKS[0])
        for task in baseline_tasks:
            run_task(task, baseline, OPTIONS, fanout)
        deps, _, _, tasks = fan_out(session, deployment, queue_url, geo, tick, fanout)

        # When every task of the attack's window runs, then the last one again (at least once)
        results = [run_task(task, deps, OPTIONS, fanout) for task in tasks]
        reduced = [r.reduced for r in results if r.reduced is not None]
        after_first = state(session, deployment.table)
        again = run_task(tasks[-1], deps, OPTIONS, fanout)

        # Then one reduce, one alert, and the tables unchanged by the repeat
        assert len(reduced) == 1
        assert reduced[0].alerts_raised == 1
        assert reduced[0].files_read == sum(len(task.keys) for task in tasks)
        assert again.reduced is None
        assert state(session, deployment.table) == after_first
        assert len(receive_alerts(session, deployment.queue_url)) == 1


def test_given_a_task_whose_reads_throttle_when_sqs_delivers_it_again_then_nothing_is_lost_or_doubled(
    country_test_mmdb: Path,
) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    tick = TICKS[1]
    reference = single_lambda_state(geo, tick)

    with mock_aws():
        # Given a fanned-out window whose first task meets S3 SlowDown beyond botocore's retries
        session, deployment, queue_url = world()
        deps, fanout, _, tasks = fan_out(session, deployment, queue_url, geo, tick)
        calls = {"n": 0}

        def slow_down(**_: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "GetObject")

        deps.source.client.meta.events.register("before-call.s3.GetObject", slow_down)  # type: ignore[attr-defined]

        # When it runs, then it fails whole (its files stay claimed, nothing is marked done)
        with pytest.raises(TransientReadError, match="task 0"):
            run_task(tasks[0], deps, OPTIONS, fanout)
        assert state(session, deployment.table) == {}

        # When SQS delivers it again after the others, then the batch ends exactly as one run would
        results = [run_task(task, deps, OPTIONS, fanout) for task in [*tasks[1:], tasks[0]]]
        assert [r.reduced is not None for r in results] == [False] * (len(tasks) - 1) + [True]
        assert state(session, deployment.table) == reference


def test_given_a_message_that_is_not_a_task_then_the_worker_reports_it_failed_and_keeps_the_others(
    country_test_mmdb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mock_aws():
        session, deployment, queue_url = world()
        set_environment(
            monkeypatch,
            deployment,
            str(country_test_mmdb),
            **SETTINGS,
            FANOUT_QUEUE_URL=queue_url,
            PARTIALS_BUCKET=PARTIALS,
        )
        detector = load_function("detector")
        detector.lambda_handler(scheduled(TICKS[0]), FakeLambdaContext())
        (good, *_) = session.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)[
            "Messages"
        ]
        bad = {"MessageId": "not-a-task", "ReceiptHandle": "r", "Body": '{"alert_id": "x"}'}

        response = detector.task_handler(sqs_event([bad, good]), FakeLambdaContext())

        assert response["batchItemFailures"] == [{"itemIdentifier": "not-a-task"}]


def test_given_a_reducer_that_died_when_the_last_task_comes_back_after_its_lease_then_it_reduces(
    country_test_mmdb: Path,
) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    tick = TICKS[1]
    reference = single_lambda_state(geo, tick)

    with mock_aws():
        # Given every task done and the reduce claimed by an invocation that then died
        session, deployment, queue_url = world()
        deps, fanout, _, tasks = fan_out(session, deployment, queue_url, geo, tick)
        for task in tasks[:-1]:
            run_task(task, deps, OPTIONS, fanout)
        last = tasks[-1]
        assert fanout.tracker.claim_reduce(last.run_id, "dead-invocation", tick + REDUCE_LEASE, tick)

        # When SQS delivers the last task again within the lease, then nobody reduces
        assert run_task(last, deps, OPTIONS, fanout).reduced is None
        assert state(session, deployment.table) == {}

        # When it comes back after the lease (the next visibility timeout), then it reduces
        later = tick + REDUCE_LEASE + timedelta(minutes=1)
        late = deps_for(session, geo, deployment, later)
        assert run_task(last, late, OPTIONS, fanout).reduced is not None
        assert state(session, deployment.table) == reference


# An organization trail's keys behind the longest trail prefix (S3KeyPrefix takes 200 characters):
# about 360 bytes a key, so 760 of them (FilesPerTask goes to 1,000) are over SQS's 256 KiB a message.
LONG_PREFIX = "security/log-archive/" + "organization-trail-delivered-by-control-tower/" * 3 + "c" * 40 + "/"
ORG_ACCOUNT = "123456789012"


def org_trail_key(delivered: datetime, unique: int, prefix: str = LONG_PREFIX) -> str:
    region = "ap-southeast-2"
    return (
        f"{prefix}AWSLogs/o-abcdefghij0123456789/{ORG_ACCOUNT}/CloudTrail/{region}/{delivered:%Y/%m/%d}/"
        f"{ORG_ACCOUNT}_CloudTrail_{region}_{delivered:%Y%m%dT%H%MZ}_{unique:016X}.json.gz"
    )


def test_given_long_organization_trail_keys_when_a_window_is_fanned_out_then_every_task_reaches_the_queue(
    country_test_mmdb: Path,
) -> None:
    tick = T0 + timedelta(hours=2)
    with mock_aws():
        # Given 760 files of ~360-byte keys and a task queue as template.yaml makes it (256 KiB)
        session = boto3.session.Session(region_name=REGION)
        s3 = session.client("s3")
        s3.create_bucket(Bucket="org-trail")
        keys = [org_trail_key(T0 + timedelta(minutes=1 + i % 100), i) for i in range(760)]
        assert len(LONG_PREFIX) == 200
        for key in keys:
            s3.put_object(Bucket="org-trail", Key=key, Body=b"")
        queue_url = session.client("sqs").create_queue(
            QueueName="trailgeo-fanout", Attributes={"MaximumMessageSize": str(256 * 1024)}
        )["QueueUrl"]
        deps = Dependencies(
            source=S3LogSource(s3, "org-trail", LONG_PREFIX),
            geo=MaxMindGeoResolver(country_test_mmdb),
            store=MemoryFrequencyStore(),
            ledger=MemoryLedger(),
            outbox=MemoryOutbox(),
            sink=JsonLinesAlertSink(io.StringIO()),
            clock=lambda: tick,
        )
        fanout = Fanout(
            SqsTaskQueue(session.client("sqs"), queue_url), MemoryPartialStore(), MemoryFanoutTracker()
        )
        fanout.files_per_task = 1000

        # When the scheduled run plans the window
        planned = plan(tick, deps, OPTIONS, fanout)
        tasks = tasks_in(session, queue_url)

        # Then no SendMessageBatch was refused: every key is in exactly one task, in order
        assert planned.files_new == len(keys)
        assert planned.tasks_dispatched == len(tasks) == 2  # cut by bytes: 760 keys do not fit one
        assert sorted(task.index for task in tasks) == [0, 1]
        assert {task.tasks for task in tasks} == {2}
        queued = [key for task in sorted(tasks, key=lambda t: t.index) for key in task.keys]
        assert sorted(queued) == sorted(keys)
        assert max(len(task.to_json().encode()) for task in tasks) <= MAX_MESSAGE_BYTES


def test_given_task_messages_when_batched_then_each_request_is_within_sqs_limits() -> None:
    # Given messages of assorted sizes, some near SQS's limit of a message
    bodies = ["x" * size for size in (200_000, 100_000, 60_000, 250_000, *[1_000] * 25, 262_144)]

    # When cut into SendMessageBatch requests
    batches = message_batches(bodies)

    # Then in order, none over ten entries or 256 KiB in all, and none split needlessly
    assert [body for batch in batches for body in batch] == bodies
    assert all(len(batch) <= 10 for batch in batches)
    assert all(sum(len(body) for body in batch) <= MAX_BATCH_BYTES for batch in batches)
    assert [len(batch) for batch in batches] == [1, 2, 10, 10, 6, 1]
    with pytest.raises(FanoutError, match="over SQS"):
        message_batches(["x" * (MAX_MESSAGE_BYTES + 1)])


@pytest.mark.parametrize("files_per_task", [1, 200, 1000, 2000])
def test_given_keys_up_to_s3s_longest_when_split_into_tasks_then_each_task_fits_one_message(
    files_per_task: int,
) -> None:
    # Given keys as long as S3 allows (a bucket writer chooses names), mixed with ordinary ones
    rng = random.Random(5)
    keys = [
        org_trail_key(T0, i) if rng.random() < 0.5 else "AWSLogs/" + "k" * rng.randint(100, 1016)
        for i in range(3000)
    ]

    # When split into tasks
    parts = task_parts(keys, files_per_task)

    # Then every key once, in order, within the count and within one SQS message once encoded
    assert [key for part in parts for key in part] == keys
    assert all(1 <= len(part) <= files_per_task for part in parts)
    run_id, at = "a" * 24, T0 + timedelta(hours=23, minutes=59)
    sizes = [len(FanoutTask(run_id, at, 99999, 99999, part).to_json().encode()) for part in parts]
    assert max(sizes) <= MAX_MESSAGE_BYTES
