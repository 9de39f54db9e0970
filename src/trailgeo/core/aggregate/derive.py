"""The derivation: a run's counters and its groups, worked out from the cells the per-event loop
filled (``accumulate``), once per batch when first asked for.

Per (account, principal, country, method) cell, with all its hours: the most specific counters,
folded into their totals and the organization's; the long-term keys' counters; each group's
evidence; the error-code, error-spike and city groups of the sibling detectors that are on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from trailgeo.core.aggregate.groups import (
    CategoryGroup,
    CategoryKey,
    Evidence,
    EvidenceKey,
    GroupKey,
    HitGroup,
    unpack_ids,
)
from trailgeo.core.clients import client_family
from trailgeo.core.counters import (
    METHOD_PARTITION_PREFIX,
    ORG_CITIES,
    ORG_ERROR_LEVELS,
    ORG_ERRORS,
    ORG_METHODS,
    ORG_PARTITION,
    TOTAL,
    USER_METHODS_PARTITION_PREFIX,
    CounterDelta,
    CounterKey,
    access_key_partition,
    category_sort_key,
    clients_partition,
    country_sort_key,
    error_level,
    error_levels_partition,
    hour_of,
    hours_partition,
    identity_index_partition,
    method_cities_partition,
    method_partition,
    principal_cities_partition,
    principal_partition,
    sensitive_partition,
    session_sign_ins_partition,
    sign_ins_partition,
    user_methods_partition,
)
from trailgeo.core.evidence import is_person
from trailgeo.core.identities import (
    identity_of,
    is_identity_center_user,
    permission_set_of,
    role_of,
    subject_identity,
)
from trailgeo.core.local_time import local_slot, slot_name
from trailgeo.core.records import clip
from trailgeo.core.sensitive import is_sensitive
from trailgeo.core.sign_ins import sign_in_network, sign_in_places

if TYPE_CHECKING:
    from trailgeo.core.aggregate.accumulate import RunAggregate


class Derived(NamedTuple):
    """What the derivation gives: the counters to commit and the groups to score."""

    counters: dict[CounterKey, CounterDelta]
    groups: dict[GroupKey, HitGroup]
    error_groups: dict[CategoryKey, CategoryGroup]
    city_groups: dict[CategoryKey, CategoryGroup]
    spike_groups: dict[CategoryKey, CategoryGroup]


def derive(aggregate: RunAggregate) -> Derived:
    """The run's counters and groups, from its cells: see ``RunAggregate._derive``."""
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
    user_methods = "user_method" in aggregate.detectors
    for (account, principal, country, method), cell in aggregate._cells.items():
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
    _observe_identity_histories(counters, groups)
    _derive_keys_and_evidence(aggregate, counters, groups)
    error_groups = _derive_errors(aggregate, counters, groups) if "error_code" in aggregate.detectors else {}
    city_groups = _derive_cities(aggregate, counters, groups, identities)
    spike_groups = (
        derive_error_levels(aggregate, counters, groups) if "error_spike" in aggregate.detectors else {}
    )
    return Derived(counters, groups, error_groups, city_groups, spike_groups)


def _derive_keys_and_evidence(
    aggregate: RunAggregate, counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]
) -> None:
    """The long-term keys' counters, each group's evidence, and the sign-ins' counters."""
    for (access_key, country, hour), (_, first, last) in aggregate._key_cells.items():
        kp = access_key_partition(clip(access_key, 128) or "")
        for key in ((kp, country_sort_key(country)), (kp, TOTAL)):
            _observe(counters, key, (hour,), first, last)
    families_of: dict[str, str | None] = {}
    for (account, principal, country), seen in evidence_by_group(aggregate._evidence).items():
        group = groups[(clip(account, 64) or "unknown", principal, country)]
        group.add_evidence(seen, unpack_ids(aggregate._event_id_lists[(account, principal, country)][0]))
        _observe_clients(counters, group, seen, families_of)
    _observe_sign_ins(aggregate, counters)


def _observe_sensitive(counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]) -> None:
    """Each subject's sensitive methods (core/sensitive.py's catalogue), in the hours it called them,
    under its ``SM#`` partition and TOTAL, and an Identity Center user's under its permission set's
    in the account too (the people doing the same job): the history the ``new_sensitive_method``
    factor reads."""
    partitions: dict[str, tuple[str, ...]] = {}
    for group in groups.values():
        for method, activity in group.methods.items():
            if not is_sensitive(method):
                continue
            mine = partitions.get(group.principal)
            if mine is None:
                peers = permission_set_of(group.principal)
                mine = partitions[group.principal] = tuple(
                    sensitive_partition(who) for who in (subject_identity(group.principal), peers) if who
                )
            first, last = group.first_event or "", group.last_event or ""
            for partition in mine:
                _observe(counters, (partition, category_sort_key(method)), activity.hours, first, last)
                _observe(counters, (partition, TOTAL), activity.hours, first, last)


def _observe_identity_histories(
    counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]
) -> None:
    """What the evidence factors read of each identity's own history, besides its clients (which
    need the group's evidence): its sensitive methods and, for a person, their local hours."""
    _observe_sensitive(counters, groups)
    _observe_hours(counters, groups)


def _observe_hours(counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]) -> None:
    """Each person's hours of calls as local time where they were (``wd09``: a weekday, 09:00 to
    10:00 there), under the identity's ``HR#`` partition (and its TOTAL): the history the
    ``unusual_hour`` evidence factor reads. Roles are left out: whoever assumes one keeps no hours,
    and automation runs round the clock."""
    for group in groups.values():
        identity = subject_identity(group.principal)
        if not is_person(identity):
            continue
        partition = hours_partition(identity)
        first, last = group.first_event or "", group.last_event or ""
        for hour in group.hours():
            slot = local_slot(hour, group.country)
            if slot is not None:
                _observe(counters, (partition, category_sort_key(slot_name(slot))), (hour,), first, last)
                _observe(counters, (partition, TOTAL), (hour,), first, last)


def _observe_sign_ins(aggregate: RunAggregate, counters: dict[CounterKey, CounterDelta]) -> None:
    """Each person's sign-ins with a phishing-resistant factor (core/sign_ins.py), in the hour they
    were made, under the identity's ``SI#`` partition, one category per network (``JP/AS4713``):
    the history the ``mfa_sign_in`` evidence reads (the counters keep their recent hours). With an
    ASN database, every Identity Center sign-in from an access network, whatever its factor, under
    the user's ``SS#`` partition: ``TOTAL``, its country and its autonomous system (``JP``,
    ``AS4713``), the history the ``session_elsewhere`` evidence reads."""
    asn_of = aggregate.asn_of
    for sign_in in aggregate.sign_in_reader.sign_ins():
        hour, at = hour_of(sign_in.event_time), sign_in.event_time
        if hour is None:
            continue
        if (
            sign_in.phishing_resistant
            and (network := sign_in_network(sign_in.ip, sign_in.country, asn_of)) is not None
        ):
            _observe(
                counters, (sign_ins_partition(sign_in.identity), category_sort_key(network)), (hour,), at, at
            )
        if asn_of is not None and is_identity_center_user(sign_in.identity):
            places = sign_in_places(sign_in.ip, sign_in.country, asn_of)
            partition = session_sign_ins_partition(sign_in.identity)
            for category in (TOTAL, *map(category_sort_key, places)) if places else ():
                _observe(counters, (partition, category), (hour,), at, at)


# Client families counted per identity and group in one run: the agent is the caller's to write,
# and each family is an item of the identity's history (core/clients.py keeps the vocabulary
# closed too).
MAX_CLIENT_FAMILIES = 8


def _observe_clients(
    counters: dict[CounterKey, CounterDelta],
    group: HitGroup,
    seen: Counter[Evidence],
    families_of: dict[str, str | None],
) -> None:
    """The group's client families, each present in every hour of the group, under its identity's
    ``UA#`` partition (and its TOTAL): the history the ``new_client`` evidence factor reads."""
    families: dict[str, None] = {}
    for (_, user_agent, *_rest), _count in seen.most_common():
        if not user_agent:
            continue
        family = families_of.get(user_agent, "")
        if family == "":
            family = families_of[user_agent] = client_family(user_agent)
        if family is not None:
            families[family] = None
            if len(families) >= MAX_CLIENT_FAMILIES:
                break
    if not families:
        return
    partition = clients_partition(subject_identity(group.principal))
    hours = group.hours()
    first, last = group.first_event or "", group.last_event or ""
    for family in families:
        _observe(counters, (partition, category_sort_key(family)), hours, first, last)
    _observe(counters, (partition, TOTAL), hours, first, last)


def evidence_by_group(evidence: dict[EvidenceKey, Any]) -> dict[GroupKey, Counter[Evidence]]:
    """Each group's raw evidence, in the order the run first counted it."""
    by_group: dict[GroupKey, Counter[Evidence]] = {}
    for (account, principal, country, *raw), (events, _, _) in evidence.items():
        group_key = (account, principal, country)
        seen = by_group.get(group_key)
        if seen is None:
            seen = by_group[group_key] = Counter()
        seen[tuple(raw)] = events  # type: ignore[index] # each raw key once per group
    return by_group


def _derive_cities(
    aggregate: RunAggregate,
    counters: dict[CounterKey, CounterDelta],
    groups: dict[GroupKey, HitGroup],
    identities: dict[str, str],
) -> dict[CategoryKey, CategoryGroup]:
    city_groups: dict[CategoryKey, CategoryGroup] = {}
    for (account, principal, city, method, hour), (events, first, last) in aggregate._city_cells.items():
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
    aggregate: RunAggregate, counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]
) -> dict[CategoryKey, CategoryGroup]:
    error_groups: dict[CategoryKey, CategoryGroup] = {}
    for (account, principal, country, code, method, hour), (
        events,
        first,
        last,
    ) in aggregate._error_cells.items():
        for key in ((ORG_ERRORS, category_sort_key(code)), (ORG_ERRORS, TOTAL)):
            _observe(counters, key, (hour,), first, last)
        error_key = (clip(account, 64) or "unknown", principal, code)
        error_group = error_groups.get(error_key)
        if error_group is None:
            error_group = error_groups[error_key] = CategoryGroup(*error_key)
        error_group.add(groups[(error_key[0], principal, country)], method, hour, events)
    return error_groups


def derive_error_levels(
    aggregate: RunAggregate, counters: dict[CounterKey, CounterDelta], groups: dict[GroupKey, HitGroup]
) -> dict[CategoryKey, CategoryGroup]:
    """The error spike's counters and groups.

    Per identity (``subject_identity``: a role's sessions are one identity, their names being the
    caller's choice) and per hour it called in this run: the level of its error count in that hour
    (``counters.error_level``, ``0`` for an hour without errors), present under its ``ES#`` partition
    and the organization's ``OS``. Per identity with errors: one group holding the errors of its
    busiest error hour, valued by that hour's level (what the detector scores)."""
    identities: dict[str, str] = {}
    errors: dict[str, dict[int, int]] = {}  # identity -> hour -> error events in this run
    cells_of: dict[str, list[tuple[tuple[str, str, str, str, str, int], int]]] = {}
    for key, (events, _first, _last) in aggregate._error_cells.items():
        principal, hour = key[1], key[5]
        identity = identities.get(principal)
        if identity is None:
            identity = identities[principal] = subject_identity(principal)
        per_hour = errors.setdefault(identity, {})
        per_hour[hour] = per_hour.get(hour, 0) + events
        cells_of.setdefault(identity, []).append((key, events))
    active: dict[str, tuple[set[int], str, str]] = {}  # identity -> (hours, first, last)
    for group in groups.values():
        identity = identities.get(group.principal)
        if identity is None:
            identity = identities[group.principal] = subject_identity(group.principal)
        hours = set(group.hours())  # the first group's set grows with the identity's others
        first, last = group.first_event or "", group.last_event or ""
        seen = active.get(identity)
        if seen is None:
            active[identity] = (hours, first, last)
        else:
            seen[0].update(hours)
            active[identity] = (seen[0], min(seen[1], first), max(seen[2], last))
    for identity, (hours, first, last) in active.items():
        partition = error_levels_partition(identity)
        per_hour = errors.get(identity, {})
        for hour in hours:
            level = category_sort_key(error_level(per_hour.get(hour, 0)))
            for counter_key in (
                (partition, level),
                (partition, TOTAL),
                (ORG_ERROR_LEVELS, level),
                (ORG_ERROR_LEVELS, TOTAL),
            ):
                _observe(counters, counter_key, (hour,), first, last)
    spike_groups: dict[CategoryKey, CategoryGroup] = {}
    for identity, cells in cells_of.items():
        per_hour = errors[identity]
        peak = max(per_hour, key=lambda h: (per_hour[h], h))
        level = error_level(per_hour[peak])
        peak_cells = [(key, events) for key, events in cells if key[5] == peak]
        accounts: Counter[str] = Counter()
        for key, events in peak_cells:
            accounts[clip(key[0], 64) or "unknown"] += events
        account = min(accounts, key=lambda a: (-accounts[a], a))
        spike = spike_groups[(account, identity, level)] = CategoryGroup(account, identity, level)
        for (cell_account, principal, country, _, method, hour), events in peak_cells:
            spike.add(groups[(clip(cell_account, 64) or "unknown", principal, country)], method, hour, events)
    return spike_groups


def _observe(
    counters: dict[CounterKey, CounterDelta], key: CounterKey, hours: Iterable[int], first: str, last: str
) -> None:
    delta = counters.get(key)
    if delta is None:
        counters[key] = CounterDelta(set(hours), first, last)
    else:
        delta.observe_hours(hours, first, last)


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
