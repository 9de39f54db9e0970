"""What a run's aggregate hands on, and the shapes it keeps them in.

Hit groups (everything one principal did from one country in the run) and category groups (under
one city or error code), with their evidence bounded for an alert; how a call's method and
principal are named; the cells and evidence keys the per-event loop (``accumulate``) fills and the
derivation (``derive``) and snapshot (``snapshot``) read; a group's first event ids, packed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trailgeo.core.records import TrailRecord, UserIdentity, clip

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

    def hours(self) -> frozenset[int]:
        """Every hour bucket of the group's calls, all methods together."""
        return frozenset(h for activity in self.methods.values() for h in activity.hours)

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


def _bounded_count(counter: Counter[str], value: str, count: int = 1) -> None:
    if value in counter or len(counter) < MAX_DISTINCT_EVIDENCE:
        counter[value] += count
    else:
        counter[OTHER_MARKER] += count


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


def pack_id(event_id: str) -> str:
    """An event id (clipped) with its length in front: a group's first ids kept as one string
    (measured: 384,004 separate id strings took 40 MB in a 1M-event window)."""
    clipped = clip(event_id, 128) or ""
    return chr(len(clipped)) + clipped


def unpack_ids(packed: str) -> list[str]:
    ids: list[str] = []
    at = 0
    while at < len(packed):
        size = ord(packed[at])
        ids.append(packed[at + 1 : at + 1 + size])
        at += 1 + size
    return ids
