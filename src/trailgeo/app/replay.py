"""Replaying a local directory of CloudTrail files through the detector, tick by tick.

The schedule is simulated: a tick every 15 minutes from the first delivery to the last
delivery plus the look-back, each tick seeing only the files delivered by then, exactly as
the scheduled Lambda would have seen them.

Continuous mode (``continuous``, the intake queue's batching window: template parameter
``Continuous``) adds the event source's invocations beside those ticks: a batch opens at the
first delivery not yet in one and is handed over a window later with every file delivered by
then, each file named by one notification, as the trail's SNS notification names it. The
15-minute ticks stay, as the schedule does: they find those files done.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trailgeo.adapters.intake import SqsEventIntake
from trailgeo.adapters.local import LocalLogSource
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.app.detect import RunOptions, RunReport, detect, detect_arrivals
from trailgeo.app.wiring import memory_dependencies
from trailgeo.core.alerts import Alert
from trailgeo.core.counters import PRINCIPAL_PARTITION_PREFIX, CounterState
from trailgeo.core.render.html_report import CountryHistory, ReportData, RunFigures, render_html_report
from trailgeo.ports import AlertSink, GeoResolver, LedgerEntry

TICK = timedelta(minutes=15)
REPLAY_BUCKET = "replay"  # the bucket a replay's notifications name (its files are a directory's)


@dataclass(slots=True)
class ReplaySummary:
    ticks: int = 0
    arrival_runs: int = 0  # of the ticks, event-driven runs (continuous mode)
    files: int = 0
    events: int = 0
    events_geolocated: int = 0
    bytes_read: int = 0
    alerts: int = 0
    alerts_suppressed: int = 0
    alerts_rolled_up: int = 0
    alerts_linked: int = 0
    keys_skipped: Counter[str] = field(default_factory=Counter)
    files_skipped: Counter[str] = field(default_factory=Counter)
    records_skipped: Counter[str] = field(default_factory=Counter)
    networks: Counter[str] = field(default_factory=Counter)  # alerts' addresses looked up in the ASN database
    seconds: float = 0.0
    window_start: datetime | None = None  # the first tick's window start, the last tick's end
    window_end: datetime | None = None

    def add(self, report: RunReport) -> None:
        self.ticks += 1
        self.arrival_runs += report.arrivals
        if self.window_start is None or report.window_start < self.window_start:
            self.window_start = report.window_start
        if self.window_end is None or report.window_end > self.window_end:
            self.window_end = report.window_end
        self.files += report.files_read
        self.events += report.events
        self.events_geolocated += report.events_geolocated
        self.bytes_read += report.bytes_read
        self.alerts += report.alerts_raised
        self.alerts_suppressed += report.alerts_suppressed
        self.alerts_rolled_up += report.alerts_rolled_up
        self.alerts_linked += report.alerts_linked
        self.files_skipped.update(report.files_skipped)
        self.records_skipped.update(report.records_skipped)
        self.networks.update(report.networks)
        self.seconds += report.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "arrival_runs": self.arrival_runs,
            "files": self.files,
            "events": self.events,
            "events_geolocated": self.events_geolocated,
            "alerts": self.alerts,
            "alerts_suppressed": self.alerts_suppressed,
            "alerts_rolled_up": self.alerts_rolled_up,
            "alerts_linked": self.alerts_linked,
            "keys_skipped": dict(self.keys_skipped),
            "files_skipped": dict(self.files_skipped),
            "records_skipped": dict(self.records_skipped),
            "networks": dict(self.networks),
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events / self.seconds) if self.seconds else 0,
        }


def floor_to_tick(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return moment - timedelta(minutes=moment.minute % 15)


def schedule(first: datetime, last: datetime, lookback: timedelta) -> list[datetime]:
    tick = floor_to_tick(first) + TICK
    end = last + lookback
    ticks = []
    while tick <= end + TICK:
        ticks.append(tick)
        tick += TICK
    return ticks


def arrival_batches(times: Sequence[datetime], window: timedelta) -> list[datetime]:
    """When the intake queue's event source invokes an event-driven run, for files delivered at
    ``times`` (sorted): a batch opens at the first delivery not yet in one and is handed over
    ``window`` later, with every delivery up to then (Lambda's ``MaximumBatchingWindowInSeconds``;
    a batch that fills up earlier, or a poller's latency, are not modelled)."""
    invocations: list[datetime] = []
    at = 0
    while at < len(times):
        closes = times[at] + window
        invocations.append(closes)
        at = bisect_right(times, closes, lo=at)
    return invocations


def _arrivals(source: LocalLogSource, since: datetime | None, until: datetime) -> SqsEventIntake:
    """The batch of notifications an event-driven run at ``until`` receives: one per file delivered
    after ``since`` (the previous batch's hand-over), CloudTrail's own shape."""
    start = since if since is not None else datetime.min.replace(tzinfo=UTC)
    objects = source.list_window(start, until).objects
    records = [
        (f"replay-{n}", json.dumps({"s3Bucket": REPLAY_BUCKET, "s3ObjectKey": [obj.key]}), "replay")
        for n, obj in enumerate(objects)
    ]
    prefix = objects[0].key[: objects[0].key.find("AWSLogs/")] if objects else ""
    return SqsEventIntake(records, REPLAY_BUCKET, prefix)


@dataclass(slots=True)
class ReplayState:
    """Frequency tables, ledger and outbox of a replay, optionally kept in a JSON file (the outbox's
    alerts with their delivery and triage records: ``trailgeo alerts --state-file`` reads them)."""

    store: MemoryFrequencyStore = field(default_factory=MemoryFrequencyStore)
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    outbox: MemoryOutbox = field(default_factory=MemoryOutbox)

    @classmethod
    def load(cls, path: Path) -> ReplayState:
        state = cls()
        if not path.exists():
            return state
        document = json.loads(path.read_text(encoding="utf-8"))
        for partition, items in document["counters"].items():
            for sort_key, fields in items.items():
                state.store.partitions[partition][sort_key] = CounterState(
                    buckets=fields["buckets"],
                    wsum=fields["wsum"],
                    first_seen=fields["first_seen"],
                    last_seen=fields["last_seen"],
                    recent_hours=tuple(fields["recent_hours"]),
                    recent_runs=tuple(fields["recent_runs"]),
                    version=fields["version"],
                    countries={cc: (b, w) for cc, (b, w) in fields.get("countries", {}).items()},
                )
        for key, entry in document["ledger"].items():
            state.ledger.entries[key] = LedgerEntry(
                key, entry["state"], entry["run_id"], None, entry["outcome"]
            )
        state.outbox.load_document(document.get("outbox", {}))  # the alerts and their triage
        return state

    def principal_countries(self) -> dict[str, list[CountryHistory]]:
        """Every principal's (and role's) countries as the history holds them after the run, keyed
        by identity (the ``P#<identity>`` partitions): hours observed, first and last seen."""
        histories: dict[str, list[CountryHistory]] = {}
        for partition, items in self.store.partitions.items():
            if not partition.startswith(PRINCIPAL_PARTITION_PREFIX):
                continue
            countries = [
                CountryHistory(sort_key[2:], s.buckets, s.first_seen, s.last_seen)
                for sort_key, s in items.items()
                if sort_key.startswith("C#")
            ]
            if countries:
                histories[partition[len(PRINCIPAL_PARTITION_PREFIX) :]] = countries
        return histories

    def save(self, path: Path) -> None:
        document = {
            "counters": {
                partition: {
                    sort_key: {
                        "buckets": s.buckets,
                        "wsum": s.wsum,
                        "first_seen": s.first_seen,
                        "last_seen": s.last_seen,
                        "recent_hours": list(s.recent_hours),
                        "recent_runs": list(s.recent_runs),
                        "version": s.version,
                        "countries": {cc: list(value) for cc, value in s.countries.items()},
                    }
                    for sort_key, s in items.items()
                }
                for partition, items in self.store.partitions.items()
            },
            "ledger": {
                key: {"state": e.state, "run_id": e.run_id, "outcome": e.outcome}
                for key, e in self.ledger.entries.items()
                if e.state == "done"
            },
            "outbox": self.outbox.to_document(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document), encoding="utf-8")


def replay(
    logs: Path,
    geo: GeoResolver,
    sink: AlertSink,
    options: RunOptions,
    state: ReplayState | None = None,
    on_tick: Callable[[RunReport], None] | None = None,
    *,
    continuous: timedelta | None = None,
) -> tuple[ReplaySummary, ReplayState]:
    """Every tick of the schedule over ``logs``; with ``continuous`` (a batching window), the
    event-driven runs too, in time order (an event-driven run before a tick at the same time)."""
    source = LocalLogSource(logs)
    # Files on a local disk: read inline, no reader threads (they only add GIL hand-offs here).
    options = replace(options, read_concurrency=1)
    state = state or ReplayState()
    summary = ReplaySummary(keys_skipped=source.skipped_keys)
    times = source.delivery_times
    if not times:
        return summary, state
    ticks = [(tick, False) for tick in schedule(times[0], times[-1], options.lookback)]
    if continuous is not None:
        ticks.extend((at, True) for at in arrival_batches(times, continuous))
        ticks.sort(key=lambda tick: (tick[0], not tick[1]))
    handed_over: datetime | None = None  # the last event-driven run's time: its batch's end
    for tick, arrivals in ticks:
        deps = memory_dependencies(
            source=source,
            geo=geo,
            sink=sink,
            store=state.store,
            ledger=state.ledger,
            outbox=state.outbox,
            clock=lambda tick=tick: tick,  # type: ignore[misc]
        )
        if arrivals:
            deps.intake = _arrivals(source, handed_over, tick)
            handed_over = tick
            report = detect_arrivals(tick, deps, options)
        else:
            report = detect(tick, deps, options)
        summary.add(report)
        if on_tick is not None:
            on_tick(report)
    return summary, state


def html_report(
    summary: ReplaySummary,
    state: ReplayState,
    alerts: Sequence[Alert],
    *,
    title: str = "trailgeo replay",
    generated_at: datetime | None = None,
) -> str:
    """The replay as one self-contained HTML page (``core.render.html_report``): its figures, its
    alerts, its skips and the principals' country histories in ``state`` after the run."""
    run = RunFigures(
        window_start=summary.window_start,
        window_end=summary.window_end,
        ticks=summary.ticks,
        files=summary.files,
        events=summary.events,
        events_geolocated=summary.events_geolocated,
        alerts_suppressed=summary.alerts_suppressed,
        alerts_rolled_up=summary.alerts_rolled_up,
        alerts_linked=summary.alerts_linked,
    )
    skips = {
        "keys": summary.keys_skipped,  # the reasons: app.runtime.REASONS
        "files": summary.files_skipped,
        "records": summary.records_skipped,
    }
    return render_html_report(
        ReportData(
            run=run,
            alerts=alerts,
            skips=skips,
            histories=state.principal_countries(),
            title=title,
            generated_at=generated_at,
        )
    )
