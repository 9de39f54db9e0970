"""The alert as a Slack Block Kit message (pure).

Attacker-controlled strings are made inert by ``core.render.mrkdwn`` (entities, inline code or
code blocks, neutralised characters). Links come from ``core.render.shared.console_links``
(percent-encoded parts), with labels of our own. Lengths respect Block Kit's limits (header 150,
section text 3000, 10 fields of 2000).

Imports: the standard library and ``trailgeo.core`` (the alert model, ``core.render``).
"""

from __future__ import annotations

from typing import Any

from trailgeo.core.alerts import Alert, location_label
from trailgeo.core.render.mrkdwn import (
    FIELD_LIMIT,
    SECTION_LIMIT,
    code_block,
    code_list,
    escape,
    inline_code,
    plain_text,
    sources_text,
)
from trailgeo.core.render.shared import (
    RareItem,
    console_links,
    evidence_words,
    incident_member_lines,
    incident_text,
    network_words,
    rare_items,
)

HEADER_LIMIT = 150
MAX_FIELDS = 10
MAX_BLOCKS = 50
MAX_CONTEXT_ELEMENTS = 10
METHOD_ROWS = 10
FALLBACK_LIMIT = 300

COLOURS = {"low": "#439FE0", "medium": "#ECB22E", "high": "#E8912D", "critical": "#E01E5A"}

LINK_LABELS = {
    "access_key": "CloudTrail: calls with this access key",
    "user_name": "CloudTrail: calls by this user name",
    "principal": "IAM: the principal",
}


def _number(value: float) -> str:
    return f"{value:g}"


def header_text(alert: Alert) -> str:
    where = location_label(alert.country)
    return plain_text(f"{alert.severity.upper()} · {where} · {alert.principal}", HEADER_LIMIT)


def fallback_text(alert: Alert) -> str:
    """The notification text (push, desktop): one line, principal as inert inline code."""
    where = escape(location_label(alert.country), 60)
    incident = f" (incident of {alert.incident.alerts} alerts)" if alert.incident is not None else ""
    prefix = f"{alert.severity.upper()}: {escape(alert.rule.name, 100)} {where}{incident} by "
    return prefix + inline_code(alert.principal, FALLBACK_LIMIT - len(prefix))


def _fields(alert: Alert) -> list[dict[str, str]]:
    identity = alert.aws.cloudtrail.user_identity
    budget = FIELD_LIMIT - 40
    who = inline_code(alert.principal, budget - 200)
    if identity.type:
        who += f" ({inline_code(identity.type, 100)})"
    ips = sources_text(alert, budget)
    texts = [
        ("Who", who),
        ("Account", inline_code(alert.cloud.account.id, 100)),
        ("Access key", code_list(alert.access_key_ids, alert.omitted.access_key_ids, budget)),
        ("From", f"{inline_code(location_label(alert.country), 60)} {ips}"),
        (
            "When",
            (
                f"{inline_code(alert.first_event_time, 60)} to {inline_code(alert.last_event_time, 60)}\n"
                f"detected {alert.detected_at:%Y-%m-%dT%H:%M:%SZ}"
            ),
        ),
        (
            "Score",
            f"{_number(alert.score)}/100, {alert.severity.upper()} (threshold {alert.rule.threshold:g})",
        ),
        ("User agent", code_list(alert.user_agent.original, alert.omitted.user_agent, budget, each=600)),
    ]
    if alert.networks:
        texts.append(("Network", inline_code(network_words(alert), budget)))
    if alert.evidence:
        texts.append(("Evidence", "\n".join(inline_code(line, 600) for line in evidence_words(alert))))
    if alert.follows_alert_id:
        kind = " (update)" if alert.quiet_update else ""
        texts.append(("Follows alert", inline_code(alert.follows_alert_id, 100) + kind))
    if alert.incident is not None:
        kind = "update" if alert.incident.update else "escalation" if alert.incident.escalation else "new"
        texts.append(("Incident", f"{inline_code(alert.incident.id, 100)} ({kind})"))
    return [{"type": "mrkdwn", "text": f"*{title}*\n{text}"[:FIELD_LIMIT]} for title, text in texts][
        :MAX_FIELDS
    ]


def _method_rows(items: list[RareItem]) -> str:
    rows = ["score  calls  what  (usual countries)"]
    for item in items[:METHOD_ROWS]:
        flag = " [sensitive]" if item.sensitive else ""
        usual = f"  ({item.usual[:60]})" if item.usual else ""
        rows.append(f"{item.score:5.1f}  {item.events:5d}  {item.value[:120]}{flag}{usual}")
    return "\n".join(rows)


def _methods_section(alert: Alert) -> dict[str, Any]:
    items = rare_items(alert)
    more = max(0, len(items) - METHOD_ROWS) + alert.omitted.methods
    tail = f"\nand {more} more" if more else ""
    title = "*Rare methods*\n" if alert.methods else "*What is rare*\n"
    text = title + code_block(_method_rows(items), SECTION_LIMIT - len(title) - len(tail)) + tail
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


MEMBER_ROWS = 20


def _incident_section(alert: Alert) -> dict[str, Any] | None:
    """The incident's headline and its other alerts (inert, in a code block), when it has one."""
    text = incident_text(alert)
    if text is None:
        return None
    title = f"*{plain_text(text, 400)}*\n"
    members = incident_member_lines(alert, MEMBER_ROWS)
    body = code_block("\n".join(members), SECTION_LIMIT - len(title)) if members else ""
    return {"type": "section", "text": {"type": "mrkdwn", "text": (title + body)[:SECTION_LIMIT]}}


def _explanation_section(alert: Alert) -> dict[str, Any]:
    title = "*Why it is rare*\n"
    text = title + code_block(alert.explanation, SECTION_LIMIT - len(title))
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(alert: Alert, default_region: str) -> dict[str, Any]:
    elements = [
        {"type": "mrkdwn", "text": f"<{url}|{LINK_LABELS[name]}>"}
        for name, url in console_links(alert, default_region).items()
    ]
    elements.append({"type": "mrkdwn", "text": f"Alert {inline_code(alert.alert_id, 80)}"})
    return {"type": "context", "elements": elements[:MAX_CONTEXT_ELEMENTS]}


def slack_message(alert: Alert, default_region: str = "us-east-1") -> dict[str, Any]:
    """The incoming-webhook payload: fallback text plus blocks in an attachment coloured by severity."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header_text(alert), "emoji": False}},
        {"type": "section", "fields": _fields(alert)},
        *([incident] if (incident := _incident_section(alert)) is not None else []),
        _methods_section(alert),
        _explanation_section(alert),
        _context(alert, default_region),
    ]
    return {
        "text": fallback_text(alert),
        "attachments": [{"color": COLOURS[alert.severity], "blocks": blocks[:MAX_BLOCKS]}],
    }
