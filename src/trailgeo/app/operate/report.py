"""``trailgeo report --days N``: how well the detectors did, from the people's verdicts. Alerts by
state, by detector and severity, the precision (attacks among the resolved), the median time to
resolve, the principals and countries behind the false positives and expected alerts, and how many
alerts the narrowest allowlist entry for each would have saved (and how many attacks it would have
hidden). The same figures as CloudWatch metrics (:func:`report_metrics`), for a dashboard or alarm.

Pure application logic over :class:`~trailgeo.ports.OperationsView` (``alerts.known_alerts``).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trailgeo.app.operate.alerts import ALLOWABLE, OPEN, STATES, TRIAGE_DAYS, TriagedAlert, known_alerts
from trailgeo.app.operate.common import OperateError, described, duration, format_table, one_line, stamp
from trailgeo.core.alerts import SEVERITY_LEVELS, is_country
from trailgeo.core.detectors import COUNTRY
from trailgeo.ports import OUTBOX_RETENTION, MetricPoint, OperationsView

SEVERITIES = tuple(reversed(SEVERITY_LEVELS))  # most severe first, as the report lists them
MAX_PRINCIPALS = 50  # rows of the false-positive table (the JSON has the same bound, and says so)


@dataclass(frozen=True, slots=True)
class NoisySource:
    """The alerts of one (account, principal, location) resolved as expected or false positive, and
    what the narrowest allowlist entry (``alerts allow --from-alert``) would have done in the window."""

    account: str
    principal: str
    location: str
    detector: str
    verdicts: dict[str, int]  # expected, false-positive
    allowable: bool  # a country alert of an account: allowed_countries can name it
    saved: int  # alerts of the window the entry would have silenced, attacks excepted
    hidden_attacks: int  # alerts resolved as attacks that the entry would have silenced too

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "principal": self.principal,
            "location": self.location,
            "detector": self.detector,
            "verdicts": self.verdicts,
            "allowable": self.allowable,
            "would_have_saved": self.saved,
            "would_have_hidden_attacks": self.hidden_attacks,
        }


@dataclass(frozen=True, slots=True)
class PrecisionReport:
    start: datetime
    end: datetime
    days: int
    by_state: dict[str, int]
    by_detector: dict[str, dict[str, int]]  # detector -> severity -> alerts
    verdicts_by_detector: dict[str, dict[str, int]]  # detector -> state -> alerts
    precision: float | None  # attacks / resolved, None with nothing resolved
    median_seconds_to_resolve: float | None
    noisy: list[NoisySource] = field(default_factory=list)
    noisy_left_out: int = 0
    countries: dict[str, int] = field(default_factory=dict)  # expected and false positives by location
    notes: list[str] = field(default_factory=list)

    @property
    def alerts(self) -> int:
        return sum(self.by_state.values())

    @property
    def resolved(self) -> int:
        return self.alerts - self.by_state.get(OPEN, 0)

    @property
    def saved(self) -> int:
        return sum(source.saved for source in self.noisy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": {"start": stamp(self.start), "end": stamp(self.end), "days": self.days},
            "alerts": self.alerts,
            "resolved": self.resolved,
            "by_state": self.by_state,
            "by_detector": self.by_detector,
            "verdicts_by_detector": self.verdicts_by_detector,
            "precision": self.precision,
            "median_seconds_to_resolve": self.median_seconds_to_resolve,
            "noisy_sources": [source.as_dict() for source in self.noisy],
            "noisy_sources_left_out": self.noisy_left_out,
            "noisy_countries": self.countries,
            "allowlisting_would_have_saved": self.saved,
            "notes": self.notes,
        }


def _first_resolution_seconds(row: TriagedAlert) -> float | None:
    record = row.record
    if record is None:
        return None
    first = record.history[0] if record.history else record.resolution
    return max(0.0, (first.at - row.digest.detected_at).total_seconds())


def _key(row: TriagedAlert) -> tuple[str, str, str, str]:
    digest = row.digest
    return digest.account, digest.principal, digest.location, digest.detector


def build_report(view: OperationsView, *, days: int, end: datetime) -> PrecisionReport:
    if not 1 <= days <= TRIAGE_DAYS:
        raise OperateError(
            f"--days {days}: must be from 1 to {TRIAGE_DAYS} (a triage record is kept {TRIAGE_DAYS} days)"
        )
    described(view)
    start = end - timedelta(days=days)
    rows = [row for row in known_alerts(view, start) if row.digest.detected_at <= end]
    by_state = dict.fromkeys(STATES, 0) | Counter(row.state for row in rows)
    by_detector: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SEVERITIES, 0))
    verdicts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATES, 0))
    for row in rows:
        by_detector[row.digest.detector][row.digest.severity] += 1
        verdicts[row.digest.detector][row.state] += 1
    resolved = [row for row in rows if row.state != OPEN]
    seconds = [s for s in map(_first_resolution_seconds, resolved) if s is not None]
    by_key: dict[tuple[str, str, str, str], list[TriagedAlert]] = defaultdict(list)
    for row in rows:
        by_key[_key(row)].append(row)
    noisy = []
    countries: Counter[str] = Counter()
    for key, members in by_key.items():
        benign = Counter(row.state for row in members if row.state in ALLOWABLE)
        if not benign:
            continue
        account, principal, location, detector = key
        countries[location] += sum(benign.values())
        allowable = detector == COUNTRY.name and is_country(location) and account.isdigit()
        attacks = sum(1 for row in members if row.state == "attack")
        noisy.append(
            NoisySource(
                account=account,
                principal=principal,
                location=location,
                detector=detector,
                verdicts=dict(sorted(benign.items())),
                allowable=allowable,
                saved=len(members) - attacks if allowable else 0,
                hidden_attacks=attacks if allowable else 0,
            )
        )
    noisy.sort(key=lambda s: (-s.saved, -sum(s.verdicts.values()), s.principal, s.location))
    notes = []
    if days > OUTBOX_RETENTION.days:
        notes.append(
            f"alerts older than {OUTBOX_RETENTION.days} days are known only when resolved (the outbox "
            f"keeps an alert {OUTBOX_RETENTION.days} days): open ones before then are not counted"
        )
    return PrecisionReport(
        start=start,
        end=end,
        days=days,
        by_state=dict(by_state),
        by_detector={d: by_detector[d] for d in sorted(by_detector)},
        verdicts_by_detector={d: verdicts[d] for d in sorted(verdicts)},
        precision=round(by_state["attack"] / len(resolved), 4) if resolved else None,
        median_seconds_to_resolve=statistics.median(seconds) if seconds else None,
        noisy=noisy[:MAX_PRINCIPALS],
        noisy_left_out=max(0, len(noisy) - MAX_PRINCIPALS),
        countries=dict(countries.most_common()),
        notes=notes,
    )


def format_report(report: PrecisionReport) -> str:
    precision = f"{report.precision:.0%}" if report.precision is not None else "- (nothing resolved)"
    median = (
        duration(report.median_seconds_to_resolve) if report.median_seconds_to_resolve is not None else "-"
    )
    states = ", ".join(f"{state} {report.by_state.get(state, 0)}" for state in STATES)
    lines = [
        f"window                  {stamp(report.start)} .. {stamp(report.end)} ({report.days} days)",
        f"alerts                  {report.alerts} ({states})",
        f"precision               {precision} (attacks among the {report.resolved} resolved)",
        f"median time to resolve  {median} (detection to first resolution)",
        "",
        "by detector and severity:",
    ]
    detector_rows = [
        (
            one_line(name),
            *(str(report.by_detector[name][s]) for s in SEVERITIES),
            *(str(report.verdicts_by_detector[name][s]) for s in STATES),
        )
        for name in report.by_detector
    ]
    lines.append(
        format_table(
            ("DETECTOR", *(s.upper() for s in SEVERITIES), *(s.upper() for s in STATES)), detector_rows
        )
        if detector_rows
        else "  no alert"
    )
    lines += ["", "behind the expected and false-positive alerts (an allowlist entry each, --from-alert):"]
    if report.noisy:
        rows = [
            (
                one_line(s.principal),
                one_line(s.location),
                one_line(s.account),
                one_line(s.detector),
                ", ".join(f"{v} {n}" for v, n in s.verdicts.items()),
                str(s.saved) if s.allowable else "not allowlistable",
                str(s.hidden_attacks),
            )
            for s in report.noisy
        ]
        lines.append(
            format_table(
                ("PRINCIPAL", "FROM", "ACCOUNT", "DETECTOR", "RESOLVED", "WOULD SAVE", "WOULD HIDE ATTACKS"),
                rows,
            )
        )
        if report.noisy_left_out:
            lines.append(f"and {report.noisy_left_out} more (--output json lists the same {MAX_PRINCIPALS})")
        lines.append(f"allowlisting each would have saved {report.saved} alert(s) of the window")
    else:
        lines.append("  none")
    lines.extend(f"note: {note}" for note in report.notes)
    return "\n".join(lines)


def report_metrics(report: PrecisionReport) -> list[MetricPoint]:
    """The report's figures as CloudWatch data points, dimensions from fixed sets only (states,
    the detector registry's names, severities): never a principal or a country, which come from
    CloudTrail and would mint a billed custom metric each."""
    days = {"Days": str(report.days)}
    points = [
        MetricPoint("TriageAlerts", "Count", float(count), {**days, "state": state})
        for state, count in report.by_state.items()
    ]
    points += [
        MetricPoint(
            "TriageAlertsByDetector", "Count", float(count), {**days, "detector": name, "severity": sev}
        )
        for name, severities in report.by_detector.items()
        for sev, count in severities.items()
    ]
    points.append(MetricPoint("TriageAllowlistSavings", "Count", float(report.saved), days))
    if report.precision is not None:
        points.append(MetricPoint("TriagePrecision", "Percent", round(100 * report.precision, 2), days))
    if report.median_seconds_to_resolve is not None:
        points.append(
            MetricPoint("TriageMedianTimeToResolve", "Seconds", float(report.median_seconds_to_resolve), days)
        )
    return points
