"""The intake's resources in template.yaml, rendered for each setup (after the SAM transform, as
tests/test_deploy_limits.py does): nothing new in List mode; in Notifications mode a queue that
only the trail's topic or the stack's rule can send to, that the detector only drains, and never
a bucket notification configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_deploy_limits import ACCOUNT, REGION, iam_match, render, transformed
from tests.test_template import as_list

pytestmark = pytest.mark.infra
__all__ = ["transformed"]  # the fixture, by name

TOPIC = "arn:aws:sns:eu-west-1:210987654321:org-trail-notifications"  # the log-archive account's
INTAKE_RESOURCES = {
    "IntakeQueue",
    "IntakeDeadLetterQueue",
    "IntakeQueuePolicy",
    "IntakeTopicSubscription",
    "IntakeRule",
    "IntakeDeadLetterAlarm",
}
CONTINUOUS_RESOURCES = {"ArrivalsFunction", "ArrivalsLogGroup"}


def notifications(transformed: dict[str, Any], **parameters: str) -> Any:
    """The stack rendered with Intake=Notifications from the trail's topic, and ``parameters``."""
    return render(transformed, **{"Intake": "Notifications", "IntakeTopicArn": TOPIC, **parameters})


def detector_statements(rendered: Any) -> list[dict[str, Any]]:
    return rendered.statements("DetectorRole")


def test_given_list_intake_then_the_stack_deploys_nothing_of_the_intake(transformed: dict[str, Any]) -> None:
    # Given the default parameters (Intake=List), even with a topic and the rule asked for
    rendered = render(transformed, IntakeTopicArn=TOPIC, IntakeEventBridge="Enabled")

    # Then no intake resource, no SQS grant on a queue of it, and the detector lists as before
    assert not INTAKE_RESOURCES & set(rendered.resources)
    assert "DrainIntakeQueue" not in {s.get("Sid") for s in detector_statements(rendered)}
    assert "TrailTopicDeliversToTheIntakeQueue" not in {s.get("Sid") for s in rendered.key_statements()}
    variables = rendered.resources["DetectorFunction"]["Properties"]["Environment"]["Variables"]
    assert (variables["INTAKE"], variables["INTAKE_QUEUE_URL"]) == ("List", "")


def test_given_notifications_from_the_trails_topic_then_only_that_topic_sends_and_the_detector_only_drains(
    transformed: dict[str, Any],
) -> None:
    # Given Notifications from an organization trail's topic in another account and region
    rendered = notifications(transformed)

    # Then the queue, its DLQ and alarm, and a subscription in the topic's region exist; no rule
    assert INTAKE_RESOURCES - {"IntakeRule"} <= set(rendered.resources)
    assert "IntakeRule" not in rendered.resources
    subscription = rendered.resources["IntakeTopicSubscription"]["Properties"]
    assert (subscription["TopicArn"], subscription["Protocol"]) == (TOPIC, "sqs")
    assert subscription["Region"] == {"Fn::Select": [3, {"Fn::Split": [":", TOPIC]}]}
    assert TOPIC.split(":")[3] == "eu-west-1"

    # And the queue policy allows that topic only, and denies every other sender
    statements = rendered.resources["IntakeQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "sns.amazonaws.com"}
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": TOPIC}}
    (deny,) = [s for s in statements if s["Effect"] == "Deny" and s["Action"] == "sqs:SendMessage"]
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:SourceArn": [TOPIC]}}

    # And the stack key lets that topic (any account's SNS, by its ARN) encrypt into the queue
    (key,) = [s for s in rendered.key_statements() if s.get("Sid") == "TrailTopicDeliversToTheIntakeQueue"]
    assert key["Condition"] == {"ArnEquals": {"aws:SourceArn": TOPIC}}
    queue = rendered.resources["IntakeQueue"]["Properties"]
    assert queue["KmsMasterKeyId"] == {"Ref": "AlertsKey"}

    # And the detector may receive, delete and change visibility on that queue, nothing more
    (drain,) = [s for s in detector_statements(rendered) if s.get("Sid") == "DrainIntakeQueue"]
    assert set(as_list(drain["Action"])) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
    }
    assert drain["Resource"] == {"Fn::GetAtt": ["IntakeQueue", "Arn"]}
    granted = {a for s in detector_statements(rendered) for a in as_list(s["Action"])}
    sends = [s for s in detector_statements(rendered) if "sqs:SendMessage" in as_list(s["Action"])]
    assert all(s["Resource"] != {"Fn::GetAtt": ["IntakeQueue", "Arn"]} for s in sends)
    assert "sqs:PurgeQueue" not in granted

    # And a message stays invisible longer than a run lasts, and dead-letters after some receives
    timeout = rendered.resources["DetectorFunction"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] > timeout
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
    variables = rendered.resources["DetectorFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["INTAKE"] == "Notifications"
    assert variables["INTAKE_QUEUE_URL"] == {"Ref": "IntakeQueue"}


def test_given_eventbridge_notifications_then_a_rule_of_the_trail_prefix_feeds_the_queue_bucket_untouched(
    transformed: dict[str, Any],
) -> None:
    # Given Notifications from EventBridge's Object Created, with a trail prefix
    rendered = render(transformed, Intake="Notifications", IntakeEventBridge="Enabled", TrailPrefix="ct/")

    # Then a rule matches the trail bucket's new objects under the prefix and targets the queue
    rule = rendered.resources["IntakeRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": ["org-trail-bucket"]}, "object": {"key": [{"prefix": "ct/AWSLogs/"}]}},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["IntakeQueue", "Arn"]}
    assert "IntakeTopicSubscription" not in rendered.resources

    # And only that rule may send
    statements = rendered.resources["IntakeQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["IntakeRule", "Arn"]}}}

    # And nothing in the stack writes a bucket notification configuration (it would replace the
    # bucket's existing one): no bucket resource for the trail, no custom resource, no such grant
    document = json.dumps(rendered.resources)
    assert "NotificationConfiguration" not in document
    assert "PutBucketNotification" not in document
    assert not rendered.of_type("AWS::CloudFormation::CustomResource")


def test_given_both_sources_then_the_queue_policy_allows_exactly_the_topic_and_the_rule(
    transformed: dict[str, Any],
) -> None:
    rendered = notifications(transformed, IntakeEventBridge="Enabled")
    statements = rendered.resources["IntakeQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (deny,) = [s for s in statements if s["Effect"] == "Deny" and s["Action"] == "sqs:SendMessage"]
    assert deny["Condition"]["ArnNotEquals"]["aws:SourceArn"] == [
        TOPIC,
        {"Fn::GetAtt": ["IntakeRule", "Arn"]},
    ]
    # a sender in this account, with no source ARN, is denied whatever its IAM policy says
    own = f"arn:aws:sqs:{REGION}:{ACCOUNT}:anything"
    assert not any(iam_match(str(arn), own) for arn in deny["Condition"]["ArnNotEquals"]["aws:SourceArn"])


def test_given_notifications_without_a_source_then_the_template_rule_refuses_the_parameters(
    transformed: dict[str, Any],
) -> None:
    rule = transformed["Rules"]["NotificationsNeedASource"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "Intake"}, "Notifications"]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {
        "Fn::Or": [
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "IntakeTopicArn"}, ""]}]},
            {"Fn::Equals": [{"Ref": "IntakeEventBridge"}, "Enabled"]},
        ]
    }


# ---- continuous mode ---------------------------------------------------------------------------


def arrivals_mapping(rendered: Any) -> dict[str, Any]:
    (mapping,) = [
        m["Properties"]
        for m in rendered.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "ArrivalsFunction"}
    ]
    return dict(mapping)


def test_given_continuous_mode_off_then_the_intake_queue_is_no_event_source(
    transformed: dict[str, Any],
) -> None:
    # Given notification intake, continuous mode left off (and continuous mode asked for without it)
    for rendered in (
        notifications(transformed),
        render(transformed, Continuous="Enabled"),
    ):
        # Then no event-driven function, no event source on the queue, no grant for one
        assert not CONTINUOUS_RESOURCES & set(rendered.resources)
        assert not rendered.of_type("AWS::Lambda::EventSourceMapping")
        assert "IntakeEventSource" not in {s.get("Sid") for s in detector_statements(rendered)}


def test_given_continuous_mode_then_the_queue_invokes_the_same_code_in_capped_batches_reporting_failures(
    transformed: dict[str, Any],
) -> None:
    # Given notification intake with continuous mode on, a 45-second window and 3 runs at once
    rendered = notifications(
        transformed, Continuous="Enabled", ContinuousBatchingWindow="45", ContinuousConcurrency="3"
    )

    # Then the intake queue invokes the detector's code (its arrivals handler) in batches gathered
    # for the window, at most 3 at once, each answering with the messages to keep
    function = rendered.resources["ArrivalsFunction"]["Properties"]
    detector = rendered.resources["DetectorFunction"]["Properties"]
    assert (function["Code"], function["Handler"], function["Role"]) == (
        detector["Code"],
        "app.arrivals_handler",
        detector["Role"],
    )
    mapping = arrivals_mapping(rendered)
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["IntakeQueue", "Arn"]}
    assert mapping["MaximumBatchingWindowInSeconds"] == "45"
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": "3"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 10 < mapping["BatchSize"] <= 10_000  # over 10 needs a batching window, which it has

    # And a batch stays invisible longer than its run may last; the schedule stays, unchanged
    queue = rendered.resources["IntakeQueue"]["Properties"]
    assert queue["VisibilityTimeout"] > function["Timeout"]
    schedules = [
        r["Properties"].get("ScheduleExpression") for r in rendered.of_type("AWS::Events::Rule").values()
    ]
    assert schedules.count("rate(15 minutes)") == 1
    variables = function["Environment"]["Variables"]
    assert (variables["INTAKE"], variables["INTAKE_QUEUE_URL"]) == ("Notifications", {"Ref": "IntakeQueue"})
    assert variables["FANOUT_QUEUE_URL"] == ""  # an arrivals run reads its few files itself

    # And the role may read the queue's attributes (the event source's poller), still never send
    (source,) = [s for s in detector_statements(rendered) if s.get("Sid") == "IntakeEventSource"]
    assert (source["Action"], source["Resource"]) == (
        "sqs:GetQueueAttributes",
        {"Fn::GetAtt": ["IntakeQueue", "Arn"]},
    )
    sends = [s for s in detector_statements(rendered) if "sqs:SendMessage" in as_list(s["Action"])]
    assert all(s["Resource"] != {"Fn::GetAtt": ["IntakeQueue", "Arn"]} for s in sends)
    (logs,) = [s for s in detector_statements(rendered) if "logs:PutLogEvents" in as_list(s["Action"])]
    assert {"Fn::GetAtt": ["ArrivalsLogGroup", "Arn"]} in logs["Resource"]


def test_given_continuous_mode_then_a_flood_of_notifications_starts_at_most_the_capped_runs(
    transformed: dict[str, Any],
) -> None:
    # Given the parameters' bounds: whoever writes objects to the trail bucket (EventBridge's Object
    # Created) or sends through the trail's topic makes messages, not invocations beyond the cap
    bounds = transformed["Parameters"]["ContinuousConcurrency"]
    assert 2 <= bounds["MinValue"] <= bounds["Default"] <= bounds["MaxValue"] <= 20
    window = transformed["Parameters"]["ContinuousBatchingWindow"]
    assert 1 <= window["MinValue"] <= window["Default"] <= window["MaxValue"] <= 300
    rendered = notifications(transformed, Continuous="Enabled")
    mapping = arrivals_mapping(rendered)
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": str(bounds["Default"])}
    # No reserved concurrency either: throttled invocations would count as receives and dead-letter
    assert "ReservedConcurrentExecutions" not in rendered.resources["ArrivalsFunction"]["Properties"]


def test_given_continuous_mode_without_notifications_then_the_template_rule_refuses_the_parameters(
    transformed: dict[str, Any],
) -> None:
    rule = transformed["Rules"]["ContinuousNeedsNotifications"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "Continuous"}, "Enabled"]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "Intake"}, "Notifications"]}
