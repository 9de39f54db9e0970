"""The command line's habits, as aws-cli's: data on stdout, everything else on stderr, one line and a
documented exit code per failure, --version, --debug, --help with examples; ``trailgeo policy``;
and what an attacker's CloudTrail strings can do to the operator's terminal.

Most tests run the real CLI in a subprocess (``python -m trailgeo``): stdout, stderr and the exit
code are exactly what a shell sees, with no capture fixture in between.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.aws import REGION, TABLE, create_deployment
from tests.builders import BT_IP, T0, US_IP, delivery_key, files_by_delivery, record, write_tree
from tests.test_template import _template, as_list, branches, sub_text
from trailgeo import __version__
from trailgeo.adapters.dynamodb import DynamoOutbox
from trailgeo.adapters.operations import aws_error
from trailgeo.app.policy import Policies, PolicyError, PolicyInputs, normalized_prefix
from trailgeo.cli import (
    EXIT_AWS,
    EXIT_AWS_CONFIG,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    _client_config,
    classify,
    main,
)
from trailgeo.ports import ConcurrentChangeError, OperationsError
from trailgeo_tools.cli import main as tools_main

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
ROLE = "arn:aws:iam::111122223333:role/trailgeo-DetectorRole-1ABCDEF"
KEY = "arn:aws:kms:eu-west-1:444455556666:key/1a2b3c4d-5e6f-4a5b-8c7d-9e0f1a2b3c4d"
# What a terminal acts on: ESC (colours, cursor, title), C1 CSI, right-to-left override, line separator.
TERMINAL_TRICKS = ("\x1b", "\x9b", "\u202e", "\u2028")
TRICKY_ARN = (
    "arn:aws:iam::111122223333:user/mallory\x1b]0;owned\x07\x9b2J\u202etxt.exe\u2028\r\nwarning: none"
)
TRICKY_AGENT = "aws-cli/2.15.30 \x1b[8mhidden\x1b[0m \u202egnp.exe"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any AWS setting or credential, so nothing reaches a real account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="1",  # an unreachable endpoint fails at once instead of after 5 backed-off tries
    )
    env.update(extra)
    return env


FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def trailgeo(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trailgeo", *map(str, argv)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env if env is not None else clean_env(),
        timeout=120,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[str], *, progress: int = 0) -> str:
    """The failure as aws-cli shows one: nothing on stdout, one line on stderr (after the command's
    ``progress`` lines), no traceback."""
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 + progress, done.stderr
    assert lines[-1].startswith("trailgeo: ")
    return lines[-1]


@pytest.fixture
def moto_server(moto_server_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """moto's server on 127.0.0.1: this process's boto3 points at it, and the environment returned
    points the CLI's subprocess at it."""
    env = clean_env(AWS_ENDPOINT_URL=moto_server_url, AWS_DEFAULT_REGION=REGION, **FAKE_CREDENTIALS)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return env


def trail_with_an_attack(logs: Path, **attacker: Any) -> None:
    """40 calls from the US over ten days, then one from Bhutan: one alert."""
    history = [record(T0 + timedelta(hours=6 * i), ip=US_IP) for i in range(40)]
    attack = record(T0 + timedelta(days=10, hours=1), ip=BT_IP, **attacker)
    write_tree(logs, files_by_delivery([*history, attack]))


# --- stdout is data, stderr the rest ----------------------------------------------------------------


def test_given_a_hostile_object_beside_good_files_when_replayed_then_stdout_is_alerts_and_the_skip_stderr(
    tmp_path: Path, country_test_mmdb: Path
) -> None:
    # Given a trail with one attack and, under a valid delivery key, a file that is not gzip
    logs = tmp_path / "logs"
    trail_with_an_attack(logs)
    hostile_key = delivery_key(T0 + timedelta(days=5, minutes=20), unique="HOSTILE000000001")
    write_tree(logs, {hostile_key: (HOSTILE / "not_gzip.json.gz").read_bytes()})

    # When it is replayed to stdout
    done = trailgeo("replay", logs, "--geoip", country_test_mmdb)

    # Then stdout is the alert and nothing else; the skip is a JSON log line on stderr
    assert done.returncode == 0, done.stderr
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["source"]["geo"]["country_iso_code"] for a in alerts] == ["BT"]
    logs_on_stderr = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"level"')]
    assert [(e["message"], e["reason"], e["key"]) for e in logs_on_stderr] == [
        ("object skipped", "not_gzip", hostile_key)
    ]
    assert '"files_skipped": {\n      "not_gzip": 1' in done.stderr  # the summary, on stderr too


@pytest.mark.parametrize("output", ["json", "table"])
def test_given_backfill_with_an_output_format_then_stdout_is_the_summary_and_progress_is_on_stderr(
    tmp_path: Path, country_test_mmdb: Path, output: str
) -> None:
    logs = tmp_path / "logs"
    write_tree(logs, files_by_delivery([record(T0 + timedelta(hours=6 * i, minutes=3)) for i in range(12)]))
    end = (T0 + timedelta(days=3, hours=1)).isoformat()

    done = trailgeo(
        "backfill", "--logs", logs, "--state", tmp_path / "state.json", "--days", "4", "--end", end,
        "--geoip", country_test_mmdb, "--output", output,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "backfill: 4 day(s) up to 2026-10-04T01:00Z, alerting off" in done.stderr
    if output == "json":
        summary = json.loads(done.stdout)["backfill"]
        assert (summary["days"], summary["events"], summary["files_skipped"]) == (4, 12, {})
    else:
        lines = done.stdout.splitlines()
        assert "days                      4" in lines
        assert "events                    12 (12 geolocated)" in lines
        assert "files skipped             none" in lines
        assert f"trained                   state file {tmp_path / 'state.json'}" in lines


# --- failures: one line, one exit code ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "told"),
    [
        ({"AWS_DEFAULT_REGION": REGION}, "Unable to locate credentials (give --profile"),
        (FAKE_CREDENTIALS, "You must specify a region. (give --region"),
        (
            {"AWS_PROFILE": "nosuch", "AWS_DEFAULT_REGION": REGION},
            "The config profile (nosuch) could not be found",
        ),
    ],
    ids=["no-credentials", "no-region", "unknown-profile"],
)
def test_given_missing_aws_configuration_when_status_then_one_line_and_the_configuration_exit_code(
    setting: dict[str, str], told: str
) -> None:
    done = trailgeo("status", "--table", "nosuch", env=clean_env(**setting))

    assert done.returncode == EXIT_AWS_CONFIG == 253
    assert one_error_line(done).startswith(f"trailgeo: {told}")


def test_given_an_unreachable_endpoint_when_status_then_one_line_and_the_aws_exit_code() -> None:
    # Given an endpoint nobody listens on (port 9, discard): connection refused at once
    env = clean_env(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_DEFAULT_REGION=REGION, **FAKE_CREDENTIALS)

    done = trailgeo("status", "--table", "nosuch", env=env)

    assert done.returncode == EXIT_AWS == 254
    assert one_error_line(done) == 'trailgeo: Could not connect to the endpoint URL: "http://127.0.0.1:9/"'

    # With --debug: where the credentials came from, the traceback, and still the line and the code
    debug = trailgeo("--debug", "status", "--table", "nosuch", env=env)
    assert debug.returncode == EXIT_AWS
    assert "botocore.credentials: Found credentials in environment variables." in debug.stderr
    assert "Traceback (most recent call last):" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == one_error_line(done)
    assert debug.stdout == ""


def test_given_aws_max_attempts_in_the_environment_then_the_cli_s_clients_follow_it_as_aws_cli_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a client already made with the detector's settings (botocore rewrites their retries)
    from trailgeo.app.wiring import CLIENT_CONFIG

    boto3.session.Session(region_name=REGION).client("s3", config=CLIENT_CONFIG)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    assert _client_config().retries == {"mode": "standard", "max_attempts": 5}  # the detector's own

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    config = _client_config()
    assert config.retries == {"mode": "adaptive", "max_attempts": 2}
    assert (config.connect_timeout, config.read_timeout) == (5, 30)


def test_given_a_bucket_that_does_not_exist_when_backfilled_then_the_service_error_is_one_line_exit_254(
    tmp_path: Path, country_test_mmdb: Path, moto_server: dict[str, str]
) -> None:
    done = trailgeo(
        "backfill", "--bucket", "no-such-trail-bucket", "--state", tmp_path / "state.json", "--days", "1",
        "--geoip", country_test_mmdb, env=moto_server,
    )  # fmt: skip

    assert done.returncode == EXIT_AWS
    assert done.stderr.startswith("backfill: 1 day(s) up to ")  # the start line: progress, stderr
    assert "NoSuchBucket" in one_error_line(done, progress=1)


INJECT = """
import sys
import trailgeo.app.replay

def fail(*args, **kwargs):
    raise {exception}

trailgeo.app.replay.replay = fail
from trailgeo.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("exception", "code", "told"),
    [
        ("RuntimeError('boom')", EXIT_INTERNAL, "trailgeo: internal error: RuntimeError: boom"),
        ("KeyboardInterrupt()", EXIT_INTERRUPTED, "trailgeo: interrupted"),
    ],
)
def test_given_an_unexpected_exception_then_one_line_and_its_exit_code_and_the_traceback_only_with_debug(
    tmp_path: Path, country_test_mmdb: Path, exception: str, code: int, told: str
) -> None:
    # Given the real CLI, with replay made to raise (the stand-in for a bug)
    script = INJECT.format(exception=exception)
    argv = ["replay", str(tmp_path), "--geoip", str(country_test_mmdb)]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *argv, *extra],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=120,
            check=False,
        )

    # When it runs without --debug: one line
    plain = run()
    assert plain.returncode == code
    line = one_error_line(plain)
    assert line.startswith(told)
    assert line.endswith("(run with --debug for the traceback)") == (code == EXIT_INTERNAL)

    # When it runs with --debug (after the command, as aws-cli takes it): the traceback, then the line
    debug = run("--debug")
    assert debug.returncode == code
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.strip().splitlines()[-1] == told


def test_given_an_error_of_the_app_or_of_aws_then_it_maps_to_its_documented_exit_code() -> None:
    def client_error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "told by AWS"}}, "DescribeTable")

    assert classify(client_error("ExpiredTokenException"))[0] == EXIT_AWS_CONFIG
    assert classify(client_error("AccessDeniedException")) == (
        EXIT_AWS,
        "DescribeTable: AccessDeniedException: told by AWS",
    )
    assert classify(ConcurrentChangeError("read version 1, now 2")) == (EXIT_FAILED, "read version 1, now 2")
    assert classify(PolicyError("--bucket 'X': bad")) == (EXIT_USAGE, "--bucket 'X': bad")
    assert classify(FileNotFoundError(2, "No such file or directory", "/nope/alerts.jsonl")) == (
        EXIT_FAILED,
        "No such file or directory: /nope/alerts.jsonl",
    )
    # Every code the CLI returns is in the --help table
    assert {EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_AWS_CONFIG, EXIT_AWS, EXIT_INTERNAL} < set(
        EXIT_CODES
    )


def test_given_an_aws_refusal_translated_by_an_operations_adapter_then_the_line_and_code_are_aws_s_own() -> (
    None
):
    # Given AWS's refusals, raw and as the operator commands' adapters raise them (the refusal their cause)
    def raw(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "told by AWS"}}, "Query")

    def translated(code: str) -> OperationsError:
        cause = raw(code)
        told = OperationsError(aws_error(cause), code)
        told.__cause__ = cause  # raise ... from cause
        return told

    # When each is classified, then the adapter's is told and coded as AWS's own
    for code in ("AccessDeniedException", "ExpiredTokenException", "ProvisionedThroughputExceededException"):
        assert classify(translated(code)) == classify(raw(code))
    assert classify(translated("AccessDeniedException")) == (
        EXIT_AWS,
        "Query: AccessDeniedException: told by AWS",
    )


def test_given_a_state_file_that_is_not_one_when_replayed_then_an_input_error_not_a_bug(
    tmp_path: Path, country_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"counters": 7}')

    code = main(["replay", str(tmp_path), "--geoip", str(country_test_mmdb), "--state", str(state)])

    assert code == EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"trailgeo: --state {state}: not a trailgeo state file")


# --- --version, --help -------------------------------------------------------------------------------


def test_given_version_then_the_package_version_is_printed_on_stdout() -> None:
    done = trailgeo("--version")

    assert (done.returncode, done.stdout, done.stderr) == (0, f"trailgeo {__version__}\n", "")
    assert __version__ == "0.1.0"


COMMANDS = ["replay", "backfill", "status", "explain", "allow", "policy"]
TOOLS_COMMANDS = ["demo", "simulate", "eval", "bench"]


@pytest.mark.parametrize(
    ("prog", "command"),
    [("trailgeo", command) for command in COMMANDS] + [("trailgeo-tools", c) for c in TOOLS_COMMANDS],
)
def test_given_a_command_when_help_is_asked_then_it_says_what_goes_to_stdout_and_stderr_with_examples(
    prog: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    entry_point = main if prog == "trailgeo" else tools_main
    with pytest.raises(SystemExit) as exited:
        entry_point([command, "--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "stdout:" in text
    assert "stderr:" in text
    examples = text.split("examples:\n", 1)[1]
    assert f"{prog} {command}" in examples or "make " in examples


@pytest.mark.parametrize("command", TOOLS_COMMANDS)
def test_given_a_tooling_command_when_given_to_trailgeo_then_it_is_unknown_and_help_names_trailgeo_tools(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the operator CLI, which the Lambda layer ships: the tooling is trailgeo-tools'
    # When a tooling command is given to it
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])

    # Then it is a usage error, and the main help says where the tooling is
    assert exited.value.code == EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "'trailgeo-tools'" in capsys.readouterr().out


def test_given_help_then_the_epilog_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])

    text = capsys.readouterr().out
    for code in EXIT_CODES:
        assert f"\n  {code:>3}  " in text


# --- policy: the pure documents -------------------------------------------------------------------------


def role_grants(bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The detector role's own S3 and KMS statements in template.yaml, for this bucket and prefix."""
    template = _template()
    if template is None:
        pytest.skip("template.yaml cannot be read here (neither PyYAML nor cfn-lint)")
    assert template is not None
    names = {"${AWS::Partition}": "aws", "${TrailBucketName}": bucket, "${TrailPrefix}": prefix}

    def resolve(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, dict) and "Ref" in value:
            return {"TrailKmsKeyArn": KEY}.get(value["Ref"], value)
        if isinstance(value, dict) and "Fn::Sub" not in value:
            return {k: resolve(v) for k, v in value.items()}
        text = sub_text(value)
        for name, given in names.items():
            text = text.replace(name, given)
        return text

    role = template["Resources"]["DetectorRole"]["Properties"]
    grants = {}
    for policy in role["Policies"]:
        for item in policy["PolicyDocument"]["Statement"]:
            for statement in branches(item):
                actions = as_list(statement["Action"])
                if {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"} & set(actions) and any(
                    bucket in r or r == KEY for r in as_list(resolve(statement["Resource"]))
                ):
                    grants[actions[0]] = {
                        "Action": actions[0],
                        "Resource": resolve(statement["Resource"]),
                        "Condition": resolve(statement.get("Condition")),
                    }
    return grants


@pytest.mark.parametrize("prefix", ["", "cloudtrail/"])
def test_given_a_role_and_a_trail_then_the_bucket_policy_grants_what_the_role_itself_asks_for(
    prefix: str,
) -> None:
    policies = Policies.of(PolicyInputs(role_arn=ROLE, bucket="org-trail", prefix=prefix, kms_key_arn=KEY))
    role = role_grants("org-trail", prefix)

    document = policies.document("bucket")

    assert document["Version"] == "2012-10-17"
    allow = [s for s in document["Statement"] if s["Effect"] == "Allow"]
    assert {s["Action"] for s in allow} == {"s3:ListBucket", "s3:GetObject"}
    for statement in allow:
        assert statement["Principal"] == {"AWS": ROLE}
        assert statement["Resource"] == role[statement["Action"]]["Resource"]
        assert statement.get("Condition") == role[statement["Action"]]["Condition"]
    assert allow[0]["Condition"] == {"StringLike": {"s3:prefix": [f"{prefix}AWSLogs/", f"{prefix}AWSLogs/*"]}}
    assert allow[1]["Resource"] == f"arn:aws:s3:::org-trail/{prefix}AWSLogs/*/CloudTrail/*"
    (deny,) = [s for s in document["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == ["arn:aws:s3:::org-trail", "arn:aws:s3:::org-trail/*"]


def test_given_a_kms_key_then_the_key_statement_allows_decrypt_only_through_s3_of_its_region() -> None:
    policies = Policies.of(PolicyInputs(role_arn=ROLE, bucket="org-trail", prefix="", kms_key_arn=KEY))
    role = role_grants("org-trail", "")["kms:Decrypt"]

    statement = policies.document("kms")

    assert statement == {
        "Sid": "TrailgeoDecryptTrailLogs",
        "Effect": "Allow",
        "Principal": {"AWS": ROLE},
        "Action": "kms:Decrypt",
        "Resource": "*",  # in a key policy: this key
        "Condition": {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}},
    }
    assert role["Resource"] == KEY
    # Narrower than the role's own condition, never wider: the cross-account call needs both.
    assert fnmatchcase("s3.eu-west-1.amazonaws.com", role["Condition"]["StringLike"]["kms:ViaService"])
    assert set(policies.document()) == {"bucket_policy", "key_policy_statement"}  # a key: both by default


@pytest.mark.parametrize(
    ("inputs", "refused"),
    [
        (PolicyInputs(ROLE, "org-trail", "logs*/"), "--prefix 'logs*/': must not contain *, ?, $"),
        (PolicyInputs(ROLE, "org-trail", "a?/"), "--prefix 'a?/'"),
        (PolicyInputs(ROLE, "org-trail", "${aws:username}/"), "--prefix '${aws:username}/'"),
        (
            PolicyInputs(
                "arn:aws:sts::111122223333:assumed-role/trailgeo-DetectorRole-1/session", "org-trail"
            ),
            "--role-arn 'arn:aws:sts::111122223333:assumed-role",
        ),
        (PolicyInputs(ROLE, "Org_Trail"), "--bucket 'Org_Trail'"),
        (
            PolicyInputs(ROLE, "org-trail", kms_key_arn="arn:aws:kms:eu-west-1:444455556666:alias/trail"),
            "not an alias",
        ),
        (
            PolicyInputs(ROLE, "org-trail", kms_key_arn=KEY.replace("arn:aws:", "arn:aws-cn:")),
            "not in the role's partition (aws)",
        ),
    ],
)
def test_given_inputs_that_would_grant_more_or_name_nothing_then_policy_refuses_naming_the_option(
    inputs: PolicyInputs, refused: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        Policies.of(inputs).document()
    assert refused in str(caught.value)


def test_given_a_trail_prefix_as_written_in_the_trail_then_it_becomes_the_stack_s_form() -> None:
    assert [normalized_prefix(p) for p in ("", "cloudtrail", "/cloudtrail/", "a/b")] == [
        "",
        "cloudtrail/",
        "cloudtrail/",
        "a/b/",
    ]
    with pytest.raises(PolicyError, match="the key policy statement needs --kms-key-arn"):
        Policies.of(PolicyInputs(ROLE, "org-trail")).document("kms")


# --- policy: the command ------------------------------------------------------------------------------


def test_given_a_role_arn_when_policy_runs_then_stdout_is_the_json_and_the_advice_is_on_stderr() -> None:
    done = trailgeo("policy", "--role-arn", ROLE, "--bucket", "org-trail", "--prefix", "cloudtrail")

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document == Policies.of(PolicyInputs(ROLE, "org-trail", "cloudtrail/")).bucket_policy()
    assert "put-bucket-policy replaces the whole policy" in done.stderr
    assert "TLS-only deny" in done.stderr


STACK_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Parameters": {
        "TrailBucketName": {"Type": "String"},
        "TrailPrefix": {"Type": "String", "Default": ""},
        "TrailKmsKeyArn": {"Type": "String", "Default": ""},
    },
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    "Outputs": {"DetectorRoleArn": {"Value": ROLE}},
}


def create_stack(session: Any, name: str, template: dict[str, Any], **parameters: str) -> None:
    session.client("cloudformation", region_name=REGION).create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def test_given_a_deployed_stack_when_policy_reads_it_then_its_role_bucket_prefix_and_key_are_used(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack with the DetectorRoleArn output and the Trail* parameters of template.yaml
    create_stack(
        aws, "trailgeo", STACK_TEMPLATE, TrailBucketName="org-trail", TrailPrefix="ct/", TrailKmsKeyArn=KEY
    )

    # When the policies are asked from the stack, one option overriding the stack's prefix
    code = main(["policy", "--stack", "trailgeo", "--region", REGION])
    stack_only = json.loads(capsys.readouterr().out)
    code_prefix = main(
        ["policy", "--stack", "trailgeo", "--region", REGION, "--prefix", "", "--kind", "bucket"]
    )
    overridden = json.loads(capsys.readouterr().out)

    # Then
    assert (code, code_prefix) == (0, 0)
    expected = Policies.of(PolicyInputs(ROLE, "org-trail", "ct/", KEY))
    assert stack_only == {
        "bucket_policy": expected.bucket_policy(),
        "key_policy_statement": expected.key_policy_statement(),
    }
    assert overridden == Policies.of(PolicyInputs(ROLE, "org-trail", "")).bucket_policy()


def test_given_a_missing_stack_or_one_without_the_role_output_when_policy_then_exit_2_saying_what_to_do(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    old = {**STACK_TEMPLATE, "Outputs": {}}
    create_stack(aws, "trailgeo-old", old, TrailBucketName="org-trail")

    assert main(["policy", "--stack", "nosuch", "--region", REGION]) == EXIT_USAGE
    missing = capsys.readouterr()
    assert main(["policy", "--stack", "trailgeo-old", "--region", REGION]) == EXIT_USAGE
    old_stack = capsys.readouterr()

    assert missing.out == old_stack.out == ""
    assert (
        missing.err
        == f"trailgeo: stack nosuch not found in {REGION}: give the trailgeo stack's name and its --region\n"
    )
    assert old_stack.err.startswith("trailgeo: stack trailgeo-old has no DetectorRoleArn output")
    assert "give --role-arn" in old_stack.err


# --- the attacker's strings on the operator's terminal ---------------------------------------------------


def test_given_cloudtrail_strings_with_terminal_controls_when_replayed_then_alert_lines_escape_them(
    tmp_path: Path, country_test_mmdb: Path
) -> None:
    # Given an attack whose ARN and user agent hold escape sequences and bidirectional overrides
    logs = tmp_path / "logs"
    trail_with_an_attack(logs, arn=TRICKY_ARN, agent=TRICKY_AGENT)

    # When replayed to stdout (a terminal, or a pipe to one)
    done = trailgeo("replay", logs, "--geoip", country_test_mmdb)

    # Then no such character reaches the screen, and the JSON still says exactly what CloudTrail said
    assert done.returncode == 0, done.stderr
    for trick in TERMINAL_TRICKS:
        assert trick not in done.stdout
    (alert,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert alert["aws"]["cloudtrail"]["user_identity"]["arn"] == TRICKY_ARN
    assert alert["user_agent"]["original"] == [TRICKY_AGENT]


def test_given_a_trail_object_under_a_key_with_terminal_controls_when_skipped_then_its_log_line_is_inert(
    tmp_path: Path, country_test_mmdb: Path
) -> None:
    # Given a copy of a bucket where someone put a bad file under a folder named with controls
    logs = tmp_path / "logs"
    trail_with_an_attack(logs)
    key = "x\x9b2J\u202e/" + delivery_key(T0 + timedelta(days=5, minutes=20), unique="HOSTILE000000002")
    write_tree(logs, {key: gzip.compress(b"{not json", mtime=0)})

    done = trailgeo("replay", logs, "--geoip", country_test_mmdb)

    assert done.returncode == 0, done.stderr
    for trick in TERMINAL_TRICKS:
        assert trick not in done.stderr
    (skipped,) = [json.loads(line) for line in done.stderr.splitlines() if "object skipped" in line]
    assert skipped["key"] == key  # escaped on the screen, the same key for a JSON reader


def test_given_a_principal_with_terminal_controls_when_status_and_explain_print_then_lines_stay_inert(
    moto_server: dict[str, str],
) -> None:
    # Given a pending alert in the outbox whose principal holds a line break and escape sequences
    from tests.test_alerts import alert_for

    session = boto3.session.Session(region_name=REGION)  # moto's server: the fixture set the endpoint
    assert session.client("dynamodb").meta.endpoint_url == moto_server["AWS_ENDPOINT_URL"]
    create_deployment(session)
    alert = alert_for([record(T0, ip=BT_IP, arn=TRICKY_ARN, agent=TRICKY_AGENT)])
    assert alert.principal == TRICKY_ARN
    DynamoOutbox(session.client("dynamodb"), TABLE).put(alert)

    # When the operator prints the status table and the alert's brief
    status = trailgeo("status", "--table", TABLE, env=moto_server)
    brief = trailgeo("explain", alert.alert_id, "--table", TABLE, env=moto_server)

    # Then no control reaches the screen and the principal's line break drew no line of its own
    assert (status.returncode, brief.returncode) == (0, 0), status.stderr + brief.stderr
    for trick in (*TERMINAL_TRICKS, "\r"):
        assert trick not in status.stdout
        assert trick not in brief.stdout
    (row,) = [line for line in status.stdout.splitlines() if line.startswith(alert.alert_id)]
    assert row.endswith("mallory\\u001b]0;owned\\u0007\\u009b2J\\u202etxt.exe\\u2028\\u000d\\nwarning: none")
    assert not any(line.startswith("warning: none") for line in status.stdout.splitlines())
    assert "\\u202etxt.exe" in brief.stdout
