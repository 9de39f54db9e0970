"""Attacker-controlled text made inert in chat markdown (Slack ``mrkdwn``, which AWS Chatbot's
``client-markdown`` becomes): the escaping the Slack and Chatbot renderings share (pure).

Every string of an alert that came from CloudTrail (ARNs, user agents, session names, methods,
IPs, the explanation that quotes them) is attacker-controlled. In ``mrkdwn`` it is made inert in
two steps:

* ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;`` and ``&gt;`` (Slack's own escaping), so that
  ``<!channel>``, ``<!here>``, ``<@U123>`` and ``<http://evil|click>`` can neither ping nor link;
* the text goes inside inline code or a code block, with backticks replaced by a look-alike, so
  ``*``, ``_``, ``~`` and backticks cannot style or break out. Control characters, bidirectional
  overrides, zero-width and tag characters (``core.text.NEUTRALISED``) become ``?``; inline code
  is kept on one line.

``@channel`` typed as plain text never pings from an incoming webhook (no ``link_names``), and
inside code it stays text.

Imports: the standard library and ``trailgeo.core`` (the alert model, ``core.text``).
"""

from __future__ import annotations

from trailgeo.core.alerts import Alert
from trailgeo.core.text import UNSAFE

SECTION_LIMIT = 3000  # Block Kit: a section's text
FIELD_LIMIT = 2000  # Block Kit: a field's text
BACKTICK_STANDIN = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like a backtick, closes nothing
ELLIPSIS = "…"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


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
