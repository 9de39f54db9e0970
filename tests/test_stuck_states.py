"""States a fault or an attacker could leave trailgeo stuck in, unseen: an alert kept pending (SNS
refusing it run after run, a publish lease that never ends), an alert parked, a message or a fan-out
task refused as forged, a tuning that no longer reads. Each has a metric, an alarm that tells the
operations topic, and a place in ``trailgeo status`` or the docs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws import (
    REGION,
    Deployment,
    FakeLambdaContext,
    create_deployment,
    deps_for,
    emitted_metrics,
    queued_outbox,
    receive_alerts,
    table_items,
)
from tests.test_adversary_poison import alarm_fires
from tests.test_channels import fixed_alert
from tests.test_handler import data_points, deployment, emf_documents, load_handler_module, scheduled_event  # noqa: F401
from tests.test_template import ROOT, referenced, resources_of, sub_text, template  # noqa: F401
from trailgeo.adapters.dynamodb import OUTBOX_PARTITION, OUTBOX_RETENTION, DynamoOutbox
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.app.detect import RunReport, publish_pending
from trailgeo.app.notify import Notifier
from trailgeo.core.alerts import Alert

# alarm -> (metric, statistic, threshold, the template condition it exists under)
STUCK_STATE_ALARMS = {
    "AlertPendingTooLongAlarm": ("OldestPendingAlertMinutes", "Maximum", 60, None),
    "AlertParkedAlarm": ("AlertsParked", "Sum", 1, None),
    "AlertRefusedAlarm": ("AlertsRefused", "Sum", 1, "HasNotifier"),
    "TaskRefusedAlarm": ("TasksRefused", "Sum", 1, "IsFanOut"),
    "TuningInvalidAlarm": ("TuningInvalid", "Sum", 1, "HasTuningParameter"),
}
DEPLOY_CHECKLIST = ROOT / "docs" / "deploy-checklist.md"


def alarm(template: dict[str, Any], name: str) -> dict[str, Any]:  # noqa: F811
    properties: dict[str, Any] = resources_of(template, "AWS::CloudWatch::Alarm")[name]["Properties"]
    return properties


def metric_values(output: str, name: str) -> list[float]:
    """The values of metric ``name`` in the EMF lines of ``output``."""
    return [value for document in emf_documents(output) for value in document.get(name, [])]


def event_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:00Z")


# ---------------------------------------------------------------------------- the alarms


def test_given_each_stuck_state_then_an_alarm_on_its_metric_tells_the_operations_topic(
    template: dict[str, Any],  # noqa: F811
) -> None:
    for name, (metric, statistic, threshold, condition) in STUCK_STATE_ALARMS.items():
        resource = resources_of(template, "AWS::CloudWatch::Alarm")[name]
        props = resource["Properties"]
        # Then it reads the stack's own metric, as the runs write it (service only)
        assert (props["MetricName"], props["Statistic"]) == (metric, statistic), name
        assert sub_text(props["Namespace"]) == "trailgeo/${AWS::StackName}", name
        assert props["Dimensions"] == [{"Name": "service", "Value": {"Ref": "AWS::StackName"}}], name
        assert resource.get("Condition") == condition, name
        # And pages the operations topic from the first occurrence, never on a quiet stack
        assert [referenced(a) for a in props["AlarmActions"]] == ["OperationsTopic"], name
        assert props["TreatMissingData"] == "notBreaching", name
        assert alarm_fires(props, [threshold]), name
        assert not alarm_fires(props, [0]), name
    assert not alarm_fires(alarm(template, "AlertPendingTooLongAlarm"), [59])


def test_given_the_template_then_the_deploy_checklist_lists_each_alarm_and_no_other(
    template: dict[str, Any],  # noqa: F811
) -> None:
    markdown = DEPLOY_CHECKLIST.read_text(encoding="utf-8")
    section = re.search(r"^## Alarms\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert section, "docs/deploy-checklist.md has no '## Alarms' section"
    listed = set(re.findall(r"^\| `(\w+Alarm)` \|", section.group(1), re.MULTILINE))
    assert listed == set(resources_of(template, "AWS::CloudWatch::Alarm"))


def test_given_a_run_report_then_the_pending_and_parked_metrics_have_the_alarms_dimensions() -> None:
    # Given a run that parked an alert and left one pending for 75 minutes
    now = datetime(2026, 10, 2, 1, 15, tzinfo=UTC)
    report = RunReport(scheduled_at=now, window_start=now - timedelta(hours=2), window_end=now)
    report.alerts_parked = 1
    report.oldest_pending_minutes = 75

    # When its metrics are emitted
    emitted = emitted_metrics(report)

    # Then both are there under the service dimension alone, which the alarms read
    assert emitted["AlertsParked"] == [1.0]
    assert emitted["OldestPendingAlertMinutes"] == [75.0]
    assert emitted["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


class RecordingChannel:
    name = "recording"

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.sent.append(alert)


def test_given_forged_messages_when_refused_then_a_total_without_reason_feeds_the_alarm(
    aws: Any,
    template: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the notifier checking messages against an outbox holding the detector's alert
    channel = RecordingChannel()
    notifier = Notifier([channel], outbox=queued_outbox(aws, fixed_alert()))
    capsys.readouterr()

    # When two forged messages arrive: one naming no queued alert, one altering the queued one
    notifier.notify(fixed_alert(alert_id="f" * 32).to_json())
    notifier.notify(fixed_alert(explanation="Known VPN egress, nothing to do.").to_json())

    # Then each is counted by reason and in a total of its own, the one the alarm watches
    points = data_points(emf_documents(capsys.readouterr().out))
    refused = [dimensions for _, name, dimensions in points if name == "AlertsRefused"]
    totals = [d for d in refused if set(d) == {"service"}]
    assert sorted(d["reason"] for d in refused if "reason" in d) == ["differs_from_outbox", "not_in_outbox"]
    assert len(totals) == 2
    watched = alarm(template, "AlertRefusedAlarm")
    assert [d["Name"] for d in watched["Dimensions"]] == list(totals[0])
    assert alarm_fires(watched, [len(totals)])
    assert channel.sent == []


def test_given_a_tuning_edit_that_does_not_read_when_the_schedule_fires_then_it_is_counted(
    aws: Any,
    deployment: Deployment,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a tuning parameter the detector has read once
    ssm = aws.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/trailgeo/tuning", Type="String", Value="version = 1\n")
    monkeypatch.setenv("TUNING_PARAMETER", "/trailgeo/tuning")
    handler = load_handler_module()
    now = datetime.now(tz=UTC)
    handler.lambda_handler(scheduled_event(event_time(now)), FakeLambdaContext())
    capsys.readouterr()

    # When someone saves an edit that does not read, and the schedule fires
    ssm.put_parameter(
        Name="/trailgeo/tuning",
        Type="String",
        Value='version = 1\nignored_principalz = ["x"]\n',
        Overwrite=True,
    )
    handler.lambda_handler(scheduled_event(event_time(now)), FakeLambdaContext())

    # Then the run keeps the last good tuning, and TuningInvalid (service only) feeds the alarm
    points = data_points(emf_documents(capsys.readouterr().out))
    assert [dimensions for _, name, dimensions in points if name == "TuningInvalid"] == [
        {"service": "trailgeo"}
    ]


# ---------------------------------------------------------------------------- pending alerts


def test_given_sns_refusing_alerts_for_two_hours_when_the_schedule_fires_then_their_wait_is_alarmed(
    aws: Any,
    deployment: Deployment,  # noqa: F811
    template: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an alert the detector queued two hours ago and one ten minutes ago, and an alerts topic
    # that is gone (deleted, or its key refusing the detector: SNS refuses every publish)
    now = datetime.now(tz=UTC)
    outbox = DynamoOutbox(aws.client("dynamodb", region_name=REGION), deployment.table)
    assert outbox.put(fixed_alert(alert_id="1" * 32, detected_at=now - timedelta(hours=2)))
    assert outbox.put(fixed_alert(alert_id="2" * 32, detected_at=now - timedelta(minutes=10)))
    sns = aws.client("sns", region_name=REGION)
    sns.delete_topic(TopicArn=deployment.topic_arn)
    handler = load_handler_module()
    watched = alarm(template, "AlertPendingTooLongAlarm")
    capsys.readouterr()

    # When the schedule fires
    stuck = handler.lambda_handler(scheduled_event(event_time(now)), FakeLambdaContext())

    # Then both stay pending, the run reports the older one's wait, and the alarm fires on it
    assert stuck["alerts_pending"] == 2
    assert 120 <= stuck["oldest_pending_minutes"] <= 125
    waited = metric_values(capsys.readouterr().out, "OldestPendingAlertMinutes")
    assert waited == [stuck["oldest_pending_minutes"]]
    assert alarm_fires(watched, waited)

    # When the topic is back, the next run (15 minutes on: the first run's publish leases have
    # ended) publishes both, and the wait it reports clears the alarm
    sns.create_topic(Name=deployment.topic_arn.rsplit(":", 1)[1])
    later = now + timedelta(minutes=15)
    handler.runtime().deps.clock = lambda: later
    freed = handler.lambda_handler(scheduled_event(event_time(later)), FakeLambdaContext())
    assert (freed["alerts_published"], freed["oldest_pending_minutes"]) == (2, 0)
    waited = metric_values(capsys.readouterr().out, "OldestPendingAlertMinutes")
    assert waited == [0]
    assert not alarm_fires(watched, waited)


def test_given_a_forged_publish_lease_on_a_pending_alert_then_no_run_sends_it_but_each_reports_its_wait(
    aws: Any, country_test_mmdb: Path
) -> None:
    # Given an alert queued three hours ago, on which a principal allowed to write the table set a
    # publish lease that never ends: every publisher finds it taken and passes it by
    deployed = create_deployment(aws)
    now = datetime(2026, 10, 2, 4, 15, tzinfo=UTC)
    queued = fixed_alert(alert_id="3" * 32, detected_at=now - timedelta(hours=3))
    dynamodb = aws.client("dynamodb", region_name=REGION)
    assert DynamoOutbox(dynamodb, deployed.table).put(queued)
    dynamodb.update_item(
        TableName=deployed.table,
        Key={"pk": {"S": OUTBOX_PARTITION}, "sk": {"S": f"A#{queued.alert_id}"}},
        UpdateExpression="SET pub_holder = :who, pub_until = :until",
        ExpressionAttributeValues={":who": {"S": "mallory"}, ":until": {"S": "9999-12-31T00:00:00+00:00"}},
    )
    deps = deps_for(aws, MaxMindGeoResolver(country_test_mmdb), deployed, now)

    # When a run publishes the pending alerts
    report = RunReport(scheduled_at=now, window_start=now - timedelta(hours=2), window_end=now)
    publish_pending(deps, report)

    # Then nothing went out and no publish failed (AlertsPending stays 0), but its wait is reported
    assert (report.alerts_published, report.alerts_pending) == (0, 0)
    assert report.oldest_pending_minutes == 180
    assert receive_alerts(aws, deployed.queue_url) == []


def test_given_alerts_in_the_outbox_then_the_table_s_ttl_removes_one_only_after_it_was_sent_or_parked(
    aws: Any,
) -> None:
    # Given three queued alerts, one of them by a version that gave every alert 30 days at once
    deployed = create_deployment(aws)
    now = datetime(2026, 10, 2, 4, 15, tzinfo=UTC)
    dynamodb = aws.client("dynamodb", region_name=REGION)
    outbox = DynamoOutbox(dynamodb, deployed.table, clock=lambda: now)
    sent, parked, legacy = (fixed_alert(alert_id=c * 32) for c in "abc")
    for alert in (sent, parked, legacy):
        assert outbox.put(alert)
    expiry = {":ttl": {"N": str(int((now - timedelta(days=2)).timestamp()))}}
    dynamodb.update_item(
        TableName=deployed.table,
        Key={"pk": {"S": OUTBOX_PARTITION}, "sk": {"S": f"A#{legacy.alert_id}"}},
        UpdateExpression="SET expires_at = :ttl",
        ExpressionAttributeValues=expiry,
    )

    def expires(alert: Alert) -> int | None:
        item = table_items(aws, deployed.table)[(OUTBOX_PARTITION, f"A#{alert.alert_id}")]
        return int(item["expires_at"]["N"]) if "expires_at" in item else None

    # Then a pending alert never expires: none is written with an expiry, and a publisher taking
    # the legacy one (already past its expiry: DynamoDB deletes it within days) removes it
    assert [expires(a) for a in (sent, parked)] == [None, None]
    assert outbox.claim_publish(legacy.alert_id, "run", now + timedelta(minutes=5), now)
    assert expires(legacy) is None

    # And once sent or parked, it is kept 30 days from then (trailgeo explain reads it)
    outbox.mark_sent(sent.alert_id, "sns-message-1")
    outbox.park(parked.alert_id, "InvalidParameter publishing alert")
    kept_until = int((now + OUTBOX_RETENTION).timestamp())
    assert [expires(a) for a in (sent, parked)] == [kept_until, kept_until]
    assert [a.alert_id for a in outbox.pending()] == [legacy.alert_id]
