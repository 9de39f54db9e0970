"""What the operations topic is told when the tuning changes: who, which version, and the diff.

An allowlist entry silences alerts, so whoever can write the tuning can blind the detector for a
principal, a country or a network. Each new version is therefore reported with a unified diff
against the version seen before, bounded in size, its hidden characters made visible (a
right-to-left override must not make ``*`` read as a harmless name). Pure: no I/O.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from datetime import datetime

from trailgeo.core.text import escape_table

MESSAGE_LIMIT = 32 * 1024  # characters: an e-mail a person reads (SNS takes 256 KiB)
SUBJECT_LIMIT = 100  # SNS's limit for a subject
_VISIBLE = escape_table(keep="\t\n")


@dataclass(frozen=True, slots=True)
class TuningVersion:
    """One version of the tuning document as stored (SSM numbers them from 1)."""

    version: int
    text: str
    modified_by: str = ""
    modified_at: datetime | None = None

    @property
    def digest(self) -> str:
        """Tells two texts apart under one version number (a parameter deleted and created again)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:32]


def change_subject(source: str, version: int) -> str:
    """ASCII, one line, at most :data:`SUBJECT_LIMIT` characters (SNS)."""
    subject = f"trailgeo: tuning changed, version {version} of {source}"
    subject = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in subject)
    return subject if len(subject) <= SUBJECT_LIMIT else subject[: SUBJECT_LIMIT - 3] + "..."


def change_message(
    source: str,
    current: TuningVersion,
    previous: TuningVersion | None,
    *,
    seen_before: int | None,
    problem: str | None,
    limit: int = MESSAGE_LIMIT,
) -> str:
    """The notification: what changed and by whom, whether it applies, then the unified diff
    (against the empty document when no earlier version was seen or it can no longer be read)."""
    who = f" by {current.modified_by}" if current.modified_by else ""
    when = f" at {current.modified_at:%Y-%m-%dT%H:%M:%SZ}" if current.modified_at else ""
    lines = [f"The tuning of trailgeo ({source}) is now version {current.version}, written{who}{when}."]
    if seen_before is None:
        lines.append("No earlier version was seen: the diff is against an empty document.")
    elif previous is None:
        lines.append(
            f"The version seen before ({seen_before}) can no longer be read: the diff is against an "
            "empty document."
        )
    else:
        lines.append(f"The version seen before is {previous.version}.")
    if problem:
        lines.append(f"It is INVALID, so the detector keeps the last valid tuning: {problem}")
    else:
        lines.append("It is valid and applies from this run on (allowlists silence alerts: check it).")
    lines.append("")
    header = "\n".join(lines).translate(_VISIBLE) + "\n"
    diff = tuning_diff(
        previous.text if previous else "",
        current.text,
        before=f"version {previous.version}" if previous else "(none)",
        after=f"version {current.version}",
    )
    return header + _bounded(diff, limit - len(header))


def tuning_diff(old: str, new: str, *, before: str, after: str) -> str:
    """The unified diff of two tuning texts, hidden characters made visible (what a person reads
    before a change is written, and what the operations topic is told after)."""
    diff = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=before, tofile=after, lineterm=""
    )
    return "\n".join(line.translate(_VISIBLE) for line in diff)


def _bounded(diff: str, limit: int) -> str:
    """The diff's first lines within ``limit`` characters, and how many lines were left out."""
    if len(diff) <= limit:
        return diff + "\n"
    kept = diff[: max(0, limit - 80)].rsplit("\n", 1)[0]
    left_out = diff.count("\n") - kept.count("\n")
    return f"{kept}\n... {left_out} more line(s) of the diff left out\n"
