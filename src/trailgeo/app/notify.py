"""The notifier's domain call: one SQS message (an alert from the alerts topic) to every channel.

Delivery is at least once: a channel that fails makes :meth:`Notifier.notify` raise, the SQS
message is reported failed and retried, then dead-lettered after the queue's last receive.
Channels that already accepted an alert are remembered per execution environment (by alert id
and channel, bounded), so a retry that lands in the same warm environment skips them; across
environments, Security Hub updates the same finding (stable Id) and EventBridge consumers can
de-duplicate on ``detail.alert_id``, while Slack may then show the alert twice.

Only alerts the detector queued are acted on: each one is read back from the outbox (the table's
``OUTBOX`` item of its id). A message that names no queued alert, or differs from the one queued,
was not published by the detector (a principal that can publish to the topic or send to the
queue): it is dropped (not retried), logged and counted (``AlertsRefused``, by reason and in all).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aws_lambda_powertools import single_metric
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from trailgeo.core.alerts import Alert, compacted
from trailgeo.observability import count_by, logger, metrics
from trailgeo.ports import Channel, TrailgeoError

MEMORY_SIZE = 10_000
# The ``reason`` dimension of AlertsRefused: a message that is no queued alert, or not as queued.
REFUSED_REASONS = frozenset({"not_in_outbox", "differs_from_outbox"})


class OutboxReader(Protocol):
    def get(self, alert_id: str) -> Alert | None: ...


class NotificationError(TrailgeoError):
    """The message is not an alert, or some channel did not accept it: retry the message."""


@dataclass(frozen=True, slots=True)
class NotifierSettings:
    slack_webhook_secret_arn: str = ""
    security_hub_product_arn: str = ""
    event_bus_name: str = ""
    table_name: str = ""  # the detector's table: alerts are checked against its outbox
    region: str = "us-east-1"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> NotifierSettings:
        return cls(
            slack_webhook_secret_arn=environ.get("SLACK_WEBHOOK_SECRET_ARN", "").strip(),
            security_hub_product_arn=environ.get("SECURITY_HUB_PRODUCT_ARN", "").strip(),
            event_bus_name=environ.get("EVENT_BUS_NAME", "").strip(),
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


@dataclass(slots=True)
class DeliveryMemory:
    """(alert id, channel) pairs already delivered in this execution environment, bounded."""

    size: int = MEMORY_SIZE
    _seen: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str]) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


@dataclass(frozen=True, slots=True)
class NotifyReport:
    alert_id: str
    delivered: tuple[str, ...]
    skipped: tuple[str, ...]  # delivered by an earlier attempt
    refused: str = ""  # why the message was dropped (REFUSED_REASONS), when it was


@dataclass(slots=True)
class Notifier:
    channels: Sequence[Channel]
    memory: DeliveryMemory = field(default_factory=DeliveryMemory)
    outbox: OutboxReader | None = None  # None: not checked (tests, a notifier without a table)

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
            key = (alert.alert_id, channel.name)
            if key in self.memory:
                skipped.append(channel.name)
                count_by("NotifySkipped", "channel", {channel.name: 1})
                continue
            try:
                channel.send(alert)
            except TrailgeoError as exc:
                failed[channel.name] = str(exc)[:500]
                count_by("NotifyFailed", "channel", {channel.name: 1})
                continue
            self.memory.add(key)
            delivered.append(channel.name)
            count_by("Notified", "channel", {channel.name: 1})
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


def build_notifier(settings: NotifierSettings, session: Any = None) -> Notifier:
    """The configured channels, with clients from ``session`` (a boto3 session)."""
    import boto3

    from trailgeo.adapters.channels import (
        EventBridgeChannel,
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
        url = SecretWebhookUrl(client("secretsmanager"), settings.slack_webhook_secret_arn)
        channels.append(SlackChannel(SlackWebhookPoster(url), default_region=settings.region))
    if settings.security_hub_product_arn:
        channels.append(SecurityHubChannel(client("securityhub"), settings.security_hub_product_arn))
    if settings.event_bus_name:
        channels.append(EventBridgeChannel(client("events"), settings.event_bus_name))
    if not channels:
        raise NotificationError("no channel configured (Slack secret, Security Hub product or event bus)")
    outbox = None
    if settings.table_name:
        from trailgeo.adapters.dynamodb import DynamoOutbox

        outbox = DynamoOutbox(client("dynamodb"), settings.table_name)
    else:
        logger.warning("no TABLE_NAME: alerts are not checked against the detector's outbox")
    logger.info("notifier ready", channels=[c.name for c in channels], outbox=settings.table_name or None)
    return Notifier(channels, outbox=outbox)


def notifier_from_environ(session: Any = None) -> Notifier:
    return build_notifier(NotifierSettings.from_environ(os.environ), session)
