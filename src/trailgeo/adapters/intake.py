"""The notification intake (``Intake=Notifications``): new CloudTrail files named by messages on an
SQS queue, instead of listing the bucket.

Three senders, three shapes (``files_named``):

* the trail's per-file SNS notification (``SnsTopicName``): ``{"s3Bucket": ..., "s3ObjectKey":
  [...]}``, wrapped in SNS's envelope (``"Type": "Notification"``) unless the subscription has raw
  message delivery; keys as they are;
* EventBridge's "Object Created" for the bucket (``detail.bucket.name``, ``detail.object.key``);
  keys as they are;
* S3 event notifications (``Records[].s3``), straight from the bucket or through SNS; keys
  URL-encoded ("red flower" is ``red+flower``), decoded here.

Nothing a message says is trusted: only keys in the trail's bucket, of CloudTrail's layout under
the trail's prefix, become files; others are counted skips and never read. A message that cannot
be parsed, is too large or names too many keys is poisoned: logged (with its SQS sender), counted,
and acknowledged like any other, so that it never holds the queue or the run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from trailgeo.adapters.dynamodb import error_code_of
from trailgeo.core.keys import KeyKind, parse_key
from trailgeo.observability import logger
from trailgeo.ports import Delivery, IntakeError, LogObject, Notification

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

# A CloudTrail notification names the files of one delivery (one, as a rule); an S3 event one
# object. More than this in one message is not AWS's: poisoned, none of its keys read.
MAX_KEYS_PER_MESSAGE = 100
# SQS's own limit is 256 KiB (1 MiB where raised): a body over this is not a notification.
MAX_BODY_BYTES = 256 * 1024
MAX_KEY_BYTES = 1024  # S3's limit on a key
# Receives in flight at once (each up to 10 messages), and deletes: an organization's tens of
# thousands of messages a window are drained at SQS's latency divided by this.
RECEIVE_CONCURRENCY = 8
# Long polling: a receive that finds nothing waits this long for a message, asking every SQS
# server (short polling asks a sample, and may answer empty while messages wait).
WAIT_SECONDS = 1
SQS_BATCH = 10  # messages per ReceiveMessage, entries per DeleteMessageBatch: SQS's maximum
MAX_LOGGED = 20  # poisoned messages logged one by one per drain; the rest are counted


class PoisonedMessageError(ValueError):
    """A message that is not a notification this intake understands; ``reason`` is its metric's."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def files_named(body: str) -> list[tuple[str, str]]:
    """The (bucket, key) pairs a message body names, S3 event keys URL-decoded; raises
    ``PoisonedMessageError``. An S3 test event or a non-creation event names nothing."""
    if len(body.encode()) > MAX_BODY_BYTES:
        raise PoisonedMessageError("too_large", f"{len(body.encode())} bytes")
    document = _json_object(body)
    if document.get("Type") == "Notification" and isinstance(document.get("Message"), str):
        document = _json_object(document["Message"])  # SNS's envelope, once: never nested further
    pairs = list(_pairs(document))
    if len(pairs) > MAX_KEYS_PER_MESSAGE:
        raise PoisonedMessageError("too_many_keys", f"{len(pairs)} keys")
    return pairs


def _json_object(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PoisonedMessageError("invalid_json", str(exc)[:200]) from exc
    if not isinstance(document, dict):
        raise PoisonedMessageError("not_a_notification", type(document).__name__)
    return document


def _pairs(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "s3ObjectKey" in document:  # CloudTrail's notification
        bucket, keys = document.get("s3Bucket"), document["s3ObjectKey"]
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(bucket, str) or not isinstance(keys, list):
            raise PoisonedMessageError("not_a_notification", "s3Bucket/s3ObjectKey of the wrong type")
        if len(keys) > MAX_KEYS_PER_MESSAGE:
            raise PoisonedMessageError("too_many_keys", f"{len(keys)} keys")
        for key in keys:
            yield bucket, _checked_key(key)
    elif document.get("source") == "aws.s3" and "detail-type" in document:  # EventBridge
        if document["detail-type"] != "Object Created":
            return
        detail = document.get("detail")
        bucket = _field(detail, "bucket", "name")
        yield bucket, _checked_key(_field(detail, "object", "key"))
    elif isinstance(records := document.get("Records"), list):  # S3 event notifications
        if len(records) > MAX_KEYS_PER_MESSAGE:
            raise PoisonedMessageError("too_many_keys", f"{len(records)} records")
        for entry in records:
            if not isinstance(entry, dict):
                raise PoisonedMessageError("not_a_notification", "a record is not an object")
            name = entry.get("eventName")
            if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
                continue
            s3 = entry.get("s3")
            key = _field(s3, "object", "key")
            yield _field(s3, "bucket", "name"), _checked_key(unquote_plus(key))
    elif document.get("Event") == "s3:TestEvent":
        return  # S3's message when a notification configuration is saved
    else:
        raise PoisonedMessageError("not_a_notification", "no shape this intake knows")


def _field(parent: object, outer: str, inner: str) -> str:
    value = parent.get(outer) if isinstance(parent, dict) else None
    value = value.get(inner) if isinstance(value, dict) else None
    if not isinstance(value, str):
        raise PoisonedMessageError("not_a_notification", f"no {outer}.{inner}")
    return value


def _checked_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise PoisonedMessageError("not_a_notification", "a key that is not an S3 key")
    return key


@dataclass(frozen=True, slots=True)
class TrailNotices:
    """What a message names of the trail's files in ``bucket`` under ``prefix``: every intake (the
    queue drained by a run, a batch of the queue's messages handed to an event-driven run, the
    in-memory fake) reads messages through this one door."""

    bucket: str
    prefix: str = ""

    def objects(self, message_id: str, body: str, sender: str, delivery: Delivery) -> tuple[LogObject, ...]:
        """The trail's files a message names; what it names otherwise is counted in ``delivery``
        (a poisoned message, a key that is not the trail's), never read."""
        try:
            pairs = files_named(body)
        except PoisonedMessageError as exc:
            delivery.poisoned[exc.reason] += 1
            if sum(delivery.poisoned.values()) <= MAX_LOGGED:
                logger.error(
                    "intake message poisoned: acknowledged, none of its keys read",
                    reason=exc.reason,
                    detail=str(exc)[:300],
                    message_id=message_id[:100],
                    sender=sender[:200],
                    body=body[:300],
                )
            return ()
        objects: list[LogObject] = []
        for bucket, key in pairs:
            found = self.trail_file(bucket, key)
            if isinstance(found, LogObject):
                objects.append(found)
                continue
            delivery.keys_skipped[found] += 1
            if delivery.keys_skipped[found] <= MAX_LOGGED:
                logger.warning("intake key skipped", reason=found, bucket=bucket[:100], key=key[:300])
        return tuple(objects)

    def trail_file(self, bucket: str, key: str) -> LogObject | str:
        """The trail's file a named (bucket, key) is, or why it is none: the bucket, then the
        prefix and CloudTrail's layout right below it, as the listing would find it."""
        if bucket != self.bucket:
            return "notification_other_bucket"
        base = f"{self.prefix}AWSLogs/"
        if not key.startswith(base):
            return "notification_outside_prefix"
        parsed = parse_key(key)
        if parsed.kind is not KeyKind.LOG or parsed.delivered_at is None:
            return f"key_{parsed.kind.value}"
        # parse_key takes any folders before AWSLogs/: the key must hold the layout right under the
        # trail's prefix (an organization trail's one folder more), nothing nested deeper.
        if key[len(base) :].count("/") != (7 if parsed.org_id else 6):
            return "notification_outside_prefix"
        return LogObject(key, parsed.delivered_at, 0, parsed.account)


@dataclass(slots=True)
class SqsNotificationIntake:
    """Drains the intake queue for the files of ``bucket`` under ``prefix``."""

    client: SQSClient
    queue_url: str
    bucket: str
    prefix: str = ""
    concurrency: int = RECEIVE_CONCURRENCY
    wait_seconds: int = WAIT_SECONDS
    monotonic: Callable[[], float] = time.monotonic

    def receive(self, max_messages: int, seconds: float) -> Delivery:
        messages, drained = self._drain(max_messages, seconds)
        delivery = Delivery(drained=drained)
        notices = TrailNotices(self.bucket, self.prefix)
        named: dict[str, tuple[LogObject, ...]] = {}
        for message in messages:
            # The same message twice in one drain (SQS delivers at least once) is parsed and
            # counted once; each receipt settles with the files it names.
            message_id = message["MessageId"]
            if message_id not in named:
                sender = message.get("Attributes", {}).get("SenderId", "")
                named[message_id] = notices.objects(
                    message_id, str(message.get("Body", "")), sender, delivery
                )
            delivery.notifications.append(Notification(message["ReceiptHandle"], named[message_id]))
        return delivery

    def _drain(self, max_messages: int, seconds: float) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``max_messages`` messages, received ``concurrency`` requests at a time, until a
        receive finds the queue empty or ``seconds`` pass. Returns them and whether it was empty."""
        deadline = self.monotonic() + seconds
        lock = threading.Lock()
        state = {"left": max_messages, "empty": False}

        def worker() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            while True:
                with lock:
                    if state["empty"] or state["left"] <= 0 or self.monotonic() >= deadline:
                        return got
                    take = min(SQS_BATCH, state["left"])
                    state["left"] -= take
                try:
                    response = self.client.receive_message(
                        QueueUrl=self.queue_url,
                        MaxNumberOfMessages=take,
                        WaitTimeSeconds=self.wait_seconds,
                        MessageSystemAttributeNames=["SenderId", "SentTimestamp", "ApproximateReceiveCount"],
                    )
                except (ClientError, BotoCoreError) as exc:
                    code = error_code_of(exc) if isinstance(exc, ClientError) else type(exc).__name__
                    raise IntakeError(f"{code} receiving from the intake queue") from exc
                batch: list[Any] = list(response.get("Messages", []))
                got.extend(batch)
                with lock:
                    state["left"] += take - len(batch)
                    if not batch:
                        state["empty"] = True

        workers = max(1, min(self.concurrency, -(-max_messages // SQS_BATCH)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(worker) for _ in range(workers)]
            # Every worker finishes before the first error is raised: what they received stays
            # invisible for the queue's visibility timeout, then comes back. Nothing is lost.
            results = [future.exception() or future.result() for future in futures]
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise errors[0]
        messages = [message for result in results if isinstance(result, list) for message in result]
        return messages, bool(state["empty"])

    def acknowledge(self, receipts: Collection[str]) -> None:
        self._each_batch(receipts, self._delete)

    def release(self, receipts: Collection[str]) -> None:
        self._each_batch(receipts, self._make_visible)

    def _each_batch(self, receipts: Collection[str], call: Callable[[list[str]], int]) -> None:
        unique = list(dict.fromkeys(receipts))
        batches = [unique[i : i + SQS_BATCH] for i in range(0, len(unique), SQS_BATCH)]
        if not batches:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(batches)))) as pool:
            failed = sum(pool.map(call, batches))
        if failed:
            # Not fatal: a message not deleted comes back after its visibility timeout, and the
            # ledger makes its files a no-op then; one not made visible waits for that timeout.
            logger.warning("intake messages not acknowledged or released", messages=failed)

    def _delete(self, receipts: list[str]) -> int:
        entries: Any = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)]
        try:
            response = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("DeleteMessageBatch failed", error=str(exc)[:300])
            return len(receipts)
        return len(response.get("Failed", []))

    def _make_visible(self, receipts: list[str]) -> int:
        entries: Any = [
            {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0} for i, r in enumerate(receipts)
        ]
        try:
            response = self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("ChangeMessageVisibilityBatch failed", error=str(exc)[:300])
            return len(receipts)
        return len(response.get("Failed", []))


# Lambda's event source mapping hands a function at most 10,000 messages (and 6 MB) a batch: more
# records than that in one event are not the queue's. They are all reported failed, none read.
MAX_EVENT_RECORDS = 10_000


@dataclass(slots=True)
class SqsEventIntake:
    """The intake queue's messages of one batch, as Lambda's SQS event source mapping hands them to
    an event-driven run (``Continuous=Enabled``): ``receive`` gives them all, parsed as a drain's;
    ``acknowledge`` and ``release`` only note the outcome. The event source deletes what the
    function does not report failed: :meth:`failures` is the batch's ``batchItemFailures``, every
    message not acknowledged (released, or never settled)."""

    records: list[tuple[str, str, str]]  # (message id, body, sender)
    bucket: str
    prefix: str = ""
    acknowledged: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)

    @classmethod
    def from_event(cls, event: Mapping[str, Any], bucket: str, prefix: str = "") -> SqsEventIntake:
        records = event.get("Records") if isinstance(event, Mapping) else None
        if not isinstance(records, list) or len(records) > MAX_EVENT_RECORDS:
            raise IntakeError("not an SQS event of the intake queue")
        parsed = []
        for record in records:
            if not isinstance(record, Mapping) or not isinstance(record.get("messageId"), str):
                raise IntakeError("an SQS event record without a messageId")
            attributes = record.get("attributes")
            sender = attributes.get("SenderId", "") if isinstance(attributes, Mapping) else ""
            parsed.append((record["messageId"], str(record.get("body", "")), str(sender)))
        return cls(parsed, bucket, prefix)

    def receive(self, max_messages: int, seconds: float) -> Delivery:  # noqa: ARG002 - the batch is all there is
        delivery = Delivery(drained=True)
        notices = TrailNotices(self.bucket, self.prefix)
        named: dict[str, tuple[LogObject, ...]] = {}
        for message_id, body, sender in self.records[:max_messages]:
            if message_id not in named:
                named[message_id] = notices.objects(message_id, body, sender, delivery)
            delivery.notifications.append(Notification(message_id, named[message_id]))
        delivery.drained = len(self.records) <= max_messages
        return delivery

    def acknowledge(self, receipts: Collection[str]) -> None:
        self.acknowledged.update(receipts)

    def release(self, receipts: Collection[str]) -> None:
        self.released.update(receipts)

    def failures(self) -> list[str]:
        """The message ids the event source must not delete: each comes back after the queue's
        visibility timeout (to this function or to a scheduled run's drain)."""
        return list(dict.fromkeys(m for m, _, _ in self.records if m not in self.acknowledged))
