"""The fan-out ports (FanoutTracker, PartialStore, TaskQueue): one contract each, run against the
in-memory fakes and against DynamoDB, S3 and SQS (moto)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.aws import BUCKET, TABLE
from tests.conftest import Backend
from trailgeo.adapters.fanout import (
    MAX_MESSAGE_BYTES,
    DynamoFanoutTracker,
    FanoutError,
    S3PartialStore,
    SqsTaskQueue,
)
from trailgeo.adapters.memory import MemoryFanoutTracker, MemoryPartialStore, MemoryTaskQueue
from trailgeo.ports import FanoutTask, FanoutTracker, PartialStore, TaskQueue

NOW = datetime(2026, 10, 2, 12, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)


@pytest.fixture
def tracker(backend: Backend) -> FanoutTracker:
    if backend.kind == "memory":
        return MemoryFanoutTracker()
    return DynamoFanoutTracker(backend.client("dynamodb"), TABLE)


@pytest.fixture
def partials(backend: Backend) -> PartialStore:
    if backend.kind == "memory":
        return MemoryPartialStore()
    return S3PartialStore(backend.client("s3"), BUCKET)


@dataclass
class Queue:
    """A task queue and what reads back what was sent to it."""

    queue: TaskQueue
    received: Any  # Callable[[], list[FanoutTask]]


@pytest.fixture(params=["memory", "sqs"])
def queue(request: pytest.FixtureRequest) -> Queue:
    if request.param == "memory":
        memory = MemoryTaskQueue()
        return Queue(memory, memory.drain)
    sqs = request.getfixturevalue("aws").client("sqs")
    url = sqs.create_queue(QueueName="trailgeo-fanout")["QueueUrl"]

    def received() -> list[FanoutTask]:
        tasks = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                tasks.append(FanoutTask.from_json(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return tasks

    return Queue(SqsTaskQueue(sqs, url), received)


def test_given_a_batch_opened_twice_when_its_tasks_are_done_then_each_counts_once(
    tracker: FanoutTracker,
) -> None:
    # Given a batch of three tasks, opened again by a retried planner
    tracker.open("run-a", 3, NOW)
    tracker.open("run-a", 3, NOW)

    # When its tasks are done, one of them delivered twice
    counts = [tracker.task_done("run-a", 0), tracker.task_done("run-a", 1), tracker.task_done("run-a", 1)]
    last = tracker.task_done("run-a", 2)

    # Then the redelivered task counted once, and the last one saw all three done
    assert counts == [1, 2, 2]
    assert last == 3


def test_given_a_finished_batch_when_invocations_claim_its_reduce_then_one_reduces_until_its_lease_ends(
    tracker: FanoutTracker,
) -> None:
    # Given a batch whose tasks are all done
    tracker.open("run-a", 1, NOW)
    tracker.task_done("run-a", 0)

    # When two invocations claim the reduce, then a third once the first one's lease has passed
    first = tracker.claim_reduce("run-a", "worker-1", LEASE, NOW)
    second = tracker.claim_reduce("run-a", "worker-2", LEASE, NOW + timedelta(minutes=1))
    takeover_at = LEASE + timedelta(seconds=1)
    third = tracker.claim_reduce("run-a", "worker-3", takeover_at + timedelta(minutes=5), takeover_at)

    # Then the first reduces, the second does not, the third takes the dead reduce over
    assert (first, second, third) == (True, False, True)


def test_given_a_batch_never_opened_when_its_reduce_is_claimed_then_it_is_refused(
    tracker: FanoutTracker,
) -> None:
    # Given no batch "run-x"
    # When an invocation claims its reduce
    claimed = tracker.claim_reduce("run-x", "worker-1", LEASE, NOW)

    # Then it is refused: there is no batch to reduce
    assert claimed is False


def test_given_a_batch_never_opened_when_one_of_its_tasks_is_done_then_a_fanout_error_says_so(
    tracker: FanoutTracker,
) -> None:
    # Given another batch open, and no batch "run-x" (never opened, or its record expired)
    tracker.open("run-a", 2, NOW)

    # When a task of "run-x" is marked done
    # Then it fails as a fan-out error (SQS delivers the task again, then to the dead-letter queue)
    with pytest.raises(FanoutError, match="never opened"):
        tracker.task_done("run-x", 0)
    # and the open batch counted nothing
    assert tracker.task_done("run-a", 0) == 1


def test_given_partials_when_they_are_read_back_then_each_is_its_task_s_last_write(
    partials: PartialStore,
) -> None:
    # Given two tasks' partials, the second written twice (a redelivered task)
    partials.put("run-a", 0, b"\x00first")
    partials.put("run-a", 1, b"old")
    partials.put("run-a", 1, b"new")

    # When they are read back
    read = [partials.get("run-a", 0), partials.get("run-a", 1)]

    # Then each is what its task wrote last
    assert read == [b"\x00first", b"new"]


def test_given_a_partial_never_written_when_it_is_read_then_a_fanout_error_says_it_is_missing(
    partials: PartialStore,
) -> None:
    # Given a batch with one task's partial written
    partials.put("run-a", 0, b"zero")

    # When another task's partial is read
    # Then it fails as missing (a retry will not bring it)
    with pytest.raises(FanoutError, match="missing"):
        partials.get("run-a", 1)


def test_given_a_reduced_batch_when_its_partials_are_discarded_then_they_are_gone_and_others_stay(
    partials: PartialStore,
) -> None:
    # Given the partials of two batches
    partials.put("run-a", 0, b"a0")
    partials.put("run-a", 1, b"a1")
    partials.put("run-b", 0, b"b0")

    # When the first batch's are discarded, twice (a retried reduce), for more tasks than written
    partials.discard("run-a", 3)
    partials.discard("run-a", 3)

    # Then they are gone, the other batch's are not
    with pytest.raises(FanoutError):
        partials.get("run-a", 0)
    assert partials.get("run-b", 0) == b"b0"


def test_given_tasks_when_they_are_sent_then_each_is_received_as_sent(queue: Queue) -> None:
    # Given 23 tasks of a batch (more than one SendMessageBatch of ten)
    tasks = [
        FanoutTask(run_id="run-a", scheduled_at=NOW, index=i, tasks=23, keys=[f"AWSLogs/k-{i}.json.gz"])
        for i in range(23)
    ]

    # When they are sent
    queue.queue.send(tasks)

    # Then every one is received, unchanged
    assert sorted(queue.received(), key=lambda task: task.index) == tasks


def test_given_a_task_over_the_message_limit_when_it_is_sent_then_it_is_refused_and_none_sent(
    queue: Queue,
) -> None:
    # Given a task whose message would be over SQS's limit, after a small one
    keys = [
        f"AWSLogs/111122223333/CloudTrail/us-east-1/{i:06d}.json.gz" for i in range(MAX_MESSAGE_BYTES // 40)
    ]
    small = FanoutTask(run_id="run-a", scheduled_at=NOW, index=0, tasks=2, keys=keys[:1])
    huge = FanoutTask(run_id="run-a", scheduled_at=NOW, index=1, tasks=2, keys=keys)

    # When both are sent
    with pytest.raises(FanoutError, match="over SQS"):
        queue.queue.send([small, huge])

    # Then nothing was sent: the planner sends the batch again, whole
    assert queue.received() == []
