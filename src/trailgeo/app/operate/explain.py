"""``trailgeo explain ALERT_ID``: an alert from the outbox, its delivery state and its brief;
read through :class:`~trailgeo.ports.OperationsView`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from trailgeo.app.operate.common import OperateError, described, one_line
from trailgeo.core.alerts import Alert
from trailgeo.core.render.email import email_body
from trailgeo.ports import OUTBOX_RETENTION, OperationsView, OutboxEntry

OUTBOX_DAYS = OUTBOX_RETENTION.days
_ALERT_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An outbox item that holds an alert: the item as stored and the alert read from it."""

    alert: Alert
    entry: OutboxEntry

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.entry.state,
            "created": self.entry.created,
            "sent_at": self.entry.sent_at,
            "message_id": self.entry.message_id,
            "parked_at": self.entry.parked_at,
            "parked_reason": self.entry.parked_reason,
            "alert": json.loads(self.alert.to_json()),
        }


def normalize_alert_id(alert_id: str) -> str:
    value = alert_id.strip().lower().removeprefix("a#")
    if not _ALERT_ID.match(value):
        raise OperateError(
            f"{alert_id!r} is not an alert id (32 hexadecimal characters, the 'Alert id:' line of the email)"
        )
    return value


def find_alert(view: OperationsView, alert_id: str) -> StoredAlert:
    """The alert from the outbox. Raises :class:`OperateError` when the id is unknown."""
    key = normalize_alert_id(alert_id)
    described(view)  # a wrong table name is not an unknown alert
    entry = view.outbox_entry(key)
    if entry is None:
        raise OperateError(
            f"alert {key} is not in table {view.table}: unknown id, or older than "
            f"{OUTBOX_DAYS} days (the outbox keeps alerts {OUTBOX_DAYS} days after "
            "they went out or were parked)"
        )
    return stored_alert(entry)


def stored_alert(entry: OutboxEntry) -> StoredAlert:
    """The alert an outbox item holds; :class:`OperateError` for an item that holds none."""
    try:
        alert = Alert.model_validate_json(entry.document or "")
    except ValueError:  # pydantic's ValidationError: an item written by someone else (parked as such)
        reason = entry.parked_reason or ""
        raise OperateError(
            f"outbox item {entry.alert_id} holds no alert (state {one_line(entry.state)}"
            + (f", parked: {one_line(reason)}" if reason else "")
            + "): the detector did not write it; find who did (DynamoDB data events in CloudTrail)"
        ) from None
    return StoredAlert(alert=alert, entry=entry)


def format_alert(stored: StoredAlert) -> str:
    entry = stored.entry
    if entry.state == "sent":
        state = f"sent {entry.sent_at or ''} (SNS message {entry.message_id or '?'})"
    elif entry.state == "parked":
        state = (
            f"parked {one_line(entry.parked_at or '')}: {one_line(entry.parked_reason or '?')} "
            "(refused for what it holds: never retried, no channel had it)"
        )
    else:
        state = "pending: not published yet (retried at every run)"
    return f"Outbox:   {state}\n\n{email_body(stored.alert).rstrip()}"
