"""A run's candidate files from the notification queue (``Intake=Notifications``), reconciled now and
then with a listing, and the messages settled once their files are handed to a run.

The ledger stays the exactly-once guard: a file named twice, redelivered, or named after a later
file is planned like a listed one (new files claimed, others skipped). A message is acknowledged
(deleted) only once every file it names is claimed or done in the ledger, so a run that dies before
leaves it in the queue, to come back after its visibility timeout; a message whose files wait for a
later run (deferred, handed back, named after the run's time) is made visible again. Reconciliation
lists the window (as ``Intake=List`` does every run) once every ``reconcile_every``, plans what it
finds with the rest, and counts the files no notification had brought: ``FilesMissedByNotifications``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trailgeo.app.detect.context import Dependencies, RunOptions, RunReport
from trailgeo.observability import logger
from trailgeo.ports import Delivery, IntakeError, ListedWindow, LogObject, NotificationIntake

SCHEDULE = timedelta(minutes=15)
# A file named this long before the window's start is not read from a notification: what the
# listing's late tolerance (adapters.aws.S3LogSource.late_tolerance) would not read either. The
# ledger keeps its entries longer (14 days), so a redelivered notice of a file done is a no-op.
LATE_TOLERANCE = timedelta(hours=24)
# A file delivered (by its name) this recently may have its notification on the way still:
# reconciliation reads it, but does not count it as missed.
NOTIFICATION_GRACE = timedelta(minutes=15)


def reconcile_due(scheduled_at: datetime, every: timedelta) -> bool:
    """Whether the run scheduled at ``scheduled_at`` reconciles: one run in each ``every`` (runs are
    15 minutes apart), from the run's own time alone, so no state can skip or repeat it."""
    minutes = int(scheduled_at.astimezone(UTC).timestamp() // 60)
    return minutes % max(1, int(every.total_seconds() // 60)) < SCHEDULE.total_seconds() // 60


def receive_window(
    intake: NotificationIntake,
    end: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    *,
    reconcile: bool = True,
) -> tuple[ListedWindow, Delivery]:
    """The files of the intake's messages within the window's bounds, one object per key; with the
    reconciliation's listing added when it is due (or when the queue refuses). An event-driven run
    (``reconcile`` False) never lists: the scheduled runs reconcile."""
    window = ListedWindow()
    report.notified = True
    try:
        delivery = intake.receive(options.intake_messages, options.intake_seconds)
    except IntakeError as exc:
        logger.error("intake queue unavailable: listing the window instead", error=str(exc)[:500])
        report.intake_failed = True
        delivery = Delivery(drained=False)
    report.intake_messages = len(delivery.notifications)
    report.intake_poisoned.update(delivery.poisoned)
    report.intake_backlog = not delivery.drained and not report.intake_failed
    window.skipped.update(delivery.keys_skipped)
    earliest = report.window_start - LATE_TOLERANCE
    named: dict[str, LogObject] = {}
    for notification in delivery.notifications:
        for obj in notification.objects:
            if obj.delivered_at <= earliest:
                window.skipped["notification_stale"] += 1
            elif obj.delivered_at <= end:  # later ones: their message waits for a later run
                named.setdefault(obj.key, obj)
    window.objects.extend(named.values())
    if report.intake_backlog:
        logger.warning("intake queue not drained within the run's budget", messages=report.intake_messages)
    if reconcile and (report.intake_failed or reconcile_due(report.scheduled_at, options.reconcile_every)):
        _reconcile(window, named, end, deps, options, report)
    return window, delivery


def _reconcile(
    window: ListedWindow,
    named: dict[str, LogObject],
    end: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
) -> None:
    """List the window (reaching back two reconciliation intervals, so that one failed
    reconciliation run leaves no gap) and add what no message named. The ones the ledger has never
    seen and that landed before the grace are the notifications' misses."""
    start = min(report.window_start, end - 2 * options.reconcile_every)
    listed = deps.source.list_window(start, end)
    report.reconciled = True
    report.late_prefixes_listed = True
    window.prefixes_listed += listed.prefixes_listed
    window.skipped.update(listed.skipped)
    extra = [obj for obj in listed.objects if obj.key not in named]
    window.objects.extend(extra)
    if report.intake_failed or report.intake_backlog:
        return  # files not received yet are not misses
    status = deps.ledger.status([obj.key for obj in extra])
    missed = [obj for obj in extra if obj.key not in status and obj.delivered_at <= end - NOTIFICATION_GRACE]
    report.files_missed_by_notifications = len(missed)
    if missed:
        logger.warning(
            "files no notification brought, found by reconciliation",
            files=len(missed),
            first=[obj.key[:300] for obj in missed[:5]],
        )


def settle(
    intake: NotificationIntake, delivery: Delivery, end: datetime, deps: Dependencies, report: RunReport
) -> None:
    """Acknowledge each message whose files are all claimed or done in the ledger (or were never
    to be read); make the others visible again for the next run."""
    earliest = report.window_start - LATE_TOLERANCE
    wanted = {obj.key for n in delivery.notifications for obj in n.objects if obj.delivered_at > earliest}
    handed = deps.ledger.status(list(wanted)) if wanted else {}
    done: list[str] = []
    kept: list[str] = []
    for notification in delivery.notifications:
        settled = all(
            obj.delivered_at <= earliest or (obj.delivered_at <= end and obj.key in handed)
            for obj in notification.objects
        )
        (done if settled else kept).append(notification.receipt)
    intake.acknowledge(done)
    if kept:
        intake.release(kept)
        report.intake_kept = len(kept)
        logger.info("intake messages kept for a later run", messages=len(kept))
