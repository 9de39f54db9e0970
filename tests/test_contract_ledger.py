"""The Ledger port (file claims, run records, done marks, poison, watermark): one contract, run
against the in-memory fake and against DynamoDB (moto)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.aws import TABLE
from tests.conftest import Backend
from trailgeo.adapters.dynamodb import DynamoLedger
from trailgeo.adapters.memory import MemoryLedger
from trailgeo.ports import MAX_POISON_PER_RUN, BatchTooLargeError, Ledger, LedgerEntry, RunAttempts

NOW = datetime(2026, 10, 2, 12, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=15)
LATER = NOW + timedelta(minutes=30)  # past LEASE: a run that still holds it is dead
KEYS = [f"AWSLogs/111122223333/CloudTrail/us-east-1/2026/10/02/file-{i:03d}.json.gz" for i in range(4)]


@pytest.fixture
def ledger(backend: Backend) -> Ledger:
    if backend.kind == "memory":
        return MemoryLedger()
    return DynamoLedger(backend.client("dynamodb"), TABLE)


def another_invocation(ledger: Ledger) -> Ledger:
    """The same ledger as another invocation sees it (another holder of claims)."""
    if isinstance(ledger, DynamoLedger):
        return DynamoLedger(ledger.client, ledger.table)
    assert isinstance(ledger, MemoryLedger)
    return replace(ledger, holder="another-invocation")  # the same entries and runs


def test_given_new_files_when_a_run_claims_them_then_it_wins_them_and_another_run_wins_none(
    ledger: Ledger,
) -> None:
    # Given a run record for a batch of new files
    ledger.begin("run-a", KEYS, LEASE, NOW)

    # When the run claims them, then another run claims the same files
    won = ledger.claim(KEYS, "run-a", LEASE, NOW)
    lost = ledger.claim(KEYS, "run-b", LEASE, NOW)

    # Then the first won every file, the second none, and the ledger says who holds them until when
    assert sorted(won) == KEYS
    assert lost == []
    assert ledger.status(KEYS) == {k: LedgerEntry(k, "claimed", "run-a", LEASE) for k in KEYS}


def test_given_a_claim_that_landed_when_the_same_claim_is_retried_then_it_wins_again(ledger: Ledger) -> None:
    # Given files claimed by a run (the response lost after the write landed)
    ledger.begin("run-a", KEYS, LEASE, NOW)
    assert sorted(ledger.claim(KEYS, "run-a", LEASE, NOW)) == KEYS

    # When the very same claim is retried
    retried = ledger.claim(KEYS, "run-a", LEASE, NOW)

    # Then it wins them again: the run reads the files it holds instead of leaving them claimed;
    # another invocation that planned the same batch (same run id) does not
    assert sorted(retried) == KEYS
    assert another_invocation(ledger).claim(KEYS, "run-a", LEASE, NOW) == []


def test_given_files_never_listed_when_their_status_is_asked_then_they_are_left_out(ledger: Ledger) -> None:
    # Given one claimed file among files the ledger never saw
    ledger.begin("run-a", KEYS[:1], LEASE, NOW)
    ledger.claim(KEYS[:1], "run-a", LEASE, NOW)

    # When the status of all of them is asked
    status = ledger.status(KEYS)

    # Then only the claimed one is in the answer
    assert set(status) == {KEYS[0]}


def test_given_released_files_when_another_run_claims_them_then_they_are_new_again(ledger: Ledger) -> None:
    # Given files claimed by run-a, two of them given back, and a file held by run-b
    ledger.begin("run-a", KEYS[:3], LEASE, NOW)
    ledger.claim(KEYS[:3], "run-a", LEASE, NOW)
    ledger.begin("run-b", KEYS[3:], LEASE, NOW)
    ledger.claim(KEYS[3:], "run-b", LEASE, NOW)

    # When run-a releases two of its files and, by mistake, run-b's file
    ledger.release([KEYS[0], KEYS[1], KEYS[3]], "run-a")

    # Then its two files are unknown again and a later run wins them; run-b keeps its own
    assert set(ledger.status(KEYS)) == {KEYS[2], KEYS[3]}
    assert sorted(ledger.claim(KEYS, "run-c", LEASE, NOW)) == KEYS[:2]
    assert ledger.status([KEYS[3]])[KEYS[3]].run_id == "run-b"


def test_given_a_run_that_completes_then_its_files_are_done_with_their_outcomes_and_stay_done(
    ledger: Ledger,
) -> None:
    # Given a run that claimed a batch
    ledger.begin("run-a", KEYS, LEASE, NOW)
    ledger.claim(KEYS, "run-a", LEASE, NOW)

    # When it completes, one file skipped as unreadable
    outcomes = dict.fromkeys(KEYS, "done") | {KEYS[1]: "unreadable:AccessDenied"}
    ledger.complete(outcomes, "run-a", NOW)

    # Then every file is done with its outcome, the run is not a dead one once its lease is past,
    # and no run (nor a takeover of the closed run) claims its files again
    assert ledger.status(KEYS) == {k: LedgerEntry(k, "done", "run-a", None, outcomes[k]) for k in KEYS}
    assert ledger.expired_runs(LATER) == []
    assert ledger.claim(KEYS, "run-b", LEASE, NOW) == []


def test_given_a_run_that_completes_with_files_left_out_then_what_it_claimed_is_done_and_released_not(
    ledger: Ledger,
) -> None:
    # Given a run that claimed four files and gave one back
    ledger.begin("run-a", KEYS, LEASE, NOW)
    ledger.claim(KEYS, "run-a", LEASE, NOW)
    ledger.release(KEYS[3:], "run-a")

    # When it completes naming the outcome of one file only
    ledger.complete({KEYS[0]: "unreadable:too_large"}, "run-a", NOW)

    # Then the files it claimed are all done (closing the run is what marks them), the released
    # one is not: it is new again
    assert ledger.status(KEYS) == {
        KEYS[0]: LedgerEntry(KEYS[0], "done", "run-a", None, "unreadable:too_large"),
        KEYS[1]: LedgerEntry(KEYS[1], "done", "run-a", None, "done"),
        KEYS[2]: LedgerEntry(KEYS[2], "done", "run-a", None, "done"),
    }


def test_given_a_run_that_died_when_another_takes_it_over_then_it_wins_what_the_dead_run_left(
    ledger: Ledger,
) -> None:
    # Given a run that meant to process four files: it claimed three, released one, then died;
    # and a live run that meant to process the fourth claimed it first
    ledger.begin("run-dead", KEYS, LEASE, NOW)
    ledger.claim(KEYS[:3], "run-dead", LEASE, NOW)
    ledger.release(KEYS[2:3], "run-dead")
    ledger.begin("run-live", KEYS[3:], LATER + timedelta(minutes=15), NOW)
    ledger.claim(KEYS[3:], "run-live", LATER + timedelta(minutes=15), NOW)

    # When, after its lease, the dead run is found and taken over
    expired = ledger.expired_runs(LATER)
    new_lease = LATER + timedelta(minutes=15)
    won = ledger.claim(KEYS, "run-dead", new_lease, LATER, takeover=True)

    # Then it was the one expired run, with all its keys; the takeover won the two files it had
    # claimed, not the one it released (new again, for a fresh run) nor the live run's
    assert expired == [("run-dead", KEYS)]
    assert sorted(won) == KEYS[:2]
    assert ledger.status(KEYS[:2]) == {k: LedgerEntry(k, "claimed", "run-dead", new_lease) for k in KEYS[:2]}
    # and the takeover is counted and renewed the run's lease
    assert ledger.attempts("run-dead").takeovers == 1
    assert ledger.expired_runs(LATER) == []


def test_given_a_run_whose_lease_still_runs_when_a_takeover_is_tried_then_it_wins_nothing(
    ledger: Ledger,
) -> None:
    # Given a run holding its files under a lease that has not run out
    ledger.begin("run-a", KEYS, LEASE, NOW)
    ledger.claim(KEYS, "run-a", LEASE, NOW)

    # When another invocation tries to take it over before the lease ends
    other = another_invocation(ledger)
    taken = other.claim(KEYS, "run-a", LATER, NOW + timedelta(minutes=5), takeover=True)

    # Then it wins no file, and the run is not listed as dead
    assert taken == []
    assert ledger.expired_runs(NOW + timedelta(minutes=5)) == []


def test_given_an_open_run_when_its_reading_and_poison_are_noted_then_attempts_reports_them(
    ledger: Ledger,
) -> None:
    # Given an open run with no attempt noted
    ledger.begin("run-a", KEYS, LEASE, NOW)
    assert ledger.attempts("run-a") == RunAttempts()

    # When an attempt notes the file it reads, then sets another aside as poison
    ledger.note_reading("run-a", KEYS[0])
    reading = ledger.attempts("run-a")
    ledger.note_reading("run-a", KEYS[1])
    assert ledger.set_aside("run-a", KEYS[1])

    # Then the file being read was noted; setting the file being read aside clears it
    assert reading == RunAttempts(reading=KEYS[0])
    assert ledger.attempts("run-a") == RunAttempts(poison=frozenset({KEYS[1]}))
    # and a reading noted then ended leaves nothing
    ledger.note_reading("run-a", KEYS[2])
    ledger.note_reading("run-a", None)
    assert ledger.attempts("run-a").reading is None


def test_given_a_run_with_poison_when_it_completes_then_its_poison_is_kept(ledger: Ledger) -> None:
    # Given an open run reading a file, with one file set aside
    ledger.begin("run-a", KEYS, LEASE, NOW)
    ledger.claim(KEYS, "run-a", LEASE, NOW)
    assert ledger.set_aside("run-a", KEYS[0])
    ledger.note_reading("run-a", KEYS[1])

    # When it completes
    ledger.complete(dict.fromkeys(KEYS, "done"), "run-a", NOW)

    # Then the poison is still listed and the file being read is not
    assert ledger.attempts("run-a") == RunAttempts(poison=frozenset({KEYS[0]}))


def test_given_a_closed_run_when_a_late_attempt_notes_its_reading_then_nothing_is_noted(
    ledger: Ledger,
) -> None:
    # Given a run that completed
    ledger.begin("run-a", KEYS, LEASE, NOW)
    ledger.claim(KEYS, "run-a", LEASE, NOW)
    ledger.complete(dict.fromkeys(KEYS, "done"), "run-a", NOW)

    # When an attempt that outlived it notes the file it reads
    ledger.note_reading("run-a", KEYS[0])

    # Then the closed record names no file as being read (status would show a dead run reading)
    assert ledger.attempts("run-a").reading is None


def test_given_a_run_holding_the_most_poison_then_it_takes_no_other_file_but_one_it_holds(
    ledger: Ledger,
) -> None:
    # Given an open run with as many poison files as its record keeps
    ledger.begin("run-a", KEYS, LEASE, NOW)
    poison = [f"poison-{i:02d}" for i in range(MAX_POISON_PER_RUN)]
    assert all(ledger.set_aside("run-a", key) for key in poison)

    # When one more is set aside, and one it holds already
    more = ledger.set_aside("run-a", "poison-extra")
    again = ledger.set_aside("run-a", poison[0])

    # Then the record refuses the new one and accepts the one it holds
    assert (more, again) == (False, True)
    assert ledger.attempts("run-a").poison == frozenset(poison)


def test_given_a_run_never_begun_when_a_file_is_set_aside_then_it_is_refused(ledger: Ledger) -> None:
    # Given no run record for run-x
    # When a file is set aside for it
    accepted = ledger.set_aside("run-x", KEYS[0])

    # Then it is refused and nothing is recorded
    assert accepted is False
    assert ledger.attempts("run-x") == RunAttempts()


def test_given_a_watermark_when_it_is_advanced_then_it_only_moves_forward(ledger: Ledger) -> None:
    # Given a ledger with no watermark
    assert ledger.watermark() is None

    # When it is advanced, then moved back, then forward again
    ledger.advance_watermark(NOW)
    ledger.advance_watermark(NOW - timedelta(hours=1))
    after_back = ledger.watermark()
    ledger.advance_watermark(LATER)

    # Then moving back did nothing, moving forward did
    assert after_back == NOW
    assert ledger.watermark() == LATER


def test_given_more_files_than_one_batch_read_when_their_status_is_asked_then_every_one_is_found(
    ledger: Ledger,
) -> None:
    # Given 250 files claimed (more than DynamoDB's 100 keys a BatchGetItem)
    many = [f"AWSLogs/o/111122223333/CloudTrail/eu-west-1/2026/10/02/f-{i:04d}.json.gz" for i in range(250)]
    ledger.begin("run-a", many, LEASE, NOW)
    assert len(ledger.claim(many, "run-a", LEASE, NOW)) == 250

    # When their status is asked, with a file never seen
    status = ledger.status([*many, "never-listed"])

    # Then each of the 250 is there, the unknown one is not
    assert set(status) == set(many)


def test_given_a_batch_whose_keys_cannot_fit_a_run_record_when_it_begins_then_it_is_refused(
    ledger: Ledger,
) -> None:
    # Given 12,000 keys of random names (they do not compress: over the run record's limit)
    rng = random.Random(14)
    keys = [rng.randbytes(32).hex() for _ in range(12_000)]

    # When a run record is opened for them
    with pytest.raises(BatchTooLargeError):
        ledger.begin("run-big", keys, LEASE, NOW)

    # Then no run was recorded: none is found dead later
    assert ledger.expired_runs(LATER) == []
