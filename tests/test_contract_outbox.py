"""The AlertOutbox port (queueing, publishing leases, sent and parked alerts, the subjects' last
alerts, the open incidents' records): one contract, run against the in-memory fake and against
DynamoDB (moto). The quarantine of alerted hours has its own suite, tests/test_quarantine_contract.py."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.aws import TABLE
from tests.conftest import EVENTS, Backend
from trailgeo.adapters.dynamodb import DynamoOutbox
from trailgeo.adapters.memory import MemoryOutbox
from trailgeo.core.alerts import Alert
from trailgeo.ports import (
    MAX_INCIDENT_ID_BYTES,
    MAX_INCIDENT_METHOD_BYTES,
    MAX_INCIDENT_METHODS,
    MAX_REMEMBERED_HOURS,
    MAX_REMEMBERED_METHODS,
    AlertOutbox,
    IncidentRecord,
    Suppression,
)

NOW = datetime(2026, 10, 2, 12, tzinfo=UTC)
HOUR = int(NOW.timestamp()) // 3600
SUBJECT = "arn:aws:iam::111122223333:user/alice|SE"
NETWORK = "203.0.113.0/24"
DYNAMODB_ITEM_LIMIT = 400 * 1024


@pytest.fixture
def outbox(backend: Backend) -> AlertOutbox:
    if backend.kind == "memory":
        return MemoryOutbox()
    ticks = itertools.count()  # a clock that moves: each alert is queued after the one before
    return DynamoOutbox(
        backend.client("dynamodb"), TABLE, clock=lambda: NOW + timedelta(microseconds=next(ticks))
    )


def an_alert(alert_id: str, detected_at: datetime = NOW) -> Alert:
    """The alert of events/sqs-alert.json, under another id and detection time."""
    event = json.loads((EVENTS / "sqs-alert.json").read_text(encoding="utf-8"))
    alert = Alert.model_validate_json(event["Records"][0]["body"])
    return alert.model_copy(update={"alert_id": alert_id, "detected_at": detected_at})


def test_given_an_alert_queued_when_it_is_queued_again_then_it_is_pending_once(outbox: AlertOutbox) -> None:
    # Given an alert queued once
    assert outbox.put(an_alert("a1"))

    # When a retried run queues it again
    again = outbox.put(an_alert("a1"))

    # Then the second put says so and the alert is pending once, as queued
    assert again is False
    assert outbox.pending() == [an_alert("a1")]


def test_given_alerts_queued_out_of_order_then_pending_lists_the_oldest_then_as_queued(
    outbox: AlertOutbox,
) -> None:
    # Given a run's alerts queued most urgent first ("c" before "a"), and an older alert queued last
    outbox.put(an_alert("c", NOW))
    outbox.put(an_alert("a", NOW))
    outbox.put(an_alert("b", NOW - timedelta(minutes=15)))

    # When the pending alerts are read
    pending = [alert.alert_id for alert in outbox.pending()]

    # Then the older detection comes first, then the run's alerts in the order the run queued them
    assert pending == ["b", "c", "a"]


def test_given_a_pending_alert_when_publishers_claim_it_then_one_holds_it_until_its_lease_ends(
    outbox: AlertOutbox,
) -> None:
    # Given a pending alert
    outbox.put(an_alert("a1"))
    lease = NOW + timedelta(minutes=5)

    # When a publisher claims it, then another while the first holds it, then the first again
    first = outbox.claim_publish("a1", "reducer-1", lease, NOW)
    second = outbox.claim_publish("a1", "scheduled", lease, NOW + timedelta(minutes=1))
    again = outbox.claim_publish("a1", "reducer-1", lease, NOW + timedelta(minutes=1))
    # and the other once the lease has passed (the first publisher died)
    takeover_at = lease + timedelta(seconds=1)
    after = outbox.claim_publish("a1", "scheduled", takeover_at + timedelta(minutes=5), takeover_at)

    # Then the first won, the second lost, the holder's retry won, the takeover won
    assert (first, second, again, after) == (True, False, True, True)


def test_given_an_alert_sent_then_it_is_no_longer_pending_nor_claimable(outbox: AlertOutbox) -> None:
    # Given two pending alerts, one claimed
    outbox.put(an_alert("a1"))
    outbox.put(an_alert("a2"))
    assert outbox.claim_publish("a1", "p", NOW + timedelta(minutes=5), NOW)

    # When it is marked sent
    outbox.mark_sent("a1", "message-1")

    # Then only the other is pending, and the sent one cannot be claimed again
    assert [alert.alert_id for alert in outbox.pending()] == ["a2"]
    assert outbox.claim_publish("a1", "q", NOW + timedelta(hours=1), NOW + timedelta(minutes=30)) is False


def test_given_an_alert_the_channel_refused_when_it_is_parked_then_no_run_publishes_it(
    outbox: AlertOutbox,
) -> None:
    # Given a pending alert
    outbox.put(an_alert("a1"))

    # When it is parked
    outbox.park("a1", "InvalidParameter: message too long")

    # Then it is not pending and no publisher can claim it
    assert outbox.pending() == []
    assert outbox.claim_publish("a1", "p", NOW + timedelta(minutes=5), NOW) is False


def test_given_no_such_alert_when_a_publisher_claims_it_then_it_is_refused(outbox: AlertOutbox) -> None:
    # Given an outbox without alert "ghost"
    outbox.put(an_alert("a1"))

    # When a publisher claims "ghost"
    claimed = outbox.claim_publish("ghost", "p", NOW + timedelta(minutes=5), NOW)

    # Then it is refused: there is nothing to publish
    assert claimed is False


def test_given_a_subject_when_two_invocations_remember_an_alert_then_only_the_one_that_read_last_wins(
    outbox: AlertOutbox,
) -> None:
    # Given a subject never alerted
    assert outbox.recent([SUBJECT]) == {}

    # When two invocations, both having read no alert, record one each
    first = outbox.remember(SUBJECT, Suppression(NOW, "a1"), None)
    second = outbox.remember(SUBJECT, Suppression(NOW, "a2"), None)
    # and a later one, having read a1, records a re-alert; then one still holding a stale read
    later = outbox.remember(SUBJECT, Suppression(NOW + timedelta(hours=1), "a3"), "a1")
    stale = outbox.remember(SUBJECT, Suppression(NOW + timedelta(hours=2), "a4"), "a1")

    # Then the first and the later one won, the others lost, and the subject's last alert is a3
    assert (first, second, later, stale) == (True, False, True, False)
    assert outbox.recent([SUBJECT]) == {SUBJECT: Suppression(NOW + timedelta(hours=1), "a3")}


def test_given_a_suppression_with_methods_and_hours_then_it_is_read_back_as_written(
    outbox: AlertOutbox,
) -> None:
    # Given a subject's alert with its sensitive methods, alerted hours, severity, the alert its
    # thread began with and when the thread last paged
    written = Suppression(
        NOW,
        "a1",
        frozenset({"iam.amazonaws.com:CreateUser", "sts.amazonaws.com:GetSessionToken"}),
        frozenset({HOUR - 1, HOUR}),
        "high",
        "a0",
        NOW - timedelta(minutes=30),
    )

    # When it is remembered and read back
    assert outbox.remember(SUBJECT, written, None)

    # Then it is the same
    assert outbox.recent([SUBJECT, "someone-else|FR"]) == {SUBJECT: written}


def test_given_a_suppression_over_the_limits_then_the_first_methods_and_latest_hours_are_kept(
    outbox: AlertOutbox,
) -> None:
    # Given a subject's alert with more methods and hours than a record keeps
    methods = frozenset(f"svc.amazonaws.com:Method{i:03d}" for i in range(MAX_REMEMBERED_METHODS + 50))
    hours = frozenset(range(HOUR - MAX_REMEMBERED_HOURS - 99, HOUR + 1))

    # When it is remembered
    assert outbox.remember(SUBJECT, Suppression(NOW, "a1", methods, hours), None)

    # Then the first methods by name and the latest hours are kept, up to the limits
    kept = outbox.recent([SUBJECT])[SUBJECT]
    assert kept.sensitive_methods == frozenset(sorted(methods)[:MAX_REMEMBERED_METHODS])
    assert kept.hours == frozenset(range(HOUR - MAX_REMEMBERED_HOURS + 1, HOUR + 1))


def test_given_more_subjects_than_one_batch_read_then_recent_finds_every_one(outbox: AlertOutbox) -> None:
    # Given 150 alerted subjects (more than DynamoDB's 100 keys a BatchGetItem)
    subjects = [f"arn:aws:iam::111122223333:user/u{i:03d}|SE" for i in range(150)]
    for i, subject in enumerate(subjects):
        assert outbox.remember(subject, Suppression(NOW, f"a{i}"), None)

    # When their last alerts are read, with a subject never alerted, and one asked twice
    found = outbox.recent([*subjects, subjects[0], "arn:aws:iam::111122223333:user/never|SE"])

    # Then each of the 150 is there with its own alert, the other is not
    assert {s: found[s].alert_id for s in found} == {s: f"a{i}" for i, s in enumerate(subjects)}


def test_given_subjects_alerted_around_a_time_then_alerted_since_includes_that_very_time(
    outbox: AlertOutbox,
) -> None:
    # Given subjects alerted a second before, exactly at, and after a time
    since = NOW - timedelta(days=30)
    before, at, after = "u-before|SE", "u-at|SE", "u-after|SE"
    outbox.remember(before, Suppression(since - timedelta(seconds=1), "a-before"), None)
    outbox.remember(at, Suppression(since, "a-at"), None)
    outbox.remember(after, Suppression(NOW, "a-after"), None)

    # When the subjects alerted since that time are read
    held = outbox.alerted_since(since)

    # Then the one alerted at that very time is in, the one before is not
    assert {s: last.alert_id for s, last in held.items()} == {at: "a-at", after: "a-after"}


# --------------------------------------------------------------------------- incidents


def an_incident(
    last_alert_id: str = "a1",
    last_at: datetime = NOW,
    network: str = NETWORK,
    methods: frozenset[str] = frozenset(),
) -> IncidentRecord:
    return IncidentRecord(
        network=network,
        incident_id="first",
        first_at=last_at - timedelta(hours=6),
        last_at=last_at,
        last_alert_id=last_alert_id,
        severity="high",
        members=3,
        sensitive_methods=methods,
    )


def test_given_an_incident_remembered_then_it_is_read_back_as_written(outbox: AlertOutbox) -> None:
    # Given an incident with its sensitive methods and its last page remembered under its network
    methods = frozenset({"iam.amazonaws.com:CreateAccessKey", "sts.amazonaws.com:Foo"})
    written = replace(an_incident(methods=methods), paged_at=NOW - timedelta(hours=2))
    assert outbox.remember_incident(written, None)

    # When it is read back among the open incidents and by its network (with a network that has none)
    opened = outbox.open_incidents(NOW - timedelta(hours=24))
    by_network = outbox.incidents([NETWORK, "198.51.100.0/24"])

    # Then it is the same record, each way
    assert opened == by_network == {NETWORK: written}


def test_given_a_network_s_incident_when_two_invocations_record_it_then_the_stale_read_loses(
    outbox: AlertOutbox,
) -> None:
    # Given a network with no incident
    assert outbox.incidents([NETWORK]) == {}

    # When two invocations, both having read none, record one each
    first = outbox.remember_incident(an_incident("a1"), None)
    second = outbox.remember_incident(an_incident("a2"), None)
    # and a later one, having read a1, records its member; then one still holding a stale read of a1
    later = outbox.remember_incident(an_incident("a3", NOW + timedelta(hours=1)), "a1")
    stale = outbox.remember_incident(an_incident("a4", NOW + timedelta(hours=2)), "a1")

    # Then the first and the later one won, the others lost, and the incident was last recorded by a3
    assert (first, second, later, stale) == (True, False, True, False)
    assert outbox.incidents([NETWORK]) == {NETWORK: an_incident("a3", NOW + timedelta(hours=1))}


def test_given_incidents_whose_last_members_are_around_a_time_then_open_incidents_include_that_very_time(
    outbox: AlertOutbox,
) -> None:
    # Given incidents whose last member was a second before, exactly at, and after a time
    since = NOW - timedelta(hours=24)
    for network, last_at in (("a/24", since - timedelta(seconds=1)), ("b/24", since), ("c/24", NOW)):
        assert outbox.remember_incident(an_incident(network=network, last_at=last_at), None)

    # When the incidents open since that time are read, and each network's by name
    opened = outbox.open_incidents(since)
    named = outbox.incidents(["a/24", "b/24", "c/24"])

    # Then the one at that very time is in, the one before is not; by name, every one (any age)
    assert set(opened) == {"b/24", "c/24"}
    assert set(named) == {"a/24", "b/24", "c/24"}


def test_given_an_incident_at_every_limit_when_remembered_then_the_record_fits_an_item(
    outbox: AlertOutbox, backend: Backend
) -> None:
    # Given an incident at every limit: the longest network key, ids of the longest, a count of a
    # billion, more sensitive methods than a record keeps, each of the longest in 4-byte characters,
    # and one method longer still
    long_id = "\U0001f600" * (MAX_INCIDENT_ID_BYTES // 4)
    longest = [
        "\U0001f600" * (MAX_INCIDENT_METHOD_BYTES // 4 - 1) + f"{i:04d}"
        for i in range(MAX_INCIDENT_METHODS + 20)
    ]
    network = "VPCE:444455556666@" + "f" * 64
    record = IncidentRecord(
        network=network,
        incident_id=long_id,
        first_at=NOW - timedelta(days=7),
        last_at=NOW,
        last_alert_id=long_id,
        severity="critical",
        members=10**9,
        sensitive_methods=frozenset([*longest, "x" * (MAX_INCIDENT_METHOD_BYTES + 1)]),
    )

    # When it is remembered and read back
    remembered = outbox.remember_incident(record, None)
    (read,) = outbox.incidents([network]).values()

    # Then it was stored (DynamoDB refuses an item over 400 KB) with the first methods by name that
    # fit, the over-long one left out; stored, it is far under the item limit
    assert remembered
    assert read == record.bounded()
    assert read.sensitive_methods == frozenset(sorted(longest)[:MAX_INCIDENT_METHODS])
    if backend.kind == "aws":
        item = backend.client("dynamodb").get_item(
            TableName=TABLE, Key={"pk": {"S": "INCIDENT"}, "sk": {"S": network}}
        )["Item"]
        assert item_bytes(item) < DYNAMODB_ITEM_LIMIT // 2


def item_bytes(item: dict[str, object]) -> int:
    """An item's size as DynamoDB counts it (names and values, UTF-8), over-estimated for numbers."""
    return len(json.dumps(item, ensure_ascii=False).encode())


def test_given_incidents_and_subjects_recorded_then_no_subject_reader_returns_a_network(
    outbox: AlertOutbox,
) -> None:
    # Given a subject's last alert, and an incident under its network
    assert outbox.remember(SUBJECT, Suppression(NOW, "a1"), None)
    assert outbox.remember_incident(an_incident("a1"), None)

    # When the subjects' readers read (suppression, quarantine), with the network asked by name
    alerted = outbox.alerted_since(NOW - timedelta(days=30))
    recent = outbox.recent([SUBJECT, NETWORK])

    # Then they see the subject alone: an incident is no subject
    assert set(alerted) == set(recent) == {SUBJECT}
