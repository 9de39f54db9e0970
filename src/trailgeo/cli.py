"""The ``trailgeo`` command line: ``replay``, ``backfill``, ``demo``, ``simulate``, ``eval``, and the
operator commands ``status``, ``explain`` and ``allow`` (app/operate.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from trailgeo.app.detect import RunOptions, RunReport
from trailgeo.core.scoring import ScoringPolicy


def _add_detection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--geoip", type=Path, required=True, help="MaxMind-format country or city .mmdb")
    parser.add_argument(
        "--lookback", type=int, default=120, metavar="MINUTES", help="look-back (default 120)"
    )
    parser.add_argument("--threshold", type=float, default=50.0, help="alert at score >= this (default 50)")
    parser.add_argument(
        "--learning-buckets", type=int, default=20, help="hourly buckets before a method alerts"
    )
    parser.add_argument("--learning-days", type=float, default=7.0, help="days of baseline before any alert")


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        lookback=timedelta(minutes=args.lookback),
        policy=ScoringPolicy(
            threshold=args.threshold, learning_buckets=args.learning_buckets, learning_days=args.learning_days
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailgeo", description="Unusual country for an AWS command, from CloudTrail logs."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser(
        "replay", help="run the detector over a local directory laid out like the trail bucket"
    )
    replay.add_argument("logs", type=Path, help="directory holding AWSLogs/...")
    _add_detection_options(replay)
    replay.add_argument(
        "--alerts-out", type=Path, help="write alert documents here, one per line (default stdout)"
    )
    replay.add_argument("--state", type=Path, help="JSON file to load the tables from and save them to")

    demo = commands.add_parser("demo", help="end-to-end demo through moto's AWS server on 127.0.0.1")
    demo.add_argument(
        "--geoip", type=Path, required=True, help="country .mmdb (make demo fetches DB-IP Lite)"
    )
    demo.add_argument(
        "--days", type=int, default=14, help="days of simulated history (default 14, at least 9)"
    )
    demo.add_argument("--seed", type=int, default=7)
    _add_backfill_command(commands)
    _add_evaluation_commands(commands)
    _add_operator_commands(commands)
    return parser


def _add_aws_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="AWS named profile")
    parser.add_argument("--region", help="AWS region (default: the profile's or AWS_DEFAULT_REGION)")
    parser.add_argument(
        "--output", choices=("table", "json"), default="table", help="table (default) or json"
    )


def _add_operator_commands(commands: Any) -> None:
    status = commands.add_parser(
        "status", help="the deployment's health from its table: last complete run, lag, runs, pending alerts"
    )
    status.add_argument("--table", required=True, help="the stack output FrequencyTableName")
    _add_aws_options(status)

    explain = commands.add_parser("explain", help="an alert from the outbox (kept 30 days), as a brief")
    explain.add_argument("alert_id", metavar="ALERT_ID", help="the 'Alert id:' of the email")
    explain.add_argument("--table", required=True, help="the stack output FrequencyTableName")
    _add_aws_options(explain)

    allow = commands.add_parser(
        "allow", help="add an allowed_countries entry to the tuning SSM parameter (docs/tuning.md)"
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


def _add_backfill_command(commands: Any) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="train the tables from historical CloudTrail (alerting off): a new deployment alerts on day one",
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
    backfill.add_argument("--region", help="AWS region (default: the profile's or AWS_DEFAULT_REGION)")
    backfill.add_argument("--profile", help="AWS named profile")


def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _add_evaluation_commands(commands: Any) -> None:
    """``simulate`` (write a simulated trail and its ground truth) and ``eval`` (the harness)."""
    sim = commands.add_parser("simulate", help="write a simulated organization's trail and its ground truth")
    sim.add_argument("outdir", type=Path, help="directory to write AWSLogs/... into")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--days", type=int, help="days to simulate (default: 21, or 28 with --eval)")
    sim.add_argument("--eval", action="store_true", help="the evaluation organization (simulate.eval_config)")
    sim.add_argument(
        "--truth", type=Path, help="ground-truth JSON path (default OUTDIR/../ground-truth.json)"
    )

    ev = commands.add_parser(
        "eval", help="score trailgeo, a first-seen rule and an Elastic-like rare job on simulated incidents"
    )
    ev.add_argument("--geoip", type=Path, required=True, help="country .mmdb (make eval fetches DB-IP Lite)")
    ev.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3], help="simulation seeds (default 1 2 3)"
    )
    ev.add_argument("--days", type=int, default=28, help="days per simulation (default 28)")
    ev.add_argument("--json", type=Path, help="write every figure as JSON here")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trailgeo.observability import logger

    level = logger.log_level
    logger.setLevel("WARNING")  # the CLI prints its own summary; warnings still show
    try:
        if args.command == "replay":
            return _replay(args)
        if args.command == "backfill":
            return _backfill(args)
        if args.command in ("simulate", "eval"):
            return _simulate(args) if args.command == "simulate" else _eval(args)
        if args.command in OPERATOR_COMMANDS:
            return _operate(args)
        from trailgeo.demo import run_demo

        return run_demo(geoip=args.geoip, days=args.days, seed=args.seed)
    finally:
        logger.setLevel(level)


def _backfill(args: argparse.Namespace) -> int:
    import boto3

    from trailgeo.adapters.aws import S3LogSource
    from trailgeo.adapters.dynamodb import DynamoFrequencyStore, DynamoLedger, DynamoOutbox
    from trailgeo.adapters.geoip import GeoDatabaseError, MaxMindGeoResolver
    from trailgeo.adapters.local import LocalLogSource
    from trailgeo.app.backfill import NoAlertSink, backfill
    from trailgeo.app.detect import Dependencies
    from trailgeo.app.replay import ReplayState
    from trailgeo.app.wiring import CLIENT_CONFIG
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
        source = S3LogSource(session.client("s3", config=CLIENT_CONFIG), args.bucket, args.prefix)
    state = ReplayState.load(args.state) if args.state else ReplayState()
    if args.table:
        dynamodb = session.client("dynamodb", config=CLIENT_CONFIG)
        deps = Dependencies(
            source,
            geo,
            DynamoFrequencyStore(dynamodb, args.table),
            DynamoLedger(dynamodb, args.table),
            DynamoOutbox(dynamodb, args.table),
            NoAlertSink(),
        )
    else:
        deps = Dependencies(source, geo, state.store, state.ledger, state.outbox, NoAlertSink())
    end = args.end or datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0)

    bar = ProgressBar(sys.stderr, total=args.days, unit="days")

    def progress(report: RunReport) -> None:
        detail = f"{report.window_end:%Y-%m-%d %H:%MZ}: {report.files_read:,} files, {report.events:,} events"
        bar.advance(detail, plain=f"  {detail}")

    print(f"backfill: {args.days} day(s) up to {end:%Y-%m-%dT%H:%MZ}, alerting off", file=sys.stderr)
    try:
        summary = backfill(deps, RunOptions(), end=end, days=args.days, on_day=progress)
    finally:
        bar.close()
    if args.state:
        state.save(args.state)
    print(json.dumps({"backfill": summary.as_dict(), "geoip": geo.description}, indent=2))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from trailgeo.adapters.geoip import GeoDatabaseError, MaxMindGeoResolver
    from trailgeo.adapters.local import JsonLinesAlertSink
    from trailgeo.app.replay import ReplayState, replay

    try:
        geo = MaxMindGeoResolver(args.geoip)
    except GeoDatabaseError as exc:
        print(f"trailgeo: {exc}", file=sys.stderr)
        return 2
    if not args.logs.is_dir():
        print(f"trailgeo: not a directory: {args.logs}", file=sys.stderr)
        return 2
    state = ReplayState.load(args.state) if args.state else None
    out = args.alerts_out.open("w", encoding="utf-8") if args.alerts_out else sys.stdout
    bar = ProgressBar(sys.stderr, total=None, unit="ticks")
    alerts = events = 0

    def tick(report: RunReport) -> None:
        nonlocal alerts, events
        alerts += report.alerts_raised
        events += report.events
        bar.advance(f"{report.window_end:%Y-%m-%d %H:%MZ}: {events:,} events, {alerts:,} alerts")

    try:
        summary, final = replay(args.logs, geo, JsonLinesAlertSink(out), _options(args), state, tick)
    finally:
        bar.close()
        if args.alerts_out:
            out.close()
    if args.state:
        final.save(args.state)
    print(json.dumps({"replay": summary.as_dict(), "geoip": geo.description}, indent=2), file=sys.stderr)
    return 0


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
    """``status``, ``explain``, ``allow``: one line on stderr and exit code 2 on any failure."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from trailgeo.app import operate
    from trailgeo.app.wiring import CLIENT_CONFIG

    try:
        session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
        if args.command == "allow":
            return _allow(args, session.client("ssm", config=CLIENT_CONFIG))
        dynamodb = session.client("dynamodb", config=CLIENT_CONFIG)
        if args.command == "status":
            status = operate.read_status(dynamodb, args.table, datetime.now(tz=UTC))
            _emit(args, status.as_dict(), lambda: operate.format_status(status))
        else:
            stored = operate.find_alert(dynamodb, args.table, args.alert_id)
            _emit(args, stored.as_dict(), lambda: operate.format_alert(stored))
    except operate.OperateError as exc:
        return _fail(str(exc))
    except ClientError as exc:
        return _fail(operate.aws_error(exc))
    except BotoCoreError as exc:  # no credentials, no region, unknown profile, endpoint unreachable
        return _fail(str(exc))
    return 0


def _allow(args: argparse.Namespace, ssm: Any) -> int:
    from trailgeo.app import operate

    entry = operate.allowed_entry(
        principal=args.principal,
        countries=args.country,
        until=args.until,
        note=args.note,
        accounts=args.account,
        today=datetime.now(tz=UTC).date(),
    )

    result = operate.allow(ssm, args.parameter, entry, create_as=args.type)
    _emit(args, result.as_dict(), lambda: operate.format_allow(result))
    return 0


def _emit(args: argparse.Namespace, document: dict[str, Any], table: Callable[[], str]) -> None:
    print(json.dumps(document, indent=2) if args.output == "json" else table())


def _fail(message: str) -> int:
    print(f"trailgeo: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _simulate(args: argparse.Namespace) -> int:
    from trailgeo.evaluation import EVAL_START, evaluation_config
    from trailgeo.simulate import SimulationConfig, simulate, write_ground_truth, write_tree

    try:
        if args.eval:
            config = evaluation_config(args.seed, args.days or 28)
        else:
            config = SimulationConfig(start=EVAL_START, days=args.days or 21, seed=args.seed)
    except ValueError as exc:  # e.g. too few days for the evaluation organization
        print(f"trailgeo: {exc}", file=sys.stderr)
        return 2
    sim = simulate(config)
    write_tree(sim, args.outdir)
    truth = args.truth or args.outdir.resolve().parent / "ground-truth.json"
    write_ground_truth(sim, truth)
    _progress(
        f"wrote {len(sim.files):,} objects ({sim.events_count:,} events, {config.days} days) "
        f"under {args.outdir}; ground truth: {truth}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from trailgeo.adapters.geoip import GeoDatabaseError, MaxMindGeoResolver
    from trailgeo.evaluation import format_report, run_evaluation, write_json

    try:
        geo = MaxMindGeoResolver(args.geoip)
    except GeoDatabaseError as exc:
        print(f"trailgeo: {exc}", file=sys.stderr)
        return 2
    _progress(f"GeoIP: {geo.description}")
    try:
        result = run_evaluation(geo, args.seeds, args.days, progress=_progress)
    except ValueError as exc:  # a simulation config the simulator refuses (e.g. too few days)
        print(f"trailgeo: {exc}", file=sys.stderr)
        return 2
    print(format_report(result), flush=True)
    if args.json:
        write_json(result, args.json)
        _progress(f"figures written to {args.json}")
    return 0  # a report: failed targets are printed as FAIL lines, not an error


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
