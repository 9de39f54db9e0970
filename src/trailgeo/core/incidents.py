"""Incidents: a run's alerts linked by source network and time, across principals and accounts.

A stolen key used on two users, or assumed into three other accounts, raised one alert per
principal and account: four pages for one attacker. Alerts whose calls came from the same network
(an IPv4 /24, an IPv6 /48) are one incident: one notification that names its members, and later
alerts from that network within the incident window (24 hours from the incident's last member)
are sent as updates of it. Calls through a VPC endpoint or from an address without a country link
only by that exact location and address (private ranges are everyone's); an AWS service
(``ec2.amazonaws.com``), anything that is no address, and loopback, link-local, multicast,
reserved and unspecified addresses never link. Only the country detector's alerts link (the
calls came from somewhere unusual for each principal); the sibling detectors' never do.

Below the paging severity, an update whose severity is above the incident's highest, or that brings
a sensitive method new to the incident, pages as a new notification (an escalation, still naming
the incident). Once the incident paged at the paging severity, the page holds for an hour: what
follows within it is an update in its thread at the severity it brings; after it, a higher severity
pages again. Once the team resolves the incident (its first or last alert), whatever joins it pages
anew (``core.alerts.pages_again``). A notification carries the highest severity of its members, and
each member is named (up to ``MAX_MEMBERS``, then counted).

Imports: the standard library and pure modules of ``trailgeo.core`` (the alert model; never
``core.render``, never boto3).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from trailgeo.core.alerts import (
    DEFAULT_PAGING_SEVERITY,
    MAX_LIST,
    SEVERITY_LEVELS,
    Alert,
    AlertIncident,
    IncidentMember,
    Severity,
    at_least,
    is_country,
    location_label,
    pages_again,
)
from trailgeo.core.detectors import COUNTRY
from trailgeo.core.sources import UNKNOWN_LOCATION, endpoint_account
from trailgeo.core.text import plain

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=7)
MAX_MEMBERS = 50  # members named in a document; the rest counted (an item stays far under 400 KB)
MEMBERS_LISTED = 20  # members named in the explanation
MEMBER_METHODS = 3
MAX_NETWORKS = 20  # networks an incident is remembered under, per run
MAX_ADDRESS_LENGTH = 64  # an IPv6 address with a zone is shorter; longer is no address


def network_key(address: str, location: str) -> str | None:
    """The network an address links by (``203.0.113.0/24``, ``2001:218:1::/48``,
    ``VPCE:<account>@<address>``, ``unknown@<address>``: an incident's record is kept under it), or
    None when it never links."""
    if len(address) > MAX_ADDRESS_LENGTH:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # an AWS service's host name, or a forged value
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved:
        return None
    if is_country(location):
        prefix = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network((int(ip), prefix), strict=False))
    if location == UNKNOWN_LOCATION or endpoint_account(location) is not None:
        return f"{location}@{ip}"
    return None


def network_keys(alert: Alert) -> frozenset[str]:
    """The networks a country detector's alert came from (its bounded source addresses). A sibling
    detector's alert links by none: it comes from the principal's usual places (an unusual command,
    error code or city at home), where a shared network is a shared office, not a shared attacker;
    the same person's alerts of several detectors are correlated instead."""
    if alert.detector != COUNTRY.name:
        return frozenset()
    keys = (network_key(address, alert.location) for address in alert.source.ip)
    return frozenset(k for k in keys if k is not None)


def severity_rank(severity: str) -> int:
    return SEVERITY_LEVELS.index(severity) if severity in SEVERITY_LEVELS else 0


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """An incident as remembered under each of its networks (``ports.IncidentRecord``)."""

    incident_id: str  # its first alert
    last_at: datetime  # its last member's run: the window runs from here
    last_alert_id: str  # the alert that last recorded it (the compare-and-set's token)
    severity: Severity  # the highest of its members
    sensitive_methods: frozenset[str]
    alerts: int  # members so far
    first_at: datetime | None = None  # its first member's run (None: its last's)
    resolved: bool = False  # the team resolved its first or its last alert: what follows pages anew
    paged_at: datetime | None = None  # the run it last paged the on-call at (None: not, or unknown)


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a run queues for one incident: ``alert`` (a lone alert, a carrier naming the run's
    other linked alerts, or an update of an open incident), the alerts it carries, the networks it
    links by and the incident it continues (None for a new one)."""

    alert: Alert
    members: tuple[Alert, ...]
    networks: frozenset[str]
    incident: OpenIncident | None

    def remembered(self, at: datetime, paging: Severity = DEFAULT_PAGING_SEVERITY) -> OpenIncident:
        """The incident as it stands once this assignment is sent (``paging``: the deployment's
        paging severity, to tell whether this notification pages the on-call)."""
        group = (self.alert, *self.members)
        before = self.incident
        severity = max((a.severity for a in group), key=severity_rank)
        sensitive = frozenset(m for a in group for m in a.sensitive_methods)
        pages = not self.alert.is_update and at_least(self.alert.severity, paging)
        if before is None:
            return OpenIncident(
                self.alert.alert_id,
                at,
                self.alert.alert_id,
                severity,
                sensitive,
                len(group),
                first_at=at,
                paged_at=at if pages else None,
            )
        return OpenIncident(
            incident_id=before.incident_id,
            first_at=before.first_at or before.last_at,
            last_at=at,
            last_alert_id=self.alert.alert_id,
            severity=max(severity, before.severity, key=severity_rank),
            sensitive_methods=before.sensitive_methods | sensitive,
            alerts=before.alerts + len(group),
            paged_at=at if pages else before.paged_at,
        )


def urgency(alert: Alert) -> tuple[bool, int, float, str]:
    """Sort key, most urgent first: sensitive methods, then severity, then score."""
    return (not alert.sensitive_methods, -severity_rank(alert.severity), -alert.score, alert.alert_id)


class _Links:
    """Union-find over a run's alerts."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def root(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def join(self, indices: Iterable[int]) -> None:
        roots = sorted({self.root(i) for i in indices})
        for other in roots[1:]:
            self.parent[other] = roots[0]


def link(
    decided: Sequence[Alert],
    open_incidents: Mapping[str, OpenIncident],
    now: datetime,
    window: timedelta,
    paging: Severity = DEFAULT_PAGING_SEVERITY,
) -> list[Assignment]:
    """Each of the run's decided alerts assigned to an incident: alerts sharing a network, or
    networks of one open incident (last member within ``window``), are one; order kept (the
    first alert of each incident decides its place). A zero window links nothing. ``paging``: the
    deployment's paging severity (an incident that paged at it pages no more until resolved)."""
    keys = [network_keys(a) if window > timedelta(0) else frozenset() for a in decided]
    live = {k: i for k, i in open_incidents.items() if timedelta(0) <= now - i.last_at < window}
    links = _Links(len(decided))
    by_anchor: dict[str, list[int]] = {}
    for index, networks in enumerate(keys):
        for key in networks:
            by_anchor.setdefault(key, []).append(index)
            if key in live:
                by_anchor.setdefault(f"incident:{live[key].incident_id}", []).append(index)
    for indices in by_anchor.values():
        links.join(indices)
    groups: dict[int, list[int]] = {}
    for index in range(len(decided)):
        groups.setdefault(links.root(index), []).append(index)
    out = []
    for indices in groups.values():
        networks = frozenset(k for i in indices for k in keys[i])
        touched = [live[k] for k in networks if k in live]
        incident = min(touched, key=lambda i: (-i.alerts, i.incident_id)) if touched else None
        run_ids = {a.alert_id for a in decided}
        out.append(_assign([decided[i] for i in indices], networks, incident, run_ids, paging, now))
    return out


def _assign(
    group: list[Alert],
    networks: frozenset[str],
    incident: OpenIncident | None,
    run_ids: set[str],
    paging: Severity,
    now: datetime,
) -> Assignment:
    ranked = sorted(group, key=urgency)
    carrier, members = ranked[0], tuple(ranked[1:])
    if incident is None and not members:
        return Assignment(carrier, (), networks, None)
    severity = max((a.severity for a in ranked), key=severity_rank)
    escalation = incident is not None and _escalates(ranked, incident, run_ids, paging, now)
    info = AlertIncident(
        id=incident.incident_id if incident is not None else carrier.alert_id,
        update=incident is not None and not escalation,
        escalation=escalation,
        networks=sorted(networks)[:MAX_LIST],
        alerts=len(ranked),
        accounts=len({a.cloud.account.id for a in ranked}),
        principals=len({a.principal for a in ranked}),
        members=[_member(a) for a in members[:MAX_MEMBERS]],
        omitted_members=max(0, len(members) - MAX_MEMBERS),
    )
    update: dict[str, object] = {
        "incident": info,
        "severity": severity,
        "explanation": _explained(carrier, info),
    }
    update.update(_not_quieter(ranked))
    alert = carrier.model_copy(update=update)
    return Assignment(alert, members, networks, incident)


def _not_quieter(ranked: list[Alert]) -> dict[str, object]:
    """What a carrier that is a quiet re-alert (``quiet_update``: its subject paged at this severity
    already) must lose so that the notification pages as its members would alone: quiet only when
    every alert it carries is a quiet re-alert of an alert sent before. A re-alert of a member of
    the same notification follows nothing anyone was sent (the run's first alert of that subject
    goes out inside it), so it follows nothing; and a fresh alert in the group pages, whichever of
    them carries it."""
    carrier, ids = ranked[0], {a.alert_id for a in ranked}
    update: dict[str, object] = {}
    if carrier.follows_alert_id in ids:
        update["follows_alert_id"] = None
    if carrier.quiet_update and not all(a.quiet_update and a.follows_alert_id not in ids for a in ranked):
        update["quiet_update"] = False
    return update


def _escalates(
    group: list[Alert], incident: OpenIncident, run_ids: set[str], paging: Severity, now: datetime
) -> bool:
    """Whether alerts linked to an open incident page anew (``core.alerts.pages_again``: a higher
    severity or a sensitive method new to it while it has not paged the on-call, anything once the
    team resolved it), or when this very run wrote the incident's record (a retried run cannot tell
    what it held before, and errs toward paging). Once it paged, its later members (a higher
    severity, a role chain's next accounts) are updates in its thread, each named with its severity
    and sensitive methods."""
    if incident.last_alert_id in run_ids:
        return incident.incident_id not in run_ids
    highest = max((a.severity for a in group), key=severity_rank)
    new_sensitive = {m for a in group for m in a.sensitive_methods} - incident.sensitive_methods
    return pages_again(
        highest,
        incident.severity,
        paging,
        resolved=incident.resolved,
        new_sensitive=bool(new_sensitive),
        paged_ago=now - incident.paged_at if incident.paged_at is not None else None,
    )


def _member(alert: Alert) -> IncidentMember:
    return IncidentMember(
        alert_id=alert.alert_id,
        account=alert.cloud.account.id,
        principal=alert.principal,
        location=alert.location,
        score=alert.score,
        severity=alert.severity,
        sensitive_methods=alert.sensitive_methods[:MEMBER_METHODS],
        methods=[m.method for m in alert.methods[:MEMBER_METHODS]]
        or [f.value for f in alert.findings[:MEMBER_METHODS]],
        first_event_time=alert.first_event_time,
        last_event_time=alert.last_event_time,
        detector=alert.detector,
        factors={e.factor: e.raises for e in alert.evidence},
        correlated=bool(alert.correlated_detectors),
    )


def headline(info: AlertIncident) -> str:
    """``One incident: N alerts across K accounts`` (and principals), as every rendering says it."""
    accounts = f"{info.accounts} account{'s' if info.accounts != 1 else ''}"
    principals = f"{info.principals} principal{'s' if info.principals != 1 else ''}"
    return (
        f"One incident: {info.alerts} alert{'s' if info.alerts != 1 else ''} across {accounts} ({principals})"
    )


def member_line(member: IncidentMember) -> str:
    """One member as the texts name it (attacker-controlled parts made plain)."""
    methods = ", ".join(plain(m, 100) for m in member.methods)
    return (
        f"{plain(member.principal, 200)} (account {plain(member.account, 20)}) from "
        f"{location_label(member.location)}: score {member.score:.0f} ({member.severity})"
        + (f", {methods}" if methods else "")
        + (" [sensitive]" if member.sensitive_methods else "")
    )


def _explained(carrier: Alert, info: AlertIncident) -> str:
    return carrier.explanation + _incident_text(info)


def _incident_text(info: AlertIncident) -> str:
    """What an incident adds to its carrier's explanation (removed again when it is re-told)."""
    if info.update:
        kind = f"An update of incident {info.id}"
    elif info.escalation:
        kind = f"An escalation of incident {info.id} (a higher severity or a new sensitive method)"
    else:
        kind = "A new incident"
    lines = [f"- {member_line(m)}" for m in info.members[:MEMBERS_LISTED]]
    more = len(info.members) - MEMBERS_LISTED + info.omitted_members
    if more > 0:
        lines.append(f"- and {more} more (in this alert's incident members, or counted there)")
    networks = ", ".join(info.networks) or "none"
    text = f"\n\n{headline(info)}, linked by source network ({networks}). {kind}."
    if lines:
        text += "\nThe other alerts, each recorded and suppressed as if sent alone:\n" + "\n".join(lines)
    return text


def _member_urgency(member: IncidentMember) -> tuple[bool, int, float, str]:
    return (not member.sensitive_methods, -severity_rank(member.severity), -member.score, member.alert_id)


def thread_joined(alert: Alert) -> str | None:
    """The notification an alert follows, when it is not its thread's first: its incident's first
    alert (an update or an escalation of it) or the subject's alert it re-alerts."""
    if alert.incident is not None and alert.incident.id != alert.alert_id:
        return alert.incident.id
    return alert.follows_alert_id


def absorbed(opener: Alert, joined: Sequence[Alert]) -> Alert:
    """An incident's first notification, not sent yet, carrying what joined it since (updates,
    escalations, re-alerts of its subject, all still pending too): one notification at the highest
    severity of them all, naming each as a member (most urgent first), instead of a first
    notification and an escalation of it a run later. ``opener`` stays the carrier: its id is the
    thread and the incident every later update is sent in."""
    if not joined:
        return opener
    before = opener.incident
    base = (
        opener.explanation.removesuffix(_incident_text(before)) if before is not None else opener.explanation
    )
    members = [*(before.members if before is not None else ())]
    for alert in joined:
        members.append(_member(alert))
        if alert.incident is not None:
            members.extend(alert.incident.members)
    members.sort(key=_member_urgency)
    omitted = sum(a.incident.omitted_members for a in joined if a.incident is not None)
    omitted += (before.omitted_members if before is not None else 0) + max(0, len(members) - MAX_MEMBERS)
    named = [(opener.cloud.account.id, opener.principal), *((m.account, m.principal) for m in members)]
    group = (opener, *joined)
    networks = {n for a in group for n in network_keys(a)}
    networks.update(n for a in group if a.incident is not None for n in a.incident.networks)
    info = AlertIncident(
        id=opener.alert_id,
        networks=sorted(networks)[:MAX_LIST],
        alerts=(before.alerts if before is not None else 1)
        + sum(a.incident.alerts if a.incident is not None else 1 for a in joined),
        accounts=max(len({a for a, _ in named}), before.accounts if before is not None else 1),
        principals=max(len({p for _, p in named}), before.principals if before is not None else 1),
        members=members[:MAX_MEMBERS],
        omitted_members=omitted,
    )
    severity = max((a.severity for a in group), key=severity_rank)
    carrier = opener.model_copy(update={"explanation": base})
    return opener.model_copy(
        update={"incident": info, "severity": severity, "explanation": _explained(carrier, info)}
    )
