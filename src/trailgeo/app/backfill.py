"""Training the tables from historical CloudTrail, so that a new deployment is useful on day one.

The very detection run the schedule makes, with alerting off and one run per day of history:
files are claimed, counted once (the ledger), and the watermark advances, so the scheduled runs
that follow carry on where the backfill stopped, and a backfill interrupted half-way resumes
without counting a file twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect
from trailgeo.core.alerts import Alert
from trailgeo.ports import PublishError

DAY = timedelta(days=1)


class NoAlertSink:
    """A backfill never publishes: alerting is off. Refuses loudly if asked anyway."""

    def publish(self, alert: Alert) -> str:
        raise PublishError(f"backfill does not publish alerts (alert {alert.alert_id})")


@dataclass(slots=True)
class BackfillSummary:
    days: int = 0
    files: int = 0
    events: int = 0
    events_geolocated: int = 0
    counters_written: int = 0
    counters_already_applied: int = 0
    files_skipped: Counter[str] = field(default_factory=Counter)
    records_skipped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, report: RunReport) -> None:
        self.days += 1
        self.files += report.files_read
        self.events += report.events
        self.events_geolocated += report.events_geolocated
        self.counters_written += report.counters_written
        self.counters_already_applied += report.counters_already_applied
        self.files_skipped.update(report.files_skipped)
        self.records_skipped.update(report.records_skipped)
        self.seconds += report.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "files": self.files,
            "events": self.events,
            "events_geolocated": self.events_geolocated,
            "counters_written": self.counters_written,
            "counters_already_applied": self.counters_already_applied,
            "files_skipped": dict(self.files_skipped),
            "records_skipped": dict(self.records_skipped),
            "seconds": round(self.seconds, 3),
        }


def backfill(
    deps: Dependencies,
    options: RunOptions,
    *,
    end: datetime,
    days: int,
    on_day: Callable[[RunReport], None] | None = None,
) -> BackfillSummary:
    """Count the files delivered in the ``days`` days before ``end``, one run per day, oldest first."""
    if days < 1:
        raise ValueError("days must be at least 1")
    end = end.astimezone(UTC)
    daily = replace(options, lookback=DAY, alerting=False)
    summary = BackfillSummary()
    for n in range(days - 1, -1, -1):
        run_at = end - n * DAY
        deps.clock = lambda run_at=run_at: run_at  # type: ignore[misc]
        report = detect(run_at, deps, daily)
        summary.add(report)
        if on_day is not None:
            on_day(report)
    return summary
