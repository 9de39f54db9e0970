"""DynamoDB, S3 and SNS adapters against moto; AWS faults injected with botocore's Stubber."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from tests.aws import BUCKET, TABLE, Deployment, create_deployment, deps_for
from tests.builders import BT_IP, T0, delivery_key, files_by_delivery, gz_file, record, trail_record
from tests.test_alerts import established
from trailgeo.adapters.aws import REFUSED_RETRY_WINDOW, S3LogSource, SnsAlertSink
from trailgeo.adapters.dynamodb import DynamoFrequencyStore, DynamoLedger, DynamoOutbox
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.app.detect import RunOptions, detect
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.alert_builder import build_alert
from trailgeo.core.alerts import Alert, AlertIncident, paging_filter_policy
from trailgeo.core.counters import CounterDelta
from trailgeo.core.scoring import ScoringPolicy, score_group
from trailgeo.ports import (
    ObjectGoneError,
    ObjectUnreadableError,
    PublishError,
    Suppression,
    TransientReadError,
)

NOW = datetime(2026, 10, 2, tzinfo=UTC)
NOW_HOUR = int(NOW.timestamp()) // 3600


@pytest.fixture
def deployment(aws: Any) -> Deployment:
    return create_deployment(aws)


def delta(hour: int, events: int = 1) -> CounterDelta:
    d = CounterDelta()
    for _ in range(events):
        d.observe(hour, f"2026-10-01T{hour % 24:02d}:00:00Z")
    return d


def test_given_two_runs_racing_on_one_counter_then_the_loser_merges_and_nothing_is_lost(
    aws: Any, deployment: Deployment
) -> None:
    client = aws.client("dynamodb")
    key = ("M#ec2.amazonaws.com:DescribeInstances", "C#US")
    first, second = DynamoFrequencyStore(client, TABLE), DynamoFrequencyStore(client, TABLE)
    stale = first.load([key])  # both runs read the same (empty) history
    first.commit({key: delta(100)}, stale, "run-a")

    stats = second.commit({key: delta(101)}, stale, "run-b")

    state = first.load([key])[key[0]][key[1]]
    assert stats.conflicts == 1
    assert (state.buckets, state.version) == (2, 2)
    assert state.recent_hours == (100, 101)
    assert state.recent_runs == ("run-a", "run-b")


def test_given_a_total_and_its_countries_then_the_total_carries_the_distribution(
    aws: Any, deployment: Deployment
) -> None:
    store = DynamoFrequencyStore(aws.client("dynamodb"), TABLE)
    keys = {("M#m", "C#US"): delta(10), ("M#m", "C#DE"): delta(11), ("M#m", "TOTAL"): delta(10)}
    keys[("M#m", "TOTAL")].observe(11, "x")
    store.commit(keys, {}, "run-1")

    total = store.load([("M#m", "TOTAL")])["M#m"]["TOTAL"]

    assert total.buckets == 2
    assert {cc: b for cc, (b, _) in total.countries.items()} == {"US": 1, "DE": 1}


def test_given_a_file_claimed_by_a_live_run_then_another_run_cannot_take_it(
    aws: Any, deployment: Deployment
) -> None:
    ledger = DynamoLedger(aws.client("dynamodb"), TABLE)
    lease = NOW + timedelta(minutes=20)
    ledger.begin("run-a", ["k1", "k2", "k4"], lease, NOW)
    assert ledger.claim(["k1", "k2"], "run-a", lease, NOW) == ["k1", "k2"]  # died before claiming k4
    assert ledger.claim(["k1", "k3"], "run-b", lease, NOW) == ["k3"]
    ledger.release(["k2"], "run-a")
    assert ledger.expired_runs(NOW) == []

    # the owner's lease expires: its run record says what to take over, under its own run id
    later = NOW + timedelta(minutes=30)
    assert ledger.expired_runs(later) == [("run-a", ["k1", "k2", "k4"])]
    assert ledger.claim(["k1"], "run-b", later + timedelta(minutes=20), later, takeover=True) == []
    # k2 was handed back (a fresh run takes it), k4 was never claimed: it is the dead run's to finish
    assert ledger.claim(["k1", "k2", "k4"], "run-a", later + timedelta(minutes=20), later, takeover=True) == [
        "k1",
        "k4",
    ]
    assert ledger.expired_runs(later) == []  # the takeover renewed the run's lease
    assert set(ledger.status(["k1", "k2", "k3", "k4"])) == {"k1", "k3", "k4"}
    ledger.complete({"k1": "done", "k4": "done"}, "run-a", later)
    assert ledger.status(["k1"])["k1"].state == "done"
    assert ledger.expired_runs(later + timedelta(hours=1)) == []


def test_given_a_batch_of_5000_files_when_its_run_closes_then_one_write_marks_them_done(
    aws: Any, deployment: Deployment
) -> None:
    # Given a run of 5,000 organization-trail keys (a full batch, packed into its run record) that
    # claimed them; its files' claims are followed through a sample (a claim is one put per file,
    # whatever the batch: claiming all 5,000 in moto took half a minute and showed nothing more)
    client = aws.client("dynamodb")
    ledger = DynamoLedger(client, TABLE)
    keys = [
        f"AWSLogs/o-abcdef1234/{100000000000 + i * 7919:012d}/CloudTrail/eu-west-1/2026/11/28/"
        f"{100000000000 + i * 7919:012d}_CloudTrail_eu-west-1_20261128T12{i % 60:02d}Z_{i:016x}.json.gz"
        for i in range(5000)
    ]
    assert sum(len(key) for key in keys) > 400_000  # unpacked, the keys would not fit in one item
    sample = keys[:3] + keys[3::97] + keys[-1:]
    lease = NOW + timedelta(minutes=20)
    ledger.begin("run-a", keys, lease, NOW)
    assert ledger.claim(sample, "run-a", lease, NOW) == sample
    assert ledger.expired_runs(NOW + timedelta(hours=1)) == [("run-a", keys)]
    assert {entry.state for entry in ledger.status(sample).values()} == {"claimed"}

    # When it closes, one file skipped (its outcome kept), one handed back for a later run
    ledger.release([keys[1]], "run-a")
    outcomes = {key: "done" for key in keys if key != keys[1]} | {keys[0]: "skipped:not_gzip"}
    ledger.complete(outcomes, "run-a", NOW)

    # Then every other file is done in that one write, the skipped one with its reason
    status = ledger.status(sample)
    assert keys[1] not in status
    assert set(status) == set(sample) - {keys[1]}
    assert {entry.state for entry in status.values()} == {"done"}
    assert status[keys[0]].outcome == "skipped:not_gzip"
    assert status[keys[2]].outcome == "done"
    assert ledger.expired_runs(NOW + timedelta(hours=1)) == []
    run = client.get_item(TableName=TABLE, Key={"pk": {"S": "RUN"}, "sk": {"S": "run-a"}})["Item"]
    assert run["files"]["N"] == "4999"
    assert "kz" not in run  # the keys were only needed while the run could die


def test_given_a_claim_whose_response_was_lost_when_the_put_is_retried_then_the_retry_wins(
    aws: Any, deployment: Deployment
) -> None:
    # Given claims that landed but whose responses were lost (botocore then retries the same put)
    ledger = DynamoLedger(aws.client("dynamodb"), TABLE)
    lease = NOW + timedelta(minutes=20)
    assert ledger.claim(["k1"], "run-a", lease, NOW) == ["k1"]
    later, new_lease = NOW + timedelta(minutes=30), NOW + timedelta(minutes=50)
    assert ledger.claim(["k1"], "run-a", new_lease, later, takeover=True) == ["k1"]

    # When the very same puts are retried, then they win again: the run reads the files it holds
    assert ledger.claim(["k1"], "run-a", new_lease, later, takeover=True) == ["k1"]
    assert ledger.claim(["k2"], "run-a", lease, NOW) == ["k2"]
    assert ledger.claim(["k2"], "run-a", lease, NOW) == ["k2"]
    # And another run does not, nor another invocation that planned the same batch (same run id)
    assert ledger.claim(["k1", "k2"], "run-b", new_lease, later) == []
    assert DynamoLedger(aws.client("dynamodb"), TABLE).claim(["k2"], "run-a", lease, NOW) == []


def alert() -> Alert:
    aggregate = RunAggregate(geolocate=lambda ip: "BT")
    aggregate.add(trail_record(record(T0, ip=BT_IP)))
    (group,) = aggregate.groups.values()
    history = established("ec2.amazonaws.com:DescribeInstances", NOW_HOUR)
    built = build_alert(
        score_group(group, history, ScoringPolicy(learning_days=0), NOW_HOUR), 50.0, NOW, "run-1"
    )
    assert built is not None
    return built


def test_given_sns_throttling_then_publish_raises_and_the_outbox_keeps_the_alert(
    aws: Any, deployment: Deployment
) -> None:
    sns = aws.client("sns")
    outbox = DynamoOutbox(aws.client("dynamodb"), TABLE)
    the_alert = alert()
    assert outbox.put(the_alert)
    assert not outbox.put(the_alert)  # queued once only

    with Stubber(sns) as stub:
        stub.add_client_error("publish", service_error_code="Throttled", http_status_code=400)
        with pytest.raises(PublishError, match="Throttled"):
            SnsAlertSink(sns, deployment.topic_arn).publish(the_alert)
    assert [a.alert_id for a in outbox.pending()] == [the_alert.alert_id]

    message_id = SnsAlertSink(sns, deployment.topic_arn).publish(the_alert)
    outbox.mark_sent(the_alert.alert_id, message_id)
    assert outbox.pending() == []


def test_given_the_trail_bucket_then_listing_finds_every_account_and_region_and_reads_objects(
    aws: Any, deployment: Deployment
) -> None:
    s3 = aws.client("s3")
    inside = delivery_key(NOW - timedelta(minutes=30), org="o-a1b2c3d4e5", account="111122223333")
    other_region = delivery_key(NOW - timedelta(minutes=40), account="444455556666", region="eu-west-1")
    too_old = delivery_key(NOW - timedelta(hours=5), account="444455556666", region="eu-west-1")
    for key in (inside, other_region, too_old):
        s3.put_object(Bucket=BUCKET, Key=key, Body=gz_file([]))
    source = S3LogSource(s3, BUCKET)

    window = source.list_window(NOW - timedelta(hours=2), NOW)

    assert sorted(o.key for o in window.objects) == sorted([inside, other_region])
    assert source.read(inside).startswith(b"\x1f\x8b")
    with pytest.raises(ObjectGoneError):
        source.read(inside.replace(".json.gz", "-gone.json.gz"))


def refuse_get(s3: Any, code: str, status: int, keys: set[str], *, delete: bool = False) -> None:
    """GetObject of ``keys`` fails with ``code`` (after deleting the object, with ``delete``: a
    bucket writer removing a listed file, which S3 answers with 403 without s3:ListBucket on it)."""

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] not in keys:
            return
        if delete:
            s3.delete_object(Bucket=params["Bucket"], Key=params["Key"])
        response: Any = {
            "Error": {"Code": code, "Message": "injected"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        raise ClientError(response, "GetObject")

    s3.meta.events.register("before-parameter-build.s3.GetObject", refuse)


def test_given_a_listed_object_deleted_when_s3_answers_403_then_it_is_gone_not_retried(
    aws: Any, deployment: Deployment
) -> None:
    # Given a listed object deleted before it is read, and S3 answering 403 (no s3:ListBucket on it)
    s3 = aws.client("s3")
    key = delivery_key(NOW - timedelta(minutes=30))
    s3.put_object(Bucket=BUCKET, Key=key, Body=gz_file([]))
    refuse_get(s3, "AccessDenied", 403, {key}, delete=True)

    # When it is read, then it is gone: skipped once, not handed back to every later run
    with pytest.raises(ObjectGoneError):
        S3LogSource(s3, BUCKET).read(key)


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("KMS.AccessDeniedException", 403, "access_denied"),
        ("AccessDenied", 403, "access_denied"),
        ("InvalidRequest", 400, "refused"),
    ],
)
def test_given_an_object_s3_refuses_then_it_is_retried_while_young_and_skipped_once_old(
    aws: Any, deployment: Deployment, code: str, status: int, reason: str
) -> None:
    # Given an object that is there but refused (a missing kms:Decrypt, an object policy, SSE-C)
    s3 = aws.client("s3")
    key = delivery_key(NOW - timedelta(minutes=30))
    s3.put_object(Bucket=BUCKET, Key=key, Body=gz_file([]))
    refuse_get(s3, code, status, {key})
    source = S3LogSource(s3, BUCKET)

    # When it is read within a day of landing, then a later run tries again (a permission being fixed)
    with pytest.raises(TransientReadError, match=re.escape(code)):
        source.read(key)

    # When it is still refused a day later, then it is skipped with its reason, no longer retried
    source.clock = lambda: datetime.now(tz=UTC) + REFUSED_RETRY_WINDOW + timedelta(minutes=5)
    with pytest.raises(ObjectUnreadableError, match=reason) as refused:
        source.read(key)
    assert refused.value.reason == reason


def test_given_s3_slowdown_then_the_read_is_retried_later_however_old_the_object(
    aws: Any, deployment: Deployment
) -> None:
    s3 = aws.client("s3")
    key = delivery_key(NOW - timedelta(days=3))
    s3.put_object(Bucket=BUCKET, Key=key, Body=gz_file([]))
    refuse_get(s3, "SlowDown", 503, {key})
    source = S3LogSource(s3, BUCKET, clock=lambda: datetime.now(tz=UTC) + timedelta(days=3))
    with pytest.raises(TransientReadError, match="SlowDown"):
        source.read(key)
    s3 = aws.client("s3")
    source = S3LogSource(s3, BUCKET, clock=lambda: datetime.now(tz=UTC) + timedelta(days=3))
    with Stubber(s3) as stub:  # a KMS refusal for a key that cannot even be listed now: retried later
        stub.add_client_error("get_object", service_error_code="KMS.DisabledException", http_status_code=400)
        stub.add_client_error("list_objects_v2", service_error_code="SlowDown", http_status_code=503)
        with pytest.raises(TransientReadError, match=r"KMS\.DisabledException"):
            source.read(key)


def test_given_a_listed_file_deleted_before_its_read_then_the_run_counts_it_gone_and_moves_the_watermark(
    aws: Any, deployment: Deployment, country_test_mmdb: Path
) -> None:
    # Given a window of three files, one of which is deleted between the listing and its read (403)
    s3 = aws.client("s3")
    tick = T0 + timedelta(hours=2)
    files = files_by_delivery(
        [record(T0 + timedelta(minutes=20 * i), ip=BT_IP) for i in range(5)], minutes=30
    )
    for key, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    deleted = sorted(files)[1]
    deps = deps_for(aws, MaxMindGeoResolver(country_test_mmdb), deployment, tick)
    refuse_get(deps.source.client, "AccessDenied", 403, {deleted}, delete=True)  # type: ignore[attr-defined]

    # When the run reads the window
    report = detect(tick, deps, RunOptions(lookback=timedelta(hours=2)))

    # Then the deleted file is counted gone, nothing is handed back, and the watermark advances
    assert report.files_read == len(files) - 1
    assert dict(report.files_skipped) == {"gone": 1}
    assert report.files_released == 0
    assert deps.ledger.watermark() == tick


def test_given_a_jsonl_sink_then_each_alert_is_one_line() -> None:
    from trailgeo.adapters.local import JsonLinesAlertSink

    out = io.StringIO()
    sink = JsonLinesAlertSink(out)
    sink.publish(alert())
    sink.publish(alert())
    assert len(out.getvalue().splitlines()) == 2


def test_given_two_publishers_of_one_pending_alert_then_only_one_holds_it_until_its_lease_ends(
    aws: Any, deployment: Deployment
) -> None:
    # Given a pending alert, and a publisher (a fan-out reducer) that took it
    outbox = DynamoOutbox(aws.client("dynamodb"), TABLE)
    queued = alert()
    assert outbox.put(queued)
    lease = timedelta(minutes=5)
    assert outbox.claim_publish(queued.alert_id, "reducer", NOW + lease, NOW)

    # When the scheduled run comes to it a minute later, then it leaves it to the reducer
    assert not outbox.claim_publish(queued.alert_id, "planner", NOW + lease, NOW + timedelta(minutes=1))
    assert outbox.claim_publish(queued.alert_id, "reducer", NOW + lease, NOW)  # the holder's own retry

    # When the reducer died without publishing, then the next run takes it once the lease is over
    later = NOW + lease + timedelta(seconds=1)
    assert outbox.claim_publish(queued.alert_id, "next-run", later + lease, later)

    # And once sent, nobody publishes it again
    outbox.mark_sent(queued.alert_id, "message-1")
    assert outbox.pending() == []
    assert not outbox.claim_publish(queued.alert_id, "late", later + 2 * lease, later + lease + lease)


def test_given_a_subject_recorded_by_another_invocation_then_remembering_over_a_stale_read_fails(
    aws: Any, deployment: Deployment
) -> None:
    outbox = DynamoOutbox(aws.client("dynamodb"), TABLE)
    subject = "sso:alice|BT"
    first = Suppression(NOW, "alert-a", frozenset(), frozenset({NOW_HOUR}))
    second = Suppression(NOW, "alert-b", frozenset({"iam.amazonaws.com:CreateUser"}), frozenset({NOW_HOUR}))

    assert outbox.remember(subject, first, None)
    assert not outbox.remember(subject, second, None)  # read before "alert-a" was recorded
    assert outbox.recent([subject])[subject].alert_id == "alert-a"
    assert outbox.remember(subject, second, "alert-a")  # read again, decided again
    assert outbox.recent([subject])[subject] == second


def test_given_a_pager_subscribed_at_high_when_alerts_are_published_then_only_new_and_escalating_page(
    aws: Any, deployment: Deployment
) -> None:
    """A medium alert is the location's rarity alone, worth a look in the channels; its escalation
    to high pages, as does a new high or critical one. A quiet update never pages, whatever its
    severity: the team was paged for it already."""
    # Given a queue standing in for the pager, subscribed with the pager's filter policy
    sns, sqs = aws.client("sns"), aws.client("sqs")
    queue_url = sqs.create_queue(QueueName="pager")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=deployment.topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"FilterPolicy": json.dumps(paging_filter_policy("high")), "RawMessageDelivery": "true"},
    )
    base = alert()
    first = AlertIncident(id=base.alert_id)
    published = {
        "medium new": base.model_copy(update={"severity": "medium", "incident": first}),
        "high escalation": base.model_copy(
            update={
                "alert_id": "e" * 32,
                "severity": "high",
                "incident": AlertIncident(id=base.alert_id, escalation=True),
            }
        ),
        "high update": base.model_copy(
            update={
                "alert_id": "u" * 32,
                "severity": "high",
                "incident": AlertIncident(id=base.alert_id, update=True),
            }
        ),
        "critical quiet re-alert": base.model_copy(
            update={
                "alert_id": "q" * 32,
                "severity": "critical",
                "follows_alert_id": "e" * 32,
                "quiet_update": True,
            }
        ),
        "critical new": base.model_copy(update={"alert_id": "c" * 32, "severity": "critical"}),
        "low new": base.model_copy(update={"alert_id": "l" * 32, "severity": "low"}),
    }

    # When each is published to the alerts topic
    sink = SnsAlertSink(sns, deployment.topic_arn)
    for a in published.values():
        sink.publish(a)

    # Then the pager got the escalation to high and the new critical alert, nothing else
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)["Messages"]
    names = {a.alert_id: name for name, a in published.items()}
    assert {names[json.loads(m["Body"])["alert_id"]] for m in received} == {"high escalation", "critical new"}
