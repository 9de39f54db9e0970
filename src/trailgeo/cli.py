"""The ``trailgeo`` command line: ``replay``, ``backfill``, the operator commands ``status``,
``explain``, ``allow``, ``alerts`` (list, show, resolve, allow --from-alert) and ``report``
(app/operate/), ``policy`` (app/policy.py) and ``doctor`` (app/doctor.py). The development
tooling (``demo``, ``simulate``, ``eval``, ``bench``) is ``trailgeo-tools`` (tools/), which builds
its commands with :func:`add_command` and runs them through :func:`run_command`.

Habits of aws-cli: stdout carries only the command's data (alerts, JSON, tables); logs, progress
and errors go to stderr. A failure is one line on stderr and an exit code of :data:`EXIT_CODES`
(``--debug`` adds the traceback and DEBUG logs). Text from CloudTrail is attacker-controlled:
what reaches a terminal has its control and bidirectional characters neutralised.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from trailgeo import __version__
from trailgeo.core.alerts import SEVERITY_LEVELS
from trailgeo.core.text import escape_table

if TYPE_CHECKING:  # the app is imported by each command: --version and --help load none of it
    from botocore.config import Config

    from trailgeo.app.detect import RunOptions, RunReport
    from trailgeo.app.operate import TableStatus
    from trailgeo.app.replay import ReplayState
    from trailgeo.core.alerts import Alert
    from trailgeo.core.categories import EventScope
    from trailgeo.ports import TuningStore

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_AWS_CONFIG = 253
EXIT_AWS = 254
EXIT_INTERNAL = 255
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "not done: the tuning parameter or the alert's resolution changed meanwhile (nothing "
    "written: run again), the change was not confirmed, or a local file could not be read or written",
    EXIT_USAGE: "usage or input error: a bad option, a missing file, an unknown table, alert or stack",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_AWS_CONFIG: "AWS configuration or credentials: none found, expired or invalid, unknown "
    "profile, no region",
    EXIT_AWS: "AWS request failed: the service refused it (AccessDenied, NoSuchBucket, throttling...) "
    "or its endpoint could not be reached",
    EXIT_INTERNAL: "internal error (a bug): run again with --debug and report the traceback",
}


def _add_detection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--geoip", type=Path, required=True, help="MaxMind-format country or city .mmdb")
    parser.add_argument(
        "--asn",
        type=Path,
        help="ASN .mmdb (make geoip: .cache/geoip/asn.mmdb): alerts name their networks, hosting providers",
    )
    parser.add_argument(
        "--lookback", type=int, default=120, metavar="MINUTES", help="look-back (default 120)"
    )
    parser.add_argument("--threshold", type=float, default=50.0, help="alert at score >= this (default 50)")
    parser.add_argument(
        "--learning-buckets", type=int, default=20, help="hourly buckets before a method alerts"
    )
    parser.add_argument("--learning-days", type=float, default=7.0, help="days of baseline before any alert")
    _add_events_option(parser)


def _add_events_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        choices=("management", "all"),
        default="management",
        help=(
            "management (default, as the Events parameter): data and network activity events are "
            "skipped and counted; all: scored too, as a deployment with Events=All"
        ),
    )


def _events(args: argparse.Namespace) -> EventScope:
    from trailgeo.core.categories import EventScope

    return EventScope.ALL if args.events == "all" else EventScope.MANAGEMENT


def _options(args: argparse.Namespace) -> RunOptions:
    from trailgeo.app.detect import RunOptions
    from trailgeo.core.scoring import ScoringPolicy

    return RunOptions(
        lookback=timedelta(minutes=args.lookback),
        policy=ScoringPolicy(
            threshold=args.threshold, learning_buckets=args.learning_buckets, learning_days=args.learning_days
        ),
        events=_events(args),
    )


def exit_code_epilog(prog: str = "trailgeo") -> str:
    """The epilog of the main help: where output goes, the exit codes, how to get a command's help."""
    rows = "\n".join(
        textwrap.fill(meaning, 96, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7)
        for code, meaning in EXIT_CODES.items()
    )
    return (
        "stdout carries only each command's data (alerts, JSON, tables); logs, progress and errors go\n"
        "to stderr. A failure is one line on stderr, never a traceback (unless --debug).\n\n"
        f"exit codes:\n{rows}\n\n"
        f"'{prog} COMMAND --help' describes a command, what it prints where, and examples."
    )


def _debug_option() -> argparse.ArgumentParser:
    """``--debug`` after the command too (as aws-cli takes it anywhere); SUPPRESS keeps the global one."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return common


DEBUG_HELP = "DEBUG logs and, on an error, the full traceback (both on stderr)"


def add_command(commands: Any, name: str, *, summary: str, description: str, examples: str) -> Any:
    """A subcommand whose --help says what it does, what goes to stdout and stderr, with examples."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_debug_option()],
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailgeo",
        description="Unusual country for an AWS command, from CloudTrail logs.",
        epilog=exit_code_epilog()
        + "\nThe demo, the simulator, the evaluation and the benchmark are 'trailgeo-tools' (tools/,\n"
        "a development install: 'make demo').",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trailgeo {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    replay = add_command(
        commands,
        "replay",
        summary="run the detector over a local directory laid out like the trail bucket",
        description=(
            "Run the detector's code over a local copy of the trail (AWSLogs/..., .json.gz or .json),\n"
            "simulating the schedule: a tick every 15 minutes, each seeing the files delivered by then.\n\n"
            "stdout: the alert documents, one JSON object per line (nothing with --alerts-out).\n"
            "stderr: progress, skipped files (JSON log lines) and the summary (JSON)."
        ),
        examples=(
            "  trailgeo replay ./trail --geoip .cache/geoip/dbip-country.mmdb > alerts.jsonl\n"
            "  trailgeo replay ./trail --geoip country.mmdb --alerts-out alerts.jsonl --state state.json\n"
            "  trailgeo replay ./trail --geoip country.mmdb --alerts-out alerts.jsonl --report report.html\n"
            "  aws s3 sync s3://my-trail-bucket/AWSLogs/ ./trail/AWSLogs/\n"
            "  trailgeo replay ./trail --geoip country.mmdb | jq -r '.aws.cloudtrail.user_identity.arn'"
        ),
    )
    replay.add_argument("logs", type=Path, help="directory holding AWSLogs/...")
    _add_detection_options(replay)
    replay.add_argument(
        "--alerts-out", type=Path, help="write alert documents here, one per line (default stdout)"
    )
    replay.add_argument("--state", type=Path, help="JSON file to load the tables from and save them to")
    replay.add_argument(
        "--report",
        type=Path,
        help="write the run as one self-contained HTML page here (alerts, timeline, histories, skips)",
    )

    _add_backfill_command(commands)
    _add_operator_commands(commands)
    _add_triage_commands(commands)
    _add_policy_command(commands)
    doctor = add_command(
        commands,
        "doctor",
        summary="check a deployed stack: schedule, role, bucket, table, last run, topic, tuning",
        description=(
            "Check a deployed trailgeo stack with its outputs and the caller's credentials (read-only\n"
            "unless --publish-test): what each check does is in src/trailgeo/app/doctor.py.\n\n"
            "stdout: one line per check, OK|FAIL|SKIP NAME: DETAIL. Exit code 1 when a check fails."
        ),
        examples=(
            "  trailgeo doctor --stack trailgeo --region eu-west-1\n"
            "  trailgeo doctor --profile audit --publish-test"
        ),
    )
    doctor.add_argument("--stack", default="trailgeo", help="the stack's name (default trailgeo)")
    doctor.add_argument("--publish-test", action="store_true", help="publish a test message to the topic")
    doctor.add_argument("--profile", help="AWS named profile")
    doctor.add_argument("--region", help="the stack's region (default: the profile's or AWS_DEFAULT_REGION)")
    return parser


def _add_aws_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="AWS named profile")
    parser.add_argument("--region", help="AWS region (default: the profile's or AWS_DEFAULT_REGION)")
    parser.add_argument(
        "--output", choices=("table", "json"), default="table", help="table (default) or json"
    )


def _add_operator_commands(commands: Any) -> None:
    status = add_command(
        commands,
        "status",
        summary="the deployment's health from its table: last complete run, lag, runs, pending alerts",
        description=(
            "The deployment's health, read from its DynamoDB table: the last complete run and the lag\n"
            "behind the schedule, runs in progress or interrupted, alerts not yet published.\n\n"
            "stdout: the status (--output table, the default, or json). stderr: errors only."
        ),
        examples=(
            "  trailgeo status --table trailgeo-FrequencyTable-1ABC --region eu-west-1\n"
            "  trailgeo status --table T --profile audit --output json | jq .lag_seconds"
        ),
    )
    status.add_argument("--table", required=True, help="the stack output FrequencyTableName")
    _add_aws_options(status)

    explain = add_command(
        commands,
        "explain",
        summary="an alert from the outbox (kept 30 days), as a brief",
        description=(
            "An alert from the deployment's outbox (alerts are kept 30 days): whether it was published,\n"
            "and the investigation brief of the email.\n\n"
            "stdout: the brief (--output table, the default) or the stored alert (json).\n"
            "stderr: errors only."
        ),
        examples=(
            "  trailgeo explain 5eeb0805fb334b9dd0f6654db5408bbc --table T --region eu-west-1\n"
            "  trailgeo explain 5eeb0805fb334b9dd0f6654db5408bbc --table T --output json | jq .alert.score"
        ),
    )
    explain.add_argument("alert_id", metavar="ALERT_ID", help="the 'Alert id:' of the email")
    explain.add_argument("--table", required=True, help="the stack output FrequencyTableName")
    _add_aws_options(explain)

    allow = add_command(
        commands,
        "allow",
        summary="add an allowed_countries entry to the tuning SSM parameter (docs/tuning.md)",
        description=(
            "Append an [[allowed_countries]] entry to the tuning document in SSM (created when missing),\n"
            "validated whole before it is written; a concurrent edit is refused, never overwritten.\n\n"
            "stdout: what was written (--output table, the default, or json). stderr: errors only."
        ),
        examples=(
            "  trailgeo allow --parameter /trailgeo/tuning --principal 'arn:aws:iam::*:user/alice' \\\n"
            "      --country PT --until 2026-08-31 --note 'holiday, TICKET-123'\n"
            "  trailgeo allow --parameter /trailgeo/tuning --principal 'arn:aws:iam::*:role/ci-*' \\\n"
            "      --country DE --country FR --account 111122223333 --output json"
        ),
    )
    allow.add_argument("--parameter", required=True, help="the SSM parameter (TuningParameterName)")
    allow.add_argument(
        "--principal", required=True, help="principal ARN glob, e.g. 'arn:aws:iam::*:user/alice'"
    )
    allow.add_argument(
        "--country", required=True, action="append", help="ISO 3166-1 alpha-2 code (repeat for more)"
    )
    allow.add_argument("--until", help="last day the entry applies, YYYY-MM-DD (inclusive, UTC)")
    allow.add_argument("--note", default="", help="why (a ticket number helps whoever removes it)")
    allow.add_argument("--account", action="append", help="restrict to this 12-digit account (repeatable)")
    allow.add_argument(
        "--type",
        choices=("String", "SecureString"),
        default="String",
        help="type of a parameter created by this command (an existing one keeps its type)",
    )
    _add_aws_options(allow)


TRIAGE_COMMANDS = ("alerts", "report")


def _add_alert_source(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--table", help="the deployment's table (stack output FrequencyTableName)")
    where.add_argument(
        "--state-file", type=Path, help="a local state file (`trailgeo replay --state`) instead of a table"
    )
    _add_aws_options(parser)


def _add_triage_commands(commands: Any) -> None:
    alerts = add_command(
        commands,
        "alerts",
        summary="triage: list alerts, show one, resolve it, allowlist it (docs/investigation.md)",
        description=(
            "The triage loop over a deployment's alerts: the outbox keeps each alert 30 days after it\n"
            "went out, and a resolved alert's triage record (verdict, who, when, note) 90 days after its\n"
            "detection. 'trailgeo alerts COMMAND --help' describes each.\n\n"
            "stdout: the command's data (--output table, the default, or json). stderr: errors, hints."
        ),
        examples=(
            "  trailgeo alerts list --table T --state open --severity high --severity critical\n"
            "  trailgeo alerts show 5eeb0805fb334b9dd0f6654db5408bbc --table T\n"
            "  trailgeo alerts resolve 5eeb0805fb334b9dd0f6654db5408bbc --as expected --note INC-7 \\\n"
            "      --table T\n"
            "  trailgeo alerts allow --from-alert 5eeb0805fb334b9dd0f6654db5408bbc --table T \\\n"
            "      --parameter /trailgeo/tuning --until 2026-12-24"
        ),
    )
    actions = alerts.add_subparsers(dest="action", required=True)
    listing = add_command(
        actions,
        "list",
        summary="alerts, newest first, a page at a time",
        description=(
            "Alerts known to the deployment (the outbox's 30 days, resolved ones 90 days), newest first,\n"
            "filtered; --limit per page, and the next page with the --next token the page ends with.\n\n"
            "stdout: the page (table, or json: {alerts, matched, next}). stderr: the next page's command."
        ),
        examples=(
            "  trailgeo alerts list --table T --since 7d --state open\n"
            "  trailgeo alerts list --table T --principal '*:user/alice' --country PT --output json\n"
            "  trailgeo alerts list --state-file state.json --limit 20 --next TOKEN"
        ),
    )
    listing.add_argument(
        "--since", help="ISO 8601 date or time (UTC), or an age: 12h, 7d (default: all kept)"
    )
    listing.add_argument("--severity", action="append", choices=SEVERITY_LEVELS)
    listing.add_argument(
        "--principal", help="principal ARN glob (fnmatch, case-sensitive), e.g. '*:user/alice'"
    )
    listing.add_argument("--country", action="append", help="location: a country code (repeat for more)")
    listing.add_argument(
        "--state", action="append", choices=("open", "resolved", "attack", "expected", "false-positive")
    )
    listing.add_argument("--detector", action="append", help="a detector's name (country, city...)")
    listing.add_argument("--limit", type=int, default=50, help="alerts per page (default 50, at most 1000)")
    listing.add_argument(
        "--next", dest="next_token", metavar="TOKEN", help="the page after the one that said so"
    )
    _add_alert_source(listing)

    show = add_command(
        actions,
        "show",
        summary="one alert: its triage, the console links, the explanation and the evidence",
        description=(
            "One alert: its triage state and earlier resolutions, the CloudTrail event history and IAM\n"
            "console links, then the brief of the e-mail (who, where, evidence, why it is rare).\n\n"
            "stdout: the alert (table, or json). stderr: errors only."
        ),
        examples="  trailgeo alerts show 5eeb0805fb334b9dd0f6654db5408bbc --table T --region eu-west-1",
    )
    show.add_argument("alert_id", metavar="ALERT_ID")
    _add_alert_source(show)

    resolve = add_command(
        actions,
        "resolve",
        summary="record a verdict on an alert: attack, expected or false-positive (who and when kept)",
        description=(
            "Record the verdict on an alert with who (the caller's ARN from STS; --by or the OS user for\n"
            "a state file) and when, on its triage record, kept 90 days after the detection. Written only\n"
            "if nobody resolved it since it was read (exit 1 otherwise); an alert already resolved is\n"
            "resolved anew only with --change, and the earlier resolution stays in its history.\n\n"
            "stdout: the resolution (table, or json). stderr: errors only."
        ),
        examples=(
            "  trailgeo alerts resolve 5eeb0805fb334b9dd0f6654db5408bbc --as attack --note INC-42 --table T\n"
            "  trailgeo alerts resolve 5eeb0805fb334b9dd0f6654db5408bbc --as expected --change --table T"
        ),
    )
    resolve.add_argument("alert_id", metavar="ALERT_ID")
    resolve.add_argument(
        "--as", dest="verdict", required=True, choices=("attack", "expected", "false-positive")
    )
    resolve.add_argument("--note", default="", help="why (a ticket number, a sentence)")
    resolve.add_argument("--change", action="store_true", help="resolve an alert already resolved anew")
    resolve.add_argument("--by", help="who resolves it (a state file only; default: the OS user)")
    _add_alert_source(resolve)

    allow = add_command(
        actions,
        "allow",
        summary="propose the narrowest allowlist entry for an alert, show the diff, ask, write",
        description=(
            "For an alert resolved as expected or false-positive: the narrowest [[allowed_countries]]\n"
            "entry (its principal exactly, its country, its account, until --until: 30 days by default,\n"
            "90 at most), shown as a diff of the tuning, written once you answer y (--yes for scripts;\n"
            "without a terminal and without --yes nothing is written). A concurrent edit is refused.\n\n"
            "stdout: the diff, then what was written (table), or json. stderr: the question, errors."
        ),
        examples=(
            "  trailgeo alerts allow --from-alert 5eeb0805fb334b9dd0f6654db5408bbc --table T \\\n"
            "      --parameter /trailgeo/tuning --until 2026-12-24\n"
            "  trailgeo alerts allow --from-alert ID --state-file state.json --tuning-file tuning.toml --yes"
        ),
    )
    allow.add_argument("--from-alert", dest="alert_id", required=True, metavar="ALERT_ID")
    tuning = allow.add_mutually_exclusive_group(required=True)
    tuning.add_argument("--parameter", help="the tuning SSM parameter (TuningParameterName)")
    tuning.add_argument("--tuning-file", type=Path, help="a local tuning file (TOML or JSON) instead")
    allow.add_argument(
        "--until", help="last day the entry applies, YYYY-MM-DD (default: in 30 days; 90 at most)"
    )
    allow.add_argument("--yes", action="store_true", help="write without asking")
    allow.add_argument(
        "--type", choices=("String", "SecureString"), default="String", help="type of a parameter created"
    )
    _add_alert_source(allow)

    report = add_command(
        commands,
        "report",
        summary="precision report from the resolved alerts: states, detectors, time to resolve, noise",
        description=(
            "How the detectors did over the last --days: alerts by state, by detector and severity, the\n"
            "precision (attacks among the resolved), the median time to the first resolution, the\n"
            "principals and countries behind expected and false-positive alerts and how many alerts the\n"
            "narrowest allowlist entry for each would have saved (and attacks it would have hidden).\n"
            "--publish-metrics sends the same figures to CloudWatch (namespace trailgeo/STACK).\n\n"
            "stdout: the report (table, or json). stderr: what was published, errors."
        ),
        examples=(
            "  trailgeo report --days 30 --table T\n"
            "  trailgeo report --days 7 --table T --output json | jq .precision\n"
            "  trailgeo report --days 30 --table T --publish-metrics --stack trailgeo"
        ),
    )
    report.add_argument("--days", type=int, default=30, help="days before --end (default 30, at most 90)")
    report.add_argument("--end", type=_utc, help="end of the window, ISO 8601 (default: now)")
    report.add_argument(
        "--publish-metrics", action="store_true", help="also PutMetricData the figures (needs --stack)"
    )
    report.add_argument("--stack", help="the stack whose namespace and service the metrics go to")
    _add_alert_source(report)


def _add_backfill_command(commands: Any) -> None:
    backfill = add_command(
        commands,
        "backfill",
        summary="train the tables from historical CloudTrail (alerting off): alerts from day one",
        description=(
            "Count the history already in the trail bucket (or a local copy) into the deployment's table,\n"
            "alerting off, one day at a time, oldest first, and advance the watermark: the scheduled runs\n"
            "carry on from there. Every file is counted once, whatever runs at the same time.\n\n"
            "stdout: the summary (--output json, the default, or table).\n"
            "stderr: a progress line per day, skipped files (JSON log lines)."
        ),
        examples=(
            "  trailgeo backfill --bucket my-trail-bucket --table T --days 30 \\\n"
            "      --geoip .cache/geoip/dbip-country.mmdb --region eu-west-1 --profile audit\n"
            "  trailgeo backfill --logs ./trail --state state.json --days 14 --geoip country.mmdb \\\n"
            "      --output table"
        ),
    )
    source = backfill.add_mutually_exclusive_group(required=True)
    source.add_argument("--logs", type=Path, help="local directory laid out like the trail bucket")
    source.add_argument("--bucket", help="the trail bucket")
    backfill.add_argument("--prefix", default="", help="the trail's S3 key prefix, if any")
    state = backfill.add_mutually_exclusive_group(required=True)
    state.add_argument("--table", help="the deployment's DynamoDB table (stack output FrequencyTableName)")
    state.add_argument("--state", type=Path, help="JSON state file (as `trailgeo replay --state`)")
    backfill.add_argument("--days", type=int, required=True, help="days of history before --end to count")
    backfill.add_argument(
        "--end", type=_utc, help="end of the history, ISO 8601 (default: now, rounded down to the hour)"
    )
    backfill.add_argument("--geoip", type=Path, required=True, help="MaxMind-format country or city .mmdb")
    _add_events_option(backfill)
    backfill.add_argument("--region", help="AWS region (default: the profile's or AWS_DEFAULT_REGION)")
    backfill.add_argument("--profile", help="AWS named profile")
    backfill.add_argument(  # json by default: its summary was JSON before --output existed
        "--output", choices=("table", "json"), default="json", help="json (default) or table"
    )


def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _add_policy_command(commands: Any) -> None:
    policy = add_command(
        commands,
        "policy",
        summary="the bucket (and KMS key) policy a trail bucket in another account needs for trailgeo",
        description=(
            "For trailgeo deployed in one account (security tooling) reading a trail bucket in another\n"
            "(log archive): the bucket policy statements, and for an SSE-KMS trail the key policy\n"
            "statement, that let the detector's role (DetectorRoleArn; the fan-out workers use the same\n"
            "role) list and read <prefix>AWSLogs/ and nothing else: the same grants as the role's own\n"
            "policy. --stack reads the role, bucket, prefix and key from the deployed stack; options given\n"
            "win over the stack's values.\n\n"
            "stdout: JSON: the bucket policy document (--kind bucket), the key policy statement (kms), or\n"
            "both (all: bucket_policy and key_policy_statement; the default when a key is known).\n"
            "stderr: how to apply it (merge into the existing policies: never replace them)."
        ),
        examples=(
            "  trailgeo policy --stack trailgeo --region eu-west-1 --profile security \\\n"
            "      --kind bucket > bucket-policy.json\n"
            "  trailgeo policy --role-arn arn:aws:iam::111122223333:role/trailgeo-DetectorRole-ABC \\\n"
            "      --bucket org-trail-bucket --prefix cloudtrail/ --kind bucket\n"
            "  trailgeo policy --stack trailgeo --kind kms \\\n"
            "      --kms-key-arn arn:aws:kms:eu-west-1:444455556666:key/1a2b3c4d-...\n"
            "  trailgeo policy --stack trailgeo --kind bucket | jq '.Statement[0:2]'"
        ),
    )
    who = policy.add_mutually_exclusive_group(required=True)
    who.add_argument("--role-arn", help="the detector's role (stack output DetectorRoleArn)")
    who.add_argument("--stack", help="the trailgeo stack: its DetectorRoleArn output and Trail* parameters")
    policy.add_argument("--bucket", help="the trail bucket (default with --stack: its TrailBucketName)")
    policy.add_argument(
        "--prefix", help="the trail's S3 key prefix, may be empty (default with --stack: its TrailPrefix)"
    )
    policy.add_argument(
        "--kms-key-arn", help="the bucket's SSE-KMS key (default with --stack: its TrailKmsKeyArn)"
    )
    policy.add_argument(
        "--kind",
        choices=("bucket", "kms", "all"),
        help="what to print (default: all with a key, else bucket)",
    )
    policy.add_argument("--profile", help="AWS named profile (for --stack)")
    policy.add_argument(
        "--region", help="AWS region of the stack (default: the profile's or AWS_DEFAULT_REGION)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv), _dispatch)


def run_command(args: argparse.Namespace, dispatch: Callable[[argparse.Namespace], int]) -> int:
    """Run a parsed command as every trailgeo command runs: the logs on stderr (DEBUG ones and the
    AWS SDK's with ``--debug``), and a failure as one line on stderr and an exit code of
    :data:`EXIT_CODES`. ``args`` needs ``debug``; ``dispatch`` runs the command, returns its code."""
    debug = bool(args.debug)
    try:
        return _run(args, dispatch, debug=debug)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - where a failure becomes one line and a code
        return _report(exc, debug=debug)


def _run(args: argparse.Namespace, dispatch: Callable[[argparse.Namespace], int], *, debug: bool) -> int:
    # Importing the logger also builds Powertools' X-Ray recorder, which reads the AWS profile: a
    # wrong AWS_PROFILE fails here, inside main's guard, as one line like any configuration error.
    from trailgeo.observability import logger

    level = logger.log_level
    logger.setLevel("DEBUG" if debug else "WARNING")  # the CLI prints its own summary; warnings still show
    restore = _logs_to_stderr(logger.registered_handler, debug=debug)
    try:
        return dispatch(args)
    finally:
        restore()
        logger.setLevel(level)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "replay":
        return _replay(args)
    if args.command == "backfill":
        return _backfill(args)
    if args.command in OPERATOR_COMMANDS:
        return _operate(args)
    if args.command in TRIAGE_COMMANDS:
        return _triage(args)
    if args.command == "policy":
        return _policy(args)
    if args.command == "doctor":
        from trailgeo.app import doctor

        return doctor.main(args, out=_out, config=_client_config())
    raise AssertionError(f"no handler for the {args.command!r} command")


# --- output: stdout for data, stderr for the rest, nothing a terminal would act on -------------------

# The registry trailgeo.core.text.NEUTRALISED but tab and newline: C0, DEL and C1 controls (ESC and
# CSI start terminal commands: colours, cursor moves, window titles), zero-width, bidirectional and
# tag characters (they reorder or hide what is read), line and paragraph separators. JSON
# serializers escape C0 already; the rest only with ensure_ascii, which Powertools' logger and
# pydantic do not use.
_TERMINAL_ESCAPES = escape_table(keep="\t\n")
_ONE_LINE_ESCAPES = {**_TERMINAL_ESCAPES, ord("\t"): "\\t", ord("\n"): "\\n"}


def terminal_safe(text: str) -> str:
    """``text`` with every character of :data:`_TERMINAL_ESCAPES` written as ``\\uXXXX``: the same
    document for a JSON parser (those characters can only be inside its strings), inert on a screen."""
    return text.translate(_TERMINAL_ESCAPES)


def one_line(text: str) -> str:
    """A value for one cell or line: :func:`terminal_safe`, newlines and tabs escaped too."""
    return text.translate(_ONE_LINE_ESCAPES)


class TerminalSafeStream:
    """Writes through :func:`terminal_safe` (for log lines and tracebacks on stderr)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(terminal_safe(text))

    def flush(self) -> None:
        self.stream.flush()


def _out(text: str) -> None:
    """The command's data, on stdout."""
    print(terminal_safe(text), flush=True)


# Where the AWS SDK says which credentials it found and what it retries. Not botocore.endpoint nor
# botocore.parsers: they log request and response bodies, e.g. a SecureString tuning parameter decrypted.
_DEBUG_LOGGERS = ("botocore.credentials", "botocore.retries", "botocore.utils", "urllib3.connectionpool")


def _logs_to_stderr(handler: logging.Handler, *, debug: bool) -> Callable[[], None]:
    """Point the Powertools handler (bound to the stdout of import time) at stderr for this command,
    and with --debug add the AWS SDK's diagnostics; returns what undoes it."""
    undo: list[Callable[[], object]] = []
    if isinstance(handler, logging.StreamHandler):
        previous = handler.setStream(TerminalSafeStream(sys.stderr))
        if previous is not None:
            undo.append(lambda: handler.setStream(previous))
    if debug:
        sdk = logging.StreamHandler(TerminalSafeStream(sys.stderr))
        sdk.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in _DEBUG_LOGGERS:
            named = logging.getLogger(name)
            undo.append(partial(named.setLevel, named.level))
            undo.append(partial(named.removeHandler, sdk))
            named.addHandler(sdk)
            named.setLevel(logging.DEBUG)

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


# --- failures: one line and an exit code -----------------------------------------------------------

# Error codes by which S3, DynamoDB, SSM and CloudFormation reject the credentials themselves.
_CREDENTIAL_ERRORS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "InvalidToken",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)


def _aws_cause(exc: BaseException) -> BaseException | None:
    """The AWS SDK error behind ``exc`` (itself, or what an adapter wrapped), if any."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None or isinstance(seen, ClientError | BotoCoreError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code (:data:`EXIT_CODES`) and the one line to print for a failed command."""
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
    )
    from botocore.exceptions import ConnectionError as AwsConnectionError

    from trailgeo.adapters.geoip import GeoDatabaseError
    from trailgeo.adapters.operations import aws_error
    from trailgeo.app.operate import OperateError
    from trailgeo.app.policy import PolicyError
    from trailgeo.ports import ConcurrentChangeError

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, ConcurrentChangeError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, InputError | OperateError | PolicyError | GeoDatabaseError):
        return EXIT_USAGE, str(exc)
    cause = _aws_cause(exc)
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        code = str(error.get("Code", "error"))
        told = str(exc) if cause is not exc else aws_error(cause)
        if code in _CREDENTIAL_ERRORS:
            return EXIT_AWS_CONFIG, (
                f"{told} (the credentials are invalid or expired: "
                "`aws sts get-caller-identity` with the same profile shows which are used)"
            )
        return EXIT_AWS, told
    if cause is not None:
        told = str(exc) if cause is exc else f"{exc} ({cause})"
        if isinstance(cause, ParamValidationError):
            return EXIT_USAGE, told
        if isinstance(cause, AwsConnectionError | HTTPClientError):
            return EXIT_AWS, told
        if isinstance(cause, NoCredentialsError):
            told += " (give --profile, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        elif isinstance(cause, NoRegionError):
            told += " (give --region, or set AWS_REGION, or a region in the profile)"
        return EXIT_AWS_CONFIG, told
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return EXIT_FAILED, f"{exc.strerror or exc}{where}"
    return EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _report(exc: BaseException, *, debug: bool) -> int:
    code, message = classify(exc)
    if debug:
        traceback.print_exception(exc, file=TerminalSafeStream(sys.stderr))
    elif code == EXIT_INTERNAL:
        message += " (run with --debug for the traceback)"
    return _fail(message, code)


def _client_config() -> Config:
    """The detector's client settings (timeouts, 5 attempts); AWS_MAX_ATTEMPTS and AWS_RETRY_MODE
    win, as for aws-cli (botocore ignores them once a Config sets retries)."""
    from botocore.config import Config

    from trailgeo.app.wiring import CLIENT_CONFIG, RETRIES

    retries: dict[str, object] = dict(RETRIES)  # not CLIENT_CONFIG's: botocore rewrites it in use
    if os.environ.get("AWS_MAX_ATTEMPTS", "").isdigit():
        retries["max_attempts"] = int(os.environ["AWS_MAX_ATTEMPTS"])
    if os.environ.get("AWS_RETRY_MODE"):
        retries["mode"] = os.environ["AWS_RETRY_MODE"]
    return CLIENT_CONFIG.merge(Config(retries=retries))  # type: ignore[arg-type]


def _backfill(args: argparse.Namespace) -> int:
    import boto3

    from trailgeo.adapters.aws import S3LogSource
    from trailgeo.adapters.geoip import GeoDatabaseError, MaxMindGeoResolver
    from trailgeo.adapters.local import LocalLogSource
    from trailgeo.app.backfill import NoAlertSink, backfill
    from trailgeo.app.detect import RunOptions
    from trailgeo.app.replay import ReplayState
    from trailgeo.app.wiring import memory_dependencies, table_dependencies
    from trailgeo.ports import LogSource

    if args.days < 1:
        print("trailgeo: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        geo = MaxMindGeoResolver(args.geoip)
    except GeoDatabaseError as exc:
        print(f"trailgeo: {exc}", file=sys.stderr)
        return 2
    session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    source: LogSource
    if args.logs is not None:
        if not args.logs.is_dir():
            print(f"trailgeo: not a directory: {args.logs}", file=sys.stderr)
            return 2
        source = LocalLogSource(args.logs)
    else:
        source = S3LogSource(session.client("s3", config=_client_config()), args.bucket, args.prefix)
    state = _load_state(args.state) or ReplayState()
    if args.table:
        dynamodb = session.client("dynamodb", config=_client_config())
        deps = table_dependencies(dynamodb, args.table, source=source, geo=geo, sink=NoAlertSink())
    else:
        deps = memory_dependencies(
            source=source,
            geo=geo,
            sink=NoAlertSink(),
            store=state.store,
            ledger=state.ledger,
            outbox=state.outbox,
        )
    end = args.end or datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0)

    bar = ProgressBar(sys.stderr, total=args.days, unit="days")

    def progress(report: RunReport) -> None:
        detail = f"{report.window_end:%Y-%m-%d %H:%MZ}: {report.files_read:,} files, {report.events:,} events"
        bar.advance(detail, plain=f"  {detail}")

    print(f"backfill: {args.days} day(s) up to {end:%Y-%m-%dT%H:%MZ}, alerting off", file=sys.stderr)
    try:
        summary = backfill(deps, RunOptions(events=_events(args)), end=end, days=args.days, on_day=progress)
    finally:
        bar.close()
    if args.state:
        state.save(args.state)
    document = {"backfill": summary.as_dict(), "geoip": geo.description}
    _out(json.dumps(document, indent=2) if args.output == "json" else format_backfill(document, args))
    return 0


def format_backfill(document: dict[str, Any], args: argparse.Namespace) -> str:
    """The summary as aligned label/value lines, as ``status`` prints its table."""
    summary = document["backfill"]

    def reasons(counts: dict[str, int]) -> str:
        return ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts.items())) or "none"

    into = f"table {args.table}" if args.table else f"state file {args.state}"
    rows = [
        ("trained", into),
        (
            "from",
            f"bucket {args.bucket}, prefix {args.prefix!r}" if args.bucket else f"directory {args.logs}",
        ),
        ("days", f"{summary['days']:,}"),
        ("files", f"{summary['files']:,}"),
        ("events", f"{summary['events']:,} ({summary['events_geolocated']:,} geolocated)"),
        ("counters written", f"{summary['counters_written']:,}"),
        ("counters already applied", f"{summary['counters_already_applied']:,} (counted before: not again)"),
        ("files skipped", reasons(summary["files_skipped"])),
        ("records skipped", reasons(summary["records_skipped"])),
        ("seconds", f"{summary['seconds']:g}"),
        ("geoip", document["geoip"]),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {one_line(str(value))}" for label, value in rows)


def _load_state(path: Path | None) -> ReplayState | None:
    """A ``--state`` file, None without one; a file that is not one is an input error, not a bug."""
    from trailgeo.app.replay import ReplayState

    if path is None:
        return None
    try:
        return ReplayState.load(path)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"--state {path}: not a trailgeo state file ({type(exc).__name__}: {exc})") from None


class InputError(Exception):
    """An option or input file the command cannot use: exit code 2, the message says which."""


def _replay(args: argparse.Namespace) -> int:
    from trailgeo.adapters.geoip import GeoDatabaseError, MaxMindGeoResolver
    from trailgeo.app.replay import html_report, replay

    try:
        geo = MaxMindGeoResolver(args.geoip, args.asn)
    except GeoDatabaseError as exc:
        print(f"trailgeo: {exc}", file=sys.stderr)
        return 2
    if geo.asn_error is not None:  # asked for by name: refuse rather than run without it
        print(f"trailgeo: {geo.asn_error}", file=sys.stderr)
        return 2
    if not args.logs.is_dir():
        print(f"trailgeo: not a directory: {args.logs}", file=sys.stderr)
        return 2
    if args.report and not args.report.parent.is_dir():  # found out before the replay, not after
        print(f"trailgeo: --report: not a directory: {args.report.parent}", file=sys.stderr)
        return 2
    state = _load_state(args.state)
    out = args.alerts_out.open("w", encoding="utf-8") if args.alerts_out else sys.stdout
    bar = ProgressBar(sys.stderr, total=None, unit="ticks")
    alerts = events = 0
    raised: list[Alert] = []  # for --report

    def tick(report: RunReport) -> None:
        nonlocal alerts, events
        alerts += report.alerts_raised
        events += report.events
        if args.report:
            raised.extend(report.alerts)
        bar.advance(f"{report.window_end:%Y-%m-%d %H:%MZ}: {events:,} events, {alerts:,} alerts")

    try:
        summary, final = replay(args.logs, geo, AlertLines(out), _options(args), state, tick)
    finally:
        bar.close()
        if args.alerts_out:
            out.close()
    if args.state:
        final.save(args.state)
    if args.report:
        page = html_report(summary, final, raised, generated_at=datetime.now(UTC))
        args.report.write_text(page, encoding="utf-8")
    print(json.dumps({"replay": summary.as_dict(), "geoip": geo.description}, indent=2), file=sys.stderr)
    return 0


class AlertLines:
    """One alert document per line, through :func:`terminal_safe`: the JSON of the alert (pydantic
    leaves C1 and bidirectional characters raw), and inert when the lines reach a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0

    def publish(self, alert: Alert) -> str:
        self.stream.write(terminal_safe(alert.to_json()) + "\n")
        self.stream.flush()
        self.count += 1
        return f"line-{self.count}"


SPINNER = "|/-\\"


class ProgressBar:
    """A one-line bar on a terminal (redrawn with ``\\r``); elsewhere (a file, a pipe, CI logs) only
    the ``plain`` lines given, so logs stay readable and machine output on the stream stays parseable."""

    def __init__(self, stream: TextIO, *, total: int | None, unit: str, width: int = 24) -> None:
        self.stream = stream
        self.total = total
        self.unit = unit
        self.width = width
        self.done = 0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._drawn = False

    def render(self, detail: str) -> str:
        if self.total:
            filled = min(self.width, self.width * self.done // self.total)
            bar = "#" * filled + "." * (self.width - filled)
            head = f"[{bar}] {self.done}/{self.total} {self.unit}"
        else:
            head = f"{SPINNER[self.done % len(SPINNER)]} {self.done:,} {self.unit}"
        line = f"{head}  {detail}" if detail else head
        columns = shutil.get_terminal_size((100, 20)).columns - 1
        return line if len(line) <= columns else line[: max(columns - 1, 0)] + "…"

    def advance(self, detail: str = "", *, plain: str | None = None) -> None:
        self.done += 1
        if self.tty:
            self.stream.write("\r\x1b[K" + self.render(detail))
            self._drawn = True
        elif plain is not None:
            self.stream.write(plain + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


OPERATOR_COMMANDS = ("status", "explain", "allow")


def _operate(args: argparse.Namespace) -> int:
    """``status``, ``explain``, ``allow``; a failure propagates to :func:`main` (one line, exit code)."""
    import boto3

    from trailgeo.app import operate, wiring

    session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    if args.command == "allow":
        return _allow(args, wiring.tuning_store(session, _client_config()))
    view = wiring.operations_view(session, args.table, _client_config())
    if args.command == "status":
        status = operate.read_status(view, datetime.now(tz=UTC))
        _emit(args, status.as_dict(), lambda: operate.format_status(_one_line_principals(status)))
    else:
        stored = operate.find_alert(view, args.alert_id)
        _emit(args, stored.as_dict(), lambda: operate.format_alert(stored))
    return 0


def _one_line_principals(status: TableStatus) -> TableStatus:
    """The pending alerts' principals come from CloudTrail: a line break in one would draw a fake
    row or warning in the table; escaped, the cell stays one line."""
    pending = tuple(replace(alert, principal=one_line(alert.principal)) for alert in status.pending)
    return replace(status, pending=pending)


def _allow(args: argparse.Namespace, store: TuningStore) -> int:
    from trailgeo.app import operate

    entry = operate.allowed_entry(
        principal=args.principal,
        countries=args.country,
        until=args.until,
        note=args.note,
        accounts=args.account,
        today=datetime.now(tz=UTC).date(),
    )

    result = operate.allow(store, args.parameter, entry, create_as=args.type)
    _emit(args, result.as_dict(), lambda: operate.format_allow(result))
    return 0


def _since(value: str | None, now: datetime) -> datetime:
    """``--since``: an age (``12h``, ``7d``) or an ISO 8601 date or time (UTC unless it says)."""
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    text = value.strip()
    units = {"h": "hours", "d": "days"}
    if len(text) > 1 and text[-1] in units and text[:-1].isdigit():
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        return _utc(text)
    except ValueError:
        raise InputError(f"--since {value!r}: an age (12h, 7d) or an ISO 8601 date or time") from None


def _triage(args: argparse.Namespace) -> int:
    """``alerts`` and ``report``: over a deployment's table or a local state file."""
    import boto3

    from trailgeo.app import wiring
    from trailgeo.app.replay import ReplayState

    session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    if args.state_file is not None:
        from trailgeo.adapters.memory import MemoryOperations

        if not args.state_file.is_file():
            raise InputError(
                f"--state-file {args.state_file}: no such file (`trailgeo replay --state` writes one)"
            )
        state = _load_state(args.state_file) or ReplayState()
        view: Any = MemoryOperations(state.ledger, state.outbox, table=str(args.state_file))
    else:
        state, view = None, wiring.operations_view(session, args.table, _client_config())
    now = datetime.now(tz=UTC)
    if args.command == "report":
        return _report_command(args, view, session, now)
    if args.action == "list":
        return _list_alerts(args, view, now)
    if args.action == "show":
        from trailgeo.app.operate import alerts

        shown = alerts.show_alert(view, args.alert_id, region=session.region_name or "us-east-1")
        _emit(args, shown.as_dict(), lambda: alerts.format_shown(shown))
        return 0
    if args.action == "resolve":
        code = _resolve(args, view, session, now, local=state is not None)
        if state is not None:  # the state file keeps the new triage record
            state.save(args.state_file)
        return code
    return _allow_from_alert(args, view, session, now)


def _list_alerts(args: argparse.Namespace, view: Any, now: datetime) -> int:
    from trailgeo.app.operate import alerts

    wanted = alerts.alert_filter(
        since=_since(args.since, now),
        severities=args.severity or (),
        principal=args.principal,
        countries=args.country or (),
        states=args.state or (),
        detectors=args.detector or (),
    )
    page = alerts.list_alerts(view, wanted, limit=args.limit, next_token=args.next_token)
    _emit(args, page.as_dict(), lambda: alerts.format_alert_page(page))
    if page.next_token and args.output == "table":
        _progress(f"{page.matched} alerts match; the next page: add --next {page.next_token}")
    return 0


def _resolve(args: argparse.Namespace, view: Any, session: Any, now: datetime, *, local: bool) -> int:
    from trailgeo.app.operate import alerts

    if local:
        import getpass

        by = args.by or getpass.getuser()
    elif args.by is not None:
        raise InputError(
            "--by: only for a state file; with --table the resolution is signed by your credentials"
        )
    else:
        from trailgeo.adapters.operations import caller_arn

        by = caller_arn(session.client("sts", config=_client_config()))
    result = alerts.resolve(
        view, args.alert_id, args.verdict, by=by, now=now, note=args.note, change=args.change
    )
    _emit(args, result.as_dict(), lambda: alerts.format_resolved(result))
    return 0


def _allow_from_alert(args: argparse.Namespace, view: Any, session: Any, now: datetime) -> int:
    from trailgeo.app import operate, wiring
    from trailgeo.app.operate import alerts
    from trailgeo.ports import FILE_TYPE

    store: TuningStore
    if args.tuning_file is not None:
        from trailgeo.adapters.local_tuning import FileTuningStore

        store, name = FileTuningStore(), str(args.tuning_file)
    else:
        store, name = wiring.tuning_store(session, _client_config()), args.parameter
    create_as = FILE_TYPE if args.tuning_file is not None else args.type
    proposal = alerts.propose_allow(
        view, store, name, args.alert_id, until=args.until, today=now.date(), create_as=create_as
    )
    if args.output == "table":
        _out(f"{proposal.diff}\n")

    def confirm(_: alerts.AllowProposal) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise InputError("not written: standard input is no terminal to ask on; give --yes to write it")
        print(f"Write this to {proposal.current.label}? [y/N] ", end="", file=sys.stderr, flush=True)
        return sys.stdin.readline().strip().lower() in {"y", "yes"}

    result = alerts.allow_from_alert(store, proposal, confirm)
    if args.output == "json":
        _out(json.dumps({**proposal.as_dict(), "written": result.as_dict() if result else None}, indent=2))
    elif result is not None:
        _out(operate.format_allow(result, lines=False))  # the diff showed them
    if result is None:
        return _fail("not written (answered no)", EXIT_FAILED)
    return 0


def _report_command(args: argparse.Namespace, view: Any, session: Any, now: datetime) -> int:
    from trailgeo.app.operate import report

    if args.publish_metrics and not args.stack:
        raise InputError(
            "--publish-metrics: give --stack, whose namespace (trailgeo/STACK) the metrics go to"
        )
    built = report.build_report(view, days=args.days, end=args.end or now)
    _emit(args, built.as_dict(), lambda: report.format_report(built))
    if args.publish_metrics:
        from trailgeo.adapters.operations import CloudWatchMetrics

        points = report.report_metrics(built)
        namespace = f"trailgeo/{args.stack}"
        publisher = CloudWatchMetrics(
            session.client("cloudwatch", config=_client_config()), namespace, args.stack
        )
        publisher.publish(points, built.end)
        _progress(f"published {len(points)} data points to CloudWatch namespace {namespace}")
    return 0


def _emit(args: argparse.Namespace, document: dict[str, Any], table: Callable[[], str]) -> None:
    _out(json.dumps(document, indent=2) if args.output == "json" else table())


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"trailgeo: {one_line(' '.join(message.split()))}", file=sys.stderr, flush=True)
    return code


def _policy(args: argparse.Namespace) -> int:
    """``policy``: the JSON on stdout, how to apply it on stderr."""
    from trailgeo.app.policy import Policies, PolicyError, PolicyInputs, stack_inputs

    given = PolicyInputs(
        role_arn=args.role_arn, bucket=args.bucket, prefix=args.prefix, kms_key_arn=args.kms_key_arn
    )
    if args.stack:
        import boto3
        from botocore.exceptions import ClientError

        session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
        cloudformation = session.client("cloudformation", config=_client_config())
        try:
            stacks = cloudformation.describe_stacks(StackName=args.stack)["Stacks"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "ValidationError" and "does not exist" in str(exc):  # CloudFormation's not-found
                raise PolicyError(
                    f"stack {args.stack} not found in {cloudformation.meta.region_name}: "
                    "give the trailgeo stack's name and its --region"
                ) from None
            raise
        given = given.completed_by(stack_inputs(stacks[0]))
    policies = Policies.of(given)
    document = policies.document(args.kind)
    for note in policies.notes(args.kind):
        _progress(f"note: {note}")
    _out(json.dumps(document, indent=2))
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
