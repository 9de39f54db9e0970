"""The alert as e-mail: the SNS subject and the plain-text brief email subscribers receive (pure).

Every string of an alert may come from an attacker: the body neutralises control,
bidirectional, zero-width and tag characters (``core.text.plain``) and the subject is ASCII on
one line, at most SNS's 100 characters.

Imports: the standard library and ``trailgeo.core`` (the alert model, the detector registry,
``core.text``, ``core.render``).
"""

from __future__ import annotations

from trailgeo.core.alerts import Alert, is_country, location_label
from trailgeo.core.detectors import detector
from trailgeo.core.render.shared import (
    evidence_words,
    incident_member_lines,
    incident_text,
    network_words,
    via_endpoints,
)
from trailgeo.core.sources import UNKNOWN_LOCATION
from trailgeo.core.text import plain

SUBJECT_LIMIT = 100  # SNS rejects longer subjects


def email_subject(alert: Alert) -> str:
    actions = alert.event.action
    what = actions[0] if len(actions) == 1 else f"{len(actions)} methods"
    who = alert.principal
    if alert.detector == "user_method":
        subject = f"Unusual AWS command for a user: {what} by {alert.principal}"
    elif alert.detector == "city":
        subject = (
            f"Unusual city for AWS command: {what} from {alert.source.geo.city_name} by {alert.principal}"
        )
    elif alert.detector == "error_code":
        code = alert.findings[0].value if alert.findings else "?"
        subject = f"Rare AWS error code: {code} for {alert.principal}"
    elif alert.detector == "error_spike":
        errors = alert.findings[0].events_in_run if alert.findings else 0
        subject = f"Spike in AWS error messages: {errors} errors in an hour for {alert.principal}"
    elif alert.country == UNKNOWN_LOCATION:  # short: the principal has to fit in SNS's 100 characters
        subject = f"Unusual location for AWS command: {what} from an address not in GeoIP by {who}"
    elif not is_country(alert.country):  # a VPC endpoint
        subject = f"Unusual {location_label(alert.country)} for AWS command: {what} by {alert.principal}"
    else:
        subject = f"Unusual country for AWS command: {what} from {alert.country} by {alert.principal}"
    # The severity first: an inbox, or a pager's e-mail integration, sorts on it before anything
    # the subject had to cut (SNS keeps 100 characters; a principal's ARN is long).
    prefix = f"[{alert.severity.upper()}] " + ("Update: " if alert.quiet_update else "")
    subject = prefix + _incident_prefix(alert) + subject
    # SNS subjects: ASCII, no line breaks, at most 100 characters.
    subject = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in subject)
    return subject if len(subject) <= SUBJECT_LIMIT else subject[: SUBJECT_LIMIT - 3] + "..."


def _incident_prefix(alert: Alert) -> str:
    info = alert.incident
    if info is None:
        return ""
    if info.update:
        return f"Incident update ({info.alerts} alert(s)): "
    return f"Incident of {info.alerts} alerts: " if info.alerts > 1 else "Incident escalation: "


MEMBERS_IN_EMAIL = 50


def _incident_rows(alert: Alert) -> list[str]:
    text = incident_text(alert)
    if text is None:
        return []
    members = incident_member_lines(alert, MEMBERS_IN_EMAIL)
    return [
        f"Incident: {plain(text, 300)}",
        *(f"  - {plain(line, 600)}" for line in members),
        "",
    ]


def email_body(alert: Alert) -> str:
    networks = network_words(alert)
    rows = [
        f"{detector(alert.detector).rule_name}: {alert.severity.upper()} (score {alert.score:g}/100)",
        "",
        *_incident_rows(alert),
        f"Who:      {plain(alert.principal)}",
        f"Account:  {plain(alert.cloud.account.id)}",
        f"Key:      {plain(', '.join(alert.access_key_ids) or 'none')}",
        f"From:     {location_label(alert.country)}  IPs: {plain(', '.join(alert.source.ip))}"
        + (f" and {alert.omitted.source_ip} more" if alert.omitted.source_ip else "")
        + plain(via_endpoints(alert), 600),
        *([f"Network:  {plain(networks, 600)}"] if networks else []),
        *(f"Evidence: {plain(line, 600)}" for line in evidence_words(alert)),
        f"When:     {plain(alert.first_event_time)} .. {plain(alert.last_event_time)}",
        f"Detected: {alert.detected_at:%Y-%m-%dT%H:%M:%SZ}",
        f"Agents:   {plain('; '.join(alert.user_agent.original), 600)}"
        + (f" and {alert.omitted.user_agent} more" if alert.omitted.user_agent else ""),
        f"Calls:    {plain(', '.join(alert.event.action), 600)}",
        "",
        "Why it is rare:",
        *(plain(line, 1000) for line in alert.explanation.splitlines()),
        "",
        "First steps:",
        "1. Ask the owner of the principal whether they are travelling or using a new VPN or network.",
        "2. Review every call made with the access key(s) above in CloudTrail event history.",
        "3. If not recognised: deactivate the key / revoke the sessions, then look for persistence",
        "   (new users, access keys, roles, policies) and changes to CloudTrail or GuardDuty.",
        "",
        f"Alert id: {alert.alert_id}",
    ]
    return "\n".join(rows) + "\n"
