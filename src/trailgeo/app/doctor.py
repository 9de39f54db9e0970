"""``trailgeo doctor``: can a deployed stack run? One line per check, an exit code for CI.

With the stack's outputs and parameters (CloudFormation DescribeStacks) and the caller's credentials,
read-only unless ``--publish-test`` is given:

``stack``         the stack's status;
``schedule``      an EventBridge rule, enabled and on a schedule, targets the detector (with a
                  dead-letter queue);
``role-access``   IAM's policy simulator on the detector's role (it cannot be assumed: it trusts only
                  Lambda): s3:ListBucket and s3:GetObject on the trail prefix, kms:Decrypt on the
                  trail's key through S3, the table, the topic, the tuning parameter and its key. It
                  evaluates the role's own policies, not a bucket or key policy of another account;
``trail-bucket``  the caller lists ``<TrailPrefix>AWSLogs/``: a wrong prefix shows here;
``table``         ACTIVE, keys ``pk``/``sk``, time to live on ``expires_at``;
``last-run``      the table's watermark: the last run that processed its whole window, which proves
                  the role read the bucket (and the key) and wrote the table;
``dead-letters``  the detector's dead-letter queue is empty;
``topic``         the alerts topic has a confirmed subscription, and the ``PagingEndpoint`` (when given)
                  a confirmed one filtered as the stack wrote it; with ``--publish-test``, a test message
                  is published to the operations topic, which the same ``AlertEmail`` subscribes to
                  (not read-only; the alerts topic takes messages from the detector's role only, and
                  the notifier would dead-letter one that is not an alert);
``tuning``        the tuning parameter exists, decrypts and validates.

Each line is ``OK|FAIL|SKIP name: detail``; the exit code is 1 when any check fails, else 0. A check
the caller is not allowed to make is SKIP, saying which permission it needs.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trailgeo.adapters.dynamodb import error_code_of
from trailgeo.adapters.operations import DynamoOperations, aws_error
from trailgeo.adapters.ssm import SsmTuningSource
from trailgeo.app.operate import OperateError, read_status
from trailgeo.core.alerts import SEVERITY_LEVELS, paging_filter_policy
from trailgeo.core.tuning import TuningError
from trailgeo.ports import OperationsError, TrailgeoError

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
SCHEDULE = timedelta(minutes=15)
# A run every 15 minutes: a watermark older than three of them means runs fail or do not come.
LAG_LIMIT = 3 * SCHEDULE
# After a deploy, the first run comes within one schedule period; before that, no run is no failure.
FIRST_RUN_GRACE = 2 * SCHEDULE
_HEALTHY_STACK = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError", "UnauthorizedOperation"})
_FOLDER = re.compile(r"^(\d{12}|o-[a-z0-9]{10,32})$")

Client = Callable[[str], Any]


class DoctorError(TrailgeoError):
    """The stack cannot be examined (not found, not a trailgeo stack)."""


@dataclass(frozen=True, slots=True)
class Check:
    status: str  # OK, FAIL or SKIP
    name: str
    detail: str

    def line(self) -> str:
        detail = "".join(c if c.isprintable() else "?" for c in " ".join(self.detail.split()))
        return f"{self.status} {self.name}: {detail}"


@dataclass(frozen=True, slots=True)
class Deployed:
    """What DescribeStacks says of one stack."""

    name: str
    status: str
    changed_at: datetime  # created, or last updated
    outputs: Mapping[str, str]
    parameters: Mapping[str, str]
    partition: str
    region: str

    def output(self, key: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise DoctorError(
                f"stack {self.name} has no {key} output (is it a trailgeo stack, deployed whole?)"
            )
        return value


def describe(cloudformation: Any, stack: str) -> Deployed:
    try:
        (found,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        if error_code_of(exc) == "ValidationError" and "does not exist" in str(exc):
            region = cloudformation.meta.region_name
            raise DoctorError(
                f"stack {stack} not found in {region}: give --stack and the stack's --region"
            ) from None
        raise
    arn = str(found["StackId"]).split(":")  # arn:<partition>:cloudformation:<region>:<account>:stack/...
    return Deployed(
        name=str(found["StackName"]),
        status=str(found["StackStatus"]),
        changed_at=found.get("LastUpdatedTime") or found["CreationTime"],
        outputs={str(o["OutputKey"]): str(o["OutputValue"]) for o in found.get("Outputs", [])},
        parameters={
            str(p["ParameterKey"]): str(p.get("ParameterValue", "")) for p in found.get("Parameters", [])
        },
        partition=arn[1],
        region=arn[3],
    )


# --- the checks ---------------------------------------------------------------------------------------


def check_stack(deployed: Deployed) -> Check:
    if deployed.status in _HEALTHY_STACK:
        return Check(OK, "stack", f"{deployed.name} {deployed.status} in {deployed.region}")
    return Check(FAIL, "stack", f"{deployed.name} is {deployed.status}: see its events in CloudFormation")


def check_schedule(deployed: Deployed, client: Client) -> Check:
    function = deployed.output("DetectorFunctionArn")
    events = client("events")
    names: list[str] = []
    request: dict[str, Any] = {"TargetArn": function}
    while True:
        page = events.list_rule_names_by_target(**request)
        names += page.get("RuleNames", [])
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    found, problems = [], []
    for name in names:
        rule = events.describe_rule(Name=name)
        expression = rule.get("ScheduleExpression")
        if not expression:
            continue  # an event-pattern rule someone pointed at the function: not the schedule
        targets = events.list_targets_by_rule(Rule=name).get("Targets", [])
        dead_letters = any(
            t.get("DeadLetterConfig", {}).get("Arn") for t in targets if t.get("Arn") == function
        )
        if rule.get("State") != "ENABLED":
            problems.append(f"rule {name} ({expression}) is {rule.get('State')}: enable it")
            continue
        found.append(f"rule {name} ENABLED, {expression}{'' if dead_letters else ', no dead-letter queue'}")
    if found:
        return Check(OK, "schedule", "; ".join(found + problems))
    if problems:
        return Check(FAIL, "schedule", "; ".join(problems))
    return Check(FAIL, "schedule", f"no scheduled EventBridge rule targets {function}: redeploy the stack")


def role_arn_of(deployed: Deployed, client: Client) -> str:
    if deployed.outputs.get("DetectorRoleArn"):
        return deployed.outputs["DetectorRoleArn"]
    resource = client("cloudformation").describe_stack_resource(
        StackName=deployed.name, LogicalResourceId="DetectorRole"
    )["StackResourceDetail"]
    return str(client("iam").get_role(RoleName=resource["PhysicalResourceId"])["Role"]["Arn"])


@dataclass(frozen=True, slots=True)
class Probe:
    """One action on one resource, in a context, that the detector's role must be allowed."""

    action: str
    resource: str
    context: Mapping[str, str] | None = None


def role_probes(deployed: Deployed) -> list[Probe]:
    p, region, parameters = deployed.partition, deployed.region, deployed.parameters
    bucket = parameters.get("TrailBucketName", "")
    prefix = parameters.get("TrailPrefix", "")
    s3 = f"s3.{region}.amazonaws.com"
    probes = [
        Probe("s3:ListBucket", f"arn:{p}:s3:::{bucket}", {"s3:prefix": f"{prefix}AWSLogs/"}),
        Probe(
            "s3:GetObject", f"arn:{p}:s3:::{bucket}/{prefix}AWSLogs/111122223333/CloudTrail/doctor.json.gz"
        ),
    ]
    if parameters.get("TrailKmsKeyArn"):
        # the role decrypts through S3 for the trail bucket only (its encryption context)
        context = {"kms:ViaService": s3, "kms:EncryptionContext:aws:s3:arn": f"arn:{p}:s3:::{bucket}"}
        probes.append(Probe("kms:Decrypt", parameters["TrailKmsKeyArn"], context))
    account = deployed.output("AlertsTopicArn").split(":")[4]
    table = deployed.output("FrequencyTableName")
    probes += [
        Probe("dynamodb:UpdateItem", f"arn:{p}:dynamodb:{region}:{account}:table/{table}"),
        Probe("sns:Publish", deployed.output("AlertsTopicArn")),
    ]
    if parameters.get("TuningParameterName"):
        name = parameters["TuningParameterName"]
        probes.append(Probe("ssm:GetParameter", f"arn:{p}:ssm:{region}:{account}:parameter{name}"))
        if parameters.get("TuningKmsKeyArn"):
            ssm = f"ssm.{region}.amazonaws.com"
            probes.append(Probe("kms:Decrypt", parameters["TuningKmsKeyArn"], {"kms:ViaService": ssm}))
    return probes


def role_access_verdict(role: str, decisions: Sequence[tuple[Probe, str]]) -> Check:
    """OK when the simulator allowed every probe; otherwise FAIL naming each one refused and why."""
    refused = [
        f"{probe.action} on {probe.resource}: {decision}"
        for probe, decision in decisions
        if decision != "allowed"
    ]
    if refused:
        return Check(FAIL, "role-access", f"{role} is refused " + "; ".join(refused))
    actions = sorted({probe.action for probe, _ in decisions})
    return Check(
        OK, "role-access", f"{role} may {', '.join(actions)} (its own policies, per IAM's simulator)"
    )


def check_role_access(deployed: Deployed, client: Client) -> Check:
    role = role_arn_of(deployed, client)
    iam = client("iam")
    decisions = []
    for probe in role_probes(deployed):
        context = [
            {"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": "string"}
            for key, value in (probe.context or {}).items()
        ]
        try:
            result = iam.simulate_principal_policy(
                PolicySourceArn=role,
                ActionNames=[probe.action],
                ResourceArns=[probe.resource],
                ContextEntries=context,
            )["EvaluationResults"][0]
        except ClientError as exc:
            if error_code_of(exc) in _DENIED:
                return Check(SKIP, "role-access", f"the caller needs iam:SimulatePrincipalPolicy on {role}")
            raise
        decisions.append((probe, str(result["EvalDecision"])))
    return role_access_verdict(role, decisions)


def check_trail_bucket(deployed: Deployed, client: Client) -> Check:
    bucket = deployed.parameters.get("TrailBucketName", "")
    base = f"{deployed.parameters.get('TrailPrefix', '')}AWSLogs/"
    try:
        page = client("s3").list_objects_v2(Bucket=bucket, Prefix=base, Delimiter="/", MaxKeys=1000)
    except ClientError as exc:
        if error_code_of(exc) in _DENIED:
            return Check(
                SKIP,
                "trail-bucket",
                f"the caller may not list s3://{bucket}/{base} (the role's access: role-access, last-run)",
            )
        if error_code_of(exc) == "NoSuchBucket":
            return Check(FAIL, "trail-bucket", f"bucket {bucket} does not exist: check TrailBucketName")
        raise
    folders = [c["Prefix"][len(base) : -1] for c in page.get("CommonPrefixes", [])]
    known = [f for f in folders if _FOLDER.match(f)]
    if not known:
        return Check(
            FAIL,
            "trail-bucket",
            f"no account or organization folder under s3://{bucket}/{base}: is TrailPrefix the trail's "
            "S3 key prefix followed by / (empty when it has none)?",
        )
    shown = ", ".join(sorted(known)[:3]) + (", ..." if len(known) > 3 else "")
    return Check(
        OK, "trail-bucket", f"s3://{bucket}/{base} holds {len(known)} folder(s): {shown} (caller's view)"
    )


def check_table(deployed: Deployed, client: Client) -> Check:
    name = deployed.output("FrequencyTableName")
    dynamodb = client("dynamodb")
    try:
        table = dynamodb.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if error_code_of(exc) == "ResourceNotFoundException":
            return Check(FAIL, "table", f"{name} not found in {deployed.region} (ExistingTableName?)")
        raise
    problems = []
    if table.get("TableStatus") != "ACTIVE":
        problems.append(f"status {table.get('TableStatus')}")
    keys = {(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])}
    if keys != {("pk", "HASH"), ("sk", "RANGE")}:
        problems.append("keys are not pk (hash) and sk (range): not a trailgeo table")
    ttl = dynamodb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in {"ENABLED", "ENABLING"} or ttl.get("AttributeName") != "expires_at":
        problems.append("time to live is not on expires_at: ledger and run records would never expire")
    if problems:
        return Check(FAIL, "table", f"{name}: " + "; ".join(problems))
    return Check(OK, "table", f"{name} ACTIVE, keys pk/sk, time to live on expires_at")


def check_last_run(deployed: Deployed, client: Client, now: datetime) -> Check:
    try:
        status = read_status(DynamoOperations(client("dynamodb"), deployed.output("FrequencyTableName")), now)
    except OperateError as exc:
        return Check(FAIL, "last-run", str(exc))
    since_change = now - deployed.changed_at
    if status.watermark is None or status.lag is None:
        if since_change < FIRST_RUN_GRACE:
            return Check(SKIP, "last-run", f"no complete run yet; the stack changed {_ago(since_change)} ago")
        return Check(FAIL, "last-run", "no complete run yet: see the detector's logs and dead-letter queue")
    extra = f"; {len(status.interrupted_runs)} interrupted run(s)" if status.interrupted_runs else ""
    extra += f"; {len(status.pending)} alert(s) not yet published" if status.pending else ""
    stamp = status.watermark.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
    if status.lag > LAG_LIMIT:
        # A first run starts the watermark at the look-back before it lists: a lagging watermark
        # just after a deploy is not yet proof of anything, either way.
        verdict = FAIL if since_change >= FIRST_RUN_GRACE else SKIP
        return Check(verdict, "last-run", f"last complete run {stamp}, {_ago(status.lag)} ago{extra}")
    return Check(OK, "last-run", f"last complete run {stamp}, {_ago(status.lag)} ago{extra}")


def check_dead_letters(deployed: Deployed, client: Client) -> Check:
    url = deployed.output("DeadLetterQueueUrl")
    attributes = client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    waiting = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    if waiting:
        return Check(
            FAIL, "dead-letters", f"{waiting} message(s) in {url}: failed runs or undelivered schedules"
        )
    return Check(OK, "dead-letters", "the detector's dead-letter queue is empty")


def _pager(
    deployed: Deployed, sns: Any, subscriptions: Sequence[Mapping[str, Any]]
) -> tuple[bool, str] | None:
    """Whether the stack's ``PagingEndpoint`` (None when it has none) is subscribed, confirmed and
    filtered as the stack wrote it (core/alerts.paging_filter_policy): an edited filter pages for
    the wrong alerts, or for none."""
    endpoint = deployed.parameters.get("PagingEndpoint", "")
    if not endpoint:
        return None
    mine = [s for s in subscriptions if s.get("Endpoint") == endpoint]
    arns = [
        str(s.get("SubscriptionArn", ""))
        for s in mine
        if str(s.get("SubscriptionArn", "")).startswith("arn:")
    ]
    if not arns:
        state = "has not confirmed its subscription" if mine else "is not subscribed"
        return False, f"the pager {endpoint} {state}: nobody is paged"
    lowest = deployed.parameters.get("PagingSeverity") or "high"
    expected = paging_filter_policy(lowest if lowest in SEVERITY_LEVELS else "high")
    for subscription in arns:
        attributes = sns.get_subscription_attributes(SubscriptionArn=subscription)["Attributes"]
        raw = attributes.get("FilterPolicy", "")
        try:
            policy = json.loads(raw) if raw else {}
        except ValueError:
            policy = {}
        same = (
            isinstance(policy, dict)
            and set(policy) == set(expected)
            and all(
                isinstance(policy[k], list) and sorted(map(str, policy[k])) == sorted(v)
                for k, v in expected.items()
            )
        )
        if not same or attributes.get("FilterPolicyScope", "MessageAttributes") != "MessageAttributes":
            return False, (
                f"the pager's filter policy is {raw or 'none'}, not the stack's {json.dumps(expected)}: "
                "it is paged for other alerts than the stack says (update the stack to restore it)"
            )
    return True, f"the pager {endpoint} is paged at {', '.join(expected['severity'])}, new or escalating"


def check_topic(deployed: Deployed, client: Client, *, publish_test: bool, now: datetime) -> Check:
    arn = deployed.output("AlertsTopicArn")
    sns = client("sns")
    sns.get_topic_attributes(TopicArn=arn)  # the topic is there (NotFound otherwise)
    # From the subscriptions themselves: the topic's counters are refreshed only now and then.
    subscriptions = [
        s
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn)
        for s in page.get("Subscriptions", [])
    ]
    pending = sum(1 for s in subscriptions if s.get("SubscriptionArn") == "PendingConfirmation")
    confirmed = sum(1 for s in subscriptions if str(s.get("SubscriptionArn", "")).startswith("arn:"))
    detail = f"{arn}: {confirmed} confirmed subscription(s), {pending} pending"
    pager = _pager(deployed, sns, subscriptions)
    if pager is not None:
        paging, said = pager
        if not paging:
            return Check(FAIL, "topic", f"{detail}; {said}")
        detail += f"; {said}"
    if publish_test:
        operations = deployed.output("OperationsTopicArn")
        message_id = sns.publish(
            TopicArn=operations,
            Subject="trailgeo doctor: test message",
            Message=f"A test message from `trailgeo doctor` at {now:%Y-%m-%dT%H:%M:%SZ}; not an alert.",
            MessageAttributes={"trailgeo_test": {"DataType": "String", "StringValue": "true"}},
        )["MessageId"]
        detail += f"; test message {message_id} published to the operations topic"
    if confirmed == 0:
        return Check(FAIL, "topic", detail + ": alerts reach nobody (confirm the subscription e-mail)")
    return Check(OK, "topic", detail)


def check_tuning(deployed: Deployed, client: Client) -> Check:
    name = deployed.parameters.get("TuningParameterName", "")
    if not name:
        return Check(SKIP, "tuning", "no TuningParameterName")
    try:
        tuning = SsmTuningSource(client("ssm")).load(name)
    except TuningError as exc:
        return Check(FAIL, "tuning", str(exc))
    return Check(
        OK,
        "tuning",
        f"{name} valid: {len(tuning.allowed_countries)} allowed_countries, {len(tuning.trusted_cidrs)} "
        f"trusted_cidrs, {len(tuning.methods)} method override(s)",
    )


def _ago(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds()) // 60, 0)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """One check: what AWS refused becomes its line, so the others still run."""
    try:
        return check()
    except DoctorError as exc:
        return Check(FAIL, name, str(exc))
    except ClientError as exc:
        if error_code_of(exc) in _DENIED:
            return Check(SKIP, name, f"the caller is not allowed: {aws_error(exc)}")
        return Check(FAIL, name, aws_error(exc))
    except OperationsError as exc:  # the same refusal, told by an adapter
        if exc.code in _DENIED:
            return Check(SKIP, name, f"the caller is not allowed: {exc}")
        return Check(FAIL, name, str(exc))
    except BotoCoreError as exc:
        return Check(FAIL, name, f"{type(exc).__name__}: {exc}")


def run_checks(stack: str, client: Client, now: datetime, *, publish_test: bool = False) -> Iterator[Check]:
    """Every check of the stack, in order; raises only what makes the stack itself unreadable
    (no credentials, no region), so that it is reported as the command's error."""
    try:
        deployed = describe(client("cloudformation"), stack)
    except DoctorError as exc:
        yield Check(FAIL, "stack", str(exc))
        return
    yield check_stack(deployed)
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("schedule", lambda: check_schedule(deployed, client)),
        ("role-access", lambda: check_role_access(deployed, client)),
        ("trail-bucket", lambda: check_trail_bucket(deployed, client)),
        ("table", lambda: check_table(deployed, client)),
        ("last-run", lambda: check_last_run(deployed, client, now)),
        ("dead-letters", lambda: check_dead_letters(deployed, client)),
        ("topic", lambda: check_topic(deployed, client, publish_test=publish_test, now=now)),
        ("tuning", lambda: check_tuning(deployed, client)),
    ]
    for name, check in checks:
        yield _guarded(name, check)


def report(
    stack: str,
    client: Client,
    now: datetime,
    *,
    publish_test: bool = False,
    out: Callable[[str], None] = print,
) -> int:
    """Print one line per check as it completes; 1 when any failed, else 0."""
    failed = False
    for check in run_checks(stack, client, now, publish_test=publish_test):
        out(check.line())
        failed |= check.status == FAIL
    return 1 if failed else 0


# --- the command line ---------------------------------------------------------------------------------


def main(args: argparse.Namespace, out: Callable[[str], None] = print, config: Any = None) -> int:
    """``trailgeo doctor``: the checks of ``args.stack`` with the caller's credentials."""
    import boto3

    session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    clients: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = session.client(service, config=config)  # type: ignore[call-overload]
        return clients[service]

    return report(args.stack, client, datetime.now(tz=UTC), publish_test=args.publish_test, out=out)
