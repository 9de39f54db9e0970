"""The SNS envelope: one alert as a ``MessageStructure=json`` message, a rendering per protocol (pure).

SNS hands each subscription protocol its key: ``default`` (SQS, Lambda, HTTP) the alert JSON,
``email`` the plain-text brief, ``https`` an AWS Chatbot custom notification.

Imports: the standard library and ``trailgeo.core`` (the alert model, ``core.render``).
"""

from __future__ import annotations

import json

from trailgeo.core.alerts import Alert, compacted
from trailgeo.core.render.chatbot import chatbot_message
from trailgeo.core.render.email import email_body

SNS_MESSAGE_LIMIT = 250_000  # bytes; SNS takes 256 KiB, subject and attributes included


def sns_message(alert: Alert) -> str:
    """A MessageStructure=json payload: JSON for machines (``default``: SQS, Lambda, HTTP), text for
    email subscribers and an AWS Chatbot custom notification for https subscribers (Chatbot:
    core/render/chatbot.py). Never over SNS's size limit: an alert that would be is compacted first,
    with visible "truncated" marks."""
    for candidate in (alert, compacted(alert)):
        message = json.dumps(
            {
                "default": candidate.to_json(),
                "email": email_body(candidate),
                "https": chatbot_message(candidate),
            }
        )
        if len(message.encode()) <= SNS_MESSAGE_LIMIT:
            return message
    raise ValueError(f"alert {alert.alert_id} does not fit in an SNS message even compacted")
