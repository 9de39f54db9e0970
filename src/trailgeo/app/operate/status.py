"""``trailgeo status``: a deployment's health from its table (watermark, runs, outbox), as a
table or JSON; read through :class:`~trailgeo.ports.OperationsView`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from trailgeo.app.operate.common import described, duration, format_table, moment, one_line, stamp
from trailgeo.core.alerts import Alert
from trailgeo.ports import OperationsView, RunRecord

SCHEDULE = timedelta(minutes=15)


def run_as_dict(run: RunRecord, now: datetime) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "state": "interrupted" if run.interrupted(now) else run.state,
        "lease_until": stamp(run.lease_until) if run.lease_until else None,
        "files": run.files,
        "takeovers": run.takeovers,
    }


@dataclass(frozen=True, slots=True)
class PendingAlert:
    alert_id: str
    detected_at: datetime
    severity: str
    score: float
    country: str
    principal: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "detected_at": stamp(self.detected_at),
            "severity": self.severity,
            "score": self.score,
            "country": self.country,
            "principal": self.principal,
        }


@dataclass(frozen=True, slots=True)
class ParkedAlert:
    """An outbox item set aside (``st`` = parked): no run publishes it again, so only an operator
    looking (this list, ``AlertParkedAlarm``) gets it to anyone."""

    alert_id: str  # the item's key: written by whoever wrote the item, so escaped where shown
    parked_at: datetime | None
    reason: str  # the channel's refusal (e.g. InvalidParameter), too_large, or invalid_document

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "parked_at": stamp(self.parked_at) if self.parked_at else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class TableStatus:
    table: str
    checked_at: datetime
    watermark: datetime | None
    table_state: str
    item_count: int
    size_bytes: int
    runs: tuple[RunRecord, ...] = ()
    pending: tuple[PendingAlert, ...] = ()
    alerts_kept: int = 0
    parked: tuple[ParkedAlert, ...] = ()

    @property
    def lag(self) -> timedelta | None:
        return self.checked_at - self.watermark if self.watermark else None

    @property
    def interrupted_runs(self) -> tuple[RunRecord, ...]:
        return tuple(r for r in self.runs if r.interrupted(self.checked_at))

    @property
    def open_runs(self) -> tuple[RunRecord, ...]:
        return tuple(r for r in self.runs if r.state == "open" and not r.interrupted(self.checked_at))

    @property
    def poison_files(self) -> tuple[tuple[str, str], ...]:
        """(run id, key) of every file set aside as poison by a run still on record (14 days)."""
        return tuple((r.run_id, key) for r in self.runs for key in r.poison)

    @property
    def closed_runs(self) -> int:
        """Closed in the last day (closed records are kept 14 days: they vouch for their files)."""
        since = self.checked_at - timedelta(days=1)
        return sum(
            1 for r in self.runs if r.state == "closed" and (r.closed_at is None or r.closed_at >= since)
        )

    def warnings(self) -> list[str]:
        found = []
        if self.watermark is None:
            found.append("no complete run yet: the detector has not run, or never finished a run")
        elif self.lag is not None and self.lag > 2 * SCHEDULE:
            found.append(
                f"last complete run {duration(self.lag.total_seconds())} ago (schedule: every 15 min): "
                "check the function's errors and the dead-letter queue"
            )
        if self.interrupted_runs:
            found.append(
                f"{len(self.interrupted_runs)} interrupted run(s): the next run takes them over; "
                "if they stay, the function keeps failing"
            )
        if self.poison_files:
            found.append(
                f"{len(self.poison_files)} file(s) set aside as poison: runs kept dying on them and their "
                "events are not scored; examine each before replaying it (trailgeo replay)"
            )
        if self.pending:
            found.append(
                f"{len(self.pending)} alert(s) not yet published: retried at every run; "
                "if they stay, check the topic (SNS) and the function's role"
            )
        if self.parked:
            found.append(
                f"{len(self.parked)} alert(s) parked: refused for what they hold, never retried and "
                "seen by no channel; read each (trailgeo explain ALERT_ID) and act on it by hand"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        lag = self.lag
        return {
            "table": self.table,
            "checked_at": stamp(self.checked_at),
            "watermark": stamp(self.watermark) if self.watermark else None,
            "lag_seconds": int(lag.total_seconds()) if lag is not None else None,
            "table_status": self.table_state,
            "item_count": self.item_count,
            "size_bytes": self.size_bytes,
            "runs_open": [run_as_dict(r, self.checked_at) for r in self.open_runs],
            "runs_interrupted": [run_as_dict(r, self.checked_at) for r in self.interrupted_runs],
            "runs_closed_last_day": self.closed_runs,
            "files_poison": [{"run_id": run_id, "key": key} for run_id, key in self.poison_files],
            "alerts_pending": [a.as_dict() for a in self.pending],
            "alerts_parked": [a.as_dict() for a in self.parked],
            "alerts_kept": self.alerts_kept,
            "warnings": self.warnings(),
        }


def read_status(view: OperationsView, now: datetime) -> TableStatus:
    """The table's health: its description, the watermark, the run records, the outbox."""
    info = described(view)
    watermark = view.watermark()
    runs = tuple(view.runs())
    kept = 0
    pending: list[PendingAlert] = []
    parked: list[ParkedAlert] = []
    for entry in view.outbox():
        kept += 1
        if entry.state == "parked":  # its document is not read: one parked as no alert would not parse
            parked.append(ParkedAlert(entry.alert_id, moment(entry.parked_at), entry.parked_reason or "?"))
            continue
        if entry.state != "pending":
            continue
        alert = Alert.model_validate_json(entry.document or "")
        pending.append(
            PendingAlert(
                alert.alert_id, alert.detected_at, alert.severity, alert.score, alert.country, alert.principal
            )
        )
    return TableStatus(
        table=view.table,
        checked_at=now.astimezone(UTC),
        watermark=watermark,
        table_state=info.state,
        item_count=info.item_count,
        size_bytes=info.size_bytes,
        runs=tuple(sorted(runs, key=lambda r: r.run_id)),
        pending=tuple(sorted(pending, key=lambda a: (a.detected_at, a.alert_id))),
        alerts_kept=kept,
        parked=tuple(sorted(parked, key=lambda a: (stamp(a.parked_at), a.alert_id))),
    )


def format_status(status: TableStatus) -> str:
    lag = status.lag
    rows = [
        ("table", f"{status.table} ({status.table_state})"),
        ("checked at", stamp(status.checked_at)),
        ("last complete run", stamp(status.watermark) if status.watermark else "none yet"),
        ("lag", duration(lag.total_seconds()) if lag is not None else "-"),
        ("runs in progress", str(len(status.open_runs))),
        ("runs interrupted", str(len(status.interrupted_runs))),
        ("runs closed (last day)", str(status.closed_runs)),
        ("poison files", str(len(status.poison_files))),
        ("alerts pending", str(len(status.pending))),
        ("alerts parked", str(len(status.parked))),
        ("alerts kept (30 days)", str(status.alerts_kept)),
        ("items", f"{status.item_count:,} (DescribeTable, refreshed about every 6 hours)"),
        ("size", f"{status.size_bytes:,} bytes"),
    ]
    width = max(len(label) for label, _ in rows)
    parts = [f"{label.ljust(width)}  {value}" for label, value in rows]
    runs = [*status.open_runs, *status.interrupted_runs]
    if runs:
        parts.append("")
        parts.append(
            format_table(
                ("RUN", "STATE", "LEASE UNTIL", "FILES", "TAKEOVERS"),
                (
                    (
                        r.run_id,
                        run_as_dict(r, status.checked_at)["state"],
                        stamp(r.lease_until),
                        str(r.files),
                        str(r.takeovers),
                    )
                    for r in runs
                ),
            )
        )
    if status.poison_files:
        parts.append("")
        # S3 keys are the bucket writer's: JSON-escaped, a line break in one cannot draw a row
        poisoned = ((one_line(key), run) for run, key in status.poison_files)
        parts.append(format_table(("POISON FILE", "RUN"), poisoned))
    if status.pending:
        parts.append("")
        parts.append(
            format_table(
                ("PENDING ALERT", "DETECTED", "SEVERITY", "SCORE", "CC", "PRINCIPAL"),
                (
                    (a.alert_id, stamp(a.detected_at), a.severity, f"{a.score:g}", a.country, a.principal)
                    for a in status.pending
                ),
            )
        )
    if status.parked:
        parts.append("")
        parts.append(
            format_table(
                ("PARKED ALERT", "PARKED", "REASON"),
                ((one_line(a.alert_id), stamp(a.parked_at), one_line(a.reason)) for a in status.parked),
            )
        )
    warnings = status.warnings()
    if warnings:
        parts.append("")
        parts.extend(f"warning: {w}" for w in warnings)
    return "\n".join(parts)
