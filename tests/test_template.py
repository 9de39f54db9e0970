"""The deployment: template.yaml (SAM), its least-privilege policy and the GeoIP layer build script.

Self-contained: reads template.yaml with PyYAML when it is installed (short tags such as ``!Ref``
become their long forms), else with cfn-lint's decoder from the .venv-sam venv (``make template-venv``).
Tools that are missing skip these tests with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from trailgeo.adapters.deliveries import DELIVERY_PARTITION
from trailgeo.adapters.dynamodb import OUTBOX_PARTITION
from trailgeo.core.alerts import PAGING_NOTIFICATIONS, paging_filter_policy

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
SAM_BIN = ROOT / ".venv-sam" / "bin"
BUILD_SH = ROOT / "layers" / "geoip" / "build.sh"
SHARED = Path(__file__).parents[1].parent / "shared"
MAXMIND_COUNTRY_TEST_MMDB = (
    SHARED / "data" / "geoip" / "maxmind-test" / "test-data" / "GeoLite2-Country-Test.mmdb"
)
IN_CI = os.environ.get("CI", "").lower() == "true"
MMDB_MARKER = b"\xab\xcd\xefMaxMind.com"
DBIP_ATTRIBUTION = "IP Geolocation by DB-IP"

# Actions for which AWS offers no resource-level permissions, so "*" is the only possible Resource.
UNSCOPABLE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "cloudwatch:PutMetricData"}
TABLE_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
}
# The settings the package reads (trailgeo.app.settings, plus Powertools' names from Globals).
FUNCTION_ENVIRONMENT = {
    "TRAIL_BUCKET",
    "TRAIL_PREFIX",
    "TABLE_NAME",
    "TOPIC_ARN",
    "GEOIP_DB_PATH",
    "GEOIP_ASN_PATH",
    "LOOKBACK_MINUTES",
    "SCORE_THRESHOLD",
    "PAGING_SEVERITY",
    "LEARNING_BUCKETS",
    "LEARNING_DAYS",
    "TUNING_PARAMETER",
    "OPERATIONS_TOPIC_ARN",
    "DETECTORS",
    "EVENTS",
    "FANOUT_QUEUE_URL",
    "PARTIALS_BUCKET",
    "FILES_PER_TASK",
    "READ_CONCURRENCY",
    "INTAKE",
    "INTAKE_QUEUE_URL",
    "RECONCILE_MINUTES",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
}
POWERTOOLS = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
FUNCTIONS = ("DetectorFunction", "FanOutWorkerFunction", "NotifierFunction")


def unavailable(reason: str) -> None:
    """A missing tool fails the test in CI and skips it elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


# ---------------------------------------------------------------------------- reading the template


def _load_with_pyyaml(text: str) -> dict[str, Any] | None:
    try:
        import yaml
    except ImportError:
        return None

    class CloudFormationLoader(yaml.SafeLoader):
        pass

    def short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        if suffix in {"Ref", "Condition"}:
            return {suffix: value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{suffix}": value}

    CloudFormationLoader.add_multi_constructor("!", short_form)
    document: dict[str, Any] = yaml.load(text, Loader=CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
    return document


def _load_with_cfn_lint() -> dict[str, Any] | None:
    python = SAM_BIN / "python"
    if not python.exists():
        return None
    script = (
        "import json, sys\n"
        "from cfnlint.decode import decode\n"
        "template, matches = decode(sys.argv[1])\n"
        "if matches: sys.exit('\\n'.join(str(m) for m in matches))\n"
        "print(json.dumps(template))\n"
    )
    done = subprocess.run(
        [str(python), "-c", script, str(TEMPLATE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@cache
def _template() -> dict[str, Any] | None:
    return _load_with_pyyaml(TEMPLATE.read_text(encoding="utf-8")) or _load_with_cfn_lint()


@pytest.fixture
def template() -> dict[str, Any]:
    document = _template()
    if document is None:
        unavailable("neither PyYAML nor .venv-sam (cfn-lint) is available to read template.yaml")
    assert document is not None
    return document


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == kind}


def the_one(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = resources_of(template, kind)
    assert len(found) == 1, f"expected exactly one {kind}, found {sorted(found)}"
    return next(iter(found.items()))


def referenced(value: Any) -> str:
    """The logical id behind a Ref or a GetAtt."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return str(target[0] if isinstance(target, list) else target.split(".", 1)[0])
    raise AssertionError(f"not a Ref or GetAtt: {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def branches(item: Any) -> Iterator[dict[str, Any]]:
    """A policy statement, or both branches of an Fn::If around one (AWS::NoValue dropped)."""
    if isinstance(item, dict) and "Fn::If" in item:
        _, when_true, when_false = item["Fn::If"]
        for branch in (when_true, when_false):
            if branch != {"Ref": "AWS::NoValue"}:
                yield from branches(branch)
    else:
        yield item


def sub_text(value: Any) -> str:
    """The template string of a Fn::Sub (or a plain string)."""
    if isinstance(value, str):
        return value
    assert isinstance(value, dict), value
    assert "Fn::Sub" in value, value
    sub = value["Fn::Sub"]
    return str(sub if isinstance(sub, str) else sub[0])


DETECTOR = "DetectorFunction"
NOTIFIER = "NotifierFunction"


def function(template: dict[str, Any], name: str = DETECTOR) -> dict[str, Any]:
    resource = template["Resources"][name]
    assert resource["Type"] == "AWS::Serverless::Function"
    properties: dict[str, Any] = resource["Properties"]
    return properties


def merged(template: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    """A function's map property with the template's Globals merged in, as SAM does (the function's
    entries win); ``Environment`` gives the variables."""
    shared = template.get("Globals", {}).get("Function", {}).get(key, {})
    own = function(template, name).get(key, {})
    if key == "Environment":
        shared, own = shared.get("Variables", {}), own.get("Variables", {})
    return {**shared, **own}


def function_statements(template: dict[str, Any], name: str = DETECTOR) -> list[dict[str, Any]]:
    props = function(template, name)
    assert "Policies" not in props, "the function's permissions belong in its explicit role"
    role = template["Resources"][referenced(props["Role"])]
    assert role["Type"] == "AWS::IAM::Role"
    assert "ManagedPolicyArns" not in role["Properties"], "managed policies grant Resource '*'"
    statements = [
        statement
        for policy in role["Properties"]["Policies"]
        for item in policy["PolicyDocument"]["Statement"]
        for statement in branches(item)
    ]
    assert statements
    return statements


def statements_with(template: dict[str, Any], action: str, name: str = DETECTOR) -> list[dict[str, Any]]:
    return [s for s in function_statements(template, name) if action in as_list(s["Action"])]


def statement_sid(template: dict[str, Any], sid: str, name: str = DETECTOR) -> dict[str, Any]:
    (found,) = [s for s in function_statements(template, name) if s.get("Sid") == sid]
    return found


def statements_for(template: dict[str, Any], service: str, name: str = DETECTOR) -> list[dict[str, Any]]:
    """The statements granting any action of one service (``dynamodb``, ``sns``...)."""
    return [
        s
        for s in function_statements(template, name)
        if any(a.startswith(f"{service}:") for a in as_list(s["Action"]))
    ]


# ---------------------------------------------------------------------------- (a) linters


def sam_tool(name: str) -> Path:
    tool = SAM_BIN / name
    if not tool.exists():
        unavailable(f"{tool} is missing: run `make template-venv`")
    return tool


def run_tool(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run(
        [str(a) for a in argv], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_given_the_template_when_sam_transforms_it_then_it_is_valid() -> None:
    done = run_tool(sam_tool("sam"), "validate", "--region", "us-east-1", "--template-file", TEMPLATE)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_given_the_template_when_cfn_lint_runs_then_it_reports_no_finding() -> None:
    # `sam validate --lint` is this same cfn-lint (cfnlint.api.lint, the region given, the default
    # rules) from the same venv: running it as well cost six seconds and checked nothing more.
    done = run_tool(sam_tool("cfn-lint"), "--regions", "us-east-1", "--", TEMPLATE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stdout.strip()


# ---------------------------------------------------------------------------- (b) least privilege


@pytest.mark.parametrize("name", [DETECTOR, NOTIFIER])
def test_given_the_function_role_then_only_unscopable_actions_use_a_wildcard_resource(
    template: dict[str, Any], name: str
) -> None:
    for statement in function_statements(template, name):
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        actions = as_list(statement["Action"])
        assert all("*" not in action for action in actions), statement
        if "*" in as_list(statement["Resource"]):
            assert set(actions) <= UNSCOPABLE_ACTIONS, statement
            if "cloudwatch:PutMetricData" in actions:
                assert "cloudwatch:namespace" in json.dumps(statement.get("Condition", {})), statement


def test_given_the_function_role_then_it_reads_only_the_trail_prefix_of_the_bucket(
    template: dict[str, Any],
) -> None:
    get, partials = statements_with(template, "s3:GetObject")
    assert as_list(get["Action"]) == ["s3:GetObject"]
    # Fan-out mode only: its own transient objects, never the trail's
    assert partials["Sid"] == "FanOutPartials"
    assert sub_text(partials["Resource"]) == "arn:${AWS::Partition}:s3:::${PartialsBucket}/partials/*"
    assert template["Resources"]["PartialsBucket"]["Condition"] == "IsFanOut"
    assert (
        sub_text(get["Resource"])
        == "arn:${AWS::Partition}:s3:::${TrailBucketName}/${TrailPrefix}AWSLogs/*/CloudTrail/*"
    )

    trail, partials_listing = statements_with(template, "s3:ListBucket")
    listing = statement_sid(template, "ListTrailLogs")
    assert trail is listing
    assert as_list(listing["Action"]) == ["s3:ListBucket"]
    assert sub_text(listing["Resource"]) == "arn:${AWS::Partition}:s3:::${TrailBucketName}"
    # Fan-out mode only: the listing of its own partials bucket, never the trail's
    assert partials_listing["Sid"] == "FanOutListPartials"
    assert referenced(partials_listing["Resource"]) == "PartialsBucket"
    patterns = [sub_text(p) for p in as_list(listing["Condition"]["StringLike"]["s3:prefix"])]
    assert set(patterns) >= {"${TrailPrefix}AWSLogs/", "${TrailPrefix}AWSLogs/*"}


@pytest.mark.parametrize("trail_prefix", ["", "cloudtrail/"])
def test_given_the_list_condition_when_the_detector_lists_its_prefixes_then_only_those_are_allowed(
    template: dict[str, Any], trail_prefix: str
) -> None:
    listing = statement_sid(template, "ListTrailLogs")
    patterns = [
        sub_text(p).replace("${TrailPrefix}", trail_prefix)
        for p in as_list(listing["Condition"]["StringLike"]["s3:prefix"])
    ]

    def allowed(prefix: str) -> bool:  # IAM StringLike: * and ? wildcards, case-sensitive
        return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns)

    base = f"{trail_prefix}AWSLogs/"
    for prefix in (
        base,  # discovery, with Delimiter="/"
        f"{base}o-abc123def4/",  # organization trail
        f"{base}111122223333/",
        f"{base}111122223333/CloudTrail/",
        f"{base}111122223333/CloudTrail/eu-west-1/2024/05/06/",
    ):
        assert allowed(prefix), prefix
    for prefix in ("", "AWSLogs", "other/AWSLogs/", f"{trail_prefix}Config/"):
        assert not allowed(prefix), prefix


def test_given_the_function_role_then_it_uses_exactly_the_needed_table_actions_on_the_table(
    template: dict[str, Any],
) -> None:
    table_name, _ = the_one(template, "AWS::DynamoDB::Table")
    (statement,) = statements_for(template, "dynamodb")
    assert set(as_list(statement["Action"])) == TABLE_ACTIONS
    # the stack's table, or the retained one named by ExistingTableName: one table either way
    condition, created, existing = statement["Resource"]["Fn::If"]
    assert condition == "CreatesTable"
    assert referenced(created) == table_name
    assert (
        sub_text(existing)
        == "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${ExistingTableName}"
    )


def test_given_the_function_role_then_it_publishes_only_to_the_alerts_topic(template: dict[str, Any]) -> None:
    assert set(resources_of(template, "AWS::SNS::Topic")) == {"AlertsTopic", "OperationsTopic"}
    alerts, tuning_changes = statements_for(template, "sns")
    assert as_list(alerts["Action"]) == as_list(tuning_changes["Action"]) == ["sns:Publish"]
    assert [referenced(r) for r in as_list(alerts["Resource"])] == ["AlertsTopic"]
    # and, with a tuning parameter, its changes to the operations topic (docs/tuning.md)
    assert tuning_changes["Sid"] == "ReportTuningChanges"
    assert [referenced(r) for r in as_list(tuning_changes["Resource"])] == ["OperationsTopic"]


def test_given_the_function_role_then_kms_use_is_limited_to_its_keys_and_services(
    template: dict[str, Any],
) -> None:
    key_name, _ = the_one(template, "AWS::KMS::Key")
    for statement in statements_for(template, "kms"):
        actions = as_list(statement["Action"])
        assert set(actions) <= {"kms:Decrypt", "kms:GenerateDataKey"}, statement
        assert "kms:ViaService" in json.dumps(statement["Condition"]), statement
        (resource,) = as_list(statement["Resource"])
        if resource in ({"Ref": "TrailKmsKeyArn"}, {"Ref": "TuningKmsKeyArn"}):
            assert actions == ["kms:Decrypt"]
        else:
            assert referenced(resource) == key_name
    # the trail bucket's key is granted only when one is given
    role = template["Resources"][referenced(function(template)["Role"])]
    document = json.dumps(role["Properties"]["Policies"])
    assert '"Fn::If": ["HasTrailKmsKey"' in document
    assert template["Conditions"]["HasTrailKmsKey"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "TrailKmsKeyArn"}, ""]}]
    }


def test_given_the_function_then_it_logs_to_its_own_retained_log_group(template: dict[str, Any]) -> None:
    group_name = "DetectorLogGroup"
    group = template["Resources"][group_name]
    assert referenced(function(template)["LoggingConfig"]["LogGroup"]) == group_name
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 90
    (logs,) = statements_for(template, "logs")
    assert set(as_list(logs["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    single, fanned_out, arrivals = logs["Resource"]
    assert referenced(single) == group_name
    assert fanned_out["Fn::If"][0] == "IsFanOut"
    assert referenced(fanned_out["Fn::If"][1]) == "FanOutWorkerLogGroup"
    assert arrivals["Fn::If"][0] == "IsContinuous"
    assert referenced(arrivals["Fn::If"][1]) == "ArrivalsLogGroup"
    worker = template["Resources"]["FanOutWorkerFunction"]["Properties"]
    assert referenced(worker["LoggingConfig"]["LogGroup"]) == "FanOutWorkerLogGroup"


def test_given_the_function_then_its_environment_is_what_the_package_reads(template: dict[str, Any]) -> None:
    props = function(template)
    variables = merged(template, DETECTOR, "Environment")
    assert set(variables) == FUNCTION_ENVIRONMENT
    # The fan-out worker is the same code with the same settings, pointed at its own queue
    worker = template["Resources"]["FanOutWorkerFunction"]
    assert worker["Condition"] == "IsFanOut"
    assert (worker["Properties"]["CodeUri"], worker["Properties"]["Handler"]) == (
        props["CodeUri"],
        "app.task_handler",
    )
    worker_variables = merged(template, "FanOutWorkerFunction", "Environment")
    assert set(worker_variables) == FUNCTION_ENVIRONMENT
    # So is the event-driven run of continuous mode, on the intake queue's batches
    assert set(merged(template, "ArrivalsFunction", "Environment")) == FUNCTION_ENVIRONMENT
    assert referenced(worker_variables["FANOUT_QUEUE_URL"]) == "FanOutQueue"
    assert variables["FANOUT_QUEUE_URL"]["Fn::If"][0] == "IsFanOut"
    queue = template["Resources"]["FanOutQueue"]["Properties"]
    assert queue["VisibilityTimeout"] > worker["Properties"]["Timeout"]
    assert worker["Properties"]["Events"]["Tasks"]["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    assert variables["GEOIP_DB_PATH"] == "/opt/geoip/country.mmdb"
    # What waits to settle is what the pager's filter leaves out (app/detect/publish.py)
    for name in (DETECTOR, "FanOutWorkerFunction", "ArrivalsFunction"):
        assert merged(template, name, "Environment")["PAGING_SEVERITY"] == {"Ref": "PagingSeverity"}
    assert variables["GEOIP_ASN_PATH"] == worker_variables["GEOIP_ASN_PATH"] == "/opt/geoip/asn.mmdb"
    assert (props["Runtime"], props["Handler"], props["Architectures"]) == (
        "python3.13",
        "app.lambda_handler",
        ["x86_64"],
    )
    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }  # what it allows: tests/test_deploy_limits.py
    assert props["Timeout"] < 900  # inside the 15-minute schedule
    assert props["Tracing"] == "Active"
    parameters = template["Parameters"]
    assert parameters["LookbackMinutes"]["Default"] == 120
    assert parameters["ScoreThreshold"]["Default"] == 50
    for optional in ("TrailPrefix", "TrailKmsKeyArn", "AlertEmail"):
        assert parameters[optional]["Default"] == ""


def test_given_the_layers_then_sam_builds_each_with_its_own_makefile_target(template: dict[str, Any]) -> None:
    layers = resources_of(template, "AWS::Serverless::LayerVersion")
    assert set(layers) == {"TrailgeoLayer", "GeoIpLayer"}
    assert sorted(referenced(layer) for layer in function(template)["Layers"]) == sorted(layers)
    for name, layer in layers.items():
        assert layer["Metadata"]["BuildMethod"] == "makefile"
        makefile = ROOT / layer["Properties"]["ContentUri"] / "Makefile"
        assert f"build-{name}:" in makefile.read_text(encoding="utf-8"), makefile
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]


# ---------------------------------------------------------------------------- (c) table


def test_given_the_table_then_it_is_on_demand_with_pitr_ttl_and_encryption(template: dict[str, Any]) -> None:
    _, table = the_one(template, "AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
    }
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


# ---------------------------------------------------------------------------- (d) encryption


def test_given_the_alarms_then_each_watches_a_failure_mode_and_tells_the_operations_topic(
    template: dict[str, Any],
) -> None:
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    watched = {
        (sub_text(a["Properties"]["Namespace"]), a["Properties"]["MetricName"]) for a in alarms.values()
    }
    assert watched == {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "Invocations"),  # no run at all (tests/test_deploy_limits.py)
        ("AWS/Events", "InvocationsFailedToBeSentToDlq"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("trailgeo/${AWS::StackName}", "FilesRead"),
        ("trailgeo/${AWS::StackName}", "AlertsRaised"),
        ("trailgeo/${AWS::StackName}", "FilesPoisoned"),  # tests/test_adversary_poison.py
        ("trailgeo/${AWS::StackName}", "FilesMissedByNotifications"),  # tests/test_intake.py
        # stuck states (tests/test_stuck_states.py)
        ("trailgeo/${AWS::StackName}", "OldestPendingAlertMinutes"),
        ("trailgeo/${AWS::StackName}", "AlertsParked"),
        ("trailgeo/${AWS::StackName}", "AlertsRefused"),
        ("trailgeo/${AWS::StackName}", "TasksRefused"),
        ("trailgeo/${AWS::StackName}", "TuningInvalid"),
    }
    for alarm in alarms.values():
        assert [referenced(a) for a in alarm["Properties"]["AlarmActions"]] == ["OperationsTopic"]
    assert "AWS::CloudWatch::Dashboard" in {r["Type"] for r in template["Resources"].values()}


def dashboard_metrics(template: dict[str, Any]) -> tuple[str, dict[str, Any], set[str]]:
    """The dashboard's body, its !Sub variables, and the names of the trailgeo metrics it shows."""
    _, dashboard = the_one(template, "AWS::CloudWatch::Dashboard")
    body, variables = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    names: set[str] = set()
    for widget in json.loads(body)["widgets"]:
        namespace = None
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict):  # a SEARCH expression
                names.update(re.findall(r'MetricName=\\?"(\w+)', row[0]["expression"]))
                continue
            namespace = namespace if row[0] == "." else row[0]
            if namespace == "${Namespace}":
                names.add(row[1])
    return body, variables, names


def test_given_the_alarms_and_dashboard_then_they_read_this_stack_s_namespace_and_service(
    template: dict[str, Any],
) -> None:
    # Given the Powertools names every function gets (Globals): one namespace per stack
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    namespace = sub_text(variables["POWERTOOLS_METRICS_NAMESPACE"])
    service = variables["POWERTOOLS_SERVICE_NAME"]
    assert "${AWS::StackName}" in namespace  # two stacks in a region never share it
    assert service == {"Ref": "AWS::StackName"}
    for name in FUNCTIONS:
        assert not POWERTOOLS & set(function(template, name)["Environment"]["Variables"]), name

    # Then every alarm on a trailgeo metric reads exactly that namespace and service
    custom = [
        alarm["Properties"]
        for alarm in resources_of(template, "AWS::CloudWatch::Alarm").values()
        if not sub_text(alarm["Properties"]["Namespace"]).startswith("AWS/")
    ]
    assert custom
    for alarm in custom:
        assert sub_text(alarm["Namespace"]) == namespace, alarm["MetricName"]
        assert alarm["Dimensions"] == [{"Name": "service", "Value": service}], alarm["MetricName"]
    # And so does the dashboard, through its !Sub variables
    body, sub_variables, _ = dashboard_metrics(template)
    assert sub_text(sub_variables["Namespace"]) == namespace
    assert sub_variables["Service"] == service
    assert '"trailgeo"' not in body


def test_given_the_alarms_and_dashboard_then_every_trailgeo_metric_they_read_is_emitted(
    template: dict[str, Any],
) -> None:
    from trailgeo.app import notify, runtime

    # The detector's metrics (runtime) and the notifier's (notify)
    emitted = "".join(Path(str(m.__file__)).read_text(encoding="utf-8") for m in (runtime, notify))
    _, _, shown = dashboard_metrics(template)
    alarmed = {
        a["Properties"]["MetricName"]
        for a in resources_of(template, "AWS::CloudWatch::Alarm").values()
        if not sub_text(a["Properties"]["Namespace"]).startswith("AWS/")
    }
    assert {"FilesRead", "AlertsRaised", "RunSeconds", "FilesSkipped", "RecordsSkipped"} <= shown | alarmed
    for name in shown | alarmed:
        assert f'name="{name}"' in emitted or name in runtime.REASONS, name


def test_given_each_function_then_lambda_writes_json_logs_at_the_log_level_parameter_to_its_own_group(
    template: dict[str, Any],
) -> None:
    groups = {
        DETECTOR: "DetectorLogGroup",
        "FanOutWorkerFunction": "FanOutWorkerLogGroup",
        "ArrivalsFunction": "ArrivalsLogGroup",
        NOTIFIER: "NotifierLogGroup",
    }
    assert set(groups) == set(resources_of(template, "AWS::Serverless::Function"))
    for name, group in groups.items():
        config = merged(template, name, "LoggingConfig")
        assert config["LogFormat"] == "JSON", name
        assert config["ApplicationLogLevel"] == {"Ref": "LogLevel"}, name
        assert config["SystemLogLevel"] in {"INFO", "DEBUG"}, name  # keeps the REPORT lines
        assert referenced(config["LogGroup"]) == group, name
        assert "LOG_LEVEL" not in merged(template, name, "Environment"), name
        # the stack key encrypts the group; its key policy admits this stack's Lambda log groups
        properties = template["Resources"][group]["Properties"]
        assert referenced(properties["KmsKeyId"]) == "AlertsKey"
        assert fnmatch.fnmatchcase(sub_text(properties["LogGroupName"]), "/aws/lambda/${AWS::StackName}-*"), (
            group
        )
    # Lambda files a line without a level (the metrics' EMF documents) as INFO: a level above INFO
    # would drop the metrics, and the alarms would see no data.
    level = template["Parameters"]["LogLevel"]
    assert level["Default"] == "INFO"
    assert set(level["AllowedValues"]) <= {"TRACE", "DEBUG", "INFO"}


def test_given_the_roles_that_read_the_trail_then_each_is_a_stack_output_for_cross_account_policies(
    template: dict[str, Any],
) -> None:
    outputs = template["Outputs"]
    exported = {
        referenced(o["Value"])
        for o in outputs.values()
        if isinstance(o["Value"], dict) and "Fn::GetAtt" in o["Value"]
    }
    readers = {
        referenced(function(template, name)["Role"])
        for name in resources_of(template, "AWS::Serverless::Function")
        if any(
            "${TrailBucketName}" in sub_text(r)
            for s in statements_with(template, "s3:GetObject", name)
            for r in as_list(s["Resource"])
        )
    }
    assert readers == {"DetectorRole"}  # the fan-out worker runs under the detector's role
    assert readers <= exported
    assert outputs["DetectorRoleArn"]["Value"] == {"Fn::GetAtt": ["DetectorRole", "Arn"]}


def test_given_the_serverless_repository_metadata_then_it_names_the_licence_and_readme(
    template: dict[str, Any],
) -> None:
    app = template["Metadata"]["AWS::ServerlessRepo::Application"]
    assert app["SpdxLicenseId"] == "Apache-2.0"
    assert (ROOT / app["LicenseUrl"]).is_file()
    assert (ROOT / app["ReadmeUrl"]).is_file()
    assert app["SemanticVersion"]


def test_given_the_topic_and_the_dead_letter_queue_then_both_are_encrypted_with_the_stack_key(
    template: dict[str, Any],
) -> None:
    key_name, key = the_one(template, "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    for topic in resources_of(template, "AWS::SNS::Topic").values():
        assert referenced(topic["Properties"]["KmsMasterKeyId"]) == key_name
    for queue in resources_of(template, "AWS::SQS::Queue").values():
        assert referenced(queue["Properties"]["KmsMasterKeyId"]) == key_name
    # EventBridge must be able to encrypt what it sends to the dead-letter queue
    services = [
        service
        for statement in key["Properties"]["KeyPolicy"]["Statement"]
        for service in as_list(statement.get("Principal", {}).get("Service", []))
    ]
    assert "events.amazonaws.com" in services


def test_given_an_alert_email_when_empty_then_no_subscription_is_created(template: dict[str, Any]) -> None:
    subscription = template["Resources"]["AlertsEmailSubscription"]
    assert subscription["Condition"] == "HasAlertEmail"
    assert template["Conditions"]["HasAlertEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlertEmail"}, ""]}]
    }
    assert subscription["Properties"]["Protocol"] == "email"


def test_given_a_paging_endpoint_then_it_is_paged_only_at_the_paging_severity_for_new_and_escalating_alerts(
    template: dict[str, Any],
) -> None:
    """The attributes each alert message carries (adapters/aws.SnsAlertSink: ``severity``,
    ``notification``) select what pages, as core/alerts.paging_filter_policy says (the doctor checks
    the deployed subscription against it; tests/test_adapters.py publishes through it)."""
    levels = template["Mappings"]["PagingLevels"]
    assert {name: row["Severities"] for name, row in levels.items()} == {
        level: paging_filter_policy(level)["severity"] for level in ("medium", "high", "critical")
    }
    parameter = template["Parameters"]["PagingSeverity"]
    assert (parameter["Default"], sorted(parameter["AllowedValues"])) == ("high", sorted(levels))
    by_protocol = {}
    for name in ("PagingEmailSubscription", "PagingHttpsSubscription"):
        subscription = template["Resources"][name]
        properties = subscription["Properties"]
        by_protocol[properties["Protocol"]] = subscription["Condition"]
        assert properties["Endpoint"] == {"Ref": "PagingEndpoint"}
        assert properties["FilterPolicyScope"] == "MessageAttributes"
        assert properties["FilterPolicy"] == {
            "severity": {"Fn::FindInMap": ["PagingLevels", {"Ref": "PagingSeverity"}, "Severities"]},
            "notification": list(PAGING_NOTIFICATIONS),  # never "update": a quiet update pages nobody
        }
    assert by_protocol == {"email": "PagesByEmail", "https": "PagesByHttps"}
    assert template["Conditions"]["HasPagingEndpoint"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PagingEndpoint"}, ""]}]
    }
    assert PAGING_NOTIFICATIONS == ("new", "escalation")


# ---------------------------------------------------------------------------- (e) schedule


def test_given_the_schedule_then_it_runs_every_15_minutes_with_retries_and_a_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    function_name, queue_name = DETECTOR, "DeadLetterQueue"
    events = function(template)["Events"]
    schedules = {
        name: e["Properties"] for name, e in events.items() if e["Type"] in {"Schedule", "ScheduleV2"}
    }
    assert len(schedules) == 1
    ((event_name, schedule),) = schedules.items()
    assert schedule["Schedule" if "Schedule" in schedule else "ScheduleExpression"] == "rate(15 minutes)"
    assert schedule["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert 60 <= schedule["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 900
    assert referenced(schedule["DeadLetterConfig"]["Arn"]) == queue_name

    # the queue lets exactly that rule (SAM names it <function><event>) send to it
    queue_policy = template["Resources"]["DeadLetterQueuePolicy"]
    (allow,) = [
        s for s in queue_policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
    ]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert referenced(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == function_name + event_name

    # runs that fail after Lambda's own retries land in the same queue, with their error
    invoke = function(template)["EventInvokeConfig"]
    assert referenced(invoke["DestinationConfig"]["OnFailure"]["Destination"]) == queue_name
    assert statements_with(template, "sqs:SendMessage")


# ---------------------------------------------------------------------------- (f) GeoIP layer build


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any GeoIP source setting, plus ``extra``."""
    sources = {"TRAILGEO_MMDB", "MAXMIND_LICENSE_KEY", "MAXMIND_EDITION", "TRAILGEO_ASN_MMDB", "TRAILGEO_ASN"}
    return {**{k: v for k, v in os.environ.items() if k not in sources}, **extra}


def build_geoip(artifacts: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(BUILD_SH), str(artifacts)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def maxmind_test_db() -> Path:
    if not MAXMIND_COUNTRY_TEST_MMDB.exists():
        unavailable(f"MaxMind test database not found at {MAXMIND_COUNTRY_TEST_MMDB}")
    return MAXMIND_COUNTRY_TEST_MMDB


def assert_country_lookup_works(mmdb: Path, ip: str, iso_code: str) -> None:
    try:
        import maxminddb
    except ImportError:
        return  # the byte-level checks already ran; maxminddb lives in the project venv
    with maxminddb.open_database(str(mmdb)) as reader:
        record = reader.get(ip)
    assert isinstance(record, dict)
    found = record.get("country", {}).get("iso_code") or record.get("country_code")
    assert found == iso_code


def test_given_a_user_supplied_mmdb_when_the_layer_builds_then_it_is_installed_with_its_provenance(
    tmp_path: Path,
) -> None:
    source = maxmind_test_db()
    env = clean_env(TRAILGEO_MMDB=str(source), MAXMIND_LICENSE_KEY="ignored-when-a-path-is-given")
    done = build_geoip(tmp_path, env)
    assert done.returncode == 0, done.stderr
    installed = tmp_path / "geoip" / "country.mmdb"
    assert installed.read_bytes() == source.read_bytes()
    provenance = (tmp_path / "geoip" / "SOURCE.txt").read_text(encoding="utf-8")
    assert "supplied" in provenance
    assert source.name in provenance
    assert hashlib.sha256(source.read_bytes()).hexdigest() in provenance
    assert_country_lookup_works(installed, "2.125.160.216", "GB")


def test_given_a_path_that_is_not_an_mmdb_when_the_layer_builds_then_it_fails_and_says_why(
    tmp_path: Path,
) -> None:
    bogus = tmp_path / "bogus.mmdb"
    bogus.write_bytes(b"not a database")
    done = build_geoip(tmp_path / "out", clean_env(TRAILGEO_MMDB=str(bogus)))
    assert done.returncode != 0
    assert "not a MaxMind DB" in done.stderr
    assert not (tmp_path / "out" / "geoip" / "country.mmdb").exists()

    done = build_geoip(tmp_path / "out", clean_env(TRAILGEO_MMDB=str(tmp_path / "missing.mmdb")))
    assert done.returncode != 0
    assert "no such file" in done.stderr


FAKE_CURL = """#!/bin/sh
# Stands in for curl: records argv and the config read from stdin, serves the prepared files.
printf '%s\\n' "$@" >>"$FAKE_CURL_DIR/argv.log"
config=$(cat)
printf '%s\\n' "$config" >>"$FAKE_CURL_DIR/config.log"
out=
while [ $# -gt 0 ]; do
    if [ "$1" = --output ]; then out=$2; shift; fi
    shift
done
case "$config" in
    *"license_key=$FAKE_CURL_KEY&"*"suffix=tar.gz.sha256"*) cp "$FAKE_CURL_DIR/db.tar.gz.sha256" "$out" ;;
    *"license_key=$FAKE_CURL_KEY&"*"suffix=tar.gz"*) cp "$FAKE_CURL_DIR/db.tar.gz" "$out" ;;
    *) echo "curl: (22) The requested URL returned error: 401" >&2; exit 22 ;;
esac
"""


def fake_maxmind(tmp_path: Path, mmdb: Path, key: str, *, corrupt_checksum: bool = False) -> dict[str, str]:
    served = tmp_path / "served"
    served.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (
            ("GeoLite2-Country_20240102/GeoLite2-Country.mmdb", mmdb.read_bytes()),
            ("GeoLite2-Country_20240102/LICENSE.txt", b"GeoLite2 EULA (test)\n"),
            ("GeoLite2-Country_20240102/COPYRIGHT.txt", b"Database and Contents Copyright (c) MaxMind\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (served / "db.tar.gz").write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    if corrupt_checksum:
        digest = "0" * 64
    (served / "db.tar.gz.sha256").write_text(
        f"{digest}  GeoLite2-Country_20240102.tar.gz\n", encoding="utf-8"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(FAKE_CURL, encoding="utf-8")
    (bin_dir / "curl").chmod(0o755)
    return clean_env(
        MAXMIND_LICENSE_KEY=key,
        FAKE_CURL_DIR=str(served),
        FAKE_CURL_KEY=key,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def test_given_a_maxmind_licence_key_when_the_layer_builds_then_it_downloads_without_revealing_the_key(
    tmp_path: Path,
) -> None:
    key = "TeStKeY_0123456789abcdef"
    env = fake_maxmind(tmp_path, maxmind_test_db(), key)
    done = build_geoip(tmp_path / "out", env)
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr
    served = Path(env["FAKE_CURL_DIR"])
    assert key not in (served / "argv.log").read_text(encoding="utf-8")  # not on a command line (ps)
    config = (served / "config.log").read_text(encoding="utf-8")
    assert "https://download.maxmind.com/app/geoip_download?edition_id=GeoLite2-Country&" in config
    geoip = tmp_path / "out" / "geoip"
    assert (geoip / "country.mmdb").read_bytes() == maxmind_test_db().read_bytes()
    provenance = (geoip / "SOURCE.txt").read_text(encoding="utf-8")
    assert "GeoLite2-Country_20240102" in provenance
    assert "This product includes GeoLite2 data created by MaxMind" in provenance
    assert key not in provenance


def test_given_a_download_with_a_wrong_checksum_when_the_layer_builds_then_it_fails(tmp_path: Path) -> None:
    key = "AnotherTestKey987"
    env = fake_maxmind(tmp_path, maxmind_test_db(), key, corrupt_checksum=True)
    done = build_geoip(tmp_path / "out", env)
    assert done.returncode != 0
    assert "SHA-256 mismatch" in done.stderr
    assert key not in done.stdout + done.stderr
    assert not (tmp_path / "out" / "geoip" / "country.mmdb").exists()


def test_given_no_path_and_no_key_when_the_layer_builds_then_it_ships_db_ip_with_the_attribution(
    tmp_path: Path,
) -> None:
    if shutil.which("npm") is None:
        unavailable("npm is not on PATH (needed to fetch DB-IP Lite from the npm registry)")
    done = build_geoip(tmp_path, clean_env())
    assert done.returncode == 0, done.stderr
    geoip = tmp_path / "geoip"
    database = (geoip / "country.mmdb").read_bytes()
    assert MMDB_MARKER in database[-128 * 1024 :]
    provenance = (geoip / "SOURCE.txt").read_text(encoding="utf-8")
    assert DBIP_ATTRIBUTION in provenance
    assert "https://db-ip.com" in provenance
    assert "CC BY 4.0" in provenance
    assert "Creative Commons" in (geoip / "DBIP-LICENSE").read_text(encoding="utf-8")
    assert_country_lookup_works(geoip / "country.mmdb", "8.8.8.8", "US")
    # and the ASN database, converted from the pinned release, credited and licensed
    assert MMDB_MARKER in (geoip / "asn.mmdb").read_bytes()[-128 * 1024 :]
    assert "ASN database (asn.mmdb)" in provenance
    assert "Route Views" in provenance
    assert "https://www.nro.net" in provenance
    for licence in ("ASN-DBIP-LICENSE", "ASN-ROUTEVIEWS-LICENSE", "ASN-NRO_LICENSE"):
        assert "Creative Commons" in (geoip / licence).read_text(encoding="utf-8")


def test_given_a_user_supplied_asn_database_or_none_when_the_layer_builds_then_it_is_installed_or_absent(
    tmp_path: Path,
) -> None:
    # Given a country database supplied by the user, and MaxMind's GeoLite2-ASN test database
    asn = maxmind_test_db().with_name("GeoLite2-ASN-Test.mmdb")
    if not asn.exists():
        unavailable(f"MaxMind test database not found at {asn}")

    # When the layer builds with TRAILGEO_ASN_MMDB, and again with TRAILGEO_ASN=off
    done = build_geoip(
        tmp_path / "a", clean_env(TRAILGEO_MMDB=str(maxmind_test_db()), TRAILGEO_ASN_MMDB=str(asn))
    )
    off = build_geoip(tmp_path / "b", clean_env(TRAILGEO_MMDB=str(maxmind_test_db()), TRAILGEO_ASN="off"))

    # Then the first installs it as it is, with its provenance; the second has none and says so
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "geoip" / "asn.mmdb").read_bytes() == asn.read_bytes()
    assert "TRAILGEO_ASN_MMDB=GeoLite2-ASN-Test.mmdb" in (tmp_path / "a" / "geoip" / "SOURCE.txt").read_text()
    assert off.returncode == 0, off.stderr
    assert not (tmp_path / "b" / "geoip" / "asn.mmdb").exists()
    assert "TRAILGEO_ASN=off" in off.stderr


def test_given_the_build_script_then_it_is_posix_sh_that_parses() -> None:
    done = subprocess.run(["sh", "-n", str(BUILD_SH)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert BUILD_SH.read_text(encoding="utf-8").startswith("#!/bin/sh\n")


# ---------------------------------------------------------------------------- (g) notifier

# What trailgeo.app.notify.NotifierSettings reads, plus Powertools and the log level.
NOTIFIER_ENVIRONMENT = {
    "SLACK_WEBHOOK_SECRET_ARN",
    "SECURITY_HUB_PRODUCT_ARN",
    "EVENT_BUS_NAME",
    "OCSF_EVENT_BUS_NAME",
    "TABLE_NAME",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
}
NOTIFIER_RESOURCES = {
    "NotifierQueue": "AWS::SQS::Queue",
    "NotifierDeadLetterQueue": "AWS::SQS::Queue",
    "NotifierQueuePolicy": "AWS::SQS::QueuePolicy",
    "NotifierDeadLetterQueuePolicy": "AWS::SQS::QueuePolicy",
    "AlertsNotifierSubscription": "AWS::SNS::Subscription",
    "NotifierLogGroup": "AWS::Logs::LogGroup",
    "NotifierRole": "AWS::IAM::Role",
    "NotifierFunction": "AWS::Serverless::Function",
}
DEFAULT_PRODUCT_ARN = (
    "arn:${AWS::Partition}:securityhub:${AWS::Region}:${AWS::AccountId}:product/${AWS::AccountId}/default"
)


def test_given_no_channel_then_the_notifier_and_its_queues_are_not_created(template: dict[str, Any]) -> None:
    conditions = template["Conditions"]
    assert conditions["HasSlack"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SlackWebhookSecretArn"}, ""]}]}
    assert conditions["HasSecurityHub"] == {"Fn::Equals": [{"Ref": "SecurityHub"}, "Enabled"]}
    assert conditions["HasEventBus"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "EventBusName"}, ""]}]}
    assert conditions["HasOcsf"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OcsfEventBusName"}, ""]}]}
    assert conditions["HasNotifier"] == {
        "Fn::Or": [
            {"Condition": "HasSlack"},
            {"Condition": "HasSecurityHub"},
            {"Condition": "HasEventBus"},
            {"Condition": "HasOcsf"},
        ]
    }
    for name, kind in NOTIFIER_RESOURCES.items():
        resource = template["Resources"][name]
        assert (resource["Type"], resource.get("Condition")) == (kind, "HasNotifier"), name
    parameters = template["Parameters"]
    assert parameters["SlackWebhookSecretArn"]["Default"] == ""
    assert parameters["EventBusName"]["Default"] == ""
    assert parameters["OcsfEventBusName"]["Default"] == ""
    assert parameters["SecurityHub"]["Default"] == "Disabled"
    assert set(parameters["SecurityHub"]["AllowedValues"]) == {"Enabled", "Disabled"}
    assert "hooks.slack.com" not in TEMPLATE.read_text(encoding="utf-8")  # no webhook URL anywhere


def conditional_statements(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The notifier's statements wrapped in Fn::If, by condition name."""
    policies = template["Resources"]["NotifierRole"]["Properties"]["Policies"]
    found = {}
    for policy in policies:
        for item in policy["PolicyDocument"]["Statement"]:
            if isinstance(item, dict) and "Fn::If" in item:
                condition, statement, otherwise = item["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}
                found[condition] = statement
    return found


def test_given_the_notifier_role_then_each_channel_is_granted_only_its_resource_and_only_when_set(
    template: dict[str, Any],
) -> None:
    guarded = conditional_statements(template)
    assert set(guarded) == {"HasSlack", "HasSecretsKmsKey", "HasSecurityHub", "HasEventBus", "HasOcsf"}
    assert as_list(guarded["HasSlack"]["Action"]) == ["secretsmanager:GetSecretValue"]
    assert sub_text(guarded["HasSlack"]["Resource"]) == "${SlackWebhookSecretArn}*"  # full or partial ARN
    assert as_list(guarded["HasSecretsKmsKey"]["Action"]) == ["kms:Decrypt"]
    assert guarded["HasSecretsKmsKey"]["Resource"] == {"Ref": "SecretsKmsKeyArn"}
    assert [
        sub_text(v)
        for v in as_list(guarded["HasSecretsKmsKey"]["Condition"]["StringEquals"]["kms:ViaService"])
    ] == ["secretsmanager.${AWS::Region}.amazonaws.com"]
    assert as_list(guarded["HasSecurityHub"]["Action"]) == ["securityhub:BatchImportFindings"]
    assert sub_text(guarded["HasSecurityHub"]["Resource"]) == DEFAULT_PRODUCT_ARN
    assert as_list(guarded["HasEventBus"]["Action"]) == ["events:PutEvents"]
    assert (
        sub_text(guarded["HasEventBus"]["Resource"])
        == "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"
    )
    assert as_list(guarded["HasOcsf"]["Action"]) == ["events:PutEvents"]
    assert (
        sub_text(guarded["HasOcsf"]["Resource"])
        == "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${OcsfEventBusName}"
    )


def test_given_the_notifier_role_then_it_consumes_only_its_queue_and_decrypts_only_through_sqs(
    template: dict[str, Any],
) -> None:
    (consume,) = statements_for(template, "sqs", NOTIFIER)
    assert set(as_list(consume["Action"])) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    }
    assert referenced(consume["Resource"]) == "NotifierQueue"
    decrypt, _secret = statements_for(template, "kms", NOTIFIER)  # the secret's: the test above
    assert decrypt["Sid"] == "DecryptNotifierQueue"
    assert as_list(decrypt["Action"]) == ["kms:Decrypt"]
    assert referenced(decrypt["Resource"]) == "AlertsKey"
    assert [sub_text(v) for v in as_list(decrypt["Condition"]["StringEquals"]["kms:ViaService"])] == [
        "sqs.${AWS::Region}.amazonaws.com"
    ]
    (logs,) = statements_for(template, "logs", NOTIFIER)
    assert set(as_list(logs["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert referenced(logs["Resource"]) == "NotifierLogGroup"
    services = {
        a.split(":", 1)[0] for s in function_statements(template, NOTIFIER) for a in as_list(s["Action"])
    }
    assert services == {"logs", "xray", "sqs", "kms", "dynamodb", "secretsmanager", "securityhub", "events"}
    # The alerts are checked against the outbox; the delivery records (Powertools Idempotency) are
    # read and written in their own partition: each statement holds to one partition of the table
    outbox, deliveries = statements_for(template, "dynamodb", NOTIFIER)
    assert as_list(outbox["Action"]) == ["dynamodb:GetItem"]
    assert set(as_list(deliveries["Action"])) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    table = statements_for(template, "dynamodb")[0]["Resource"]  # the detector's
    for statement, partition in ((outbox, "OUTBOX"), (deliveries, "NOTIFIED")):
        assert statement["Resource"] == table
        assert statement["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [partition]}}
    assert (OUTBOX_PARTITION, DELIVERY_PARTITION) == ("OUTBOX", "NOTIFIED")  # what the code reads and writes


def test_given_the_notifier_then_its_environment_is_what_the_package_reads_and_holds_no_secret(
    template: dict[str, Any],
) -> None:
    props = function(template, NOTIFIER)
    variables = merged(template, NOTIFIER, "Environment")
    assert set(variables) == NOTIFIER_ENVIRONMENT
    source = (ROOT / "src" / "trailgeo" / "app" / "notify.py").read_text(encoding="utf-8")
    for name in NOTIFIER_ENVIRONMENT - POWERTOOLS:
        assert f'"{name}"' in source, name
    assert variables["SLACK_WEBHOOK_SECRET_ARN"] == {"Ref": "SlackWebhookSecretArn"}  # an ARN, not the URL
    condition, product_arn, otherwise = variables["SECURITY_HUB_PRODUCT_ARN"]["Fn::If"]
    assert (condition, sub_text(product_arn), otherwise) == ("HasSecurityHub", DEFAULT_PRODUCT_ARN, "")
    assert variables["EVENT_BUS_NAME"] == {"Ref": "EventBusName"}
    assert variables["OCSF_EVENT_BUS_NAME"] == {"Ref": "OcsfEventBusName"}
    assert (props["Runtime"], props["Handler"], props["CodeUri"]) == (
        "python3.13",
        "app.lambda_handler",
        "functions/notifier/",
    )
    assert (ROOT / "functions" / "notifier" / "app.py").exists()
    assert [referenced(layer) for layer in props["Layers"]] == ["TrailgeoLayer"]
    assert referenced(props["LoggingConfig"]["LogGroup"]) == "NotifierLogGroup"
    assert referenced(props["Role"]) == "NotifierRole"
    assert props["Tracing"] == "Active"


def test_given_the_notifier_queue_then_the_topic_feeds_it_raw_and_failures_retry_then_dead_letter(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    queue = resources["NotifierQueue"]["Properties"]
    assert referenced(queue["KmsMasterKeyId"]) == "AlertsKey"
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert referenced(queue["RedrivePolicy"]["deadLetterTargetArn"]) == "NotifierDeadLetterQueue"
    assert queue["VisibilityTimeout"] >= 6 * function(template, NOTIFIER)["Timeout"]
    dead = resources["NotifierDeadLetterQueue"]["Properties"]
    assert referenced(dead["KmsMasterKeyId"]) == "AlertsKey"
    assert dead["MessageRetentionPeriod"] == 1209600

    subscription = resources["AlertsNotifierSubscription"]["Properties"]
    assert (subscription["Protocol"], subscription["RawMessageDelivery"]) == ("sqs", True)
    assert referenced(subscription["TopicArn"]) == "AlertsTopic"
    assert referenced(subscription["Endpoint"]) == "NotifierQueue"

    statements = resources["NotifierQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "sns.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert referenced(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == "AlertsTopic"
    # SNS must be able to encrypt into the KMS-encrypted queue
    key_statements = resources["AlertsKey"]["Properties"]["KeyPolicy"]["Statement"]
    (sns_key,) = [s for s in key_statements if s.get("Principal", {}).get("Service") == "sns.amazonaws.com"]
    assert set(as_list(sns_key["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey"}
    assert "aws:SourceAccount" in json.dumps(sns_key["Condition"])

    events = function(template, NOTIFIER)["Events"]
    (source,) = events.values()
    assert source["Type"] == "SQS"
    assert referenced(source["Properties"]["Queue"]) == "NotifierQueue"
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
