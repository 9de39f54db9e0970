"""Where the notifier delivers an alert: a Slack incoming webhook, Security Hub, an EventBridge bus
(the alert JSON, or an OCSF Detection Finding).

Each channel's ``send(alert)`` returns when the channel accepted the alert and raises
:class:`ChannelError` otherwise; the notifier then reports the SQS message failed so that SQS
retries it (and, after the last receive, moves it to the dead-letter queue).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import BotoCoreError, ClientError

from trailgeo.core.alerts import Alert
from trailgeo.core.render.asff import asff_finding, validate_finding
from trailgeo.core.render.ocsf import detection_finding
from trailgeo.core.render.slack import slack_message
from trailgeo.ports import TrailgeoError

SLACK_TIMEOUT_SECONDS = 5.0
WEBHOOK_MAX_AGE_SECONDS = 300
EVENT_SOURCE = "trailgeo"
EVENT_DETAIL_TYPE = "Unusual country for AWS command"
OCSF_DETAIL_TYPE = "OCSF Detection Finding"
# PutEvents takes at most 256 KB per entry (detail, source, detail type and resources together).
EVENT_DETAIL_LIMIT = 200 * 1024
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Slack's incoming-webhook hosts (commercial and GovSlack): the secret's URL goes nowhere else, so
# whoever can write the secret cannot have the notifier post alerts to a host of theirs.
SLACK_WEBHOOK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})


class ChannelError(TrailgeoError):
    """A channel did not accept the alert now; the message is retried by SQS."""


# ---------------------------------------------------------------------------- Slack


def check_webhook_url(url: str) -> str:
    """An https URL on Slack's webhook host (plain http only on loopback, for tests); anything
    else is refused, naming the host expected (never the URL: it is a credential)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unparsable port or bracketed host
        host, parts = None, urlsplit("")
    if parts.scheme == "https" and host in SLACK_WEBHOOK_HOSTS:
        return url
    if parts.scheme == "http" and host in _LOOPBACK:
        return url
    if parts.scheme == "https" and host:
        raise ChannelError(
            "the Slack webhook secret holds an https URL of another host: only "
            f"{' or '.join(sorted(SLACK_WEBHOOK_HOSTS))} is accepted"
        )
    raise ChannelError(
        f"the Slack webhook secret does not hold an https URL of {' or '.join(sorted(SLACK_WEBHOOK_HOSTS))}"
    )


def webhook_url(value: str | bytes) -> str:
    """The URL a secret string holds: the URL itself, or JSON with a ``url`` or ``webhook_url``
    key; checked by :func:`check_webhook_url`."""
    url = (value.decode("utf-8", "replace") if isinstance(value, bytes) else value).strip()
    if url.startswith("{"):
        try:
            document = json.loads(url)
        except ValueError as exc:
            raise ChannelError("the Slack webhook secret is neither a URL nor JSON") from exc
        if not isinstance(document, dict):
            document = {}
        url = str(document.get("url") or document.get("webhook_url") or "")
    return check_webhook_url(url)


@dataclass(slots=True)
class SecretWebhookUrl:
    """The webhook URL, read from Secrets Manager through Powertools Parameters
    (``SecretsProvider``), which caches it for ``max_age`` seconds per execution environment.

    :meth:`forget` (Slack answered 403, 404 or 410: a revoked or rotated webhook) makes the next
    read a forced fetch (``force_fetch``), as does a secret that holds no acceptable URL. The URL is
    a credential: it is never logged nor put in an error message.
    """

    provider: SecretsProvider
    secret_id: str
    max_age: int = WEBHOOK_MAX_AGE_SECONDS
    _refetch: bool = False

    @classmethod
    def from_client(
        cls, client: Any, secret_id: str, max_age: int = WEBHOOK_MAX_AGE_SECONDS
    ) -> SecretWebhookUrl:
        """Read through ``client`` (a Secrets Manager client)."""
        return cls(SecretsProvider(boto3_client=client), secret_id, max_age)

    def __call__(self) -> str:
        try:
            value = self.provider.get(self.secret_id, max_age=self.max_age, force_fetch=self._refetch)
        except GetParameterError as exc:
            raise ChannelError(f"cannot read the Slack webhook secret: {str(exc)[:300]}") from exc
        self._refetch = True  # until the value turns out to be a URL of Slack's
        if not isinstance(value, str | bytes):
            raise ChannelError("the Slack webhook secret is neither a URL nor JSON")
        url = webhook_url(value)
        self._refetch = False
        return url

    def forget(self) -> None:
        """Read the secret again next time (after a rotation made the cached URL fail)."""
        self._refetch = True


@dataclass(slots=True)
class SlackWebhookPoster:
    """POSTs a JSON payload to the webhook; 2xx is success, anything else a :class:`ChannelError`
    (a 429 included: SQS redelivers after the visibility timeout, well past Retry-After)."""

    url: Callable[[], str]
    timeout: float = SLACK_TIMEOUT_SECONDS

    def post(self, payload: dict[str, Any]) -> None:
        url = check_webhook_url(self.url())
        request = urllib.request.Request(  # noqa: S310 - scheme checked above (https, or loopback http)
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read(1024)
        except urllib.error.HTTPError as exc:
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            detail = exc.read(200).decode("utf-8", "replace")
            forget = getattr(self.url, "forget", None)
            if exc.code in {403, 404, 410} and callable(forget):
                forget()  # a revoked or rotated webhook: re-read the secret on the retry
            raise ChannelError(
                f"Slack answered HTTP {exc.code}"
                + (f" (Retry-After {retry_after[:10]})" if retry_after else "")
                + f": {detail[:200]}"
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise ChannelError(f"Slack webhook unreachable: {type(exc).__name__}") from exc


@dataclass(slots=True)
class SlackChannel:
    poster: SlackWebhookPoster
    default_region: str = "us-east-1"
    name: str = "slack"

    def send(self, alert: Alert) -> None:
        self.poster.post(slack_message(alert, self.default_region))


# ---------------------------------------------------------------------------- Security Hub


@dataclass(slots=True)
class SecurityHubChannel:
    client: Any  # SecurityHubClient
    product_arn: str
    name: str = "securityhub"

    def send(self, alert: Alert) -> None:
        finding = asff_finding(alert, self.product_arn)
        problems = validate_finding(finding)
        if problems:
            raise ChannelError(f"invalid ASFF finding: {'; '.join(problems)[:500]}")
        try:
            answer = self.client.batch_import_findings(Findings=[finding])
        except (ClientError, BotoCoreError) as exc:
            raise ChannelError(f"Security Hub BatchImportFindings failed: {exc}") from exc
        if answer.get("FailedCount", 0):
            failed = answer.get("FailedFindings", [])
            raise ChannelError(f"Security Hub refused the finding: {json.dumps(failed)[:500]}")


# ---------------------------------------------------------------------------- EventBridge


def _shrunk(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, list):
        return [_shrunk(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _shrunk(v, limit) for k, v in value.items()}
    return value


def bounded_detail(alert: Alert, limit: int = EVENT_DETAIL_LIMIT) -> str:
    """The alert JSON, its long strings shortened (and ``"truncated": true``) when it exceeds
    ``limit`` bytes, e.g. because of a megabyte-long user agent."""
    document = alert.to_json()
    if len(document.encode()) <= limit:
        return document
    data = json.loads(document)
    for each in (8192, 2048, 512, 128):
        shrunk = json.dumps({**_shrunk(data, each), "truncated": True})
        if len(shrunk.encode()) <= limit:
            return shrunk
    raise ChannelError("the alert does not fit in an EventBridge event")


def put_event(client: Any, bus_name: str, detail_type: str, detail: str, resources: list[str]) -> None:
    """One event on ``bus_name`` (source ``trailgeo``); a :class:`ChannelError` when EventBridge
    cannot be called or refuses the entry."""
    entry = {
        "Source": EVENT_SOURCE,
        "DetailType": detail_type,
        "Detail": detail,
        "EventBusName": bus_name,
        "Resources": resources,
    }
    try:
        answer = client.put_events(Entries=[entry])
    except (ClientError, BotoCoreError) as exc:
        raise ChannelError(f"EventBridge PutEvents failed: {exc}") from exc
    if answer.get("FailedEntryCount", 0):
        failed = [
            {"code": e.get("ErrorCode"), "message": e.get("ErrorMessage")}
            for e in answer.get("Entries", [])
            if e.get("ErrorCode")
        ]
        raise ChannelError(f"EventBridge refused the event: {json.dumps(failed)[:500]}")


@dataclass(slots=True)
class EventBridgeChannel:
    client: Any  # EventBridgeClient
    bus_name: str
    name: str = "eventbridge"
    resources: list[str] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        put_event(self.client, self.bus_name, EVENT_DETAIL_TYPE, bounded_detail(alert), list(self.resources))


@dataclass(slots=True)
class OcsfChannel:
    """The alert as an OCSF Detection Finding (``core.render.ocsf``) on an EventBridge bus, detail
    type ``OCSF Detection Finding``: for Security Lake (through Firehose) or any OCSF consumer."""

    client: Any  # EventBridgeClient
    bus_name: str
    product_version: str
    default_region: str = "us-east-1"
    name: str = "ocsf"

    def send(self, alert: Alert) -> None:
        detail = json.dumps(detection_finding(alert, self.product_version, self.default_region))
        if len(detail.encode()) > EVENT_DETAIL_LIMIT:  # the rendering bounds every string and list
            raise ChannelError(f"the OCSF finding of {alert.alert_id} is over {EVENT_DETAIL_LIMIT} bytes")
        put_event(self.client, self.bus_name, OCSF_DETAIL_TYPE, detail, [])
