"""What a real AWS account enforces and moto does not (issue 18): quotas, key policies, IAM
resource forms, SQS limits and throttling, read from the template after the SAM transform and
rendered for a set of parameters (conditions decided, ``Fn::If`` and ``Fn::Sub`` resolved).

The transform needs the .venv-sam venv (``make template-venv``); without it these tests skip,
except under CI=true, where they fail.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest

from tests.aws import emitted_metrics
from tests.test_template import SAM_BIN, TEMPLATE, as_list, unavailable
from trailgeo.adapters.fanout import MAX_MESSAGE_BYTES
from trailgeo.app.detect import RunReport
from trailgeo.app.fanout import FANOUT_LEASE, MAX_TASK_KEY_BYTES

ACCOUNT = "123456789012"
REGION = "us-east-1"
STACK = "trailgeo"
PSEUDO = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::StackName": STACK,
    "AWS::URLSuffix": "amazonaws.com",
}
REQUIRED = {"TrailBucketName": "org-trail-bucket"}
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:trailgeo/slack-webhook"
SECRET_FULL = f"{SECRET}-AbCdEf"  # the ARN Secrets Manager gives the secret: name plus a random suffix
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# A realistic organization-trail key (with a short trail prefix): about 160 bytes.
ORG_KEY = (
    "cloudtrail/AWSLogs/o-abcdefghij/123456789012/CloudTrail/ap-southeast-2/2026/12/02/"
    "123456789012_CloudTrail_ap-southeast-2_20261202T1215Z_AbCdEfGhIjKlMnOp.json.gz"
)

_TRANSFORM = """
import json, sys
from cfnlint.decode import decode
from samtranslator.translator.transform import transform

class NoManagedPolicies:  # every function names its own role: no managed policy to look up
    def load(self):
        return {}

template, matches = decode(sys.argv[1])
if matches:
    sys.exit("\\n".join(str(m) for m in matches))
for resource in template["Resources"].values():  # as `sam validate` does: code lives in S3 once packaged
    if resource["Type"] == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://bucket/function.zip"
    if resource["Type"] == "AWS::Serverless::LayerVersion":
        resource["Properties"]["ContentUri"] = "s3://bucket/layer.zip"
print(json.dumps(transform(template, json.loads(sys.argv[2]), NoManagedPolicies())))
"""


@cache
def _transformed() -> dict[str, Any] | None:
    python = SAM_BIN / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", _TRANSFORM, str(TEMPLATE), json.dumps(REQUIRED)],
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_DEFAULT_REGION": REGION},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@pytest.fixture
def transformed() -> dict[str, Any]:
    document = _transformed()
    if document is None:
        unavailable(f"{SAM_BIN / 'python'} is missing: run `make template-venv`")
    assert document is not None
    return document


_NO_VALUE = object()


class Rendered:
    """The transformed template as CloudFormation would deploy it with ``parameters``: resources whose
    condition is false dropped, ``Fn::If`` decided, ``Ref`` of parameters and pseudo parameters and
    ``Fn::Sub`` of them resolved; references to resources stay as they are."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, str]) -> None:
        defaults = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
        self.parameters = {**defaults, **REQUIRED, **parameters}
        self.template = template
        self._conditions: dict[str, bool] = {}
        self.parameter_specs: Mapping[str, Any] = template["Parameters"]
        self.resources = {
            name: self.resolve(resource)
            for name, resource in template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }
        self.outputs = {
            name: self.resolve(output)
            for name, output in template.get("Outputs", {}).items()
            if "Condition" not in output or self.condition(output["Condition"])
        }

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = self._decide(self.template["Conditions"][name])
        return self._conditions[name]

    def _decide(self, node: Any) -> bool:
        (function, arguments), *_ = node.items()
        if function == "Condition":
            return self.condition(arguments)
        if function == "Fn::Equals":
            left, right = (str(self.resolve(a)) for a in arguments)
            return left == right
        if function == "Fn::Not":
            return not self._decide(arguments[0])
        if function == "Fn::And":
            return all(self._decide(a) for a in arguments)
        if function == "Fn::Or":
            return any(self._decide(a) for a in arguments)
        raise AssertionError(f"condition function {function} not rendered")

    def _substitute(self, text: str, variables: Mapping[str, Any]) -> str:
        def value(match: re.Match[str]) -> str:
            name = match[1]
            if name in variables:
                return str(variables[name])
            if name in self.parameters:
                return self.parameters[name]
            return PSEUDO.get(name, match[0])  # a resource's ${Name} or ${Name.Attr} stays

        return re.sub(r"\$\{([^}!]+)\}", value, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (function, arguments), *_ = node.items()
            if function == "Ref":
                if arguments == "AWS::NoValue":
                    return _NO_VALUE
                if arguments in self.parameters:
                    return self.parameters[arguments]
                return PSEUDO.get(arguments, node)
            if function == "Fn::If":
                chosen = arguments[1] if self.condition(arguments[0]) else arguments[2]
                return self.resolve(chosen)
            if function == "Fn::Sub":
                text, variables = (arguments, {}) if isinstance(arguments, str) else arguments
                return self._substitute(text, {k: self.resolve(v) for k, v in variables.items()})
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not _NO_VALUE}

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.resources.items() if r["Type"] == kind}

    def statements(self, role: str) -> list[dict[str, Any]]:
        policies = self.resources[role]["Properties"]["Policies"]
        return [s for policy in policies for s in policy["PolicyDocument"]["Statement"]]

    def key_statements(self) -> list[dict[str, Any]]:
        statements: list[dict[str, Any]] = self.resources["AlertsKey"]["Properties"]["KeyPolicy"]["Statement"]
        return statements


def render(template: Mapping[str, Any], **parameters: str) -> Rendered:
    return Rendered(template, parameters)


def iam_match(pattern: str, value: str) -> bool:
    """IAM's ``*`` and ``?`` wildcards (ARNs hold no ``[``), case-sensitive."""
    return fnmatch.fnmatchcase(value, pattern)


def granting(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if action in as_list(s["Action"])]


# ---------------------------------------------------------------------------- 1, 2: concurrency


def test_given_default_parameters_then_no_function_reserves_concurrency_so_any_account_can_deploy(
    transformed: dict[str, Any],
) -> None:
    # Given the stack as a new account (concurrency limit 10) would deploy it, fan-out included
    for parameters in ({}, {"FanOut": "Enabled"}):
        rendered = render(transformed, **parameters)
        functions = rendered.of_type("AWS::Lambda::Function")
        assert functions
        # Then nothing is reserved: Lambda keeps 100 unreserved, which a limit of 10 cannot spare
        for name, function in functions.items():
            assert "ReservedConcurrentExecutions" not in function["Properties"], name
    # When the deployer asks for runs kept apart, then the detector (only) reserves what was asked
    kept_apart = render(transformed, ReservedConcurrency="1", FanOut="Enabled")
    assert kept_apart.resources["DetectorFunction"]["Properties"]["ReservedConcurrentExecutions"] == "1"
    assert "ReservedConcurrentExecutions" not in kept_apart.resources["FanOutWorkerFunction"]["Properties"]
    assert transformed["Parameters"]["ReservedConcurrency"]["Default"] == 0


def test_given_fan_out_then_workers_are_capped_by_the_event_source_and_throttling_cannot_dead_letter_tasks(
    transformed: dict[str, Any],
) -> None:
    rendered = render(transformed, FanOut="Enabled", FanOutConcurrency="7")
    (mapping,) = [
        m
        for m in rendered.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "FanOutWorkerFunction"}
    ]
    # The poller invokes at most FanOutConcurrency workers and leaves the other tasks unreceived
    assert mapping["Properties"]["ScalingConfig"] == {"MaximumConcurrency": "7"}
    bounds = transformed["Parameters"]["FanOutConcurrency"]
    assert 2 <= bounds["MinValue"] <= bounds["Default"] <= bounds["MaxValue"] <= 1000  # Lambda's range
    # A receive that still fails counts: at least 5 (AWS's advice for Lambda's SQS event source)
    queue = rendered.resources["FanOutQueue"]["Properties"]
    receives = int(queue["RedrivePolicy"]["maxReceiveCount"])
    assert receives >= 5
    # SQS gives up on a task before the batch's lease ends and a scheduled run takes it over
    worker = rendered.resources["FanOutWorkerFunction"]["Properties"]
    assert queue["VisibilityTimeout"] > worker["Timeout"]
    assert timedelta(seconds=queue["VisibilityTimeout"] * receives) <= FANOUT_LEASE


# ---------------------------------------------------------------------------- 3: EventBridge and KMS


@pytest.mark.parametrize(
    ("principal", "context_key", "resource_arn"),
    [
        (
            "events.amazonaws.com",
            "kms:EncryptionContext:aws:sqs:arn",
            "sqs:{r}:{a}:trailgeo-DeadLetterQueue-1A2B3C",
        ),
        (
            "cloudwatch.amazonaws.com",
            "kms:EncryptionContext:aws:sns:topicArn",
            "sns:{r}:{a}:trailgeo-OperationsTopic-X",
        ),
    ],
)
def test_given_the_key_policy_then_each_service_principal_has_a_statement_narrowed_by_encryption_context(
    transformed: dict[str, Any], principal: str, context_key: str, resource_arn: str
) -> None:
    # Given the key that encrypts the schedule's dead-letter queue and the topics
    rendered = render(transformed)
    own = "arn:aws:" + resource_arn.format(r=REGION, a=ACCOUNT)
    foreign = "arn:aws:" + resource_arn.format(r=REGION, a="999988887777")
    statements = [
        s
        for s in rendered.key_statements()
        if principal in as_list(s.get("Principal", {}).get("Service", []))
    ]

    # Then none relies on aws:SourceAccount, which EventBridge does not send for these targets
    assert statements
    assert all("aws:SourceAccount" not in json.dumps(s.get("Condition", {})) for s in statements)
    # And a statement for this service lets SQS or SNS use the key for this account's resource only
    allowing = [
        s
        for s in statements
        if {"kms:Decrypt", "kms:GenerateDataKey"} <= set(as_list(s["Action"]))
        and iam_match(s.get("Condition", {}).get("ArnLike", {}).get(context_key, ""), own)
    ]
    assert len(allowing) == 1
    assert not iam_match(allowing[0]["Condition"]["ArnLike"][context_key], foreign)


def test_given_the_schedule_then_its_dead_letter_queue_uses_the_key_and_an_alarm_watches_failed_dead_letters(
    transformed: dict[str, Any],
) -> None:
    rendered = render(transformed)
    rule_name, rule = next(
        (name, r)
        for name, r in rendered.of_type("AWS::Events::Rule").items()
        if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["DetectorFunction", "Arn"]}
    )
    dead_letters = rule["Properties"]["Targets"][0]["DeadLetterConfig"]["Arn"]
    assert dead_letters == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert rendered.resources["DeadLetterQueue"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertsKey"}
    watching = [
        alarm["Properties"]
        for alarm in rendered.of_type("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("Namespace") == "AWS/Events"
    ]
    (alarm,) = [a for a in watching if a["MetricName"] == "InvocationsFailedToBeSentToDlq"]
    assert alarm["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": rule_name}}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["AlarmActions"] == [{"Ref": "OperationsTopic"}]


# ---------------------------------------------------------------------------- 4, 5: secrets and keys


@pytest.mark.parametrize("given", [SECRET, SECRET_FULL], ids=["partial-arn", "full-arn"])
def test_given_a_slack_secret_arn_in_either_form_then_the_notifier_may_read_that_secret_only(
    transformed: dict[str, Any], given: str
) -> None:
    rendered = render(transformed, SlackWebhookSecretArn=given)
    (read,) = granting(rendered.statements("NotifierRole"), "secretsmanager:GetSecretValue")
    (pattern,) = as_list(read["Resource"])
    # GetSecretValue is authorised against the secret's full ARN, whichever form was given
    assert iam_match(pattern, SECRET_FULL)
    assert not iam_match(pattern, f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:other-AbCdEf")


def test_given_a_secret_under_a_customer_managed_key_then_the_notifier_decrypts_only_through_secrets_manager(
    transformed: dict[str, Any],
) -> None:
    rendered = render(transformed, SlackWebhookSecretArn=SECRET, SecretsKmsKeyArn=KEY)
    decrypting = [
        s for s in granting(rendered.statements("NotifierRole"), "kms:Decrypt") if s["Resource"] == KEY
    ]
    assert len(decrypting) == 1
    assert as_list(decrypting[0]["Action"]) == ["kms:Decrypt"]
    assert decrypting[0]["Condition"] == {
        "StringEquals": {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    }
    # Without the key, or without Slack, nothing is granted on it
    for parameters in (
        {"SlackWebhookSecretArn": SECRET},
        {"SecurityHub": "Enabled", "SecretsKmsKeyArn": KEY},
    ):
        statements = render(transformed, **parameters).statements("NotifierRole")
        assert KEY not in json.dumps(statements)


def test_given_a_tuning_securestring_under_a_customer_managed_key_then_the_detector_decrypts_only_through_ssm(
    transformed: dict[str, Any],
) -> None:
    rendered = render(transformed, TuningParameterName="/trailgeo/tuning", TuningKmsKeyArn=KEY)
    decrypting = [
        s for s in granting(rendered.statements("DetectorRole"), "kms:Decrypt") if s["Resource"] == KEY
    ]
    assert len(decrypting) == 1
    assert as_list(decrypting[0]["Action"]) == ["kms:Decrypt"]
    assert decrypting[0]["Condition"] == {"StringEquals": {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}}
    assert KEY not in json.dumps(render(transformed, TuningKmsKeyArn=KEY).statements("DetectorRole"))


# ---------------------------------------------------------------------------- 6: SQS message sizes


def test_given_files_per_task_at_its_maximum_then_a_task_of_organization_trail_keys_fits_one_sqs_message(
    transformed: dict[str, Any],
) -> None:
    most = transformed["Parameters"]["FilesPerTask"]["MaxValue"]
    key_bytes = len(json.dumps(ORG_KEY)) + 1
    assert key_bytes >= 160
    # 1,000 keys of up to 250 bytes fit: longer ones are cut by bytes (tests/test_fanout.py)
    assert most * (250 + 3) <= MAX_TASK_KEY_BYTES < MAX_MESSAGE_BYTES
    queue = render(transformed, FanOut="Enabled").resources["FanOutQueue"]["Properties"]
    assert queue["MaximumMessageSize"] == MAX_MESSAGE_BYTES


# ---------------------------------------------------------------------------- 7, 8: partials bucket


def test_given_fan_out_then_the_role_may_list_the_partials_bucket_so_a_missing_partial_is_a_404(
    transformed: dict[str, Any],
) -> None:
    rendered = render(transformed, FanOut="Enabled")
    (listing,) = [
        s
        for s in granting(rendered.statements("DetectorRole"), "s3:ListBucket")
        if s["Resource"] == {"Fn::GetAtt": ["PartialsBucket", "Arn"]}
    ]
    assert "Condition" not in listing  # S3 checks s3:ListBucket without a prefix to choose 403 or 404
    assert "PartialsBucket" not in json.dumps(render(transformed).statements("DetectorRole"))


def test_given_partials_left_in_the_bucket_then_deleting_the_stack_or_fan_out_leaves_the_bucket_behind(
    transformed: dict[str, Any],
) -> None:
    bucket = render(transformed, FanOut="Enabled").resources["PartialsBucket"]
    # CloudFormation cannot delete a bucket that holds objects: retained, it empties itself in a day
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    (rule,) = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert (rule["Status"], rule["ExpirationInDays"]) == ("Enabled", 1)


# ---------------------------------------------------------------------------- 9: an existing table


def test_given_an_existing_table_name_then_the_stack_creates_no_table_and_every_use_names_that_table(
    transformed: dict[str, Any],
) -> None:
    # Given the table a deleted stack retained
    rendered = render(transformed, ExistingTableName="trailgeo-FrequencyTable-OLD", FanOut="Enabled")

    # Then no table is created, and the functions, the role and the output all name the old one
    assert rendered.of_type("AWS::DynamoDB::Table") == {}
    for function in ("DetectorFunction", "FanOutWorkerFunction"):
        variables = rendered.resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["TABLE_NAME"] == "trailgeo-FrequencyTable-OLD"
    (table,) = granting(rendered.statements("DetectorRole"), "dynamodb:UpdateItem")
    assert table["Resource"] == f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/trailgeo-FrequencyTable-OLD"
    assert rendered.outputs["FrequencyTableName"]["Value"] == "trailgeo-FrequencyTable-OLD"
    assert '"FrequencyTable"' not in json.dumps([rendered.resources, rendered.outputs])

    # And by default the stack makes (and retains) its own
    created = render(transformed)
    (own,) = created.of_type("AWS::DynamoDB::Table").values()
    assert own["DeletionPolicy"] == "Retain"
    assert created.outputs["FrequencyTableName"]["Value"] == {"Ref": "FrequencyTable"}


# ---------------------------------------------------------------------------- 10: no files, no runs


def test_given_a_new_deployment_then_no_alarm_fires_on_missing_data_and_stopped_runs_still_notify(
    transformed: dict[str, Any],
) -> None:
    alarms = {
        name: a["Properties"] for name, a in render(transformed).of_type("AWS::CloudWatch::Alarm").items()
    }
    # No data before the first run must not page: every alarm on missing data stays as it is
    assert {
        name: a.get("TreatMissingData")
        for name, a in alarms.items()
        if a.get("TreatMissingData") == "breaching"
    } == {}
    files = alarms["NoCloudTrailFilesAlarm"]
    assert (files["MetricName"], files["TreatMissingData"], files["ComparisonOperator"]) == (
        "FilesRead",
        "notBreaching",
        "LessThanThreshold",
    )
    # Delivery stopping still fires it: a run that read nothing reports FilesRead 0, not nothing
    at = datetime(2026, 12, 2, 12, 15, tzinfo=UTC)
    emitted = emitted_metrics(RunReport(scheduled_at=at, window_start=at - timedelta(hours=2), window_end=at))
    assert emitted["FilesRead"] == [0.0]
    # And no run at all (schedule disabled or deleted) notifies through the invocations alarm
    running = alarms["DetectorNotRunningAlarm"]
    assert (running["Namespace"], running["MetricName"]) == ("AWS/Lambda", "Invocations")
    assert running["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "DetectorFunction"}}]
    assert running["TreatMissingData"] == "missing"
    assert running["InsufficientDataActions"] == [{"Ref": "OperationsTopic"}]
