"""One run's observations, aggregated in memory before anything is written.

Writes to the frequency store grow with the distinct counters a run touches, never with the
number of events. Alongside the counters, each (account, principal, country) seen in the run
keeps the evidence an alert needs: methods, addresses, user agents, access keys, times.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import attrgetter
from sys import intern
from typing import Any, cast

import msgspec

from trailgeo.core.counters import (
    ANY_HOUR,
    MAX_EVENT_TIME_CHARS,
    METHOD_PARTITION_PREFIX,
    ORG_CITIES,
    ORG_ERRORS,
    ORG_METHODS,
    ORG_PARTITION,
    TOTAL,
    USER_METHODS_PARTITION_PREFIX,
    CounterDelta,
    CounterKey,
    access_key_partition,
    category_sort_key,
    country_sort_key,
    hour_of,
    identity_index_partition,
    method_cities_partition,
    method_partition,
    principal_cities_partition,
    principal_partition,
    user_methods_partition,
)
from trailgeo.core.detectors import DEFAULT_DETECTORS, DETECTORS
from trailgeo.core.identities import identity_of, role_of
from trailgeo.core.records import TrailRecord, UserIdentity, clip, gc_paused
from trailgeo.core.sources import (
    UNKNOWN_LOCATION,
    VIA_ENDPOINT,
    SourceKind,
    classify_source,
    endpoint_location,
)

GroupKey = tuple[str, str, str]  # (account, principal, country)

# Evidence lists in an alert are bounded; counts of what was left out are kept under this name.
MAX_DISTINCT_EVIDENCE = 50
MAX_IDENTITY_TYPE_CHARS = 64  # CloudTrail's types ("IAMUser", "IdentityCenterUser"...) are short
OTHER_MARKER = "…other"


def method_key(event_source: str, event_name: str) -> str:
    """``eventSource:eventName``; Elastic keys on eventName alone, which merges services."""
    return f"{clip(event_source, 128)}:{clip(event_name, 128)}"


def method_of(record: TrailRecord) -> str | None:
    if not record.eventSource or not record.eventName:
        return None
    return method_key(record.eventSource, record.eventName)


def principal_of(record: TrailRecord) -> str:
    return principal_of_identity(record.userIdentity)


def principal_of_identity(identity: UserIdentity | None) -> str:
    if identity is None:
        return "unknown"
    if identity.arn:
        return clip(identity.arn, 512) or "unknown"
    if identity.type and identity.principalId:
        return clip(f"{identity.type}:{identity.principalId}", 512) or "unknown"
    return clip(identity.type or "unknown", 512) or "unknown"


@dataclass(slots=True)
class MethodActivity:
    events: int = 0
    hours: set[int] = field(default_factory=set)


@dataclass(slots=True)
class HitGroup:
    """Everything one principal did from one country in this run."""

    account: str
    principal: str
    country: str
    identity_type: str | None = None
    methods: dict[str, MethodActivity] = field(default_factory=dict)
    source_ips: Counter[str] = field(default_factory=Counter)
    user_agents: Counter[str] = field(default_factory=Counter)
    access_keys: Counter[str] = field(default_factory=Counter)
    regions: Counter[str] = field(default_factory=Counter)
    event_ids: list[str] = field(default_factory=list)
    first_event: str | None = None
    last_event: str | None = None

    def add_cells(self, method: str, hours: Iterable[int], events: int, first: str, last: str) -> None:
        """The cells of one method in one or more hours, their events summed."""
        _add_activity(self.methods, method, hours, events)
        if self.first_event is None or first < self.first_event:
            self.first_event = first
        if self.last_event is None or last > self.last_event:
            self.last_event = last

    def add_evidence(self, seen: Counter[Evidence], event_ids: list[str]) -> None:
        """Addresses, agents, keys and regions, clipped and bounded (with an "…other" count)."""
        for (ip, user_agent, access_key, region, identity_type), count in seen.most_common():
            _bounded_count(self.source_ips, ip, count)
            if user_agent:
                _bounded_count(self.user_agents, clip(user_agent) or "", count)
            if access_key:
                _bounded_count(self.access_keys, clip(access_key, 128) or "", count)
            if region:
                _bounded_count(self.regions, clip(region, 64) or "", count)
            # userIdentity.type is a bucket writer's to choose, and an alert carries it
            self.identity_type = self.identity_type or clip(identity_type, MAX_IDENTITY_TYPE_CHARS)
        self.event_ids.extend(event_ids[: MAX_DISTINCT_EVIDENCE - len(self.event_ids)])


def _tally(cells: dict[Any, list[Any]], key: Any, event_time: str) -> None:
    """One more event in a side cell ([events, first, last]): long-term keys, error codes, cities.
    (The main cell is updated inline in ``add``: it runs for every event.)"""
    cell = cells.get(key)
    if cell is None:
        cells[key] = [1, event_time, event_time]
    else:
        cell[0] += 1
        cell[1] = min(cell[1], event_time)
        cell[2] = max(cell[2], event_time)


def _observe(
    counters: dict[CounterKey, CounterDelta], key: CounterKey, hours: Iterable[int], first: str, last: str
) -> None:
    delta = counters.get(key)
    if delta is None:
        counters[key] = CounterDelta(set(hours), first, last)
    else:
        delta.observe_hours(hours, first, last)


def _bounded_count(counter: Counter[str], value: str, count: int = 1) -> None:
    if value in counter or len(counter) < MAX_DISTINCT_EVIDENCE:
        counter[value] += count
    else:
        counter[OTHER_MARKER] += count


GeoLookup = Callable[[str], str | None]
# The detectors one pass feeds (docs/scoring.md); "country" always runs.
CategoryKey = tuple[str, str, str]  # (account, principal, error code or "CC/City")


@dataclass(slots=True)
class CategoryGroup:
    """What one principal did in this run under one value of a sibling detector's category: from
    one city (``value`` = "CC/City"), or getting one error code. ``sources`` are the (principal,
    country) groups the calls came from: their addresses, agents and keys are the evidence."""

    account: str
    principal: str
    value: str
    methods: dict[str, MethodActivity] = field(default_factory=dict)
    sources: list[HitGroup] = field(default_factory=list)

    def add(self, source: HitGroup, method: str, hour: int, events: int) -> None:
        _add_activity(self.methods, method, (hour,), events)
        if all(existing is not source for existing in self.sources):
            self.sources.append(source)


def _add_activity(methods: dict[str, MethodActivity], method: str, hours: Iterable[int], events: int) -> None:
    activity = methods.get(method)
    if activity is None:
        activity = methods[method] = MethodActivity()
    activity.events += events
    activity.hours.update(hours)


# (account, principal, country, method): a cell's key without its hour. Per prefix the aggregate
# keeps one list: [hour, events, first eventTime, last eventTime, others], the cell of the hour
# the prefix was last seen in, and ``others`` None or {hour: (events, first, last)} for its other
# hours (most prefixes of a 15-minute run have one hour: one small list, not a dict of lists).
CellPrefix = tuple[str, str, str, str]
Cell = list[Any]
# (source ip, userAgent, accessKeyId, awsRegion, identity type): raw evidence, bounded later.
Evidence = tuple[str, str | None, str | None, str | None, str | None]
# (account, principal, country, source ip, userAgent, accessKeyId, awsRegion, identity type): one
# group's raw evidence, counted per event and clipped and bounded only when a group is derived.
EvidenceKey = tuple[str, str, str, str, str | None, str | None, str | None, str | None]
# Each source (sourceIPAddress) met: (address, country) or the reason it is skipped.
Located = dict[str | None, tuple[str, str] | str]
# What the per-event loop reads of a record, in one C-level call per record.
_FIELDS = attrgetter(
    "sourceIPAddress",
    "eventSource",
    "eventName",
    "userAgent",
    "awsRegion",
    "recipientAccountId",
    "errorCode",
    "userIdentity",
    "eventTime",
    "eventID",
)
_EVENT_ID = attrgetter("eventID")
_ENDPOINT_OWNER = attrgetter("vpcEndpointAccountId")  # read per file, only of files with private sources

# Event-id digests for the within-run duplicate check: stable across processes (snapshots are
# merged elsewhere), and below 2**60 so that CPython stores each in 32 bytes instead of 48.
DIGEST_BITS = 60
_DIGEST_MASK = (1 << DIGEST_BITS) - 1
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID_DASHES = (8, 13, 18, 23)
_LOW_NIBBLE = bytes(value & 0x0F for value in range(256))


def event_digest(event_id: str) -> int:
    """A stable 60-bit digest of an ``eventID``.

    A canonical UUID (lower-case ``8-4-4-4-12`` hex, as CloudTrail writes them) is its 128 bits
    folded: the two 64-bit halves XORed, truncated to 60 bits. Anything else: BLAKE2b (8 bytes)
    of its UTF-8, truncated the same way.
    """
    if len(event_id) == 36 and _CANONICAL_UUID.fullmatch(event_id):
        value = int(event_id.replace("-", ""), 16)
        return ((value >> 64) ^ value) & _DIGEST_MASK
    blake = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(blake, "big") & _DIGEST_MASK


def event_digests(event_ids: Sequence[str | None]) -> list[int] | None:
    """``event_digest`` of each id, in bulk (C-level bytes and integer operations, no per-id
    Python) when every id is a canonical UUID, as in any file CloudTrail writes; None otherwise."""
    count = len(event_ids)
    if not count or None in event_ids:
        return None
    ids = cast("Sequence[str]", event_ids)
    try:
        text = "|".join(ids).encode("ascii")
    except UnicodeEncodeError:
        return None
    # Every id 36 characters with its dashes in place: the separators and dashes where they belong
    # and, below, exactly 32 hex digits per id once both are deleted (so none inside an id).
    if len(text) != 37 * count - 1 or text[36::37] != b"|" * (count - 1):
        return None
    dashes = b"-" * count
    if any(text[at::37] != dashes for at in _UUID_DASHES):
        return None
    digits = text.translate(None, b"-|")
    if not digits.islower():  # upper-case hex is not canonical (nor, here, an all-digit file)
        return None
    try:
        raw = binascii.unhexlify(digits)
    except binascii.Error:
        return None
    if len(raw) != 16 * count:
        return None
    units = memoryview(raw).cast("Q")  # 8-byte units, copied as bytes: their order is kept
    high, low = units[0::2].tobytes(), units[1::2].tobytes()  # each id's high and low 8 bytes
    folded = bytearray((int.from_bytes(high, "big") ^ int.from_bytes(low, "big")).to_bytes(8 * count, "big"))
    folded[0::8] = folded[0::8].translate(_LOW_NIBBLE)  # 60 bits: the top 4 of each digest cleared
    digests = array("Q", folded)
    if sys.byteorder == "little":
        digests.byteswap()
    return digests.tolist()


@dataclass(slots=True)
class _Extra:
    """What each event of one piece of evidence adds besides its cell (off the common path)."""

    truncated: bool  # its userAgent is over MAX_FIELD_CHARS bytes (kept, cut when derived)
    key_prefix: tuple[str, str] | None  # (long-term access key, country)
    city: str | None  # "CC/City" of its address, "" when unknown; None: the city detector is off
    unlocated: bool  # a public address the GeoIP database has no country for (scored as "unknown")


# The value of an evidence key: [events, its group's first event ids (shared), _Extra | None].
EvidenceTally = list[Any]

SNAPSHOT_VERSION = 1


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


@dataclass(slots=True)
class RunAggregate:
    """Accumulates records of one batch of files. ``skipped`` counts every record not scored.

    Per event, the loop (``add_records``) looks up one slot by the event's raw key (every field
    but its time and id) and updates one cell (events, first and last time) of one hour and one
    evidence count. What a raw key means (source class and country, method, principal, account,
    evidence, side counters) is worked out once, when first met. Counters and hit groups are
    derived from the cells when first asked for, once per (account, principal, country, method)
    with all its hours. ``snapshot`` and ``merge_snapshot`` carry an aggregate between processes.
    """

    geolocate: GeoLookup
    detectors: frozenset[str] = DEFAULT_DETECTORS
    locate_city: GeoLookup | None = None  # "CC/City" of an address: the city detector only
    # Accounts whose VPC endpoints are the organization's besides each file's own (tuning's
    # trusted_vpc_endpoint_accounts): calls through them are skipped, not scored (_count_endpoints).
    trusted_endpoint_accounts: frozenset[str] = frozenset()
    skipped: Counter[str] = field(default_factory=Counter)
    events: int = 0
    geolocated: int = 0
    _cells: dict[CellPrefix, Cell] = field(default_factory=dict)
    # (account, principal, country, error code, method, hour): the rare-error-code detector only
    _error_cells: dict[tuple[str, str, str, str, str, int], list[Any]] = field(default_factory=dict)
    _key_cells: dict[tuple[str, str, int], list[Any]] = field(default_factory=dict)  # long-term keys
    _evidence: dict[EvidenceKey, EvidenceTally] = field(default_factory=dict)
    # per group, its first MAX_DISTINCT_EVIDENCE event ids: [packed ids, how many] (_pack_id)
    _event_id_lists: dict[GroupKey, list[Any]] = field(default_factory=dict)
    _event_ids: set[int] = field(default_factory=set)  # event_digest of every eventID seen
    # (account, principal, "CC/City", method, hour): the city detector only
    _city_cells: dict[tuple[str, str, str, str, int], list[Any]] = field(default_factory=dict)
    # caches: worked out once per distinct value, never serialized
    _sources: Located = field(default_factory=dict)
    _hours: dict[str, int | None] = field(default_factory=dict)
    _methods: dict[tuple[str, str], str] = field(default_factory=dict)
    _principals: dict[tuple[str | None, str | None, str | None], str] = field(default_factory=dict)
    _city_of: dict[str, str] = field(default_factory=dict)
    _derived: tuple[dict[CounterKey, CounterDelta], dict[GroupKey, HitGroup]] | None = None
    _error_groups: dict[CategoryKey, CategoryGroup] = field(default_factory=dict)
    _city_groups: dict[CategoryKey, CategoryGroup] = field(default_factory=dict)
    _count_errors: bool = False
    _window: tuple[int, int] = ANY_HOUR  # the hours the file being counted may hold (add_records)

    def __post_init__(self) -> None:
        unknown = self.detectors - DETECTORS
        if unknown or "country" not in self.detectors:
            raise ValueError(
                f"detectors must include 'country' and be among {sorted(DETECTORS)}: {sorted(unknown)}"
            )
        self._count_errors = "error_code" in self.detectors
        if "city" in self.detectors and self.locate_city is None:
            raise ValueError("the city detector needs a City database (GeoIP2/GeoLite2 City or DB-IP City)")
        if "city" not in self.detectors:
            self.locate_city = None

    def add(self, record: TrailRecord, account_hint: str | None = None) -> None:
        self.add_records([record], account_hint)

    def add_records(
        self,
        records: Sequence[TrailRecord],
        account_hint: str | None = None,
        folder: str | None = None,
        hours: tuple[int, int] = ANY_HOUR,
    ) -> Counter[str]:
        """Add one file's records (or any sequence of them), in order; returns what this call
        counted in ``skipped`` (added to ``skipped`` too), so that a caller logging per file
        needs no copy of the run's counts. ``folder`` is the account of the file's S3 key
        (``AWSLogs/[<org>/]<account>/``, which CloudTrail writes): its VPC endpoints are the
        organization's own (``_count_endpoints``). ``hours``: the first and last hour its events
        may be in (``counters.event_hours``, from the file's delivery time).

        Checks in this order, each skipped record counted under the first reason that applies:
        ``duplicate_event`` (an eventID already seen in this run), the source (``source_*``;
        ``source_vpce_own``: a private address behind an endpoint of the organization),
        ``no_method``, ``bad_event_time``, ``event_time_out_of_window`` (an hour outside ``hours``);
        every other record is geolocated and counted
        (``field_truncated``, ``city_unknown`` and ``geo_unknown``, a public address scored as the
        location ``unknown``, count such records too, not skips).
        """
        skipped: Counter[str] = Counter()
        if not records:
            return skipped
        self._derived = None
        self.events += len(records)
        self._window = hours
        self._count(self._without_duplicates(records, skipped), skipped, account_hint, folder)
        return skipped

    def add_files(
        self,
        files: Sequence[Sequence[TrailRecord]],
        account_hint: str | None = None,
        folders: Sequence[str | None] | None = None,
        hours: Sequence[tuple[int, int]] | None = None,
    ) -> list[Counter[str]]:
        """``add_records`` of each file in turn (``folders``: each one's key account), with the same
        result, each file's own skips returned; the eventID check is made once for all of them when
        every id is canonical and new to the run (on files of 35 events its fixed cost was a sixth
        of the per-file cost)."""
        accounts = [None] * len(files) if folders is None else folders
        windows = [ANY_HOUR] * len(files) if hours is None else hours
        if len(files) < 2 or not self._all_new(
            event_digests(list(map(_EVENT_ID, chain.from_iterable(files))))
        ):
            return [
                self.add_records(records, account_hint, folder, window)
                for records, folder, window in zip(files, accounts, windows, strict=True)
            ]
        self._derived = None
        each: list[Counter[str]] = []
        for records, folder, window in zip(files, accounts, windows, strict=True):
            skipped: Counter[str] = Counter()
            self.events += len(records)
            self._window = window
            self._count(records, skipped, account_hint, folder)
            each.append(skipped)
        return each

    def _all_new(self, digests: list[int] | None) -> bool:
        """Whether these eventID digests (None: some id is not canonical) are all distinct and
        none seen before in this run; if so, they are recorded as seen."""
        if digests is None:
            return False
        fresh = set(digests)
        if len(fresh) != len(digests) or not self._event_ids.isdisjoint(fresh):
            return False
        self._event_ids.update(fresh)
        return True

    def _count(  # noqa: C901, PLR0915 - the hot loop: one loop on purpose, no call per event on the common path
        self,
        kept: Sequence[TrailRecord],
        skipped: Counter[str],
        account_hint: str | None,
        folder: str | None = None,
        located_as: Located | None = None,
    ) -> int:
        """Count records already checked for duplicates; their skips go to ``skipped`` and to
        the run's own ``skipped``. Returns how many were not counted (skips). ``located_as``: the
        pass over calls through foreign VPC endpoints (``_count_endpoints``), each source's location."""
        sources, methods, hours, principals = self._sources, self._methods, self._hours, self._principals
        if located_as is not None:
            sources = located_as
        cells, evidence = self._cells, self._evidence
        count_errors = self._count_errors
        earliest, latest = self._window  # the file's (set by add_records and add_files)
        not_counted = 0  # skips in the loop below (the duplicates never reach it)
        # One loop, no call per event on the common path (measured: the calls were a third of it).
        for (
            source_ip,
            source,
            name,
            user_agent,
            region,
            recipient,
            error_code,
            identity,
            event_time,
            event_id,
        ) in map(_FIELDS, kept):
            located = sources.get(source_ip)
            if located is None:
                located = self._locate(source_ip)
            if isinstance(located, str):  # the source's skip reason
                skipped[located] += 1
                not_counted += 1
                continue
            ip, country = located
            if not source or not name:
                skipped["no_method"] += 1
                not_counted += 1
                continue
            if event_time is None or len(event_time) > MAX_EVENT_TIME_CHARS:
                skipped["bad_event_time"] += 1
                not_counted += 1
                continue
            hour = hours.get(event_time[:13])
            if hour is None:
                hour = self._hour(event_time)
                if hour is None:
                    skipped["bad_event_time"] += 1
                    not_counted += 1
                    continue
            if not earliest <= hour <= latest:  # two integer comparisons: the file's window
                skipped["event_time_out_of_window"] += 1
                not_counted += 1
                continue
            method = methods.get((source, name))
            if method is None:
                method = methods[(source, name)] = method_key(source, name)
            if identity is None:
                principal, account_id, access_key, identity_type = "unknown", None, None, None
            else:
                principal_key = (identity.arn, identity.type, identity.principalId)
                known = principals.get(principal_key)
                if known is None:
                    known = principals[principal_key] = principal_of_identity(identity)
                principal = known
                account_id, access_key = identity.accountId, identity.accessKeyId
                identity_type = identity.type
            account = recipient or account_id or account_hint or "unknown"
            prefix = (account, principal, country, method)
            cell = cells.get(prefix)
            if cell is None:
                # the key kept interned: a run holds one copy of each account string, not one per cell
                cells[(intern(account), principal, country, method)] = [hour, 1, event_time, event_time, None]
            elif cell[0] == hour:
                cell[1] += 1
                if event_time < cell[2]:
                    cell[2] = event_time
                elif event_time > cell[3]:
                    cell[3] = event_time
            else:  # an hour other than the cell's current one: it becomes current (inline: 37% of a
                # 14-day run's events switch hours)
                others = cell[4]
                if others is None:
                    others = cell[4] = {}
                others[cell[0]] = (cell[1], cell[2], cell[3])
                previous = others.pop(hour, None)
                if previous is None:
                    cell[0] = hour
                    cell[1] = 1
                    cell[2] = cell[3] = event_time
                else:
                    _resume_hour(cell, hour, event_time, previous)
            evidence_key = (account, principal, country, ip, user_agent, access_key, region, identity_type)
            tally = evidence.get(evidence_key)
            if tally is None:
                tally = self._new_evidence(evidence_key)
            tally[0] += 1
            if event_id:
                first_ids = tally[1]
                if first_ids[1] < MAX_DISTINCT_EVIDENCE:
                    first_ids[0] += _pack_id(event_id)
                    first_ids[1] += 1
            if tally[2] is not None:
                self._count_extra(tally[2], prefix, hour, event_time, skipped)
            if error_code is not None and count_errors:
                key = (account, principal, country, clip(error_code, 128) or "", method, hour)
                _tally(self._error_cells, key, event_time)
        if located_as is not None:
            return not_counted  # the endpoint pass: the file's own pass keeps the books
        if "source_private" in skipped:  # once per file, never per event: calls through VPC endpoints
            not_counted += self._count_endpoints(kept, skipped, account_hint, folder)
        self.geolocated += len(kept) - not_counted
        if skipped:
            self.skipped.update(skipped)
        return not_counted

    def _count_endpoints(
        self, kept: Sequence[TrailRecord], skipped: Counter[str], account_hint: str | None, folder: str | None
    ) -> int:
        """The calls of one file from a private address through a VPC endpoint, which ``_count``
        skipped as ``source_private``, judged by the endpoint's owner (``vpcEndpointAccountId``);
        returns the change in the file's records not counted.

        Through an endpoint of the organization, the call stays skipped (``source_vpce_own``): the
        organization's accounts are the file's own account, from its S3 key (CloudTrail writes the
        key; no field of a record can add an account), and ``trusted_endpoint_accounts``. Through
        any other account's endpoint (stolen keys used from the attacker's own VPC, the "sneaky
        endpoints" technique), it is counted and scored from the location ``VPCE:<account>``, with
        a history of its own like a country's. A private address without an endpoint owner stays
        ``source_private``.
        """
        # C-level: only the records that name an endpoint owner reach the Python loop below
        named = list(compress(kept, map(_ENDPOINT_OWNER, kept)))
        if not named:
            return 0
        sources, trusted = self._sources, self.trusted_endpoint_accounts
        own = 0
        # (location, endpoint id) -> its records and where each of their sources is located
        foreign: dict[tuple[str, str | None], tuple[list[TrailRecord], Located]] = {}
        for record in named:
            source, owner = record.sourceIPAddress, record.vpcEndpointAccountId
            if not owner or sources.get(source) != "source_private":
                continue
            if owner == folder or owner in trusted:
                own += 1
                continue
            location, endpoint = endpoint_location(owner), clip(record.vpcEndpointId, 64)
            records, located = foreign.setdefault((location, endpoint), ([], {}))
            records.append(record)
            if source not in located:
                ip = classify_source(source).ip or ""
                located[source] = (f"{ip}{VIA_ENDPOINT}{endpoint}" if endpoint else ip, location)
        moved = own + sum(len(records) for records, _ in foreign.values())
        if not moved:
            return 0
        left = skipped["source_private"] - moved
        if left:
            skipped["source_private"] = left
        else:
            del skipped["source_private"]
        if own:
            skipped["source_vpce_own"] += own
        change = own - moved
        for records, located in foreign.values():
            change += self._count(records, skipped, account_hint, folder, located)
        return change

    def _without_duplicates(
        self, records: Sequence[TrailRecord], skipped: Counter[str]
    ) -> Sequence[TrailRecord]:
        """The records whose eventID this run has not seen (a missing or empty id never matches).

        The same event delivered twice (two trails into one bucket) is one event. One file of
        canonical UUIDs, none seen before, costs a few C-level set operations.
        """
        event_ids = list(map(_EVENT_ID, records))
        digests = event_digests(event_ids)
        if self._all_new(digests):
            return records
        seen = self._event_ids
        kept: list[TrailRecord] = []
        duplicates = 0
        for position, (record, event_id) in enumerate(zip(records, event_ids, strict=True)):
            if event_id:
                digest = digests[position] if digests is not None else event_digest(event_id)
                if digest in seen:
                    duplicates += 1
                    continue
                seen.add(digest)
            kept.append(record)
        if duplicates:
            skipped["duplicate_event"] += duplicates
        return kept

    def _new_evidence(self, evidence_key: EvidenceKey) -> EvidenceTally:
        """The tally of a piece of evidence met for the first time, with what its events add."""
        account, principal, country, ip, user_agent, access_key, region, identity_type = evidence_key
        account = intern(account)
        group_key = (account, principal, country)
        event_ids = self._event_id_lists.get(group_key)
        if event_ids is None:
            event_ids = self._event_id_lists[group_key] = ["", 0]
        truncated = user_agent is not None and clip(user_agent) is not user_agent
        # counters.is_long_term_key, inlined
        key_prefix = (access_key, country) if access_key is not None and access_key[:4] == "AKIA" else None
        city = None
        if self.locate_city is not None:
            city = self._city_of.get(ip)
            if city is None:
                city = self._city_of[ip] = self.locate_city(ip) or ""
            if city[:2] != country:  # a city of another country; "unknown" and "VPCE:" have none
                city = ""
        unlocated = country == UNKNOWN_LOCATION
        extra = (
            _Extra(truncated, key_prefix, city, unlocated)
            if truncated or key_prefix or city is not None or unlocated
            else None
        )
        # kept with its strings interned: agents, regions and types recur across groups
        stored_key = (
            account,
            principal,
            country,
            ip,
            None if user_agent is None else intern(user_agent),
            access_key,
            None if region is None else intern(region),
            None if identity_type is None else intern(identity_type),
        )
        tally = self._evidence[stored_key] = [0, event_ids, extra]
        return tally

    def _count_extra(
        self, extra: _Extra, prefix: CellPrefix, hour: int, event_time: str, skipped: Counter[str]
    ) -> None:
        if extra.truncated:
            skipped["field_truncated"] += 1  # kept, cut to MAX_FIELD_CHARS (not skipped)
        if extra.unlocated:
            skipped["geo_unknown"] += 1  # scored from the location "unknown" (not skipped)
        if extra.key_prefix is not None:
            _tally(self._key_cells, (*extra.key_prefix, hour), event_time)
        if extra.city is not None:
            if extra.city:
                account, principal, _, method = prefix
                _tally(self._city_cells, (account, principal, extra.city, method, hour), event_time)
            else:
                skipped["city_unknown"] += 1  # counted for the country detector all the same

    @property
    def city_groups(self) -> dict[CategoryKey, CategoryGroup]:
        """(account, principal, city) -> what the principal did from that city, in this run."""
        self._derive()
        return self._city_groups

    @property
    def error_groups(self) -> dict[CategoryKey, CategoryGroup]:
        """(account, principal, error code) -> what the principal got that code for, in this run."""
        self._derive()
        return self._error_groups

    @property
    def counters(self) -> dict[CounterKey, CounterDelta]:
        return self._derive()[0]

    @property
    def groups(self) -> dict[GroupKey, HitGroup]:
        return self._derive()[1]

    def _derive(self) -> tuple[dict[CounterKey, CounterDelta], dict[GroupKey, HitGroup]]:
        if self._derived is not None:
            return self._derived
        # Derived once per batch, usually after the read loop has resumed the collector: hundreds of
        # thousands of new objects, none in a cycle, would otherwise set off full collections that
        # walk every cell of the run (measured: a third of the time spent deriving).
        with gc_paused():
            self._derived = self._derive_now()
        return self._derived

    def _derive_now(self) -> tuple[dict[CounterKey, CounterDelta], dict[GroupKey, HitGroup]]:
        counters: dict[CounterKey, CounterDelta] = {}
        groups: dict[GroupKey, HitGroup] = {}
        identities: dict[str, str] = {}
        # Per principal: its role's partition (None: not a role session).
        roles: dict[str, str | None] = {}
        # Per prefix only its most specific counters: (method, country), (principal, country) and,
        # with unusual commands on, (person, method). Their totals and the organization's are
        # unions of those, folded in once per counter below rather than once per prefix.
        specific: dict[CounterKey, CounterDelta] = {}
        get = specific.get
        user_methods = "user_method" in self.detectors
        for (account, principal, country, method), cell in self._cells.items():
            hour, events, first, last, others = cell
            hours: tuple[int, ...] = (hour,)
            if others is not None:
                hours = (hour, *others)
                for other_events, other_first, other_last in others.values():
                    events += other_events
                    if other_first < first:  # noqa: PLR1730 - cheaper than min() here
                        first = other_first
                    if other_last > last:  # noqa: PLR1730
                        last = other_last
            identity = identities.get(principal)
            if identity is None:
                identity = identities[principal] = identity_of(principal)
            role_partition = roles.get(principal, "")
            if role_partition == "":
                role = role_of(principal)
                role_partition = roles[principal] = principal_partition(role) if role else None
            cc = country_sort_key(country)
            keys = [(method_partition(method), cc), (principal_partition(identity), cc)]
            if role_partition is not None:
                keys.append((role_partition, cc))
            if user_methods:
                keys.append((user_methods_partition(identity), category_sort_key(method)))
            for key in keys:
                delta = get(key)
                if delta is None:
                    specific[key] = CounterDelta(set(hours), first, last)
                else:  # inlined rather than a function call: this runs for every prefix
                    delta.hours.update(hours)
                    if first < delta.first_seen:  # noqa: PLR1730 - cheaper than min() here
                        delta.first_seen = first
                    if last > delta.last_seen:  # noqa: PLR1730
                        delta.last_seen = last
            group_key = (clip(account, 64) or "unknown", principal, country)
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = HitGroup(*group_key)
            group.add_cells(method, hours, events, first, last)
        _fold_totals(specific, counters)
        self._derive_keys_and_evidence(counters, groups)
        self._error_groups = self._derive_errors(counters, groups)
        self._city_groups = self._derive_cities(counters, groups, identities)
        return counters, groups

    def _derive_keys_and_evidence(
        self, counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]
    ) -> None:
        """The long-term keys' counters, and each group's evidence."""
        for (access_key, country, hour), (_, first, last) in self._key_cells.items():
            kp = access_key_partition(clip(access_key, 128) or "")
            for key in ((kp, country_sort_key(country)), (kp, TOTAL)):
                _observe(counters, key, (hour,), first, last)
        for (account, principal, country), seen in self._evidence_by_group().items():
            group = groups[(clip(account, 64) or "unknown", principal, country)]
            group.add_evidence(seen, _unpack_ids(self._event_id_lists[(account, principal, country)][0]))

    def _evidence_by_group(self) -> dict[GroupKey, Counter[Evidence]]:
        """Each group's raw evidence, in the order the run first counted it."""
        by_group: dict[GroupKey, Counter[Evidence]] = {}
        for (account, principal, country, *raw), (events, _, _) in self._evidence.items():
            group_key = (account, principal, country)
            seen = by_group.get(group_key)
            if seen is None:
                seen = by_group[group_key] = Counter()
            seen[tuple(raw)] = events  # type: ignore[index] # each raw key once per group
        return by_group

    def _derive_cities(
        self,
        counters: dict[CounterKey, CounterDelta],
        groups: dict[GroupKey, HitGroup],
        identities: dict[str, str],
    ) -> dict[CategoryKey, CategoryGroup]:
        city_groups: dict[CategoryKey, CategoryGroup] = {}
        for (account, principal, city, method, hour), (events, first, last) in self._city_cells.items():
            identity = identities.get(principal) or identity_of(principal)
            at = category_sort_key(city)
            for partition in (
                ORG_CITIES,
                method_cities_partition(method),
                principal_cities_partition(identity),
            ):
                _observe(counters, (partition, at), (hour,), first, last)
                _observe(counters, (partition, TOTAL), (hour,), first, last)
            key = (clip(account, 64) or "unknown", principal, city)
            group = city_groups.get(key)
            if group is None:
                group = city_groups[key] = CategoryGroup(*key)
            group.add(groups[(key[0], principal, city[:2])], method, hour, events)
        return city_groups

    def _derive_errors(
        self, counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]
    ) -> dict[CategoryKey, CategoryGroup]:
        error_groups: dict[CategoryKey, CategoryGroup] = {}
        for (account, principal, country, code, method, hour), (
            events,
            first,
            last,
        ) in self._error_cells.items():
            for key in ((ORG_ERRORS, category_sort_key(code)), (ORG_ERRORS, TOTAL)):
                _observe(counters, key, (hour,), first, last)
            error_key = (clip(account, 64) or "unknown", principal, code)
            error_group = error_groups.get(error_key)
            if error_group is None:
                error_group = error_groups[error_key] = CategoryGroup(*error_key)
            error_group.add(groups[(error_key[0], principal, country)], method, hour, events)
        return error_groups

    def _hour(self, event_time: str) -> int | None:
        if len(event_time) > MAX_EVENT_TIME_CHARS:
            return None  # a valid prefix followed by a megabyte is not an event time
        prefix = event_time[:13]
        if prefix not in self._hours:
            self._hours[prefix] = hour_of(prefix)
        return self._hours[prefix]

    def _locate(self, source: str | None) -> tuple[str, str] | str:
        """(address, country) of a source, or its skip reason: worked out once. A public address
        the GeoIP database has no country for is located in ``unknown``, scored like a country:
        address space missing from the database must not hide a caller."""
        cached = self._sources.get(source)
        if cached is None:
            kind, ip = classify_source(source)
            if kind is SourceKind.PUBLIC and ip is not None:
                cached = self._sources[source] = (ip, self.geolocate(ip) or UNKNOWN_LOCATION)
            else:
                cached = self._sources[source] = f"source_{kind.value}"
        return cached

    # --------------------------------------------------------------------------------------------
    # Snapshots: one aggregate's state carried to another process and merged there
    # --------------------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Everything this aggregate accumulated, as compact deterministic msgpack.

        The cells of every kind, the raw evidence with its counts, the first event ids of each
        group, ``skipped``, ``events``, ``geolocated`` and the digest of every eventID seen (sorted;
        see ``event_digest``), each in the aggregate's first-seen order; not the caches or what is
        derived from the cells. The same records added in the same order give the same bytes.
        """
        snapshot = _Snapshot(
            version=SNAPSHOT_VERSION,
            detectors=sorted(self.detectors),
            events=self.events,
            geolocated=self.geolocated,
            skipped=list(self.skipped.items()),
            cells=[(*prefix, sorted(_cell_hours(cell))) for prefix, cell in self._cells.items()],
            key_cells=[(*key, *cell) for key, cell in self._key_cells.items()],
            error_cells=[(*key, *cell) for key, cell in self._error_cells.items()],
            city_cells=[(*key, *cell) for key, cell in self._city_cells.items()],
            evidence=[
                (
                    *group,
                    [(*raw, events) for raw, events in seen.items()],
                    _unpack_ids(self._event_id_lists[group][0]),
                )
                for group, seen in self._evidence_by_group().items()
            ],
            event_digests=_pack_digests(self._event_ids),
        )
        return _snapshot_encoder.encode(snapshot)

    def merge_snapshot(self, data: bytes) -> None:
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
        detectors. Derived counters and groups are recomputed when next asked for.
        """
        try:
            snapshot = _snapshot_decoder.decode(data)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise ValueError(f"corrupted or foreign RunAggregate snapshot: {exc}") from exc
        if snapshot.version != SNAPSHOT_VERSION:
            raise ValueError(f"RunAggregate snapshot version {snapshot.version}, expected {SNAPSHOT_VERSION}")
        if frozenset(snapshot.detectors) != self.detectors:
            raise ValueError(
                f"RunAggregate snapshot of detectors {snapshot.detectors}, this aggregate runs "
                f"{sorted(self.detectors)}"
            )
        digests = _unpack_digests(snapshot.event_digests)
        self._derived = None
        self.events += snapshot.events
        self.geolocated += snapshot.geolocated
        for reason, count in snapshot.skipped:
            self.skipped[reason] += count
        seen_ids = self._event_ids
        overlap = len(seen_ids.intersection(digests))
        if overlap:
            self.skipped["duplicate_event"] += overlap
        seen_ids.update(digests)
        cells = self._cells
        for account, principal, country, method, hours in snapshot.cells:
            prefix = (account, principal, country, method)
            for hour, events, first, last in hours:
                _merge_hour(cells, prefix, hour, events, first, last)
        for access_key, country, hour, events, first, last in snapshot.key_cells:
            _merge_cell(self._key_cells, (access_key, country, hour), events, first, last)
        for account, principal, country, code, method, hour, events, first, last in snapshot.error_cells:
            key = (account, principal, country, code, method, hour)
            _merge_cell(self._error_cells, key, events, first, last)
        for account, principal, city, method, hour, events, first, last in snapshot.city_cells:
            _merge_cell(self._city_cells, (account, principal, city, method, hour), events, first, last)
        evidence = self._evidence
        for account, principal, country, raw_evidence, event_ids in snapshot.evidence:
            for ip, user_agent, key_id, region, identity_type, events in raw_evidence:
                evidence_key = (account, principal, country, ip, user_agent, key_id, region, identity_type)
                tally = evidence.get(evidence_key)
                if tally is None:
                    tally = self._new_evidence(evidence_key)
                tally[0] += events
            # in place: evidence tallies hold this list
            first_ids = self._event_id_lists.setdefault((account, principal, country), ["", 0])
            for event_id in event_ids[: MAX_DISTINCT_EVIDENCE - first_ids[1]]:
                first_ids[0] += _pack_id(event_id)
                first_ids[1] += 1


def _fold_totals(specific: dict[CounterKey, CounterDelta], counters: dict[CounterKey, CounterDelta]) -> None:
    """Into ``counters``: each specific counter, its partition's TOTAL and the organization's
    counters above it. (method, country) rolls up into (method, TOTAL), (ORG, country) and
    (ORG, TOTAL); (principal, country) into (principal, TOTAL); (person, method) into
    (person, TOTAL) and (ORG_METHODS, TOTAL)."""
    org_countries: dict[CounterKey, CounterDelta] = {}
    for key, delta in specific.items():
        counters[key] = delta
        partition, value = key
        _roll_up(counters, (partition, TOTAL), delta)
        if partition.startswith(METHOD_PARTITION_PREFIX):
            _roll_up(org_countries, (ORG_PARTITION, value), delta)
        elif partition.startswith(USER_METHODS_PARTITION_PREFIX):
            _roll_up(counters, (ORG_METHODS, TOTAL), delta)
    for key, delta in org_countries.items():
        counters[key] = delta
        _roll_up(counters, (ORG_PARTITION, TOTAL), delta)
        # The country's identity index: present when the organization is; its categories (the
        # identities calling from it) are the principal and role counters' fresh values, rolled
        # up when the run commits (counters.apply_deltas).
        _roll_up(counters, (identity_index_partition(key[1][2:]), TOTAL), delta)


def _roll_up(counters: dict[CounterKey, CounterDelta], key: CounterKey, delta: CounterDelta) -> None:
    _observe(counters, key, delta.hours, delta.first_seen or "", delta.last_seen or "")


def _resume_hour(cell: Cell, hour: int, event_time: str, previous: tuple[int, str, str]) -> None:
    """One event of a prefix back in an hour it left: that hour's cell becomes current again."""
    events, first, last = previous
    cell[0:4] = [hour, events + 1, min(first, event_time), max(last, event_time)]


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


def _pack_id(event_id: str) -> str:
    """An event id (clipped) with its length in front: a group's first ids kept as one string
    (measured: 384,004 separate id strings took 40 MB in a 1M-event window)."""
    clipped = clip(event_id, 128) or ""
    return chr(len(clipped)) + clipped


def _unpack_ids(packed: str) -> list[str]:
    ids: list[str] = []
    at = 0
    while at < len(packed):
        size = ord(packed[at])
        ids.append(packed[at + 1 : at + 1 + size])
        at += 1 + size
    return ids


def _merge_cell(cells: dict[Any, list[Any]], key: Any, events: int, first: str, last: str) -> None:
    cell = cells.get(key)
    if cell is None:
        cells[key] = [events, first, last]
    else:
        cell[0] += events
        cell[1] = min(cell[1], first)
        cell[2] = max(cell[2], last)
