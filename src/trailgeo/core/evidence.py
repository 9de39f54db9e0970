"""Evidence factors: what an alert found beside the rarity of its location, and what each does to
its severity. One registry, so that each factor is named, weighed and explained in one place, and
every rendering shows the same words.

Severity starts from the location's rarity alone (``alert_builder.rarity_severity``: medium for a
score of 75 or more, else low) and **only corroboration pages**: each factor present adds its
``raises`` levels on top, up to critical. A country the principal never used is worth a look; a
country the principal never used, reached from a rented server with a client the principal never
ran, is worth waking someone. Factors only ever
raise: none lowers the severity the rarity gave (docs/scoring.md says why).

May import: the standard library and pure modules of ``trailgeo.core`` (never ``core.render``,
never boto3).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from trailgeo.core.alerts import MAX_LIST, SEVERITY_LEVELS, Alert, Evidence, Network, Severity
from trailgeo.core.clients import client_family
from trailgeo.core.networks import MAX_ORGANIZATION, AsnInfo, hosting_provider, lookup_address
from trailgeo.core.text import plain


@dataclass(frozen=True, slots=True)
class EvidenceFactor:
    """A kind of evidence an alert may carry."""

    name: str  # stable: the alert's ``evidence[].factor``
    title: str  # how renderings name it
    raises: int  # severity levels it adds when present (0: shown, weighs nothing)
    description: str  # what it means and why it weighs what it weighs (docs/scoring.md)
    # Whether it alone alerts again for a subject alerted within the quarantine (a repeat that
    # only its location's rarity would leave suppressed): a client or a method the identity never
    # used is news on any day; an odd hour on a trip's third day is the trip's schedule.
    re_alerts: bool = True
    # Whether it only corroborates: alone (no other factor raising) it takes an alert no higher than
    # ``CORROBORATED_ONLY_CEILING``; beside another raising factor it adds its levels as any other.
    corroborates_only: bool = False

    def __post_init__(self) -> None:
        if self.raises < 0:
            raise ValueError(f"evidence factor {self.name}: factors only raise a severity, never lower it")


# The highest severity factors that only corroborate reach alone: a look, not a page.
CORROBORATED_ONLY_CEILING: Severity = "medium"

HOSTING_PROVIDER = EvidenceFactor(
    name="hosting_provider",
    title="hosting provider",
    raises=1,
    description=(
        "A source address is in the network of a hosting or cloud provider (servers for rent), not "
        "a consumer or business access network: stolen keys are often used from a VPS or a cloud "
        "instance. One severity level up. A residential proxy defeats it, so its absence lowers nothing."
    ),
)

NEW_CLIENT = EvidenceFactor(
    name="new_client",
    title="new client",
    raises=1,
    description=(
        "A client family (the program and its major version on an operating system: aws-cli/2 on "
        "Linux, boto3/1 on macOS, a browser on Windows) the identity has never used, while it has "
        "at least a day of hours with clients on record. A person travels with their own laptop and "
        "tools; stolen keys are used with the thief's. One severity level up. An attacker who copies "
        "the victim's user agent defeats it, so its absence lowers nothing."
    ),
)

# Other identities, for whom the country is usual, that must share an address in the same run for
# it to be the organization's own egress (SHARED_EGRESS).
MIN_EGRESS_COLLEAGUES = 2
# How long an address colleagues shared stays the organization's egress without being shared again.
EGRESS_MEMORY = timedelta(days=30)
SHARED_EGRESS = EvidenceFactor(
    name="shared_egress",
    title="shared egress",
    raises=0,
    description=(
        "A hosting-provider address the alert came from is, in the same run, also the address of "
        f"at least {MIN_EGRESS_COLLEAGUES} other identities for whom that country is usual: the "
        "organization's own VPN gateway or proxy on a cloud instance, not a server the caller "
        "rents. The hosting-provider factor then does not count for that address (shown, weighs "
        "nothing). An attacker cannot borrow it without calling from the organization's own egress."
    ),
)

# A shared address becomes the organization's *learned* egress, whose calls say nothing of where the
# caller is (an alert from it without other evidence is held back: ``held_at_egress``), only once
# colleagues for whom its country is usual shared it in this many distinct hours, the first of them
# at least EGRESS_LEARNING before: a VPN gateway is shared every working day; an attacker who wants
# an address of theirs learned must call from it with two identities of that country for a day.
MIN_EGRESS_HOURS = 8
EGRESS_LEARNING = timedelta(days=1)
ORG_EGRESS_REASON = "org_egress"  # the run's count of alerts held back there (AlertsAllowlisted)

NEW_SENSITIVE_METHOD = EvidenceFactor(
    name="new_sensitive_method",
    title="sensitive method new to the identity",
    raises=1,
    description=(
        "A rare method of the alert is sensitive (persistence, privilege escalation, defence "
        "evasion, credential access: core/sensitive.py) and the identity never called it before, "
        "while it has at least a day of history. A thief creates access keys, reads secrets and "
        "stops logging; an engineer's everyday sensitive calls (AssumeRole, an ECR login, "
        "RunInstances) go with them on a trip and are in their history, and a method the people of "
        "an Identity Center user's permission set in the account call routinely is their job, not "
        "news. One severity level up."
    ),
)

# Hours between calls from two countries within which they cannot be one person travelling: the
# same hour bucket or the next (two hours at most).
CONCURRENT_HOURS = 1
CONCURRENT_USE = EvidenceFactor(
    name="concurrent_use",
    title="two countries at once",
    raises=1,
    description=(
        "The identity is one person (an IAM user, an Identity Center user) and the same run read "
        "its calls from a country usual for it within an hour of the alert's; both from consumer "
        "or business networks, none a hosting provider's. Nobody is in two countries at once: the "
        "key or the session is in a second pair of hands (impossible travel). Hosting addresses "
        "are left out on both sides, because a person's own scripts on a cloud instance and the "
        "organization's VPN gateway are no second person. One severity level up."
    ),
)

# The speed no journey between two countries beats, in km an hour: an airliner cruises at 850-950
# km/h (a jet stream adds up to ~200 at altitude), and a journey also goes to and from airports.
TRAVEL_KMH = 1000
IMPOSSIBLE_TRAVEL = EvidenceFactor(
    name="impossible_travel",
    title="impossible travel",
    raises=1,
    description=(
        "The identity is one person (an IAM user, an Identity Center user), and they called from a "
        "country usual for them, or signed in to Identity Center from another country, so shortly "
        "before or after the alert's calls that nobody could have travelled between the two: the "
        "least distance between the countries (data/country_distances.json: their closest places "
        f"that DB-IP locates addresses at, less a margin) is more than {TRAVEL_KMH:,} km an hour "
        "covers in the time between them, counted generously (calls in the hours 19:00 and 21:00 "
        "UTC may be three hours apart). Both from consumer or business networks, none a hosting "
        "provider's (a VPN gateway or a person's own scripts on a cloud instance are nobody's "
        "whereabouts). Neighbouring countries are never too far (a commuter, a home line "
        "geolocated across the border), nor is a country within an hour's flight. The key or the "
        "session is in a second pair of hands, whatever client it copies. One severity level up; "
        "not counted beside the concurrent-use factor (the same fact: two countries at once). An "
        "attacker who waits until the victim could have flown to them defeats it (from the United "
        "States to India, 7 hours after the victim's last call), so its absence lowers nothing."
    ),
)

# Hours of a person's local-time history (``HR#``) before an hour can be unusual for them: about
# two working weeks (one week shows no habit of weekend or evening work yet). Hours either side of
# an alert's hour that count as near it (a long day, daylight saving time, a country of several time
# zones filed under its most populous one). The share of the person's hours near it below which it
# is unusual (an evening's work a month is not a habit).
MIN_HOUR_HISTORY = 80
HOUR_MARGIN = 3
USUAL_HOUR_SHARE = 0.01
UNUSUAL_HOUR = EvidenceFactor(
    name="unusual_hour",
    title="unusual hour",
    raises=1,
    description=(
        "Every hour of the alert's calls is, in the local time of the country they came from, an "
        f"hour at which the person (an IAM user, an Identity Center user) made under "
        f"{USUAL_HOUR_SHARE:.0%} of their calls within {HOUR_MARGIN} hours either side, on the same "
        "kind of day (weekday or weekend), while they have at least "
        f"{MIN_HOUR_HISTORY} hours of history. People work their own hours wherever they are (nine "
        "to six at home, nine to six on a trip to Tokyo, in Tokyo's time); a thief works whenever "
        "suits the thief, often the victim's night or weekend. One severity level up. An attacker "
        "who calls during the victim's working day defeats it, so its absence lowers nothing. Only "
        "from access networks: a hosting address's country (a VPN gateway, a rented server) says "
        "nothing of the caller's clock. It does not alone alert again for a subject already "
        "alerted: a trip's weekend or late evening is the trip's schedule."
    ),
    re_alerts=False,
)

# Hours before an alert's first call within which a person's sign-in with a security key from the
# same network explains it: a working day's session (Identity Center's default is 8 hours; a long
# day's evening session comes back to the same hotel).
SIGN_IN_HOURS = 12
MFA_SIGN_IN = EvidenceFactor(
    name="mfa_sign_in",
    title="signed in there with a security key",
    raises=0,
    description=(
        "The person (an IAM user, an Identity Center user) signed in from the same network (the "
        "same country and autonomous system; a hosting provider's address only itself; without an "
        "ASN database the same /24 or /48) with a "
        "phishing-resistant factor, a FIDO2 security key or passkey, in the hour of the alert's "
        f"calls or the {SIGN_IN_HOURS} before, for every address of the alert: the person is where "
        "the calls come from (a trip, an offsite, a new hire's first week, a home line geolocated "
        "across the border). A country alert that has it and no evidence raising it is held back "
        "(counted and logged, never silent); with a raising factor it still alerts, the sign-in "
        "shown beside it. Weighs nothing: a one-time code does not count (a phishing page relays "
        "it from the attacker's address), nor a sign-in through an external identity provider "
        "(the trail does not say which factor it asked for)."
    ),
)
MFA_SIGN_IN_REASON = "mfa_sign_in"  # the run's count of alerts held back by it (AlertsAllowlisted)

SESSION_ELSEWHERE = EvidenceFactor(
    name="session_elsewhere",
    title="session begun elsewhere",
    raises=1,
    description=(
        "The calls are an IAM Identity Center user's role session, from consumer or business "
        "networks, and the person signed in to Identity Center (with any factor) in the hour of the "
        f"calls or the {SIGN_IN_HOURS} before, every time from another country and another "
        "autonomous system than the calls'. A role session's credentials come from the access "
        "portal session a sign-in opened (8 hours by default): used from where the person did not "
        "sign in, the session (its cookie, its cached token or credentials) is in other hands, "
        "whatever client it copies and however common its country is for colleagues. A "
        "phishing-resistant factor does not stop it: a stolen session needs no second sign-in. "
        "Hosting addresses are left out on both sides (a VPN gateway says nothing of where the "
        "person is), and a sign-in from the calls' network in a neighbouring country (a home line "
        "geolocated across the border) counts as there. Only with an ASN database. One severity "
        f"level up, but alone no higher than {CORROBORATED_ONLY_CEILING}: a person who flies to a "
        "nearby country and works there on the morning's portal session before signing in again "
        "has it too; beside another raising factor it adds its level. Its absence lowers nothing: "
        "there is none when the trail lacks the sign-ins (they are written in Identity Center's "
        "account and region) or the session outlives the window."
    ),
    corroborates_only=True,
)

REGISTRY: Mapping[str, EvidenceFactor] = {
    factor.name: factor
    for factor in (
        HOSTING_PROVIDER,
        NEW_CLIENT,
        NEW_SENSITIVE_METHOD,
        SHARED_EGRESS,
        CONCURRENT_USE,
        IMPOSSIBLE_TRAVEL,
        UNUSUAL_HOUR,
        MFA_SIGN_IN,
        SESSION_ELSEWHERE,
    )
}
FACTORS = frozenset(REGISTRY)
# Hours of an identity's history with a known client before a new one is evidence: a new hire's or
# a new role's first clients are all new, and say nothing.
MIN_CLIENT_HISTORY_HOURS = 24

AsnLookup = Callable[[str], AsnInfo | None]


def networks_of(addresses: Iterable[str], lookup: AsnLookup) -> list[Network]:
    """The autonomous system of each public address (at most ``MAX_LIST``), in order; addresses that
    are no public IP (host names, private ranges...) and those the database lacks are left out."""
    found: list[Network] = []
    for address in addresses:
        if len(found) >= MAX_LIST:
            break
        ip = lookup_address(address)
        asn = lookup(ip) if ip is not None else None
        if asn is None:
            continue
        found.append(
            Network(
                ip=ip or address,
                asn=asn.number,
                organization=plain(asn.organization, MAX_ORGANIZATION),
                hosting=hosting_provider(asn),
            )
        )
    return found


def hosting_evidence(
    networks: list[Network], colleagues: Mapping[str, int] | None = None, known: Collection[str] = ()
) -> list[Evidence]:
    """The hosting-provider factor, when a source address is in a hosting or cloud network that is
    not the organization's own egress; the shared-egress note for those that are (``colleagues``:
    per address, the other identities calling from it this run for whom its country is usual;
    ``known``: addresses colleagues shared within ``EGRESS_MEMORY``)."""
    shared = colleagues or {}

    def is_egress(n: Network) -> bool:
        return shared.get(n.ip, 0) >= MIN_EGRESS_COLLEAGUES or n.ip in known

    hosted = [n for n in networks if n.hosting is not None]
    egress = [n for n in hosted if is_egress(n)]
    rented = [n for n in hosted if not is_egress(n)]
    found: list[Evidence] = []
    if rented:
        text = f"{HOSTING_PROVIDER.title}: " + _networks_text(rented)
        found.append(Evidence(factor=HOSTING_PROVIDER.name, raises=HOSTING_PROVIDER.raises, text=text))
    if egress:
        most = max(shared.get(n.ip, 0) for n in egress)
        now = f"up to {most} other identities for whom the country is usual, in this run" if most else ""
        before = (
            "colleagues for whom the country is usual, within 30 days"
            if any(n.ip in known for n in egress)
            else ""
        )
        text = (
            f"{SHARED_EGRESS.title}: {_networks_text(egress)} also carries the calls of "
            f"{' and of '.join(p for p in (now, before) if p)} (the organization's own VPN or proxy): "
            "the hosting provider does not count"
        )
        found.append(Evidence(factor=SHARED_EGRESS.name, raises=SHARED_EGRESS.raises, text=text))
    return found


def _networks_text(networks: list[Network]) -> str:
    seen: dict[tuple[int, str], list[str]] = {}
    for n in networks:
        seen.setdefault((n.asn, n.organization), []).append(n.ip)
    parts = [
        f"AS{asn} {organization} ({', '.join(ips[:3])}{' and more' if len(ips) > 3 else ''})"
        for (asn, organization), ips in list(seen.items())[:5]
    ]
    more = f" and {len(seen) - 5} more networks" if len(seen) > 5 else ""
    return "; ".join(parts) + more


def held_out_clients(
    known: Mapping[str, tuple[int, float]], history_hours: int, held_hours: int
) -> tuple[dict[str, tuple[int, float]], int]:
    """An identity's client families (family -> (hourly buckets, weight)) and hours of client
    history as its own calls made them: less the ``held_hours`` of an alerted subject's calls (its
    quarantined hours, which taught the counters whatever client they ran). Which families those
    calls ran is not kept, so each family loses them all: a family known only from the subject's
    own alerted calls is new again, one the identity ran in more hours than those is still its own
    (a thief's probe cannot make their client the victim's)."""
    if held_hours <= 0:
        return dict(known), history_hours
    return (
        {family: (max(0, buckets - held_hours), weight) for family, (buckets, weight) in known.items()},
        max(0, history_hours - held_hours),
    )


def held_out_slots(
    known: Mapping[str, tuple[int, float]], history_hours: int, held_slots: Iterable[str]
) -> tuple[dict[str, tuple[int, float]], int]:
    """A person's local hours of the week (slot -> (hourly buckets, weight)) and hours of history
    less the slots of an alerted subject's quarantined hours (``wd09``, one per hour: each was
    counted once, where its calls came from), so that an attacker's own hours never make their
    hour of the day the victim's."""
    counted = dict(known)
    held = 0
    for slot in held_slots:
        buckets, weight = counted.get(slot, (0, 0.0))
        if buckets > 0:
            counted[slot] = (buckets - 1, weight)
            held += 1
    return counted, max(0, history_hours - held)


def client_evidence(
    user_agents: Iterable[str], known: Mapping[str, tuple[int, float]], history_hours: int
) -> Evidence | None:
    """The new-client factor: some client family among ``user_agents`` is absent from ``known``
    (the identity's families with their hourly buckets, before this run), and the identity has
    ``MIN_CLIENT_HISTORY_HOURS`` of client history. AWS's own calls have no family, never new."""
    if history_hours < MIN_CLIENT_HISTORY_HOURS:
        return None
    new: dict[str, None] = {}
    for agent in user_agents:
        family = client_family(agent)
        if family is not None and known.get(family, (0, 0.0))[0] <= 0:
            new[family] = None
    if not new:
        return None
    usual = sorted(known, key=lambda f: (-known[f][0], f))[:3]
    text = (
        f"{NEW_CLIENT.title}: {', '.join(list(new)[:3])}{' and more' if len(new) > 3 else ''}, "
        f"never used by this identity in {history_hours} hours of history"
        + (f" (usually {', '.join(usual)})" if usual else "")
    )
    return Evidence(factor=NEW_CLIENT.name, raises=NEW_CLIENT.raises, text=text)


# Hours (buckets) in which an Identity Center user's colleagues of the same permission set in the
# account called a sensitive method for it to be part of their job, not news when one more does.
PEER_ROUTINE_BUCKETS = 3


def new_sensitive_methods(
    sensitive_methods: Iterable[str],
    known: Mapping[str, tuple[int, float]],
    history_hours: int,
    peers: Mapping[str, tuple[int, float]] | None = None,
) -> tuple[str, ...]:
    """The alert's sensitive methods that are news for the identity: those absent from ``known``
    (its sensitive methods with their hourly buckets, before this run) and not routine for its
    ``peers`` (its permission set's in the account: called in ``PEER_ROUTINE_BUCKETS`` hours); all
    of them while it has less than ``MIN_CLIENT_HISTORY_HOURS`` of history (nothing to compare
    with: a new key, user or role calling IAM is news)."""
    methods = tuple(dict.fromkeys(sensitive_methods))
    if history_hours < MIN_CLIENT_HISTORY_HOURS:
        return methods
    routine = peers or {}
    return tuple(
        m
        for m in methods
        if known.get(m, (0, 0.0))[0] <= 0 and routine.get(m, (0, 0.0))[0] < PEER_ROUTINE_BUCKETS
    )


def sensitive_evidence(new: Sequence[str], history_hours: int) -> Evidence | None:
    """The new-sensitive-method factor: ``new`` (what :func:`new_sensitive_methods` found news for
    the identity) holds a method, and the identity has ``MIN_CLIENT_HISTORY_HOURS`` of history
    (with less, every sensitive method is news for a re-alert but says nothing of an attack)."""
    if history_hours < MIN_CLIENT_HISTORY_HOURS or not new:
        return None
    text = (
        f"{NEW_SENSITIVE_METHOD.title}: {', '.join(plain(m, 120) for m in new[:3])}"
        f"{' and more' if len(new) > 3 else ''}, never called by this identity in {history_hours} hours"
    )
    return Evidence(factor=NEW_SENSITIVE_METHOD.name, raises=NEW_SENSITIVE_METHOD.raises, text=text)


def learned_egress(buckets: int, first_seen: str | None, last_seen: str | None, at: datetime) -> bool:
    """Whether a shared hosting address (its ``OX`` counter: ``buckets`` distinct hours shared by
    colleagues for whom its country is usual, first and last of them) is the organization's learned
    egress at ``at``: shared in ``MIN_EGRESS_HOURS`` hours, first more than ``EGRESS_LEARNING`` ago,
    last within ``EGRESS_MEMORY``."""
    if buckets < MIN_EGRESS_HOURS or not first_seen:
        return False
    return first_seen <= _stamp(at - EGRESS_LEARNING) and remembered_egress(last_seen, at)


def remembered_egress(last_seen: str | None, at: datetime) -> bool:
    """Whether a hosting address colleagues last shared at ``last_seen`` is still the organization's
    egress at ``at``: shared within ``EGRESS_MEMORY``."""
    return last_seen is not None and last_seen >= _stamp(at - EGRESS_MEMORY)


def held_at_egress(alert: Alert, learned: Collection[str]) -> bool:
    """Whether ``alert`` is held back because it came only from the organization's learned egress
    (``learned``) and carries no evidence that raises it: calls through the company's VPN gateway say
    where the gateway is, not the caller. A new client or a sensitive method new to the identity
    still alerts from there, and a list of addresses the alert cut short is never "only"."""
    addresses = alert.source.ip
    if not addresses or alert.omitted.source_ip or any(e.raises > 0 for e in alert.evidence):
        return False
    return all(ip in learned for ip in addresses)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def hour_evidence(
    slots: Collection[tuple[str, int]], known: Mapping[str, tuple[int, float]], history_hours: int
) -> Evidence | None:
    """The unusual-hour factor: every one of ``slots`` (the alert's hours as local time where its
    calls came from: ``core.local_time.local_slot``) has under ``USUAL_HOUR_SHARE`` of the person's
    hours within ``HOUR_MARGIN`` hours of it on the same kind of day; ``known`` holds those hours
    (category ``wd09`` -> (buckets, weight)) from ``history_hours`` hours of history."""
    if history_hours < MIN_HOUR_HISTORY or not slots:
        return None
    total = sum(buckets for buckets, _ in known.values())
    if total <= 0:
        return None

    def near(slot: tuple[str, int]) -> int:
        day, hour = slot
        return sum(
            known.get(f"{day}{(hour + d) % 24:02d}", (0, 0.0))[0]
            for d in range(-HOUR_MARGIN, HOUR_MARGIN + 1)
        )

    shares = {slot: near(slot) / total for slot in slots}
    if any(share >= USUAL_HOUR_SHARE for share in shares.values()):
        return None
    first = min(slots, key=lambda s: (s[0] != "wd", s[1]))
    kind = "a weekday" if first[0] == "wd" else "the weekend"
    text = (
        f"{UNUSUAL_HOUR.title}: {first[1]:02d}:00 local time on {kind}"
        + (f" (and {len(slots) - 1} more hour{'s' if len(slots) > 2 else ''})" if len(slots) > 1 else "")
        + f", when this person made {max(shares.values()):.1%} of their calls within {HOUR_MARGIN} hours"
        f" of it in {history_hours} hours of history"
    )
    return Evidence(factor=UNUSUAL_HOUR.name, raises=UNUSUAL_HOUR.raises, text=text)


def is_person(identity: str) -> bool:
    """Whether a subject identity (``identities.subject_identity``) is one person: an Identity
    Center user (``sso:<user>``) or an IAM user; a role is whoever assumes it."""
    return identity.startswith("sso:") or (identity.startswith("arn:") and ":user/" in identity)


def concurrent_evidence(hours: Collection[int], usual: Mapping[str, Collection[int]]) -> Evidence | None:
    """The concurrent-use factor: ``usual`` (country -> hours of this run's calls from there, by the
    same person, from access networks, in countries usual for them) holds a call within
    ``CONCURRENT_HOURS`` of one of the alert's ``hours`` (its calls from access networks)."""
    near = {h + d for h in hours for d in range(-CONCURRENT_HOURS, CONCURRENT_HOURS + 1)}
    found = sorted(country for country, at in usual.items() if not near.isdisjoint(at))
    if not found:
        return None
    text = (
        f"{CONCURRENT_USE.title}: the same person also called from {', '.join(found[:3])}"
        f"{' and more' if len(found) > 3 else ''} (usual for them) within an hour of these calls, "
        "both from consumer or business networks"
    )
    return Evidence(factor=CONCURRENT_USE.name, raises=CONCURRENT_USE.raises, text=text)


def travel_evidence(
    country: str,
    hours: Collection[int],
    whereabouts: Mapping[str, Mapping[str, Collection[int]]],
    km: Callable[[str, str], int | None],
) -> Evidence | None:
    """The impossible-travel factor of calls from ``country`` in ``hours`` (hour numbers since the
    epoch): ``whereabouts`` (how the person was placed, ``called`` or ``signed in``, -> country ->
    hours) holds another country farther from ``country`` (``km``: the least distance, None when
    unknown) than ``TRAVEL_KMH`` covers between one of its hours and one of the alert's (two hour
    buckets ``n`` apart may be ``n + 1`` hours apart)."""
    if not hours:
        return None
    best: tuple[int, int, str, str, int] | None = None  # (hours apart, -km, how, country, hour)
    for how, places in sorted(whereabouts.items()):
        for other, at in sorted(places.items()):
            distance = km(other, country) if other != country else None
            if not distance:
                continue
            for h0 in at:
                apart = min(abs(h - h0) for h in hours)
                if distance > TRAVEL_KMH * (apart + 1) and (best is None or (apart, -distance) < best[:2]):
                    best = (apart, -distance, how, other, h0)
    if best is None:
        return None
    apart, distance, how, other, h0 = best
    when = datetime.fromtimestamp(h0 * 3600, tz=UTC).strftime("%Y-%m-%d %H:00 UTC")
    gap = "in the same hour as" if apart == 0 else f"{apart} hour{'s' if apart > 1 else ''} from"
    text = (
        f"{IMPOSSIBLE_TRAVEL.title}: the same person {how} from {plain(other, 8)} ({when}, a consumer "
        f"or business network), {gap} these calls from {plain(country, 8)}; the two countries are at "
        f"least {-distance:,} km apart, more than {TRAVEL_KMH:,} km an hour covers in {apart + 1} "
        f"hour{'s' if apart else ''}"
    )
    return Evidence(factor=IMPOSSIBLE_TRAVEL.name, raises=IMPOSSIBLE_TRAVEL.raises, text=text)


def sign_in_evidence(
    networks: Mapping[str, str | None], signed_in: Mapping[str, Collection[int]], hours: Collection[int]
) -> Evidence | None:
    """The MFA sign-in factor: every address of the alert (``networks``: address -> its sign-in
    network, ``core.sign_ins.sign_in_network``; None for no public address) is on a network the
    person signed in from with a phishing-resistant factor (``signed_in``: network -> the hours of
    those sign-ins) in one of the alert's ``hours`` or the ``SIGN_IN_HOURS`` before its first."""
    if not networks or not hours:
        return None
    earliest, latest = min(hours) - SIGN_IN_HOURS, max(hours)
    for network in networks.values():
        found = signed_in.get(network, ()) if network is not None else ()
        if not any(earliest <= h <= latest for h in found):
            return None
    places = sorted({n for n in networks.values() if n is not None})
    text = (
        f"{MFA_SIGN_IN.title}: the person signed in with a security key or passkey from "
        f"{', '.join(places[:3])}{' and more' if len(places) > 3 else ''} within {SIGN_IN_HOURS} hours "
        "before these calls"
    )
    return Evidence(factor=MFA_SIGN_IN.name, raises=MFA_SIGN_IN.raises, text=text)


def session_evidence(
    signed_in: Collection[int], there: Collection[int], hours: Collection[int], country: str
) -> Evidence | None:
    """The session-elsewhere factor: the person signed in (``signed_in``: the hours of their
    Identity Center sign-ins from access networks) in one of the alert's ``hours`` or the
    ``SIGN_IN_HOURS`` before its first, and never from the alert's country or its addresses'
    autonomous systems (``there``: the hours of those) in that time."""
    if not hours:
        return None
    earliest, latest = min(hours) - SIGN_IN_HOURS, max(hours)
    if not any(earliest <= h <= latest for h in signed_in) or any(earliest <= h <= latest for h in there):
        return None
    text = (
        f"{SESSION_ELSEWHERE.title}: the person signed in to IAM Identity Center within "
        f"{SIGN_IN_HOURS} hours before these calls, never from {plain(country, 8)} or these networks"
    )
    return Evidence(factor=SESSION_ELSEWHERE.name, raises=SESSION_ELSEWHERE.raises, text=text)


def held_signed_in(alert: Alert) -> bool:
    """Whether ``alert`` is held back because the person signed in there with a security key
    (``MFA_SIGN_IN`` among its evidence) and nothing raises it; a list of addresses the alert cut
    short is never all signed in from."""
    evidence = alert.evidence
    return (
        not alert.omitted.source_ip
        and any(e.factor == MFA_SIGN_IN.name for e in evidence)
        and not any(e.raises > 0 for e in evidence)
    )


def evidenced_severity(base: Severity, factors: Mapping[str, int]) -> Severity:
    """``base`` raised by the ``factors`` present (name -> levels): each adds its levels, up to
    critical, except that factors which only corroborate (``corroborates_only``), alone among the
    raising ones, take it no higher than ``CORROBORATED_ONLY_CEILING`` (never below ``base``)."""
    severity = raised(base, sum(factors.values()))
    raising = [name for name, levels in factors.items() if levels > 0]
    known = [REGISTRY[name] for name in raising if name in REGISTRY]
    if raising and len(known) == len(raising) and all(f.corroborates_only for f in known):
        ceiling = max(base, CORROBORATED_ONLY_CEILING, key=SEVERITY_LEVELS.index)
        severity = min(severity, ceiling, key=SEVERITY_LEVELS.index)
    return severity


def raised(severity: Severity, levels: int) -> Severity:
    return SEVERITY_LEVELS[min(SEVERITY_LEVELS.index(severity) + max(0, levels), len(SEVERITY_LEVELS) - 1)]


def with_evidence(
    alert: Alert,
    networks: list[Network],
    extra: Iterable[Evidence] = (),
    *,
    colleagues: Mapping[str, int] | None = None,
    egress: Collection[str] = (),
    enabled: Collection[str] = FACTORS,
) -> Alert:
    """``alert`` with the networks of its addresses and the factors present (from the networks, and
    ``extra`` found elsewhere), those in ``enabled`` counted: each raises the severity by its levels
    (up to critical) and adds a line to the explanation."""
    found = [e for e in (*hosting_evidence(networks, colleagues, egress), *extra) if e.factor in enabled]
    if not networks and not found:
        return alert
    update: dict[str, object] = {"networks": networks, "evidence": [*alert.evidence, *found]}
    if found:
        update["severity"] = evidenced_severity(alert.severity, {e.factor: e.raises for e in found})
        update["explanation"] = alert.explanation + "\n" + "\n".join(_line(e) for e in found)
    return alert.model_copy(update=update)


def _line(evidence: Evidence) -> str:
    if evidence.raises == 0:
        return f"Evidence: {evidence.text} (weighs nothing)."
    plural = "s" if evidence.raises != 1 else ""
    factor = REGISTRY.get(evidence.factor)
    if factor is not None and factor.corroborates_only:
        return (
            f"Evidence: {evidence.text} (severity raised {evidence.raises} level{plural}; alone, no "
            f"higher than {CORROBORATED_ONLY_CEILING})."
        )
    return f"Evidence: {evidence.text} (severity raised {evidence.raises} level{plural})."
