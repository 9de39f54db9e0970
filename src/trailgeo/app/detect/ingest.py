"""Reading a batch: fetch, inflate and decode its files (several in flight, memory bounded) and add
them to the run's aggregate; a file unreadable for now is handed back, one past the batch's record
budget too. A batch that killed its earlier attempts is read file by file, its poison files set aside.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from trailgeo.app.detect.context import Dependencies, RunOptions, RunReport
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.categories import REASONS as CATEGORY_REASONS
from trailgeo.core.counters import event_hours
from trailgeo.core.keys import parse_key
from trailgeo.core.payload import UnreadablePayloadError, decompress
from trailgeo.core.records import DecodedFile, MalformedFileError, decode_trail_file
from trailgeo.observability import logger
from trailgeo.ports import LogSource, ObjectGoneError, ObjectUnreadableError, RunAttempts, TransientReadError

_T = TypeVar("_T")

# Small files are aggregated a few at a time, up to this many records, so that their eventIDs are
# checked for duplicates in one go (its fixed cost per call weighed on files of 35 events). Kept
# small: decoded records still in the CPU's cache are counted faster (measured: 2,000 records a
# group ran slower than one file at a time). Memory stays bounded by it, not by the batch.
INGEST_GROUP_RECORDS = 300
ROUTINE_SKIPS = frozenset(
    {"source_service_host", "source_aws_internal", "source_private", "source_vpce_own", "duplicate_event"}
    | CATEGORY_REASONS  # data and network activity events: in every file of a trail that logs them
)
# A batch that killed this many attempts (its run, then a takeover) is read file by file
# (read_isolated): one file that kills every attempt must not keep its window from being scored.
ISOLATE_AFTER_FAILURES = 2


def _skip_file(key: str, reason: str, report: RunReport, detail: str = "") -> str:
    report.files_skipped[reason] += 1
    logger.warning("object skipped", key=key, reason=reason, detail=detail[:200])
    return f"skipped:{reason}"


def new_aggregate(deps: Dependencies, options: RunOptions) -> RunAggregate:
    return RunAggregate(
        geolocate=deps.geo.country,
        detectors=options.detectors,
        locate_city=deps.geo.city,  # used only when the city detector is on
        asn_of=deps.geo.asn if deps.geo.has_asn else None,
        trusted_endpoint_accounts=frozenset(options.tuning.trusted_vpc_endpoint_accounts),
        scope=options.events,
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


def read_isolated(
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
