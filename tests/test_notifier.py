"""The notifier Lambda handler against moto (SQS, Secrets Manager, Security Hub, EventBridge,
DynamoDB) and a local Slack webhook: what each channel receives, partial batch failures, retries,
and delivery records (each channel takes an alert once, across execution environments)."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from tests.aws import FakeLambdaContext, load_function, queued_outbox, table_items
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
from trailgeo.adapters.channels import OCSF_DETAIL_TYPE
from trailgeo.adapters.deliveries import DELIVERY_PARTITION, DeliveryRecords
from trailgeo.app.notify import NotificationError, NotifierSettings, build_notifier, parse_alert
from trailgeo.core.alerts import Alert
from trailgeo.core.render.asff import asff_finding
from trailgeo.core.render.envelope import sns_message
from trailgeo.core.render.ocsf import detection_finding
from trailgeo.core.render.slack import slack_message

BUS = "security"
OCSF_BUS = "security-lake"
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
    """The four channels, and the detector's table with the alert of events/sqs-alert.json queued
    in its outbox (the notifier acts only on alerts read back from there), as the stack sets them."""
    outbox = queued_outbox(aws, fixed_alert())
    secrets = aws.client("secretsmanager", region_name=REGION)
    secret_arn = secrets.create_secret(Name="trailgeo/slack-webhook", SecretString=slack.url)["ARN"]
    hub = aws.client("securityhub", region_name=REGION)
    hub.enable_security_hub()
    sqs, queue_url = bus_with_queue(aws, BUS)
    _, ocsf_queue_url = bus_with_queue(aws, OCSF_BUS, OCSF_DETAIL_TYPE)
    for name, value in {
        "SLACK_WEBHOOK_SECRET_ARN": secret_arn,
        "SECURITY_HUB_PRODUCT_ARN": PRODUCT_ARN,
        "EVENT_BUS_NAME": BUS,
        "OCSF_EVENT_BUS_NAME": OCSF_BUS,
        "TABLE_NAME": outbox.table,
        "AWS_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": "trailgeo",
        "POWERTOOLS_METRICS_NAMESPACE": "trailgeo",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    return {
        "aws": aws,
        "hub": hub,
        "sqs": sqs,
        "queue_url": queue_url,
        "ocsf_queue_url": ocsf_queue_url,
        "outbox": outbox,
        "secret_arn": secret_arn,
    }


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
    (ocsf,) = received_events(channels["sqs"], channels["ocsf_queue_url"])
    assert (ocsf["source"], ocsf["detail-type"]) == ("trailgeo", "OCSF Detection Finding")
    assert ocsf["detail"] == detection_finding(alert, "0.1.0", REGION)


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
    assert outcomes == [
        ("Notified", "eventbridge"),
        ("Notified", "ocsf"),
        ("Notified", "securityhub"),
        ("NotifyFailed", "slack"),
    ]


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


# ---------------------------------------------------------------------------- delivery records


def delivered_counts(channels: dict[str, Any], slack: FakeSlack) -> dict[str, int]:  # noqa: F811
    """What each channel received so far (each queue read once: call once per test)."""
    return {
        "slack": len(slack.posts),
        "securityhub": len(channels["hub"].get_findings()["Findings"]),
        "eventbridge": len(received_events(channels["sqs"], channels["queue_url"])),
        "ocsf": len(received_events(channels["sqs"], channels["ocsf_queue_url"])),
    }


def outcomes_of(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    points = data_points(emf_documents(capsys.readouterr().out))
    return sorted((name, dimensions["channel"]) for _, name, dimensions in points if "channel" in dimensions)


def delivery_items(channels: dict[str, Any]) -> list[dict[str, Any]]:
    items = table_items(channels["aws"], channels["outbox"].table)
    return [item for (pk, _), item in sorted(items.items()) if pk == DELIVERY_PARTITION]


def test_given_the_same_message_delivered_to_two_environments_then_each_channel_gets_the_alert_once(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given one alert message, delivered twice (an SNS duplicate, a redelivery after a lost delete)
    event = sqs_event(fixed_alert().to_json())
    capsys.readouterr()

    # When two execution environments (two fresh handler modules: no shared memory) each take it
    first = invoke(load_handler_module(), event)
    second = invoke(load_handler_module(), event)

    # Then every channel received it once; the second environment skipped each, from the table
    assert failed_ids(first) == failed_ids(second) == []
    assert delivered_counts(channels, slack) == {"slack": 1, "securityhub": 1, "eventbridge": 1, "ocsf": 1}
    channel_names = ("eventbridge", "ocsf", "securityhub", "slack")
    assert outcomes_of(capsys) == [("Notified", c) for c in channel_names] + [
        ("NotifySkipped", c) for c in channel_names
    ]


def test_given_one_channel_failed_when_another_environment_retries_then_only_that_channel_is_sent_again(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an attempt on which Slack failed while the three other channels took the alert
    event = sqs_event(fixed_alert().to_json())
    slack.status = 500
    assert failed_ids(invoke(load_handler_module(), event)) == ["m0"]
    capsys.readouterr()

    # When SQS retries the message and another (cold) environment takes it
    slack.status = 200
    assert failed_ids(invoke(load_handler_module(), event)) == []

    # Then Slack alone was sent it again; the others were skipped
    assert outcomes_of(capsys) == [
        ("Notified", "slack"),
        ("NotifySkipped", "eventbridge"),
        ("NotifySkipped", "ocsf"),
        ("NotifySkipped", "securityhub"),
    ]
    assert delivered_counts(channels, slack) == {"slack": 2, "securityhub": 1, "eventbridge": 1, "ocsf": 1}
    assert slack.posts[1] == slack_message(fixed_alert(), REGION)


def test_given_a_delivery_when_recorded_then_the_record_is_keyed_by_digest_and_expires_with_the_outbox(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
) -> None:
    before = datetime.now(tz=UTC)
    invoke(load_handler_module(), sqs_event(fixed_alert().to_json()))

    items = delivery_items(channels)
    assert len(items) == 4  # one per channel
    ttl = (
        channels["aws"]
        .client("dynamodb", region_name=REGION)
        .describe_time_to_live(TableName=channels["outbox"].table)["TimeToLiveDescription"]["AttributeName"]
    )
    for item in items:
        assert item["sk"]["S"].startswith("delivery#")
        assert len(item["sk"]["S"].removeprefix("delivery#")) == 64  # a SHA-256: no alert text in the key
        assert item["status"]["S"] == "COMPLETED"
        assert json.loads(item["data"]["S"]) == {"outcome": "delivered"}  # nothing of the alert kept
        expires = datetime.fromtimestamp(int(item[ttl]["N"]), tz=UTC)
        assert before + timedelta(days=30) - timedelta(minutes=1) <= expires <= before + timedelta(days=31)


def test_given_a_forged_copy_of_an_alert_first_then_it_records_nothing_and_the_real_one_is_delivered(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
) -> None:
    # Given a principal that can send to the queue, sending a doctored copy of a queued alert
    # first (same alert id, reassuring text), hoping its delivery records suppress the real one
    real = fixed_alert()
    forged = real.model_copy(update={"explanation": "Known VPN egress, nothing to do."})
    module = load_handler_module()

    # When the forged message, then the detector's, reach the notifier
    assert failed_ids(invoke(module, sqs_event(forged.to_json()))) == []  # dropped, not retried
    assert delivery_items(channels) == []
    assert failed_ids(invoke(module, sqs_event(real.to_json()))) == []

    # Then each channel got the real alert: the forged one was refused before any record
    assert slack.posts == [slack_message(real, REGION)]
    assert delivered_counts(channels, slack) == {"slack": 1, "securityhub": 1, "eventbridge": 1, "ocsf": 1}


class Killed(BaseException):
    """An execution environment that dies mid-send (a timeout, out of memory): nothing cleans up."""


def die(*_: Any) -> None:
    raise Killed


def test_given_another_environment_is_sending_to_slack_then_this_one_defers_and_sends_once_it_died(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an environment that took the alert for Slack and died in the middle of posting it, with
    # 10 minutes of its invocation left: its INPROGRESS record counts until then
    dynamodb = channels["aws"].client("dynamodb", region_name=REGION)
    elsewhere = DeliveryRecords.on_table(dynamodb, channels["outbox"].table)
    elsewhere.register(FakeLambdaContext(remaining_ms=600_000))
    with pytest.raises(Killed):
        elsewhere.once(ALERT_ID, "slack", die)
    event = sqs_event(fixed_alert().to_json())
    capsys.readouterr()

    # When this environment takes the message meanwhile
    assert failed_ids(invoke(load_handler_module(), event)) == ["m0"]

    # Then Slack is not sent it twice at once: the message is retried (deferred), the others went out
    assert slack.posts == []
    assert ("NotifyDeferred", "slack") in outcomes_of(capsys)

    # Given the dead environment's invocation time is up: its record's in-progress expiry passed
    (record,) = [item for item in delivery_items(channels) if item["status"]["S"] == "INPROGRESS"]
    dynamodb.update_item(
        TableName=channels["outbox"].table,
        Key={"pk": record["pk"], "sk": record["sk"]},
        UpdateExpression="SET in_progress_expiration = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time() * 1000) - 1000)}},
    )

    # When SQS retries the message, then Slack is sent the alert, once
    assert failed_ids(invoke(load_handler_module(), event)) == []
    assert slack.posts == [slack_message(fixed_alert(), REGION)]


def test_given_slack_answers_403_when_the_message_is_retried_then_the_secret_is_read_again_at_once(
    channels: dict[str, Any],
    slack: FakeSlack,  # noqa: F811
) -> None:
    # Given a warm environment holding the webhook URL in its cache, revoked in Slack and rotated in
    # the secret
    module = load_handler_module()
    event = sqs_event(fixed_alert().to_json())
    slack.status = 403
    assert failed_ids(invoke(module, event)) == ["m0"]
    rotated = slack.url.replace("XXXX", "YYYY")
    channels["aws"].client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId=channels["secret_arn"], SecretString=rotated
    )

    # When SQS retries the message in the same environment, well within the cache's 5 minutes
    slack.status = 200
    assert failed_ids(invoke(module, event)) == []

    # Then the retry posted to the rotated URL: the 403 made the secret be fetched again
    assert slack.paths == ["/services/T000/B000/XXXX", "/services/T000/B000/YYYY"]
