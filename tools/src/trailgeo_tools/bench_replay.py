"""Per-file cost: ``trailgeo replay`` against a naive single-pass first-seen script over the same
files, on two shapes (a big-file corpus and an organization-shaped corpus of many small files), with
per-file and per-event costs and the share of each stage of the replay.

* **naive first-seen** (:func:`naive_first_seen`): what a first script does: stdlib ``gzip`` and
  ``json``, the country of every record's ``sourceIPAddress`` from the same MaxMind database
  (``maxminddb``, its C reader, one lookup a record), and a dict of the (method, country) pairs seen
  with their first time; a new pair is its "alert". No ledger, no history, no hours, no principals.
* **replay**: :func:`trailgeo.app.replay.replay`, one detection run per 15-minute tick (memory
  state), as ``trailgeo replay`` runs it.
* **stages** (:func:`replay_stages`): the same replay once more with a timer around each stage's
  functions: list/plan (the source's ``list_window``, ``plan_batches``: ledger status, run records,
  claims), read (the source's ``read``), decode (inflate and msgspec decode), aggregate (a group of
  decoded files added to the run's aggregate), score (history loaded, scored, alerts queued), commit
  (counters committed, files marked done, the outbox's pending alerts, the watermark); what is left
  is "other": the counters and groups derived from the cells (``derive``, run first when the batch's
  counters are asked for, between aggregate and score), the source's index of the directory, each
  run's report and the tick loop. The timers add a few microseconds a call: the
  shares come from this pass, the times from the untimed one.

Each measurement runs in a fresh child process pinned to the benchmark's core.
``python -m trailgeo_tools.bench_replay naive --geoip DB DIR`` runs the naive script alone (to time
it as a whole process beside ``trailgeo replay DIR``); ``... shape --geoip DB [--repeat N] [--core C]
DIR`` measures one shape as ``make bench`` does (its paired passes, then the stages).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trailgeo_tools.bench_common import discard_stdout, peak_rss_mb, pin

TARGET_RATIO = 2.0  # replay at least twice as fast as the naive script (issue 16)
STAGES = ("list/plan", "read", "decode", "aggregate", "score", "commit", "other")


@dataclass(slots=True)
class NaiveResult:
    files: int
    events: int
    pairs: int  # distinct (method, country) pairs: the script's "alerts"
    seconds: float
    peak_rss_mb: float = 0.0


def naive_first_seen(root: str, geoip: str) -> NaiveResult:
    """The naive script over the CloudTrail files under ``root``, timed from its directory walk (as
    the replay's time includes its own) to its last record."""
    import gzip
    import json

    import maxminddb

    reader = maxminddb.open_database(geoip, maxminddb.MODE_AUTO)
    seen: dict[tuple[str, str], str] = {}
    events = 0
    started = time.perf_counter()
    paths = sorted(str(p) for p in Path(root).rglob("*.json.gz") if "/CloudTrail/" in str(p))
    for path in paths:
        with open(path, "rb") as handle:  # noqa: PTH123 - what a first script writes
            document = json.loads(gzip.decompress(handle.read()))
        for record in document["Records"]:
            events += 1
            try:
                found: Any = reader.get(record.get("sourceIPAddress") or "")
            except ValueError:  # not an address: "AWS Internal", service host names
                continue
            if not isinstance(found, dict):
                continue
            country = found.get("country_code") or (found.get("country") or {}).get("iso_code")
            if not country:
                continue
            pair = (f"{record.get('eventSource')}:{record.get('eventName')}", country)
            if pair not in seen:
                seen[pair] = record.get("eventTime") or ""
    seconds = time.perf_counter() - started
    return NaiveResult(files=len(paths), events=events, pairs=len(seen), seconds=seconds)


def measure_naive_first_seen(root: str, geoip: str, core: int | None) -> NaiveResult:
    pin(core)
    result = naive_first_seen(root, geoip)
    result.peak_rss_mb = peak_rss_mb()
    return result


# ------------------------------------------------------------------------------------------------
# The replay's stages
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class StageTimes:
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    total: float = 0.0  # the whole replay, timers included

    def shares(self) -> dict[str, float]:
        timed = {stage: self.seconds[stage] for stage in STAGES if stage != "other"}
        timed["other"] = max(0.0, self.total - sum(timed.values()))
        return {stage: value / self.total if self.total else 0.0 for stage, value in timed.items()}


def _timed(times: StageTimes, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.perf_counter

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            times.seconds[stage] += clock() - started
            times.calls[stage] += 1

    return wrapper


def _timed_generator(times: StageTimes, stage: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    """A generator's own time (each ``next``), not the time its consumer spends between them."""
    clock = time.perf_counter

    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        iterator = fn(*args, **kwargs)
        while True:
            started = clock()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                times.seconds[stage] += clock() - started
            yield item

    return wrapper


def instrument(times: StageTimes) -> None:
    """Timers around each stage's functions, in this process (a benchmark child)."""
    from trailgeo.adapters.local import LocalLogSource
    from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger
    from trailgeo.app.detect import ingest, run

    patches: list[tuple[Any, str, str, Callable[..., Any]]] = [
        (LocalLogSource, "list_window", "list/plan", _timed),
        (run, "plan_batches", "list/plan", _timed_generator),
        (LocalLogSource, "read", "read", _timed),
        (ingest, "decompress", "decode", _timed),
        (ingest, "decode_trail_file", "decode", _timed),
        (ingest, "_aggregate_files", "aggregate", _timed),
        (MemoryFrequencyStore, "load", "score", _timed),
        (run, "score_and_raise", "score", _timed),
        (MemoryFrequencyStore, "commit", "commit", _timed),
        (MemoryLedger, "complete", "commit", _timed),
        (MemoryLedger, "advance_watermark", "commit", _timed),
        (run, "publish_pending", "commit", _timed),
    ]
    for owner, name, stage, wrap in patches:
        setattr(owner, name, wrap(times, stage, getattr(owner, name)))


def replay_stages(root: str, geoip: str, core: int | None) -> StageTimes:
    """The replay with a timer around each stage (see the module's docstring)."""
    import io

    from trailgeo.adapters.geoip import MaxMindGeoResolver
    from trailgeo.adapters.local import JsonLinesAlertSink
    from trailgeo.app.detect import RunOptions
    from trailgeo.app.replay import replay

    pin(core)
    discard_stdout()
    times = StageTimes()
    instrument(times)
    geo = MaxMindGeoResolver(Path(geoip))
    started = time.perf_counter()
    replay(Path(root), geo, JsonLinesAlertSink(io.StringIO()), RunOptions())
    times.total = time.perf_counter() - started
    return times


# ------------------------------------------------------------------------------------------------
# One shape: naive, replay (best of ``repeat``), stages
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class ShapeReport:
    name: str
    files: int
    events: int
    naive: list[NaiveResult] = field(default_factory=list)
    replay_seconds: list[float] = field(default_factory=list)
    replay_events: int = 0
    replay_rss_mb: float = 0.0
    stages: StageTimes | None = None

    @property
    def ratio(self) -> float:
        """Paired: naive seconds / replay seconds, pass by pass; the median of the pairs."""
        pairs = sorted(n.seconds / r for n, r in zip(self.naive, self.replay_seconds, strict=True))
        return pairs[len(pairs) // 2] if pairs else 0.0

    @property
    def ratios(self) -> list[float]:
        return [n.seconds / r for n, r in zip(self.naive, self.replay_seconds, strict=True)]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def measure_shape(
    name: str, root: Path, files: int, geoip: Path, core: int | None, repeat: int
) -> ShapeReport:
    from trailgeo_tools.bench_common import in_child
    from trailgeo_tools.bench_scale import measure_replay

    report = ShapeReport(name=name, files=files, events=0)
    for _ in range(repeat):  # interleaved: naive, replay, naive, replay, ...
        report.naive.append(in_child(measure_naive_first_seen, str(root), str(geoip), core))
        replayed = in_child(measure_replay, str(root), str(geoip), core)
        report.replay_seconds.append(replayed.seconds)
        report.replay_events = replayed.events
        report.replay_rss_mb = max(report.replay_rss_mb, replayed.peak_rss_mb)
    report.events = report.naive[0].events
    if any(n.files != files for n in report.naive) or replayed.files != files:
        raise RuntimeError(
            f"{root}: {files} log files, the naive script read {report.naive[0].files}, "
            f"replay {replayed.files}"
        )
    report.stages = in_child(replay_stages, str(root), str(geoip), core)
    return report


def shape_lines(s: ShapeReport) -> list[str]:
    naive = _median([n.seconds for n in s.naive])
    replay = _median(s.replay_seconds)
    spread = ", ".join(f"{r:.2f}" for r in sorted(s.ratios))
    lines = [
        f"  {s.name}: {s.files:,} files, {s.events:,} events ({s.events / max(1, s.files):,.1f} a file)",
        f"    naive first-seen  {naive:8.2f} s  {naive / s.files * 1e6:8.1f} us a file  "
        f"{naive / max(1, s.events) * 1e6:6.2f} us an event  ({s.naive[0].pairs:,} pairs first seen; passes "
        + " ".join(f"{n.seconds:.2f}" for n in s.naive)
        + ")",
        f"    trailgeo replay   {replay:8.2f} s  {replay / s.files * 1e6:8.1f} us a file  "
        f"{replay / max(1, s.events) * 1e6:6.2f} us an event  (peak RSS {s.replay_rss_mb:.0f} MB; passes "
        + " ".join(f"{r:.2f}" for r in s.replay_seconds)
        + ")",
        f"    replay / naive speed: {s.ratio:.2f}x (median of {len(s.ratios)} paired passes: {spread})",
    ]
    if s.stages is not None:
        shares = s.stages.shares()
        lines.append(
            "    replay's stages (timed pass, "
            f"{s.stages.total:.2f} s): " + ", ".join(f"{stage} {shares[stage]:.0%}" for stage in STAGES)
        )
        lines.append(
            "    per file: "
            + ", ".join(
                f"{stage} {shares[stage] * s.stages.total / s.files * 1e6:.1f} us" for stage in STAGES
            )
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trailgeo_tools.bench_replay")
    sub = parser.add_subparsers(dest="command", required=True)
    naive = sub.add_parser("naive", help="the naive first-seen script over a directory's log files")
    naive.add_argument("--geoip", required=True)
    naive.add_argument("logs", type=Path)
    shape = sub.add_parser(
        "shape", help="one shape as `make bench` measures it: naive and replay paired, then the stages"
    )
    shape.add_argument("--geoip", required=True, type=Path)
    shape.add_argument("--repeat", type=int, default=3, help="interleaved pairs (default 3)")
    shape.add_argument("--core", type=int, default=None, help="the CPU each child is pinned to")
    shape.add_argument("logs", type=Path)
    args = parser.parse_args(argv)
    if args.command == "shape":
        return _shape(args.logs, args.geoip.resolve(), args.repeat, args.core)
    result = naive_first_seen(str(args.logs), args.geoip)
    print(  # noqa: T201 - a command-line report
        f"naive first-seen: {result.files:,} files, {result.events:,} events, {result.pairs:,} pairs "
        f"first seen in {result.seconds:.2f} s"
    )
    return 0


def _shape(logs: Path, geoip: Path, repeat: int, core: int | None) -> int:
    from trailgeo_tools.bench import log_paths, warm_up

    paths = log_paths(logs)
    warm_up(paths, geoip)
    report = measure_shape(str(logs), logs, len(paths), geoip, core, repeat)
    for line in shape_lines(report):
        print(line)  # noqa: T201 - a command-line report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["TARGET_RATIO", "ShapeReport", "discard_stdout", "measure_shape", "shape_lines"]
