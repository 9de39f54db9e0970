"""One run's observations, aggregated in memory before anything is written.

Writes to the frequency store grow with the distinct counters a run touches, never with the
number of events. Alongside the counters, each (account, principal, country) seen in the run
keeps the evidence an alert needs: methods, addresses, user agents, access keys, times.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trailgeo.core.counters import (
    MAX_EVENT_TIME_CHARS,
    ORG_CITIES,
    ORG_ERRORS,
    ORG_METHODS,
    ORG_PARTITION,
    TOTAL,
    CounterDelta,
    CounterKey,
    access_key_partition,
    category_sort_key,
    country_sort_key,
    hour_of,
    method_cities_partition,
    method_partition,
    principal_cities_partition,
    principal_partition,
    user_methods_partition,
)
from trailgeo.core.records import MAX_FIELD_CHARS, TrailRecord, clip
from trailgeo.core.sources import SourceKind, classify_source

GroupKey = tuple[str, str, str]  # (account, principal, country)

# Evidence lists in an alert are bounded; counts of what was left out are kept under this name.
MAX_DISTINCT_EVIDENCE = 50
OTHER_MARKER = "…other"


def method_key(event_source: str, event_name: str) -> str:
    """``eventSource:eventName``; Elastic keys on eventName alone, which merges services."""
    return f"{clip(event_source, 128)}:{clip(event_name, 128)}"


def method_of(record: TrailRecord) -> str | None:
    if not record.eventSource or not record.eventName:
        return None
    return method_key(record.eventSource, record.eventName)


def principal_of(record: TrailRecord) -> str:
    identity = record.userIdentity
    if identity is None:
        return "unknown"
    if identity.arn:
        return clip(identity.arn, 512) or "unknown"
    if identity.type and identity.principalId:
        return clip(f"{identity.type}:{identity.principalId}", 512) or "unknown"
    return clip(identity.type or "unknown", 512) or "unknown"


_SSO_ROLE = "assumed-role/AWSReservedSSO_"


def identity_of(principal: str) -> str:
    """Whose history a principal's calls belong to.

    An IAM Identity Center user appears as a different role ARN in each account and permission
    set (``arn:aws:sts::<acct>:assumed-role/AWSReservedSSO_<set>_<id>/<user>``), always with
    the user name as the session name: one person, so one history (``sso:<user>``). Every other
    principal is its ARN (or the type and principal id CloudTrail gives instead).
    """
    at = principal.find(_SSO_ROLE)
    if at > 0 and principal.startswith("arn:"):
        _, slash, session = principal[at + len(_SSO_ROLE) :].partition("/")
        if slash and session:
            return f"sso:{session}"
    return principal


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

    def add_cell(self, method: str, hour: int, events: int, first: str, last: str) -> None:
        activity = self.methods.get(method)
        if activity is None:
            activity = self.methods[method] = MethodActivity()
        activity.events += events
        activity.hours.add(hour)
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
            self.identity_type = self.identity_type or identity_type
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
    counters: dict[CounterKey, CounterDelta], key: CounterKey, hour: int, events: int, first: str, last: str
) -> None:
    delta = counters.get(key)
    if delta is None:
        counters[key] = CounterDelta({hour}, events, first, last)
    else:
        delta.observe_cell(hour, events, first, last)


def _bounded_count(counter: Counter[str], value: str, count: int = 1) -> None:
    if value in counter or len(counter) < MAX_DISTINCT_EVIDENCE:
        counter[value] += count
    else:
        counter[OTHER_MARKER] += count


GeoLookup = Callable[[str], str | None]
# The detectors one pass feeds (docs/scoring.md); "country" always runs.
DETECTORS = frozenset({"country", "city", "user_method", "error_code"})
DEFAULT_DETECTORS = frozenset({"country"})
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
        _add_activity(self.methods, method, hour, events)
        if all(existing is not source for existing in self.sources):
            self.sources.append(source)


def _add_activity(methods: dict[str, MethodActivity], method: str, hour: int, events: int) -> None:
    activity = methods.get(method)
    if activity is None:
        activity = methods[method] = MethodActivity()
    activity.events += events
    activity.hours.add(hour)


# (account, principal, country, method, hour): the one key the per-event loop updates.
CellKey = tuple[str, str, str, str, int]
# (source ip, userAgent, accessKeyId, awsRegion, identity type): raw evidence, bounded later.
Evidence = tuple[str, str | None, str | None, str | None, str | None]


@dataclass(slots=True)
class _GroupEvidence:
    seen: Counter[Evidence] = field(default_factory=Counter)
    event_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RunAggregate:
    """Accumulates records of one batch of files. ``skipped`` counts every record not scored.

    The per-event loop does one dictionary update per (account, principal, country, method,
    hour) cell and one per distinct piece of evidence; counters and hit groups are derived
    from those once, when first asked for (measured: most of the pipeline's time was the
    six counter updates and the evidence bookkeeping done per event).
    """

    geolocate: GeoLookup
    detectors: frozenset[str] = DEFAULT_DETECTORS
    locate_city: GeoLookup | None = None  # "CC/City" of an address: the city detector only
    skipped: Counter[str] = field(default_factory=Counter)
    events: int = 0
    geolocated: int = 0
    _cells: dict[CellKey, list[Any]] = field(default_factory=dict)  # [events, first, last]
    # (account, principal, country, error code, method, hour): the rare-error-code detector only
    _error_cells: dict[tuple[str, str, str, str, str, int], list[Any]] = field(default_factory=dict)
    _key_cells: dict[tuple[str, str, int], list[Any]] = field(default_factory=dict)  # long-term keys
    _evidence: dict[GroupKey, _GroupEvidence] = field(default_factory=dict)
    _sources: dict[str, tuple[SourceKind, str | None, str | None]] = field(default_factory=dict)
    _event_ids: set[int] = field(default_factory=set)
    _hours: dict[str, int | None] = field(default_factory=dict)
    _methods: dict[tuple[str, str], str] = field(default_factory=dict)
    _principals: dict[tuple[str | None, str | None, str | None], str] = field(default_factory=dict)
    _derived: tuple[dict[CounterKey, CounterDelta], dict[GroupKey, HitGroup]] | None = None
    _error_groups: dict[CategoryKey, CategoryGroup] = field(default_factory=dict)
    _count_errors: bool = False
    # (account, principal, "CC/City", method, hour): the city detector only
    _city_cells: dict[tuple[str, str, str, str, int], list[Any]] = field(default_factory=dict)
    _city_groups: dict[CategoryKey, CategoryGroup] = field(default_factory=dict)
    _city_of: dict[str, str] = field(default_factory=dict)

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

    def add_records(self, records: list[TrailRecord], account_hint: str | None = None) -> None:
        for record in records:
            self.add(record, account_hint)

    def add(self, record: TrailRecord, account_hint: str | None = None) -> None:
        self.events += 1
        event_id = record.eventID
        if event_id:
            # The same event delivered twice (two trails into one bucket) is one event. A 64-bit
            # digest instead of the 36-character id keeps the set a third of the size.
            digest = hash(event_id)
            if digest in self._event_ids:
                self.skipped["duplicate_event"] += 1
                return
            self._event_ids.add(digest)
        kind, ip, country = self._locate(record.sourceIPAddress)
        if country is None or ip is None:
            self.skipped["geo_unknown" if kind is SourceKind.PUBLIC else f"source_{kind.value}"] += 1
            return
        source, name = record.eventSource, record.eventName
        if not source or not name:
            self.skipped["no_method"] += 1
            return
        method = self._methods.get((source, name))
        if method is None:
            method = self._methods[(source, name)] = method_key(source, name)
        event_time = record.eventTime
        hour = self._hour(event_time) if event_time else None
        if hour is None or event_time is None:
            self.skipped["bad_event_time"] += 1
            return
        self.geolocated += 1
        principal, account_id, access_key, identity_type = self._identity(record)
        account = record.recipientAccountId or account_id or account_hint or "unknown"
        user_agent = record.userAgent
        if user_agent is not None and len(user_agent) > MAX_FIELD_CHARS:
            self.skipped["field_truncated"] += 1  # kept, cut to MAX_FIELD_CHARS (not skipped)
        self._derived = None
        cell_key = (account, principal, country, method, hour)
        cell = self._cells.get(cell_key)
        if cell is None:
            self._cells[cell_key] = [1, event_time, event_time]
        else:
            cell[0] += 1
            if event_time < cell[1]:
                cell[1] = event_time
            elif event_time > cell[2]:
                cell[2] = event_time
        if access_key is not None and access_key[:4] == "AKIA":  # counters.is_long_term_key, inlined
            self._count_key(access_key, country, hour, event_time)
        if record.errorCode is not None and self._count_errors:
            self._count_error(account, principal, country, record.errorCode, method, hour, event_time)
        if self.locate_city is not None:
            self._count_city(account, principal, ip, method, hour, event_time)
        group_key = (account, principal, country)
        evidence = self._evidence.get(group_key)
        if evidence is None:
            evidence = self._evidence[group_key] = _GroupEvidence()
        evidence.seen[(ip, user_agent, access_key, record.awsRegion, identity_type)] += 1
        if event_id and len(evidence.event_ids) < MAX_DISTINCT_EVIDENCE:
            evidence.event_ids.append(clip(event_id, 128) or "")

    def _count_error(
        self, account: str, principal: str, country: str, code: str, method: str, hour: int, event_time: str
    ) -> None:
        key = (account, principal, country, clip(code, 128) or "", method, hour)
        _tally(self._error_cells, key, event_time)

    def _count_city(
        self, account: str, principal: str, ip: str, method: str, hour: int, event_time: str
    ) -> None:
        city = self._city_of.get(ip)
        if city is None:
            city = self._city_of[ip] = (self.locate_city(ip) if self.locate_city else None) or ""
        if not city:
            self.skipped["city_unknown"] += 1  # counted for the country detector all the same
            return
        key = (account, principal, city, method, hour)
        _tally(self._city_cells, key, event_time)

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

    def _count_key(self, access_key: str, country: str, hour: int, event_time: str) -> None:
        _tally(self._key_cells, (access_key, country, hour), event_time)

    def _identity(self, record: TrailRecord) -> tuple[str, str | None, str | None, str | None]:
        """(principal, account id, access key id, identity type), the principal cached."""
        identity = record.userIdentity
        if identity is None:
            return "unknown", None, None, None
        principal_key = (identity.arn, identity.type, identity.principalId)
        principal = self._principals.get(principal_key)
        if principal is None:
            principal = self._principals[principal_key] = principal_of(record)
        return principal, identity.accountId, identity.accessKeyId, identity.type

    @property
    def counters(self) -> dict[CounterKey, CounterDelta]:
        return self._derive()[0]

    @property
    def groups(self) -> dict[GroupKey, HitGroup]:
        return self._derive()[1]

    def _derive(self) -> tuple[dict[CounterKey, CounterDelta], dict[GroupKey, HitGroup]]:
        if self._derived is not None:
            return self._derived
        counters: dict[CounterKey, CounterDelta] = {}
        groups: dict[GroupKey, HitGroup] = {}
        get = counters.get
        identities: dict[str, str] = {}
        user_methods = "user_method" in self.detectors
        for (account, principal, country, method, hour), (events, first, last) in self._cells.items():
            identity = identities.get(principal)
            if identity is None:
                identity = identities[principal] = identity_of(principal)
            cc, mp, pp = country_sort_key(country), method_partition(method), principal_partition(identity)
            for key in (
                (mp, cc),
                (mp, TOTAL),
                (pp, cc),
                (pp, TOTAL),
                (ORG_PARTITION, cc),
                (ORG_PARTITION, TOTAL),
            ):
                delta = get(key)
                if delta is None:
                    counters[key] = CounterDelta({hour}, events, first, last)
                else:  # inlined rather than a method call: this loop runs six times per cell
                    delta.hours.add(hour)
                    delta.events += events
                    if first < delta.first_seen:  # noqa: PLR1730 - cheaper than min() here
                        delta.first_seen = first
                    if last > delta.last_seen:  # noqa: PLR1730
                        delta.last_seen = last
            if user_methods:
                up = user_methods_partition(identity)
                for key in ((up, category_sort_key(method)), (up, TOTAL), (ORG_METHODS, TOTAL)):
                    _observe(counters, key, hour, events, first, last)
            group_key = (clip(account, 64) or "unknown", principal, country)
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = HitGroup(*group_key)
            group.add_cell(method, hour, events, first, last)
        for (access_key, country, hour), (events, first, last) in self._key_cells.items():
            kp = access_key_partition(clip(access_key, 128) or "")
            for key in ((kp, country_sort_key(country)), (kp, TOTAL)):
                _observe(counters, key, hour, events, first, last)
        for (account, principal, country), evidence in self._evidence.items():
            group = groups[(clip(account, 64) or "unknown", principal, country)]
            group.add_evidence(evidence.seen, evidence.event_ids)
        self._error_groups = self._derive_errors(counters, groups)
        self._city_groups = self._derive_cities(counters, groups, identities)
        self._derived = (counters, groups)
        return self._derived

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
                _observe(counters, (partition, at), hour, events, first, last)
                _observe(counters, (partition, TOTAL), hour, events, first, last)
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
                _observe(counters, key, hour, events, first, last)
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

    def _locate(self, source: str | None) -> tuple[SourceKind, str | None, str | None]:
        """Classify and geolocate each distinct source once per run."""
        cache_key = source or ""
        cached = self._sources.get(cache_key)
        if cached is None:
            kind, ip = classify_source(source)
            country = self.geolocate(ip) if kind is SourceKind.PUBLIC and ip is not None else None
            cached = self._sources[cache_key] = (kind, ip, country)
        return cached
