"""``trailgeo alerts``: the triage loop over a deployment's alerts. ``list`` (filters, newest first,
a page at a time), ``show`` (the brief, the resolution, the console links), ``resolve`` (a verdict
kept with who and when, compared-and-set) and ``allow --from-alert`` (the narrowest allowlist entry
for an alert resolved as expected or a false positive, written only once a person said yes).

An alert is known from the outbox (30 days after it went out: its whole document) and from its
triage record (90 days after its detection: a digest and the resolutions, written by ``resolve``);
read through :class:`~trailgeo.ports.OperationsView`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from trailgeo.app.operate.allow import (
    AllowResult,
    TuningEdit,
    TuningParameter,
    calendar_date,
    propose_entry,
    write_entry,
)
from trailgeo.app.operate.common import OperateError, described, format_table, one_line, stamp
from trailgeo.app.operate.explain import (
    OUTBOX_DAYS,
    StoredAlert,
    format_alert,
    normalize_alert_id,
    stored_alert,
)
from trailgeo.core.alerts import Alert, is_country, location_label
from trailgeo.core.detectors import COUNTRY
from trailgeo.core.render.shared import console_links
from trailgeo.core.tuning import ACCOUNT_PATTERN, AllowedCountries
from trailgeo.core.tuning_changes import tuning_diff
from trailgeo.ports import (
    MAX_NOTE_CHARS,
    MAX_RESOLVER_CHARS,
    TRIAGE_RETENTION,
    VERDICTS,
    AlertDigest,
    OperationsView,
    Resolution,
    TriageRecord,
    TuningStore,
)

OPEN = "open"
STATES = (OPEN, *VERDICTS)
TRIAGE_DAYS = TRIAGE_RETENTION.days
MAX_PAGE = 1000
# ``allow --from-alert``: an entry lasts 30 days unless --until says otherwise, never more than 90.
DEFAULT_ALLOW_DAYS = 30
MAX_ALLOW_DAYS = 90
ALLOWABLE = ("expected", "false-positive")  # the verdicts an allowlist entry may follow


@dataclass(frozen=True, slots=True)
class TriagedAlert:
    """One alert as ``trailgeo alerts`` knows it: its digest, its triage state (``open`` or the
    verdict), the outbox's copy (None once the outbox let it go) and its triage record."""

    digest: AlertDigest
    stored: StoredAlert | None  # the outbox's item and its alert; None once the outbox let it go
    record: TriageRecord | None

    @property
    def state(self) -> str:
        return self.record.resolution.verdict if self.record is not None else OPEN

    @property
    def alert(self) -> Alert | None:
        return self.stored.alert if self.stored is not None else None

    @property
    def delivery(self) -> str:
        """pending, sent or parked (the outbox's state); expired when only the record is left."""
        return self.stored.entry.state if self.stored is not None else "expired"

    def as_dict(self) -> dict[str, Any]:
        digest, record = self.digest, self.record
        return {
            **asdict(digest),
            "detected_at": stamp(digest.detected_at),
            "state": self.state,
            "delivery": self.delivery,
            "resolution": _resolution_dict(record.resolution) if record is not None else None,
            "version": record.version if record is not None else 0,
        }


def _resolution_dict(resolution: Resolution) -> dict[str, Any]:
    return {
        "verdict": resolution.verdict,
        "by": resolution.by,
        "at": stamp(resolution.at),
        "note": resolution.note,
    }


def known_alerts(view: OperationsView, since: datetime) -> list[TriagedAlert]:
    """Every alert detected at or after ``since`` that the outbox or a triage record holds, newest
    first (then by id). Outbox items that hold no alert are left out (``status`` lists them)."""
    records = {record.alert_id: record for record in view.triage(since)}
    found: dict[str, TriagedAlert] = {}
    for entry in view.outbox():
        try:
            stored = stored_alert(entry)
        except OperateError:  # no alert (written by someone else): status and explain say so
            continue
        alert = stored.alert
        if alert.detected_at >= since and alert.alert_id == entry.alert_id:
            found[alert.alert_id] = TriagedAlert(AlertDigest.of(alert), stored, records.get(alert.alert_id))
    for alert_id, record in records.items():
        if alert_id not in found:
            found[alert_id] = TriagedAlert(record.digest, None, record)
    return sorted(found.values(), key=_position, reverse=True)


def _position(row: TriagedAlert) -> tuple[datetime, str]:
    """Where an alert stands in a list: by detection time, then by id (newest, highest first)."""
    return row.digest.detected_at, row.digest.alert_id


# --- list ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertFilter:
    since: datetime
    severities: frozenset[str] = frozenset()
    principal: str | None = None  # an fnmatch glob, case-sensitive, as the tuning's
    countries: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()  # open and verdicts; "resolved" is every verdict
    detectors: frozenset[str] = frozenset()

    def keeps(self, row: TriagedAlert) -> bool:
        digest = row.digest
        return (
            (not self.severities or digest.severity in self.severities)
            and (self.principal is None or fnmatch.fnmatchcase(digest.principal, self.principal))
            and (not self.countries or digest.location in self.countries)
            and (not self.states or row.state in self.states)
            and (not self.detectors or digest.detector in self.detectors)
        )


def alert_filter(
    *,
    since: datetime,
    severities: Sequence[str] = (),
    principal: str | None = None,
    countries: Sequence[str] = (),
    states: Sequence[str] = (),
    detectors: Sequence[str] = (),
) -> AlertFilter:
    wanted = set(states)
    if "resolved" in wanted:
        wanted = (wanted - {"resolved"}) | set(VERDICTS)
    return AlertFilter(
        since=since,
        severities=frozenset(severities),
        principal=principal,
        countries=frozenset(countries),
        states=frozenset(wanted),
        detectors=frozenset(detectors),
    )


@dataclass(frozen=True, slots=True)
class AlertPage:
    alerts: tuple[TriagedAlert, ...]
    next_token: str | None  # give it as --next for the page after this one
    matched: int  # alerts the filters kept, on every page

    def as_dict(self) -> dict[str, Any]:
        return {
            "alerts": [row.as_dict() for row in self.alerts],
            "matched": self.matched,
            "next": self.next_token,
        }


def page_token(row: TriagedAlert) -> str:
    """Where the next page starts: after this alert in the order (newest first, then id), so that
    alerts detected meanwhile, which come first, shift no page."""
    detected, alert_id = _position(row)
    position = f"{detected.astimezone(UTC).isoformat()}|{alert_id}"
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def _position_of(token: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        detected, alert_id = text.split("|", 1)
        moment = datetime.fromisoformat(detected)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise OperateError(f"--next {token!r}: not a token this command printed") from None
    if moment.tzinfo is None:
        raise OperateError(f"--next {token!r}: not a token this command printed")
    return moment, alert_id


def list_alerts(
    view: OperationsView, wanted: AlertFilter, *, limit: int = 50, next_token: str | None = None
) -> AlertPage:
    if not 1 <= limit <= MAX_PAGE:
        raise OperateError(f"--limit {limit}: must be from 1 to {MAX_PAGE}")
    start = _position_of(next_token) if next_token else None
    described(view)
    rows = [row for row in known_alerts(view, wanted.since) if wanted.keeps(row)]
    later = [row for row in rows if start is None or _position(row) < start]
    page = tuple(later[:limit])
    more = len(later) > limit
    return AlertPage(page, page_token(page[-1]) if more and page else None, len(rows))


def format_alert_page(page: AlertPage) -> str:
    if not page.alerts:
        return "no alert matches"
    headers = (
        "DETECTED",
        "ALERT ID",
        "SEVERITY",
        "SCORE",
        "DETECTOR",
        "STATE",
        "FROM",
        "ACCOUNT",
        "PRINCIPAL",
    )
    rows = [
        (
            stamp(row.digest.detected_at),
            one_line(row.digest.alert_id),
            row.digest.severity,
            f"{row.digest.score:g}",
            one_line(row.digest.detector),
            row.state,
            one_line(row.digest.location),
            one_line(row.digest.account),
            one_line(row.digest.principal),
        )
        for row in page.alerts
    ]
    return format_table(headers, rows)


# --- show ---------------------------------------------------------------------------------------------


def find_triaged(view: OperationsView, alert_id: str) -> TriagedAlert:
    """The alert and its triage record. :class:`OperateError` when neither is known."""
    key = normalize_alert_id(alert_id)
    described(view)  # a wrong table name is not an unknown alert
    record = view.triage_record(key)
    entry = view.outbox_entry(key)
    if entry is None:
        if record is None:
            raise OperateError(
                f"alert {key} is not in table {view.table}: unknown id, or older than {OUTBOX_DAYS} "
                f"days (the outbox keeps alerts {OUTBOX_DAYS} days after they went out; a resolved "
                f"alert's record, {TRIAGE_DAYS} days after its detection)"
            )
        return TriagedAlert(record.digest, None, record)
    stored = stored_alert(entry)  # the same refusal as explain for an item that holds no alert
    return TriagedAlert(AlertDigest.of(stored.alert), stored, record)


@dataclass(frozen=True, slots=True)
class ShownAlert:
    triaged: TriagedAlert
    links: dict[str, str]
    brief: str | None  # explain's: the outbox state and the e-mail's brief; None once expired

    def as_dict(self) -> dict[str, Any]:
        record = self.triaged.record
        return {
            **self.triaged.as_dict(),
            "history": [_resolution_dict(r) for r in record.history] if record is not None else [],
            "console_links": self.links,
            "alert": json.loads(self.triaged.alert.to_json()) if self.triaged.alert is not None else None,
        }


_LINK_NAMES = {
    "access_key": "CloudTrail event history, this access key",
    "user_name": "CloudTrail event history, this user name",
    "principal": "IAM, the principal",
}


def show_alert(view: OperationsView, alert_id: str, *, region: str) -> ShownAlert:
    triaged = find_triaged(view, alert_id)
    if triaged.stored is None:
        return ShownAlert(triaged, {}, None)
    return ShownAlert(triaged, console_links(triaged.stored.alert, region), format_alert(triaged.stored))


def format_shown(shown: ShownAlert) -> str:
    triaged, record = shown.triaged, shown.triaged.record
    if record is None:
        state = "open (not resolved: trailgeo alerts resolve ID --as attack|expected|false-positive)"
    else:
        state = _resolution_line(record.resolution) + f" (version {record.version})"
    lines = [f"Triage:   {state}"]
    if record is not None:
        lines.extend(f"  before: {_resolution_line(r)}" for r in reversed(record.history))
    if shown.links:
        lines.extend(f"Console:  {_LINK_NAMES.get(name, name)}: {url}" for name, url in shown.links.items())
    if shown.brief is None:
        digest = triaged.digest
        lines += [
            f"Outbox:   expired (kept {OUTBOX_DAYS} days after it went out): what its triage record keeps",
            "",
            f"Alert id: {digest.alert_id}",
            f"Detected: {stamp(digest.detected_at)}",
            f"Detector: {one_line(digest.detector)}  severity {digest.severity} (score {digest.score:g}/100)",
            f"Who:      {one_line(digest.principal)}",
            f"Account:  {one_line(digest.account)}",
            f"From:     {one_line(location_label(digest.location))}",
        ]
        return "\n".join(lines)
    return "\n".join(lines) + "\n" + shown.brief


def _resolution_line(resolution: Resolution) -> str:
    note = f": {one_line(resolution.note)}" if resolution.note else ""
    return f"{resolution.verdict}, by {one_line(resolution.by)} at {stamp(resolution.at)}{note}"


# --- resolve ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolveResult:
    record: TriageRecord
    previous: Resolution | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.record.alert_id,
            "version": self.record.version,
            "resolution": _resolution_dict(self.record.resolution),
            "previous": _resolution_dict(self.previous) if self.previous is not None else None,
        }


def resolve(
    view: OperationsView,
    alert_id: str,
    verdict: str,
    *,
    by: str,
    now: datetime,
    note: str = "",
    change: bool = False,
    before_write: Callable[[], None] | None = None,
) -> ResolveResult:
    """Resolve an alert: the verdict, who and when, kept on its triage record (created from the
    outbox's copy), written only if nobody resolved it since it was read. An alert already resolved
    is resolved anew only with ``change`` (the earlier resolution stays in the record's history).
    ``before_write`` runs between the read and the write (tests change the record there)."""
    if verdict not in VERDICTS:
        raise OperateError(f"--as {verdict!r}: must be one of {', '.join(VERDICTS)}")
    if len(note) > MAX_NOTE_CHARS:
        raise OperateError(f"--note: {len(note)} characters, more than the {MAX_NOTE_CHARS} a note may have")
    if not by.strip() or len(by) > MAX_RESOLVER_CHARS:
        raise OperateError(
            f"--by {by!r}: must name who resolves it, in at most {MAX_RESOLVER_CHARS} characters"
        )
    triaged = find_triaged(view, alert_id)
    resolution = Resolution(verdict=verdict, by=by, at=now, note=note)
    current = triaged.record
    if current is None:
        record = TriageRecord(digest=triaged.digest, resolution=resolution, version=1)
    elif not change:
        raise OperateError(
            f"alert {current.alert_id} is already resolved: {_resolution_line(current.resolution)}; "
            "give --change to resolve it anew (the earlier resolution is kept in its history)"
        )
    else:
        record = current.resolved(resolution)
    if before_write is not None:
        before_write()
    view.write_triage(record, current.version if current is not None else 0)
    return ResolveResult(record.bounded(), current.resolution if current is not None else None)


def format_resolved(result: ResolveResult) -> str:
    line = f"alert {result.record.alert_id}: {_resolution_line(result.record.resolution)}"
    if result.previous is not None:
        line += f"\n  was: {_resolution_line(result.previous)}"
    return line + f"\n(version {result.record.version})"


# --- allow --from-alert ---------------------------------------------------------------------------------


def glob_literal(value: str) -> str:
    """``value`` as a glob that matches it alone: ``*``, ``?`` and ``[`` each in a class of its own."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in value)


def entry_for_alert(triaged: TriagedAlert, *, until: str | None, today: date) -> AllowedCountries:
    """The narrowest ``[[allowed_countries]]`` entry that would have silenced the alert: its
    principal (exactly, glob characters escaped), its country, its account, until a day at most
    :data:`MAX_ALLOW_DAYS` away. Only for a country alert resolved as expected or a false positive."""
    digest, record = triaged.digest, triaged.record
    if record is None or record.resolution.verdict not in ALLOWABLE:
        state = record.resolution.verdict if record is not None else OPEN
        raise OperateError(
            f"alert {digest.alert_id} is {state}: only an alert resolved as expected or false-positive "
            "is allowlisted from (resolve it first: the resolution records who decided)"
        )
    if digest.detector != COUNTRY.name:
        raise OperateError(
            f"alert {digest.alert_id} is from the {one_line(digest.detector)} detector: allowed_countries "
            "silences the country detector's alerts only (docs/tuning.md)"
        )
    if not is_country(digest.location):
        raise OperateError(
            f"alert {digest.alert_id} is from {one_line(location_label(digest.location))}, not a country: "
            "allowed_countries cannot name it (docs/tuning.md: trusted_vpc_endpoint_accounts, trusted_cidrs)"
        )
    if not ACCOUNT_PATTERN.match(digest.account):
        raise OperateError(
            f"alert {digest.alert_id}: its account {one_line(digest.account)!r} is no account id"
        )
    last_day = today + timedelta(days=DEFAULT_ALLOW_DAYS)
    if until is not None:
        last_day = calendar_date(until)
        if last_day < today:
            raise OperateError(f"--until {until}: is in the past (today is {today.isoformat()} UTC)")
    if last_day > today + timedelta(days=MAX_ALLOW_DAYS):
        raise OperateError(
            f"--until {last_day.isoformat()}: more than {MAX_ALLOW_DAYS} days away (today is "
            f"{today.isoformat()} UTC): an entry from an alert is for a trip; anything longer is "
            "`trailgeo allow`, reviewed as a tuning change"
        )
    resolution = record.resolution
    note = (
        f"from alert {digest.alert_id}, resolved {resolution.verdict} by {resolution.by} "
        f"on {resolution.at:%Y-%m-%d}" + (f": {resolution.note}" if resolution.note else "")
    )
    return AllowedCountries(
        principals=(glob_literal(digest.principal),),
        countries=(digest.location,),
        accounts=(digest.account,),
        until=last_day,
        note=note,
    )


@dataclass(frozen=True, slots=True)
class AllowProposal:
    alert_id: str
    entry: AllowedCountries
    current: TuningParameter
    edit: TuningEdit
    diff: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "tuning": self.current.name,
            "entry": self.entry.model_dump(mode="json", exclude_defaults=True),
            "diff": self.diff,
        }


def propose_allow(
    view: OperationsView,
    store: TuningStore,
    tuning: str,
    alert_id: str,
    *,
    until: str | None,
    today: date,
    create_as: str = "String",
) -> AllowProposal:
    """The entry for the alert and the tuning it would make, as a diff; nothing written."""
    triaged = find_triaged(view, alert_id)
    entry = entry_for_alert(triaged, until=until, today=today)
    current, edit = propose_entry(store, tuning, entry, create_as=create_as)
    digest = triaged.digest
    if current.tuning.country_verdict(
        account=digest.account, principal=digest.principal, country=digest.location, on=today
    ):
        raise OperateError(
            f"alert {digest.alert_id}: {current.label} already allows {one_line(digest.principal)} in "
            f"{digest.location} today: nothing to add"
        )
    before = f"{current.label} (version {current.version})" if current.version is not None else "(none)"
    diff = tuning_diff(current.text, edit.text, before=before, after=f"{current.label} (with the entry)")
    return AllowProposal(triaged.digest.alert_id, entry, current, edit, diff)


def allow_from_alert(
    store: TuningStore, proposal: AllowProposal, confirm: Callable[[AllowProposal], bool]
) -> AllowResult | None:
    """Write the proposal once ``confirm`` says yes (None: not written), unless the tuning changed
    since it was read (:class:`~trailgeo.ports.ConcurrentChangeError`)."""
    if not confirm(proposal):
        return None
    return write_entry(store, proposal.current, proposal.edit, proposal.entry)
