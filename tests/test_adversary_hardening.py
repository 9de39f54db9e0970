"""An attacker who knows trailgeo (issue 13): secrets in traces, forged internal messages, tuning
that silences everything, and the smaller holes (grants, the webhook host, hidden characters).

Each test fails on the code before its defence; docs/threat-model.md names them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from tests.aws import FakeLambdaContext, load_function, queued_outbox, receive_alerts, set_environment
from tests.test_channels import REGION, FakeSlack, fixed_alert, hostile_alert
from tests.test_channels import slack as slack  # noqa: PLC0414 - the local webhook fixture, re-exported
from tests.test_deploy_limits import iam_match, render, transformed  # noqa: F401 - the fixture
from tests.test_fanout import OPTIONS as FANOUT_OPTIONS
from tests.test_fanout import PARTIALS, SETTINGS, TICKS, fan_out, world
from tests.test_handler import data_points, deployment, emf_documents, scheduled_event  # noqa: F401
from tests.test_tuning import ALICE, verdict
from trailgeo.adapters.channels import ChannelError, SlackChannel, SlackWebhookPoster, check_webhook_url
from trailgeo.adapters.dynamodb import DynamoOutbox
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.app.fanout import run_task
from trailgeo.app.notify import NotifierSettings, build_notifier
from trailgeo.cli import terminal_safe
from trailgeo.core.alerts import UserAgent
from trailgeo.core.render.asff import asff_finding, default_product_arn
from trailgeo.core.render.chatbot import chatbot_notification
from trailgeo.core.render.email import email_body, email_subject
from trailgeo.core.render.envelope import sns_message
from trailgeo.core.render.slack import slack_message
from trailgeo.core.text import INVISIBLE
from trailgeo.core.tuning import MAX_COUNTRIES_FOR_EVERYONE, Tuning, TuningError
from trailgeo.ports import FanoutTask

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"
DETECTOR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/trailgeo-DetectorRole-1A2B3C"
INSIDER = f"arn:aws:iam::{ACCOUNT}:role/developer"
WEBHOOK_PATH = "/services/T0SECRET/B0SECRET/webhooksecrettoken"


# ---------------------------------------------------------------------------- item 2: traces

# What the notifier's Lambda does (the Tracer of trailgeo.observability, created at import, in a
# Lambda environment with tracing on), then one post to the webhook inside a traced method. With
# ``also``, the listed modules are patched too: the control case, an HTTP library being traced.
TRACED_POST = """
import sys
from aws_xray_sdk.core import patch
from aws_xray_sdk.core.patcher import _PATCHED_MODULES
from trailgeo.observability import tracer
from trailgeo.adapters.channels import SlackWebhookPoster

if sys.argv[2]:
    patch(sys.argv[2].split(","))

@tracer.capture_method
def notify() -> None:
    SlackWebhookPoster(lambda: sys.argv[1], timeout=5).post({"text": "an alert"})

notify()
print(",".join(sorted(_PATCHED_MODULES)))
"""


@pytest.fixture
def xray_daemon() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 standing in for the X-Ray daemon: the SDK's emitter sends it
    every subsegment (Powertools streams each one as it closes)."""
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)
    try:
        yield daemon
    finally:
        daemon.close()


def traced_post(daemon: socket.socket, url: str, also: str = "") -> tuple[list[str], list[str]]:
    """(the modules X-Ray patched, the trace documents the daemon received) for one traced post."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    environment |= {
        "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "notifier"),
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }
    done = subprocess.run(  # a process of its own: X-Ray's patches are global and permanent
        [sys.executable, "-c", TRACED_POST, url, also],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    documents = []
    while True:
        try:
            documents.append(daemon.recv(65536).decode())
        except TimeoutError:
            return done.stdout.strip().splitlines()[-1].split(","), documents


def test_given_the_notifier_traced_in_lambda_when_it_posts_to_slack_then_no_trace_carries_the_webhook_url(
    slack: FakeSlack, xray_daemon: socket.socket
) -> None:
    # Given the local Slack on a URL whose path is the secret, and X-Ray as in the notifier's Lambda
    url = slack.url.replace("/services/T000/B000/XXXX", WEBHOOK_PATH)

    # When the notifier posts an alert inside a traced method
    patched, documents = traced_post(xray_daemon, url)

    # Then X-Ray patched botocore alone, and no trace document holds the URL's secret path
    assert patched == ["botocore"]
    assert len(slack.posts) == 1
    assert any('"subsegment"' in document for document in documents)
    assert not [document for document in documents if "webhooksecrettoken" in document]

    # (and the daemon would have seen it, had an HTTP library been traced)
    _, control = traced_post(xray_daemon, url, also="httplib")
    assert [document for document in control if WEBHOOK_PATH in document]


# ---------------------------------------------------------------------------- item 10: forged messages


def denies(statements: list[dict[str, Any]], action: str, principal_arn: str) -> bool:
    """Whether a Deny statement for ``action`` holds for a caller whose aws:PrincipalArn is
    ``principal_arn`` (StringNotEquals, the only operator these policies use)."""
    for statement in statements:
        if statement["Effect"] != "Deny" or action not in as_list(statement["Action"]):
            continue
        condition = statement.get("Condition", {})
        if set(condition) == {"StringNotEquals"} and set(condition["StringNotEquals"]) == {
            "aws:PrincipalArn"
        }:
            allowed = condition["StringNotEquals"]["aws:PrincipalArn"]
            arn = DETECTOR_ROLE if allowed == {"Fn::GetAtt": ["DetectorRole", "Arn"]} else allowed
            if principal_arn != arn:
                return True
    return False


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize(
    ("policy", "action"),
    [
        ("AlertsTopicPolicy", "sns:Publish"),
        ("FanOutQueuePolicy", "sqs:SendMessage"),
        ("PartialsBucketPolicy", "s3:PutObject"),
    ],
)
def test_given_the_resource_policies_then_only_the_detector_role_publishes_alerts_sends_tasks_writes_partials(
    transformed: dict[str, Any],  # noqa: F811 - the fixture
    policy: str,
    action: str,
) -> None:
    # Given the stack in fan-out mode
    resources = render(transformed, FanOut="Enabled").resources

    # When a principal of the account (allowed the action by its own IAM policy) or a service calls
    statements = resources[policy]["Properties"]["PolicyDocument"]["Statement"]

    # Then the resource's policy refuses everyone but the detector's role, and allows no service
    assert denies(statements, action, INSIDER)
    assert denies(statements, action, f"arn:aws:iam::{ACCOUNT}:root")
    assert not denies(statements, action, DETECTOR_ROLE)
    assert [s for s in statements if s["Effect"] == "Allow"] == []


def test_given_the_key_policy_then_no_service_may_encrypt_for_the_alerts_topic(
    transformed: dict[str, Any],  # noqa: F811 - the fixture
) -> None:
    # Given the stack's key: the services it lets encrypt for SNS topics
    statements = render(transformed).key_statements()
    topic_contexts = [
        (s["Principal"]["Service"], s["Condition"]["ArnLike"]["kms:EncryptionContext:aws:sns:topicArn"])
        for s in statements
        if "kms:EncryptionContext:aws:sns:topicArn" in json.dumps(s.get("Condition", {}))
    ]

    # Then only CloudWatch alarms, for the operations topic (an EventBridge rule once could publish)
    assert [service for service, _ in topic_contexts] == ["cloudwatch.amazonaws.com"]


@pytest.fixture
def outbox_world(aws: Any, slack: FakeSlack) -> tuple[Any, DynamoOutbox, Any]:
    """A table holding the detector's outbox with the fixed alert queued, and a notifier (Slack
    through its secret, the outbox from TABLE_NAME) built as the Lambda builds it."""
    outbox = queued_outbox(aws, fixed_alert())
    secret = aws.client("secretsmanager", region_name=REGION).create_secret(Name="s", SecretString=slack.url)
    settings = NotifierSettings(
        slack_webhook_secret_arn=secret["ARN"], table_name=outbox.table, region=REGION
    )
    return aws, outbox, build_notifier(settings, aws)


def test_given_forged_alerts_on_the_notifier_queue_then_no_channel_gets_them_and_each_is_counted(
    outbox_world: tuple[Any, DynamoOutbox, Any],
    slack: FakeSlack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the detector's alert queued in its outbox, and two messages a principal of the account
    # sent to the topic (or the queue): one naming no queued alert, one altering the queued alert
    _, _, notifier = outbox_world
    real = fixed_alert()
    unknown = fixed_alert(alert_id="f" * 32)
    altered = real.model_copy(update={"explanation": "Known VPN egress, nothing to do."})
    capsys.readouterr()

    # When the notifier takes the three messages
    reports = [notifier.notify(alert.to_json()) for alert in (unknown, altered, real)]

    # Then only the queued alert reaches Slack; the forged ones are dropped and counted by reason
    assert [r.refused for r in reports] == ["not_in_outbox", "differs_from_outbox", ""]
    assert slack.posts == [slack_message(real, REGION)]
    points = data_points(emf_documents(capsys.readouterr().out))
    assert sorted(d["reason"] for _, name, d in points if name == "AlertsRefused" and "reason" in d) == [
        "differs_from_outbox",
        "not_in_outbox",
    ]


def test_given_an_outbox_item_that_is_no_alert_when_its_id_is_sent_then_the_notifier_refuses_it(
    outbox_world: tuple[Any, DynamoOutbox, Any],
    slack: FakeSlack,
) -> None:
    # Given an outbox item a principal of the account wrote under an alert id, holding no alert
    aws, outbox, notifier = outbox_world
    forged = fixed_alert(alert_id="e" * 32)
    aws.client("dynamodb", region_name=REGION).put_item(
        TableName=outbox.table,
        Item={
            "pk": {"S": "OUTBOX"},
            "sk": {"S": f"A#{forged.alert_id}"},
            "doc": {"S": '{"not": "an alert"}'},
        },
    )

    # When a message naming that id reaches the notifier
    report = notifier.notify(forged.to_json())

    # Then it is refused as not queued, rather than failing (and being retried into the DLQ)
    assert report.refused == "not_in_outbox"
    assert slack.posts == []


def test_given_an_alert_too_large_for_sns_when_published_compacted_then_the_notifier_still_delivers_it(
    outbox_world: tuple[Any, DynamoOutbox, Any],
    slack: FakeSlack,
) -> None:
    # Given a queued alert whose SNS message carries its compacted form (a megabyte of user agent)
    _, outbox, notifier = outbox_world
    big = fixed_alert(alert_id="a" * 32, user_agent=UserAgent(original=["x" * 300_000]))
    assert outbox.put(big)
    published = json.loads(json.loads(sns_message(big))["default"])

    # When it reaches the notifier, then it is the detector's alert: delivered
    report = notifier.notify(json.dumps(published))
    assert (report.refused, report.delivered) == ("", ("slack",))
    assert published != json.loads(big.to_json())


def test_given_a_forged_fan_out_task_then_the_worker_refuses_it_unread_and_counts_it(
    country_test_mmdb: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    with mock_aws():
        # Given a fanned-out window, and a file a bucket writer put after it was planned
        session, deployment_, queue_url = world()
        deps, fanout, _, tasks = fan_out(session, deployment_, queue_url, geo, TICKS[1])
        planted = tasks[0].keys[0].replace(".json.gz", "_planted.json.gz")
        session.client("s3").put_object(Bucket=deployment_.bucket, Key=planted, Body=b"")
        # and tasks a principal allowed to send to the queue forged: the planted file under a real
        # run, and a real file of that run under a made-up run
        under_real_run = FanoutTask(tasks[0].run_id, tasks[0].scheduled_at, 0, 2, [planted])
        made_up_run = FanoutTask("forged-run", tasks[0].scheduled_at, 0, 1, tasks[1].keys[:1])

        # When a worker takes them, then neither is read nor counts towards its batch
        for forged in (under_real_run, made_up_run):
            result = run_task(forged, deps, FANOUT_OPTIONS, fanout)
            assert (result.refused, result.files_read, result.tasks_done) == (1, 0, 0)
        assert session.client("s3").list_objects_v2(Bucket=PARTIALS).get("KeyCount", 0) == 0

        # And through the Lambda handler the refusal is a metric, and the message is not retried
        set_environment(
            monkeypatch,
            deployment_,
            str(country_test_mmdb),
            **SETTINGS,
            FANOUT_QUEUE_URL=queue_url,
            PARTIALS_BUCKET=PARTIALS,
        )
        capsys.readouterr()
        record_ = {"messageId": "forged", "receiptHandle": "r", "body": under_real_run.to_json()}
        template = json.loads((ROOT / "events" / "fanout-task.json").read_text())["Records"][0]
        response = load_function("detector").task_handler(
            {"Records": [template | record_]}, FakeLambdaContext()
        )
        assert response["batchItemFailures"] == []
        points = data_points(emf_documents(capsys.readouterr().out))
        assert [name for _, name, _ in points if name == "TasksRefused"] == ["TasksRefused"]


def test_given_a_task_redelivered_after_its_batch_closed_then_it_is_not_read_again(
    country_test_mmdb: Path,
) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    with mock_aws():
        # Given a fanned-out window whose tasks all ran (the batch is closed)
        session, deployment_, queue_url = world()
        deps, fanout, _, tasks = fan_out(session, deployment_, queue_url, geo, TICKS[1])
        for task in tasks:
            run_task(task, deps, FANOUT_OPTIONS, fanout)

        # When SQS delivers one again, then nothing is read, refused or reduced
        again = run_task(tasks[0], deps, FANOUT_OPTIONS, fanout)
        assert (again.finished, again.refused, again.files_read, again.reduced) == (True, 0, 0, None)


# ---------------------------------------------------------------------------- item 11: tuning


@pytest.mark.parametrize(
    "pattern",
    [
        "*",
        "**",
        "*:*",
        "arn:*",
        "arn:aws:*",
        "arn:aws:sts::*",
        "*/*",
        "arn:aws:sts::*:assumed-role/*",
        "arn:aws:iam::*:user/*",
        "arn:aws:*:111122223333:*",
        "arn:aws:sts::11112222333?:assumed-role/*/*",
        "arn:aws:sts::*:assumed-role/AWSReservedSSO_*",
    ],
)
def test_given_a_catch_all_principal_pattern_when_the_tuning_is_parsed_then_it_is_refused_naming_the_field(
    pattern: str,
) -> None:
    # Given a tuning that ignores everyone matching the pattern, or lets their user agents pass
    ignored = f'version = 1\nignored_principals = ["{pattern}"]'
    scoped = (
        f'version = 1\nignored_user_agents = [{{ user_agents = ["aws-cli/*"], principals = ["{pattern}"] }}]'
    )

    # When it is parsed, then it is refused, the error naming the field and the pattern
    with pytest.raises(TuningError, match=re.escape(f"ignored_principals[0]: {pattern!r} matches every")):
        Tuning.parse(ignored, source="t")
    with pytest.raises(TuningError, match=re.escape("ignored_user_agents[0].principals[0]: ")):
        Tuning.parse(scoped, source="t")


def test_given_narrow_principal_patterns_then_they_are_accepted() -> None:
    narrow = [
        "arn:aws:sts::*:assumed-role/ci-deployer/*",
        "arn:aws:iam::111122223333:role/aws-service-role/*",
        "arn:aws:sts::*:assumed-role/AWSReservedSSO_Admin_*/alice@example.com",
        "arn:aws:sts::*:assumed-role/*/alice@example.com",
        "arn:aws:iam::*:user/alice",
    ]
    assert Tuning.parse(f"version = 1\nignored_principals = {json.dumps(narrow)}", source="t")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('ignored_user_agents = ["Terraform/*"]', "ignored_user_agents[0]: a user agent alone is refused"),
        (
            'ignored_user_agents = [{ user_agents = ["Terraform/*"] }]',
            "ignored_user_agents[0]: needs principals",
        ),
    ],
)
def test_given_user_agents_ignored_alone_when_the_tuning_is_parsed_then_it_is_refused_naming_the_field(
    text: str, expected: str
) -> None:
    with pytest.raises(TuningError, match=re.escape(expected)):
        Tuning.parse(f"version = 1\n{text}", source="t")


def test_given_a_user_agent_ignored_for_one_role_when_an_attacker_sends_it_then_the_attacker_alerts() -> None:
    # Given Terraform's user agent ignored for the CI role from the VPN
    tuning = Tuning.parse(
        "version = 1\n[[ignored_user_agents]]\n"
        'user_agents = ["Terraform/*"]\n'
        'principals = ["arn:aws:sts::*:assumed-role/ci/*"]\n'
        'cidrs = ["198.51.100.0/24"]\n',
        source="t",
    )
    ci = "arn:aws:sts::111122223333:assumed-role/ci/run-1"
    agents = ("Terraform/1.9.0",)

    # When the CI role calls from the VPN, and alice's stolen key sends the same agent from abroad
    # (or from the VPN), or the CI role calls from elsewhere
    # Then only the first is ignored
    assert verdict(tuning, principal=ci, ips=("198.51.100.7",), agents=agents) == "ignored_user_agent"
    assert verdict(tuning, principal=ALICE, ips=("203.0.113.9",), agents=agents) is None
    assert verdict(tuning, principal=ALICE, ips=("198.51.100.7",), agents=agents) is None
    assert verdict(tuning, principal=ci, ips=("203.0.113.9",), agents=agents) is None


def test_given_countries_allowed_to_everyone_when_they_name_the_world_then_the_tuning_is_refused() -> None:
    # Given "everyone may work from" a list of countries, at the bound and one past it
    countries = [f"A{chr(ord('A') + i)}" for i in range(MAX_COUNTRIES_FOR_EVERYONE + 1)]

    def everyone(codes: list[str]) -> str:
        return f'version = 1\n[[allowed_countries]]\nprincipals = ["*"]\ncountries = {json.dumps(codes)}\n'

    # Then offices pass, the world does not (the error names the field)
    assert Tuning.parse(everyone(countries[:-1]), source="t")
    with pytest.raises(TuningError, match=r"allowed_countries: entries whose principals match everyone"):
        Tuning.parse(everyone(countries), source="t")


@pytest.fixture
def operations_inbox(aws: Any, deployment: Any, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """The operations topic with a queue subscribed to it, the tuning parameter and its watch set."""
    sns = aws.client("sns", region_name=REGION)
    sqs = aws.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="trailgeo-operations")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="operations-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    monkeypatch.setenv("OPERATIONS_TOPIC_ARN", topic)
    monkeypatch.setenv("TUNING_PARAMETER", "/trailgeo/tuning")
    return str(queue_url)


def test_given_each_tuning_change_when_the_schedule_fires_then_the_operations_topic_gets_the_diff_once(
    aws: Any,
    operations_inbox: str,
) -> None:
    ssm = aws.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/trailgeo/tuning", Type="SecureString", Value='version = 1\ndescription = "v1"\n')
    handler = load_function("detector")
    handler.lambda_handler(scheduled_event("2026-10-02T00:15:00Z"), FakeLambdaContext())
    first = receive_alerts(aws, operations_inbox)

    # Given an insider who allowlists the country they will work from (hidden characters included)
    trip = '[[allowed_countries]]\nprincipals = ["arn:aws:iam::*:user/alice\u202e"]\ncountries = ["BT"]\n'
    ssm.put_parameter(
        Name="/trailgeo/tuning", Value=f'version = 1\ndescription = "v1"\n{trip}', Overwrite=True
    )

    # When the next runs fire (one environment, then a cold start)
    handler.lambda_handler(scheduled_event("2026-10-02T00:30:00Z"), FakeLambdaContext())
    load_function("detector").lambda_handler(scheduled_event("2026-10-02T00:45:00Z"), FakeLambdaContext())
    changed = receive_alerts(aws, operations_inbox)

    # Then the first version was reported once, the change once, with the diff, its hidden
    # character visible, and whether it applies
    assert [m["Subject"] for m in first] == [
        "trailgeo: tuning changed, version 1 of SSM parameter /trailgeo/tuning"
    ]
    (message,) = changed
    assert message["Subject"].startswith("trailgeo: tuning changed, version 2 of")
    body = message["Message"]
    assert "The version seen before is 1." in body
    assert "--- version 1\n+++ version 2\n" in body
    assert '+principals = ["arn:aws:iam::*:user/alice\\u202e"]' in body
    assert "It is valid and applies" in body

    # And an invalid version is reported too, as such
    ssm.put_parameter(
        Name="/trailgeo/tuning", Value='version = 1\nignored_principals = ["*"]\n', Overwrite=True
    )
    handler.lambda_handler(scheduled_event("2026-10-02T01:00:00Z"), FakeLambdaContext())
    (invalid,) = receive_alerts(aws, operations_inbox)
    assert "It is INVALID, so the detector keeps the last valid tuning" in invalid["Message"]
    assert '+ignored_principals = ["*"]' in invalid["Message"]


def test_given_the_operations_topic_unreachable_when_the_tuning_changed_then_the_next_run_reports_it(
    aws: Any,
    operations_inbox: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a tuning, and an operations topic the detector cannot publish to for one run
    aws.client("ssm", region_name=REGION).put_parameter(
        Name="/trailgeo/tuning", Type="String", Value="version = 1"
    )
    topic = os.environ["OPERATIONS_TOPIC_ARN"]
    monkeypatch.setenv("OPERATIONS_TOPIC_ARN", topic + "-deleted")
    summary = load_function("detector").lambda_handler(
        scheduled_event("2026-10-02T00:15:00Z"), FakeLambdaContext()
    )
    assert "files_read" in summary  # the run itself went on

    # When a later run can publish, then it reports the version
    monkeypatch.setenv("OPERATIONS_TOPIC_ARN", topic)
    load_function("detector").lambda_handler(scheduled_event("2026-10-02T00:30:00Z"), FakeLambdaContext())
    (message,) = receive_alerts(aws, operations_inbox)
    assert "No earlier version was seen" in message["Message"]


# ---------------------------------------------------------------------------- low: grants


@pytest.mark.parametrize("prefix", ["", "cloudtrail/"])
def test_given_the_trail_read_grant_then_it_covers_both_trail_layouts_and_nothing_beside_cloudtrail(
    transformed: dict[str, Any],  # noqa: F811 - the fixture
    prefix: str,
) -> None:
    # Given the role as deployed with a trail prefix
    (read,) = [
        s
        for s in render(transformed, TrailPrefix=prefix).statements("DetectorRole")
        if s.get("Sid") == "ReadTrailLogs"
    ]
    bucket = "arn:aws:s3:::org-trail-bucket/"

    def readable(key: str) -> bool:
        return any(iam_match(pattern, bucket + key) for pattern in as_list(read["Resource"]))

    # Then both layouts' CloudTrail files are readable, and the other folders are not
    logs = f"{prefix}AWSLogs/"
    assert readable(f"{logs}111122223333/CloudTrail/eu-west-1/2026/10/02/f.json.gz")
    assert readable(f"{logs}o-abc123def4/111122223333/CloudTrail/eu-west-1/2026/10/02/f.json.gz")
    for other in (
        f"{logs}111122223333/Config/eu-west-1/2026/10/02/ConfigSnapshot/x.json.gz",
        f"{logs}111122223333/CloudTrail-Digest/eu-west-1/2026/10/02/d.json.gz",
        f"{logs}111122223333/elasticloadbalancing/eu-west-1/x.log.gz",
        f"{logs}planted.json.gz",
    ):
        assert not readable(other), other


def test_given_the_trail_key_then_the_role_decrypts_only_the_trail_bucket_s_objects_through_s3(
    transformed: dict[str, Any],  # noqa: F811 - the fixture
) -> None:
    # Given the role as deployed with a trail key
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    statements = render(transformed, TrailKmsKeyArn=key).statements("DetectorRole")
    (decrypt,) = [s for s in statements if s.get("Sid") == "DecryptTrailLogs"]
    contexts = as_list(decrypt["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"])

    def allowed(context: str) -> bool:
        return any(iam_match(pattern, context) for pattern in contexts)

    # Then with S3 Bucket Keys (the bucket's ARN) or without (the object's), and nothing else
    assert allowed("arn:aws:s3:::org-trail-bucket")
    assert allowed(
        "arn:aws:s3:::org-trail-bucket/AWSLogs/111122223333/CloudTrail/eu-west-1/2026/10/02/f.json.gz"
    )
    assert not allowed("arn:aws:s3:::another-bucket")
    assert not allowed("arn:aws:s3:::org-trail-bucket/secrets/backup.tar")
    assert decrypt["Condition"]["StringLike"]["kms:ViaService"] == "s3.*.amazonaws.com"


TABLE_CALLS = {  # the boto3 DynamoDB calls, by the IAM action each needs
    "get_item": "dynamodb:GetItem",
    "batch_get_item": "dynamodb:BatchGetItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "transact_write_items": "dynamodb:PutItem",  # authorised per item
}


def test_given_the_detector_s_code_then_its_role_grants_exactly_the_table_actions_it_calls(
    transformed: dict[str, Any],  # noqa: F811 - the fixture
) -> None:
    # Given what the detector's adapters call on the table
    adapters = ROOT / "src" / "trailgeo" / "adapters"
    source = "".join((adapters / name).read_text() for name in ("dynamodb.py", "fanout.py", "operations.py"))
    called = {
        action
        for call, action in TABLE_CALLS.items()
        if re.search(rf"\.{call}\b|get_paginator\(\"{call}\"\)", source)
    }

    # Then the role grants exactly those, on the table, and the table refuses to be deleted
    rendered = render(transformed)
    (table,) = [
        s
        for s in rendered.statements("DetectorRole")
        if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))
    ]
    assert set(as_list(table["Action"])) == called
    assert "dynamodb:BatchWriteItem" not in called
    assert rendered.resources["FrequencyTable"]["Properties"]["DeletionProtectionEnabled"] is True


# ---------------------------------------------------------------------------- low: Slack webhook host


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/services/T0/B0/x",
        "https://hooks.slack.com.evil.example/services/T0/B0/x",
        "https://hooks.slack.com@evil.example/services/T0/B0/x",
        "https://evil.example#@hooks.slack.com/services/T0/B0/x",
    ],
)
def test_given_a_webhook_secret_naming_another_host_when_posting_then_it_is_refused_naming_slack_s_host(
    url: str,
) -> None:
    with pytest.raises(ChannelError, match=r"only hooks\.slack-gov\.com or hooks\.slack\.com") as raised:
        SlackChannel(SlackWebhookPoster(lambda: url)).send(fixed_alert())
    assert "evil" not in str(raised.value)  # the URL is a credential: never in an error
    assert check_webhook_url("https://hooks.slack.com/services/T0/B0/x")
    assert check_webhook_url("https://HOOKS.SLACK.COM/services/T0/B0/x")


# ---------------------------------------------------------------------------- low: hidden characters

HIDDEN = "\u202e\u2066\u200b\u200d\u2060\u00ad\u061c\ufe0f\ufeff\U000e0041\U000e0049\U000e007f\U000e0100"


def _invisible(text: str) -> list[str]:
    return [f"U+{ord(ch):04X}" for ch in text if any(low <= ord(ch) <= high for low, high in INVISIBLE)]


def test_given_bidi_zero_width_and_tag_characters_in_an_alert_when_rendered_then_no_channel_shows_them() -> (
    None
):
    # Given an alert whose CloudTrail strings hide text (tag characters spell "AI": an instruction a
    # person cannot see but a program or a model reads) and reorder it
    alert = hostile_alert()
    evil = f"arn:aws:iam::111122223333:user/alice{HIDDEN}txt.exe"
    alert = alert.model_copy(
        update={
            "aws": alert.aws.model_copy(
                update={
                    "cloudtrail": alert.aws.cloudtrail.model_copy(
                        update={
                            "user_identity": alert.aws.cloudtrail.user_identity.model_copy(
                                update={"arn": evil}
                            )
                        }
                    )
                }
            ),
            "user_agent": UserAgent(original=[f"aws-cli/2{HIDDEN}"]),
            "explanation": f"called by {evil}",
        }
    )

    # When it is rendered for Slack, AWS Chatbot, e-mail and Security Hub
    renderings = {
        "slack": json.dumps(slack_message(alert, REGION), ensure_ascii=False),
        "chatbot": json.dumps(chatbot_notification(alert, REGION), ensure_ascii=False),
        "email": email_subject(alert) + email_body(alert),
        "asff": json.dumps(
            asff_finding(alert, default_product_arn("aws", REGION, ACCOUNT)), ensure_ascii=False
        ),
    }

    # Then none of them carries one of those characters
    assert {name: _invisible(text) for name, text in renderings.items()} == {name: [] for name in renderings}


def test_given_tag_characters_on_a_terminal_then_they_are_escaped_and_json_reads_them_back() -> None:
    line = json.dumps({"principal": f"alice{HIDDEN}"}, ensure_ascii=False)

    shown = terminal_safe(line)

    assert _invisible(shown) == []
    assert "\\udb40\\udc41" in shown  # U+E0041 as JSON writes it
    assert json.loads(shown) == json.loads(line)
