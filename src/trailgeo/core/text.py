"""Characters that change what a reader sees without being seen: one registry for every rendering.

Attacker-controlled text (CloudTrail strings, S3 key names, a tuning document) reaches a terminal
(``trailgeo.cli``), Slack and AWS Chatbot (``core.render.mrkdwn``), e-mail and Security Hub
(:func:`plain`: ``core.render.email``, ``core.render.asff`` and the alert's explanation) and the
operations topic (tuning diffs). Each rendering neutralises the same characters, in its own way:
``?`` in chat (:data:`UNSAFE`), ``?`` or ``\\uXXXX`` in mail and findings (:func:`visible`,
:func:`plain`), ``\\uXXXX`` on a terminal and in tuning diffs (:func:`escape_table`, still the
same JSON for a parser). Pure: no I/O; imports the standard library only.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls: line breaks, NUL, and what starts terminal commands (ESC, CSI).
CONTROLS: tuple[tuple[int, int], ...] = ((0x00, 0x1F), (0x7F, 0x9F))
# Invisible or reordering characters (inclusive ranges): text that hides, or shows `exe.txt` for
# `txt.exe`, or smuggles a message a person cannot see but a program (or a model) reads.
INVISIBLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark (bidirectional)
    (0x115F, 0x1160),  # Hangul fillers (blank)
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, non-joiner, joiner; left-to-right and right-to-left marks
    (0x2028, 0x202E),  # line and paragraph separators; bidirectional embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidirectional isolates
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF9, 0xFFFB),  # interlinear annotation
    (0xE0000, 0xE007F),  # tag characters (invisible ASCII)
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
NEUTRALISED: tuple[tuple[int, int], ...] = CONTROLS + INVISIBLE


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(
        re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        for low, high in ranges
    )


UNSAFE = re.compile(f"[{_char_class(NEUTRALISED)}]")


def visible(text: str) -> str:
    """For plain text a person reads (e-mail, Security Hub): a control becomes ``?``, an invisible
    character its ``\\uXXXX`` escape, so the reader sees that something was hidden, and where."""
    return text.translate(_VISIBLE)


def json_escape(code: int) -> str:
    """``\\uXXXX`` as JSON writes it (a surrogate pair above U+FFFF): a JSON parser reads the
    same character back."""
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def escape_table(keep: str = "") -> dict[int, str]:
    """A ``str.translate`` table writing every character of :data:`NEUTRALISED` but ``keep`` as
    :func:`json_escape` does (a terminal shows the escape, a parser reads the same text)."""
    kept = {ord(ch) for ch in keep}
    return {
        code: json_escape(code)
        for low, high in NEUTRALISED
        for code in range(low, high + 1)
        if code not in kept
    }


_VISIBLE = {
    **{code: "?" for low, high in CONTROLS for code in range(low, high + 1)},
    **{code: json_escape(code) for low, high in INVISIBLE for code in range(low, high + 1)},
}


def plain(value: str, limit: int = 300) -> str:
    """Attacker-controlled text made safe for a plain-text line (e-mail, Security Hub): line
    breaks become spaces, the other characters of ``core.text.NEUTRALISED`` ``?`` (controls) or
    their ``\\uXXXX`` escape (bidirectional overrides, zero-width and tag characters)."""
    cleaned = visible(value.replace("\r", " ").replace("\n", " "))
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"
