"""The operations side of a run: the operations topic, and which tuning version it was told about.

``STATE``/``TUNING`` in the table holds the tuning version (number and digest of its text) last
reported, so that each change is reported once whatever the execution environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trailgeo.adapters.dynamodb import STATE_PARTITION, StoreError, conditional_write, error_code_of
from trailgeo.ports import PublishError

TUNING_SORT_KEY = "TUNING"
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
