"""RunAggregate snapshots: one aggregate's state carried to another process and merged there.

A fan-out run aggregates parts of a batch in several processes and merges their snapshots; the
merged aggregate must say exactly what one aggregate fed every part in turn says.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from tests.builders import US_IP, record, trail_record
from tests.conftest import SHARED_DATA, require
from trailgeo.core.aggregate import (
    MAX_DISTINCT_EVIDENCE,
    OTHER_MARKER,
    CategoryGroup,
    RunAggregate,
    event_digest,
    event_digests,
)
from trailgeo.core.detectors import DETECTORS
from trailgeo.core.payload import decompress
from trailgeo.core.records import TrailRecord, decode_trail_file
from trailgeo_tools.simulate import SimulationConfig, emittable_ips, simulate

SANS = SHARED_DATA / "cloudtrail" / "sans504-s3-ransomware-lab"
ALL_DETECTORS = frozenset(DETECTORS)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_COUNTRY_OF = {ip: country for country, ips in emittable_ips().items() for ip in ips}


def geolocate(ip: str) -> str | None:
    return _COUNTRY_OF.get(ip) or ("US" if ip == US_IP or ip.startswith(("3.", "96.", "67.")) else None)


def locate_city(ip: str) -> str | None:
    country = geolocate(ip)
    bucket = zlib.crc32(ip.encode()) % 4
    return None if country is None or bucket == 0 else f"{country}/City{bucket}"


def aggregate(detectors: frozenset[str] = ALL_DETECTORS) -> RunAggregate:
    return RunAggregate(geolocate=geolocate, detectors=detectors, locate_city=locate_city)


def fed(files: list[list[TrailRecord]], detectors: frozenset[str] = ALL_DETECTORS) -> RunAggregate:
    result = aggregate(detectors)
    for records in files:
        result.add_records(records)
    return result


def merged(*parts: RunAggregate, into: RunAggregate | None = None) -> RunAggregate:
    result = into if into is not None else aggregate(parts[0].detectors)
    for part in parts:
        result.merge_snapshot(part.snapshot())
    return result


def _categories(groups: dict[Any, CategoryGroup]) -> list[Any]:
    return [
        (
            key,
            [(m, a.events, sorted(a.hours)) for m, a in group.methods.items()],
            [(s.account, s.principal, s.country) for s in group.sources],
        )
        for key, group in groups.items()
    ]


def outcome(result: RunAggregate) -> dict[str, Any]:
    """Everything a run reads of an aggregate, orders included."""
    return {
        "counters": [(key, sorted(d.hours), d.first_seen, d.last_seen) for key, d in result.counters.items()],
        "groups": [
            (
                key,
                g.identity_type,
                [(m, a.events, sorted(a.hours)) for m, a in g.methods.items()],
                list(g.source_ips.items()),
                list(g.user_agents.items()),
                list(g.access_keys.items()),
                list(g.regions.items()),
                list(g.event_ids),
                g.first_event,
                g.last_event,
            )
            for key, g in result.groups.items()
        ],
        "error_groups": _categories(result.error_groups),
        "city_groups": _categories(result.city_groups),
        "skipped": dict(result.skipped),
        "events": result.events,
        "geolocated": result.geolocated,
    }


@pytest.fixture(scope="module")
def simulated_files() -> list[list[TrailRecord]]:
    sim = simulate(SimulationConfig(start=T0.replace(hour=0), days=3, humans=12, automation_roles=3))
    return [decode_trail_file(decompress(f.body, name=f.key)).records for f in sim.log_files]


def test_given_simulated_corpus_split_in_halves_when_snapshots_merged_then_same_as_one_aggregate(
    simulated_files: list[list[TrailRecord]],
) -> None:
    """Given three simulated days (every detector on: errors, cities, long-term keys), when the
    files are aggregated in two halves and both snapshots merged into a fresh aggregate, then
    counters, groups with their evidence, error and city groups, skips, events and geolocated
    events are exactly those of one aggregate fed both halves in turn, orders included."""
    half = len(simulated_files) // 2
    first, second = simulated_files[:half], simulated_files[half:]
    whole = fed(simulated_files)

    combined = merged(fed(first), fed(second))

    assert whole.events > 10_000
    assert whole.error_groups
    assert whole.city_groups
    assert any(partition.startswith("K#") for partition, _ in whole.counters)
    assert outcome(combined) == outcome(whole)


def test_given_an_aggregate_fed_the_first_half_when_the_second_merged_then_same_as_one_aggregate(
    simulated_files: list[list[TrailRecord]],
) -> None:
    """Given an aggregate that read the first half itself (its caches warm) and asked for its
    counters once, when the second half's snapshot is merged in and more files are read after,
    then the derived counters are recomputed and everything equals one aggregate fed it all."""
    third = len(simulated_files) // 3
    first, second, rest = (
        simulated_files[:third],
        simulated_files[third : 2 * third],
        simulated_files[2 * third :],
    )
    combined = fed(first)
    assert combined.counters  # derived before the merge: must not be served stale after it

    merged(fed(second), into=combined)
    for records in rest:
        combined.add_records(records)

    assert outcome(combined) == outcome(fed(simulated_files))


def test_given_group_over_the_evidence_bound_in_both_parts_when_merged_then_bounded_the_same() -> None:
    """Given one principal calling from 70 addresses, 40 in each part (10 in both), when the parts
    are merged, then its addresses are bounded at MAX_DISTINCT_EVIDENCE with the same "…other"
    count as one aggregate would give: evidence stays raw until derived."""
    ips = [f"67.43.156.{n}" for n in range(1, 71)]
    part_a = [trail_record(record(T0 + timedelta(seconds=n), ip=ip)) for n, ip in enumerate(ips[:40])]
    part_b = [
        trail_record(record(T0 + timedelta(minutes=5, seconds=n), ip=ip)) for n, ip in enumerate(ips[30:])
    ]
    whole = fed([part_a, part_b])

    combined = merged(fed([part_a]), fed([part_b]))

    (group,) = whole.groups.values()
    assert len(group.source_ips) == MAX_DISTINCT_EVIDENCE + 1  # and the "…other" count
    assert group.source_ips[OTHER_MARKER] == 70 - MAX_DISTINCT_EVIDENCE  # one event each
    assert outcome(combined) == outcome(whole)


def test_given_same_event_in_both_parts_when_merged_then_counted_as_duplicate_but_tallied_twice() -> None:
    """Given one event delivered into both parts (same eventID), when the snapshots are merged,
    then it is counted once under duplicate_event, as one aggregate would, but each part had
    already counted it: geolocated and the event tallies include it twice, while hours, first and
    last seen and the evidence's distinct values are those of one aggregate."""
    shared = trail_record(record(T0))
    own = trail_record(record(T0 + timedelta(minutes=1), ip="67.43.156.2"))
    whole = fed([[shared, own], [shared]])

    combined = merged(fed([[shared, own]]), fed([[shared]]))

    assert whole.skipped == {"duplicate_event": 1}
    assert combined.skipped == whole.skipped
    assert combined.events == whole.events == 3
    assert (whole.geolocated, combined.geolocated) == (2, 3)
    assert combined.counters == whole.counters  # hours, first and last seen: all a counter keeps
    (group,) = combined.groups.values()
    assert set(group.source_ips) == set(next(iter(whole.groups.values())).source_ips)


def test_given_sans_lab_split_by_files_when_merged_then_duplicates_across_parts_counted_once() -> None:
    """Given the SANS lab (two trails deliver 6,496 eventIDs twice) split into two halves of its
    files, when the halves' snapshots are merged, then events and the duplicate count equal one
    aggregate's (duplicates within a half found by that half, across halves by the merge); each
    event in both halves was also counted by the second half under what it made of it (a skip
    reason, or geolocated and tallied), so those counts exceed one aggregate's by exactly the
    overlap, and counters equal one aggregate's."""
    require(SANS, "SANS SEC504 lab CloudTrail")
    files = [
        decode_trail_file(decompress(path.read_bytes(), name=path.name)).records
        for path in sorted(SANS.glob("AWSLogs/**/*.json.gz"))
    ]
    half = len(files) // 2
    whole = fed(files)

    combined = merged(fed(files[:half]), fed(files[half:]))

    ids = [{r.eventID for records in part for r in records} for part in (files[:half], files[half:])]
    overlap = len(ids[0] & ids[1])
    assert overlap > 0
    assert combined.events == whole.events == 30_477
    assert combined.skipped["duplicate_event"] == whole.skipped["duplicate_event"] == 6496
    skips = sum(
        n for reason, n in combined.skipped.items() if reason not in {"city_unknown", "field_truncated"}
    )
    assert combined.geolocated + skips == combined.events + overlap
    assert all(combined.skipped[reason] >= count for reason, count in whole.skipped.items())
    extra = combined.geolocated - whole.geolocated
    assert 0 <= extra <= overlap
    assert combined.counters == whole.counters  # hours, first and last seen: all a counter keeps


def test_given_empty_aggregate_when_round_tripped_then_empty_and_same_bytes() -> None:
    """Given an aggregate that saw nothing, when its snapshot is merged into a fresh one, then that
    one is empty too and snapshots to the same bytes."""
    empty = aggregate()
    data = empty.snapshot()

    restored = aggregate()
    restored.merge_snapshot(data)

    assert outcome(restored) == outcome(empty)
    assert restored.counters == {}
    assert restored.snapshot() == data
    assert len(data) < 100


def test_given_same_records_when_snapshotted_twice_then_same_bytes(
    simulated_files: list[list[TrailRecord]],
) -> None:
    """Given the same files added to two aggregates, when both are snapshotted, then the bytes are
    equal (deterministic: no Python hash, sets sorted), and a merged copy snapshots the same."""
    files = simulated_files[:50]
    data = fed(files).snapshot()

    assert fed(files).snapshot() == data
    assert merged(fed(files)).snapshot() == data


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"not msgpack at all", id="garbage"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: msgspec.msgpack.encode({"version": 1}), id="wrong-shape"),
        pytest.param(
            lambda data: msgspec.msgpack.encode([99, *msgspec.msgpack.decode(data)[1:]]), id="version"
        ),
        pytest.param(
            lambda data: msgspec.msgpack.encode([*msgspec.msgpack.decode(data)[:-1], b"\x00" * 7]),
            id="digests",
        ),
    ],
)
def test_given_corrupted_snapshot_when_merged_then_value_error(
    corrupt: Any, simulated_files: list[list[TrailRecord]]
) -> None:
    """Given a snapshot cut short, overwritten, of another version or with a broken digest list,
    when merged, then a ValueError says so, and the aggregate is left as it was."""
    data = corrupt(fed(simulated_files[:5]).snapshot())
    target = fed(simulated_files[5:10])
    before = outcome(target)

    with pytest.raises(ValueError, match="snapshot"):
        target.merge_snapshot(data)

    assert outcome(target) == before


def test_given_snapshot_of_other_detectors_when_merged_then_value_error() -> None:
    """Given a snapshot taken with only the country detector, when merged into an aggregate running
    every detector, then a ValueError: the side cells would silently be missing."""
    data = aggregate(frozenset({"country"})).snapshot()

    with pytest.raises(ValueError, match="detectors"):
        aggregate().merge_snapshot(data)


def test_given_event_ids_when_digested_then_stable_and_bulk_equals_one_by_one() -> None:
    """Given CloudTrail UUIDs and other ids, when digested, then a UUID is its two 64-bit halves
    XORed, cut to 60 bits (the same in every process: snapshots compare them), anything else a
    BLAKE2b digest, and the bulk path agrees with the one-by-one path or declines."""
    uuid = "0123abcd-4567-489a-8bcd-ef0123456789"
    assert event_digest(uuid) == (0x0123ABCD4567489A ^ 0x8BCDEF0123456789) & ((1 << 60) - 1)
    assert event_digest("panther-root-0001") == event_digest("panther-root-0001") < 1 << 60
    assert event_digest("panther-root-0001") != event_digest("panther-root-0002")
    assert event_digest(uuid.upper()) != event_digest(uuid)  # not canonical: not the same id
    ids = [uuid, "fedcba98-7654-4321-8fed-cba987654321"]
    assert event_digests(ids) == [event_digest(i) for i in ids]
    for odd in ([uuid, None], [uuid, ""], [uuid.upper()], [uuid + uuid, ""], [uuid[:-1] + " "]):
        assert event_digests(odd) is None


def test_given_ids_differing_only_in_case_when_added_then_not_duplicates() -> None:
    """Given two records whose eventIDs differ only in letter case, when added, then both count:
    only canonical lower-case UUIDs are folded to their bits, so no two distinct ids share one."""
    lower = record(T0, eventID="0123abcd-4567-489a-8bcd-ef0123456789")
    upper = record(T0, eventID="0123ABCD-4567-489A-8BCD-EF0123456789")
    result = fed([[trail_record(lower), trail_record(upper)]])

    assert result.skipped == {}
    assert result.geolocated == 2
