"""What a run is given (its options and the adapters behind the ports) and what it reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from trailgeo.core.alerts import DEFAULT_PAGING_SEVERITY, Alert, Severity
from trailgeo.core.categories import EventScope
from trailgeo.core.detectors import DEFAULT_DETECTORS
from trailgeo.core.evidence import FACTORS
from trailgeo.core.incidents import DEFAULT_WINDOW as DEFAULT_INCIDENT_WINDOW
from trailgeo.core.scoring import ScoringPolicy
from trailgeo.core.tuning import EMPTY_TUNING, Tuning
from trailgeo.ports import (
    AlertOutbox,
    AlertSink,
    FrequencyStore,
    GeoResolver,
    Ledger,
    LogSource,
    NotificationIntake,
)

DEFAULT_LEASE = timedelta(minutes=20)  # longer than the Lambda's 15-minute limit


@dataclass(frozen=True, slots=True)
class RunOptions:
    lookback: timedelta = timedelta(hours=2)
    policy: ScoringPolicy = field(default_factory=ScoringPolicy)
    max_decompressed_bytes: int = 512 * 1024 * 1024
    # One batch per window as a rule: a counter is written once per batch. Its keys are kept,
    # compressed, in its run record (400 KB item limit: over 10,000 CloudTrail keys).
    batch_files: int = 5000
    # Records decoded into one batch: the files after the one that goes over are handed back to the
    # next run (released), so that the aggregate stays within the default function's 1,769 MB
    # (151 MB a million events measured, docs/cost-and-capacity.md, beside one file's decoding,
    # at most core.records.MAX_DECODE_BYTES). Takeovers and fan-out tasks hand nothing back.
    batch_records: int = 4_000_000
    read_concurrency: int = 8
    lease: timedelta = DEFAULT_LEASE
    alerting: bool = True  # False when training history (backfill): count, never alert
    suppress_for: timedelta = timedelta(hours=24)  # one alert per (principal, country) per window
    quarantine: timedelta = timedelta(days=30)  # alerted hours do not vouch for their country this long
    # Alerts from one network (IPv4 /24, IPv6 /48) within this long of an incident's last member are
    # one incident (core/incidents.py); zero links nothing. At most core.incidents.MAX_WINDOW.
    incident_window: timedelta = DEFAULT_INCIDENT_WINDOW
    rollup_after: int = 10  # more alerts than this in one run: an alert flood, rolled up
    rollup_in_full: int = 5  # of a flood, the most urgent sent in full (the next carries the rest)
    tuning: Tuning = EMPTY_TUNING  # allowlists and per-method overrides (docs/tuning.md)
    detectors: frozenset[str] = DEFAULT_DETECTORS  # "country", plus any of core.detectors.DETECTORS
    # Data and network activity events (eventCategory): skipped (MANAGEMENT) or scored too (ALL)
    events: EventScope = EventScope.MANAGEMENT
    # The evidence factors that weigh in a severity (core/evidence.py); the evaluation's ablation
    # leaves one out at a time.
    factors: frozenset[str] = FACTORS
    # Notification intake (Dependencies.intake): a run receives at most this many messages, for at
    # most this long (the rest wait for the next run), and lists its window as well once every
    # ``reconcile_every`` (a multiple of the 15-minute schedule) for what notifications missed.
    intake_messages: int = 50_000
    intake_seconds: float = 120.0
    reconcile_every: timedelta = timedelta(hours=1)
    # Listing intake: the day prefixes that only the late tolerance keeps in play (yesterday's, once
    # the window no longer reaches it) are listed by the first run of each ``late_every`` to complete
    # (app.detect.plan.late_prefixes), the window's every run.
    late_every: timedelta = timedelta(hours=1)
    # A thread's first notification below ``paging_severity`` waits ``settle`` before it goes out, so
    # that what joins it meanwhile goes out inside it (app/detect/publish.py); zero sends at once. A
    # thread that paged at ``paging_severity`` pages again only for a higher severity an hour on, or
    # once resolved (core.alerts.pages_again).
    paging_severity: Severity = DEFAULT_PAGING_SEVERITY
    settle: timedelta = timedelta(minutes=15)


@dataclass(slots=True)
class Dependencies:
    source: LogSource
    geo: GeoResolver
    store: FrequencyStore
    ledger: Ledger
    outbox: AlertOutbox
    sink: AlertSink
    # Seconds left before the platform stops us; a batch is not started without enough margin.
    time_left: Callable[[], float] = lambda: float("inf")
    clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC)
    # New files from a notification queue (Intake=Notifications) instead of listing ``source``;
    # ``source`` still reads them, and lists for reconciliation.
    intake: NotificationIntake | None = None


@dataclass(slots=True)
class RunReport:
    scheduled_at: datetime
    window_start: datetime
    window_end: datetime
    files_listed: int = 0
    files_new: int = 0
    files_recovered: int = 0
    files_read: int = 0
    files_in_progress_elsewhere: int = 0
    files_deferred: int = 0
    files_released: int = 0  # unreadable for now (S3 throttling, 5xx, timeouts): new again for the next run
    files_over_budget: int = 0  # of those, handed back past the batch's record budget (batch_records)
    files_late: int = 0  # named before the look-back, landed within it: read all the same
    tasks_dispatched: int = 0  # fan-out mode: tasks of new files sent to the workers
    catch_up: bool = False  # the window reached back to the last complete run
    # Day prefixes (account x region x day) listed, and the ones only the late tolerance keeps in
    # play left to the hour's late listing (not listed by this run); whether this run listed those.
    prefixes_listed: int = 0
    prefixes_not_due: int = 0
    late_prefixes_listed: bool = False
    # Notification intake: messages received, poisoned (by reason) and kept for a later run (their
    # files not handed to a run yet); whether the queue was drained; whether this run reconciled
    # (listed its window too), and the files it found that no notification had brought.
    notified: bool = False  # the run's new files came from the notification queue
    arrivals: bool = False  # an event-driven run (Continuous=Enabled): one batch of the queue's messages
    intake_messages: int = 0
    intake_poisoned: Counter[str] = field(default_factory=Counter)
    intake_kept: int = 0
    intake_backlog: bool = False
    intake_failed: bool = False  # the queue refused: the run listed its window instead
    reconciled: bool = False
    files_missed_by_notifications: int = 0
    bytes_read: int = 0
    events: int = 0
    events_geolocated: int = 0
    keys_skipped: Counter[str] = field(default_factory=Counter)
    files_skipped: Counter[str] = field(default_factory=Counter)
    records_skipped: Counter[str] = field(default_factory=Counter)
    counters_written: int = 0
    counters_already_applied: int = 0
    category_maps_capped: int = 0  # categories folded into a TOTAL's overflow (core.counters.cap_categories)
    alerts_raised: int = 0
    alerts_suppressed: int = 0
    alerts_linked: int = 0  # recorded, and sent inside their incident's notification (core/incidents.py)
    alerts_rolled_up: int = 0  # recorded, and sent inside another alert of the run (an alert flood)
    alerts_allowlisted: Counter[str] = field(default_factory=Counter)  # by verdict
    alerts_published: int = 0
    alerts_pending: int = 0
    alerts_parked: int = 0  # refused by the channel for what they hold: set aside (publish_pending)
    alerts_settling: int = 0  # first notifications below the paging severity waiting one period
    alerts_settled: int = 0  # sent inside the first notification of their thread (publish_pending)
    threads_reopened: int = 0  # alerts paging anew in a thread (subject's, incident's) the team resolved
    oldest_pending_minutes: int = 0  # the alert waiting longest after publishing, since detected
    # Source addresses of alert candidates looked up in the ASN database: "hosting", "other",
    # "not_found" (no AS, or no public address), "unavailable" (no ASN database open).
    networks: Counter[str] = field(default_factory=Counter)
    alerts: list[Alert] = field(default_factory=list)
    seconds: float = 0.0


# Hands a planned batch of new files to other workers (fan-out mode) instead of processing it
# here: (keys, run id, scheduled time, report) -> None.
Dispatch = Callable[[list[str], str, datetime, "RunReport"], None]
