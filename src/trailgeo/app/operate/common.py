"""What the operator commands share: their error, and how they print times and tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from trailgeo.ports import OperationsView, TableInfo, TableMissingError, TrailgeoError


class OperateError(TrailgeoError):
    """An operator command cannot do what was asked; the message says why and what to do."""


def described(view: OperationsView) -> TableInfo:
    """The table's description; :class:`OperateError` when there is no such table."""
    try:
        return view.table_info()
    except TableMissingError as exc:
        raise OperateError(
            f"table {exc.table} not found in {exc.region}: give the stack output FrequencyTableName "
            "and the stack's --region"
        ) from None


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Aligned columns, two spaces apart, headers first; no trailing spaces."""
    body = [list(row) for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    lines = [list(headers), *body]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def duration(seconds: float) -> str:
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m"


def stamp(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def moment(text: str | None) -> datetime | None:
    """An ISO 8601 timestamp the code wrote, or None when absent or not one."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def one_line(text: str) -> str:
    """JSON's escapes without the quotes: a line break or control in ``text`` draws no row."""
    return json.dumps(text, ensure_ascii=False)[1:-1]
