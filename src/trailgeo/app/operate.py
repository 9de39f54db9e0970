"""Operating a deployment: ``trailgeo status``, ``explain`` and ``allow``.

Read-mostly helpers over the deployment's DynamoDB table (layout: adapters/dynamodb.py) and the
tuning SSM parameter (docs/tuning.md). Each returns a plain value that the CLI prints as aligned
columns or as JSON; failures raise :class:`OperateError` with one line saying what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from trailgeo.adapters.dynamodb import (
    OUTBOX_PARTITION,
    OUTBOX_RETENTION,
    RUN_PARTITION,
    DynamoLedger,
    error_code_of,
)
from trailgeo.core.alerts import Alert
from trailgeo.core.render.email import email_body
from trailgeo.core.tuning import (
    ACCOUNT_PATTERN,
    COUNTRY_PATTERN,
    DATE_PATTERN,
    AllowedCountries,
    Tuning,
    TuningError,
)
from trailgeo.ports import TrailgeoError

SCHEDULE = timedelta(minutes=15)
STANDARD_PARAMETER_BYTES = 4096  # SSM Standard tier; Advanced holds 8 KB
_ALERT_ID = re.compile(r"^[0-9a-f]{32}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class OperateError(TrailgeoError):
    """An operator command cannot do what was asked; the message says why and what to do."""


class ConcurrentChangeError(OperateError):
    """The tuning parameter changed between our read and our write: nothing was written."""


def aws_error(exc: ClientError) -> str:
    """One line from a ClientError: the operation, AWS's code and message."""
    error = exc.response.get("Error", {})
    operation = getattr(exc, "operation_name", "") or "AWS"
    message = " ".join(str(error.get("Message", "")).split())
    return f"{operation}: {error.get('Code', 'error')}: {message}"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Aligned columns, two spaces apart, headers first; no trailing spaces."""
    body = [list(row) for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    lines = [list(headers), *body]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _duration(seconds: float) -> str:
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


def _stamp(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


# --- status -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A ``RUN`` item: a batch of files a run took (open) or finished (closed, kept 14 days)."""

    run_id: str
    state: str
    lease_until: datetime | None
    files: int
    closed_at: datetime | None = None
    takeovers: int = 0
    poison: tuple[str, ...] = ()  # files set aside (app.detect._read_isolated), kept while it is

    def interrupted(self, now: datetime) -> bool:
        """Open with its lease past: the run died; the next scheduled run takes it over."""
        return self.state == "open" and self.lease_until is not None and self.lease_until < now

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": "interrupted" if self.interrupted(now) else self.state,
            "lease_until": _stamp(self.lease_until) if self.lease_until else None,
            "files": self.files,
            "takeovers": self.takeovers,
        }


@dataclass(frozen=True, slots=True)
class PendingAlert:
    alert_id: str
    detected_at: datetime
    severity: str
    score: float
    country: str
    principal: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "detected_at": _stamp(self.detected_at),
            "severity": self.severity,
            "score": self.score,
            "country": self.country,
            "principal": self.principal,
        }


@dataclass(frozen=True, slots=True)
class ParkedAlert:
    """An outbox item set aside (``st`` = parked): no run publishes it again, so only an operator
    looking (this list, ``AlertParkedAlarm``) gets it to anyone."""

    alert_id: str  # the item's key: written by whoever wrote the item, so escaped where shown
    parked_at: datetime | None
    reason: str  # the channel's refusal (e.g. InvalidParameter), too_large, or invalid_document

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "parked_at": _stamp(self.parked_at) if self.parked_at else None,
            "reason": self.reason,
        }


def _moment(text: str | None) -> datetime | None:
    """An ISO 8601 timestamp the code wrote, or None when absent or not one."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _one_line(text: str) -> str:
    """JSON's escapes without the quotes: a line break or control in ``text`` draws no row."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass(frozen=True, slots=True)
class TableStatus:
    table: str
    checked_at: datetime
    watermark: datetime | None
    table_state: str
    item_count: int
    size_bytes: int
    runs: tuple[RunRecord, ...] = ()
    pending: tuple[PendingAlert, ...] = ()
    alerts_kept: int = 0
    parked: tuple[ParkedAlert, ...] = ()

    @property
    def lag(self) -> timedelta | None:
        return self.checked_at - self.watermark if self.watermark else None

    @property
    def interrupted_runs(self) -> tuple[RunRecord, ...]:
        return tuple(r for r in self.runs if r.interrupted(self.checked_at))

    @property
    def open_runs(self) -> tuple[RunRecord, ...]:
        return tuple(r for r in self.runs if r.state == "open" and not r.interrupted(self.checked_at))

    @property
    def poison_files(self) -> tuple[tuple[str, str], ...]:
        """(run id, key) of every file set aside as poison by a run still on record (14 days)."""
        return tuple((r.run_id, key) for r in self.runs for key in r.poison)

    @property
    def closed_runs(self) -> int:
        """Closed in the last day (closed records are kept 14 days: they vouch for their files)."""
        since = self.checked_at - timedelta(days=1)
        return sum(
            1 for r in self.runs if r.state == "closed" and (r.closed_at is None or r.closed_at >= since)
        )

    def warnings(self) -> list[str]:
        found = []
        if self.watermark is None:
            found.append("no complete run yet: the detector has not run, or never finished a run")
        elif self.lag is not None and self.lag > 2 * SCHEDULE:
            found.append(
                f"last complete run {_duration(self.lag.total_seconds())} ago (schedule: every 15 min): "
                "check the function's errors and the dead-letter queue"
            )
        if self.interrupted_runs:
            found.append(
                f"{len(self.interrupted_runs)} interrupted run(s): the next run takes them over; "
                "if they stay, the function keeps failing"
            )
        if self.poison_files:
            found.append(
                f"{len(self.poison_files)} file(s) set aside as poison: runs kept dying on them and their "
                "events are not scored; examine each before replaying it (trailgeo replay)"
            )
        if self.pending:
            found.append(
                f"{len(self.pending)} alert(s) not yet published: retried at every run; "
                "if they stay, check the topic (SNS) and the function's role"
            )
        if self.parked:
            found.append(
                f"{len(self.parked)} alert(s) parked: refused for what they hold, never retried and "
                "seen by no channel; read each (trailgeo explain ALERT_ID) and act on it by hand"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        lag = self.lag
        return {
            "table": self.table,
            "checked_at": _stamp(self.checked_at),
            "watermark": _stamp(self.watermark) if self.watermark else None,
            "lag_seconds": int(lag.total_seconds()) if lag is not None else None,
            "table_status": self.table_state,
            "item_count": self.item_count,
            "size_bytes": self.size_bytes,
            "runs_open": [r.as_dict(self.checked_at) for r in self.open_runs],
            "runs_interrupted": [r.as_dict(self.checked_at) for r in self.interrupted_runs],
            "runs_closed_last_day": self.closed_runs,
            "files_poison": [{"run_id": run_id, "key": key} for run_id, key in self.poison_files],
            "alerts_pending": [a.as_dict() for a in self.pending],
            "alerts_parked": [a.as_dict() for a in self.parked],
            "alerts_kept": self.alerts_kept,
            "warnings": self.warnings(),
        }


def _query_all(client: Any, **request: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("query").paginate(**request):
        items.extend(page.get("Items", []))
    return items


def _describe_table(client: Any, table: str) -> Mapping[str, Any]:
    try:
        return dict(client.describe_table(TableName=table)["Table"])
    except ClientError as exc:
        if error_code_of(exc) == "ResourceNotFoundException":
            region = getattr(getattr(client, "meta", None), "region_name", None) or "?"
            raise OperateError(
                f"table {table} not found in {region}: give the stack output FrequencyTableName "
                "and the stack's --region"
            ) from None
        raise


def read_status(client: Any, table: str, now: datetime) -> TableStatus:
    """The table's health: DescribeTable, the watermark, the RUN records, the outbox (DynamoDB only)."""
    description = _describe_table(client, table)
    watermark = DynamoLedger(client, table).watermark()
    runs = tuple(
        RunRecord(
            run_id=item["sk"]["S"],
            state=item.get("st", {}).get("S", "?"),
            lease_until=datetime.fromisoformat(item["lease"]["S"]) if "lease" in item else None,
            files=int(item.get("files", item.get("n", {"N": "0"}))["N"]),
            closed_at=datetime.fromisoformat(item["done_at"]["S"]) if "done_at" in item else None,
            takeovers=int(item.get("att", {}).get("N", "0")),
            poison=tuple(sorted(item.get("pz", {}).get("SS", ()))),
        )
        for item in _query_all(
            client,
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": RUN_PARTITION}},
            ConsistentRead=True,
            # Not the packed keys or outcomes; names through placeholders (DynamoDB reserves many words).
            ProjectionExpression="#sk, #st, #lease, #files, #n, #done, #att, #pz",
            ExpressionAttributeNames={
                "#sk": "sk",
                "#st": "st",
                "#lease": "lease",
                "#files": "files",
                "#n": "n",
                "#done": "done_at",
                "#att": "att",
                "#pz": "pz",
            },
        )
    )
    kept = 0
    pending: list[PendingAlert] = []
    parked: list[ParkedAlert] = []
    for item in _query_all(
        client,
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": OUTBOX_PARTITION}},
        ProjectionExpression="sk, st, doc, parked_reason, parked_at",
        ConsistentRead=True,
    ):
        kept += 1
        state = item.get("st", {}).get("S")
        if state == "parked":  # its document is not read: one parked as no alert would not parse
            parked.append(
                ParkedAlert(
                    alert_id=item["sk"]["S"].removeprefix("A#"),
                    parked_at=_moment(item.get("parked_at", {}).get("S")),
                    reason=item.get("parked_reason", {}).get("S", "?"),
                )
            )
            continue
        if state != "pending":
            continue
        alert = Alert.model_validate_json(item["doc"]["S"])
        pending.append(
            PendingAlert(
                alert.alert_id, alert.detected_at, alert.severity, alert.score, alert.country, alert.principal
            )
        )
    return TableStatus(
        table=table,
        checked_at=now.astimezone(UTC),
        watermark=watermark,
        table_state=str(description.get("TableStatus", "?")),
        item_count=int(description.get("ItemCount", 0)),
        size_bytes=int(description.get("TableSizeBytes", 0)),
        runs=tuple(sorted(runs, key=lambda r: r.run_id)),
        pending=tuple(sorted(pending, key=lambda a: (a.detected_at, a.alert_id))),
        alerts_kept=kept,
        parked=tuple(sorted(parked, key=lambda a: (_stamp(a.parked_at), a.alert_id))),
    )


def format_status(status: TableStatus) -> str:
    lag = status.lag
    rows = [
        ("table", f"{status.table} ({status.table_state})"),
        ("checked at", _stamp(status.checked_at)),
        ("last complete run", _stamp(status.watermark) if status.watermark else "none yet"),
        ("lag", _duration(lag.total_seconds()) if lag is not None else "-"),
        ("runs in progress", str(len(status.open_runs))),
        ("runs interrupted", str(len(status.interrupted_runs))),
        ("runs closed (last day)", str(status.closed_runs)),
        ("poison files", str(len(status.poison_files))),
        ("alerts pending", str(len(status.pending))),
        ("alerts parked", str(len(status.parked))),
        ("alerts kept (30 days)", str(status.alerts_kept)),
        ("items", f"{status.item_count:,} (DescribeTable, refreshed about every 6 hours)"),
        ("size", f"{status.size_bytes:,} bytes"),
    ]
    width = max(len(label) for label, _ in rows)
    parts = [f"{label.ljust(width)}  {value}" for label, value in rows]
    runs = [*status.open_runs, *status.interrupted_runs]
    if runs:
        parts.append("")
        parts.append(
            format_table(
                ("RUN", "STATE", "LEASE UNTIL", "FILES", "TAKEOVERS"),
                (
                    (
                        r.run_id,
                        r.as_dict(status.checked_at)["state"],
                        _stamp(r.lease_until),
                        str(r.files),
                        str(r.takeovers),
                    )
                    for r in runs
                ),
            )
        )
    if status.poison_files:
        parts.append("")
        # S3 keys are the bucket writer's: JSON-escaped, a line break in one cannot draw a row
        poisoned = ((_one_line(key), run) for run, key in status.poison_files)
        parts.append(format_table(("POISON FILE", "RUN"), poisoned))
    if status.pending:
        parts.append("")
        parts.append(
            format_table(
                ("PENDING ALERT", "DETECTED", "SEVERITY", "SCORE", "CC", "PRINCIPAL"),
                (
                    (a.alert_id, _stamp(a.detected_at), a.severity, f"{a.score:g}", a.country, a.principal)
                    for a in status.pending
                ),
            )
        )
    if status.parked:
        parts.append("")
        parts.append(
            format_table(
                ("PARKED ALERT", "PARKED", "REASON"),
                ((_one_line(a.alert_id), _stamp(a.parked_at), _one_line(a.reason)) for a in status.parked),
            )
        )
    warnings = status.warnings()
    if warnings:
        parts.append("")
        parts.extend(f"warning: {w}" for w in warnings)
    return "\n".join(parts)


# --- explain ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredAlert:
    alert: Alert
    state: str  # pending, sent or parked
    created: str | None = None
    sent_at: str | None = None
    message_id: str | None = None
    parked_at: str | None = None
    parked_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "created": self.created,
            "sent_at": self.sent_at,
            "message_id": self.message_id,
            "parked_at": self.parked_at,
            "parked_reason": self.parked_reason,
            "alert": json.loads(self.alert.to_json()),
        }


def normalize_alert_id(alert_id: str) -> str:
    value = alert_id.strip().lower().removeprefix("a#")
    if not _ALERT_ID.match(value):
        raise OperateError(
            f"{alert_id!r} is not an alert id (32 hexadecimal characters, the 'Alert id:' line of the email)"
        )
    return value


def find_alert(client: Any, table: str, alert_id: str) -> StoredAlert:
    """The alert from the outbox. Raises :class:`OperateError` when the id is unknown."""
    key = normalize_alert_id(alert_id)
    _describe_table(client, table)  # a wrong table name is not an unknown alert
    item = client.get_item(
        TableName=table,
        Key={"pk": {"S": OUTBOX_PARTITION}, "sk": {"S": f"A#{key}"}},
        ConsistentRead=True,
    ).get("Item")
    if item is None:
        raise OperateError(
            f"alert {key} is not in table {table}: unknown id, or older than "
            f"{OUTBOX_RETENTION.days} days (the outbox keeps alerts {OUTBOX_RETENTION.days} days after "
            "they went out or were parked)"
        )
    state = item.get("st", {}).get("S", "?")
    try:
        alert = Alert.model_validate_json(item.get("doc", {}).get("S", ""))
    except ValueError:  # pydantic's ValidationError: an item written by someone else (parked as such)
        reason = item.get("parked_reason", {}).get("S", "")
        raise OperateError(
            f"outbox item {key} holds no alert (state {_one_line(state)}"
            + (f", parked: {_one_line(reason)}" if reason else "")
            + "): the detector did not write it; find who did (DynamoDB data events in CloudTrail)"
        ) from None
    return StoredAlert(
        alert=alert,
        state=state,
        created=item.get("created", {}).get("S"),
        sent_at=item.get("sent_at", {}).get("S"),
        message_id=item.get("message_id", {}).get("S"),
        parked_at=item.get("parked_at", {}).get("S"),
        parked_reason=item.get("parked_reason", {}).get("S"),
    )


def format_alert(stored: StoredAlert) -> str:
    if stored.state == "sent":
        state = f"sent {stored.sent_at or ''} (SNS message {stored.message_id or '?'})"
    elif stored.state == "parked":
        state = (
            f"parked {_one_line(stored.parked_at or '')}: {_one_line(stored.parked_reason or '?')} "
            "(refused for what it holds: never retried, no channel had it)"
        )
    else:
        state = "pending: not published yet (retried at every run)"
    return f"Outbox:   {state}\n\n{email_body(stored.alert).rstrip()}"


# --- allow: the tuning parameter ----------------------------------------------------------------------


def toml_string(value: str) -> str:
    """A TOML basic string (every control character escaped; TOML forbids them raw)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}
    out = []
    for ch in value:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _entry_lines(entry: AllowedCountries) -> list[str]:
    lines = [
        "[[allowed_countries]]",
        f"principals = {_toml_value(entry.principals)}",
        f"countries = {_toml_value(entry.countries)}",
    ]
    if entry.accounts is not None:
        lines.append(f"accounts = {_toml_value(entry.accounts)}")
    if entry.until is not None:
        lines.append(f"until = {_toml_value(entry.until)}")
    if entry.note:
        lines.append(f"note = {_toml_value(entry.note)}")
    return lines


def entry_toml(entry: AllowedCountries) -> str:
    return "\n".join(_entry_lines(entry)) + "\n"


def to_toml(tuning: Tuning) -> str:
    """The whole document as TOML (version 1 schema of core/tuning.py); ``tomllib`` reads it back equal."""
    lines = [f"version = {tuning.version}"]
    if tuning.description:
        lines.append(f"description = {_toml_value(tuning.description)}")
    if tuning.ignored_principals:
        lines.append(f"ignored_principals = {_toml_value(tuning.ignored_principals)}")
    if tuning.ignored_user_agents:
        agents = [entry.model_dump(exclude_defaults=True) for entry in tuning.ignored_user_agents]
        lines.append(f"ignored_user_agents = {_toml_value(agents)}")
    if tuning.trusted_cidrs:
        cidrs = [{"cidr": t.cidr, "note": t.note} if t.note else t.cidr for t in tuning.trusted_cidrs]
        lines.append(f"trusted_cidrs = {_toml_value(cidrs)}")
    if tuning.trusted_vpc_endpoint_accounts:
        accounts = list(tuning.trusted_vpc_endpoint_accounts)
        lines.append(f"trusted_vpc_endpoint_accounts = {_toml_value(accounts)}")
    for entry in tuning.allowed_countries:
        lines.extend(["", *_entry_lines(entry)])
    for key, policy in tuning.methods.items():
        lines.extend(["", f"[methods.{toml_string(key)}]"])
        if policy.ignore:
            lines.append("ignore = true")
        if policy.threshold is not None:
            lines.append(f"threshold = {_toml_value(float(policy.threshold))}")
        if policy.sensitive is not None:
            lines.append(f"sensitive = {_toml_value(policy.sensitive)}")
        if policy.note:
            lines.append(f"note = {_toml_value(policy.note)}")
    return "\n".join(lines) + "\n"


def _same(a: Tuning, b: Tuning) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def allowed_entry(
    *,
    principal: str,
    countries: Sequence[str],
    until: str | None = None,
    note: str = "",
    accounts: Sequence[str] | None = None,
    today: date | None = None,
) -> AllowedCountries:
    """The ``[[allowed_countries]]`` entry the options describe; :class:`OperateError` names a bad option."""
    if not principal or principal != principal.strip():
        raise OperateError(f"--principal {principal!r}: must be a non-empty glob without surrounding spaces")
    for country in countries:
        if not COUNTRY_PATTERN.match(country):
            raise OperateError(
                f"--country {country!r}: must be two upper-case letters (ISO 3166-1 alpha-2, e.g. PT, US)"
            )
    for account in accounts or ():
        if not ACCOUNT_PATTERN.match(account):
            raise OperateError(f"--account {account!r}: must be a 12-digit AWS account id")
    last_day: date | None = None
    if until is not None:
        last_day = _calendar_date(until)
        if today is not None and last_day < today:
            raise OperateError(
                f"--until {until}: is in the past (today is {today.isoformat()} UTC): "
                "the entry would never apply"
            )
    try:
        return AllowedCountries(
            principals=(principal,),
            countries=tuple(dict.fromkeys(countries)),
            accounts=tuple(dict.fromkeys(accounts)) if accounts else None,
            until=last_day,
            note=note,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise OperateError(f"invalid entry: {' '.join(str(exc).split())}") from None


def _calendar_date(value: str) -> date:
    error = OperateError(f"--until {value!r}: must be a calendar date written YYYY-MM-DD")
    if not DATE_PATTERN.match(value):
        raise error
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise error from None


@dataclass(frozen=True, slots=True)
class TuningParameter:
    """What was read: the version guards the write (``None``: the parameter does not exist yet)."""

    name: str
    version: int | None
    type: str = "String"
    text: str = ""
    key_id: str | None = None
    tier: str | None = None
    tuning: Tuning = field(default_factory=lambda: Tuning(version=1))

    @property
    def is_json(self) -> bool:
        return self.text.lstrip().startswith("{")


def read_tuning_parameter(ssm: Any, name: str) -> TuningParameter:
    """The parameter, its version, type, KMS key and tier. A missing parameter reads as version None."""
    try:
        parameter = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    except ClientError as exc:
        if error_code_of(exc) == "ParameterNotFound":
            return TuningParameter(name=name, version=None)
        raise
    kind = str(parameter.get("Type"))
    if kind not in {"String", "SecureString"}:
        raise OperateError(f"SSM parameter {name}: is a {kind}; the tuning is a String or SecureString")
    version = int(parameter["Version"])
    text = str(parameter["Value"])
    try:
        tuning = Tuning.parse(text, source=f"SSM parameter {name} (version {version})")
    except TuningError as exc:
        raise OperateError(f"{exc} (fix the parameter first: nothing was written)") from None
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])
    meta: Mapping[str, Any] = next(iter(described.get("Parameters", [])), {})
    return TuningParameter(
        name=name,
        version=version,
        type=kind,
        text=text,
        key_id=meta.get("KeyId"),
        tier=meta.get("Tier"),
        tuning=tuning,
    )


@dataclass(frozen=True, slots=True)
class TuningEdit:
    text: str
    tuning: Tuning
    layout: str  # created, appended (TOML comments and layout kept), json, or emitted (comments dropped)


def with_entry(current: TuningParameter, entry: AllowedCountries) -> TuningEdit:
    """The document with ``entry`` appended, validated whole by :meth:`Tuning.parse`.

    TOML: the entry is appended as a ``[[allowed_countries]]`` table, which keeps comments and layout;
    when that does not read back as intended (the list was written inline), the document is
    re-emitted by :func:`to_toml`. JSON stays JSON.
    """
    expected = current.tuning.model_copy(
        update={"allowed_countries": (*current.tuning.allowed_countries, entry)}
    )
    source = f"SSM parameter {current.name} (edited)"
    if current.version is None:
        text = "# trailgeo tuning (docs/tuning.md), created by `trailgeo allow`\n" + to_toml(expected)
        return TuningEdit(text, Tuning.parse(text, source=source), layout="created")
    if current.is_json:
        document = json.loads(current.text.removeprefix("\ufeff"))
        document.setdefault("allowed_countries", []).append(
            entry.model_dump(mode="json", exclude_defaults=True)
        )
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        return TuningEdit(text, Tuning.parse(text, source=source), layout="json")
    appended = current.text.rstrip("\n") + "\n\n" + entry_toml(entry)
    try:
        parsed = Tuning.parse(appended, source=source)
    except TuningError:
        parsed = None
    if parsed is not None and _same(parsed, expected):
        return TuningEdit(appended, parsed, layout="appended")
    text = to_toml(expected)
    return TuningEdit(text, Tuning.parse(text, source=source), layout="emitted")


def write_tuning_parameter(ssm: Any, current: TuningParameter, text: str) -> int:
    """Write ``text`` if the parameter is still at the version read; returns the new version.

    SSM has no conditional put: the version is compared right before ``PutParameter`` (a creation
    uses ``Overwrite=False``, which AWS refuses atomically if someone created it meanwhile).
    """
    tier = current.tier or "Standard"
    size = len(text.encode("utf-8"))
    if size > STANDARD_PARAMETER_BYTES and tier == "Standard":
        raise OperateError(
            f"SSM parameter {current.name}: the tuning would be {size} bytes, over the 4 KB of a Standard "
            "parameter: make it Advanced (8 KB) or deploy the tuning as a file (TUNING_FILE)"
        )
    request: dict[str, Any] = {"Name": current.name, "Value": text, "Type": current.type}
    if current.version is None:
        request["Overwrite"] = False
        request["Description"] = "trailgeo tuning (allowlists and per-method overrides)"
    else:
        try:
            now = int(ssm.get_parameter(Name=current.name)["Parameter"]["Version"])
        except ClientError as exc:
            if error_code_of(exc) != "ParameterNotFound":
                raise
            now = 0
        if now != current.version:
            raise ConcurrentChangeError(
                f"SSM parameter {current.name}: changed while we edited it (read version {current.version}, "
                f"now {now or 'deleted'}): nothing was written; run the command again"
            )
        request["Overwrite"] = True
        if current.tier:
            request["Tier"] = current.tier
    if current.type == "SecureString" and current.key_id:
        request["KeyId"] = current.key_id
    try:
        response = ssm.put_parameter(**request)
    except ClientError as exc:
        if error_code_of(exc) == "ParameterAlreadyExists":
            raise ConcurrentChangeError(
                f"SSM parameter {current.name}: created by someone else while we edited it: "
                "nothing was written; run the command again"
            ) from None
        raise
    return int(response["Version"])


@dataclass(frozen=True, slots=True)
class AllowResult:
    parameter: str
    type: str
    created: bool
    old_version: int | None
    new_version: int
    index: int
    entry: AllowedCountries
    layout: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "type": self.type,
            "created": self.created,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "added": {
                "path": f"allowed_countries[{self.index}]",
                **self.entry.model_dump(mode="json", exclude_defaults=True),
            },
            "layout": self.layout,
        }


def allow(
    ssm: Any,
    name: str,
    entry: AllowedCountries,
    *,
    create_as: str = "String",
    before_write: Callable[[TuningParameter], None] | None = None,
) -> AllowResult:
    """Read the tuning, append ``entry``, validate, write back unless it changed in between.

    ``create_as`` is the type of a parameter that does not exist yet (an existing one keeps its
    type, KMS key and tier). ``before_write`` runs between the read and the write (tests use it to
    change the parameter under our feet).
    """
    if create_as not in {"String", "SecureString"}:
        raise OperateError(f"--type {create_as!r}: must be String or SecureString")
    current = read_tuning_parameter(ssm, name)
    if current.version is None:
        current = replace(current, type=create_as)
    edit = with_entry(current, entry)
    if before_write is not None:
        before_write(current)
    version = write_tuning_parameter(ssm, current, edit.text)
    return AllowResult(
        parameter=name,
        type=current.type,
        created=current.version is None,
        old_version=current.version,
        new_version=version,
        index=len(edit.tuning.allowed_countries) - 1,
        entry=entry,
        layout=edit.layout,
    )


_LAYOUTS = {
    "created": "a new TOML document",
    "appended": "appended: comments and layout kept",
    "json": "JSON kept, re-indented",
    "emitted": "the list was inline: document re-emitted, TOML comments dropped",
}


def format_allow(result: AllowResult) -> str:
    if result.created:
        head = f"created SSM parameter {result.parameter} ({result.type}), version {result.new_version}"
    else:
        head = (
            f"updated SSM parameter {result.parameter} ({result.type}): "
            f"version {result.old_version} -> {result.new_version}"
        )
    layout = _LAYOUTS.get(result.layout, result.layout)
    added = [f"+ {line}" for line in _entry_lines(result.entry)]
    added[0] += f"  # allowed_countries[{result.index}]"
    return "\n".join([head, *added, f"({layout}; the next scheduled run applies it)"])
