"""One detection run: plan, read, classify and geolocate, aggregate, score, commit, publish.

The Lambda handler, ``trailgeo replay`` and ``trailgeo-tools demo`` all call :func:`detect`; only
the adapters behind the ports differ.

Exactly-once, step by step:

1. The ledger tells which listed files are new, done, being worked on, or were claimed by a
   run that died (its lease expired).
2. New files are claimed under a run id; a dead run's files are taken over under *its* run id.
3. Files are read and aggregated; a file that cannot be read *now* is released for a later run.
4. Scores are computed against the history before this batch; alerts go into the outbox
   (keyed by a stable alert id) before counts are committed.
5. Counters are committed; each remembers the run ids it applied, so a taken-over run
   re-applies only what the dead one had not.
6. Files are marked done. Pending alerts, including older ones, are published.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TypeVar

from trailgeo.core.aggregate import CategoryGroup, HitGroup, RunAggregate
from trailgeo.core.alerts import Alert, build_alert, build_sibling_alert, with_correlation, with_rollup
from trailgeo.core.counters import event_hours
from trailgeo.core.detectors import COUNTRY, DEFAULT_DETECTORS, REGISTRY
from trailgeo.core.identities import identity_digest, identity_of, role_of, subject_identity
from trailgeo.core.keys import parse_key
from trailgeo.core.payload import UnreadablePayloadError, decompress
from trailgeo.core.records import DecodedFile, MalformedFileError, decode_trail_file, gc_paused
from trailgeo.core.scoring import (
    History,
    MethodViews,
    ScoringPolicy,
    SiblingScore,
    score_cities,
    score_error_codes,
    score_group,
    score_user_methods,
)
from trailgeo.core.tuning import EMPTY_TUNING, Tuning
from trailgeo.observability import logger
from trailgeo.ports import (
    AlertOutbox,
    AlertRefusedError,
    AlertSink,
    BatchTooLargeError,
    FrequencyStore,
    GeoResolver,
    Ledger,
    LogObject,
    LogSource,
    ObjectGoneError,
    ObjectUnreadableError,
    PublishError,
    RunAttempts,
    Suppression,
    TransientReadError,
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
    rollup_after: int = 10  # more alerts than this in one run: an alert flood, rolled up
    rollup_in_full: int = 5  # of a flood, the most urgent sent in full (the next carries the rest)
    tuning: Tuning = EMPTY_TUNING  # allowlists and per-method overrides (docs/tuning.md)
    detectors: frozenset[str] = DEFAULT_DETECTORS  # "country", plus "user_method", "error_code"


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
    alerts_rolled_up: int = 0  # recorded, and sent inside another alert of the run (an alert flood)
    alerts_allowlisted: Counter[str] = field(default_factory=Counter)  # by verdict
    alerts_published: int = 0
    alerts_pending: int = 0
    alerts_parked: int = 0  # refused by the channel for what they hold: set aside (publish_pending)
    oldest_pending_minutes: int = 0  # the alert waiting longest after publishing, since detected
    alerts: list[Alert] = field(default_factory=list)
    seconds: float = 0.0


_T = TypeVar("_T")

# Batches are not claimed with less time than this left; their files stay new for the next run.
SAFETY_SECONDS = 60.0
# Small files are aggregated a few at a time, up to this many records, so that their eventIDs are
# checked for duplicates in one go (its fixed cost per call weighed on files of 35 events). Kept
# small: decoded records still in the CPU's cache are counted faster (measured: 2,000 records a
# group ran slower than one file at a time). Memory stays bounded by it, not by the batch.
INGEST_GROUP_RECORDS = 300
ROUTINE_SKIPS = frozenset(
    {"source_service_host", "source_aws_internal", "source_private", "source_vpce_own", "duplicate_event"}
)
# How far back a run catches up after an outage; the ledger keeps entries for 14 days.
MAX_CATCH_UP = timedelta(days=7)
# A batch that killed this many attempts (its run, then a takeover) is read file by file
# (_read_isolated): one file that kills every attempt must not keep its window from being scored.
ISOLATE_AFTER_FAILURES = 2


def run_id_for(scheduled_at: datetime, keys: list[str]) -> str:
    digest = hashlib.sha256(scheduled_at.isoformat().encode())
    for key in sorted(keys):
        digest.update(b"\x00" + key.encode())
    return digest.hexdigest()[:24]


# Hands a planned batch of new files to other workers (fan-out mode) instead of processing it
# here: (keys, run id, scheduled time, report) -> None.
Dispatch = Callable[[list[str], str, datetime, "RunReport"], None]


def detect(
    scheduled_at: datetime, deps: Dependencies, options: RunOptions, dispatch: Dispatch | None = None
) -> RunReport:
    """One scheduled run. With ``dispatch`` (fan-out mode), batches of new files are handed to
    workers (``trailgeo.app.fanout``); interrupted runs are still taken over here."""
    started = time.perf_counter()
    end = scheduled_at.astimezone(UTC)
    report = RunReport(scheduled_at=end, window_start=end - options.lookback, window_end=end)
    # After failed runs (an outage longer than the look-back), list from the last complete run on,
    # so that no file is silently missed; the ledger skips what was already done.
    watermark = deps.ledger.watermark()
    if watermark is None:
        # The very first run: start the watermark at its window, so that if it does not finish,
        # the next run catches up from here rather than from its own look-back.
        deps.ledger.advance_watermark(report.window_start)
    elif watermark < report.window_start:
        report.window_start = max(watermark, end - MAX_CATCH_UP)
        report.catch_up = True
        logger.warning("catching up after incomplete runs", since=report.window_start.isoformat())
    listed = deps.source.list_window(report.window_start, end)
    report.files_listed = len(listed.objects)
    late = [obj for obj in listed.objects if obj.delivered_at <= report.window_start]
    if late:
        report.files_late = len(late)
        oldest = min(late, key=lambda obj: obj.delivered_at)
        logger.warning("late CloudTrail files picked up", files=len(late), oldest=oldest.key)
    report.keys_skipped.update(listed.skipped)
    for batch_keys, run_id, takeover in _plan(listed.objects, scheduled_at, deps, options, report):
        if dispatch is not None and not takeover:
            dispatch(batch_keys, run_id, scheduled_at, report)
        else:
            # The collector stays off while a batch is read, scored and committed, and comes back
            # once the batch is dropped: re-enabled earlier, its first pass scanned the whole
            # aggregate (measured: 0.11 s of a 539,228-event run) only for it to be freed after.
            with gc_paused():
                _process_batch(batch_keys, run_id, takeover, scheduled_at, deps, options, report)
    # Files deferred or handed back must be listed again: the next run catches up from the last
    # watermark, which therefore stays where it is (a released file delivered early in this window
    # would otherwise fall out of the next run's look-back and be missed).
    if not report.files_deferred and not report.files_released:
        deps.ledger.advance_watermark(end)
    if options.alerting:
        publish_pending(deps, report)
    report.seconds = time.perf_counter() - started
    return report


def _plan(
    objects: list[LogObject],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
) -> Iterator[tuple[list[str], str, bool]]:
    """Yield (keys, run_id, takeover) batches: takeovers of runs that died first, then new files.

    A dead run is found from its run record, not from the listing: its files may have left the
    look-back by the time its lease expires.
    """
    now = deps.clock()
    for run_id, intended in deps.ledger.expired_runs(now):
        if _out_of_time(deps, report, len(intended)):
            return  # the dead run stays as it is: a later run takes it over
        won = deps.ledger.claim(intended, run_id, now + options.lease, now, takeover=True)
        report.files_recovered += len(won)
        logger.warning("taking over an interrupted run", run_id=run_id, files=len(won))
        if won:
            yield won, run_id, True
        else:
            deps.ledger.complete({}, run_id, now)  # everything was finished or handed back
    by_key = {obj.key: obj for obj in objects}
    status = deps.ledger.status(list(by_key))
    fresh: list[str] = []
    for key in sorted(by_key, key=lambda k: (by_key[k].delivered_at, k)):
        entry = status.get(key)
        if entry is None:
            fresh.append(key)
        elif entry.state == "claimed":
            report.files_in_progress_elsewhere += 1
    size = options.batch_files
    batches = deque(fresh[start : start + size] for start in range(0, len(fresh), size))
    while batches:
        keys = batches.popleft()
        if _out_of_time(deps, report, len(keys) + sum(map(len, batches))):
            return  # not claimed: still new for the next run
        run_id = run_id_for(scheduled_at, keys)
        lease_until = deps.clock() + options.lease
        # The run record goes first: a crash between it and the claims loses nothing.
        try:
            deps.ledger.begin(run_id, keys, lease_until, deps.clock())
        except BatchTooLargeError:
            if len(keys) == 1:  # one key (at most 1,024 bytes) always fits
                raise
            # Keys longer than CloudTrail's (a bucket writer's names) can pack over the run record's
            # limit: the batch is halved rather than every run failing on it.
            logger.warning("batch split in two: its run record would be too large", files=len(keys))
            batches.extendleft((keys[len(keys) // 2 :], keys[: len(keys) // 2]))
            continue
        won = deps.ledger.claim(keys, run_id, lease_until, deps.clock())
        report.files_in_progress_elsewhere += len(keys) - len(won)
        report.files_new += len(won)
        if won:
            yield won, run_id, False


def _out_of_time(deps: Dependencies, report: RunReport, files: int) -> bool:
    """Checked before a batch is claimed, so that files it will not reach are not held by a lease."""
    if deps.time_left() >= SAFETY_SECONDS:
        return False
    report.files_deferred += files
    logger.warning("deferring files to the next run", files=files)
    return True


def _skip_file(key: str, reason: str, report: RunReport, detail: str = "") -> str:
    report.files_skipped[reason] += 1
    logger.warning("object skipped", key=key, reason=reason, detail=detail[:200])
    return f"skipped:{reason}"


def _process_batch(
    keys: list[str],
    run_id: str,
    takeover: bool,
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
) -> None:
    attempts = deps.ledger.attempts(run_id) if takeover else None
    if attempts is not None and attempts.takeovers >= ISOLATE_AFTER_FAILURES:
        aggregate, outcomes, released = _read_isolated(keys, run_id, attempts, deps, options, report)
    else:
        budget = None if takeover else options.batch_records
        aggregate, outcomes, released = read_batch(keys, deps, options, report, record_budget=budget)
    if released and takeover:
        # The dead run may have committed these files' counts already: handing them back would
        # let a fresh run count them again. Stop; the lease expires and the takeover is retried.
        raise TransientReadError(f"{len(released)} file(s) of interrupted run {run_id} unreadable for now")
    if released:
        deps.ledger.release(released, run_id)
        report.files_released += len(released)
    finish_batch(aggregate, outcomes, run_id, scheduled_at, deps, options, report)


def new_aggregate(deps: Dependencies, options: RunOptions) -> RunAggregate:
    return RunAggregate(
        geolocate=deps.geo.country,
        detectors=options.detectors,
        locate_city=getattr(deps.geo, "city", None),  # used only when the city detector is on
        trusted_endpoint_accounts=frozenset(options.tuning.trusted_vpc_endpoint_accounts),
    )


def _fetch(source: LogSource, key: str) -> tuple[str, bytes | None, str | None]:
    """A file's bytes, or why there are none: gone, unreadable for good, or "transient"."""
    try:
        return key, source.read(key), None
    except ObjectGoneError:
        return key, None, "gone"
    except ObjectUnreadableError as exc:
        return key, None, exc.reason
    except TransientReadError as exc:
        logger.warning("object read failed, will retry on a later run", key=key, error=str(exc))
        return key, None, "transient"


def read_batch(
    keys: list[str],
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    record_budget: int | None = None,
) -> tuple[RunAggregate, dict[str, str], list[str]]:
    """Read, inflate, decode and aggregate a batch's files, several in flight. Returns the
    aggregate, each file's outcome, and the files that could not be read *now* (transient) or
    that come after the file whose records took the batch over ``record_budget``.

    Callers keep the cyclic collector off (``gc_paused``) from here until the aggregate is
    dropped (``detect``, the fan-out worker and reducer): millions of fresh objects and no cycles,
    which the collector would otherwise rescan as they grow and once more before they are freed.
    """
    aggregate = new_aggregate(deps, options)
    outcomes: dict[str, str] = {}
    released: list[str] = []

    fetch = partial(_fetch, deps.source)

    def ingest(fetched: Iterable[tuple[str, bytes | None, str | None]]) -> None:
        pending: list[tuple[str, DecodedFile]] = []
        pending_records = 0
        records = 0
        for position, (key, data, problem) in enumerate(fetched):
            if problem == "transient":
                released.append(key)
                continue
            if data is None:
                outcomes[key] = _skip_file(key, problem or "unknown", report)
                continue
            decoded = _decode(key, data, options, report)
            if isinstance(decoded, str):
                outcomes[key] = decoded
                continue
            records += len(decoded.records)
            if record_budget is not None and records > max(record_budget, len(decoded.records)):
                released.extend(keys[position:])  # in order: the files not taken yet
                report.files_over_budget += len(keys) - position
                logger.warning("batch over its record budget: files handed back", files=len(keys) - position)
                break
            pending.append((key, decoded))
            pending_records += len(decoded.records)
            if pending_records >= INGEST_GROUP_RECORDS:
                _aggregate_files(pending, aggregate, outcomes, report)
                pending, pending_records = [], 0
        _aggregate_files(pending, aggregate, outcomes, report)

    if options.read_concurrency <= 1:
        # Local files (replay): a reader thread would only add hand-offs of the GIL.
        ingest(map(fetch, keys))
    else:
        with ThreadPoolExecutor(max_workers=options.read_concurrency) as pool:
            ingest(_bounded_map(pool, fetch, keys, 2 * options.read_concurrency))
    return aggregate, outcomes, released


def _read_isolated(
    keys: list[str],
    run_id: str,
    attempts: RunAttempts,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
) -> tuple[RunAggregate, dict[str, str], list[str]]:
    """``read_batch`` for a batch that killed ISOLATE_AFTER_FAILURES attempts: one file at a time,
    each named in the run record before it is decoded. A file whose read or decoding raises
    (MemoryError, RecursionError, anything), or that the last attempt was reading when it died
    (killed out of memory or time: nothing raised), is poison: set aside in the run record for
    good, counted, logged with its key, closed with the batch as ``skipped:poison``, never retried,
    and the batch's other files are scored. One whose counting raises is not set aside by this
    attempt (the aggregate holds part of it): the run fails, and the next attempt sets it aside."""
    aggregate = new_aggregate(deps, options)
    outcomes: dict[str, str] = {}
    released: list[str] = []
    poison = set(attempts.poison)
    if attempts.reading is not None and attempts.reading not in poison:
        _set_aside(deps, run_id, attempts.reading, "the last attempt died reading it")
        poison.add(attempts.reading)
    logger.warning("reading an interrupted batch file by file", run_id=run_id, takeovers=attempts.takeovers)
    for key in keys:
        if key in poison:
            outcomes[key] = _skip_file(key, "poison", report, "set aside by an earlier attempt")

    def fetch(key: str) -> tuple[tuple[str, bytes | None, str | None], Exception | None]:
        try:
            return _fetch(deps.source, key), None
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this file's (handled in order below)
            return (key, None, None), exc

    readable = [key for key in keys if key not in poison]
    with ThreadPoolExecutor(max_workers=max(1, options.read_concurrency)) as pool:
        for (key, data, problem), read_error in _bounded_map(
            pool, fetch, readable, 2 * options.read_concurrency
        ):
            if read_error is None and problem == "transient":
                released.append(key)
                continue
            if read_error is None and data is None:
                outcomes[key] = _skip_file(key, problem or "unknown", report)
                continue
            _note_reading(deps, run_id, key)
            decoded: DecodedFile | str = ""
            error = read_error
            if error is None:
                try:
                    decoded = _decode(key, data or b"", options, report)
                except Exception as exc:  # noqa: BLE001 - this file's, so it is set aside, not the batch
                    error = exc
            if error is not None:
                detail = f"{type(error).__name__}: {error}"
                _set_aside(deps, run_id, key, detail)
                outcomes[key] = _skip_file(key, "poison", report, detail)
                continue
            if isinstance(decoded, str):
                outcomes[key] = decoded
                continue
            _aggregate_files([(key, decoded)], aggregate, outcomes, report)
    _note_reading(deps, run_id, None)  # a death from here on is no file's
    return aggregate, outcomes, released


# Tries at clearing a run record's note of the file being read once a write of it failed (a
# transient store error): left in place, it would have the next attempt set aside for good a file
# that was read and counted (the soak's random faults hit that write tens of times a week).
FORGET_READING_TRIES = 3


def _note_reading(deps: Dependencies, run_id: str, key: str | None) -> None:
    """``Ledger.note_reading``, failing safe. An attempt alive to see that write fail was not killed
    by the file the record names (read and counted before it): the name is cleared, then the run
    fails as any store error makes it fail. A file that kills the process leaves its name, as before."""
    try:
        deps.ledger.note_reading(run_id, key)
    except Exception:
        for _ in range(FORGET_READING_TRIES):
            try:
                deps.ledger.note_reading(run_id, None)
                break
            except Exception:  # noqa: BLE001, S112 - the first failure is the one the run reports
                continue
        else:
            logger.error("file being read not cleared from its run record", run_id=run_id)
        raise


def _set_aside(deps: Dependencies, run_id: str, key: str, why: str) -> None:
    if not deps.ledger.set_aside(run_id, key):
        logger.error("poison file not kept in its run record: it holds too many", run_id=run_id, key=key)
    logger.error("poison file set aside, its batch scored without it", run_id=run_id, key=key, why=why[:300])


def finish_batch(
    aggregate: RunAggregate,
    outcomes: dict[str, str],
    run_id: str,
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
) -> None:
    """Score the batch against the history before it, queue alerts, commit counts, close the run."""
    report.events += aggregate.events
    report.events_geolocated += aggregate.geolocated
    report.records_skipped.update(aggregate.skipped)
    history = deps.store.load(list(aggregate.counters))
    if options.alerting:
        _score_and_raise(aggregate, history, run_id, scheduled_at, deps, options, report)
    stats = deps.store.commit(aggregate.counters, history, run_id)
    report.counters_written += stats.written
    report.counters_already_applied += stats.already_applied
    report.category_maps_capped += stats.maps_capped
    if stats.maps_capped:
        logger.warning(
            "category maps capped: their lightest categories folded into the overflow category",
            items=stats.maps_capped,
            categories_folded=stats.categories_folded,
            partitions=list(stats.capped_partitions),
        )
    deps.ledger.complete(outcomes, run_id, deps.clock())


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[str], _T], items: list[str], ahead: int
) -> Iterator[_T]:
    """Like ``pool.map`` in order, but with at most ``ahead`` results in memory at once: memory
    is bounded by objects in flight, not by the size of the batch."""
    pending: deque[Future[_T]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def subject_of(principal: str, detector: str, value: str = "") -> str:
    """What one suppression window covers: a role, person or principal and a country
    (``identity|CC``), a city or an error code (``identity|city:CC/City``), or a person alone for
    unusual commands (``identity|user_method``). An Identity Center user alerting in two accounts
    is one incident; so are a role's sessions from one country (an attacker names sessions at
    will: one alert per session would let them bury the first under their own flood)."""
    if detector == COUNTRY.name:
        return f"{subject_identity(principal)}|{value}"
    identity = identity_of(principal)
    return f"{identity}|{detector}:{value}" if value else f"{identity}|{detector}"


# The sibling detectors' subjects: ``identity|<detector>`` or ``identity|<detector>:<value>``.
_SIBLING_SUBJECTS = tuple(name for name in REGISTRY if name != COUNTRY.name)


def country_subject(subject: str) -> tuple[str, str] | None:
    """(identity, country) of a country detector's subject, None for a sibling detector's."""
    identity, _, value = subject.rpartition("|")
    if not identity or not value or value.startswith(_SIBLING_SUBJECTS):
        return None
    return identity, value


def quarantined_identities(
    records: Mapping[str, Suppression], tuning: Tuning, on: date
) -> dict[str, frozenset[str]]:
    """Per country, the identity digests under quarantine (alerted within the quarantine), less
    those the tuning now allowlists for that country: allowlisting ends a quarantine."""
    by_country: dict[str, set[str]] = {}
    for subject in records:
        parsed = country_subject(subject)
        if parsed is None:
            continue
        identity, country = parsed
        # A role's subject stands for its sessions: a pattern ``.../role/*`` allows them.
        principal = f"{identity}/" if role_of(f"{identity}/session") == identity else identity
        fields = principal.split(":")
        account = fields[4] if len(fields) > 4 else ""  # arn:partition:service:region:account:...
        if tuning.country_verdict(account=account, principal=principal, country=country, on=on):
            continue
        by_country.setdefault(country, set()).add(identity_digest(identity))
    return {country: frozenset(digests) for country, digests in by_country.items()}


def alert_subject(alert: Alert) -> str:
    values = {
        "country": alert.country,
        "city": f"{alert.country}/{alert.source.geo.city_name}",
        "error_code": ",".join(sorted(f.value for f in alert.findings)),
    }
    return subject_of(alert.principal, alert.detector, values.get(alert.detector, ""))


def _score_and_raise(
    aggregate: RunAggregate,
    history: History,
    run_id: str,
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
) -> None:
    groups = list(aggregate.groups.values())
    if not groups:
        return
    subjects = {subject_of(g.principal, "country", g.country) for g in groups}
    if "user_method" in options.detectors:
        subjects |= {subject_of(g.principal, "user_method") for g in groups}
    errors = list(aggregate.error_groups.values())
    subjects |= {subject_of(g.principal, "error_code", g.value) for g in errors}
    cities = list(aggregate.city_groups.values())
    subjects |= {subject_of(g.principal, "city", g.value) for g in cities}
    # One read of every subject alerted within the longer window: this run's subjects' last alerts
    # (suppression, quarantined hours) and the quarantine in force in each country. A record older
    # than both makes no difference but to the compare-and-set, which reads it again when it fails.
    alerted = deps.outbox.alerted_since(scheduled_at - max(options.quarantine, options.suppress_for))
    recent = {s: alerted[s] for s in subjects if s in alerted}
    now_hour = int(scheduled_at.timestamp()) // 3600
    tuning = options.tuning
    in_force = {s: r for s, r in alerted.items() if r.at >= scheduled_at - options.quarantine}
    held_by_country = quarantined_identities(in_force, tuning, scheduled_at.date())
    # Hours to add to alerted subjects' quarantine, one write per subject at the end of the run
    # (a role's many sessions are one subject).
    extensions: dict[str, set[int]] = {}
    candidates: list[tuple[Alert, frozenset[int]]] = []
    method_views: MethodViews = {}  # one run, one history: each method summarised once
    vouched_shares: dict[str, float] = {}  # and each country's identities counted once
    for group in groups:
        subject = subject_of(group.principal, "country", group.country)
        last = recent.get(subject)
        active = last is not None and scheduled_at - last.at < options.quarantine
        scored = score_group(
            group,
            history,
            options.policy,
            now_hour,
            quarantined_hours=last.hours if last is not None and active else frozenset(),
            quarantined_identities=held_by_country.get(group.country, frozenset()),
            method_policy=tuning.method_policy if tuning.methods else None,
            method_views=method_views,
            vouched_shares=vouched_shares,
        )
        hours = frozenset(h for activity in group.methods.values() for h in activity.hours)
        alert = build_alert(scored, options.policy.threshold, scheduled_at, run_id)
        if alert is None:
            if active:
                # Below the threshold, still the alerted subject: its hours stay out of the history.
                extensions.setdefault(subject, set()).update(hours)
            continue
        verdict = tuning.group_verdict(
            account=group.account,
            principal=group.principal,
            country=group.country,
            source_ips=group.source_ips,
            user_agents=group.user_agents,
            on=scheduled_at.date(),
        )
        if verdict is not None:
            # Counted and logged, never silent: the tuning said so, the run says it used it.
            report.alerts_allowlisted[verdict] += 1
            logger.info(
                "alert allowlisted", verdict=verdict, principal=group.principal, country=group.country
            )
            continue
        candidates.append((alert, hours))
    siblings = _sibling_scores(groups, errors, cities, history, now_hour, options)
    candidates.extend(_sibling_candidates(siblings, scheduled_at, run_id, options, report))
    _raise_alerts(_correlated(candidates), recent, scheduled_at, deps, options, report, extensions)
    for subject, extra in sorted(extensions.items()):
        # Under the subject's last alert as it stands now (one this run raised carries the hours it
        # alerted with; these are the others).
        deps.outbox.extend_quarantine(subject, recent[subject].alert_id, extra)


def _sibling_scores(
    groups: list[HitGroup],
    errors: list[CategoryGroup],
    cities: list[CategoryGroup],
    history: History,
    now_hour: int,
    options: RunOptions,
) -> list[SiblingScore]:
    """Unusual city, unusual command for a user, rare error code: from the same pass, when configured
    (the aggregate only builds error and city groups for the detectors that are on)."""
    policy = options.policy
    scores = (
        [score_user_methods(g, history, policy, now_hour) for g in groups]
        if "user_method" in options.detectors
        else []
    )
    scores.extend(score_error_codes(g, history, policy, now_hour) for g in errors)
    scores.extend(score_cities(g, history, policy, now_hour) for g in cities)
    return scores


def _sibling_candidates(
    scores: list[SiblingScore], scheduled_at: datetime, run_id: str, options: RunOptions, report: RunReport
) -> list[tuple[Alert, frozenset[int]]]:
    found = []
    for scored in scores:
        alert = build_sibling_alert(scored, scheduled_at, run_id)
        if alert is None:
            continue
        if options.tuning.ignores_principal(scored.principal):
            report.alerts_allowlisted["ignored_principal"] += 1
            continue
        hours = frozenset(h for g in scored.sources for a in g.methods.values() for h in a.hours)
        found.append((alert, hours))
    return found


def _correlated(candidates: list[tuple[Alert, frozenset[int]]]) -> list[tuple[Alert, frozenset[int]]]:
    """The same person hitting two detectors in one run: each of those alerts one severity up."""
    by_identity: dict[str, set[str]] = {}
    for alert, _ in candidates:
        by_identity.setdefault(identity_of(alert.principal), set()).add(alert.detector)
    out = []
    for alert, hours in candidates:
        detectors = by_identity[identity_of(alert.principal)]
        if len(detectors) > 1:
            alert = with_correlation(alert, sorted(detectors - {alert.detector}))  # noqa: PLW2901
        out.append((alert, hours))
    return out


MAX_SUBJECT_RACES = 5


class SuppressionRaceError(RuntimeError):
    """A subject's record changed under every attempt (the run fails; its takeover retries)."""


def _raise_alerts(
    candidates: list[tuple[Alert, frozenset[int]]],
    recent: dict[str, Suppression],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    extensions: dict[str, set[int]],
) -> None:
    """Queue alerts, one per (identity, country) per suppression window: an attacker's next
    runs of calls do not page the team again within the window, unless they reach for a
    sensitive method (IAM, credentials, logging...) not alerted yet.

    Every hour of an alerted subject stays quarantined (``RunOptions.quarantine``, 30 days from
    its last alert) at every level: the subject's own hours at the role, principal and key
    levels, the subject as an identity at the organization and method levels. Hours that were
    only suppressed are quarantined too: an attacker who keeps calling does not teach the model
    that their country is normal. A traveller's trip therefore alerts once a suppression window
    until it is allowlisted (``trailgeo allow``), which ends the quarantine.

    The subject's record is written (compare-and-set on the alert it held when read) before the
    alert is queued: another invocation deciding on the same subject at the same moment (fan-out
    reduces) makes this one read it again and decide anew, so the two do not both alert. A crash
    in between is repaired by the takeover of the run: the same alert id, found recorded, is
    queued then."""
    decided: list[Alert] = []
    for candidate, hours in sorted(candidates, key=lambda c: (-c[0].score, c[0].alert_id)):
        subject = alert_subject(candidate)
        for _ in range(MAX_SUBJECT_RACES):
            if _raise_one(
                candidate, hours, subject, recent, scheduled_at, deps, options, report, decided, extensions
            ):
                break
            recent.update(deps.outbox.recent([subject]))  # another invocation recorded one: read it
        else:
            raise SuppressionRaceError(f"subject {subject} kept changing under {MAX_SUBJECT_RACES} attempts")
    _queue(decided, options, deps, report)


def _raise_one(
    candidate: Alert,
    hours: frozenset[int],
    subject: str,
    recent: dict[str, Suppression],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    decided: list[Alert],
    extensions: dict[str, set[int]],
) -> bool:
    """Decide on one candidate against ``recent`` (an alert to queue goes to ``decided``, the
    hours of a suppressed one to ``extensions``); False when the subject's record changed under us."""
    alert = candidate
    sensitive = frozenset(m.method for m in alert.methods if m.sensitive)
    last = recent.get(subject)
    within = (
        last is not None and last.alert_id != alert.alert_id and scheduled_at - last.at < options.suppress_for
    )
    held = last.hours if last is not None and scheduled_at - last.at < options.quarantine else frozenset()
    if last is not None and within:
        # One escalation per window: the first rare sensitive method after an alert without
        # any pages again (as an update of that alert); later ones are part of the same story.
        if not sensitive or last.sensitive_methods:
            report.alerts_suppressed += 1
            # Suppressed is not forgiven: the subject's later hours are quarantined like its first.
            extensions.setdefault(subject, set()).update(hours)
            logger.info(
                "alert suppressed",
                alert_id=alert.alert_id,
                previous_alert_id=last.alert_id,
                since=last.at.isoformat(),
            )
            return True
        alert = alert.model_copy(update={"follows_alert_id": last.alert_id})
        logger.info("re-alert within the window: sensitive method", methods=sorted(sensitive))
    carried = last.sensitive_methods if last is not None and within else frozenset()
    remembered = Suppression(scheduled_at, alert.alert_id, sensitive | carried, held | hours)
    if not deps.outbox.remember(subject, remembered, last.alert_id if last is not None else None):
        return False
    recent[subject] = remembered
    decided.append(alert)
    return True


def _queue(decided: list[Alert], options: RunOptions, deps: Dependencies, report: RunReport) -> None:
    """Queue the run's alerts. Above ``rollup_after`` (an alert flood: a session or principal
    flood meant to bury the real alert), the ``rollup_in_full`` most urgent are queued in full
    and the next one carries all the rest (named, scored, kept in its document): the team reads
    a handful of messages, the real alert among the first. Sensitive methods and higher scores
    come first; every subject is recorded and suppressed as if alerted alone."""
    ranked = decided
    if len(decided) > options.rollup_after:
        ranked = sorted(decided, key=lambda a: (not a.sensitive_methods, -a.score, a.alert_id))
        carrier, rest = ranked[options.rollup_in_full], ranked[options.rollup_in_full + 1 :]
        ranked = [*ranked[: options.rollup_in_full], with_rollup(carrier, rest)]
        report.alerts_rolled_up += len(rest)
        logger.warning(
            "alert flood: alerts rolled up into one", rolled_up=len(rest), carrier=carrier.alert_id
        )
    for alert in ranked:
        if deps.outbox.put(alert):
            report.alerts_raised += 1
            report.alerts.append(alert)
            logger.info(
                "alert raised",
                alert_id=alert.alert_id,
                country=alert.country,
                principal=alert.principal,
                score=alert.score,
                severity=alert.severity,
            )


def _decode(key: str, data: bytes, options: RunOptions, report: RunReport) -> DecodedFile | str:
    """A file's records, or its outcome when it cannot be read (counted and logged)."""
    report.bytes_read += len(data)
    try:
        return decode_trail_file(decompress(data, name=key, limit=options.max_decompressed_bytes))
    except (UnreadablePayloadError, MalformedFileError) as exc:
        return _skip_file(key, exc.reason, report, exc.detail)


def _aggregate_files(
    files: list[tuple[str, DecodedFile]], aggregate: RunAggregate, outcomes: dict[str, str], report: RunReport
) -> None:
    """Add decoded files to the aggregate, in order, and record each one's outcome."""
    if not files:
        return
    # Each file's account from its key (CloudTrail's folder): the VPC endpoints of the organization;
    # its delivery time: the hours its events may be in (no forged far-future hour is counted).
    parsed = [parse_key(key) for key, _ in files]
    each = aggregate.add_files(
        [decoded.records for _, decoded in files],
        folders=[name.account for name in parsed],
        hours=[event_hours(name.delivered_at, report.scheduled_at) for name in parsed],
    )
    for (key, decoded), in_object in zip(files, each, strict=True):  # what the aggregate skipped in it
        report.files_read += 1
        if decoded.skipped:  # nearly always empty: two Counter updates a file were measurable
            report.records_skipped.update(decoded.skipped)
            in_object.update(decoded.skipped)
        # AWS services, "AWS Internal" and VPC traffic are in nearly every file: counted, and logged
        # per object only beside a reason worth a look.
        if not ROUTINE_SKIPS.issuperset(in_object):
            logger.info("records skipped in object", key=key, skipped=dict(in_object))
        outcomes[key] = "done"


# A publisher holds an alert this long: longer than one SNS publish with botocore's retries, shorter
# than the schedule, so an alert whose publisher died goes out with the next run.
PUBLISH_LEASE = timedelta(minutes=5)


def publish_pending(deps: Dependencies, report: RunReport) -> None:
    """Publish every pending alert of the outbox, each by one publisher at a time (in fan-out mode
    the scheduled run and reducers may publish side by side), then mark it sent. An alert the
    channel refuses for what it holds is parked (kept, counted, logged), never retried: one alert
    that can never go out does not fail the runs or hold back the others. The age of the oldest
    alert left pending (``oldest_pending_minutes``) is reported, so that none stays pending unseen."""
    holder = uuid.uuid4().hex
    left: list[Alert] = []  # still pending once this run has tried: measured, whatever the reason
    for alert in deps.outbox.pending():
        now = deps.clock()
        if not deps.outbox.claim_publish(alert.alert_id, holder, now + PUBLISH_LEASE, now):
            left.append(alert)  # another invocation is publishing it (or a lease was forged)
            continue
        try:
            message_id = deps.sink.publish(alert)
        except AlertRefusedError as exc:
            deps.outbox.park(alert.alert_id, str(exc))
            report.alerts_parked += 1
            logger.error("alert refused by its channel, parked", alert_id=alert.alert_id, error=str(exc))
            continue
        except PublishError as exc:
            left.append(alert)
            report.alerts_pending += 1
            logger.error("alert not published, kept in the outbox", alert_id=alert.alert_id, error=str(exc))
            continue
        deps.outbox.mark_sent(alert.alert_id, message_id)
        report.alerts_published += 1
    if left:
        # Reported every run (OldestPendingAlertMinutes, alarmed): an alert that never goes out,
        # whatever holds it back, pages rather than waits unseen.
        oldest = min(left, key=lambda a: (a.detected_at, a.alert_id))
        minutes = max(0, int((deps.clock() - oldest.detected_at).total_seconds() // 60))
        report.oldest_pending_minutes = max(report.oldest_pending_minutes, minutes)
        logger.warning("alerts still pending", alerts=len(left), oldest=oldest.alert_id, minutes=minutes)
