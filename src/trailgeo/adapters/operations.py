"""The operations side: the operations topic, which tuning version it was told about, and what
the operator commands read and write (``status``/``explain``/``alerts``/``report``:
:class:`DynamoOperations`; ``allow``: :class:`SsmTuningStore`; who is calling: :func:`caller_arn`).

``STATE``/``TUNING`` in the table holds the tuning version (number and digest of its text) last
reported, so that each change is reported once whatever the execution environment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from trailgeo.adapters.dynamodb import (
    OUTBOX_PARTITION,
    RUN_PARTITION,
    STATE_PARTITION,
    TRIAGE_PARTITION,
    DynamoLedger,
    StoreError,
    conditional_write,
    error_code_of,
    ttl_after,
)
from trailgeo.ports import (
    TRIAGE_RETENTION,
    AlertDigest,
    ConcurrentChangeError,
    MetricPoint,
    OperationsError,
    OutboxEntry,
    PublishError,
    Resolution,
    RunRecord,
    StoredTuning,
    TableInfo,
    TableMissingError,
    TriageRecord,
    TriageVerdict,
)

TUNING_SORT_KEY = "TUNING"
# An alert's triage record (``trailgeo alerts resolve``), sort key ``A#<alert id>`` as in the outbox.
# Written by the operator CLI only: the detector's code never writes nor reads it.
Seen = tuple[int, str]  # (version, digest of its text)


@dataclass(frozen=True, slots=True)
class DynamoTuningMarker:
    client: Any  # DynamoDBClient
    table: str

    def seen(self) -> Seen | None:
        """The version last reported, or None before the first report."""
        try:
            item = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": STATE_PARTITION}, "sk": {"S": TUNING_SORT_KEY}},
                ConsistentRead=True,
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot read the tuning version last reported: {_code(exc)}") from exc
        return (int(item["ver"]["N"]), item["sha"]["S"]) if item else None

    def record(self, seen: Seen, expected: Seen | None) -> bool:
        """Record ``seen`` if the item still holds ``expected`` (None: no item); False when another
        run recorded something else since it was read (that run reports it)."""
        if expected is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "ver = :ver AND sha = :sha",
                "ExpressionAttributeValues": {":ver": {"N": str(expected[0])}, ":sha": {"S": expected[1]}},
            }
        try:
            return conditional_write(
                self.client.put_item,
                TableName=self.table,
                Item={
                    "pk": {"S": STATE_PARTITION},
                    "sk": {"S": TUNING_SORT_KEY},
                    "ver": {"N": str(seen[0])},
                    "sha": {"S": seen[1]},
                    "at": {"S": datetime.now(tz=UTC).isoformat()},
                },
                **condition,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot record the tuning version reported: {_code(exc)}") from exc


@dataclass(frozen=True, slots=True)
class SnsOperationsTopic:
    """The stack's operations topic (its alarms' topic): messages for the people who run it."""

    client: Any  # SNSClient
    topic_arn: str

    def publish(self, subject: str, message: str) -> str:
        try:
            response = self.client.publish(TopicArn=self.topic_arn, Subject=subject, Message=message)
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"{_code(exc)} publishing to the operations topic") from exc
        return str(response["MessageId"])


def _code(exc: ClientError | BotoCoreError) -> str:
    return error_code_of(exc) if isinstance(exc, ClientError) else type(exc).__name__


def aws_error(exc: ClientError) -> str:
    """One line from a ClientError: the operation, AWS's code and message."""
    error = exc.response.get("Error", {})
    operation = getattr(exc, "operation_name", "") or "AWS"
    message = " ".join(str(error.get("Message", "")).split())
    return f"{operation}: {error.get('Code', 'error')}: {message}"


@contextmanager
def _translated() -> Iterator[None]:
    """What AWS refused, as an :class:`OperationsError` telling the same line (the cause kept)."""
    try:
        yield
    except ClientError as exc:
        raise OperationsError(aws_error(exc), error_code_of(exc)) from exc


Item = dict[str, Any]
# A run record without its packed keys or outcomes; names through placeholders (DynamoDB reserves many).
_RUN_ATTRIBUTES = ("sk", "st", "lease", "files", "n", "done_at", "att", "pz")
_OUTBOX_ATTRIBUTES = ("sk", "st", "doc", "created", "sent_at", "message_id", "parked_reason", "parked_at")


def _text(item: Item, name: str) -> str | None:
    value = item.get(name, {}).get("S")
    return str(value) if value is not None else None


def _run_record(item: Item) -> RunRecord:
    lease, done = _text(item, "lease"), _text(item, "done_at")
    return RunRecord(
        run_id=item["sk"]["S"],
        state=_text(item, "st") or "?",
        lease_until=datetime.fromisoformat(lease) if lease else None,
        files=int((item.get("files") or item.get("n") or {"N": "0"})["N"]),
        closed_at=datetime.fromisoformat(done) if done else None,
        takeovers=int(item.get("att", {}).get("N", "0")),
        poison=tuple(sorted(item.get("pz", {}).get("SS", ()))),
    )


def _outbox_entry(item: Item) -> OutboxEntry:
    return OutboxEntry(
        alert_id=item["sk"]["S"].removeprefix("A#"),
        state=_text(item, "st") or "?",
        document=_text(item, "doc"),
        created=_text(item, "created"),
        sent_at=_text(item, "sent_at"),
        message_id=_text(item, "message_id"),
        parked_at=_text(item, "parked_at"),
        parked_reason=_text(item, "parked_reason"),
    )


def _projection(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "ProjectionExpression": ", ".join(f"#a{i}" for i in range(len(names))),
        "ExpressionAttributeNames": {f"#a{i}": name for i, name in enumerate(names)},
    }


@dataclass(frozen=True, slots=True)
class DynamoOperations:
    """The deployment's table as the operator commands read it, and its triage records (layout:
    adapters/dynamodb.py and ``TRIAGE_PARTITION``)."""

    client: Any  # DynamoDBClient
    table: str

    def table_info(self) -> TableInfo:
        try:
            description = self.client.describe_table(TableName=self.table)["Table"]
        except ClientError as exc:
            if error_code_of(exc) == "ResourceNotFoundException":
                region = getattr(getattr(self.client, "meta", None), "region_name", None) or "?"
                raise TableMissingError(self.table, region) from None
            raise OperationsError(aws_error(exc), error_code_of(exc)) from exc
        return TableInfo(
            state=str(description.get("TableStatus", "?")),
            item_count=int(description.get("ItemCount", 0)),
            size_bytes=int(description.get("TableSizeBytes", 0)),
        )

    def watermark(self) -> datetime | None:
        with _translated():
            return DynamoLedger(self.client, self.table).watermark()

    def runs(self) -> list[RunRecord]:
        items = self._partition(RUN_PARTITION, _RUN_ATTRIBUTES)
        return sorted((_run_record(item) for item in items), key=lambda r: r.run_id)

    def outbox(self) -> list[OutboxEntry]:
        items = self._partition(OUTBOX_PARTITION, _OUTBOX_ATTRIBUTES)
        return sorted((_outbox_entry(item) for item in items), key=lambda e: e.alert_id)

    def outbox_entry(self, alert_id: str) -> OutboxEntry | None:
        item = self._alert_item(OUTBOX_PARTITION, alert_id)
        return _outbox_entry(item) if item is not None else None

    def _alert_item(self, partition: str, alert_id: str) -> Item | None:
        """A consistent read of one alert's item (``A#<id>``) in ``partition``."""
        with _translated():
            item: Item | None = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": partition}, "sk": {"S": f"A#{alert_id}"}},
                ConsistentRead=True,
            ).get("Item")
        return item

    def triage(self, since: datetime) -> list[TriageRecord]:
        items: list[Item] = []
        with _translated():
            for page in self.client.get_paginator("query").paginate(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                FilterExpression="det >= :since",
                ExpressionAttributeValues={
                    ":pk": {"S": TRIAGE_PARTITION},
                    ":since": {"S": since.astimezone(UTC).isoformat()},
                },
                ConsistentRead=True,
            ):
                items.extend(page.get("Items", []))
        records = (_triage_record(item) for item in items)
        return sorted((r for r in records if r is not None), key=lambda r: r.alert_id)

    def triage_record(self, alert_id: str) -> TriageRecord | None:
        item = self._alert_item(TRIAGE_PARTITION, alert_id)
        return _triage_record(item) if item is not None else None

    def write_triage(self, record: TriageRecord, expected_version: int) -> None:
        """A put conditioned on the version read (``ver``; none for a first resolution)."""
        if expected_version == 0:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "ver = :expected",
                "ExpressionAttributeValues": {":expected": {"N": str(expected_version)}},
            }
        with _translated():
            written = conditional_write(
                self.client.put_item, TableName=self.table, Item=_triage_item(record.bounded()), **condition
            )
        if not written:
            raise ConcurrentChangeError.of_triage(record.alert_id, expected_version)

    def _partition(self, partition: str, names: tuple[str, ...]) -> list[Item]:
        items: list[Item] = []
        with _translated():
            for page in self.client.get_paginator("query").paginate(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": partition}},
                ConsistentRead=True,
                **_projection(names),
            ):
                items.extend(page.get("Items", []))
        return items


def _resolution_attributes(resolution: Resolution) -> dict[str, Any]:
    """A resolution's attributes, read back by ``_resolution``: at the top of a record (the current
    one) and as a map in its ``hist`` (the earlier ones)."""
    return {
        "st": {"S": resolution.verdict},
        "by": {"S": resolution.by},
        "at": {"S": resolution.at.astimezone(UTC).isoformat()},
        "note": {"S": resolution.note},
    }


def _triage_item(record: TriageRecord) -> Item:
    """``TRIAGE`` / ``A#<id>``: the digest (``det`` detected, ``dtr`` detector, ``sev``, ``score``,
    ``acct``, ``who`` the principal, ``loc``), the resolution (``st``, ``by``, ``at``, ``note``), the
    earlier ones (``hist``, a list of maps), ``ver``, and ``expires_at`` 90 days after detection."""
    digest = record.digest
    return {
        "pk": {"S": TRIAGE_PARTITION},
        "sk": {"S": f"A#{digest.alert_id}"},
        "det": {"S": digest.detected_at.astimezone(UTC).isoformat()},
        "dtr": {"S": digest.detector},
        "sev": {"S": digest.severity},
        "score": {"N": repr(float(digest.score))},
        "acct": {"S": digest.account},
        "who": {"S": digest.principal},
        "loc": {"S": digest.location},
        **_resolution_attributes(record.resolution),
        "hist": {"L": [{"M": _resolution_attributes(r)} for r in record.history]},
        "ver": {"N": str(record.version)},
        "expires_at": ttl_after(digest.detected_at, TRIAGE_RETENTION),
    }


def _resolution(fields: Item) -> Resolution:
    return Resolution(
        verdict=cast(TriageVerdict, fields["st"]["S"]),
        by=str(fields["by"]["S"]),
        at=datetime.fromisoformat(fields["at"]["S"]),
        note=str(fields.get("note", {}).get("S", "")),
    )


def _triage_record(item: Item) -> TriageRecord | None:
    """The record an item holds, None for an item no ``resolve`` wrote (missing, mistyped, out of range)."""
    try:
        record = TriageRecord(
            digest=AlertDigest(
                alert_id=item["sk"]["S"].removeprefix("A#"),
                detected_at=datetime.fromisoformat(item["det"]["S"]),
                detector=str(item["dtr"]["S"]),
                severity=str(item["sev"]["S"]),
                score=float(item["score"]["N"]),
                account=str(item["acct"]["S"]),
                principal=str(item["who"]["S"]),
                location=str(item["loc"]["S"]),
            ),
            resolution=_resolution(item),
            version=int(item["ver"]["N"]),
            history=tuple(_resolution(entry["M"]) for entry in item.get("hist", {}).get("L", [])),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return record if record.readable() else None


def caller_arn(sts: Any) -> str:
    """Who the CLI's credentials are (STS GetCallerIdentity, which needs no permission): the ARN a
    resolution is signed with."""
    with _translated():
        return str(sts.get_caller_identity()["Arn"])


@dataclass(frozen=True, slots=True)
class SsmTuningStore:
    """The tuning parameter in SSM, read then written back unless it changed in between.

    SSM has no conditional put: the version is compared right before ``PutParameter`` (a creation
    uses ``Overwrite=False``, which AWS refuses atomically if someone created it meanwhile).
    """

    client: Any  # SSMClient

    def read(self, name: str) -> StoredTuning | None:
        try:
            parameter = self.client.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        except ClientError as exc:
            if error_code_of(exc) == "ParameterNotFound":
                return None
            raise OperationsError(aws_error(exc), error_code_of(exc)) from exc
        kind = str(parameter.get("Type"))
        meta: dict[str, Any] = {}
        if kind in {"String", "SecureString"}:  # the others are refused before any write
            with _translated():
                described = self.client.describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Values": [name]}]
                )
            meta = next(iter(described.get("Parameters", [])), {})
        return StoredTuning(
            version=int(parameter["Version"]),
            type=kind,
            text=str(parameter["Value"]),
            key_id=meta.get("KeyId"),
            tier=meta.get("Tier"),
        )

    def write(
        self,
        name: str,
        text: str,
        *,
        expected_version: int | None,
        type: str,  # noqa: A002
        key_id: str | None = None,
        tier: str | None = None,
    ) -> int:
        request: dict[str, Any] = {"Name": name, "Value": text, "Type": type}
        if expected_version is None:
            request["Overwrite"] = False
            request["Description"] = "trailgeo tuning (allowlists and per-method overrides)"
        else:
            now = self._version(name)
            if now != expected_version:
                raise ConcurrentChangeError(
                    f"SSM parameter {name}: changed while we edited it (read version {expected_version}, "
                    f"now {now or 'deleted'}): nothing was written; run the command again"
                )
            request["Overwrite"] = True
            if tier:
                request["Tier"] = tier
        if type == "SecureString" and key_id:
            request["KeyId"] = key_id
        response = self._put(request)
        return int(response["Version"])

    def _version(self, name: str) -> int:
        """The parameter's version now; 0 when it was deleted."""
        try:
            return int(self.client.get_parameter(Name=name)["Parameter"]["Version"])
        except ClientError as exc:
            if error_code_of(exc) == "ParameterNotFound":
                return 0
            raise OperationsError(aws_error(exc), error_code_of(exc)) from exc

    def _put(self, request: dict[str, Any]) -> Any:
        try:
            return self.client.put_parameter(**request)
        except ClientError as exc:
            if error_code_of(exc) == "ParameterAlreadyExists":
                raise ConcurrentChangeError(
                    f"SSM parameter {request['Name']}: created by someone else while we edited it: "
                    "nothing was written; run the command again"
                ) from None
            raise OperationsError(aws_error(exc), error_code_of(exc)) from exc


MAX_METRICS_PER_REQUEST = 1000  # PutMetricData's MetricData limit


@dataclass(frozen=True, slots=True)
class CloudWatchMetrics:
    """Data points sent with ``PutMetricData`` to a stack's namespace (``trailgeo/STACK``), each with
    the ``service`` dimension its other metrics carry (``STACK``), as Powertools writes them."""

    client: Any  # CloudWatchClient
    namespace: str
    service: str

    def publish(self, points: Sequence[MetricPoint], at: datetime) -> None:
        data = [
            {
                "MetricName": point.name,
                "Dimensions": [
                    {"Name": "service", "Value": self.service},
                    *({"Name": k, "Value": v} for k, v in sorted(point.dimensions.items())),
                ],
                "Timestamp": at,
                "Value": point.value,
                "Unit": point.unit,
            }
            for point in points
        ]
        with _translated():
            for start in range(0, len(data), MAX_METRICS_PER_REQUEST):
                self.client.put_metric_data(
                    Namespace=self.namespace, MetricData=data[start : start + MAX_METRICS_PER_REQUEST]
                )
