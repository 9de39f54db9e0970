"""Publishing: every pending alert of the outbox sent to the alerts channel (SNS), one publisher at a
time, then marked sent, or parked when the channel refuses what it holds.

A thread's first notification below the paging severity (``RunOptions.paging_severity``: a medium
alert is worth a look, not a page) waits one schedule period (``RunOptions.settle``) before it goes
out. Whatever joins its thread meanwhile (an escalation of its incident, a re-alert of its subject,
an update) goes out inside it, as one notification at the highest severity of them all naming each
(``core.incidents.absorbed``): a stolen key's medium alert and the high one of its next calls a run
later are one notification, not two. A joined alert at the paging severity never waits: the
notification goes out at once. The wait never drops anything: once it is over, the notification goes
out whatever follows, and a waiting alert counts as pending (``OldestPendingAlertMinutes``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from trailgeo.app.detect.context import Dependencies, RunOptions, RunReport
from trailgeo.core.alerts import Alert
from trailgeo.core.incidents import absorbed, severity_rank, thread_joined
from trailgeo.observability import logger
from trailgeo.ports import AlertRefusedError, PublishError

# A publisher holds an alert this long: longer than one SNS publish with botocore's retries, shorter
# than the schedule, so an alert whose publisher died goes out with the next run.
PUBLISH_LEASE = timedelta(minutes=5)


def publish_pending(deps: Dependencies, report: RunReport, options: RunOptions | None = None) -> None:
    """Publish every pending alert of the outbox, each by one publisher at a time (in fan-out mode
    the scheduled run and reducers may publish side by side), then mark it sent. An alert the
    channel refuses for what it holds is parked (kept, counted, logged), never retried: one alert
    that can never go out does not fail the runs or hold back the others. The age of the oldest
    alert left pending (``oldest_pending_minutes``) is reported, so that none stays pending unseen.
    A thread's first notification below the paging severity waits to settle (module docstring)."""
    options = options or RunOptions()
    holder = uuid.uuid4().hex
    left: list[Alert] = []  # still pending once this run has tried: measured, whatever the reason
    settling: list[Alert] = []  # first notifications waiting to settle, with what joined them
    pending = deps.outbox.pending()
    joined = _joined(pending)
    inside = {a.alert_id for group in joined.values() for a in group}
    for alert in pending:
        if alert.alert_id in inside:
            continue  # goes out with the notification it joined
        group = joined.get(alert.alert_id, [])
        now = deps.clock()
        if thread_joined(alert) is None and _settling(alert, group, now, options):
            settling.extend((alert, *group))
            report.alerts_settling += 1
            logger.info(
                "alert waits to settle", alert_id=alert.alert_id, severity=alert.severity, joined=len(group)
            )
            continue
        if not deps.outbox.claim_publish(alert.alert_id, holder, now + PUBLISH_LEASE, now):
            left.extend((alert, *group))  # another invocation is publishing it (or a lease was forged)
            continue
        # A joined alert another publisher holds goes out on its own, as it was queued.
        carried = [
            a for a in group if deps.outbox.claim_publish(a.alert_id, holder, now + PUBLISH_LEASE, now)
        ]
        _publish(alert, carried, deps, report, left)
    if left or settling:
        # Reported every run (OldestPendingAlertMinutes, alarmed): an alert that never goes out,
        # whatever holds it back (a settling one included), pages rather than waits unseen.
        _, minutes = _oldest([*left, *settling], deps)
        report.oldest_pending_minutes = max(report.oldest_pending_minutes, minutes)
    if left:
        oldest, minutes = _oldest(left, deps)
        logger.warning("alerts still pending", alerts=len(left), oldest=oldest.alert_id, minutes=minutes)


def _oldest(alerts: Sequence[Alert], deps: Dependencies) -> tuple[Alert, int]:
    """The longest-waiting of ``alerts`` and its minutes since detection."""
    oldest = min(alerts, key=lambda a: (a.detected_at, a.alert_id))
    return oldest, max(0, int((deps.clock() - oldest.detected_at).total_seconds() // 60))


def _publish(
    alert: Alert, carried: Sequence[Alert], deps: Dependencies, report: RunReport, left: list[Alert]
) -> None:
    """Send ``alert`` carrying ``carried``; mark them all sent (the carrier first: a crash in between
    sends a carried alert again on its own, never loses it)."""
    try:
        message_id = deps.sink.publish(absorbed(alert, carried))
    except AlertRefusedError as exc:
        deps.outbox.park(alert.alert_id, str(exc))
        report.alerts_parked += 1
        logger.error("alert refused by its channel, parked", alert_id=alert.alert_id, error=str(exc))
        return  # the carried alerts go out on their own with the next run
    except PublishError as exc:
        left.extend((alert, *carried))
        report.alerts_pending += 1
        logger.error("alert not published, kept in the outbox", alert_id=alert.alert_id, error=str(exc))
        return
    deps.outbox.mark_sent(alert.alert_id, message_id)
    report.alerts_published += 1
    for member in carried:
        deps.outbox.mark_sent(member.alert_id, message_id)
        report.alerts_settled += 1
        logger.info(
            "alert sent inside its thread's first notification",
            alert_id=member.alert_id,
            carrier=alert.alert_id,
        )


def _joined(pending: Sequence[Alert]) -> dict[str, list[Alert]]:
    """The pending alerts that follow a thread whose first notification is pending too, by it."""
    firsts = {a.alert_id for a in pending if thread_joined(a) is None}
    joined: dict[str, list[Alert]] = {}
    for alert in pending:
        first = thread_joined(alert)
        if first is not None and first in firsts:
            joined.setdefault(first, []).append(alert)
    return joined


def _settling(first: Alert, joined: Sequence[Alert], now: datetime, options: RunOptions) -> bool:
    """Whether a thread's first notification still waits: it and what joined it all below the paging
    severity, and the first younger than the settle period (a joiner never extends it)."""
    if options.settle <= timedelta(0):
        return False
    highest = max(severity_rank(a.severity) for a in (first, *joined))
    return highest < severity_rank(options.paging_severity) and now - first.detected_at < options.settle
