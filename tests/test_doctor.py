"""``trailgeo doctor`` against a stack in moto's CloudFormation: the resources, outputs and parameters
a trailgeo stack has, healthy and then broken one way per check."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.test_deploy_limits import KEY, render, transformed  # noqa: F401 - the fixture
from tests.test_template import as_list
from trailgeo import cli
from trailgeo.adapters.dynamodb import DynamoLedger
from trailgeo.app.doctor import (
    FAIL,
    OK,
    SKIP,
    Check,
    Deployed,
    Probe,
    report,
    role_access_verdict,
    role_probes,
)
from trailgeo.core.alerts import NOTIFICATION_KINDS, paging_filter_policy

REGION = "us-east-1"
STACK = "trailgeo"
BUCKET = "org-trail-bucket"
TUNING = "/trailgeo/tuning"


def stack_template(*, notifier: bool = False) -> str:
    """The stack's resource types, outputs and parameters, in a template moto's CloudFormation runs."""
    table_keys = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    resources: dict[str, Any] = {
        "DetectorRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            },
        },
        "DetectorFunction": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Runtime": "python3.13",
                "Handler": "app.lambda_handler",
                "Role": {"Fn::GetAtt": ["DetectorRole", "Arn"]},
                "Code": {"ZipFile": "def lambda_handler(event, context):\n    return None\n"},
            },
        },
        "DeadLetterQueue": {"Type": "AWS::SQS::Queue"},
        "DetectorFunctionEvery15Minutes": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "ScheduleExpression": "rate(15 minutes)",
                "State": "ENABLED",
                "Targets": [
                    {
                        "Id": "DetectorFunctionEvery15MinutesLambdaTarget",
                        "Arn": {"Fn::GetAtt": ["DetectorFunction", "Arn"]},
                        "DeadLetterConfig": {"Arn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}},
                    }
                ],
            },
        },
        "AlertsTopic": {"Type": "AWS::SNS::Topic"},
        "OperationsTopic": {"Type": "AWS::SNS::Topic"},
        "FrequencyTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "KeySchema": table_keys,
            },
        },
    }
    outputs: dict[str, Any] = {
        "DetectorFunctionArn": {"Value": {"Fn::GetAtt": ["DetectorFunction", "Arn"]}},
        "DetectorRoleArn": {"Value": {"Fn::GetAtt": ["DetectorRole", "Arn"]}},
        "FrequencyTableName": {"Value": {"Ref": "FrequencyTable"}},
        "AlertsTopicArn": {"Value": {"Ref": "AlertsTopic"}},
        "OperationsTopicArn": {"Value": {"Ref": "OperationsTopic"}},
        "DeadLetterQueueUrl": {"Value": {"Ref": "DeadLetterQueue"}},
    }
    if notifier:
        resources["NotifierQueue"] = {"Type": "AWS::SQS::Queue"}
        outputs["NotifierQueueUrl"] = {"Value": {"Ref": "NotifierQueue"}}
    parameters = {
        name: {"Type": "String", "Default": ""}
        for name in (
            "TrailPrefix",
            "TrailKmsKeyArn",
            "TuningParameterName",
            "TuningKmsKeyArn",
            "PagingEndpoint",
        )
    }
    parameters["PagingSeverity"] = {"Type": "String", "Default": "high"}
    parameters["TrailBucketName"] = {"Type": "String"}
    return json.dumps({"Parameters": parameters, "Resources": resources, "Outputs": outputs})


class World:
    """Inside mock_aws: a trailgeo stack, its trail bucket, its tuning parameter, a subscriber."""

    def __init__(self, *, notifier: bool = False, prefix: str = "", pager: str = "") -> None:
        self.session = boto3.session.Session(region_name=REGION)
        self.clients: dict[str, Any] = {}
        s3 = self.session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="AWSLogs/o-abcdefghij/111122223333/CloudTrail/x.json.gz", Body=b"")
        self.ssm.put_parameter(Name=TUNING, Type="SecureString", Value="version = 1\ntrusted_cidrs = []\n")
        self.cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=stack_template(notifier=notifier),
            Parameters=[
                {"ParameterKey": "TrailBucketName", "ParameterValue": BUCKET},
                {"ParameterKey": "TrailPrefix", "ParameterValue": prefix},
                {"ParameterKey": "TuningParameterName", "ParameterValue": TUNING},
                {"ParameterKey": "PagingEndpoint", "ParameterValue": pager},
            ],
            Capabilities=["CAPABILITY_IAM"],
        )
        outputs = self.cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in outputs}
        table = self.outputs["FrequencyTableName"]
        self.dynamodb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        sqs = self.session.client("sqs")
        self.inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=self.inbox, AttributeNames=["QueueArn"])["Attributes"]
        for topic in ("AlertsTopicArn", "OperationsTopicArn"):  # as AlertEmail subscribes to both
            self.session.client("sns").subscribe(
                TopicArn=self.outputs[topic], Protocol="sqs", Endpoint=inbox_arn["QueueArn"]
            )
        self.ledger = DynamoLedger(self.dynamodb, table)
        self.ledger.advance_watermark(datetime.now(tz=UTC) - timedelta(minutes=10))

    @property
    def cloudformation(self) -> Any:
        return self.client("cloudformation")

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    def client(self, service: str) -> Any:
        """The caller's clients. moto has no policy simulator: IAM answers it as it does a caller
        without iam:SimulatePrincipalPolicy (an AccessDenied, injected)."""
        if service not in self.clients:
            made = self.session.client(service)  # type: ignore[call-overload]
            if service == "iam":
                made.meta.events.register("before-call.iam.SimulatePrincipalPolicy", denied)
            self.clients[service] = made
        return self.clients[service]

    def doctor(self, **options: Any) -> tuple[int, dict[str, Check]]:
        lines: list[str] = []
        code = report(STACK, self.client, datetime.now(tz=UTC), out=lines.append, **options)
        checks = {}
        for line in lines:
            status, rest = line.split(" ", 1)
            name, detail = rest.split(": ", 1)
            checks[name] = Check(status, name, detail)
        return code, checks

    def inbox_messages(self) -> list[dict[str, Any]]:
        sqs = self.session.client("sqs")
        messages = sqs.receive_message(QueueUrl=self.inbox, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


def denied(**_: Any) -> None:
    error: Any = {
        "Error": {"Code": "AccessDenied", "Message": "injected"},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    raise ClientError(error, "SimulatePrincipalPolicy")


@pytest.fixture
def world(aws: Any) -> Callable[..., World]:
    return World


NAMES = [
    "stack",
    "schedule",
    "role-access",
    "trail-bucket",
    "table",
    "last-run",
    "dead-letters",
    "topic",
    "tuning",
]


def test_given_a_healthy_deployment_when_doctor_runs_then_every_check_passes_and_nothing_is_published(
    world: Callable[..., World],
) -> None:
    deployed = world()

    code, checks = deployed.doctor()

    assert list(checks) == NAMES
    assert {name: c.status for name, c in checks.items()} == dict.fromkeys(NAMES, OK) | {"role-access": SKIP}
    assert code == 0
    assert "iam:SimulatePrincipalPolicy" in checks["role-access"].detail
    assert "o-abcdefghij" in checks["trail-bucket"].detail
    assert "rate(15 minutes)" in checks["schedule"].detail
    assert deployed.inbox_messages() == []  # read-only


def test_given_a_broken_deployment_when_doctor_runs_then_each_problem_is_a_failed_line_and_it_exits_1(
    world: Callable[..., World],
) -> None:
    # Given a stack whose schedule was disabled, whose TTL is off, whose runs stopped two hours ago,
    # with a failed run in the dead-letter queue, an invalid tuning and a wrong trail prefix
    deployed = world(prefix="wrong/")
    events = deployed.session.client("events")
    (rule,) = events.list_rule_names_by_target(TargetArn=deployed.outputs["DetectorFunctionArn"])["RuleNames"]
    events.disable_rule(Name=rule)
    table = deployed.outputs["FrequencyTableName"]
    deployed.dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": False, "AttributeName": "expires_at"}
    )
    deployed.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "STATE"}, "sk": {"S": "WATERMARK"}})
    deployed.ledger.advance_watermark(datetime.now(tz=UTC) - timedelta(hours=2))
    deployed.session.client("sqs").send_message(
        QueueUrl=deployed.outputs["DeadLetterQueueUrl"], MessageBody="{}"
    )
    deployed.ssm.put_parameter(Name=TUNING, Type="SecureString", Value="version = 2\n", Overwrite=True)

    # When the doctor runs, well after the deploy
    lines: list[str] = []
    code = report(STACK, deployed.client, datetime.now(tz=UTC) + timedelta(hours=1), out=lines.append)

    # Then every broken thing is one FAIL line saying what, and the exit code is 1
    failed = {line.split(" ", 2)[1].rstrip(":"): line for line in lines if line.startswith("FAIL ")}
    assert set(failed) == {"schedule", "trail-bucket", "table", "last-run", "dead-letters", "tuning"}
    assert "DISABLED" in failed["schedule"]
    assert "TrailPrefix" in failed["trail-bucket"]
    assert "expires_at" in failed["table"]
    assert "ago" in failed["last-run"]
    assert "1 message(s)" in failed["dead-letters"]
    assert "version" in failed["tuning"]
    assert code == 1


def test_given_publish_test_then_one_test_message_reaches_the_mailbox_through_the_operations_topic(
    world: Callable[..., World],
) -> None:
    # Given a deployment whose alerts topic takes messages from the detector's role only (and, with
    # a notifier, would dead-letter anything that is not an alert)
    deployed = world(notifier=True)

    # When the doctor is asked for a test message
    code, checks = deployed.doctor(publish_test=True)

    # Then one reaches the subscribers, through the operations topic
    (message,) = deployed.inbox_messages()
    assert message["TopicArn"] == deployed.outputs["OperationsTopicArn"]
    assert message["Subject"] == "trailgeo doctor: test message"
    assert message["MessageAttributes"]["trailgeo_test"]["Value"] == "true"
    assert f"test message {message['MessageId']} published to the operations topic" in checks["topic"].detail
    assert code == 0


def test_given_no_such_stack_when_the_command_runs_then_it_says_so_on_stdout_and_exits_1(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["doctor", "--stack", "not-deployed", "--region", REGION])
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"FAIL stack: stack not-deployed not found in {REGION}: give --stack and the stack's --region"
    ]
    assert code == 1


def test_given_simulator_decisions_then_the_verdict_names_each_refused_probe() -> None:
    role = "arn:aws:iam::123456789012:role/trailgeo-DetectorRole-X"
    listing = Probe("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "AWSLogs/"})
    reading = Probe("s3:GetObject", "arn:aws:s3:::b/AWSLogs/x")
    decrypting = Probe("kms:Decrypt", KEY, {"kms:ViaService": "s3.us-east-1.amazonaws.com"})

    allowed = role_access_verdict(role, [(listing, "allowed"), (reading, "allowed")])
    refused = role_access_verdict(
        role, [(listing, "allowed"), (decrypting, "implicitDeny"), (reading, "explicitDeny")]
    )

    assert (allowed.status, refused.status) == (OK, FAIL)
    assert "s3:GetObject, s3:ListBucket" in allowed.detail
    assert f"kms:Decrypt on {KEY}: implicitDeny" in refused.detail
    assert "s3:GetObject on arn:aws:s3:::b/AWSLogs/x: explicitDeny" in refused.detail
    assert "s3:ListBucket" not in refused.detail


def granted(statements: list[dict[str, Any]], probe: Probe) -> bool:
    """Whether an Allow statement covers ``probe``: its action, a resource pattern, every condition
    (StringEquals, StringLike, ArnLike: the operators the template uses) satisfied by its context."""
    operators: dict[str, Callable[[str, str], bool]] = {
        "StringEquals": str.__eq__,
        "StringLike": lambda pattern, value: fnmatch.fnmatchcase(value, pattern),
        "ArnLike": lambda pattern, value: fnmatch.fnmatchcase(value, pattern),
    }
    context = probe.context or {}
    for statement in statements:
        if probe.action not in as_list(statement["Action"]):
            continue
        patterns = [r for r in as_list(statement["Resource"]) if isinstance(r, str)]
        if not any(fnmatch.fnmatchcase(probe.resource, p) for p in patterns):
            continue
        if all(
            key in context and any(operators[operator](str(v), context[key]) for v in as_list(values))
            for operator, body in statement.get("Condition", {}).items()
            for key, values in body.items()
        ):
            return True
    return False


@pytest.mark.parametrize("prefix", ["", "cloudtrail/"])
def test_given_the_templates_role_then_it_grants_what_the_doctor_probes(
    transformed: dict[str, Any],  # noqa: F811 - the fixture
    prefix: str,
) -> None:
    # Given the role as deployed with a trail prefix and key, a tuning parameter and its key
    parameters = {
        "TrailPrefix": prefix,
        "TrailKmsKeyArn": KEY,
        "TuningParameterName": TUNING,
        "TuningKmsKeyArn": KEY.replace("1234abcd", "5678efab"),
        "ExistingTableName": "trailgeo-state",
    }
    statements = render(transformed, **parameters).statements("DetectorRole")
    deployed = Deployed(
        name=STACK,
        status="CREATE_COMPLETE",
        changed_at=datetime(2026, 12, 2, tzinfo=UTC),
        outputs={
            "AlertsTopicArn": f"arn:aws:sns:{REGION}:123456789012:trailgeo-AlertsTopic-X",
            "FrequencyTableName": "trailgeo-state",
        },
        parameters={"TrailBucketName": "org-trail-bucket", **parameters},
        partition="aws",
        region=REGION,
    )

    # When the doctor's probes are evaluated against those statements (the topic: a reference)
    probes = [p for p in role_probes(deployed) if p.action != "sns:Publish"]

    # Then each is granted, and a probe outside the grants is not
    assert {p.action for p in probes} >= {"s3:ListBucket", "s3:GetObject", "kms:Decrypt", "ssm:GetParameter"}
    assert [p for p in probes if not granted(statements, p)] == []
    outside = Probe("s3:GetObject", f"arn:aws:s3:::org-trail-bucket/{prefix}Config/x")
    assert not granted(statements, outside)
    wrong_service = Probe("kms:Decrypt", KEY, {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"})
    assert not granted(statements, wrong_service)


def test_given_a_lagging_watermark_just_after_a_deploy_then_last_run_is_not_yet_ok(
    world: Callable[..., World],
) -> None:
    # Given a first run that started the watermark two hours back and then failed to list
    deployed = world()
    table = deployed.outputs["FrequencyTableName"]
    deployed.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "STATE"}, "sk": {"S": "WATERMARK"}})
    deployed.ledger.advance_watermark(datetime.now(tz=UTC) - timedelta(hours=2))

    # When the doctor runs minutes after the deploy
    code, checks = deployed.doctor()

    # Then last-run says it cannot tell yet, rather than OK
    assert checks["last-run"].status == SKIP
    assert "ago" in checks["last-run"].detail
    assert code == 0


PAGER = "https://events.pager.example/integration/trailgeo"


@pytest.mark.parametrize(
    ("policy", "status", "says"),
    [
        (
            paging_filter_policy("high"),
            "OK",
            f"the pager {PAGER} is paged at high, critical, new or escalating",
        ),
        (paging_filter_policy("critical"), "FAIL", "not the stack's"),  # edited: highs page nobody
        (
            {"severity": ["high", "critical"], "notification": list(NOTIFICATION_KINDS)},
            "FAIL",
            "not the stack's",
        ),
        (None, "FAIL", "filter policy is none"),  # every alert pages
    ],
    ids=["as-written", "raised-to-critical", "updates-too", "no-filter"],
)
def test_given_a_paging_endpoint_when_its_filter_is_checked_then_only_the_stacks_passes(
    world: Callable[..., World], policy: dict[str, Any] | None, status: str, says: str
) -> None:
    # Given a stack with a PagingEndpoint subscribed (confirmed) with a filter policy
    deployed = world(pager=PAGER)
    attributes = {"FilterPolicy": json.dumps(policy)} if policy is not None else {}
    deployed.session.client("sns").subscribe(
        TopicArn=deployed.outputs["AlertsTopicArn"], Protocol="https", Endpoint=PAGER, Attributes=attributes
    )

    # When the doctor runs
    _, checks = deployed.doctor()

    # Then the topic check passes only for the filter the stack writes
    assert checks["topic"].status == status
    assert says in checks["topic"].detail


def test_given_a_paging_endpoint_never_subscribed_then_the_topic_check_fails(
    world: Callable[..., World],
) -> None:
    deployed = world(pager=PAGER)
    code, checks = deployed.doctor()
    assert checks["topic"].status == "FAIL"
    assert f"the pager {PAGER} is not subscribed: nobody is paged" in checks["topic"].detail
    assert code == 1
