"""Alerting: a batch's groups scored against the history before it, each alert decided against its
subject's suppression window and quarantine, correlated, linked into incidents by source network,
rolled up in a flood, and written to the outbox (before anything is counted)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from trailgeo.app.detect.context import Dependencies, RunOptions, RunReport
from trailgeo.app.detect.incidents import linked
from trailgeo.core.aggregate import CategoryGroup, HitGroup, RunAggregate
from trailgeo.core.alert_builder import build_alert, build_sibling_alert, with_correlation, with_rollup
from trailgeo.core.alerts import MAX_LIST, Alert, Evidence, at_least, is_country, more_severe, pages_again
from trailgeo.core.counters import (
    EMPTY,
    ORG_EGRESS,
    ORG_EGRESS_HOURS,
    PRESENCE_PARTITION_PREFIX,
    TOTAL,
    CounterDelta,
    CounterKey,
    access_key_partition,
    category_sort_key,
    clients_partition,
    country_sort_key,
    hours_partition,
    is_long_term_key,
    presence_partition,
    principal_partition,
    sensitive_partition,
    session_sign_ins_partition,
    sign_ins_partition,
)
from trailgeo.core.detectors import COUNTRY, REGISTRY
from trailgeo.core.evidence import (
    IMPOSSIBLE_TRAVEL,
    MFA_SIGN_IN_REASON,
    MIN_CLIENT_HISTORY_HOURS,
    MIN_EGRESS_COLLEAGUES,
    NEW_CLIENT,
    ORG_EGRESS_REASON,
    SESSION_ELSEWHERE,
    UNUSUAL_HOUR,
    client_evidence,
    concurrent_evidence,
    held_at_egress,
    held_out_clients,
    held_out_slots,
    held_signed_in,
    hour_evidence,
    is_person,
    learned_egress,
    networks_of,
    new_sensitive_methods,
    remembered_egress,
    sensitive_evidence,
    session_evidence,
    sign_in_evidence,
    travel_evidence,
    with_evidence,
)
from trailgeo.core.evidence import REGISTRY as EVIDENCE_FACTORS
from trailgeo.core.geography import country_distances
from trailgeo.core.identities import (
    identity_digest,
    identity_of,
    is_identity_center_user,
    permission_set_of,
    role_of,
    subject_identity,
)
from trailgeo.core.incidents import Assignment
from trailgeo.core.local_time import local_slot, slot_name
from trailgeo.core.networks import lookup_address, public_address
from trailgeo.core.scoring import (
    GroupScore,
    History,
    MethodViews,
    SiblingScore,
    score_cities,
    score_error_codes,
    score_error_spike,
    score_group,
    score_user_methods,
)
from trailgeo.core.sign_ins import sign_in_network, sign_in_places
from trailgeo.core.tuning import Tuning
from trailgeo.observability import logger
from trailgeo.ports import IncidentRecord, Suppression


def subject_of(principal: str, detector: str, value: str = "") -> str:
    """What one suppression window covers: a role, person or principal and a country
    (``identity|CC``), a city or an error code (``identity|city:CC/City``), or a person alone for
    unusual commands (``identity|user_method``). An Identity Center user alerting in two accounts
    is one incident; so are a role's sessions from one country (an attacker names sessions at
    will: one alert per session would let them bury the first under their own flood)."""
    if detector == COUNTRY.name:
        return f"{subject_identity(principal)}|{value}"
    identity = identity_of(principal)
    return f"{identity}|{detector}:{value}" if value else f"{identity}|{detector}"


# The sibling detectors' subjects: ``identity|<detector>`` or ``identity|<detector>:<value>``.
_SIBLING_SUBJECTS = tuple(name for name in REGISTRY if name != COUNTRY.name)


def country_subject(subject: str) -> tuple[str, str] | None:
    """(identity, country) of a country detector's subject, None for a sibling detector's."""
    identity, _, value = subject.rpartition("|")
    if not identity or not value or value.startswith(_SIBLING_SUBJECTS):
        return None
    return identity, value


def quarantined_identities(
    records: Mapping[str, Suppression], tuning: Tuning, on: date
) -> dict[str, frozenset[str]]:
    """Per country, the identity digests under quarantine (alerted within the quarantine), less
    those the tuning now allowlists for that country: allowlisting ends a quarantine."""
    by_country: dict[str, set[str]] = {}
    for subject in records:
        parsed = country_subject(subject)
        if parsed is None:
            continue
        identity, country = parsed
        # A role's subject stands for its sessions: a pattern ``.../role/*`` allows them.
        principal = f"{identity}/" if role_of(f"{identity}/session") == identity else identity
        fields = principal.split(":")
        account = fields[4] if len(fields) > 4 else ""  # arn:partition:service:region:account:...
        if tuning.country_verdict(account=account, principal=principal, country=country, on=on):
            continue
        by_country.setdefault(country, set()).add(identity_digest(identity))
    return {country: frozenset(digests) for country, digests in by_country.items()}


def alert_subject(alert: Alert) -> str:
    values = {
        "country": alert.country,
        "city": f"{alert.country}/{alert.source.geo.city_name}",
        "error_code": ",".join(sorted(f.value for f in alert.findings)),
    }
    return subject_of(alert.principal, alert.detector, values.get(alert.detector, ""))


def score_and_raise(
    aggregate: RunAggregate,
    history: History,
    run_id: str,
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
) -> None:
    groups = list(aggregate.groups.values())
    if not groups:
        return
    subjects = {subject_of(g.principal, "country", g.country) for g in groups}
    if "user_method" in options.detectors:
        subjects |= {subject_of(g.principal, "user_method") for g in groups}
    errors = list(aggregate.error_groups.values())
    subjects |= {subject_of(g.principal, "error_code", g.value) for g in errors}
    cities = list(aggregate.city_groups.values())
    subjects |= {subject_of(g.principal, "city", g.value) for g in cities}
    spikes = list(aggregate.spike_groups.values())
    subjects |= {subject_of(g.principal, "error_spike") for g in spikes}
    # One read of every subject alerted within the longer window: this run's subjects' last alerts
    # (suppression, quarantined hours) and the quarantine in force in each country. A record older
    # than both makes no difference but to the compare-and-set, which reads it again when it fails.
    alerted = deps.outbox.alerted_since(scheduled_at - max(options.quarantine, options.suppress_for))
    recent = {s: alerted[s] for s in subjects if s in alerted}
    now_hour = int(scheduled_at.timestamp()) // 3600
    tuning = options.tuning
    held_by_country = quarantined_identities(
        {s: r for s, r in alerted.items() if r.at >= scheduled_at - options.quarantine},
        tuning,
        scheduled_at.date(),
    )
    _load_egress_hours(groups, history, deps)
    # Hours to add to alerted subjects' quarantine, one write per subject at the end of the run
    # (a role's many sessions are one subject).
    extensions: dict[str, set[int]] = {}
    candidates: list[tuple[Alert, frozenset[int]]] = []
    # Evidence found from the group and its history, by alert id (the networks come later), and
    # what of it is news for its identity (a re-alert needs some).
    found: dict[str, list[Evidence]] = {}
    fresh: dict[str, News] = {}
    # This run's calls from countries usual for their identities: the organization's own egress
    # (core/evidence.SHARED_EGRESS) and a person's other country at the same time (CONCURRENT_USE).
    usual = UsualCalls()
    method_views: MethodViews = {}  # one run, one history: each method summarised once
    vouched_shares: dict[str, float] = {}  # and each country's identities counted once
    for group in groups:
        subject = subject_of(group.principal, "country", group.country)
        last = recent.get(subject)
        active = last is not None and scheduled_at - last.at < options.quarantine
        held = last.hours if last is not None and active else frozenset()
        scored = score_group(
            group,
            history,
            options.policy,
            now_hour,
            quarantined_hours=held,
            quarantined_identities=held_by_country.get(group.country, frozenset()),
            method_policy=tuning.method_policy if tuning.methods else None,
            method_views=method_views,
            vouched_shares=vouched_shares,
        )
        hours = group.hours()
        alert = build_alert(scored, options.policy.threshold, scheduled_at, run_id)
        if alert is None:
            if active:
                # Below the threshold, still the alerted subject: its hours stay out of the history.
                extensions.setdefault(subject, set()).update(hours)
            else:
                usual.add(scored, hours)
            continue
        if _allowlisted(tuning, group, scheduled_at, report):
            continue
        candidates.append((alert, hours))
        found[alert.alert_id], fresh[alert.alert_id] = _history_evidence(alert, group, history, held)
    usual.access_hours, usual.sign_in_hours = _presence(aggregate, history, usual, candidates, deps)
    candidates.extend(
        _beside_rarity(
            aggregate,
            history,
            candidates,
            usual,
            (scheduled_at, run_id),
            deps,
            options,
            report,
            (found, fresh),
        )
    )
    siblings = _sibling_scores(groups, errors, cities, history, now_hour, options, spikes)
    candidates.extend(_sibling_candidates(siblings, scheduled_at, run_id, options, report))
    egress, learned = _org_egress(aggregate, history, usual.by_address, candidates, scheduled_at, deps)
    for alert_id, signed_in in _signed_in_there(aggregate, history, candidates, deps).items():
        found.setdefault(alert_id, []).append(signed_in)
    evidenced = _evidenced(candidates, found, usual, (egress, learned), deps, report, options, aggregate)
    _raise_alerts(_correlated(evidenced), recent, scheduled_at, deps, options, report, extensions, fresh)
    for subject, extra in sorted(extensions.items()):
        # Under the subject's last alert as it stands now (one this run raised carries the hours it
        # alerted with; these are the others).
        deps.outbox.extend_quarantine(subject, recent[subject].alert_id, extra)


@dataclass(frozen=True, slots=True)
class News:
    """What of an alert is news for its identity, which a re-alert or a repeat needs: its sensitive
    methods the identity never called, and whether its new client (if any) is one the subject's own
    alerted calls ran (``client_retold``: the team was told of it with that alert)."""

    sensitive_methods: frozenset[str]
    client_retold: bool = False


def _history_evidence(
    alert: Alert, group: HitGroup, history: History, held: frozenset[int] = frozenset()
) -> tuple[list[Evidence], News]:
    """The factors found against the subject's own history before this run (a client it never ran,
    a sensitive method it never called, an hour it never works), and what of them is news for it
    (``News``). ``held``: the subject's quarantined hours (since its last alert), whose calls taught
    the client and hour histories as the country's counters: they are taken out, so that a thief's
    probe does not make their client or hours the victim's."""
    identity = subject_identity(group.principal)
    clients = history.get(clients_partition(identity), {}).get(TOTAL)
    own = history.get(principal_partition(identity), {}).get(TOTAL)
    sensitive = history.get(sensitive_partition(identity), {}).get(TOTAL)
    known, hours = (sensitive.countries if sensitive else {}), (own.buckets if own else 0)
    permission_set = permission_set_of(group.principal)
    team = history.get(sensitive_partition(permission_set), {}).get(TOTAL) if permission_set else None
    peers = team.countries if team else {}
    news = new_sensitive_methods(alert.sensitive_methods, known, hours, peers)
    families, client_hours = (clients.countries, clients.buckets) if clients else ({}, 0)
    client = client_evidence(group.user_agents, *held_out_clients(families, client_hours, len(held)))
    retold = client is not None and client_evidence(group.user_agents, families, client_hours) is None
    local_hours = history.get(hours_partition(identity), {}).get(TOTAL) if is_person(identity) else None
    held_slots = (slot_name(s) for h in held if (s := local_slot(h, group.country)) is not None)
    found = (
        client,
        sensitive_evidence(news, hours),
        hour_evidence(
            _local_slots(group), *held_out_slots(local_hours.countries, local_hours.buckets, held_slots)
        )
        if local_hours
        else None,
    )
    return [e for e in found if e is not None], News(frozenset(news), retold)


def _local_slots(group: HitGroup) -> set[tuple[str, int]]:
    """The group's hours as local time of its country (core/local_time.py)."""
    return {slot for h in group.hours() if (slot := local_slot(h, group.country)) is not None}


def _org_egress(
    aggregate: RunAggregate,
    history: History,
    usual_from: Mapping[str, set[str]],
    candidates: list[tuple[Alert, frozenset[int]]],
    scheduled_at: datetime,
    deps: Dependencies,
) -> tuple[frozenset[str], frozenset[str]]:
    """The organization's own egress on hosting addresses, as far as this run knows it, among the
    alerts' addresses: those colleagues for whom their country is usual shared within
    ``EGRESS_MEMORY`` (the ``OX`` counters), and of them the learned egress (``learned_egress``:
    shared for long enough). This run's shared hosting addresses are recorded (their counters join
    the batch's, committed with it): a VPN gateway used by two colleagues at nine stays recognised
    when one person uses it alone at night."""
    if not deps.geo.has_asn:
        return frozenset(), frozenset()
    shared = {ip for ip, identities in usual_from.items() if len(identities) >= MIN_EGRESS_COLLEAGUES}
    alerted = {ip for alert, _ in candidates for ip in alert.source.ip[:MAX_LIST]}
    if not shared and not alerted:
        return frozenset(), frozenset()
    keys = [(ORG_EGRESS, category_sort_key(ip)) for ip in sorted(shared | alerted)]
    known = deps.store.load(keys).get(ORG_EGRESS, {})
    history.setdefault(ORG_EGRESS, {}).update(known)  # the commit compares against what it read
    states = {ip: state for ip in alerted if (state := known.get(category_sort_key(ip))) is not None}
    recorded = {ip for ip, state in states.items() if remembered_egress(state.last_seen, scheduled_at)}
    learned = {
        ip
        for ip, state in states.items()
        if learned_egress(state.buckets, state.first_seen, state.last_seen, scheduled_at)
    }
    hour = int(scheduled_at.timestamp()) // 3600
    at = scheduled_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    for ip in sorted(shared):
        if _network_kind(ip, deps) == "hosting":
            aggregate.counters[(ORG_EGRESS, category_sort_key(ip))] = CounterDelta({hour}, at, at)
    return frozenset(recorded), frozenset(learned)


@dataclass(slots=True)
class UsualCalls:
    """A run's calls from countries usual for their identities (groups that raised no alert and
    are not quarantined): per address, the identities (the organization's egress); per person, the
    hours and addresses of each such country (a second country at the same time)."""

    by_address: dict[str, set[str]] = field(default_factory=dict)
    # per person and usual country: the hours, and each group's addresses (read only for a person
    # with an alert or a new country: most have neither)
    by_person: dict[str, dict[str, tuple[set[int], list[Counter[str]]]]] = field(default_factory=dict)
    # A person's groups under the threshold in a country new to them (with a day of history): an
    # alert when the same person called from a usual country at the same time (``_two_countries``).
    new_to_person: list[tuple[GroupScore, frozenset[int]]] = field(default_factory=list)
    # per person and usual country: the hours of their calls from access networks, this run's and
    # the runs' before (``PA#``), for the persons of the run's alerts and of ``new_to_person``
    # (``_presence``)
    access_hours: dict[str, dict[str, set[int]]] = field(default_factory=dict)
    # per Identity Center user of those and country they are usual in: the hours of their sign-ins
    # from access networks there, this run's and the runs' before (``SS#``: impossible travel)
    sign_in_hours: dict[str, dict[str, set[int]]] = field(default_factory=dict)

    def add(self, scored: GroupScore, hours: frozenset[int]) -> None:
        """``scored`` raised no alert (and its subject is not quarantined). A person's group in a
        country new to them is neither the organization's egress nor their usual country."""
        group = scored.group
        identity = subject_identity(group.principal)
        person = is_person(identity) and is_country(group.country)
        if person and scored.principal_country_buckets == 0:
            if scored.principal_buckets >= MIN_CLIENT_HISTORY_HOURS:
                self.new_to_person.append((scored, hours))
            return
        for ip in group.source_ips:
            self.by_address.setdefault(ip, set()).add(identity)
        if person:
            at, addresses = self.by_person.setdefault(identity, {}).setdefault(group.country, (set(), []))
            at.update(hours)
            addresses.append(group.source_ips)


def _allowlisted(tuning: Tuning, group: HitGroup, scheduled_at: datetime, report: RunReport) -> bool:
    """Whether the tuning holds ``group``'s alert back: counted and logged, never silent (the
    tuning said so, the run says it used it)."""
    verdict = tuning.group_verdict(
        account=group.account,
        principal=group.principal,
        country=group.country,
        source_ips=group.source_ips,
        user_agents=group.user_agents,
        on=scheduled_at.date(),
    )
    if verdict is None:
        return False
    report.alerts_allowlisted[verdict] += 1
    logger.info("alert allowlisted", verdict=verdict, principal=group.principal, country=group.country)
    return True


def _beside_rarity(
    aggregate: RunAggregate,
    history: History,
    candidates: Sequence[tuple[Alert, frozenset[int]]],
    usual: UsualCalls,
    run: tuple[datetime, str],
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    evidence: tuple[dict[str, list[Evidence]], dict[str, News]],
) -> list[tuple[Alert, frozenset[int]]]:
    """The session-elsewhere factor of the ``candidates`` and of a person's groups under the
    threshold in a country new to them, into ``evidence``'s found; those groups' alerts admitted
    for it or for concurrent use (``_admitted_below``)."""
    scheduled_at, run_id = run
    below = [
        (alert, hours, scored.group)
        for scored, hours in usual.new_to_person
        if (alert := build_alert(scored, options.policy.threshold, scheduled_at, run_id, below=True))
    ]
    elsewhere = (
        _sessions_elsewhere(aggregate, history, [*candidates, *((a, h) for a, h, _ in below)], deps)
        if SESSION_ELSEWHERE.name in options.factors
        else {}
    )
    admitted = _admitted_below(
        below, (usual, elsewhere), history, scheduled_at, deps, options, report, evidence
    )
    for alert_id, session in elsewhere.items():
        evidence[0].setdefault(alert_id, []).append(session)
    return admitted


def _admitted_below(
    below: Sequence[tuple[Alert, frozenset[int], HitGroup]],
    beside: tuple[UsualCalls, Mapping[str, Evidence]],
    history: History,
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    evidence: tuple[dict[str, list[Evidence]], dict[str, News]],
) -> list[tuple[Alert, frozenset[int]]]:
    """Alerts for a person's groups under the threshold in a country new to them (``below``) while
    they called from a usual country within the hour (core/evidence.CONCURRENT_USE) or were too far
    away to have travelled there (core/evidence.IMPOSSIBLE_TRAVEL), or their session began elsewhere
    (``elsewhere``: core/evidence.SESSION_ELSEWHERE): the location's rarity alone would not alert
    (a colleague's country), any of these does. Their history's evidence goes into ``evidence``
    (found, fresh), as the other alerts'."""
    found, fresh = evidence
    usual, elsewhere = beside
    admitted = []
    for alert, hours, group in below:
        if alert.alert_id not in elsewhere and not _two_places(alert, hours, usual, deps, options):
            continue
        if _allowlisted(options.tuning, group, scheduled_at, report):
            continue
        admitted.append((alert, hours))
        found[alert.alert_id], fresh[alert.alert_id] = _history_evidence(alert, group, history)
    return admitted


def _concurrent(alert: Alert, hours: frozenset[int], usual: UsualCalls, deps: Dependencies) -> list[Evidence]:
    """The concurrent-use factor for a country alert of a person (core/evidence.concurrent_evidence):
    their calls from access networks in their usual countries, this run's and the runs' before
    (``usual.access_hours``); only with an ASN database, to leave the hosting addresses out on both
    sides. The alert's own country is no second country (a person's other role there)."""
    present = usual.access_hours.get(subject_identity(alert.principal), {})
    if not present or alert.detector != COUNTRY.name or not _any_access(alert.source.ip[:MAX_LIST], deps):
        return []
    found = concurrent_evidence(hours, {cc: at for cc, at in present.items() if cc != alert.country})
    return [found] if found is not None else []


def _two_places(
    alert: Alert, hours: frozenset[int], usual: UsualCalls, deps: Dependencies, options: RunOptions
) -> list[Evidence]:
    """The concurrent-use factor, else the impossible-travel one (the same fact, two countries at
    once, counted once)."""
    concurrent = _concurrent(alert, hours, usual, deps)
    return concurrent or _impossible_travel(alert, hours, usual, deps, options)


def _impossible_travel(
    alert: Alert, hours: frozenset[int], usual: UsualCalls, deps: Dependencies, options: RunOptions
) -> list[Evidence]:
    """The impossible-travel factor for a country alert of a person (core/evidence.travel_evidence):
    their calls from access networks in their usual countries and their Identity Center sign-ins
    from access networks there, this run's and the runs' before (``usual``); only with an ASN
    database, to leave the hosting addresses out on both sides."""
    identity = subject_identity(alert.principal)
    whereabouts = {
        "called": usual.access_hours.get(identity, {}),
        "signed in": usual.sign_in_hours.get(identity, {}),
    }
    if (
        IMPOSSIBLE_TRAVEL.name not in options.factors
        or not any(whereabouts.values())
        or alert.detector != COUNTRY.name
        or not _any_access(alert.source.ip[:MAX_LIST], deps)
    ):
        return []
    found = travel_evidence(alert.country, hours, whereabouts, country_distances().km)
    return [found] if found is not None else []


def _any_access(addresses: Iterable[str], deps: Dependencies) -> bool:
    return any(_network_kind(address, deps) == "access" for address in addresses)


def _presence(
    aggregate: RunAggregate,
    history: History,
    usual: UsualCalls,
    candidates: Sequence[tuple[Alert, frozenset[int]]],
    deps: Dependencies,
) -> tuple[dict[str, dict[str, set[int]]], dict[str, dict[str, set[int]]]]:
    """This run's calls of each person from access networks in countries usual for them, recorded
    (``PA#``: the counters' recent hours); and, for the persons of the country alerts ``candidates``
    and of the groups under the threshold in a country new to them, those hours with what the runs
    before recorded, by identity and country: the concurrent-use and impossible-travel factors
    whichever run read the other country's calls; with, for the Identity Center users among them,
    the hours of their sign-ins from access networks in those countries (``SS#``), this run's and
    the runs' before. One batch read, which also gives the writes their versions. Only with an ASN
    database, like the factors."""
    if not deps.geo.has_asn:
        return {}, {}
    written = {
        (presence_partition(identity), country_sort_key(country)): at
        for identity, countries in usual.by_person.items()
        for country, (at, groups) in countries.items()
        if any(_any_access((ip for ip, _ in a.most_common(MAX_LIST)), deps) for a in groups)
    }
    persons = {subject_identity(alert.principal) for alert, _ in candidates if alert.detector == COUNTRY.name}
    persons.update(subject_identity(scored.group.principal) for scored, _ in usual.new_to_person)
    countries = {
        identity: {*_known_countries(history, identity), *usual.by_person.get(identity, {})}
        for identity in persons
        if is_person(identity)
    }
    wanted = {
        (presence_partition(identity), country_sort_key(country))
        for identity, theirs in countries.items()
        for country in theirs
    }
    signed = {
        (session_sign_ins_partition(identity), category_sort_key(country))
        for identity, theirs in countries.items()
        if is_identity_center_user(identity)
        for country in theirs
    }
    unread = written.keys() | wanted | {key for key in signed if key not in aggregate.counters}
    stored = deps.store.load(unread) if unread else {}
    for partition, states in stored.items():
        history.setdefault(partition, {}).update(states)
    for key, at in written.items():
        aggregate.counters[key] = CounterDelta(set(at), _hour_stamp(min(at)), _hour_stamp(max(at), 3599))
    # The history now holds each counter as it was before the run (the batch's, or just read)
    return (
        _hours_by_identity(aggregate, history, wanted, PRESENCE_PARTITION_PREFIX),
        _hours_by_identity(aggregate, history, signed, session_sign_ins_partition("")),
    )


def _known_countries(history: History, identity: str) -> list[str]:
    """The countries of a person's history (their ``P#`` total's copy of its countries)."""
    total = history.get(principal_partition(identity), {}).get(TOTAL, EMPTY)
    return [cc for cc, (buckets, _) in total.countries.items() if buckets > 0 and is_country(cc)]


def _hour_stamp(hour: int, seconds: int = 0) -> str:
    return datetime.fromtimestamp(hour * 3600 + seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local_time_applies(alert: Alert, deps: Dependencies) -> bool:
    """Whether the local time where the alert's calls came from is the caller's: not when one of its
    addresses is a hosting provider's (a VPN gateway, a cloud instance: the caller is anywhere)."""
    return not any(_network_kind(ip, deps) == "hosting" for ip in alert.source.ip[:MAX_LIST])


def _network_kind(address: str, deps: Dependencies) -> str | None:
    """``hosting`` for a public address in a hosting or cloud provider's network, ``access`` for any
    other public address (a consumer or business line, or one the ASN database lacks), None for
    what is no public address."""
    found = public_address(address, deps.geo.asn)
    if found is None:
        return None
    return "access" if found.access else "hosting"


def _evidenced(
    candidates: list[tuple[Alert, frozenset[int]]],
    found: Mapping[str, list[Evidence]],
    usual: UsualCalls,
    egress: tuple[frozenset[str], frozenset[str]],
    deps: Dependencies,
    report: RunReport,
    options: RunOptions,
    aggregate: RunAggregate,
) -> list[tuple[Alert, frozenset[int]]]:
    """The candidates with their networks and evidence (``found``: from the history; a second
    country at the same time, from ``usual``), without the country alerts held back at the
    organization's learned egress (``egress``: recorded and learned addresses;
    core/evidence.held_at_egress), those counted by reason and logged, never silent. A held
    alert's country stays out of its identity's history and of the country's identity index (as an
    alerted subject's quarantine keeps it): the gateway's country is not where the person is, and
    their calls through it must not make it common for the organization."""
    recorded, learned = egress
    kept = []
    for candidate, hours in candidates:
        extra = [*found.get(candidate.alert_id, []), *_two_places(candidate, hours, usual, deps, options)]
        extra = [e for e in extra if e.factor != UNUSUAL_HOUR.name or _local_time_applies(candidate, deps)]
        alert = _with_networks(candidate, deps, report, extra, usual.by_address, recorded, options)
        held = _held_reason(alert, learned)
        if held is not None:
            report.alerts_allowlisted[held] += 1
            if held == ORG_EGRESS_REASON:
                _not_counted_there(aggregate, alert, alert.location, hours)
            # (a person who signed in there is there: those calls count as theirs)
            logger.info(
                "alert held back",
                reason=held,
                principal=alert.principal,
                country=alert.source.geo.country_iso_code,
                source_ips=alert.source.ip,
            )
            continue
        kept.append((alert, hours))
    return kept


def _held_reason(alert: Alert, learned: frozenset[str]) -> str | None:
    """Why a country alert is held back (core/evidence: at the organization's learned egress, where
    the person signed in with a security key), None when it is not."""
    if alert.detector != COUNTRY.name:
        return None
    if held_at_egress(alert, learned):
        return ORG_EGRESS_REASON
    if held_signed_in(alert):
        return MFA_SIGN_IN_REASON
    return None


def _signed_in_there(
    aggregate: RunAggregate,
    history: History,
    candidates: Sequence[tuple[Alert, frozenset[int]]],
    deps: Dependencies,
) -> dict[str, Evidence]:
    """The MFA sign-in factor of each country alert of a person (core/evidence.sign_in_evidence), by
    alert id: their sign-ins with a security key from each network of the alert's addresses, this
    run's (its ``SI#`` counters, derived with the batch) and the runs' before (the stored counters'
    recent hours; those the run did not write are read here, one batch for all the alerts)."""
    asn_of = deps.geo.asn if deps.geo.has_asn else None
    wanted: dict[str, tuple[str, dict[str, str | None], frozenset[int]]] = {}
    for alert, hours in candidates:
        identity = subject_identity(alert.principal)
        if alert.detector != COUNTRY.name or not is_person(identity) or alert.omitted.source_ip:
            continue
        networks = {ip: sign_in_network(ip, alert.country, asn_of) for ip in alert.source.ip[:MAX_LIST]}
        wanted[alert.alert_id] = (identity, networks, hours)
    keys = {
        (sign_ins_partition(identity), category_sort_key(network))
        for identity, networks, _ in wanted.values()
        for network in networks.values()
        if network is not None
    }
    recent = _recent_hours(aggregate, history, keys, deps)
    found: dict[str, Evidence] = {}
    for alert_id, (identity, networks, hours) in wanted.items():
        partition = sign_ins_partition(identity)
        signed_in = {
            network: recent[(partition, category_sort_key(network))]
            for network in networks.values()
            if network is not None
        }
        evidence = sign_in_evidence(networks, signed_in, hours)
        if evidence is not None:
            found[alert_id] = evidence
    return found


def _sessions_elsewhere(
    aggregate: RunAggregate,
    history: History,
    candidates: Sequence[tuple[Alert, frozenset[int]]],
    deps: Dependencies,
) -> dict[str, Evidence]:
    """The session-elsewhere factor of each country alert of an Identity Center user from access
    networks (core/evidence.session_evidence), by alert id: their sign-ins from access networks
    (``SS#``: ``TOTAL``) and those from the alert's country or its addresses' autonomous systems,
    this run's (derived with the batch) and the runs' before (one batch read for all the alerts).
    Only with an ASN database: without one, no address is known to be an access network."""
    if not deps.geo.has_asn:
        return {}
    wanted: dict[str, tuple[str, set[str], frozenset[int], str]] = {}
    for alert, hours in candidates:
        identity = subject_identity(alert.principal)
        addresses = alert.source.ip[:MAX_LIST]
        if alert.detector != COUNTRY.name or not is_identity_center_user(identity) or not addresses:
            continue
        located = [sign_in_places(ip, alert.country, deps.geo.asn) for ip in addresses]
        if not all(located):  # a hosting address (or no public one): nothing says where the caller is
            continue
        wanted[alert.alert_id] = (identity, {p for found in located for p in found}, hours, alert.country)
    keys = {
        (session_sign_ins_partition(identity), category)
        for identity, places, _, _ in wanted.values()
        for category in (TOTAL, *map(category_sort_key, places))
    }
    recent = _recent_hours(aggregate, history, keys, deps)
    found: dict[str, Evidence] = {}
    for alert_id, (identity, places, hours, country) in wanted.items():
        partition = session_sign_ins_partition(identity)
        there = set().union(*(recent[(partition, category_sort_key(p))] for p in places))
        evidence = session_evidence(recent[(partition, TOTAL)], there, hours, country)
        if evidence is not None:
            found[alert_id] = evidence
    return found


def _recent_hours(
    aggregate: RunAggregate, history: History, keys: Collection[CounterKey], deps: Dependencies
) -> dict[CounterKey, set[int]]:
    """Each counter's recent hours: this run's (derived with the batch; the history holds what they
    were before) and the runs' before (the stored counters the run did not write, one batch read)."""
    counters = aggregate.counters
    unread = [key for key in keys if key not in counters]
    stored = deps.store.load(unread) if unread else {}
    return {key: _with_this_run(aggregate, history if key in counters else stored, key) for key in keys}


def _with_this_run(aggregate: RunAggregate, before: History, key: CounterKey) -> set[int]:
    """A counter's recent hours as ``before`` holds them (the counters before the run), with the
    hours this run adds to it."""
    hours = set(before.get(key[0], {}).get(key[1], EMPTY).recent_hours)
    this_run = aggregate.counters.get(key)
    if this_run is not None:
        hours.update(this_run.hours)
    return hours


def _hours_by_identity(
    aggregate: RunAggregate, history: History, keys: Collection[CounterKey], prefix: str
) -> dict[str, dict[str, set[int]]]:
    """The recent hours of counters keyed by an identity's partition (``prefix`` + identity) and a
    country (``C#<cc>``), this run's included, by identity and country; none for a counter without."""
    found: dict[str, dict[str, set[int]]] = {}
    for key in keys:
        hours = _with_this_run(aggregate, history, key)
        if hours:
            identity, country = key[0].removeprefix(prefix), key[1].removeprefix(country_sort_key(""))
            found.setdefault(identity, {})[country] = hours
    return found


def _load_egress_hours(groups: Sequence[HitGroup], history: History, deps: Dependencies) -> None:
    """Into ``history``: the hours held at the learned egress in each country of the run's groups
    (``ORG_EGRESS_HOURS``), which scoring takes out of what the country's identities vouch for. Only
    with an ASN database (without one, nothing is held)."""
    countries = sorted({g.country for g in groups if is_country(g.country)})
    if not deps.geo.has_asn or not countries:
        return
    keys = [(ORG_EGRESS_HOURS, country_sort_key(c)) for c in countries]
    history.setdefault(ORG_EGRESS_HOURS, {}).update(deps.store.load(keys).get(ORG_EGRESS_HOURS, {}))


def _not_counted_there(aggregate: RunAggregate, alert: Alert, country: str, hours: frozenset[int]) -> None:
    """The run's counters of ``alert``'s principal (its identity, its role) and of its long-term
    keys in ``country`` left uncommitted (the country's identity index is rolled up from the
    principal counters at commit), and its ``hours`` counted as held at the egress there, which
    scoring takes out of the organization's buckets of the country."""
    egress_hours = (ORG_EGRESS_HOURS, country_sort_key(country))
    first, last = alert.first_event_time, alert.last_event_time
    held = aggregate.counters.get(egress_hours)
    if held is None:
        aggregate.counters[egress_hours] = CounterDelta(set(hours), first, last)
    else:
        held.observe_hours(hours, first, last)
    role = role_of(alert.principal)
    partitions = [
        principal_partition(identity_of(alert.principal)),
        *((principal_partition(role),) if role else ()),
        *(access_key_partition(key) for key in alert.access_key_ids if is_long_term_key(key)),
    ]
    for partition in partitions:
        aggregate.counters.pop((partition, country_sort_key(country)), None)


def _with_networks(
    alert: Alert,
    deps: Dependencies,
    report: RunReport,
    extra: list[Evidence],
    usual_from: Mapping[str, set[str]],
    egress: frozenset[str],
    options: RunOptions,
) -> Alert:
    """The alert with its addresses' autonomous systems and the evidence factors present (a hosting
    provider, a new client...: core/evidence.py). Networks are looked up here, for the few alerts of
    a run (at most ``MAX_LIST`` addresses each), never per event on the hot path."""
    addresses = alert.source.ip[:MAX_LIST]
    if not deps.geo.has_asn:
        counts = Counter(unavailable=sum(lookup_address(a) is not None for a in addresses))
        report.networks.update(+counts)
        return with_evidence(alert, [], extra, enabled=options.factors)
    networks = networks_of(addresses, deps.geo.asn)
    hosting = sum(n.hosting is not None for n in networks)
    counts = Counter(hosting=hosting, other=len(networks) - hosting, not_found=len(addresses) - len(networks))
    report.networks.update(+counts)
    own = subject_identity(alert.principal)
    colleagues = {n.ip: len(usual_from.get(n.ip, set()) - {own}) for n in networks if n.hosting is not None}
    return with_evidence(
        alert, networks, extra, colleagues=colleagues, egress=egress, enabled=options.factors
    )


def _sibling_scores(
    groups: list[HitGroup],
    errors: list[CategoryGroup],
    cities: list[CategoryGroup],
    history: History,
    now_hour: int,
    options: RunOptions,
    spikes: Sequence[CategoryGroup] = (),
) -> list[SiblingScore]:
    """Unusual city, unusual command for a user, rare error code, spike in error messages: from the
    same pass, when configured (the aggregate only builds error, spike and city groups for the
    detectors that are on)."""
    policy = options.policy
    scores = (
        [score_user_methods(g, history, policy, now_hour) for g in groups]
        if "user_method" in options.detectors
        else []
    )
    scores.extend(score_error_codes(g, history, policy, now_hour) for g in errors)
    scores.extend(score_cities(g, history, policy, now_hour) for g in cities)
    scores.extend(score_error_spike(g, history, policy, now_hour) for g in spikes)
    return scores


def _sibling_candidates(
    scores: list[SiblingScore], scheduled_at: datetime, run_id: str, options: RunOptions, report: RunReport
) -> list[tuple[Alert, frozenset[int]]]:
    found = []
    for scored in scores:
        alert = build_sibling_alert(scored, scheduled_at, run_id)
        if alert is None:
            continue
        if options.tuning.ignores_principal(scored.principal):
            report.alerts_allowlisted["ignored_principal"] += 1
            continue
        hours = frozenset(h for g in scored.sources for h in g.hours())
        found.append((alert, hours))
    return found


def _correlated(candidates: list[tuple[Alert, frozenset[int]]]) -> list[tuple[Alert, frozenset[int]]]:
    """The same person hitting two detectors in one run: each of those alerts one severity up."""
    by_identity: dict[str, set[str]] = {}
    for alert, _ in candidates:
        by_identity.setdefault(identity_of(alert.principal), set()).add(alert.detector)
    out = []
    for alert, hours in candidates:
        detectors = by_identity[identity_of(alert.principal)]
        if len(detectors) > 1:
            alert = with_correlation(alert, sorted(detectors - {alert.detector}))  # noqa: PLW2901
        out.append((alert, hours))
    return out


MAX_SUBJECT_RACES = 5


class SuppressionRaceError(RuntimeError):
    """A subject's record changed under every attempt (the run fails; its takeover retries)."""


def _raise_alerts(
    candidates: list[tuple[Alert, frozenset[int]]],
    recent: dict[str, Suppression],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    extensions: dict[str, set[int]],
    fresh: Mapping[str, News] | None = None,
) -> None:
    """Queue alerts, one per (identity, country) per suppression window: an attacker's next
    runs of calls do not page the team again within the window, unless they reach for a
    sensitive method (IAM, credentials, logging...) that is news for the identity (``fresh``, by
    alert id: one it never called before this run; every one while it has too little history;
    every one for the sibling detectors) and none was alerted yet.

    Every hour of an alerted subject stays quarantined (``RunOptions.quarantine``, 30 days from
    its last alert) at every level: the subject's own hours at the role, principal and key
    levels, the subject as an identity at the organization and method levels. Hours that were
    only suppressed are quarantined too: an attacker who keeps calling does not teach the model
    that their country is normal. A traveller's trip therefore alerts once, and again only when
    something corroborates it (``_corroborated``), until it is allowlisted (``trailgeo allow``),
    which ends the quarantine.

    The subject's record is written (compare-and-set on the alert it held when read) before the
    alert is queued: another invocation deciding on the same subject at the same moment (fan-out
    reduces) makes this one read it again and decide anew, so the two do not both alert. A crash
    in between is repaired by the takeover of the run: the same alert id, found recorded, is
    queued then."""
    decided: list[Alert] = []
    # One read of which of the candidates' threads within the window the team has resolved (a
    # resolved thread's next alert pages anew); a subject read again after a race is asked again.
    since = scheduled_at - options.suppress_for
    resolved = set(_resolved_threads([alert_subject(c) for c, _ in candidates], recent, since, deps))
    for candidate, hours in sorted(candidates, key=lambda c: (-c[0].score, c[0].alert_id)):
        subject = alert_subject(candidate)
        news = (fresh or {}).get(
            candidate.alert_id, News(frozenset(m.method for m in candidate.methods if m.sensitive))
        )
        for _ in range(MAX_SUBJECT_RACES):
            if _raise_one(
                candidate,
                hours,
                news,
                subject,
                recent,
                resolved,
                scheduled_at,
                deps,
                options,
                report,
                decided,
                extensions,
            ):
                break
            recent.update(deps.outbox.recent([subject]))  # another invocation recorded one: read it
            resolved.update(_resolved_threads([subject], recent, since, deps))
        else:
            raise SuppressionRaceError(f"subject {subject} kept changing under {MAX_SUBJECT_RACES} attempts")
    # The open incidents, in one read (their own records: core/incidents.py), once the run's alerts
    # are decided; only when one was (a run without alerts reads nothing more).
    networks: dict[str, IncidentRecord] = {}
    if decided and options.incident_window > timedelta(0):
        networks = dict(deps.outbox.open_incidents(scheduled_at - options.incident_window))
    _queue(linked(decided, networks, scheduled_at, deps, options, report), options, deps, report)


def _resolved_threads(
    subjects: list[str], recent: Mapping[str, Suppression], since: datetime, deps: Dependencies
) -> frozenset[str]:
    """The alerts of the subjects' threads (``Suppression.thread_alerts``) the team has resolved,
    asked only of threads whose last alert is after ``since`` (within the window: an older one is
    over, and its next alert opens a thread of its own anyway)."""
    live = (recent[s] for s in subjects if s in recent and recent[s].at > since)
    threads = {a for last in live for a in last.thread_alerts}
    return deps.outbox.resolved(threads) if threads else frozenset()


def _raise_one(
    candidate: Alert,
    hours: frozenset[int],
    news: News,
    subject: str,
    recent: dict[str, Suppression],
    resolved: set[str],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    decided: list[Alert],
    extensions: dict[str, set[int]],
) -> bool:
    """Decide on one candidate against ``recent`` (an alert to queue goes to ``decided``, the
    hours of a suppressed one to ``extensions``); False when the subject's record changed under us.
    ``news``: what of the candidate is news for its identity; ``resolved``: the alerts the team
    resolved among the subjects' threads."""
    alert = candidate
    sensitive = news.sensitive_methods
    last = recent.get(subject)
    closed = False  # the team resolved the subject's thread (a re-alert within the window asks)
    within = (
        last is not None and last.alert_id != alert.alert_id and scheduled_at - last.at < options.suppress_for
    )
    quarantined = last is not None and scheduled_at - last.at < options.quarantine
    held = last.hours if last is not None and quarantined else frozenset()
    repeat = last is not None and last.alert_id != alert.alert_id and quarantined and not within
    if last is not None and repeat and not _corroborated(alert, news.client_retold):
        # A subject alerted within the quarantine, back without anything beside its location's
        # rarity (a trip's next days): the team was told once; telling it daily adds nothing.
        # Corroboration (an evidence factor, another detector) pages again as ever.
        _suppress(
            alert,
            last,
            subject,
            hours,
            report,
            extensions,
            "alert suppressed: a repeat without corroboration",
        )
        return True
    if last is not None and within:
        # One escalation per window: the first rare sensitive method new to the identity after an
        # alert without any pages again (as an update of that alert); later ones are part of the
        # same story. An engineer's daily AssumeRole, away from home, is not news. Once the team
        # resolved the thread (a decoy closed as a trip), a sensitive method new to the identity is
        # news again: it pages and opens a thread of its own.
        closed = bool(last.thread_alerts & resolved)
        if not sensitive or (last.sensitive_methods and not closed):
            _suppress(alert, last, subject, hours, report, extensions, "alert suppressed")
            return True
        # Paged at this severity already (or higher), or paged the on-call already: the re-alert is
        # an update in its thread (core.alerts.pages_again). After a resolved thread it is a new
        # one's first alert: a resolved finding or chat thread is no place for it.
        quiet = not pages_again(
            alert.severity,
            last.severity,
            options.paging_severity,
            resolved=closed,
            paged_ago=scheduled_at - last.paged_at if last.paged_at is not None else None,
        )
        follows = None if closed else last.alert_id
        alert = alert.model_copy(update={"follows_alert_id": follows, "quiet_update": quiet})
        logger.info(
            "re-alert within the window: sensitive method",
            methods=sorted(sensitive),
            quiet=quiet,
            resolved=closed,
        )
        if closed:
            # The team closed this thread and the same subject is back with a sensitive method new
            # to it: worth a look at the verdict as well as at the alert.
            report.threads_reopened += 1
            logger.warning(
                "a thread the team resolved is back: it pages anew", thread_id=last.thread or last.alert_id
            )
    # A thread goes on within the window; after a resolved one, this alert begins its own.
    going_on = last is not None and within and not closed
    carried = last.sensitive_methods if last is not None and going_on else frozenset()
    highest = (
        last.severity if last is not None and going_on and more_severe(last.severity, alert.severity) else ""
    )
    thread = (last.thread or last.alert_id) if last is not None and going_on else alert.alert_id
    pages = not alert.quiet_update and at_least(alert.severity, options.paging_severity)
    remembered = Suppression(
        scheduled_at,
        alert.alert_id,
        sensitive | carried,
        held | hours,
        highest or alert.severity,
        thread,
        scheduled_at if pages else (last.paged_at if last is not None and going_on else None),
    )
    if not deps.outbox.remember(subject, remembered, last.alert_id if last is not None else None):
        return False
    recent[subject] = remembered
    decided.append(alert)
    return True


def _suppress(
    alert: Alert,
    last: Suppression,
    subject: str,
    hours: frozenset[int],
    report: RunReport,
    extensions: dict[str, set[int]],
    message: str,
) -> None:
    """Count and log a suppressed alert. Suppressed is not forgiven: the subject's later hours are
    quarantined like its first."""
    report.alerts_suppressed += 1
    extensions.setdefault(subject, set()).update(hours)
    logger.info(message, alert_id=alert.alert_id, previous_alert_id=last.alert_id, since=last.at.isoformat())


def _corroborated(alert: Alert, retold: bool = False) -> bool:
    """Whether anything beside the location's rarity weighs in the alert, enough to alert again for
    a subject alerted within the quarantine: an evidence factor that raises and re-alerts (a
    sensitive method new to the identity among them; not an unusual hour alone; not a new client
    the subject's alerted calls ran, ``retold``: the team was told of it), another detector firing.
    Sibling detectors' alerts always are (their subjects are no location)."""
    return (
        alert.detector != COUNTRY.name
        or bool(alert.correlated_detectors)
        or any(
            e.raises > 0 and _re_alerts(e) and not (retold and e.factor == NEW_CLIENT.name)
            for e in alert.evidence
        )
    )


def _re_alerts(evidence: Evidence) -> bool:
    factor = EVIDENCE_FACTORS.get(evidence.factor)
    return factor is None or factor.re_alerts


def _queue(incidents: list[Assignment], options: RunOptions, deps: Dependencies, report: RunReport) -> None:
    """Queue the run's alerts, one per incident (a carrier names the others: core/incidents.py).
    Above ``rollup_after`` (an alert flood: a session or principal flood meant to bury the real
    alert), the ``rollup_in_full`` most urgent are queued in full and the next one carries all the
    rest, incidents' members included (named, scored, kept in its document): the team reads a
    handful of messages, the real alert among the first. Sensitive methods and higher scores come
    first; every subject is recorded and suppressed as if alerted alone."""
    ranked = [i.alert for i in incidents]
    report.alerts_linked += sum(len(i.members) for i in incidents)
    if len(incidents) > options.rollup_after:
        order = sorted(
            incidents, key=lambda i: (not i.alert.sensitive_methods, -i.alert.score, i.alert.alert_id)
        )
        carrier, rest = order[options.rollup_in_full].alert, order[options.rollup_in_full + 1 :]
        rolled = [a for i in rest for a in (i.alert, *i.members)]
        ranked = [*(i.alert for i in order[: options.rollup_in_full]), with_rollup(carrier, rolled)]
        report.alerts_rolled_up += len(rolled)
        logger.warning(
            "alert flood: alerts rolled up into one", rolled_up=len(rolled), carrier=carrier.alert_id
        )
    for alert in ranked:
        if deps.outbox.put(alert):
            report.alerts_raised += 1
            report.alerts.append(alert)
            logger.info(
                "alert raised",
                alert_id=alert.alert_id,
                country=alert.country,
                principal=alert.principal,
                score=alert.score,
                severity=alert.severity,
                incident_id=alert.incident.id if alert.incident is not None else None,
            )
