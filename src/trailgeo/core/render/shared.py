"""What several renderings of an alert share (pure): the rare items that made it, the console
links to investigate it, its ids as identifiers, the VPC endpoints its calls came through, the
incident it is part of (its headline and members), and a finding's title, description and event
times (Security Hub, OCSF).

Links are built here from percent-encoded parts, so attacker-controlled parts can end neither
the URL nor a Slack link.

Imports: the standard library and ``trailgeo.core`` (the alert model).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import quote

from trailgeo.core.alerts import Alert, location_label, location_noun
from trailgeo.core.detectors import COUNTRY, detector
from trailgeo.core.incidents import headline, member_line

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_CONSOLES = {
    "aws": "https://console.aws.amazon.com",
    "aws-cn": "https://console.amazonaws.cn",
    "aws-us-gov": "https://console.amazonaws-us-gov.com",
}
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


class RareItem(NamedTuple):
    """What made the alert: a rare method (country detector) or a sibling detector's finding."""

    value: str
    score: float
    events: int
    sensitive: bool
    usual: str  # usual countries, when the detector has them


def rare_items(alert: Alert) -> list[RareItem]:
    if alert.methods:
        return [
            RareItem(
                m.method,
                m.score,
                m.events_in_run,
                m.sensitive,
                ", ".join(f"{cc} {weight:g}" for cc, weight in m.top_countries[:3]) or "none yet",
            )
            for m in alert.methods
        ]
    # sibling detectors (unusual command for a user, rare error code) carry findings instead
    return [
        RareItem(str(f.value), float(f.score), int(f.events_in_run), bool(f.sensitive), "")
        for f in getattr(alert, "findings", [])
    ]


def network_words(alert: Alert, limit: int = 5) -> str:
    """The source addresses' autonomous systems in words (an ASN database configured), ``""``
    without: ``AS16509 Amazon.com, Inc. (hosting provider: Amazon Web Services); AS7922 Comcast``."""
    seen: dict[tuple[int, str], str | None] = {}
    for network in alert.networks:
        seen.setdefault((network.asn, network.organization), network.hosting)
    parts = [
        f"AS{asn} {organization}" + (f" (hosting provider: {hosting})" if hosting else "")
        for (asn, organization), hosting in list(seen.items())[:limit]
    ]
    more = f"; and {len(seen) - limit} more" if len(seen) > limit else ""
    return "; ".join(parts) + more


def evidence_words(alert: Alert) -> list[str]:
    """Each evidence factor present, in words, with what it did to the severity."""
    return [f"{e.text} (severity +{e.raises})" if e.raises else e.text for e in alert.evidence]


def safe_id(value: str) -> str:
    """An alert id as an identifier: letters, digits, ``-`` and ``_`` only, at most 64."""
    return _UNSAFE_ID.sub("", value)[:64] or "unknown"


def via_endpoints(alert: Alert) -> str:
    """`` via <endpoint ids>`` after the addresses of calls through VPC endpoints, else ``""``."""
    endpoints = alert.vpc_endpoint_ids
    return f" via {', '.join(endpoints)}" if endpoints else ""


def finding_title(alert: Alert) -> str:
    """A finding's title (Security Hub, OCSF), unbounded: each rendering bounds it."""
    if detector(alert.detector) is COUNTRY:
        return f"Unusual {location_noun(alert.country)} for AWS command by {alert.principal}"
    return f"{alert.rule.name} by {alert.principal}"


def finding_description(alert: Alert) -> str:
    """Who, from where, the score and the explanation, on one line, unbounded: each rendering
    bounds it (and makes it plain)."""
    keys = ", ".join(alert.access_key_ids) or "none"
    return (
        f"{alert.rule.name}: {alert.principal} (account {alert.cloud.account.id}, access key {keys}) "
        f"from {location_label(alert.country)}{via_endpoints(alert)}, score {alert.score:g}. "
        + " ".join(alert.explanation.splitlines())
    )


def event_time(value: str, fallback: datetime) -> datetime:
    """A CloudTrail event time of the alert (ISO 8601; UTC when it names no zone), ``fallback``
    when it does not parse."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return fallback
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def incident_text(alert: Alert) -> str | None:
    """``One incident: 3 alerts across 2 accounts (3 principals); new incident <id>`` (or an update,
    or an escalation, of it), None for an alert of no incident."""
    info = alert.incident
    if info is None:
        return None
    kind = (
        "update of incident" if info.update else "escalation of incident" if info.escalation else "incident"
    )
    return f"{headline(info)}; {kind} {info.id}"


def incident_member_lines(alert: Alert, limit: int) -> list[str]:
    """The incident's other alerts, one line each, at most ``limit`` then "and N more" (members left
    out of the document counted too). Plain text: each rendering makes it inert its own way."""
    info = alert.incident
    if info is None:
        return []
    lines = [member_line(m) for m in info.members[:limit]]
    more = max(0, len(info.members) - limit) + info.omitted_members
    if more:
        lines.append(f"and {more} more")
    return lines


# ---------------------------------------------------------------------------- links


def _partition(arn: str) -> str:
    parts = arn.split(":")
    return parts[1] if len(parts) > 1 and parts[1] in _CONSOLES else "aws"


def principal_name(arn: str) -> tuple[str, str] | None:
    """("user", name) for an IAM user, ("role", name) for a role or an assumed-role session."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return None
    resource = parts[5]
    kind, _, rest = resource.partition("/")
    if parts[2] == "iam" and kind in {"user", "role"} and rest:
        return kind, rest.rsplit("/", 1)[-1]
    if parts[2] == "sts" and kind == "assumed-role" and rest:
        return "role", rest.split("/", 1)[0]
    return None


def event_history_user_name(arn: str) -> str | None:
    """The "User name" event history shows: the user's name, or an assumed role's session name."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return None
    kind, _, rest = parts[5].partition("/")
    if parts[2] == "iam" and kind == "user" and rest:
        return rest.rsplit("/", 1)[-1]
    if parts[2] == "sts" and kind == "assumed-role" and "/" in rest:
        return rest.split("/", 1)[1]
    return None


def alert_region(alert: Alert, default_region: str) -> str:
    """The alert's first region when it looks like one, else ``default_region``."""
    for region in alert.cloud.region:
        if _REGION.match(region):
            return region
    return default_region


def _param(value: str) -> str:
    """A URL component: at most 128 characters (IAM names and key ids are shorter), all encoded."""
    return quote(value[:128], safe="")


def console_links(alert: Alert, default_region: str = "us-east-1") -> dict[str, str]:
    """CloudTrail event history filtered on the access key and on the user name, and the IAM
    page of the principal (each only when it applies). Attacker-controlled parts are
    percent-encoded, so they cannot end the URL or a Slack link."""
    console = _CONSOLES[_partition(alert.principal)]
    region = alert_region(alert, default_region)
    history = f"{console}/cloudtrailv2/home?region={region}#/events"
    links: dict[str, str] = {}
    if alert.access_key_ids:
        links["access_key"] = f"{history}?AccessKeyId={_param(alert.access_key_ids[0])}"
    user = event_history_user_name(alert.principal)
    if user:
        links["user_name"] = f"{history}?Username={_param(user)}"
    named = principal_name(alert.principal)
    if named:
        kind, name = named
        links["principal"] = f"{console}/iam/home#/{kind}s/details/{_param(name)}"
    return links
