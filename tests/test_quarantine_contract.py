"""The outbox's quarantine, the same contract on the in-memory fake and on DynamoDB (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.aws import TABLE
from tests.conftest import Backend
from trailgeo.adapters.dynamodb import DynamoOutbox
from trailgeo.adapters.memory import MemoryOutbox
from trailgeo.ports import MAX_REMEMBERED_HOURS, AlertOutbox, Suppression

NOW = datetime(2026, 10, 2, tzinfo=UTC)
HOUR = int(NOW.timestamp()) // 3600


@pytest.fixture
def outbox(backend: Backend) -> AlertOutbox:
    if backend.kind == "memory":
        return MemoryOutbox()
    return DynamoOutbox(backend.client("dynamodb"), TABLE)


def test_given_an_alerted_subject_when_its_quarantine_is_extended_twice_then_it_holds_every_hour(
    outbox: AlertOutbox,
) -> None:
    # Given a subject that alerted with one hour
    subject = "arn:aws:sts::111122223333:assumed-role/Batch|SE"
    assert outbox.remember(subject, Suppression(NOW, "alert-a", hours=frozenset({HOUR})), None)

    # When two invocations extend it with their hours (suppressed, or below the threshold)
    outbox.extend_quarantine(subject, "alert-a", [HOUR + 1, HOUR + 2])
    outbox.extend_quarantine(subject, "alert-a", [HOUR + 2, HOUR + 3])
    # and a stale one extends it under an alert it no longer holds
    outbox.extend_quarantine(subject, "alert-gone", [HOUR + 9])

    # Then the subject holds the union of the first three, not the stale one's
    assert outbox.recent([subject])[subject].hours == frozenset(range(HOUR, HOUR + 4))


def test_given_subjects_alerted_at_different_times_then_the_quarantine_in_force_is_those_since(
    outbox: AlertOutbox,
) -> None:
    # Given a subject alerted 40 days ago, one 2 days ago and one never
    old, recent = "arn:aws:iam::111122223333:user/old|SE", "arn:aws:iam::111122223333:user/new|SE"
    assert outbox.remember(old, Suppression(NOW - timedelta(days=40), "alert-old"), None)
    assert outbox.remember(
        recent, Suppression(NOW - timedelta(days=2), "alert-new", hours=frozenset({HOUR})), None
    )

    # When the quarantine in force for 30 days is read
    held = outbox.alerted_since(NOW - timedelta(days=30))

    # Then only the recent subject is in it, with its hours; extending a subject never alerted does nothing
    assert set(held) == {recent}
    assert held[recent].hours == frozenset({HOUR})
    outbox.extend_quarantine("arn:aws:iam::111122223333:user/never|SE", "alert-x", [HOUR])
    assert set(outbox.alerted_since(NOW - timedelta(days=30))) == {recent}


def test_given_an_extension_of_more_hours_than_remembered_then_the_newest_are_kept(
    outbox: AlertOutbox,
) -> None:
    # Given a subject that alerted with one hour
    subject = "arn:aws:iam::111122223333:user/flooded|SE"
    assert outbox.remember(subject, Suppression(NOW, "alert-a", hours=frozenset({HOUR})), None)

    # When one run extends it with a thousand hours (a caller spreading calls over six weeks)
    outbox.extend_quarantine(subject, "alert-a", range(HOUR + 1, HOUR + 1001))

    # Then the newest hours the outbox remembers are added, with the hour it alerted with
    newest = frozenset(range(HOUR + 1001 - MAX_REMEMBERED_HOURS, HOUR + 1001))
    assert outbox.recent([subject])[subject].hours == newest | {HOUR}
