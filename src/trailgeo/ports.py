"""The ports the detection run talks to. Adapters implement them; the core never sees boto3."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol, get_args

import msgspec

from trailgeo.core.alerts import Alert, Severity
from trailgeo.core.counters import CounterDelta, CounterKey
from trailgeo.core.detectors import DETECTORS
from trailgeo.core.networks import AsnInfo
from trailgeo.core.scoring import History


class TrailgeoError(Exception):
    """Base of the domain errors adapters translate AWS and file errors into."""


class ObjectGoneError(TrailgeoError):
    """Listed, then deleted before it could be read."""


class ObjectUnreadableError(TrailgeoError):
    """A permanent problem with one object (access denied by KMS, not a CloudTrail file...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class TransientReadError(TrailgeoError):
    """Worth retrying on a later run (throttling, 5xx, timeouts after botocore's own retries)."""


class PublishError(TrailgeoError):
    """An alert could not be delivered now; it stays in the outbox."""


class AlertRefusedError(PublishError):
    """The channel refused this alert itself (too large, an invalid parameter): retrying cannot
    deliver it. It is parked in the outbox, not retried, so that it never holds back the others."""


class BatchTooLargeError(TrailgeoError):
    """A batch's run record would exceed what the ledger can store: plan it as smaller batches."""


@dataclass(frozen=True, slots=True)
class LogObject:
    key: str
    delivered_at: datetime  # the delivery time in the object's name
    size: int
    account: str | None = None
    last_modified: datetime | None = None  # when it landed in the bucket (S3), if known


@dataclass(slots=True)
class ListedWindow:
    objects: list[LogObject] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # keys not read, by reason
    # Day prefixes listed, and day prefixes that only the late tolerance keeps in play left
    # unlisted this time (``LatePrefixes.listed`` False): a later run of the hour lists them.
    prefixes_listed: int = 0
    prefixes_not_due: int = 0


@dataclass(frozen=True, slots=True)
class LatePrefixes:
    """How a listing treats the day prefixes that only the late tolerance keeps in play (yesterday's,
    once the window no longer reaches it): where only a late file can be. ``listed`` False leaves
    them for a later run; listed, they are read for files landed (S3 ``LastModified``) after
    ``since`` and named up to the late tolerance before it. The window's own day prefixes are
    listed every time, from the window's start (``app.detect.plan.late_prefixes`` decides)."""

    listed: bool = True
    since: datetime | None = None  # None: the window's start


class LogSource(Protocol):
    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:
        """Objects named within (start, end], and late ones (``late``: None lists every day prefix
        from ``start``, as ``LatePrefixes()`` does)."""
        ...

    def read(self, key: str) -> bytes:
        """The object's raw bytes (possibly gzip). Raises the errors above."""
        ...


class IntakeError(TrailgeoError):
    """The notification queue cannot be received from now: the run lists its window instead."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message of the intake queue (``Intake=Notifications``): the trail's files it names, once
    the adapter has checked their bucket and key layout, and the handle that acknowledges it. A
    message that names nothing usable (poisoned, or only others' keys) has no objects."""

    receipt: str
    objects: tuple[LogObject, ...] = ()


@dataclass(slots=True)
class Delivery:
    """What one drain of the intake queue received."""

    notifications: list[Notification] = field(default_factory=list)
    keys_skipped: Counter[str] = field(default_factory=Counter)  # keys named, not the trail's: by reason
    poisoned: Counter[str] = field(default_factory=Counter)  # messages naming nothing readable: by reason
    drained: bool = True  # False: the budget ran out before the queue was empty


class NotificationIntake(Protocol):
    """New log files as the trail's notifications name them: the other adapter of "new files"
    beside ``LogSource.list_window``. The ledger stays the exactly-once guard for both."""

    def receive(self, max_messages: int, seconds: float) -> Delivery:
        """Messages until the queue is empty, ``max_messages`` were received or ``seconds`` passed.
        Raises ``IntakeError`` when the queue refuses."""
        ...

    def acknowledge(self, receipts: Collection[str]) -> None:
        """Delete these messages: their files are handed to a run (claimed or done in the ledger)."""
        ...

    def release(self, receipts: Collection[str]) -> None:
        """Make these messages visible again now: their files wait for a later run."""
        ...


class GeoResolver(Protocol):
    def country(self, ip: str) -> str | None: ...

    @property
    def has_cities(self) -> bool:
        """True for a City database (the city detector needs one)."""
        ...

    def city(self, ip: str) -> str | None:
        """``CC/City`` of an address, or None (not found, or a Country database)."""
        ...

    @property
    def description(self) -> str: ...

    @property
    def has_asn(self) -> bool:
        """True when an ASN database is open: ``asn`` can answer (the hosting-provider evidence)."""
        return False

    def asn(self, ip: str) -> AsnInfo | None:  # noqa: ARG002 - the default: no ASN database
        """The autonomous system of an address (number and organization), or None: not found, not
        an address, or no ASN database. Never raises on what it is given."""
        return None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    key: str
    state: str  # "claimed" or "done"
    run_id: str
    lease_until: datetime | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class RunAttempts:
    """What a run record says of the attempts at its batch (``Ledger.attempts``): how many
    takeovers began (this one included), and, once it is read file by file, the file an attempt
    was reading when it died and the files set aside as poison."""

    takeovers: int = 0
    reading: str | None = None
    poison: frozenset[str] = frozenset()


# Poison files a run record keeps (S3 keys of up to 1,024 bytes, beside its packed keys of up to
# 350 KB, within DynamoDB's 400 KB an item). A batch with more is not poisoned by its files.
MAX_POISON_PER_RUN = 32


class Ledger(Protocol):
    def status(self, keys: Collection[str]) -> Mapping[str, LedgerEntry]: ...

    def begin(self, run_id: str, keys: Collection[str], lease_until: datetime, now: datetime) -> None:
        """Record a run and the keys it is about to claim, before claiming them."""
        ...

    def expired_runs(self, now: datetime) -> list[tuple[str, list[str]]]:
        """Runs still open whose lease ran out (they died): (run id, keys it meant to process)."""
        ...

    def claim(
        self,
        keys: Collection[str],
        run_id: str,
        lease_until: datetime,
        now: datetime,
        *,
        takeover: bool = False,
    ) -> list[str]:
        """Claim new (or released) keys; with ``takeover``, re-claim keys of the dead run ``run_id``
        that it claimed and never finished, or never got to claim, and count the takeover in its
        run record. Returns the keys won."""
        ...

    def attempts(self, run_id: str) -> RunAttempts:
        """The takeovers of an open run so far, and what its file-by-file attempts noted."""
        ...

    def note_reading(self, run_id: str, key: str | None) -> None:
        """A file-by-file attempt is about to read ``key`` (None: its reading is over), noted in
        the run record first, so that an attempt killed while reading it (out of memory, timed
        out) leaves the name of the file for the next attempt."""
        ...

    def set_aside(self, run_id: str, key: str) -> bool:
        """Keep ``key`` out of the run's batch for good (poison); False when the record cannot
        take another (``MAX_POISON_PER_RUN``)."""
        ...

    def release(self, keys: Collection[str], run_id: str) -> None:
        """Give back keys that could not be read now, so a later run takes them afresh."""
        ...

    def complete(self, outcomes: Mapping[str, str], run_id: str, now: datetime) -> None:
        """Mark files done (with their outcome) and close the run record."""
        ...

    def watermark(self) -> datetime | None:
        """The scheduled time of the last run that listed and processed its whole window."""
        ...

    def advance_watermark(self, scheduled_at: datetime) -> None:
        """Move the watermark forward (never back)."""
        ...


MAX_LOGGED_PARTITION_CHARS = 200  # a partition named in a log line (an ARN can run to 2 KB)


@dataclass(frozen=True, slots=True)
class CommitStats:
    written: int = 0
    already_applied: int = 0
    conflicts: int = 0
    # TOTAL items whose categories were over the cap, the lightest folded (counters.cap_categories)
    maps_capped: int = 0
    categories_folded: int = 0  # categories those items folded into their overflow
    capped_partitions: tuple[str, ...] = ()  # the first few such partitions, cut short: for the log

    @classmethod
    def of(
        cls, written: int, skipped: int, capped: Sequence[tuple[str, int]], conflicts: int = 0
    ) -> CommitStats:
        """A commit's figures, ``capped`` its TOTALs' (partition, categories folded)."""
        return cls(
            written=written,
            already_applied=skipped,
            conflicts=conflicts,
            maps_capped=len(capped),
            categories_folded=sum(folded for _, folded in capped),
            capped_partitions=tuple(p[:MAX_LOGGED_PARTITION_CHARS] for p, _ in sorted(capped)[:10]),
        )


class FrequencyStore(Protocol):
    def load(self, keys: Collection[CounterKey]) -> History:
        """The stored counters among ``keys`` (batched reads; absent keys are left out)."""
        ...

    def commit(
        self, deltas: Mapping[CounterKey, CounterDelta], history: History, run_id: str
    ) -> CommitStats: ...


@dataclass(frozen=True, slots=True)
class Suppression:
    """The last alert of a subject (principal's identity and country): when, its id, the
    sensitive methods alerted so far in the window (a new one re-alerts early), the hours
    whose calls alerted (kept out of the principal's familiarity with the country), and the
    highest severity sent for it in the window (a re-alert no higher is a quiet update)."""

    at: datetime
    alert_id: str
    sensitive_methods: frozenset[str] = frozenset()
    hours: frozenset[int] = frozenset()  # the subject's hours since it alerted: quarantined
    severity: str = ""  # "" for a record written before severities were kept: a re-alert pages
    # The alert the subject's thread began with (what paged; "" for an older record: its last
    # alert): resolving either makes what follows in the window page anew.
    thread: str = ""
    # The run at which the thread last paged the on-call (at the paging severity); None when it
    # has not, or for an older record (a higher severity then pages).
    paged_at: datetime | None = None

    @property
    def thread_alerts(self) -> frozenset[str]:
        """The alerts whose resolution closes the subject's thread: its first and its last."""
        return frozenset(a for a in (self.thread, self.alert_id) if a)


MAX_REMEMBERED_METHODS = 200
# A subject's hours over the whole quarantine (30 days) and the day of late delivery before it.
MAX_REMEMBERED_HOURS = 32 * 24


# What an incident's record keeps (``IncidentRecord``): its sensitive methods (the first by name; a
# method is a catalogue name, so one longer than this is none), so that a record at both limits, with
# its keys and ids, stays far under DynamoDB's 400 KB an item.
MAX_INCIDENT_METHODS = 200
MAX_INCIDENT_METHOD_BYTES = 512
MAX_INCIDENT_ID_BYTES = 512  # an incident's and its last alert's ids (the alerts' ids are far shorter)
MAX_INCIDENT_MEMBERS = 10**9  # a member count above this is no count any run made


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An open incident as remembered under one of its source networks (``core.incidents``): one
    record a network, in a partition of its own (never a subject's ``Suppression``).

    ``last_alert_id`` is the compare-and-set token (the alert that last recorded the incident, as a
    subject's ``Suppression.alert_id``); ``last_at`` is its last member's run, which the incident
    window runs from. Adapters keep at most ``MAX_INCIDENT_METHODS`` sensitive methods and read an
    item that is no such record (written by someone else) as no incident."""

    network: str  # core.incidents.network_key: ``203.0.113.0/24``, ``VPCE:<account>@<address>``...
    incident_id: str  # its first alert
    first_at: datetime  # its first member's run
    last_at: datetime  # its last member's run
    last_alert_id: str
    severity: Severity  # the highest of its members
    members: int  # alerts so far
    sensitive_methods: frozenset[str] = frozenset()
    paged_at: datetime | None = None  # the run it last paged the on-call at (None: not, or unknown)

    def readable(self) -> bool:
        """Whether this is a record some run could have written: a known severity, a member count,
        ids, its first member no later than its last, its times with their zone, its methods names
        within the bounds. Adapters read any other (someone else wrote the item) as no incident."""
        ids = (self.network, self.incident_id, self.last_alert_id)
        return (
            all(isinstance(v, str) and 0 < len(v.encode()) <= MAX_INCIDENT_ID_BYTES for v in ids)
            and self.severity in get_args(Severity)
            and isinstance(self.members, int)
            and 0 < self.members <= MAX_INCIDENT_MEMBERS
            and isinstance(self.first_at, datetime)
            and isinstance(self.last_at, datetime)
            and self.first_at.tzinfo is not None
            and self.last_at.tzinfo is not None
            and self.first_at <= self.last_at
            and (
                self.paged_at is None
                or (
                    isinstance(self.paged_at, datetime)
                    and self.paged_at.tzinfo is not None
                    and self.paged_at <= self.last_at
                )
            )
            and len(self.sensitive_methods) <= MAX_INCIDENT_METHODS
            and all(isinstance(m, str) and m for m in self.sensitive_methods)
        )

    def bounded(self) -> IncidentRecord:
        """What a store keeps of it: the first ``MAX_INCIDENT_METHODS`` methods by name, none
        longer than ``MAX_INCIDENT_METHOD_BYTES``."""
        kept = sorted(m for m in self.sensitive_methods if len(m.encode()) <= MAX_INCIDENT_METHOD_BYTES)
        return replace(self, sensitive_methods=frozenset(kept[:MAX_INCIDENT_METHODS]))


class AlertOutbox(Protocol):
    def put(self, alert: Alert) -> bool:
        """Queue an alert once; False when an alert with that id was queued before."""
        ...

    def pending(self) -> list[Alert]: ...

    def claim_publish(self, alert_id: str, holder: str, until: datetime, now: datetime) -> bool:
        """Take the right to publish a pending alert until ``until``; False while another
        publisher holds it (fan-out: reducers and the scheduled run may publish side by side)."""
        ...

    def mark_sent(self, alert_id: str, message_id: str) -> None: ...

    def park(self, alert_id: str, reason: str) -> None:
        """Set a pending alert aside, with why: the channel refused it (``AlertRefusedError``).
        It is kept (``trailgeo explain`` reads it) and no run publishes it again."""
        ...

    def recent(self, subjects: Collection[str]) -> Mapping[str, Suppression]:
        """The last alert of each subject (identity|country) that has one."""
        ...

    def resolved(self, alert_ids: Collection[str]) -> frozenset[str]:
        """The alerts among ``alert_ids`` the team has resolved (a triage record, any verdict: the
        ``TRIAGE`` partition ``trailgeo alerts resolve`` writes), read consistently."""
        ...

    def remember(self, subject: str, suppression: Suppression, expected_alert_id: str | None) -> bool:
        """Record a subject's alert if its last one is still ``expected_alert_id`` (None: it had
        none); False when another invocation recorded one since it was read."""
        ...

    def extend_quarantine(self, subject: str, alert_id: str, hours: Collection[int]) -> None:
        """Add ``hours`` to the quarantined hours of a subject while ``alert_id`` is still its last
        alert (a union: concurrent invocations each add theirs; a newer alert carries them)."""
        ...

    def alerted_since(self, since: datetime) -> Mapping[str, Suppression]:
        """Every subject alerted at or after ``since`` (all detectors), read consistently: one
        read gives a run its subjects' last alerts and the quarantine in force."""
        ...

    def open_incidents(self, since: datetime) -> Mapping[str, IncidentRecord]:
        """Every network's incident whose last member is at or after ``since``, by network, read
        consistently (one read a run, as ``alerted_since``). Incidents are never subjects:
        ``recent`` and ``alerted_since`` never return one."""
        ...

    def incidents(self, networks: Collection[str]) -> Mapping[str, IncidentRecord]:
        """The incident recorded under each of ``networks`` that has one (any age), read
        consistently: what a compare-and-set that failed reads again."""
        ...

    def remember_incident(self, record: IncidentRecord, expected_alert_id: str | None) -> bool:
        """Record an incident under its network if the network's incident was last recorded by
        ``expected_alert_id`` (None: it has none); False when another invocation recorded it since
        it was read, or when what the network holds is no incident (left as it is)."""
        ...


class Channel(Protocol):
    """One destination of the notifier (Slack, Security Hub, EventBridge)."""

    @property
    def name(self) -> str: ...

    def send(self, alert: Alert) -> None: ...


class AlertSink(Protocol):
    def publish(self, alert: Alert) -> str:
        """Deliver one alert; return the channel's message id. Raises PublishError."""
        ...


class FanoutTask(msgspec.Struct, frozen=True):
    """One SQS message: part ``index`` of ``tasks`` of batch ``run_id``."""

    run_id: str
    scheduled_at: datetime
    index: int
    tasks: int
    keys: list[str]

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, body: str | bytes) -> FanoutTask:
        try:
            task = msgspec.json.decode(body, type=cls)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a trailgeo fan-out task: {exc}") from exc
        if not 0 <= task.index < task.tasks or not task.keys:
            raise ValueError(f"fan-out task {task.index}/{task.tasks} of {task.run_id} is inconsistent")
        return task


class TaskQueue(Protocol):
    def send(self, tasks: list[FanoutTask]) -> None: ...


class PartialStore(Protocol):
    def put(self, run_id: str, index: int, data: bytes) -> None: ...

    def get(self, run_id: str, index: int) -> bytes: ...

    def discard(self, run_id: str, tasks: int) -> None: ...


class FanoutTracker(Protocol):
    def open(self, run_id: str, tasks: int, now: datetime) -> None:
        """Record that batch ``run_id`` was split into ``tasks`` tasks (idempotent)."""
        ...

    def task_done(self, run_id: str, index: int) -> int:
        """Mark one task done (idempotent); returns how many of the batch's tasks are done."""
        ...

    def claim_reduce(self, run_id: str, holder: str, until: datetime, now: datetime) -> bool:
        """True for the one invocation that reduces the batch (or takes over a dead reduce)."""
        ...


# --- Operating a deployment (``trailgeo status``, ``explain``, ``allow``) -----------------------------


OUTBOX_RETENTION = timedelta(days=30)  # how long the outbox keeps an alert after it went out or was parked


class OperationsError(TrailgeoError):
    """AWS refused a read or write of the deployment's state; the message is its one line
    (operation, code, message) and ``code`` its error code (AccessDeniedException...)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class TableMissingError(TrailgeoError):
    """The deployment's table does not exist (a wrong name, or the wrong region)."""

    def __init__(self, table: str, region: str) -> None:
        super().__init__(f"table {table} not found in {region}")
        self.table = table
        self.region = region


class ConcurrentChangeError(TrailgeoError):
    """The tuning parameter, or an alert's triage record, changed between our read and our write:
    nothing was written."""

    @classmethod
    def of_triage(cls, alert_id: str, read_version: int) -> ConcurrentChangeError:
        return cls(
            f"alert {alert_id}: resolved by someone else since it was read (read version {read_version}): "
            "nothing was written; see it with `trailgeo alerts show` and run the command again"
        )


@dataclass(frozen=True, slots=True)
class TableInfo:
    state: str  # ACTIVE, UPDATING...
    item_count: int  # refreshed about every 6 hours (DescribeTable)
    size_bytes: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run record: a batch of files a run took (open) or finished (closed, kept 14 days)."""

    run_id: str
    state: str  # open or closed
    lease_until: datetime | None
    files: int
    closed_at: datetime | None = None
    takeovers: int = 0
    poison: tuple[str, ...] = ()  # files set aside (app.detect.ingest.read_isolated), sorted

    def interrupted(self, now: datetime) -> bool:
        """Open with its lease past: the run died; the next scheduled run takes it over."""
        return self.state == "open" and self.lease_until is not None and self.lease_until < now


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox item as stored: the alert's document is left unread (it may hold no alert)."""

    alert_id: str  # written by whoever wrote the item: escaped where shown
    state: str  # pending, sent or parked ("?" when the item has none)
    document: str | None = None  # the alert's JSON
    created: str | None = None  # ISO 8601 timestamps, as written
    sent_at: str | None = None
    message_id: str | None = None
    parked_at: str | None = None
    parked_reason: str | None = None


# --- Triage (``trailgeo alerts``, ``trailgeo report``) ------------------------------------------------

# How long an alert's triage record is kept after its detection: three times the outbox's 30 days, so
# that a resolved alert outlives its outbox copy and a report can look back a quarter.
TRIAGE_RETENTION = timedelta(days=90)
TriageVerdict = Literal["attack", "expected", "false-positive"]
VERDICTS: tuple[TriageVerdict, ...] = get_args(TriageVerdict)
MAX_NOTE_CHARS = 1000  # a resolution's note (a ticket, a sentence)
MAX_RESOLVER_CHARS = 2048  # who resolved: an ARN (IAM allows 2,048) or a local user name
MAX_RESOLUTION_HISTORY = 20  # earlier resolutions kept on a record (the newest)


@dataclass(frozen=True, slots=True)
class AlertDigest:
    """What a triage record keeps of its alert: enough to list it and count it in a report after the
    outbox has let the alert go (``OUTBOX_RETENTION``). Every string came from CloudTrail."""

    alert_id: str
    detected_at: datetime
    detector: str
    severity: str
    score: float
    account: str
    principal: str
    location: str  # a country code, ``VPCE:<account>`` or ``unknown`` (Alert.location)

    @classmethod
    def of(cls, alert: Alert) -> AlertDigest:
        return cls(
            alert_id=alert.alert_id,
            detected_at=alert.detected_at,
            detector=alert.detector,
            severity=alert.severity,
            score=alert.score,
            account=alert.cloud.account.id,
            principal=alert.principal,
            location=alert.location,
        )


@dataclass(frozen=True, slots=True)
class Resolution:
    """A person's decision on an alert: what it was, who decided and when, and why."""

    verdict: TriageVerdict
    by: str  # the caller's ARN (STS GetCallerIdentity), or a local user
    at: datetime
    note: str = ""

    def bounded(self) -> Resolution:
        return replace(self, by=self.by[:MAX_RESOLVER_CHARS], note=self.note[:MAX_NOTE_CHARS])


@dataclass(frozen=True, slots=True)
class TriageRecord:
    """An alert's triage record: its digest, its resolution and the earlier ones (oldest first, the
    newest ``MAX_RESOLUTION_HISTORY``), and its version: 1 after the first resolution, one more at
    each, compared-and-set so that two people resolving at once cannot both win."""

    digest: AlertDigest
    resolution: Resolution
    version: int
    history: tuple[Resolution, ...] = ()

    @property
    def alert_id(self) -> str:
        return self.digest.alert_id

    def readable(self) -> bool:
        """Whether some ``trailgeo alerts resolve`` could have written it (adapters read any other
        item as no record: written by someone else)."""
        digest = self.digest
        return (
            isinstance(self.version, int)
            and self.version > 0
            and all(isinstance(v, str) and v for v in (digest.alert_id, digest.principal, digest.location))
            and isinstance(digest.detected_at, datetime)
            and digest.detected_at.tzinfo is not None
            and digest.severity in get_args(Severity)
            and digest.detector in DETECTORS
            and all(
                r.verdict in VERDICTS and isinstance(r.at, datetime) and r.at.tzinfo is not None
                for r in (self.resolution, *self.history)
            )
        )

    def bounded(self) -> TriageRecord:
        """What a store keeps of it: the resolutions' texts cut, the newest earlier resolutions."""
        history = tuple(r.bounded() for r in self.history[-MAX_RESOLUTION_HISTORY:])
        return replace(self, resolution=self.resolution.bounded(), history=history)

    def resolved(self, resolution: Resolution) -> TriageRecord:
        """This record resolved anew: the current resolution goes into the history."""
        return replace(
            self, resolution=resolution, version=self.version + 1, history=(*self.history, self.resolution)
        ).bounded()


class OperationsView(Protocol):
    """What the operator commands read of a deployment's state (``status``, ``explain``, ``alerts``,
    ``report``), and the one thing they write there: an alert's triage record. Raises
    :class:`TableMissingError` when there is no such table, :class:`OperationsError` otherwise."""

    @property
    def table(self) -> str: ...

    def table_info(self) -> TableInfo: ...

    def watermark(self) -> datetime | None: ...

    def runs(self) -> list[RunRecord]:
        """Every run record kept (open, and closed within 14 days), by run id."""
        ...

    def outbox(self) -> list[OutboxEntry]:
        """Every outbox entry kept (30 days), by alert id."""
        ...

    def outbox_entry(self, alert_id: str) -> OutboxEntry | None: ...

    def triage(self, since: datetime) -> list[TriageRecord]:
        """Every triage record kept (90 days) of an alert detected at or after ``since``, read
        consistently, by alert id; an item that is no record (``readable``) is left out."""
        ...

    def triage_record(self, alert_id: str) -> TriageRecord | None:
        """The alert's triage record, None when it has none (never resolved, or expired)."""
        ...

    def write_triage(self, record: TriageRecord, expected_version: int) -> None:
        """Store ``record`` (bounded) if the alert's record is still at ``expected_version`` (0: it
        has none). Raises :class:`ConcurrentChangeError` when someone wrote it since it was read."""
        ...


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One CloudWatch data point a command publishes (``trailgeo report --publish-metrics``)."""

    name: str
    unit: str  # CloudWatch's: Count, Percent, Seconds
    value: float
    dimensions: Mapping[str, str]


class MetricsPublisher(Protocol):
    def publish(self, points: Sequence[MetricPoint], at: datetime) -> None:
        """Send the points, stamped ``at``, to the publisher's namespace (and service dimension)."""
        ...


FILE_TYPE = "File"  # the type of a tuning kept in a local file (adapters/local_tuning.FileTuningStore)


@dataclass(frozen=True, slots=True)
class StoredTuning:
    """The tuning parameter as read: its version guards the write."""

    version: int
    type: str  # String, SecureString (or what else the parameter was made as); a local file: FILE_TYPE
    text: str
    key_id: str | None = None
    tier: str | None = None


class TuningStore(Protocol):
    """The tuning parameter (docs/tuning.md), read then written back only if unchanged."""

    def read(self, name: str) -> StoredTuning | None:
        """The parameter decrypted, or None when it does not exist. Raises :class:`OperationsError`."""
        ...

    def write(
        self,
        name: str,
        text: str,
        *,
        expected_version: int | None,
        type: str,  # noqa: A002 (the parameter's type, as SSM names it)
        key_id: str | None = None,
        tier: str | None = None,
    ) -> int:
        """Write ``text`` if the parameter is still at ``expected_version`` (None: it must not
        exist); returns the new version. Raises :class:`ConcurrentChangeError` when it changed."""
        ...
