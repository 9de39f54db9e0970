"""The notification intake port (``NotificationIntake``): one contract, run against the in-memory
fake (``MemoryNotificationIntake``) and the SQS adapter (``SqsNotificationIntake``, moto)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.builders import T0, delivery_key
from tests.test_intake import cloudtrail_notice, object_created, s3_event
from trailgeo.adapters.intake import SqsNotificationIntake
from trailgeo.adapters.memory import MemoryNotificationIntake
from trailgeo.ports import IntakeError, NotificationIntake

BUCKET = "org-trail-bucket"
ORG = "o-exampleorgid"
BUDGET = 1_000  # messages a receive may take, unless a case says otherwise
SECONDS = 30.0


@dataclass
class Queue:
    """An intake, what sends to its queue, what counts the messages not deleted, and what makes
    its receives fail."""

    intake: NotificationIntake
    send: Callable[[str], None]
    left: Callable[[], int]
    refuse: Callable[[], None]


@pytest.fixture(params=["memory", "sqs"])
def queue(request: pytest.FixtureRequest) -> Queue:
    if request.param == "memory":
        memory = MemoryNotificationIntake(BUCKET)

        def refuse_memory() -> None:
            memory.refusing = True

        return Queue(memory, memory.send, memory.messages, refuse_memory)
    sqs = request.getfixturevalue("aws").client("sqs")
    url = sqs.create_queue(QueueName="trailgeo-intake", Attributes={"VisibilityTimeout": "900"})["QueueUrl"]

    def left() -> int:
        names: Any = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(attributes[name]) for name in names)

    def refuse_sqs() -> None:
        sqs.delete_queue(QueueUrl=url)

    # One request at a time: moto's queue is not safe for parallel receives (SQS is)
    adapter = SqsNotificationIntake(sqs, url, BUCKET, concurrency=1, wait_seconds=0)
    return Queue(adapter, lambda body: sqs.send_message(QueueUrl=url, MessageBody=body), left, refuse_sqs)


KEYS = [delivery_key(T0, account=f"{111122223333 + n:012d}", org=ORG) for n in range(25)]


def key(n: int) -> str:
    return KEYS[n]


def test_given_each_senders_notice_then_a_receive_names_the_trails_files_and_finds_the_queue_drained(
    queue: Queue,
) -> None:
    # Given one file named by each sender's shape
    queue.send(cloudtrail_notice(BUCKET, key(0)))
    queue.send(object_created(BUCKET, key(1)))
    queue.send(s3_event(BUCKET, key(2)))

    # When received
    delivery = queue.intake.receive(BUDGET, SECONDS)

    # Then each message names its file, with its delivery time and account from the key
    named = sorted((obj for n in delivery.notifications for obj in n.objects), key=lambda obj: obj.key)
    assert [(o.key, o.delivered_at, o.account) for o in named] == [
        (key(n), T0, f"{111122223333 + n:012d}") for n in range(3)
    ]
    assert delivery.drained
    assert not delivery.poisoned
    assert not delivery.keys_skipped


def test_given_poisoned_messages_and_keys_not_the_trails_then_they_are_counted_and_name_nothing(
    queue: Queue,
) -> None:
    # Given a message that is no JSON, one of no known shape, and keys of another bucket and
    # outside the trail's layout
    queue.send("{not json")
    queue.send(json.dumps({"hello": "world"}))
    queue.send(cloudtrail_notice("other-bucket", key(0)))
    queue.send(object_created(BUCKET, "uploads/AWSLogs/x.json.gz"))

    # When received
    delivery = queue.intake.receive(BUDGET, SECONDS)

    # Then each is counted by reason, names no file, and can still be settled (one receipt each)
    assert delivery.poisoned == {"invalid_json": 1, "not_a_notification": 1}
    assert delivery.keys_skipped == {"notification_other_bucket": 1, "notification_outside_prefix": 1}
    assert [n.objects for n in delivery.notifications] == [()] * 4
    queue.intake.acknowledge([n.receipt for n in delivery.notifications])
    assert queue.left() == 0


def test_given_messages_received_then_no_other_receive_gets_them_until_acknowledged_or_released(
    queue: Queue,
) -> None:
    # Given two messages received, not settled yet
    queue.send(cloudtrail_notice(BUCKET, key(0)))
    queue.send(cloudtrail_notice(BUCKET, key(1)))
    first = queue.intake.receive(BUDGET, SECONDS)
    assert len(first.notifications) == 2

    # When another receive comes (a run beside it), Then it gets neither; both are still queued
    assert queue.intake.receive(BUDGET, SECONDS).notifications == []
    assert queue.left() == 2

    # When one is acknowledged and the other released
    done, kept = first.notifications
    queue.intake.acknowledge([done.receipt])
    queue.intake.release([kept.receipt])

    # Then the released one is received again at once, and the acknowledged one never
    again = queue.intake.receive(BUDGET, SECONDS)
    assert [n.objects for n in again.notifications] == [kept.objects]
    queue.intake.acknowledge([n.receipt for n in again.notifications])
    assert queue.left() == 0


def test_given_more_messages_than_the_budget_then_a_receive_takes_the_budget_and_the_rest_waits(
    queue: Queue,
) -> None:
    # Given 25 notices and a budget of 10
    for n in range(25):
        queue.send(cloudtrail_notice(BUCKET, key(n)))

    # When received
    delivery = queue.intake.receive(10, SECONDS)

    # Then 10 come, the queue is not drained, and the next receives take the rest
    assert (len(delivery.notifications), delivery.drained) == (10, False)
    rest = queue.intake.receive(BUDGET, SECONDS)
    assert (len(rest.notifications), rest.drained) == (15, True)
    named = {obj.key for d in (delivery, rest) for n in d.notifications for obj in n.objects}
    assert named == {key(n) for n in range(25)}


def test_given_a_queue_that_refuses_then_a_receive_raises_the_intake_error(queue: Queue) -> None:
    # Given a queue the intake can no longer read
    queue.send(cloudtrail_notice(BUCKET, key(0)))
    queue.refuse()

    # When received, Then the domain's error is raised (the run lists its window instead)
    with pytest.raises(IntakeError):
        queue.intake.receive(BUDGET, SECONDS)
