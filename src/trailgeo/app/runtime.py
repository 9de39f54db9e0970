"""What the scheduled Lambda does around :func:`detect`: settings, wiring, metrics, the summary."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect, detect_arrivals
from trailgeo.app.fanout import Fanout, plan, run_task
from trailgeo.app.settings import Settings, SettingsError
from trailgeo.app.tuning_watch import TuningWatch, tuning_watch
from trailgeo.app.wiring import build_dependencies, build_fanout
from trailgeo.core.categories import REASONS as CATEGORY_REASONS
from trailgeo.core.evidence import MFA_SIGN_IN_REASON, ORG_EGRESS_REASON
from trailgeo.core.keys import KeyKind
from trailgeo.core.sign_ins import SIGN_IN_SKIP, UNREADABLE_SIGN_IN
from trailgeo.core.sources import SourceKind
from trailgeo.core.tuning import Tuning, TuningError, Verdict
from trailgeo.observability import count_by, logger, metrics
from trailgeo.ports import FanoutTask, TrailgeoError

TuningSource = Callable[[], Tuning]

# Every reason a run counts, per metric: the metric's ``reason`` dimension takes these values and
# ``other`` (observability.count_by), so a deployment has a known number of custom metrics whatever
# its bucket holds. The run summary and the log lines keep the exact reason.
REASONS: Mapping[str, frozenset[str]] = {
    "FilesSkipped": frozenset(
        # core.payload, core.records, adapters.aws (S3 refuses it past the retry window), and
        # app.detect (listed then deleted; unreadable, no reason said)
        {"not_gzip", "too_large", "corrupt_gzip", "truncated_gzip"}
        | {"invalid_json", "too_deep", "not_an_object", "no_records_key", "records_not_a_list"}
        | {"too_many_records"}  # core.records: more records than a delivery file, or too costly to decode
        | {"access_denied", "refused", "gone", "unknown"}
        | {"poison"}  # app.detect: a file its batch's attempts kept dying on, set aside (FilesPoisoned)
    ),
    "KeysSkipped": frozenset(
        {f"key_{kind.value}" for kind in KeyKind if kind is not KeyKind.LOG}
        # adapters.aws: the other services' folders beside CloudTrail/ under an account, a folder
        # under CloudTrail/ not named like a region, and any other folder (prefix_other)
        | {"prefix_other", "prefix_cloudtrail-digest", "prefix_cloudtrail-insight", "prefix_config"}
        | {"prefix_bad_region"}
        # app.detect.intake and adapters.intake: keys a notification named that are not the trail's
        # files (another bucket, outside the prefix or layout) or older than the listing would read
        | {"notification_other_bucket", "notification_outside_prefix", "notification_stale"}
    ),
    "RecordsSkipped": frozenset(
        {f"source_{kind.value}" for kind in SourceKind if kind is not SourceKind.PUBLIC}
        | {"source_vpce_own"}  # core.aggregate: a private address behind the organization's VPC endpoint
        | {"geo_unknown", "no_method", "bad_event_time", "duplicate_event", "field_truncated", "city_unknown"}
        | {"event_time_out_of_window"}  # core.aggregate: not within its file's delivery window
        # core.aggregate: data and network activity events, skipped (Events=Management) or, with
        # the _scored suffix, scored and counted apart (Events=All)
        | CATEGORY_REASONS
        | {"invalid_utf8_replaced", "record_not_object", "field_wrong_type"}  # core.records
        | {SIGN_IN_SKIP, UNREADABLE_SIGN_IN}  # core.sign_ins: Identity Center's sign-in records
    ),
    # the tuning's verdicts, and core.evidence: alerts held at the organization's learned egress, and
    # where the person signed in with a security key
    "AlertsAllowlisted": frozenset(verdict.value for verdict in Verdict)
    | {ORG_EGRESS_REASON, MFA_SIGN_IN_REASON},
}


@dataclass(slots=True)
class DetectorRuntime:
    settings: Settings
    deps: Dependencies
    options: RunOptions
    tuning_source: TuningSource | None = None
    tuning_loaded: bool = False
    fanout: Fanout | None = None  # fan-out mode: the scheduled run plans, workers read
    tuning_watch: TuningWatch | None = None  # reports each new tuning version (operations topic)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], clients: tuple[Any, Any, Any] | None = None
    ) -> DetectorRuntime:
        settings = Settings.from_environ(environ)
        deps = build_dependencies(settings, clients=clients)
        if "city" in settings.detectors.split(",") and not deps.geo.has_cities:
            raise SettingsError(
                f"DETECTORS includes city but {deps.geo.description} has no cities: build the GeoIP layer "
                "with a City database (TRAILGEO_MMDB, or MAXMIND_EDITION=GeoLite2-City)"
            )
        log_asn_database(settings, deps)
        logger.info("detector ready", geoip=deps.geo.description, bucket=settings.trail_bucket)
        return cls(
            settings=settings,
            deps=deps,
            options=settings.run_options(),
            tuning_source=tuning_source(settings),
            fanout=build_fanout(settings),
            tuning_watch=(
                tuning_watch(settings.tuning_parameter, settings.operations_topic_arn, settings.table_name)
                if settings.tuning_parameter and settings.operations_topic_arn
                else None
            ),
        )

    def run(self, scheduled_time: str, time_left: Callable[[], float]) -> dict[str, Any]:
        scheduled_at = parse_scheduled_time(scheduled_time)
        self.deps.time_left = time_left
        self.report_tuning_change()
        self.refresh_tuning(scheduled_at)
        if self.fanout is not None:
            report = plan(scheduled_at, self.deps, self.options, self.fanout)
        else:
            report = detect(scheduled_at, self.deps, self.options)
        emit_metrics(report)
        summary = summarize(report)
        logger.info("run finished", **summary)
        return summary

    def run_arrivals(self, event: Mapping[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
        """An event-driven run (``Continuous=Enabled``): the files one batch of the intake queue's
        messages names, at the invocation's time. Returns the event source's partial batch
        response: the messages whose files wait for a later run come back, the rest are deleted
        (a poisoned message included: counted, never retried). Raises, so that the whole batch comes
        back, only when the run itself fails."""
        from trailgeo.adapters.intake import SqsEventIntake

        if self.settings.intake != "Notifications":
            raise SettingsError(
                "an intake queue's batch reached a detector whose INTAKE is not Notifications"
            )
        batch = SqsEventIntake.from_event(event, self.settings.trail_bucket, self.settings.trail_prefix)
        arrived_at = self.deps.clock()
        self.deps.time_left = time_left
        self.refresh_tuning(arrived_at)
        report = detect_arrivals(arrived_at, replace(self.deps, intake=batch), self.options)
        emit_metrics(report)
        failures = batch.failures()
        summary = summarize(report) | {
            "batch_messages": len(batch.records),
            "batch_item_failures": len(failures),
        }
        logger.info("arrivals run finished", **summary)
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}

    def run_task(self, body: str, time_left: Callable[[], float]) -> dict[str, Any]:
        """A fan-out worker: one task (an SQS message body). Raises to have SQS deliver it again."""
        if self.fanout is None:
            raise SettingsError("a fan-out task reached a detector without FANOUT_QUEUE_URL/PARTIALS_BUCKET")
        task = FanoutTask.from_json(body)
        self.deps.time_left = time_left
        self.refresh_tuning(task.scheduled_at)
        result = run_task(task, self.deps, self.options, self.fanout)
        summary: dict[str, Any] = {
            "run_id": result.run_id,
            "task": result.index,
            "tasks": result.tasks,
            "tasks_done": result.tasks_done,
            "files_read": result.files_read,
            "events": result.events,
        }
        metrics.add_metric(name="TaskFilesRead", unit=MetricUnit.Count, value=result.files_read)
        if result.refused:
            summary["refused_keys"] = result.refused
            metrics.add_metric(name="TasksRefused", unit=MetricUnit.Count, value=1)
        if result.reduced is not None:
            emit_metrics(result.reduced)
            summary["batch"] = summarize(result.reduced)
        logger.info("task finished", **summary)
        return summary

    def report_tuning_change(self) -> None:
        """Tell the operations topic about a new tuning version (the scheduled run only). A
        failure to tell is logged and counted, never fatal: the next run tries again."""
        if self.tuning_watch is None:
            return
        try:
            if self.tuning_watch.check():
                metrics.add_metric(name="TuningChanged", unit=MetricUnit.Count, value=1)
        except TrailgeoError as exc:
            metrics.add_metric(name="TuningChangeUnreported", unit=MetricUnit.Count, value=1)
            logger.error("tuning change not reported, retried next run", error=str(exc)[:2000])

    def refresh_tuning(self, scheduled_at: datetime) -> None:
        """Read the tuning for this run. A broken edit keeps the last good tuning (logged as an
        error, with a metric to alarm on); with no good tuning yet, the run fails loudly rather
        than alert on what the team has allowlisted."""
        if self.tuning_source is None:
            return
        try:
            tuning = self.tuning_source()
        except TuningError as exc:
            metrics.add_metric(name="TuningInvalid", unit=MetricUnit.Count, value=1)
            if not self.tuning_loaded:
                raise
            logger.error("tuning invalid, keeping the last good one", error=str(exc)[:2000])
            return
        self.options = replace(self.options, tuning=tuning)
        self.tuning_loaded = True
        expired = tuning.expired_entries(scheduled_at.date())
        if expired:
            logger.warning(
                "allowlist entries expired: remove them",
                entries=[{"principals": e.principals, "countries": e.countries} for e in expired][:20],
            )


def tuning_source(settings: Settings) -> TuningSource | None:
    if settings.tuning_parameter:
        from trailgeo.adapters.ssm import SsmTuningSource
        from trailgeo.app.wiring import ssm_client

        source = SsmTuningSource(ssm_client())
        name = settings.tuning_parameter
        return lambda: source.load(name)
    if settings.tuning_file is not None:
        from trailgeo.adapters.local_tuning import load_tuning_file

        path = settings.tuning_file
        return lambda: load_tuning_file(path)
    return None


def parse_scheduled_time(value: str) -> datetime:
    """EventBridge's ``time`` (``2026-11-28T10:15:00Z``), the run's logical time, to the minute."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(second=0, microsecond=0)


def log_asn_database(settings: Settings, deps: Dependencies) -> None:
    """Say at cold start whether the hosting-provider evidence is on, and if it should be and is
    not, why: a missing database is a warning (a layer built without one), an unreadable one an
    error. Either way the country detection runs; each run counts the addresses it could not
    check (``networks.unavailable`` in the summary)."""
    path = settings.geoip_asn_path
    if path is None:
        logger.info("no ASN database configured (GEOIP_ASN_PATH): hosting-provider evidence off")
        return
    if deps.geo.has_asn:
        logger.info("ASN database ready", asn=getattr(deps.geo, "asn_description", str(path)))
        return
    reason = getattr(deps.geo, "asn_error", None) or f"ASN database not available: {path}"
    if path.exists():
        logger.error("ASN database unusable: hosting-provider evidence off", reason=reason, path=str(path))
    else:
        logger.warning("ASN database missing: hosting-provider evidence off", reason=reason, path=str(path))


def summarize(report: RunReport) -> dict[str, Any]:
    return {
        "scheduled_at": report.scheduled_at.isoformat(),
        "trigger": "arrivals" if report.arrivals else "schedule",
        "window_start": report.window_start.isoformat(),
        "catch_up": report.catch_up,
        "files_listed": report.files_listed,
        "prefixes_listed": report.prefixes_listed,
        "prefixes_not_due": report.prefixes_not_due,
        "late_prefixes_listed": report.late_prefixes_listed,
        "files_new": report.files_new,
        "files_recovered": report.files_recovered,
        "files_read": report.files_read,
        "files_deferred": report.files_deferred,
        "files_released": report.files_released,
        "files_over_budget": report.files_over_budget,
        "files_late": report.files_late,
        "tasks_dispatched": report.tasks_dispatched,
        "files_in_progress_elsewhere": report.files_in_progress_elsewhere,
        "files_skipped": dict(report.files_skipped),
        "keys_skipped": dict(report.keys_skipped),
        "events": report.events,
        "events_geolocated": report.events_geolocated,
        "records_skipped": dict(report.records_skipped),
        "counters_written": report.counters_written,
        "category_maps_capped": report.category_maps_capped,
        "alerts_raised": report.alerts_raised,
        "alerts_suppressed": report.alerts_suppressed,
        "alerts_rolled_up": report.alerts_rolled_up,
        "alerts_linked": report.alerts_linked,
        "alerts_allowlisted": dict(report.alerts_allowlisted),
        "alerts_published": report.alerts_published,
        "alerts_pending": report.alerts_pending,
        "alerts_parked": report.alerts_parked,
        "alerts_settling": report.alerts_settling,
        "alerts_settled": report.alerts_settled,
        "threads_reopened": report.threads_reopened,
        "oldest_pending_minutes": report.oldest_pending_minutes,
        "networks": dict(report.networks),
        **(_intake_summary(report) if report.notified else {}),
        "seconds": round(report.seconds, 3),
    }


def _intake_summary(report: RunReport) -> dict[str, Any]:
    return {
        "intake_messages": report.intake_messages,
        "intake_poisoned": dict(report.intake_poisoned),
        "intake_kept": report.intake_kept,
        "intake_backlog": report.intake_backlog,
        "intake_failed": report.intake_failed,
        "reconciled": report.reconciled,
        "files_missed_by_notifications": report.files_missed_by_notifications,
    }


def emit_intake_metrics(report: RunReport) -> None:
    """Notification intake only: what the queue brought, and what reconciliation found it missed."""
    count = MetricUnit.Count
    metrics.add_metric(name="IntakeMessages", unit=count, value=report.intake_messages)
    metrics.add_metric(name="IntakeMessagesKept", unit=count, value=report.intake_kept)
    metrics.add_metric(name="IntakeBacklog", unit=count, value=int(report.intake_backlog))
    metrics.add_metric(name="IntakeFailed", unit=count, value=int(report.intake_failed))
    # Messages that named nothing readable (their reasons in the summary and the log, with the sender)
    metrics.add_metric(name="IntakeMessagesPoisoned", unit=count, value=report.intake_poisoned.total())
    if report.reconciled:  # a datum per reconciliation, 0 included: the alarm sees it run
        metrics.add_metric(
            name="FilesMissedByNotifications", unit=count, value=report.files_missed_by_notifications
        )


def emit_metrics(report: RunReport) -> None:
    count = MetricUnit.Count
    if report.notified:
        emit_intake_metrics(report)
    metrics.add_metric(name="FilesRead", unit=count, value=report.files_read)
    metrics.add_metric(name="FilesDeferred", unit=count, value=report.files_deferred)
    metrics.add_metric(name="FilesReleased", unit=count, value=report.files_released)
    # Apart from FilesSkipped's reasons, without a dimension, for PoisonFileAlarm: each one needs a look.
    metrics.add_metric(name="FilesPoisoned", unit=count, value=report.files_skipped["poison"])
    metrics.add_metric(name="FilesLate", unit=count, value=report.files_late)
    # LIST cost: day prefixes listed, and late-only ones left to the hour's late listing
    metrics.add_metric(name="PrefixesListed", unit=count, value=report.prefixes_listed)
    metrics.add_metric(name="PrefixesNotDue", unit=count, value=report.prefixes_not_due)
    if report.tasks_dispatched:
        metrics.add_metric(name="TasksDispatched", unit=count, value=report.tasks_dispatched)
    metrics.add_metric(name="Events", unit=count, value=report.events)
    metrics.add_metric(name="EventsGeolocated", unit=count, value=report.events_geolocated)
    metrics.add_metric(name="CountersWritten", unit=count, value=report.counters_written)
    metrics.add_metric(name="AlertsRaised", unit=count, value=report.alerts_raised)
    metrics.add_metric(name="AlertsSuppressed", unit=count, value=report.alerts_suppressed)
    metrics.add_metric(name="AlertsRolledUp", unit=count, value=report.alerts_rolled_up)
    metrics.add_metric(name="AlertsPublished", unit=count, value=report.alerts_published)
    metrics.add_metric(name="AlertsPending", unit=count, value=report.alerts_pending)
    metrics.add_metric(name="AlertsParked", unit=count, value=report.alerts_parked)
    # Every run, 0 included: the alarm on it catches an alert kept pending, whatever keeps it.
    metrics.add_metric(
        name="OldestPendingAlertMinutes", unit=MetricUnit.Count, value=report.oldest_pending_minutes
    )
    metrics.add_metric(name="RunSeconds", unit=MetricUnit.Seconds, value=report.seconds)
    for name, counter in (
        ("AlertsAllowlisted", report.alerts_allowlisted),
        ("FilesSkipped", report.files_skipped),
        ("KeysSkipped", report.keys_skipped),
        ("RecordsSkipped", report.records_skipped),
    ):
        count_by(name, "reason", counter, REASONS[name])
