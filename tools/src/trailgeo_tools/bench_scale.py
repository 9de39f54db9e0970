"""Benchmark measurements of scale: the replay of a 3-week history, and fan-out mode's costs.

Both run in a child process pinned to the benchmark's core, like every measurement of
:mod:`trailgeo_tools.bench`, and are printed by it:

* **replay**: ``trailgeo replay``'s code (:func:`trailgeo.app.replay.replay`, one run per
  15-minute tick, memory state) over a simulated 3-week organization history of about 750,000
  events in about 46,000 CloudTrail files, generated once and kept beside the other corpora.
* **fan-out**: the 15-minute window corpus through fan-out mode with memory adapters: the planner,
  then every task one after the other on the one core (in a deployment they run side by side in
  their own Lambdas), then the reduce. It gives what a capacity model needs: a worker's events/s
  and the reduce's own cost (merging the partial aggregates), and checks that the counters equal
  those of one single-Lambda run over the same files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from trailgeo_tools.bench_common import Corpus, DiscardSink, cached_corpus, discard_stdout, peak_rss_mb, pin

REPLAY_TARGET_SECONDS = 30.0
REPLAY_VERSION = 2  # bump when the recipe or the marker's fields change: a cached corpus is rebuilt
# A 3-week organization history: 160 people and 6 automation roles in 6 accounts x 2 regions,
# 5-minute delivery files (CloudTrail delivers about every 5 minutes per account and region).
REPLAY_CONFIG: dict[str, Any] = {
    "start": "2026-03-02T00:00:00+00:00",
    "days": 21,
    "seed": 7,
    "humans": 160,
    "automation_roles": 6,
    "accounts": [
        "111122223333",
        "444455556666",
        "777788889999",
        "123412341234",
        "555566667777",
        "888899990000",
    ],
    "regions": ["us-east-1", "eu-west-1"],
    "file_minutes": 5,
    "digests": False,
}
FILES_PER_TASK = 200  # the template's default


def replay_key() -> str:
    """Changes with the recipe and with ``simulate.py`` (a changed simulator rebuilds the corpus)."""
    import hashlib

    import trailgeo_tools.simulate

    digest = hashlib.sha256(json.dumps({"version": REPLAY_VERSION, **REPLAY_CONFIG}, sort_keys=True).encode())
    digest.update(Path(trailgeo_tools.simulate.__file__).read_bytes())
    return digest.hexdigest()[:16]


def prepare_replay_corpus(workdir: Path, out: Callable[[str], None]) -> Corpus:
    """The 3-week corpus under ``workdir/replay``, generated once and reused after."""
    return cached_corpus(workdir, "replay", replay_key(), "the 3-week replay corpus", out, _generate_replay)


def _generate_replay(root: str) -> dict[str, Any]:
    from trailgeo_tools.simulate import SimulationConfig, simulate, write_tree

    config = dict(REPLAY_CONFIG)
    started = time.perf_counter()
    simulation_config = SimulationConfig(
        start=datetime.fromisoformat(config.pop("start")),
        accounts=tuple(config.pop("accounts")),
        regions=tuple(config.pop("regions")),
        **config,
    )
    sim = simulate(simulation_config)
    write_tree(sim, Path(root))
    return {
        "config": simulation_config.as_json(),
        "events": sim.events_count,
        "log_files": len(sim.log_files),
        "gzip_bytes": sum(len(f.body) for f in sim.log_files),
        "generated_seconds": round(time.perf_counter() - started, 1),
    }


@dataclass(slots=True)
class ReplayMeasurement:
    events: int
    files: int
    runs: int
    alerts: int
    seconds: float
    peak_rss_mb: float


def measure_replay(root: str, geoip: str, core: int | None) -> ReplayMeasurement:
    """``replay`` over the whole history, one run per 15-minute tick, default options."""
    import io

    from trailgeo.adapters.geoip import MaxMindGeoResolver
    from trailgeo.adapters.local import JsonLinesAlertSink
    from trailgeo.app.detect import RunOptions
    from trailgeo.app.replay import replay

    pin(core)
    discard_stdout()
    geo = MaxMindGeoResolver(Path(geoip))
    started = time.perf_counter()
    summary, _ = replay(Path(root), geo, JsonLinesAlertSink(io.StringIO()), RunOptions())
    seconds = time.perf_counter() - started
    return ReplayMeasurement(
        events=summary.events,
        files=summary.files,
        runs=summary.ticks,
        alerts=summary.alerts,
        seconds=seconds,
        peak_rss_mb=peak_rss_mb(),
    )


@dataclass(slots=True)
class FanoutMeasurement:
    events: int
    files: int
    tasks: int
    plan_seconds: float
    task_seconds: list[float] = field(default_factory=list)
    merge_seconds: float = 0.0  # the reduce's own work: reading and merging every partial
    finish_seconds: float = 0.0  # score, outbox, commit, ledger: what a single Lambda does too
    partial_bytes: int = 0
    peak_rss_mb: float = 0.0
    counters_equal: bool = False
    counters: int = 0

    @property
    def task_events_per_second(self) -> float:
        return self.events / sum(self.task_seconds) if self.task_seconds else 0.0


def measure_fanout(root: str, geoip: str, core: int | None, *, quiet: bool = True) -> FanoutMeasurement:
    """The window corpus through fan-out mode (memory adapters), tasks one after the other, then a
    single-Lambda run over the same files for the comparison of the counters."""
    from trailgeo.adapters.geoip import MaxMindGeoResolver
    from trailgeo.adapters.local import LocalLogSource
    from trailgeo.adapters.memory import (
        MemoryFanoutTracker,
        MemoryPartialStore,
        MemoryTaskQueue,
    )
    from trailgeo.app import fanout as fan
    from trailgeo.app.detect import Dependencies, RunOptions, detect
    from trailgeo.app.wiring import memory_dependencies
    from trailgeo.core.records import gc_paused

    pin(core)
    if quiet:
        discard_stdout()
    source = LocalLogSource(Path(root))
    geo = MaxMindGeoResolver(Path(geoip))
    times = source.delivery_times
    end = times[-1]
    options = RunOptions(lookback=end - times[0] + timedelta(hours=1), batch_files=len(times) + 1)

    def deps() -> Dependencies:
        return memory_dependencies(source=source, geo=geo, sink=DiscardSink(), clock=lambda: end)

    fanned = deps()
    partials = MemoryPartialStore()
    fanout = fan.Fanout(MemoryTaskQueue(), partials, MemoryFanoutTracker(), files_per_task=FILES_PER_TASK)
    started = time.perf_counter()
    fan.plan(end, fanned, options, fanout)
    plan_seconds = time.perf_counter() - started
    tasks = fanout.queue.drain()  # type: ignore[attr-defined]
    measurement = FanoutMeasurement(events=0, files=0, tasks=len(tasks), plan_seconds=plan_seconds)
    for task in tasks[:-1]:
        started = time.perf_counter()
        result = fan.run_task(task, fanned, options, fanout)
        measurement.task_seconds.append(time.perf_counter() - started)
        measurement.events += result.events
        measurement.files += result.files_read
    # The last task and the reduce it would trigger are timed apart: the reduce is held (as if
    # another invocation had it), then done here with fan.reduce_batch's own steps.
    last = tasks[-1]
    fanout.tracker.reducers[last.run_id] = ("benchmark", end + timedelta(days=1))  # type: ignore[attr-defined]
    started = time.perf_counter()
    fan.run_task(last, fanned, options, fanout)
    measurement.task_seconds.append(time.perf_counter() - started)
    measurement.partial_bytes = sum(len(data) for data in partials.objects.values())
    with gc_paused():  # as fan.reduce_batch does, until the merged aggregate is dropped
        _measure_reduce(last, fanned, options, partials, measurement)

    single = deps()
    detect(end, single, options)
    single_counters = _counters(single.store)
    measurement.counters = len(single_counters)
    measurement.counters_equal = _counters(fanned.store) == single_counters
    return measurement


def _measure_reduce(
    last: Any, deps: Any, options: Any, partials: Any, measurement: FanoutMeasurement
) -> None:
    """The reduce, with fan.reduce_batch's own steps, timed apart: merge (and derive), then finish."""
    from trailgeo.app import fanout as fan
    from trailgeo.app.detect import finish_batch

    started = time.perf_counter()
    aggregate, outcomes, report = fan.merge_partials(last, deps, options, partials)
    aggregate.counters  # noqa: B018 - the derivation is part of the reduce's own work
    measurement.merge_seconds = time.perf_counter() - started
    measurement.events = aggregate.events
    measurement.files = len(outcomes)
    started = time.perf_counter()
    finish_batch(aggregate, outcomes, last.run_id, last.scheduled_at, deps, options, report)
    measurement.finish_seconds = time.perf_counter() - started
    measurement.peak_rss_mb = peak_rss_mb()


def _counters(store: Any) -> dict[tuple[str, str], tuple[int, float, str | None, str | None]]:
    return {
        (partition, sort_key): (state.buckets, round(state.wsum, 9), state.first_seen, state.last_seen)
        for partition, items in store.partitions.items()
        for sort_key, state in items.items()
    }


def replay_lines(m: ReplayMeasurement, corpus: Corpus) -> list[str]:
    origin = "reused" if corpus.reused else f"generated in {corpus.generated_seconds:.0f} s"
    described = (
        f"  corpus {corpus.root} ({origin}): {corpus.events:,} events in {corpus.log_files:,} log files, "
        f"{REPLAY_CONFIG['days']} simulated days, {REPLAY_CONFIG['humans']} humans, "
        f"{len(REPLAY_CONFIG['accounts'])} accounts x {len(REPLAY_CONFIG['regions'])} regions"
    )
    replayed = (
        f"  replay: {m.runs:,} runs (one per 15 minutes), {m.files:,} files, {m.events:,} events, "
        f"{m.alerts} alerts in {m.seconds:.1f} s ({m.events / max(m.seconds, 1e-9):,.0f} events/s), "
        f"peak RSS {m.peak_rss_mb:.0f} MB"
    )
    return [described, replayed]


def fanout_lines(m: FanoutMeasurement) -> list[str]:
    tasks = sorted(m.task_seconds)
    median = tasks[len(tasks) // 2] if tasks else 0.0
    workers = (
        f"  fan-out over the window: {m.tasks} tasks of up to {FILES_PER_TASK} files, planned in "
        f"{m.plan_seconds:.2f} s; tasks {sum(tasks):.2f} s in all (median {median:.2f} s, longest "
        f"{max(tasks, default=0.0):.2f} s): {m.task_events_per_second:,.0f} events/s per worker"
    )
    reduce = (
        f"  reduce: merge {m.tasks} partials ({m.partial_bytes / 1e6:,.1f} MB) {m.merge_seconds:.2f} s, "
        f"then score and commit {m.finish_seconds:.2f} s (memory store); peak RSS {m.peak_rss_mb:.0f} MB"
    )
    equal = (
        "  counters equal to one single-Lambda run over the same files: "
        f"{'yes' if m.counters_equal else 'NO (a correctness failure)'} ({m.counters:,} counters)"
    )
    return [workers, reduce, equal]
