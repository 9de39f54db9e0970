"""The notifier's domain call: one SQS message (an alert from the alerts topic) to every channel.

Delivery is at least once: a channel that fails makes :meth:`Notifier.notify` raise, the SQS
message is reported failed and retried, then dead-lettered after the queue's last receive. Each
channel takes an alert once: a delivery record per (alert id, channel) in the detector's table
(Powertools Idempotency, ``adapters.deliveries``) makes a retry, an SNS duplicate or another
execution environment skip the channels that already took it and send it to the others.

Only alerts the detector queued are acted on: each one is read back from the outbox (the table's
``OUTBOX`` item of its id). A message that names no queued alert, or differs from the one queued,
was not published by the detector (a principal that can publish to the topic or send to the
queue): it is dropped (not retried), logged and counted (``AlertsRefused``, by reason and in all).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, Protocol

from aws_lambda_powertools import single_metric
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from trailgeo.adapters.deliveries import DeliveryInProgressError
from trailgeo.core.alerts import Alert, compacted
from trailgeo.observability import count_by, logger, metrics
from trailgeo.ports import Channel, TrailgeoError

# The ``reason`` dimension of AlertsRefused: a message that is no queued alert, or not as queued.
REFUSED_REASONS = frozenset({"not_in_outbox", "differs_from_outbox"})
Outcome = Literal["delivered", "skipped"]  # sent now, or by an earlier attempt


class OutboxReader(Protocol):
    def get(self, alert_id: str) -> Alert | None: ...


class Deliveries(Protocol):
    """Which channels already took an alert (``adapters.deliveries.DeliveryRecords``)."""

    def once(self, alert_id: str, channel: str, send: Callable[[], None]) -> Outcome: ...

    def register(self, context: Any) -> None: ...


class NotificationError(TrailgeoError):
    """The message is not an alert, or some channel did not accept it: retry the message."""


@dataclass(frozen=True, slots=True)
class NotifierSettings:
    slack_webhook_secret_arn: str = ""
    security_hub_product_arn: str = ""
    event_bus_name: str = ""
    ocsf_event_bus_name: str = ""  # OCSF Detection Findings on this bus
    table_name: str = ""  # the detector's table: alerts are checked against its outbox, deliveries kept
    region: str = "us-east-1"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> NotifierSettings:
        return cls(
            slack_webhook_secret_arn=environ.get("SLACK_WEBHOOK_SECRET_ARN", "").strip(),
            security_hub_product_arn=environ.get("SECURITY_HUB_PRODUCT_ARN", "").strip(),
            event_bus_name=environ.get("EVENT_BUS_NAME", "").strip(),
            ocsf_event_bus_name=environ.get("OCSF_EVENT_BUS_NAME", "").strip(),
            table_name=environ.get("TABLE_NAME", "").strip(),
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )


def parse_alert(body: str) -> Alert:
    """The alert in an SQS message body: raw delivery (the alert JSON), or an SNS envelope."""
    try:
        document: Any = json.loads(body)
        if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
            document = json.loads(document["Message"])
        return Alert.model_validate(document)
    except (ValueError, ValidationError, TypeError) as exc:
        raise NotificationError(f"the message is not an alert: {str(exc)[:300]}") from exc


def count_refused(reason: str) -> None:
    """``AlertsRefused`` by ``reason`` (dimensions ``service``, ``reason``) and in all (``service``
    alone): the total is what AlertRefusedAlarm watches, as an alarm cannot add up a SEARCH over
    the reasons, and a reason of tomorrow is counted in it too."""
    count_by("AlertsRefused", "reason", {reason: 1}, REFUSED_REASONS)
    with single_metric(
        name="AlertsRefused",
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.namespace,
        default_dimensions={"service": str(metrics.service)},
    ):
        pass  # written on leaving the block, beside the per-reason point


@dataclass(frozen=True, slots=True)
class NotifyReport:
    alert_id: str
    delivered: tuple[str, ...]
    skipped: tuple[str, ...]  # delivered by an earlier attempt
    refused: str = ""  # why the message was dropped (REFUSED_REASONS), when it was


class _EveryTime:
    """No delivery records (a notifier without a table): every attempt sends."""

    def once(self, alert_id: str, channel: str, send: Callable[[], None]) -> Outcome:  # noqa: ARG002
        send()
        return "delivered"

    def register(self, context: Any) -> None:
        pass


@dataclass(slots=True)
class Notifier:
    channels: Sequence[Channel]
    outbox: OutboxReader | None = None  # None: not checked (tests, a notifier without a table)
    deliveries: Deliveries = field(default_factory=_EveryTime)  # no table: every attempt sends

    def register(self, context: Any) -> None:
        """The invocation's Lambda context (its remaining time bounds a delivery in progress)."""
        self.deliveries.register(context)

    def notify(self, body: str) -> NotifyReport:
        """Every channel gets the alert; raises :class:`NotificationError` when any failed
        (after trying all of them, so one broken channel does not hold back the others)."""
        alert = parse_alert(body)
        refused = self._refusal(alert)
        if refused:
            count_refused(refused)
            logger.warning(
                "message refused: not an alert of the detector", alert_id=alert.alert_id, reason=refused
            )
            return NotifyReport(alert.alert_id, (), (), refused)
        delivered: list[str] = []
        skipped: list[str] = []
        failed: dict[str, str] = {}
        for channel in self.channels:
            try:
                outcome = self.deliveries.once(alert.alert_id, channel.name, _sender(channel, alert))
            except DeliveryInProgressError as exc:  # another invocation is sending it: retried later
                failed[channel.name] = str(exc)[:500]
                count_by("NotifyDeferred", "channel", {channel.name: 1})
                continue
            except TrailgeoError as exc:
                failed[channel.name] = str(exc)[:500]
                count_by("NotifyFailed", "channel", {channel.name: 1})
                continue
            (delivered if outcome == "delivered" else skipped).append(channel.name)
            count_by("Notified" if outcome == "delivered" else "NotifySkipped", "channel", {channel.name: 1})
        if failed:
            logger.error("alert not delivered", alert_id=alert.alert_id, failed=failed, delivered=delivered)
            raise NotificationError(f"alert {alert.alert_id} not delivered to {', '.join(sorted(failed))}")
        logger.info("alert delivered", alert_id=alert.alert_id, delivered=delivered, skipped=skipped)
        return NotifyReport(alert.alert_id, tuple(delivered), tuple(skipped))

    def _refusal(self, alert: Alert) -> str:
        """Why ``alert`` is not the detector's (a key of REFUSED_REASONS), or "" when it is. The
        detector publishes the queued alert, or its compacted form when it exceeds SNS's size."""
        if self.outbox is None:
            return ""
        queued = self.outbox.get(alert.alert_id)
        if queued is None:
            return "not_in_outbox"
        if alert != queued and alert != compacted(queued):
            return "differs_from_outbox"
        return ""


def _sender(channel: Channel, alert: Alert) -> Callable[[], None]:
    return lambda: channel.send(alert)


def build_notifier(settings: NotifierSettings, session: Any = None) -> Notifier:
    """The configured channels, with clients from ``session`` (a boto3 session)."""
    import boto3

    from trailgeo.adapters.channels import (
        EventBridgeChannel,
        OcsfChannel,
        SecretWebhookUrl,
        SecurityHubChannel,
        SlackChannel,
        SlackWebhookPoster,
    )
    from trailgeo.app.wiring import CLIENT_CONFIG

    session = session or boto3.session.Session()

    def client(service: str) -> Any:
        return session.client(service, region_name=settings.region, config=CLIENT_CONFIG)

    channels: list[Channel] = []
    if settings.slack_webhook_secret_arn:
        url = SecretWebhookUrl.from_client(client("secretsmanager"), settings.slack_webhook_secret_arn)
        channels.append(SlackChannel(SlackWebhookPoster(url), default_region=settings.region))
    if settings.security_hub_product_arn:
        channels.append(SecurityHubChannel(client("securityhub"), settings.security_hub_product_arn))
    if settings.event_bus_name:
        channels.append(EventBridgeChannel(client("events"), settings.event_bus_name))
    if settings.ocsf_event_bus_name:
        version = metadata.version("trailgeo")
        channels.append(OcsfChannel(client("events"), settings.ocsf_event_bus_name, version, settings.region))
    if not channels:
        raise NotificationError(
            "no channel configured (Slack secret, Security Hub product, event bus or OCSF event bus)"
        )
    if not settings.table_name:
        logger.warning("no TABLE_NAME: alerts are checked against no outbox and no delivery is recorded")
        return Notifier(channels)
    from trailgeo.adapters.deliveries import DeliveryRecords
    from trailgeo.adapters.dynamodb import DynamoOutbox

    dynamodb = client("dynamodb")
    logger.info("notifier ready", channels=[c.name for c in channels], table=settings.table_name)
    return Notifier(
        channels,
        outbox=DynamoOutbox(dynamodb, settings.table_name),
        deliveries=DeliveryRecords.on_table(dynamodb, settings.table_name),
    )


def notifier_from_environ(session: Any = None) -> Notifier:
    return build_notifier(NotifierSettings.from_environ(os.environ), session)
