"""One detection run: plan, read, classify and geolocate, aggregate, score, commit, publish.

The Lambda handler, ``trailgeo replay`` and ``trailgeo-tools demo`` all call :func:`detect`; only
the adapters behind the ports differ.

Exactly-once, step by step:

1. The ledger tells which listed (or notified: ``app.detect.intake``) files are new, done, being
   worked on, or were claimed by a run that died (its lease expired).
2. New files are claimed under a run id; a dead run's files are taken over under *its* run id.
3. Files are read and aggregated; a file that cannot be read *now* is released for a later run.
4. Scores are computed against the history before this batch; alerts go into the outbox
   (keyed by a stable alert id) before counts are committed.
5. Counters are committed; each remembers the run ids it applied, so a taken-over run
   re-applies only what the dead one had not.
6. Files are marked done. Pending alerts, including older ones, are published.
7. With notification intake, a message is deleted only once its files are claimed or done.

An event-driven run (:func:`detect_arrivals`, ``Continuous=Enabled``) is the same pipeline on the
files one batch of the intake queue's messages names; two runs side by side (it and a scheduled run,
or two of it) are kept apart by step 2's conditional claims, as a retried run is.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from trailgeo.app.detect.alerting import score_and_raise
from trailgeo.app.detect.context import Dependencies, Dispatch, RunOptions, RunReport
from trailgeo.app.detect.ingest import ISOLATE_AFTER_FAILURES, read_batch, read_isolated
from trailgeo.app.detect.intake import receive_window, settle
from trailgeo.app.detect.plan import MAX_CATCH_UP, late_prefixes, plan_batches
from trailgeo.app.detect.publish import publish_pending
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.records import gc_paused
from trailgeo.observability import logger
from trailgeo.ports import ListedWindow, TransientReadError


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
    delivery = None
    if deps.intake is None:
        late = late_prefixes(end, watermark, report.window_start, options.late_every, options.lookback)
        report.late_prefixes_listed = late.listed
        listed = deps.source.list_window(report.window_start, end, late)
    else:  # Intake=Notifications: the queue's files, and now and then a reconciling listing
        listed, delivery = receive_window(deps.intake, end, deps, options, report)
    _run_batches(listed, scheduled_at, deps, options, report, dispatch)
    if deps.intake is not None and delivery is not None:
        settle(deps.intake, delivery, end, deps, report)
    # Files deferred or handed back must be listed again: the next run catches up from the last
    # watermark, which therefore stays where it is (a released file delivered early in this window
    # would otherwise fall out of the next run's look-back and be missed).
    if not report.files_deferred and not report.files_released:
        deps.ledger.advance_watermark(end)
    if options.alerting:
        publish_pending(deps, report, options)
    report.seconds = time.perf_counter() - started
    return report


def detect_arrivals(arrived_at: datetime, deps: Dependencies, options: RunOptions) -> RunReport:
    """An event-driven run (``Continuous=Enabled``): the files named by one batch of the intake
    queue's messages (``deps.intake``), planned, read, scored, committed and published as a
    scheduled run's are, under the same ledger, run records and outbox. It does less than a
    scheduled run: it lists nothing (no reconciliation), takes over no interrupted run and never
    reads or moves the watermark; the 15-minute schedule keeps doing all three, and drains what
    the event source left. It never fans out: one batching window's files are few."""
    if deps.intake is None:
        raise ValueError("an event-driven run needs the batch's messages (Dependencies.intake)")
    started = time.perf_counter()
    end = arrived_at.astimezone(UTC)
    report = RunReport(scheduled_at=end, window_start=end - options.lookback, window_end=end, arrivals=True)
    listed, delivery = receive_window(deps.intake, end, deps, options, report, reconcile=False)
    _run_batches(listed, end, deps, options, report, None, takeovers=False)
    settle(deps.intake, delivery, end, deps, report)
    if options.alerting:
        publish_pending(deps, report, options)
    report.seconds = time.perf_counter() - started
    return report


def _run_batches(
    listed: ListedWindow,
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    dispatch: Dispatch | None,
    *,
    takeovers: bool = True,
) -> None:
    report.files_listed = len(listed.objects)
    report.prefixes_listed = listed.prefixes_listed
    report.prefixes_not_due = listed.prefixes_not_due
    late = [obj for obj in listed.objects if obj.delivered_at <= report.window_start]
    if late:
        report.files_late = len(late)
        oldest = min(late, key=lambda obj: obj.delivered_at)
        logger.warning("late CloudTrail files picked up", files=len(late), oldest=oldest.key)
    report.keys_skipped.update(listed.skipped)
    planned = plan_batches(listed.objects, scheduled_at, deps, options, report, takeovers=takeovers)
    for batch_keys, run_id, takeover in planned:
        if dispatch is not None and not takeover:
            dispatch(batch_keys, run_id, scheduled_at, report)
        else:
            # The collector stays off while a batch is read, scored and committed, and comes back
            # once the batch is dropped: re-enabled earlier, its first pass scanned the whole
            # aggregate (measured: 0.11 s of a 539,228-event run) only for it to be freed after.
            with gc_paused():
                _process_batch(batch_keys, run_id, takeover, scheduled_at, deps, options, report)


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
        aggregate, outcomes, released = read_isolated(keys, run_id, attempts, deps, options, report)
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
        score_and_raise(aggregate, history, run_id, scheduled_at, deps, options, report)
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
