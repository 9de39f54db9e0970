"""The ``trailgeo`` command line: ``replay`` a local trail, run the ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from trailgeo.app.detect import RunOptions
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trailgeo.observability import logger

    level = logger.log_level
    logger.setLevel("WARNING")  # the CLI prints its own summary; warnings still show
    try:
        if args.command == "replay":
            return _replay(args)
        from trailgeo.demo import run_demo

        return run_demo(geoip=args.geoip, days=args.days, seed=args.seed)
    finally:
        logger.setLevel(level)


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
    try:
        summary, final = replay(args.logs, geo, JsonLinesAlertSink(out), _options(args), state)
    finally:
        if args.alerts_out:
            out.close()
    if args.state:
        final.save(args.state)
    print(json.dumps({"replay": summary.as_dict(), "geoip": geo.description}, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
