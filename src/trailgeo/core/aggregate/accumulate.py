"""``RunAggregate``: one batch's records accumulated in memory, and its per-event loop (``_count``).

Per event, one slot looked up by the event's raw key and one cell (events, first and last time)
of one hour updated; what a raw key means is worked out once, when first met. The counters and
groups come from the cells when first asked for (``derive``); an aggregate travels between
processes as a snapshot (``snapshot``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from sys import intern
from typing import Any

from trailgeo.core.aggregate.derive import derive
from trailgeo.core.aggregate.digests import all_new, event_digests, without_duplicates
from trailgeo.core.aggregate.endpoints import count_endpoints
from trailgeo.core.aggregate.groups import (
    MAX_DISTINCT_EVIDENCE,
    CategoryGroup,
    CategoryKey,
    Cell,
    CellPrefix,
    EvidenceKey,
    GroupKey,
    HitGroup,
    Located,
    method_key,
    pack_id,
    principal_of_identity,
)
from trailgeo.core.aggregate.snapshot import merge_into, snapshot_of
from trailgeo.core.categories import EventScope, category_reasons
from trailgeo.core.counters import (
    ANY_HOUR,
    MAX_EVENT_TIME_CHARS,
    CounterDelta,
    CounterKey,
    hour_of,
)
from trailgeo.core.detectors import DEFAULT_DETECTORS, DETECTORS
from trailgeo.core.networks import AsnInfo
from trailgeo.core.records import TrailRecord, clip, gc_paused
from trailgeo.core.sign_ins import (
    SIGN_IN_SKIP,
    SIGN_IN_SOURCE,
    UNREADABLE_SIGN_IN,
    SignInReader,
    is_identity_center_sign_in,
)
from trailgeo.core.sources import (
    UNKNOWN_LOCATION,
    SourceKind,
    classify_source,
)

GeoLookup = Callable[[str], str | None]

# What the per-event loop reads of a record, in one C-level call per record.
_FIELDS = attrgetter(
    "eventCategory",
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
_SOURCE = attrgetter("eventSource")


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


@dataclass(slots=True)
class _Extra:
    """What each event of one piece of evidence adds besides its cell (off the common path)."""

    truncated: bool  # its userAgent is over MAX_FIELD_CHARS bytes (kept, cut when derived)
    key_prefix: tuple[str, str] | None  # (long-term access key, country)
    city: str | None  # "CC/City" of its address, "" when unknown; None: the city detector is off
    unlocated: bool  # a public address the GeoIP database has no country for (scored as "unknown")


# The value of an evidence key: [events, its group's first event ids (shared), _Extra | None].
EvidenceTally = list[Any]


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
    # The autonomous system of an address (an ASN database): the networks of sign-ins
    # (core/sign_ins.sign_in_network); without one, their /24 or /48
    asn_of: Callable[[str], AsnInfo | None] | None = None
    # Accounts whose VPC endpoints are the organization's besides each file's own (tuning's
    # trusted_vpc_endpoint_accounts): calls through them are skipped, not scored (endpoints.count_endpoints).
    trusted_endpoint_accounts: frozenset[str] = frozenset()
    # Data and network activity events: skipped (MANAGEMENT) or scored and counted apart (ALL)
    scope: EventScope = EventScope.MANAGEMENT
    skipped: Counter[str] = field(default_factory=Counter)
    events: int = 0
    geolocated: int = 0
    _cells: dict[CellPrefix, Cell] = field(default_factory=dict)
    # (account, principal, country, error code, method, hour): the error detectors only; the code
    # is "" when only the spike is on (it counts errors, not codes: made-up codes add no cell)
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
    _spike_groups: dict[CategoryKey, CategoryGroup] = field(default_factory=dict)
    _count_errors: bool = False
    _keep_error_codes: bool = False
    _window: tuple[int, int] = ANY_HOUR  # the hours the file being counted may hold (add_records)
    # eventCategory -> its reason ("Data", "NetworkActivity" only), and whether those are skipped
    _categories: dict[str, str] = field(default_factory=dict)
    _skip_categories: bool = True
    # The run's sign-in records, followed to the phishing-resistant sign-ins they complete (carried
    # in a snapshot: a fan-out worker's reach the reduce)
    sign_in_reader: SignInReader = field(default_factory=SignInReader)

    def __post_init__(self) -> None:
        unknown = self.detectors - DETECTORS
        if unknown or "country" not in self.detectors:
            raise ValueError(
                f"detectors must include 'country' and be among {sorted(DETECTORS)}: {sorted(unknown)}"
            )
        self._keep_error_codes = "error_code" in self.detectors
        self._count_errors = self._keep_error_codes or "error_spike" in self.detectors
        if "city" in self.detectors and self.locate_city is None:
            raise ValueError("the city detector needs a City database (GeoIP2/GeoLite2 City or DB-IP City)")
        if "city" not in self.detectors:
            self.locate_city = None
        self.scope = EventScope(self.scope)
        self._categories, self._skip_categories = category_reasons(self.scope)

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
        organization's own (``endpoints.count_endpoints``). ``hours``: the first and last hour its events
        may be in (``counters.event_hours``, from the file's delivery time).

        Checks in this order, each skipped record counted under the first reason that applies:
        ``duplicate_event`` (an eventID already seen in this run), the category
        (``data_event``, ``network_activity_event``: a data or network activity event while
        ``scope`` is MANAGEMENT, before anything is looked up; with ALL they are scored and
        counted as ``data_event_scored``, ``network_activity_event_scored``, not skips; any
        other category, or none, is a management event), the source (``source_*``;
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
        self._count(without_duplicates(self._event_ids, records, skipped), skipped, account_hint, folder)
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
        if len(files) < 2 or not all_new(
            self._event_ids, event_digests(list(map(_EVENT_ID, chain.from_iterable(files))))
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
        pass over calls through foreign VPC endpoints (``count_endpoints``), each source's location."""
        sources, methods, hours, principals = self._sources, self._methods, self._hours, self._principals
        categories, skip_categories = self._categories, self._skip_categories
        if located_as is not None:
            sources = located_as
            categories = {}  # the file's own pass counted each record's category
        cells, evidence = self._cells, self._evidence
        count_errors, keep_codes = self._count_errors, self._keep_error_codes
        earliest, latest = self._window  # the file's (set by add_records and add_files)
        not_counted = 0  # skips in the loop below (the duplicates never reach it)
        set_apart = 0  # Identity Center's sign-in records: read as evidence, not counted as calls
        if located_as is None and SIGN_IN_SOURCE in map(_SOURCE, kept):  # one C-level scan
            before = len(kept)
            kept = self._read_sign_ins(kept, skipped)
            set_apart = before - len(kept)
        # One loop, no call per event on the common path (measured: the calls were a third of it).
        for (
            category,
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
            if category in categories:  # "Data", "NetworkActivity": first, so an excluded one costs least
                skipped[categories[category]] += 1
                if skip_categories:
                    not_counted += 1
                    continue
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
                    first_ids[0] += pack_id(event_id)
                    first_ids[1] += 1
            if tally[2] is not None:
                self._count_extra(tally[2], prefix, hour, event_time, skipped)
            if error_code is not None and count_errors:
                code = (clip(error_code, 128) or "") if keep_codes else ""
                key = (account, principal, country, code, method, hour)
                _tally(self._error_cells, key, event_time)
        if located_as is not None:
            return not_counted  # the endpoint pass: the file's own pass keeps the books
        if "source_private" in skipped:  # once per file, never per event: calls through VPC endpoints
            not_counted += count_endpoints(self, kept, skipped, account_hint, folder)
        self.geolocated += len(kept) - not_counted
        if skipped:
            self.skipped.update(skipped)
        return not_counted + set_apart

    def _read_sign_ins(self, kept: Sequence[TrailRecord], skipped: Counter[str]) -> list[TrailRecord]:
        """Each sign-in record (from a public address, in the file's window) to the run's
        ``sign_in_reader``; the records to count, without Identity Center's sign-in records (no
        principal: every user's sign-ins would be one), those counted as ``identity_center_sign_in``."""
        earliest, latest = self._window
        counted: list[TrailRecord] = []
        reader = self.sign_in_reader
        unreadable = reader.unreadable
        for record in kept:
            if record.eventSource != SIGN_IN_SOURCE:
                counted.append(record)
                continue
            located = self._locate(record.sourceIPAddress)  # cached: worked out once per source
            event_time = record.eventTime
            hour = self._hour(event_time) if event_time else None
            if not isinstance(located, str) and hour is not None and earliest <= hour <= latest:
                reader.add(record, *located, event_time or "")
            if is_identity_center_sign_in(record):
                skipped[SIGN_IN_SKIP] += 1
            else:
                counted.append(record)
        if reader.unreadable > unreadable:
            skipped[UNREADABLE_SIGN_IN] += reader.unreadable - unreadable
        return counted

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
    def spike_groups(self) -> dict[CategoryKey, CategoryGroup]:
        """(account, identity, error level) -> the errors of the identity's busiest error hour in
        this run (the error spike detector; ``derive.derive_error_levels``)."""
        self._derive()
        return self._spike_groups

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
            counters, groups, self._error_groups, self._city_groups, self._spike_groups = derive(self)
            self._derived = counters, groups
        return self._derived

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
    # Snapshots: one aggregate's state carried to another process and merged there (``snapshot``)
    # --------------------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Everything this aggregate accumulated, as compact deterministic msgpack
        (``snapshot.snapshot_of``: what it holds, and what it does not)."""
        return snapshot_of(self)

    def merge_snapshot(self, data: bytes) -> None:
        """Add what another aggregate accumulated (its ``snapshot``) to this one
        (``snapshot.merge_into``: what the merge guarantees, and when it raises ValueError)."""
        merge_into(self, data)


def _resume_hour(cell: Cell, hour: int, event_time: str, previous: tuple[int, str, str]) -> None:
    """One event of a prefix back in an hour it left: that hour's cell becomes current again."""
    events, first, last = previous
    cell[0:4] = [hour, events + 1, min(first, event_time), max(last, event_time)]
