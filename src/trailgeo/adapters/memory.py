"""In-memory store, ledger and outbox: the same contracts as DynamoDB, for replay and tests; and
what the operator commands read and write (:class:`MemoryOperations`, :class:`MemoryTuningStore`);
a GeoIP resolver of fixed answers (:class:`MemoryGeoResolver`), the same contract as MaxMind's; the
intake queue (:class:`MemoryNotificationIntake`), the same contract as SQS's."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from trailgeo.adapters.dynamodb import MAX_PACKED_BYTES, pack_keys
from trailgeo.adapters.fanout import FanoutError, message_batches
from trailgeo.adapters.intake import TrailNotices
from trailgeo.core.alerts import Alert
from trailgeo.core.counters import (
    DEFAULT_HALF_LIFE_HOURS,
    EMPTY,
    CounterDelta,
    CounterKey,
    CounterState,
    apply_deltas,
    categories_folded,
    merge,
)
from trailgeo.core.networks import AsnInfo
from trailgeo.core.scoring import History
from trailgeo.ports import (
    MAX_POISON_PER_RUN,
    MAX_REMEMBERED_HOURS,
    MAX_REMEMBERED_METHODS,
    AlertDigest,
    BatchTooLargeError,
    CommitStats,
    ConcurrentChangeError,
    Delivery,
    FanoutTask,
    GeoResolver,
    IncidentRecord,
    IntakeError,
    LedgerEntry,
    Notification,
    OutboxEntry,
    Resolution,
    RunAttempts,
    RunRecord,
    StoredTuning,
    Suppression,
    TableInfo,
    TableMissingError,
    TriageRecord,
    TriageVerdict,
)


@dataclass(slots=True)
class MemoryFrequencyStore:
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS
    partitions: dict[str, dict[str, CounterState]] = field(default_factory=lambda: defaultdict(dict))
    writes: int = 0

    def load(self, keys: Collection[CounterKey]) -> History:
        history: History = {}
        for partition, sort_key in keys:
            state = self.partitions.get(partition, {}).get(sort_key)
            if state is not None:
                history.setdefault(partition, {})[sort_key] = state
        return history

    def commit(self, deltas: Mapping[CounterKey, CounterDelta], history: History, run_id: str) -> CommitStats:
        capped: list[tuple[str, int]] = []  # (partition, categories folded)

        def write_one(
            key: CounterKey, delta: CounterDelta, countries: Mapping[str, tuple[int, float]] | None
        ) -> tuple[CounterState, bool]:
            partition = self.partitions[key[0]]
            current = partition.get(key[1], EMPTY)
            merged = merge(current, delta, run_id, half_life_hours=self.half_life_hours, countries=countries)
            if merged is None:
                return current, False
            partition[key[1]] = merged
            folded = categories_folded(current.countries, countries, merged.countries) if countries else 0
            if folded:
                capped.append((key[0], folded))
            return merged, True

        written, skipped = apply_deltas(deltas, write_one, map)
        self.writes += written
        return CommitStats.of(written, skipped, capped)


@dataclass(slots=True)
class MemoryLedger:
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    runs: dict[str, tuple[list[str], datetime]] = field(default_factory=dict)  # open runs only
    high_water: datetime | None = None
    # what a run record keeps besides (DynamoLedger: att, cur, pz); poison stays after closing
    takeovers: dict[str, int] = field(default_factory=dict)
    reading: dict[str, str] = field(default_factory=dict)
    poison: dict[str, set[str]] = field(default_factory=dict)
    closed: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # run id -> (files, closed at)
    # this invocation, and the holder of each claim: a retried claim is told from another
    # invocation that planned the same batch (``dataclasses.replace`` gives one sharing the dicts)
    holder: str = "memory"
    holders: dict[str, str] = field(default_factory=dict)

    def watermark(self) -> datetime | None:
        return self.high_water

    def advance_watermark(self, scheduled_at: datetime) -> None:
        if self.high_water is None or scheduled_at > self.high_water:
            self.high_water = scheduled_at

    def status(self, keys: Collection[str]) -> Mapping[str, LedgerEntry]:
        entries = self.entries
        return {k: e for k in keys if (e := entries.get(k)) is not None and e.state != "released"}

    def begin(self, run_id: str, keys: Collection[str], lease_until: datetime, now: datetime) -> None:
        packed = len(pack_keys(keys))
        if packed > MAX_PACKED_BYTES:
            raise BatchTooLargeError(
                f"run {run_id}: its keys pack to {packed} bytes, over {MAX_PACKED_BYTES}"
            )
        self.runs[run_id] = (list(keys), lease_until)

    def expired_runs(self, now: datetime) -> list[tuple[str, list[str]]]:
        return sorted((run_id, keys) for run_id, (keys, lease) in self.runs.items() if lease < now)

    def claim(
        self,
        keys: Collection[str],
        run_id: str,
        lease_until: datetime,
        now: datetime,
        *,
        takeover: bool = False,
    ) -> list[str]:
        won = []
        for key in keys:
            entry = self.entries.get(key)
            # a retry of this very claim wins again (DynamoLedger: the claim's holder)
            ours = (
                entry is not None
                and entry.state == "claimed"
                and entry.run_id == run_id
                and self.holders.get(key) == self.holder
            )
            if takeover:  # never keys the dead run released: they are new again, for a fresh run
                ok = (
                    entry is None
                    or ours
                    or (
                        entry.state == "claimed"
                        and entry.run_id == run_id
                        and entry.lease_until is not None
                        and entry.lease_until < now
                    )
                )
            else:
                ok = entry is None or entry.state == "released" or ours
            if ok:
                self.entries[key] = LedgerEntry(key, "claimed", run_id, lease_until)
                self.holders[key] = self.holder
                won.append(key)
        if takeover and run_id in self.runs:
            self.runs[run_id] = (self.runs[run_id][0], lease_until)
            self.takeovers[run_id] = self.takeovers.get(run_id, 0) + 1
        return won

    def attempts(self, run_id: str) -> RunAttempts:
        return RunAttempts(
            self.takeovers.get(run_id, 0), self.reading.get(run_id), frozenset(self.poison.get(run_id, ()))
        )

    def note_reading(self, run_id: str, key: str | None) -> None:
        if key is None:
            self.reading.pop(run_id, None)
        elif run_id in self.runs:
            self.reading[run_id] = key

    def set_aside(self, run_id: str, key: str) -> bool:
        poison = self.poison.get(run_id, set())
        if run_id not in self.runs or (key not in poison and len(poison) >= MAX_POISON_PER_RUN):
            return False
        self.poison[run_id] = poison | {key}
        if self.reading.get(run_id) == key:
            del self.reading[run_id]
        return True

    def release(self, keys: Collection[str], run_id: str) -> None:
        for key in keys:
            entry = self.entries.get(key)
            if entry is not None and entry.state == "claimed" and entry.run_id == run_id:
                self.entries[key] = LedgerEntry(key, "released", run_id)  # DynamoLedger keeps it too

    def complete(self, outcomes: Mapping[str, str], run_id: str, now: datetime) -> None:
        for key, outcome in outcomes.items():
            self.entries[key] = LedgerEntry(key, "done", run_id, None, outcome)
        self.closed[run_id] = (len(outcomes), now)
        run = self.runs.pop(run_id, None)
        for key in run[0] if run is not None else ():  # claimed, not released: done too (as DynamoLedger)
            entry = self.entries.get(key)
            if entry is not None and entry.state == "claimed" and entry.run_id == run_id:
                self.entries[key] = LedgerEntry(key, "done", run_id, None, "done")
        self.reading.pop(run_id, None)


@dataclass(slots=True)
class MemoryOutbox:
    alerts: dict[str, Alert] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    last_alerted: dict[str, Suppression] = field(default_factory=dict)
    publishing: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    parked: dict[str, str] = field(default_factory=dict)  # alert id -> why the channel refused it
    # alert id -> when it was queued, sent, parked (DynamoOutbox: created, sent_at, parked_at)
    stamps: dict[str, dict[str, str]] = field(default_factory=dict)
    # network -> its incident's record (DynamoOutbox: the INCIDENT partition), as written: an entry
    # that is no readable record (a test's forgery) reads as no incident, as an item there does
    incident_records: dict[str, IncidentRecord] = field(default_factory=dict)
    # alert id -> its triage record (DynamoOperations: the TRIAGE partition), written by the operator
    # commands only; kept here so that a replay's --state file carries it with the alerts
    triage_records: dict[str, TriageRecord] = field(default_factory=dict)

    def to_document(self) -> dict[str, object]:
        """The alerts, their delivery and their triage records as JSON-ready values (a replay's
        ``--state`` file, which ``trailgeo alerts --state-file`` reads and writes)."""
        return {
            "alerts": {
                alert_id: {
                    "doc": alert.to_json(),
                    "message_id": self.sent.get(alert_id),
                    "parked_reason": self.parked.get(alert_id),
                    "stamps": self.stamps.get(alert_id, {}),
                }
                for alert_id, alert in self.alerts.items()
            },
            "triage": {alert_id: _record_document(r) for alert_id, r in self.triage_records.items()},
        }

    def load_document(self, document: Mapping[str, Any]) -> None:
        """Add what :meth:`to_document` wrote (a state file without it adds nothing)."""
        for alert_id, item in document.get("alerts", {}).items():
            self.alerts[alert_id] = Alert.model_validate_json(item["doc"])
            if item.get("message_id") is not None:
                self.sent[alert_id] = item["message_id"]
            if item.get("parked_reason") is not None:
                self.parked[alert_id] = item["parked_reason"]
            self.stamps[alert_id] = dict(item.get("stamps", {}))
        for alert_id, item in document.get("triage", {}).items():
            self.triage_records[alert_id] = _record_from_document(item)

    def _stamp(self, alert_id: str, name: str) -> None:
        self.stamps.setdefault(alert_id, {})[name] = datetime.now(tz=UTC).isoformat()

    def put(self, alert: Alert) -> bool:
        if alert.alert_id in self.alerts:
            return False
        self.alerts[alert.alert_id] = alert
        self._stamp(alert.alert_id, "created")
        return True

    def pending(self) -> list[Alert]:
        alerts = [a for a_id, a in self.alerts.items() if a_id not in self.sent and a_id not in self.parked]
        return sorted(alerts, key=lambda a: a.detected_at)  # then as queued, as DynamoOutbox

    def claim_publish(self, alert_id: str, holder: str, until: datetime, now: datetime) -> bool:
        held = self.publishing.get(alert_id)
        if alert_id not in self.alerts or alert_id in self.sent or alert_id in self.parked:
            return False
        if held is not None and held[0] != holder and held[1] >= now:
            return False
        self.publishing[alert_id] = (holder, until)
        return True

    def mark_sent(self, alert_id: str, message_id: str) -> None:
        self.sent[alert_id] = message_id
        self._stamp(alert_id, "sent_at")

    def park(self, alert_id: str, reason: str) -> None:
        self.parked[alert_id] = reason
        self._stamp(alert_id, "parked_at")

    def recent(self, subjects: Collection[str]) -> Mapping[str, Suppression]:
        return {s: self.last_alerted[s] for s in subjects if s in self.last_alerted}

    def resolved(self, alert_ids: Collection[str]) -> frozenset[str]:
        return frozenset(a for a in alert_ids if a in self.triage_records)

    def remember(self, subject: str, suppression: Suppression, expected_alert_id: str | None) -> bool:
        current = self.last_alerted.get(subject)
        if (current.alert_id if current is not None else None) != expected_alert_id:
            return False
        self.last_alerted[subject] = replace(  # what a DynamoOutbox record keeps
            suppression,
            sensitive_methods=frozenset(sorted(suppression.sensitive_methods)[:MAX_REMEMBERED_METHODS]),
            hours=frozenset(sorted(suppression.hours)[-MAX_REMEMBERED_HOURS:]),
        )
        return True

    def extend_quarantine(self, subject: str, alert_id: str, hours: Collection[int]) -> None:
        current = self.last_alerted.get(subject)
        # A DynamoOutbox adds the newest MAX_REMEMBERED_HOURS of one extension, as here.
        added = frozenset(sorted(set(hours))[-MAX_REMEMBERED_HOURS:])
        if current is not None and current.alert_id == alert_id and not added <= current.hours:
            self.last_alerted[subject] = replace(current, hours=current.hours | added)

    def alerted_since(self, since: datetime) -> Mapping[str, Suppression]:
        return {s: last for s, last in self.last_alerted.items() if last.at >= since}

    def open_incidents(self, since: datetime) -> Mapping[str, IncidentRecord]:
        return {n: r for n, r in self.incidents(self.incident_records).items() if r.last_at >= since}

    def incidents(self, networks: Collection[str]) -> Mapping[str, IncidentRecord]:
        found = (self.incident_records.get(n) for n in set(networks))
        return {r.network: r for r in found if r is not None and r.readable()}

    def remember_incident(self, record: IncidentRecord, expected_alert_id: str | None) -> bool:
        current = self.incident_records.get(record.network)
        if (current.last_alert_id if current is not None else None) != expected_alert_id:
            return False
        self.incident_records[record.network] = record.bounded()  # what a DynamoOutbox item keeps
        return True


@dataclass(slots=True)
class MemoryTaskQueue:
    """Fan-out tasks kept in order, for replays and the benchmark (SQS in a deployment)."""

    tasks: list[FanoutTask] = field(default_factory=list)

    def send(self, tasks: list[FanoutTask]) -> None:
        message_batches([task.to_json() for task in tasks])  # SQS's limits: FanoutError over them
        self.tasks.extend(tasks)

    def drain(self) -> list[FanoutTask]:
        drained, self.tasks = self.tasks, []
        return drained


@dataclass(slots=True)
class MemoryNotificationIntake:
    """The intake queue in memory, with :class:`~trailgeo.adapters.intake.SqsNotificationIntake`'s
    contract: a message received is in flight (no other receive gets it) until it is acknowledged
    (deleted) or released (visible again at once); a receive takes at most ``max_messages``, and
    says the queue was drained when it found fewer. ``refusing`` makes receives fail as a queue
    whose policy or key refuses them does."""

    bucket: str
    prefix: str = ""
    visible: list[tuple[str, str, str]] = field(default_factory=list)  # (message id, body, sender)
    in_flight: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # by receipt
    refusing: bool = False
    _counter: int = 0

    def send(self, body: str, sender: str = "") -> str:
        """Queue a message (what SNS, EventBridge or a sender does); its id."""
        self._counter += 1
        message_id = f"message-{self._counter}"
        self.visible.append((message_id, body, sender))
        return message_id

    def messages(self) -> int:
        """Messages not deleted: visible or in flight."""
        return len(self.visible) + len(self.in_flight)

    def receive(self, max_messages: int, seconds: float) -> Delivery:
        if self.refusing:
            raise IntakeError("AccessDenied receiving from the intake queue")
        taken, self.visible = self.visible[:max_messages], self.visible[max_messages:]
        delivery = Delivery(drained=len(taken) < max_messages)
        notices = TrailNotices(self.bucket, self.prefix)
        for message in taken:
            self._counter += 1
            receipt = f"receipt-{self._counter}"
            self.in_flight[receipt] = message
            delivery.notifications.append(Notification(receipt, notices.objects(*message, delivery)))
        return delivery

    def acknowledge(self, receipts: Collection[str]) -> None:
        for receipt in receipts:
            self.in_flight.pop(receipt, None)

    def release(self, receipts: Collection[str]) -> None:
        for receipt in receipts:
            message = self.in_flight.pop(receipt, None)
            if message is not None:
                self.visible.append(message)


@dataclass(slots=True)
class MemoryPartialStore:
    objects: dict[tuple[str, int], bytes] = field(default_factory=dict)

    def put(self, run_id: str, index: int, data: bytes) -> None:
        self.objects[run_id, index] = data

    def get(self, run_id: str, index: int) -> bytes:
        if (run_id, index) not in self.objects:  # as S3PartialStore
            raise FanoutError(f"partial {index} of {run_id} is missing")
        return self.objects[run_id, index]

    def discard(self, run_id: str, tasks: int) -> None:
        for index in range(tasks):
            self.objects.pop((run_id, index), None)


@dataclass(slots=True)
class MemoryFanoutTracker:
    batches: dict[str, tuple[int, set[int]]] = field(default_factory=dict)
    reducers: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def open(self, run_id: str, tasks: int, now: datetime) -> None:
        self.batches.setdefault(run_id, (tasks, set()))

    def task_done(self, run_id: str, index: int) -> int:
        if run_id not in self.batches:  # as DynamoFanoutTracker
            raise FanoutError(f"batch {run_id[:200]} was never opened")
        _, done = self.batches[run_id]
        done.add(index)
        return len(done)

    def claim_reduce(self, run_id: str, holder: str, until: datetime, now: datetime) -> bool:
        current = self.reducers.get(run_id)
        if run_id not in self.batches or (current is not None and current[1] >= now):
            return False
        self.reducers[run_id] = (holder, until)
        return True


def _resolution_document(resolution: Resolution) -> dict[str, str]:
    return {
        "verdict": resolution.verdict,
        "by": resolution.by,
        "at": resolution.at.isoformat(),
        "note": resolution.note,
    }


def _resolution_from_document(item: Mapping[str, str]) -> Resolution:
    return Resolution(
        verdict=cast(TriageVerdict, item["verdict"]),
        by=item["by"],
        at=datetime.fromisoformat(item["at"]),
        note=item.get("note", ""),
    )


def _record_document(record: TriageRecord) -> dict[str, object]:
    digest = record.digest
    return {
        "digest": {**asdict(digest), "detected_at": digest.detected_at.isoformat()},
        "resolution": _resolution_document(record.resolution),
        "version": record.version,
        "history": [_resolution_document(r) for r in record.history],
    }


def _record_from_document(item: Mapping[str, Any]) -> TriageRecord:
    digest = dict(item["digest"])
    digest["detected_at"] = datetime.fromisoformat(digest["detected_at"])
    return TriageRecord(
        digest=AlertDigest(**digest),
        resolution=_resolution_from_document(item["resolution"]),
        version=int(item["version"]),
        history=tuple(_resolution_from_document(r) for r in item.get("history", [])),
    )


@dataclass(slots=True)
class MemoryOperations:
    """What the operator commands read, over an in-memory ledger and outbox, and the triage records
    they write (kept in the outbox: ``MemoryOutbox.triage_records``)."""

    ledger: MemoryLedger
    alerts: MemoryOutbox
    table: str = "memory"
    exists: bool = True

    def table_info(self) -> TableInfo:
        if not self.exists:
            raise TableMissingError(self.table, "memory")
        items = len(self.ledger.entries) + len(self.ledger.runs) + len(self.ledger.closed)
        return TableInfo(state="ACTIVE", item_count=items + len(self.alerts.alerts), size_bytes=0)

    def watermark(self) -> datetime | None:
        return self.ledger.watermark()

    def runs(self) -> list[RunRecord]:
        ledger = self.ledger
        records = [
            RunRecord(
                run_id,
                "open",
                lease,
                len(keys),
                takeovers=ledger.takeovers.get(run_id, 0),
                poison=tuple(sorted(ledger.poison.get(run_id, ()))),
            )
            for run_id, (keys, lease) in ledger.runs.items()
        ]
        records.extend(
            RunRecord(
                run_id,
                "closed",
                None,
                files,
                closed_at=at,
                takeovers=ledger.takeovers.get(run_id, 0),
                poison=tuple(sorted(ledger.poison.get(run_id, ()))),
            )
            for run_id, (files, at) in ledger.closed.items()
            if run_id not in ledger.runs
        )
        return sorted(records, key=lambda r: r.run_id)

    def outbox(self) -> list[OutboxEntry]:
        entries = (self.outbox_entry(alert_id) for alert_id in sorted(self.alerts.alerts))
        return [entry for entry in entries if entry is not None]

    def outbox_entry(self, alert_id: str) -> OutboxEntry | None:
        outbox = self.alerts
        alert = outbox.alerts.get(alert_id)
        if alert is None:
            return None
        stamps = outbox.stamps.get(alert_id, {})
        state = "sent" if alert_id in outbox.sent else "parked" if alert_id in outbox.parked else "pending"
        return OutboxEntry(
            alert_id=alert_id,
            state=state,
            document=alert.to_json(),
            created=stamps.get("created"),
            sent_at=stamps.get("sent_at"),
            message_id=outbox.sent.get(alert_id),
            parked_at=stamps.get("parked_at"),
            parked_reason=outbox.parked.get(alert_id),
        )

    def triage(self, since: datetime) -> list[TriageRecord]:
        records = self.alerts.triage_records
        kept = (records[a] for a in sorted(records))
        return [r for r in kept if r.readable() and r.digest.detected_at >= since]

    def triage_record(self, alert_id: str) -> TriageRecord | None:
        record = self.alerts.triage_records.get(alert_id)
        return record if record is not None and record.readable() else None

    def write_triage(self, record: TriageRecord, expected_version: int) -> None:
        current = self.alerts.triage_records.get(record.alert_id)
        if (current.version if current is not None else 0) != expected_version:
            raise ConcurrentChangeError.of_triage(record.alert_id, expected_version)
        self.alerts.triage_records[record.alert_id] = record.bounded()


@dataclass(slots=True)
class MemoryTuningStore:
    """Tuning parameters kept in memory, with SSM's versions and its read-compare-write."""

    parameters: dict[str, StoredTuning] = field(default_factory=dict)

    def read(self, name: str) -> StoredTuning | None:
        return self.parameters.get(name)

    def write(
        self,
        name: str,
        text: str,
        *,
        expected_version: int | None,
        type: str,  # noqa: A002
        key_id: str | None = None,
        tier: str | None = None,
    ) -> int:
        current = self.parameters.get(name)
        if expected_version is None and current is not None:
            raise ConcurrentChangeError(
                f"parameter {name}: created by someone else while we edited it: "
                "nothing was written; run the command again"
            )
        now = current.version if current is not None else 0
        if expected_version is not None and now != expected_version:
            raise ConcurrentChangeError(
                f"parameter {name}: changed while we edited it (read version {expected_version}, "
                f"now {now or 'deleted'}): nothing was written; run the command again"
            )
        kept = current if current is not None else StoredTuning(0, type, "", key_id, tier or "Standard")
        self.parameters[name] = StoredTuning(now + 1, type, text, kept.key_id, kept.tier)
        return now + 1


@dataclass(slots=True)
class MemoryGeoResolver(GeoResolver):
    """Fixed answers per address: ``countries`` (and ``cities``, ``CC/City``), and, when ``networks``
    is given, an ASN database holding those (``networks=None``: no ASN database, like a layer built
    without one). Lookups are counted, so a test can tell which addresses were looked up."""

    countries: dict[str, str] = field(default_factory=dict)
    networks: dict[str, AsnInfo] | None = None
    cities: dict[str, str] = field(default_factory=dict)
    asn_lookups: list[str] = field(default_factory=list)

    def country(self, ip: str) -> str | None:
        return self.countries.get(ip)

    @property
    def has_cities(self) -> bool:
        return bool(self.cities)

    def city(self, ip: str) -> str | None:
        return self.cities.get(ip)

    @property
    def description(self) -> str:
        return "in-memory GeoIP"

    @property
    def has_asn(self) -> bool:
        return self.networks is not None

    def asn(self, ip: str) -> AsnInfo | None:
        self.asn_lookups.append(ip)
        return None if self.networks is None else self.networks.get(ip)
