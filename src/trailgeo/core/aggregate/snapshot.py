"""Snapshots: one aggregate's state carried to another process (a fan-out worker's partial) and
merged there, as compact deterministic msgpack (``RunAggregate.snapshot``, ``merge_snapshot``)."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from trailgeo.core.aggregate.derive import evidence_by_group
from trailgeo.core.aggregate.groups import MAX_DISTINCT_EVIDENCE, Cell, CellPrefix, pack_id, unpack_ids
from trailgeo.core.sign_ins import SignIn

if TYPE_CHECKING:
    from trailgeo.core.aggregate.accumulate import RunAggregate

SNAPSHOT_VERSION = 2


class _Snapshot(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """``RunAggregate.snapshot``: msgpack arrays, in the aggregate's own (first-seen) order."""

    version: int
    detectors: list[str]
    events: int
    geolocated: int
    skipped: list[tuple[str, int]]
    # account, principal, country, method, [(hour, events, first, last)]
    cells: list[tuple[str, str, str, str, list[tuple[int, int, str, str]]]]
    key_cells: list[tuple[str, str, int, int, str, str]]
    error_cells: list[tuple[str, str, str, str, str, int, int, str, str]]
    city_cells: list[tuple[str, str, str, str, int, int, str, str]]
    # account, principal, country, [(ip, userAgent, accessKeyId, region, identity type, events)], ids
    evidence: list[
        tuple[str, str, str, list[tuple[str, str | None, str | None, str | None, str | None, int]], list[str]]
    ]
    event_digests: bytes  # sorted, 8 bytes each, big-endian
    # the aggregate's EventScope; last and with a default, so that a snapshot without it (taken
    # before data events could be scored) reads as the MANAGEMENT it was
    scope: str = "Management"
    # the sign-ins the partial's records completed (identity, ip, country, time, credential,
    # phishing-resistant):
    # a sign-in whose records two partials split completes in neither (more alerts, never fewer)
    sign_ins: list[tuple[str, str, str, str, str, bool]] = []


_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(_Snapshot)


def _pack_digests(digests: Iterable[int]) -> bytes:
    packed = array("Q", sorted(digests))
    if sys.byteorder == "little":
        packed.byteswap()
    return packed.tobytes()


def _unpack_digests(data: bytes) -> array[int]:
    if len(data) % 8:
        raise ValueError(f"corrupted RunAggregate snapshot: {len(data)} bytes of event digests")
    digests = array("Q")
    digests.frombytes(data)
    if sys.byteorder == "little":
        digests.byteswap()
    return digests


def snapshot_of(aggregate: RunAggregate) -> bytes:
    """Everything this aggregate accumulated, as compact deterministic msgpack.

    The cells of every kind, the raw evidence with its counts, the first event ids of each
    group, ``skipped``, ``events``, ``geolocated`` and the digest of every eventID seen (sorted;
    see ``event_digest``), each in the aggregate's first-seen order; not the caches or what is
    derived from the cells. The same records added in the same order give the same bytes.
    """
    snapshot = _Snapshot(
        version=SNAPSHOT_VERSION,
        detectors=sorted(aggregate.detectors),
        events=aggregate.events,
        geolocated=aggregate.geolocated,
        skipped=list(aggregate.skipped.items()),
        cells=[(*prefix, sorted(_cell_hours(cell))) for prefix, cell in aggregate._cells.items()],
        key_cells=[(*key, *cell) for key, cell in aggregate._key_cells.items()],
        error_cells=[(*key, *cell) for key, cell in aggregate._error_cells.items()],
        city_cells=[(*key, *cell) for key, cell in aggregate._city_cells.items()],
        evidence=[
            (
                *group,
                [(*raw, events) for raw, events in seen.items()],
                unpack_ids(aggregate._event_id_lists[group][0]),
            )
            for group, seen in evidence_by_group(aggregate._evidence).items()
        ],
        event_digests=_pack_digests(aggregate._event_ids),
        scope=aggregate.scope.value,
        sign_ins=[
            (s.identity, s.ip, s.country, s.event_time, s.credential, s.phishing_resistant)
            for s in aggregate.sign_in_reader.sign_ins()
        ],
    )
    return _snapshot_encoder.encode(snapshot)


def _mergeable(aggregate: RunAggregate, data: bytes) -> _Snapshot:
    """The snapshot in ``data``, when this aggregate may merge it (``merge_into``)."""
    try:
        snapshot = _snapshot_decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ValueError(f"corrupted or foreign RunAggregate snapshot: {exc}") from exc
    if snapshot.version != SNAPSHOT_VERSION:
        raise ValueError(f"RunAggregate snapshot version {snapshot.version}, expected {SNAPSHOT_VERSION}")
    if frozenset(snapshot.detectors) != aggregate.detectors:
        raise ValueError(
            f"RunAggregate snapshot of detectors {snapshot.detectors}, this aggregate runs "
            f"{sorted(aggregate.detectors)}"
        )
    if snapshot.scope != aggregate.scope.value:
        raise ValueError(
            f"RunAggregate snapshot of events {snapshot.scope}, this aggregate scores {aggregate.scope.value}"
        )
    return snapshot


def merge_into(aggregate: RunAggregate, data: bytes) -> None:
    """Add what another aggregate accumulated (its ``snapshot``) to this one.

    For record streams A and B with no eventID in common, an aggregate fed A then merged
    ``snapshot()`` of an aggregate fed B (or a fresh one that merged the snapshots of A and of
    B, in that order) has exactly the ``counters``, ``groups`` (evidence included: it is kept
    raw and unbounded until derived, so the ``MAX_DISTINCT_EVIDENCE`` bound and its "…other"
    count come out the same), ``error_groups``, ``city_groups``, ``skipped`` counts,
    ``events`` and ``geolocated`` of one aggregate fed A then B.

    An eventID in both A and B (the same event in both partials) cannot be taken out again:
    each partial has already dealt with it. The merge counts each such event once under
    ``skipped["duplicate_event"]``, as the single aggregate would, and the second partial's
    own outcome for its copy stays too: a skip under its reason (``source_*``, ...) or, when it
    was geolocated, ``geolocated`` and the event tallies of its cells (and so of the groups'
    method activity and evidence counts) include the event twice. So ``geolocated`` plus the
    skips exceeds ``events`` by the overlap. The counters (hourly presence, first and last seen)
    and the distinct evidence are unaffected (both copies are the same event), and ``events``,
    which counts every record read, duplicates included, equals the single aggregate's. Digests
    are 60 bits (see ``event_digest``): odds that two distinct ids of a million events collide
    are under 1e-6.

    Raises ValueError when ``data`` is not a snapshot of this version or was taken with other
    detectors or another event scope (``Events``: a partial whose data events were skipped must
    not be merged into a batch that scores them). Derived counters and groups are recomputed
    when next asked for.
    """
    snapshot = _mergeable(aggregate, data)
    digests = _unpack_digests(snapshot.event_digests)
    aggregate._derived = None
    aggregate.events += snapshot.events
    aggregate.geolocated += snapshot.geolocated
    for reason, count in snapshot.skipped:
        aggregate.skipped[reason] += count
    aggregate.sign_in_reader.merge([SignIn(*sign_in) for sign_in in snapshot.sign_ins])
    seen_ids = aggregate._event_ids
    overlap = len(seen_ids.intersection(digests))
    if overlap:
        aggregate.skipped["duplicate_event"] += overlap
    seen_ids.update(digests)
    cells = aggregate._cells
    for account, principal, country, method, hours in snapshot.cells:
        prefix = (account, principal, country, method)
        for hour, events, first, last in hours:
            _merge_hour(cells, prefix, hour, events, first, last)
    for access_key, country, hour, events, first, last in snapshot.key_cells:
        _merge_cell(aggregate._key_cells, (access_key, country, hour), events, first, last)
    for account, principal, country, code, method, hour, events, first, last in snapshot.error_cells:
        key = (account, principal, country, code, method, hour)
        _merge_cell(aggregate._error_cells, key, events, first, last)
    for account, principal, city, method, hour, events, first, last in snapshot.city_cells:
        _merge_cell(aggregate._city_cells, (account, principal, city, method, hour), events, first, last)
    evidence = aggregate._evidence
    for account, principal, country, raw_evidence, event_ids in snapshot.evidence:
        for ip, user_agent, key_id, region, identity_type, events in raw_evidence:
            evidence_key = (account, principal, country, ip, user_agent, key_id, region, identity_type)
            tally = evidence.get(evidence_key)
            if tally is None:
                tally = aggregate._new_evidence(evidence_key)
            tally[0] += events
        # in place: evidence tallies hold this list
        first_ids = aggregate._event_id_lists.setdefault((account, principal, country), ["", 0])
        for event_id in event_ids[: MAX_DISTINCT_EVIDENCE - first_ids[1]]:
            first_ids[0] += pack_id(event_id)
            first_ids[1] += 1


def _cell_hours(cell: Cell) -> list[tuple[int, int, str, str]]:
    """Every (hour, events, first, last) of a prefix's cell."""
    hour, events, first, last, others = cell
    hours = [(hour, events, first, last)]
    if others is not None:
        hours.extend((other, *tally) for other, tally in others.items())
    return hours


def _merge_hour(
    cells: dict[CellPrefix, Cell], prefix: CellPrefix, hour: int, events: int, first: str, last: str
) -> None:
    cell = cells.get(prefix)
    if cell is None:
        cells[prefix] = [hour, events, first, last, None]
    elif cell[0] == hour:
        cell[1] += events
        cell[2] = min(cell[2], first)
        cell[3] = max(cell[3], last)
    else:
        others = cell[4]
        if others is None:
            others = cell[4] = {}
        known = others.get(hour)
        others[hour] = (
            (events, first, last)
            if known is None
            else (known[0] + events, min(known[1], first), max(known[2], last))
        )


def _merge_cell(cells: dict[Any, list[Any]], key: Any, events: int, first: str, last: str) -> None:
    cell = cells.get(key)
    if cell is None:
        cells[key] = [events, first, last]
    else:
        cell[0] += events
        cell[1] = min(cell[1], first)
        cell[2] = max(cell[2], last)
