"""The alert as a Slack Block Kit message, and the console links every channel shares (pure).

Every string of an alert that came from CloudTrail (ARNs, user agents, session names, methods,
IPs, the explanation that quotes them) is attacker-controlled. In Slack ``mrkdwn`` it is made
inert in two steps:

* ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;`` and ``&gt;`` (Slack's own escaping), so that
  ``<!channel>``, ``<!here>``, ``<@U123>`` and ``<http://evil|click>`` can neither ping nor link;
* the text goes inside inline code or a code block, with backticks replaced by a look-alike, so
  ``*``, ``_``, ``~`` and backticks cannot style or break out. Control characters, bidirectional
  overrides, zero-width and tag characters (``core.text.NEUTRALISED``) become ``?``; inline code
  is kept on one line.

``@channel`` typed as plain text never pings from an incoming webhook (no ``link_names``), and
inside code it stays text. Links are built here from percent-encoded parts, with labels of our
own. Lengths respect Block Kit's limits (header 150, section text 3000, 10 fields of 2000).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import quote

from trailgeo.core.alerts import Alert, location_label
from trailgeo.core.text import UNSAFE

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
MAX_BLOCKS = 50
MAX_CONTEXT_ELEMENTS = 10
METHOD_ROWS = 10
FALLBACK_LIMIT = 300

COLOURS = {"low": "#439FE0", "medium": "#ECB22E", "high": "#E8912D", "critical": "#E01E5A"}
BACKTICK_STANDIN = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like a backtick, closes nothing
ELLIPSIS = "…"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_CONSOLES = {
    "aws": "https://console.aws.amazon.com",
    "aws-cn": "https://console.amazonaws.cn",
    "aws-us-gov": "https://console.amazonaws-us-gov.com",
}


# ---------------------------------------------------------------------------- escaping


def escape(text: str, limit: int, *, code: bool = True, newlines: bool = False) -> str:
    """``text`` made inert for mrkdwn, at most ``limit`` characters once escaped (cut with "…").

    ``code``: backticks replaced (for inline code and code blocks). ``newlines``: keep line
    breaks (code blocks); otherwise they become spaces. Stops reading a huge value early.
    """
    pieces: list[str] = []
    used = 0
    cut = False
    for ch in text:
        if ch == "\n" and newlines:
            piece = "\n"
        elif ch in "\r\n\t":
            piece = " "
        elif ch == "`" and code:
            piece = BACKTICK_STANDIN
        elif ch in _ENTITIES:
            piece = _ENTITIES[ch]
        elif UNSAFE.match(ch):
            piece = "?"
        else:
            piece = ch
        if used + len(piece) > limit:
            cut = True
            break
        pieces.append(piece)
        used += len(piece)
    if cut:
        while pieces and used + len(ELLIPSIS) > limit:
            used -= len(pieces.pop())
        pieces.append(ELLIPSIS)
    return "".join(pieces)


def inline_code(text: str, limit: int = FIELD_LIMIT) -> str:
    """Attacker-controlled text as inline code: one line, inert, at most ``limit`` characters."""
    if not text:
        return "_none_"
    return f"`{escape(text, limit - 2)}`"


def code_block(text: str, limit: int = SECTION_LIMIT) -> str:
    """Attacker-controlled lines as a code block, inert, at most ``limit`` characters."""
    return f"```\n{escape(text, limit - 8, newlines=True)}\n```"


def code_list(values: list[str], omitted: int, limit: int, *, each: int = 300) -> str:
    """Values as inline code separated by commas; what does not fit becomes "and N more"."""
    if not values:
        return "_none_"
    shown: list[str] = []
    for index, value in enumerate(values):
        item = inline_code(value, each)
        rest = len(values) - index - 1 + omitted
        tail = f" and {rest} more" if rest else ""
        if len(", ".join([*shown, item])) + len(tail) > limit:
            more = f"and {len(values) - index + omitted} more"
            return f"{', '.join(shown)} {more}" if shown else more
        shown.append(item)
    return ", ".join(shown) + (f" and {omitted} more" if omitted else "")


def sources_text(alert: Alert, limit: int) -> str:
    """The source addresses as inline code, then the VPC endpoints they came through, if any."""
    endpoints = alert.vpc_endpoint_ids
    via = f" via {code_list(endpoints, 0, 300, each=70)}" if endpoints else ""
    return code_list(alert.source.ip, alert.omitted.source_ip, limit - len(via)) + via


def plain_text(text: str, limit: int) -> str:
    """For plain_text objects (never formatted, never pinging): one line, entities, bounded."""
    return escape(text, limit, code=False)


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


LINK_LABELS = {
    "access_key": "CloudTrail: calls with this access key",
    "user_name": "CloudTrail: calls by this user name",
    "principal": "IAM: the principal",
}


# ---------------------------------------------------------------------------- message


def _number(value: float) -> str:
    return f"{value:g}"


def header_text(alert: Alert) -> str:
    where = location_label(alert.country)
    return plain_text(f"{alert.severity.upper()} · {where} · {alert.principal}", HEADER_LIMIT)


def fallback_text(alert: Alert) -> str:
    """The notification text (push, desktop): one line, principal as inert inline code."""
    where = escape(location_label(alert.country), 60)
    prefix = f"{alert.severity.upper()}: {escape(alert.rule.name, 100)} {where} by "
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
    if alert.follows_alert_id:
        texts.append(("Follows alert", inline_code(alert.follows_alert_id, 100)))
    return [{"type": "mrkdwn", "text": f"*{title}*\n{text}"[:FIELD_LIMIT]} for title, text in texts][
        :MAX_FIELDS
    ]


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
        _methods_section(alert),
        _explanation_section(alert),
        _context(alert, default_region),
    ]
    return {
        "text": fallback_text(alert),
        "attachments": [{"color": COLOURS[alert.severity], "blocks": blocks[:MAX_BLOCKS]}],
    }
