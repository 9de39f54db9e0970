"""The alert as an AWS Chatbot (Amazon Q Developer in chat applications) custom notification (pure).

SNS delivers the ``https`` key of the alerts topic's ``MessageStructure=json`` message to
Chatbot subscriptions, while SQS and Lambda subscribers keep the alert JSON. Schema: version
``1.0``, source ``custom``, content (``textType`` ``client-markdown``, title, description,
nextSteps, keywords) and metadata (``threadId`` groups an alert and its re-alerts in one thread,
an incident and its quiet updates in another: ``Alert.thread_id``).

Chatbot renders client-markdown in the chat's own markdown (Slack mrkdwn, Teams markdown), so
attacker-controlled strings get the same treatment as in Slack (:mod:`trailgeo.core.render.mrkdwn`):
``&<>`` as entities (no ``<!channel>`` or ``<url|label>``), inside inline code with backticks
replaced (no styling), control characters removed, bounded lengths. Links are plain URLs we build
with percent-encoded parts (:func:`trailgeo.core.render.shared.console_links`), in nextSteps.

Imports: the standard library and ``trailgeo.core`` (the alert model, the detector registry,
``core.render``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from trailgeo.core.alerts import Alert, is_country, location_label, location_noun
from trailgeo.core.detectors import COUNTRY, detector
from trailgeo.core.render.mrkdwn import code_list, escape, inline_code, sources_text
from trailgeo.core.render.shared import (
    console_links,
    evidence_words,
    incident_member_lines,
    incident_text,
    network_words,
    rare_items,
    safe_id,
)

TITLE_LIMIT = 250
DESCRIPTION_LIMIT = 4000
MAX_KEYWORDS = 10
_ACCOUNT = re.compile(r"^\d{12}$")
_EMOJI = {"low": ":large_blue_circle:", "medium": ":large_yellow_circle:", "high": ":large_orange_circle:"}


def _title(alert: Alert) -> str:
    emoji = _EMOJI.get(alert.severity, ":red_circle:")
    rule = escape(alert.rule.name, 100)
    where = escape(location_label(alert.country), 60)
    return f"{emoji} {alert.severity.upper()}: {rule} ({where})"[:TITLE_LIMIT]


def _description(alert: Alert) -> str:
    budget = 600
    methods = [item.value for item in rare_items(alert)]
    omitted_methods = alert.omitted.methods
    ips = sources_text(alert, budget)
    lines = [
        f"*Who:* {inline_code(alert.principal, budget)}",
        f"*Account:* {inline_code(alert.cloud.account.id, 100)}",
        f"*Access key:* {code_list(alert.access_key_ids, alert.omitted.access_key_ids, budget)}",
        f"*From:* {inline_code(location_label(alert.country), 60)} {ips}",
        f"*When:* {inline_code(alert.first_event_time, 60)} to {inline_code(alert.last_event_time, 60)}",
        f"*Score:* {alert.score:g}/100 (threshold {alert.rule.threshold:g})",
        *([f"*Network:* {inline_code(network_words(alert), 600)}"] if alert.networks else []),
        *(f"*Evidence:* {inline_code(line, 600)}" for line in evidence_words(alert)),
        f"*Rare methods:* {code_list(methods, omitted_methods, 900, each=120)}",
        f"*User agent:* {code_list(alert.user_agent.original, alert.omitted.user_agent, 600, each=300)}",
        f"*Alert:* {inline_code(alert.alert_id, 80)}",
    ]
    if alert.follows_alert_id:
        kind = " (update)" if alert.quiet_update else ""
        lines.append(f"*Follows alert:* {inline_code(alert.follows_alert_id, 80)}{kind}")
    text = incident_text(alert)
    if text is not None:
        members = incident_member_lines(alert, MEMBERS_LISTED)
        lines.insert(0, f"*Incident:* {inline_code(text, 300)}")
        lines.insert(1, f"*Members:* {code_list(members, 0, 1200, each=200)}")
    return "\n".join(lines)[:DESCRIPTION_LIMIT]


MEMBERS_LISTED = 10


def _next_steps(alert: Alert, default_region: str) -> list[str]:
    links = console_links(alert, default_region)
    steps = ["Ask the owner of the principal whether they are travelling or on a new VPN or network."]
    if "access_key" in links:
        steps.append(f"Review every call made with the access key: {links['access_key']}")
    if "user_name" in links:
        steps.append(f"Review the calls by this user name: {links['user_name']}")
    if "principal" in links:
        steps.append(f"Inspect the principal in IAM: {links['principal']}")
    steps.append(
        "If not recognised: deactivate the key or revoke the sessions, then look for persistence "
        "(new users, keys, roles, policies) and changes to CloudTrail or GuardDuty."
    )
    return steps


def _keywords(alert: Alert) -> list[str]:
    """Our own values only (validated), never free text from CloudTrail."""
    keywords = ["trailgeo", alert.severity]
    if is_country(alert.country):
        keywords.append(alert.country)
    if _ACCOUNT.match(alert.cloud.account.id):
        keywords.append(alert.cloud.account.id)
    if alert.sensitive_methods:
        keywords.append("sensitive")
    return keywords[:MAX_KEYWORDS]


def chatbot_notification(alert: Alert, default_region: str = "us-east-1") -> dict[str, Any]:
    alert_id = safe_id(alert.alert_id)
    thread = safe_id(alert.thread_id)
    entry = detector(alert.detector)
    what = (
        f"unusual {escape(location_noun(alert.country), 60)} for AWS command"
        if entry is COUNTRY
        else escape(entry.rule_name, 80)
    )
    summary = f"{alert.severity.upper()}: {what}"
    return {
        "version": "1.0",
        "source": "custom",
        "id": alert_id,
        "content": {
            "textType": "client-markdown",
            "title": _title(alert),
            "description": _description(alert),
            "nextSteps": _next_steps(alert, default_region),
            "keywords": _keywords(alert),
        },
        "metadata": {
            "threadId": thread,
            "summary": summary,
            "eventType": entry.chatbot_event_type,
            "additionalContext": {"alert_id": alert_id, "score": f"{alert.score:g}"},
        },
    }


def chatbot_message(alert: Alert, default_region: str = "us-east-1") -> str:
    return json.dumps(chatbot_notification(alert, default_region))
