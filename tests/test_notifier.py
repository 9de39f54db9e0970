"""The notifier Lambda handler against moto (SQS, Secrets Manager, Security Hub, EventBridge) and a
local Slack webhook: what each channel receives, partial batch failures, retries."""

from __future__ import annotations

import copy
import json
from types import ModuleType
from typing import Any

import pytest

from tests.aws import FakeLambdaContext, load_function, queued_outbox
from tests.conftest import EVENTS
from tests.test_channels import (
    ALERT_ID,
    PRODUCT_ARN,
    REGION,
    FakeSlack,
    bus_with_queue,
    fixed_alert,
    received_events,
    slack,  # noqa: F401 - the local webhook fixture
)
from tests.test_handler import data_points, emf_documents
from trailgeo.app.notify import NotificationError, NotifierSettings, build_notifier, parse_alert
from trailgeo.core.alerts import Alert
from trailgeo.core.render.asff import asff_finding
from trailgeo.core.render.envelope import sns_message
from trailgeo.core.render.slack import slack_message

BUS = "security"
SECOND_ID = "0123456789abcdef0123456789abcdef"


def load_handler_module() -> ModuleType:
    """A fresh module per test: its cached notifier (clients, webhook URL) starts empty."""
    return load_function("notifier")


def sqs_event(*bodies: str) -> dict[str, Any]:
    """events/sqs-alert.json with one record per body (message ids m0, m1, ...)."""
    sample: dict[str, Any] = json.loads((EVENTS / "sqs-alert.json").read_text(encoding="utf-8"))
    template = sample["Records"][0]
    records = []
    for index, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = f"m{index}"
        record["body"] = body
        records.append(record)
    return {"Records": records}


@pytest.fixture
def channels(aws: Any, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:  # noqa: F811
    """The three channels, and the detector's table with the alert of events/sqs-alert.json queued
    in its outbox (the notifier acts only on alerts read back from there), as the stack sets them."""
    outbox = queued_outbox(aws, fixed_alert())
    secrets = aws.client("secretsmanager", region_name=REGION)
    secret_arn = secrets.create_secret(Name="trailgeo/slack-webhook", SecretString=slack.url)["ARN"]
    hub = aws.client("securityhub", region_name=REGION)
    hub.enable_security_hub()
    sqs, queue_url = bus_with_queue(aws, BUS)
    for name, value in {
        "SLACK_WEBHOOK_SECRET_ARN": secret_arn,
        "SECURITY_HUB_PRODUCT_ARN": PRODUCT_ARN,
        "EVENT_BUS_NAME": BUS,
        "TABLE_NAME": outbox.table,
        "AWS_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": "trailgeo",
        "POWERTOOLS_METRICS_NAMESPACE": "trailgeo",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    return {"hub": hub, "sqs": sqs, "queue_url": queue_url, "outbox": outbox}


def invoke(module: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = module.lambda_handler(
        event, FakeLambdaContext(function_name="trailgeo-notifier")
    )
    return response


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def test_given_an_alert_on_the_queue_when_the_notifier_runs_then_each_channel_receives_exactly_its_rendering(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
) -> None:
    alert = fixed_alert()
    response = invoke(load_handler_module(), json.loads((EVENTS / "sqs-alert.json").read_text()))

    assert response == {"batchItemFailures": []}
    assert slack.posts == [slack_message(alert, REGION)]
    (finding,) = channels["hub"].get_findings()["Findings"]
    expected = asff_finding(alert, PRODUCT_ARN)
    assert {key: finding[key] for key in expected} == expected
    (event,) = received_events(channels["sqs"], channels["queue_url"])
    assert (event["source"], event["detail-type"]) == ("trailgeo", "Unusual country for AWS command")
    assert event["detail"] == json.loads(alert.to_json())


def test_given_a_batch_with_a_message_that_is_not_an_alert_then_only_that_message_is_reported_failed(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
) -> None:
    # Given two alerts the detector queued, and between them a message that is no alert at all
    second = fixed_alert(alert_id=SECOND_ID)
    assert channels["outbox"].put(second)
    event = sqs_event(fixed_alert().to_json(), '{"not": "an alert"}', second.to_json())

    # When the notifier takes the batch
    response = invoke(load_handler_module(), event)

    # Then that message alone is reported failed (retried, then dead-lettered); both alerts go out
    assert failed_ids(response) == ["m1"]
    assert [post["attachments"][0]["blocks"][4]["elements"][-1]["text"] for post in slack.posts] == [
        f"Alert `{ALERT_ID}`",
        f"Alert `{SECOND_ID}`",
    ]
    assert len(received_events(channels["sqs"], channels["queue_url"])) == 2


def test_given_slack_fails_when_sqs_retries_the_message_then_only_slack_gets_it_again(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
) -> None:
    module = load_handler_module()
    event = sqs_event(fixed_alert().to_json())

    slack.status = 500
    assert failed_ids(invoke(module, event)) == ["m0"]  # retried by SQS, then dead-lettered
    assert len(slack.posts) == 1
    assert len(channels["hub"].get_findings()["Findings"]) == 1
    assert len(received_events(channels["sqs"], channels["queue_url"])) == 1

    slack.status = 429
    slack.headers = {"Retry-After": "1"}
    assert failed_ids(invoke(module, event)) == ["m0"]
    assert len(slack.posts) == 2

    slack.status = 200
    assert failed_ids(invoke(module, event)) == []
    assert len(slack.posts) == 3
    assert received_events(channels["sqs"], channels["queue_url"]) == []  # not put twice

    assert failed_ids(invoke(module, event)) == []  # an SNS duplicate: nothing is sent again
    assert len(slack.posts) == 3


def test_given_slack_fails_when_the_notifier_runs_then_each_outcome_is_one_metric_with_a_channel_dimension(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    slack.status = 500
    capsys.readouterr()

    invoke(load_handler_module(), sqs_event(fixed_alert().to_json()))

    points = data_points(emf_documents(capsys.readouterr().out))
    outcomes = sorted(
        (name, dimensions["channel"]) for _, name, dimensions in points if "channel" in dimensions
    )
    assert outcomes == [("Notified", "eventbridge"), ("Notified", "securityhub"), ("NotifyFailed", "slack")]


def test_given_the_topic_delivers_to_the_queue_with_raw_delivery_then_the_notifier_reads_the_alert(
    aws: Any,
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
) -> None:
    sns = aws.client("sns", region_name=REGION)
    sqs = aws.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="notifier")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    alert = fixed_alert()
    sns.publish(TopicArn=topic, Message=sns_message(alert), MessageStructure="json")
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]

    response = invoke(load_handler_module(), sqs_event(message["Body"]))

    assert response == {"batchItemFailures": []}
    assert slack.posts == [slack_message(alert, REGION)]


def test_given_an_sns_envelope_when_parsed_then_the_alert_inside_is_read() -> None:
    alert = fixed_alert()
    envelope = {"Type": "Notification", "MessageId": "x", "Message": alert.to_json()}
    assert parse_alert(json.dumps(envelope)) == alert
    with pytest.raises(NotificationError, match="not an alert"):
        parse_alert("<!channel>")


def test_given_no_channel_configured_when_building_the_notifier_then_it_refuses() -> None:
    with pytest.raises(NotificationError, match="no channel"):
        build_notifier(NotifierSettings())


def test_given_only_an_event_bus_when_notifying_then_neither_slack_nor_security_hub_is_called(
    aws: Any,
    slack: FakeSlack,  # noqa: F811
) -> None:
    sqs, queue_url = bus_with_queue(aws, BUS)
    notifier = build_notifier(NotifierSettings(event_bus_name=BUS, region=REGION), aws)
    report = notifier.notify(fixed_alert().to_json())
    assert (report.delivered, report.skipped) == (("eventbridge",), ())
    assert slack.posts == []
    assert aws.client("securityhub", region_name=REGION).get_findings()["Findings"] == []
    (event,) = received_events(sqs, queue_url)
    assert Alert.model_validate(event["detail"]) == fixed_alert()
