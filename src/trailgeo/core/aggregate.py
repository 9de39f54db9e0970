"""One run's observations, aggregated in memory before anything is written.

Writes to the frequency store grow with the distinct counters a run touches, never with the
number of events. Alongside the counters, each (account, principal, country) seen in the run
keeps the evidence an alert needs: methods, addresses, user agents, access keys, times.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from trailgeo.core.counters import (
    MAX_EVENT_TIME_CHARS,
    ORG_PARTITION,
    TOTAL,
    CounterDelta,
    CounterKey,
    country_sort_key,
    hour_of,
    method_partition,
    principal_partition,
)
from trailgeo.core.records import MAX_FIELD_CHARS, TrailRecord, clip
from trailgeo.core.sources import SourceKind, classify_source

GroupKey = tuple[str, str, str]  # (account, principal, country)

# Evidence lists in an alert are bounded; counts of what was left out are kept.
MAX_DISTINCT_EVIDENCE = 50


def method_of(record: TrailRecord) -> str | None:
    """``eventSource:eventName``; Elastic keys on eventName alone, which merges services."""
    if not record.eventSource or not record.eventName:
        return None
    return f"{clip(record.eventSource, 128)}:{clip(record.eventName, 128)}"


def principal_of(record: TrailRecord) -> str:
    identity = record.userIdentity
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

    def add(self, record: TrailRecord, method: str, hour: int, ip: str, event_time: str) -> None:
        activity = self.methods.get(method)
        if activity is None:
            activity = self.methods[method] = MethodActivity()
        activity.events += 1
        activity.hours.add(hour)
        _bounded_count(self.source_ips, ip)
        if record.userAgent:
            _bounded_count(self.user_agents, clip(record.userAgent) or "")
        identity = record.userIdentity
        if identity is not None:
            self.identity_type = self.identity_type or identity.type
            if identity.accessKeyId:
                _bounded_count(self.access_keys, clip(identity.accessKeyId, 128) or "")
        if record.awsRegion:
            _bounded_count(self.regions, clip(record.awsRegion, 64) or "")
        if record.eventID and len(self.event_ids) < MAX_DISTINCT_EVIDENCE:
            self.event_ids.append(clip(record.eventID, 128) or "")
        if self.first_event is None or event_time < self.first_event:
            self.first_event = event_time
        if self.last_event is None or event_time > self.last_event:
            self.last_event = event_time


def _bounded_count(counter: Counter[str], value: str) -> None:
    if value in counter or len(counter) < MAX_DISTINCT_EVIDENCE:
        counter[value] += 1
    else:
        counter["…other"] += 1


GeoLookup = Callable[[str], str | None]


@dataclass(slots=True)
class RunAggregate:
    """Accumulates records of one batch of files. ``skipped`` counts every record not scored."""

    geolocate: GeoLookup
    counters: dict[CounterKey, CounterDelta] = field(default_factory=dict)
    groups: dict[GroupKey, HitGroup] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    events: int = 0
    geolocated: int = 0
    _sources: dict[str, tuple[SourceKind, str | None, str | None]] = field(default_factory=dict)
    _event_ids: set[str] = field(default_factory=set)
    _hours: dict[str, int | None] = field(default_factory=dict)

    def add_records(self, records: list[TrailRecord], account_hint: str | None = None) -> None:
        for record in records:
            self.add(record, account_hint)

    def add(self, record: TrailRecord, account_hint: str | None = None) -> None:
        self.events += 1
        if record.eventID:
            # The same event delivered twice (two trails into one bucket) is one event.
            if record.eventID in self._event_ids:
                self.skipped["duplicate_event"] += 1
                return
            self._event_ids.add(record.eventID)
        kind, ip, country = self._locate(record.sourceIPAddress)
        if kind is not SourceKind.PUBLIC:
            self.skipped[f"source_{kind.value}"] += 1
            return
        if country is None or ip is None:
            self.skipped["geo_unknown"] += 1
            return
        method = method_of(record)
        if method is None:
            self.skipped["no_method"] += 1
            return
        event_time = record.eventTime
        hour = self._hour(event_time) if event_time else None
        if hour is None or event_time is None:
            self.skipped["bad_event_time"] += 1
            return
        self.geolocated += 1
        if record.userAgent is not None and len(record.userAgent) > MAX_FIELD_CHARS:
            self.skipped["field_truncated"] += 1  # kept, cut to MAX_FIELD_CHARS (not skipped)
        principal = principal_of(record)
        account = record.recipientAccountId or (
            record.userIdentity.accountId if record.userIdentity else None
        )
        account = clip(account or account_hint or "unknown", 64) or "unknown"
        cc = country_sort_key(country)
        for key in (
            (method_partition(method), cc),
            (method_partition(method), TOTAL),
            (principal_partition(principal), cc),
            (principal_partition(principal), TOTAL),
            (ORG_PARTITION, cc),
            (ORG_PARTITION, TOTAL),
        ):
            delta = self.counters.get(key)
            if delta is None:
                delta = self.counters[key] = CounterDelta()
            delta.observe(hour, event_time)
        group_key = (account, principal, country)
        group = self.groups.get(group_key)
        if group is None:
            group = self.groups[group_key] = HitGroup(account, principal, country)
        group.add(record, method, hour, ip, event_time)

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
