"""Publishing: every pending alert of the outbox sent to the alerts channel (SNS), one publisher at a
time, then marked sent, or parked when the channel refuses what it holds."""

from __future__ import annotations

import uuid
from datetime import timedelta

from trailgeo.app.detect.context import Dependencies, RunReport
from trailgeo.core.alerts import Alert
from trailgeo.observability import logger
from trailgeo.ports import AlertRefusedError, PublishError

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
