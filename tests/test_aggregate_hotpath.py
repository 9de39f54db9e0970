"""The representations of RunAggregate's per-event loop: cells per prefix with a current hour, a
group's first event ids packed into one string, skip counts returned per call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.builders import US_IP, record, trail_record
from trailgeo.core.aggregate import MAX_DISTINCT_EVIDENCE, RunAggregate, event_digests
from trailgeo.core.counters import HOURS_PARTITION_PREFIX, TOTAL
from trailgeo.core.records import TrailRecord

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def geolocate(ip: str) -> str | None:
    return "US" if ip == US_IP else None


def trail(*bodies: dict[str, object]) -> list[TrailRecord]:
    return [trail_record(body) for body in bodies]


def test_given_one_method_back_and_forth_across_hours_when_added_then_each_hour_counted_once() -> None:
    """Given one principal calling one method in hours 9, 10, 9, 11, 10 (late events), when added,
    then its counters hold the three hours and the earliest and latest times, and its group's
    method activity the three hours and five events: switching the current hour loses nothing."""
    offsets = [timedelta(minutes=5), timedelta(hours=1, minutes=1), timedelta(minutes=59), timedelta(hours=2)]
    offsets.append(timedelta(hours=1, minutes=30))
    aggregate = RunAggregate(geolocate=geolocate)

    for offset in offsets:
        aggregate.add_records(trail(record(T0 + offset)))

    hours = {int((T0 + offset).timestamp()) // 3600 for offset in offsets}
    for key, delta in aggregate.counters.items():
        # a person's local hours (HR#) file each hour under its own category, all under the TOTAL
        if key[0].startswith(HOURS_PARTITION_PREFIX) and key[1] != TOTAL:
            assert len(delta.hours) == 1, key
            assert delta.hours <= hours, key
        else:
            assert delta.hours == hours, key
        assert (delta.first_seen, delta.last_seen) == ("2026-03-02T09:05:00Z", "2026-03-02T11:00:00Z")
    (group,) = aggregate.groups.values()
    (activity,) = group.methods.values()
    assert (activity.events, activity.hours) == (5, hours)
    assert (group.first_event, group.last_event) == ("2026-03-02T09:05:00Z", "2026-03-02T11:00:00Z")


def test_given_odd_and_long_event_ids_when_grouped_then_first_fifty_kept_in_order_and_clipped() -> None:
    """Given 60 events of one group whose ids include control characters, non-ASCII text and a
    10,000-character id, when added, then the group keeps the first 50 ids in stream order, the
    long one clipped as before."""
    ids = [f"id-{n}\x00\n\u00e9\U0001f600" for n in range(59)]
    ids.insert(3, "x" * 10_000)
    aggregate = RunAggregate(geolocate=geolocate)

    aggregate.add_records(trail(*(record(T0 + timedelta(seconds=n), eventID=i) for n, i in enumerate(ids))))

    (group,) = aggregate.groups.values()
    assert len(group.event_ids) == MAX_DISTINCT_EVIDENCE
    assert group.event_ids[:3] == ids[:3]
    assert group.event_ids[3] == "x" * 128 + "…[truncated]"
    assert group.event_ids[4:] == ids[4:MAX_DISTINCT_EVIDENCE]


def test_given_a_file_with_skips_when_added_then_its_own_skips_are_returned_and_added() -> None:
    """Given a run that already skipped records, when another file with a duplicate, an internal
    source and an event without a method is added, then the call returns exactly that file's skips
    and the run's counts grow by them (a caller logging per file copies nothing)."""
    aggregate = RunAggregate(geolocate=geolocate)
    first = record(T0)
    aggregate.add_records(trail(first, record(T0, ip="AWS Internal")))

    returned = aggregate.add_records(
        trail(
            first, record(T0, ip="AWS Internal"), record(T0, eventName=""), record(T0 + timedelta(seconds=1))
        )
    )

    assert returned == {"duplicate_event": 1, "source_aws_internal": 1, "no_method": 1}
    assert aggregate.skipped == {"duplicate_event": 1, "source_aws_internal": 2, "no_method": 1}
    assert aggregate.add_records([]) == {}
    assert aggregate.geolocated == 2


def _uuid(n: int) -> str:
    """A canonical eventID (lower-case hex with letters, as CloudTrail writes them)."""
    return str(uuid.UUID(int=0xFEEDFACE << 96 | n))


def _files_of_a_morning() -> list[list[TrailRecord]]:
    """Six small files: two principals, two sources (one internal), a few methods and hours."""
    files = []
    for n in range(6):
        at = T0 + timedelta(minutes=25 * n)
        files.append(
            trail(
                record(at, arn=f"arn:aws:iam::111122223333:user/u{n % 2}", eventID=_uuid(3 * n)),
                record(
                    at + timedelta(seconds=1),
                    name=("GetObject", "PutObject")[n % 2],
                    eventID=_uuid(3 * n + 1),
                ),
                record(at + timedelta(seconds=2), ip="AWS Internal", eventID=_uuid(3 * n + 2)),
            )
        )
    return files


def test_given_small_files_when_added_together_then_same_aggregate_and_skips_as_one_by_one() -> None:
    """Given six small files whose event ids are all new, when added with one call, then each
    file's returned skips and the whole aggregate (its snapshot, byte for byte) are those of
    adding them one file at a time."""
    files = _files_of_a_morning()
    one_by_one, together = RunAggregate(geolocate=geolocate), RunAggregate(geolocate=geolocate)
    expected = [one_by_one.add_records(records) for records in files]

    returned = together.add_files(files)

    assert returned == expected == [{"source_aws_internal": 1}] * 6
    assert together.snapshot() == one_by_one.snapshot()
    assert (together.events, together.geolocated) == (18, 12)
    assert event_digests([r.eventID for r in files[0]]) is not None  # the one-call check applies


@pytest.mark.parametrize("repeated", ["in an earlier file of the call", "earlier in the run"])
def test_given_an_event_repeated_when_files_are_added_together_then_counted_once(repeated: str) -> None:
    """Given files added together where the fourth repeats an event (of the second file, or one
    the run already counted before the call), when added with one call, then the repeat is
    skipped as a duplicate in the file that holds it, exactly as one file at a time."""
    files = _files_of_a_morning()
    earlier = trail(record(T0 - timedelta(hours=1), eventID=_uuid(99)))
    files[3] = [*files[3], files[1][0] if repeated == "in an earlier file of the call" else earlier[0]]
    one_by_one, together = RunAggregate(geolocate=geolocate), RunAggregate(geolocate=geolocate)
    for aggregate in (one_by_one, together):
        aggregate.add_records(earlier)
    expected = [one_by_one.add_records(records) for records in files]

    returned = together.add_files(files)

    assert returned == expected
    assert returned[3] == {"source_aws_internal": 1, "duplicate_event": 1}
    assert together.snapshot() == one_by_one.snapshot()
