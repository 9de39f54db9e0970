"""Fan-out adapters: the SQS task queue, partial aggregates in S3, the batch tracker in DynamoDB.

The tracker is one item per fanned-out batch in the detector's table: ``pk`` ``FANOUT``, ``sk``
the run id, with the number of tasks, the set of tasks done and the reduce lease (TTL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from trailgeo.adapters.dynamodb import LEDGER_RETENTION, conditional_write, error_code_of, ttl_after
from trailgeo.core.chunks import bounded_runs
from trailgeo.ports import FanoutTask, TrailgeoError, TransientReadError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

FANOUT_PARTITION = "FANOUT"
PARTIALS_PREFIX = "partials/"
PARTIALS_KEPT = timedelta(days=1)  # the bucket's lifecycle rule deletes what a failed batch left


class FanoutError(TrailgeoError):
    """A fan-out resource refused an operation retries will not fix."""


# SQS's limits on one message and on one SendMessageBatch request (the sum of its bodies): 256 KiB
# each, the limits every queue accepts (SQS raised both to 1 MiB in 2025; FanOutQueue keeps
# MaximumMessageSize at 256 KiB). A request over the total is refused whole (BatchRequestTooLong,
# an error, not a per-entry failure), so requests are cut by bytes as well as by ten entries.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_BATCH_BYTES = 256 * 1024
MAX_BATCH_ENTRIES = 10


def message_batches(bodies: list[str]) -> list[list[str]]:
    """``bodies`` in order, cut into SendMessageBatch requests within SQS's entry and byte limits."""
    for body in bodies:
        if len(body.encode()) > MAX_MESSAGE_BYTES:
            raise FanoutError(
                f"a task message of {len(body.encode())} bytes is over SQS's {MAX_MESSAGE_BYTES}"
            )
    return bounded_runs(
        bodies, lambda body: len(body.encode()), max_count=MAX_BATCH_ENTRIES, max_size=MAX_BATCH_BYTES
    )


@dataclass(slots=True)
class SqsTaskQueue:
    client: SQSClient
    queue_url: str

    def send(self, tasks: list[FanoutTask]) -> None:
        """SendMessageBatch, up to ten tasks and 256 KiB a call; entries SQS refused are sent again,
        then reported."""
        for bodies in message_batches([task.to_json() for task in tasks]):
            entries: list[Any] = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
            for _ in range(3):
                try:
                    response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                except ClientError as exc:
                    # The batch's run record stays open: a later run takes it over once its lease ends.
                    raise FanoutError(
                        f"SQS refused a SendMessageBatch of {len(entries)} task(s): {error_code_of(exc)}"
                    ) from exc
                failed = {f["Id"] for f in response.get("Failed", [])}
                entries = [entry for entry in entries if entry["Id"] in failed]
                if not entries:
                    break
            if entries:
                raise FanoutError(f"SQS refused {len(entries)} task(s) of a fanned-out batch")


@dataclass(slots=True)
class S3PartialStore:
    client: S3Client
    bucket: str
    prefix: str = PARTIALS_PREFIX

    def _key(self, run_id: str, index: int) -> str:
        return f"{self.prefix}{run_id}/{index:05d}.msgpack"

    def put(self, run_id: str, index: int, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(run_id, index), Body=data)

    def get(self, run_id: str, index: int) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(run_id, index))["Body"]
            return bytes(body.read())
        except ClientError as exc:
            # A 404 only with s3:ListBucket on the bucket (granted); without it S3 answers 403.
            if error_code_of(exc) in {"NoSuchKey", "404", "NotFound"}:
                raise FanoutError(f"partial {index} of {run_id} is missing from {self.bucket}") from exc
            raise TransientReadError(f"partial {index} of {run_id}: {error_code_of(exc)}") from exc

    def discard(self, run_id: str, tasks: int) -> None:
        keys: list[Any] = [{"Key": self._key(run_id, i)} for i in range(tasks)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000]})


@dataclass(slots=True)
class DynamoFanoutTracker:
    client: DynamoDBClient
    table: str

    def _key(self, run_id: str) -> dict[str, Any]:
        return {"pk": {"S": FANOUT_PARTITION}, "sk": {"S": run_id}}

    def open(self, run_id: str, tasks: int, now: datetime) -> None:
        conditional_write(  # a planner that retries the same batch finds it open already
            self.client.put_item,
            TableName=self.table,
            Item={
                **self._key(run_id),
                "tasks": {"N": str(tasks)},
                "opened": {"S": now.astimezone(UTC).isoformat()},
                "expires_at": ttl_after(now, LEDGER_RETENTION),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def task_done(self, run_id: str, index: int) -> int:
        try:
            response = self.client.update_item(
                TableName=self.table,
                Key=self._key(run_id),
                UpdateExpression="ADD done :index",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":index": {"NS": [str(index)]}},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code_of(exc) == "ConditionalCheckFailedException":
                raise FanoutError(f"batch {run_id[:200]} was never opened, or its record expired") from exc
            raise
        return len(response["Attributes"].get("done", {}).get("NS", []))

    def claim_reduce(self, run_id: str, holder: str, until: datetime, now: datetime) -> bool:
        return conditional_write(
            self.client.update_item,
            TableName=self.table,
            Key=self._key(run_id),
            UpdateExpression="SET reducer = :holder, reduce_until = :until",
            ConditionExpression=(
                "attribute_exists(pk) AND (attribute_not_exists(reducer) OR reduce_until < :now)"
            ),
            ExpressionAttributeValues={
                ":holder": {"S": holder},
                ":until": {"S": until.astimezone(UTC).isoformat()},
                ":now": {"S": now.astimezone(UTC).isoformat()},
            },
        )
