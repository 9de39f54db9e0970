"""An enterprise's CloudTrail, simulated: hundreds of people, a dozen home countries, ~15 accounts.

:mod:`trailgeo_tools.simulate` models a 35-person organization (``eval_config``). Real organizations
are messier, and most of the mess is benign. This module builds one from how they work, with the
simulator's machinery (people, automation, AWS services, delivery into the bucket layout), not from
what the detector happens to handle:

* **People** (220 by default) living in 12 countries (US, IN, DE, GB, PL, BR, CA, FR, MX, NL, ES, JP),
  in teams (developer, platform, data, security) with a team-typical set of accounts among 15.
  Mostly IAM Identity Center users: one person is ``AWSReservedSSO_<PermissionSet>_<hash>/<email>`` in
  every account of their team; a few keep a legacy IAM user with a long-term ``AKIA`` key.
* **Offices and home lines.** Offices in the US (two), IN, DE, GB, PL and BR with one egress address
  each, shared by everyone there; hybrid work (office on about half of the weekdays); every other
  day from a home line, a fifth of the people in the US, DE, IN, GB, FR, PL and BR over IPv6.
* **Cross-border commuters**: half of the people living in MX and CA work at a US office, half of those
  in NL at the German one: two countries every week from day one.
* **Corporate VPN** with egress on EC2 in us-east-1 (US), eu-central-1 (DE) and ap-south-1 (IN): a
  quarter of the people use it on some days (the gateway of their region, now and then the other
  one); later the data team is told to use it every day (a roll-out).
* **GeoIP error**: days on which a person's home line geolocates to a neighbouring country (a new
  address from a block the database places across the border).
* **Trips, a team offsite and a conference**: single travellers; a team of 8-12 in one country for
  three days behind the venue's Wi-Fi; 10-16 colleagues from abroad at a conference in the US.
* **New hires** in countries where colleagues live and in countries where nobody does.
* **Vendors**: a managed-service provider whose staff in IN, PL and the US assume a role in four
  accounts, and an audit firm in GB and DE; the provider takes on staff in a new country.
* **Automation** on EC2 addresses in us-east-1 and a deployer in eu-central-1, AWS Config, CloudTrail.

Attacks (each an ``incident_group``; see :data:`ATTACK_SCENARIOS`): a stolen key used from a country
new to the organization, a hijacked admin session with persistence, a hijacked session used from a
country where many colleagues live (IN) with the victim's own user agent (both hijacks within the
access portal session of one of the victim's own sign-ins: the stolen cookie or cached token is
only good while it lasts), a stolen key used from EC2 in
another region, a stolen key over IPv6, a compromised vendor role (a real staffer's session name and
user agent), low-and-slow (a probe, the theft days later), a role chain (a stolen key assumes
``OrganizationAccountAccessRole`` in 2-3 other accounts from the same address: one incident, several
accounts and principals) and a stolen key used from a country known to the organization but new to the
victim, with the victim's user agent.

Ground truth (:meth:`EnterpriseSimulation.ground_truth`): ``incidents``, each with ``kind``
(``attack``/``benign``), ``benign_kind`` (:data:`BENIGN_KINDS`), ``incident_group`` (an attack across
accounts, an offsite, a conference and a VPN roll-out are one group), the accounts, principals,
country and times measured on the emitted records, and whether the country was new to the organization
or to the principal's identity (an SSO person is one identity in every account).

Every public address comes from a long-stable allocation (:func:`enterprise_emittable_ips`; the tests
check each against DB-IP Lite). Same configuration, same bytes. No CloudTrail-Digest files (the
detector skips them; they would only add objects).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trailgeo_tools.simulate import (
    _ATTACK_USER_AGENTS,
    _DAY,
    _EC2_US_EAST_1,
    _HOUR,
    _IDCHARS,
    _KEYCHARS,
    _PUBLIC_PREFIXES,
    _UTC_OFFSETS,
    SimulatedFile,
    SimulationConfig,
    _deliver,
    _HumanActor,
    _iso,
    _Method,
    _persistence_steps,
    _pick,
    _rand,
    _resources,
    _RoleActor,
    _run_services,
    _run_steps,
    _Step,
    _theft_steps,
    _uuid,
    _World,
)

__all__ = [
    "ATTACK_SCENARIOS",
    "BENIGN_KINDS",
    "EnterpriseConfig",
    "EnterpriseSimulation",
    "enterprise_config",
    "enterprise_emittable_ips",
    "simulate_enterprise",
    "write_enterprise_tree",
]

# ----------------------------------------------------------------------------------------------------------
# Address space beyond simulate.py's (each checked against DB-IP Lite by the tests)
# ----------------------------------------------------------------------------------------------------------
# Home ISPs of destinations simulate.py has none for: MEO / NOS (PT), Eir / Vodafone (IE).
_EXTRA_V4: dict[str, tuple[str, ...]] = {
    "PT": ("85.138.10", "188.80.5", "94.61.10", "89.114.5"),
    "IE": ("86.40.10", "89.100.5", "109.76.10", "37.228.200"),
}
# EC2 public ranges by region: ap-south-1 (13.126/15, 13.232/14, 3.6/15, 65.0/14), eu-central-1 (3.120/14,
# 18.184/13, 35.156/14, 52.28/16, 54.93/16), ap-southeast-1 (13.228/15, 18.136/16, 52.74/16, 54.169/16).
_EC2: dict[str, tuple[str, tuple[str, ...]]] = {
    "us-east-1": ("US", _EC2_US_EAST_1),
    "eu-central-1": ("DE", ("3.120.10", "18.184.20", "35.156.30", "52.28.10", "54.93.20")),
    "ap-south-1": ("IN", ("13.126.10", "13.232.5", "3.6.5", "3.108.10", "65.0.10")),
    "ap-southeast-1": ("SG", ("13.228.10", "18.136.20", "52.74.30", "54.169.40", "54.251.10")),
}
# IPv6 /48s of home broadband and mobile operators (Comcast, AT&T, Charter; Deutsche Telekom, Vodafone;
# Reliance Jio, Airtel; BT, Sky; Orange, Free; UPC, Orange Polska; Claro, Vivo) and of attack countries
# (VNPT, Viettel, FPT; Telkomsel, Telkom Indonesia; MTN Nigeria).
_V6: dict[str, tuple[str, ...]] = {
    "US": ("2601:645:8000", "2601:1c2:4000", "2600:1700:3e40", "2603:7000:9a00"),
    "DE": ("2003:e5:7f00", "2003:c9:cf00", "2003:d0:1a00", "2a02:8108:1100"),
    "IN": ("2409:4040:e00", "2409:4073:2000", "2401:4900:1c00", "2405:201:6000"),
    "GB": ("2a00:23c7:a000", "2a00:23c5:e900", "2a02:c7c:3000"),
    "FR": ("2a01:cb00:840", "2a01:e0a:1a0", "2a01:cb1d:8000"),
    "PL": ("2a02:a31a:a000", "2a01:110f:4000", "2a02:a311:4000"),
    "BR": ("2804:14c:5b80", "2804:d41:1000", "2804:14d:1a00"),
    "VN": ("2402:800:6300", "2405:4802:1000", "2001:ee0:4000"),
    "ID": ("2001:448a:1000", "2404:c0:3000"),
    "NG": ("2c0f:f5c0:400",),
}
_V6_SUBNETS = range(1, 9)  # <prefix>:<subnet>::<host>, hosts 1-254


def _v4_prefixes() -> dict[str, tuple[str, ...]]:
    merged = {c: tuple(p) for c, p in _PUBLIC_PREFIXES.items()}
    for country, prefixes in _EXTRA_V4.items():
        merged[country] = merged.get(country, ()) + prefixes
    return merged


_V4 = _v4_prefixes()


def enterprise_emittable_ips() -> dict[str, tuple[str, ...]]:
    """Every public address the enterprise simulation can emit, by the country DB-IP must return.

    IPv4: hosts .1-.254 of each /24 (home, office and trip networks, EC2 by region). IPv6: hosts 1-254
    of subnets 1-8 of each /48. Private VPC addresses, ``AWS Internal`` and service names are not listed.
    """
    out: dict[str, list[str]] = {}
    for country, prefixes in _V4.items():
        out.setdefault(country, []).extend(f"{p}.{h}" for p in prefixes for h in range(1, 255))
    for country, prefixes in _EC2.values():
        out.setdefault(country, []).extend(f"{p}.{h}" for p in prefixes for h in range(1, 255))
    for country, prefixes in _V6.items():
        out.setdefault(country, []).extend(
            f"{p}:{s:x}::{h:x}" for p in prefixes for s in _V6_SUBNETS for h in range(1, 255)
        )
    return {c: tuple(ips) for c, ips in sorted(out.items())}


_COUNTRY_OF: dict[str, str] = (
    {p: c for c, ps in _V4.items() for p in ps}
    | {p: c for c, ps in _EC2.values() for p in ps}
    | {p: c for c, ps in _V6.items() for p in ps}
)


def country_of(ip: str) -> str | None:
    """The country the simulation meant for an address it emitted (None: private, a service, AWS Internal)."""
    if ":" in ip:
        return _COUNTRY_OF.get(":".join(ip.split(":")[:3]))
    return _COUNTRY_OF.get(ip.rpartition(".")[0])


def _unused(draw: Callable[[], str], avoid: set[str]) -> str:
    """The first address ``draw`` gives that is not in ``avoid`` (added to it)."""
    while True:
        ip = draw()
        if ip not in avoid:
            avoid.add(ip)
            return ip


def _v4(rng: random.Random, country: str, avoid: set[str]) -> str:
    return _unused(lambda: f"{rng.choice(_V4[country])}.{rng.randint(2, 254)}", avoid)


def _v6(rng: random.Random, country: str, avoid: set[str]) -> str:
    return _unused(
        lambda: f"{rng.choice(_V6[country])}:{rng.choice(_V6_SUBNETS):x}::{rng.randint(1, 254):x}", avoid
    )


def _ec2(rng: random.Random, region: str, avoid: set[str]) -> str:
    return _unused(lambda: f"{rng.choice(_EC2[region][1])}.{rng.randint(2, 254)}", avoid)


# ----------------------------------------------------------------------------------------------------------
# The organization
# ----------------------------------------------------------------------------------------------------------
_ACCOUNT_NAMES = (
    "management",
    "security-tooling",
    "log-archive",
    "network",
    "shared-services",
    "identity",
    "prod-web",
    "prod-payments",
    "prod-data",
    "staging",
    "dev",
    "sandbox",
    "data-lake",
    "ml-platform",
    "ci-tools",
)
_ACCOUNTS = tuple(f"{3 + k % 6}{(k * 7_919_333 + 12_345_678) % 10**11:011d}" for k in range(15))
# Accounts of each team (indexes into _ACCOUNTS); a person gets the first one and 2-4 of the others.
_TEAM_ACCOUNTS: dict[str, tuple[int, ...]] = {
    "developer": (10, 9, 6, 7, 11, 14),
    "platform": (3, 4, 6, 7, 8, 9, 10, 14, 0, 5),
    "data": (12, 8, 13, 10, 9),
    "security": (1, 2, 0, 5, 6, 7, 8),
}
_TEAM_CYCLE = ("developer", "developer", "platform", "data", "developer", "security", "developer", "platform")
# Home countries and their weight in the default 220 people.
_HOMES: tuple[tuple[str, int], ...] = (
    ("US", 70),
    ("IN", 44),
    ("DE", 20),
    ("GB", 16),
    ("PL", 14),
    ("BR", 12),
    ("CA", 8),
    ("FR", 8),
    ("MX", 8),
    ("NL", 7),
    ("ES", 7),
    ("JP", 6),
)
_OFFICES: dict[str, int] = {"US": 2, "IN": 1, "DE": 1, "GB": 1, "PL": 1, "BR": 1}  # country -> offices
_COMMUTE_TO: dict[str, str] = {"MX": "US", "CA": "US", "NL": "DE"}  # lives -> office country
_IPV6_HOMES = frozenset(_V6) - {"VN", "ID", "NG"}
_VPN_GATEWAY: dict[str, str] = {  # home country -> nearest gateway region
    "US": "us-east-1",
    "CA": "us-east-1",
    "MX": "us-east-1",
    "BR": "us-east-1",
    "IN": "ap-south-1",
    "JP": "ap-south-1",
} | dict.fromkeys(("DE", "GB", "PL", "FR", "NL", "ES"), "eu-central-1")
_NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "DE": ("NL", "PL", "FR"),
    "US": ("CA",),
    "GB": ("IE",),
    "FR": ("ES", "DE"),
    "PL": ("DE",),
    "NL": ("DE",),
    "CA": ("US",),
    "MX": ("US",),
    "ES": ("FR",),
    "BR": ("AR",),
}
_OFFSETS: dict[str, tuple[int, ...]] = {**_UTC_OFFSETS, "PT": (0,), "IE": (0,), "PH": (480,), "EG": (120,)}
_TRIP_DESTINATIONS = ("FR", "ES", "JP", "AU", "IT", "NL", "CA", "GB", "DE", "IN", "US")
_OFFSITE_COUNTRIES = ("PT", "IT", "ES")
_NEW_ORG_ATTACK = ("VN", "RO", "NG", "ID", "TR", "KR", "TH")
_VENDOR_NEW = ("PH", "EG")
ATTACK_SCENARIOS = (
    "stolen-key-new-country",
    "hijacked-admin-persistence",
    "hijacked-session-org-country-copied-ua",
    "stolen-key-from-ec2-other-region",
    "stolen-key-ipv6",
    "compromised-vendor-role",
    "low-and-slow",
    "role-chain",
    "stolen-key-known-country-copied-ua",
)
BENIGN_KINDS = (
    "trip",
    "offsite",
    "conference",
    "commuter",
    "geoip_error",
    "new_hire",
    "vpn",
    "vendor",
)
_ASSUME: _Method = ("sts", "AssumeRole", True, "")
_CHAIN_ROLE = "OrganizationAccountAccessRole"


@dataclass(frozen=True, slots=True)
class EnterpriseConfig:
    """Parameters of the simulated enterprise. ``start`` must be a UTC midnight (a Monday is usual)."""

    seed: int
    days: int = 28
    start: datetime = datetime(2026, 3, 2, tzinfo=UTC)
    people: int = 220
    events_per_person_hour: float = 12.0
    accounts: int = 15
    regions: tuple[str, ...] = ("us-east-1", "eu-west-1")
    first_episode_day: int = 11  # attacks and most benign episodes from here on (a 10-day baseline)
    attacks: bool = True
    vendors: bool = True

    def __post_init__(self) -> None:
        if self.days < self.first_episode_day + 7:
            raise ValueError(f"the enterprise needs at least {self.first_episode_day + 7} days")
        if not 60 <= self.people <= 2000:
            raise ValueError("people must be between 60 and 2000")
        if not 8 <= self.accounts <= len(_ACCOUNTS):
            raise ValueError(f"accounts must be between 8 and {len(_ACCOUNTS)}")

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "days": self.days,
            "start": _iso(int(self.start.timestamp())),
            "people": self.people,
            "events_per_person_hour": self.events_per_person_hour,
            "accounts": self.accounts,
            "regions": list(self.regions),
            "first_episode_day": self.first_episode_day,
            "attacks": self.attacks,
            "vendors": self.vendors,
        }


def enterprise_config(seed: int, days: int = 28) -> EnterpriseConfig:
    """The evaluation's enterprise (``trailgeo-tools eval --org enterprise``)."""
    return EnterpriseConfig(seed=seed, days=days)


@dataclass(frozen=True, slots=True)
class EnterpriseSimulation:
    """The simulated bucket and its ground truth."""

    config: EnterpriseConfig
    files: list[SimulatedFile]
    events_count: int
    truth: dict[str, Any]

    def ground_truth(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.truth))  # type: ignore[no-any-return]

    def records(self) -> Iterator[tuple[SimulatedFile, dict[str, Any]]]:
        import gzip

        for f in self.files:
            for rec in json.loads(gzip.decompress(f.body))["Records"]:
                yield f, rec

    def digest(self) -> str:
        """SHA-256 over every object's key and bytes and the ground truth (determinism checks)."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.key.encode() + b"\n" + f.body + b"\n")
        h.update(json.dumps(self.truth, sort_keys=True).encode())
        return h.hexdigest()


def write_enterprise_tree(sim: EnterpriseSimulation, root: Path) -> None:
    """Every object under ``root/<key>``, as the bucket would hold it."""
    made: set[Path] = set()
    for f in sim.files:
        path = root / f.key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(f.body)


# ----------------------------------------------------------------------------------------------------------
# Tagged world: records of an episode are tagged without stopping SSO users from hopping accounts
# ----------------------------------------------------------------------------------------------------------
class _EntWorld(_World):
    def __init__(self, cfg: SimulationConfig) -> None:
        super().__init__(cfg)
        self.episode: str | None = None
        self.vpn: dict[str, list[str]] = {}  # gateway region -> egress addresses

    def add(self, ts: int, account: str, region: str, rec: dict[str, Any]) -> None:
        if not self.t0 <= ts < self.t1:
            return
        key = (account, region, ts // self.slot)
        lst = self.buckets.get(key)
        if lst is None:
            lst = self.buckets[key] = []
        lst.append((ts, rec))
        self.count += 1
        tag = self.episode or self.tag
        if tag is not None and rec["sourceIPAddress"] != "AWS Internal":
            self.tagged.setdefault(tag, []).append((account, region, ts, rec))


# People who sign in to IAM Identity Center with a security key or passkey (the rest use an
# authenticator app), and how long an access portal session lasts (Identity Center's default).
_WEBAUTHN_SHARE = 0.7
_PORTAL_SESSION = 8 * _HOUR


@dataclass(slots=True)
class _Net:
    """Where a person's calls come from on one day, and the episode it belongs to."""

    offset: int
    ips: list[str]
    cum: list[float]
    tag: str | None = None


@dataclass(slots=True)
class _Away:
    start: int  # local epoch day
    end: int  # inclusive
    net: _Net


class _Person(_HumanActor):
    """A person of the enterprise: offices, home lines (IPv6 too), VPN, commuting, episodes."""

    in_identity_center = True  # signs in to the organization's IAM Identity Center (an SSO person)

    def __init__(
        self,
        world: _EntWorld,
        index: int,
        *,
        country: str,
        team: str,
        iam_user: bool,
        accounts: tuple[str, ...],
    ) -> None:
        known = country if country in _UTC_OFFSETS else "US"  # the base actor knows fewer time zones
        super().__init__(world, index, iam_user, world.rng("person", index), country=known, profile=team)
        rng = world.rng("person-net", index)
        if known != country:
            self.country, self.offset = country, rng.choice(_OFFSETS[country]) * 60
            self.ips, self.ip_cum = [_v4(rng, country, set())], [1.0]
        self.ent = world
        self.accounts = accounts
        self.home_account = accounts[0]
        self.team = team
        self.net_rng = rng
        self.home_ips = list(self.ips)
        self.home_cum = list(self.ip_cum)
        if country in _IPV6_HOMES and rng.random() < 0.2:
            self.home_ips.append(_v6(rng, country, set()))
            self.home_cum.append(self.home_cum[-1] * 1.6)  # dual stack: ~40% of the calls over IPv6
        self.office: str | None = None  # office egress address
        self.office_share = 0.0
        self.commuter_tag: str | None = None
        self.vpn_rate = 0.0
        self.vpn_from: int | None = None  # local day from which the VPN is always on (a roll-out)
        self.vpn_tags: dict[str, str] = {}  # gateway country -> episode id (when not the home country)
        self.away: list[_Away] = []
        self.glitches: dict[int, _Net] = {}  # local day -> a home line geolocated across the border
        # Identity Center sign-ins (their own stream: the rest of the simulation draws as before).
        # Most people sign in with a security key or passkey, the others with an authenticator app.
        self.sign_in_rng = world.rng("person-sign-in", index)
        self.mfa = "WEBAUTHN" if self.sign_in_rng.random() < _WEBAUTHN_SHARE else "TOTP"
        self.directory_id = _uuid(self.sign_in_rng)
        self.signed_in_until = 0  # the access portal's session lasts _PORTAL_SESSION
        self.sign_in_times: list[int] = []  # when each portal session began (a hijack happens in one)

    def all_arns(self) -> tuple[str, ...]:
        if self.kind == "iam_user":
            return (self.user_arn(self.home_account),)
        return tuple(
            f"arn:aws:sts::{a}:assumed-role/{self.sso_role(a)[0]}/{self.email}" for a in self.accounts
        )

    def identity(self) -> str:
        return f"sso:{self.email}" if self.kind == "sso" else self.user_arn(self.home_account)

    def run(self) -> None:
        w = self.ent
        first = (w.t0 + self.offset) // _DAY - 1
        last = (w.t1 + self.offset) // _DAY + 1
        home_offset = self.offset
        for day in range(first, last + 1):
            if self.start_day is not None and day < self.start_day:
                continue
            net, forced = self.network(day)
            self.move_to(self.whereabouts(day))
            self.offset, self.ips, self.ip_cum = net.offset, net.ips, net.cum
            w.episode = net.tag or self.hire_tag
            try:
                self.day(day, day * _DAY - net.offset, forced=forced or self.start_day == day)
            finally:
                self.offset = home_offset
                w.episode = None

    def whereabouts(self, day: int) -> str:
        """The country the person is in on ``day``: away (a trip, an offsite, a conference) or at
        home (a VPN's gateway, an office across the border or a home line geolocated there move
        nobody far)."""
        for away in self.away:
            if away.start <= day <= away.end:
                return country_of(away.net.ips[0]) or self.country
        return self.country

    def work(self, day: int, midnight: int, start_h: float, end_h: float, budget: float) -> None:
        """A work session, begun with a sign-in to the access portal when its session has ended, and
        signed in again whenever the portal session ends before the work does (the CLI and the
        portal ask: role credentials come only from a live portal session). None while the person
        is on their way to where the day is spent (``move_to``)."""
        arrived = self.arrived(midnight, start_h, end_h, budget)
        if arrived is None:  # on the way
            return
        start_h, budget = arrived
        at = midnight + int(start_h * _HOUR) - self.sign_in_rng.randint(60, 900)
        end = midnight + int(end_h * _HOUR)
        if self.kind == "sso" and self.in_identity_center:
            if at >= self.signed_in_until:
                self.sign_in(at)
            while self.signed_in_until < end + _HOUR:  # a burst of calls may run past the hour
                self.sign_in(self.signed_in_until - self.sign_in_rng.randint(60, 300))
        super().work(day, midnight, start_h, end_h, budget)

    def sign_in(self, ts: int) -> None:
        """An Identity Center sign-in from where the person is: the password's challenge (naming the
        user), its verification, the second factor's challenge and verification, then
        ``UserAuthentication``, one ``AuthWorkflowID`` for them all (the records CloudTrail writes in
        the Identity Center's account and region). Part of no episode: trailgeo reads them as
        evidence, never as calls."""
        w, rng = self.ent, self.sign_in_rng
        self.signed_in_until = ts + _PORTAL_SESSION
        self.sign_in_times.append(ts)
        ip = self.ips[_pick(rng, self.ip_cum)]
        workflow = _uuid(rng)
        account, region = w.cfg.accounts[0], w.cfg.regions[0]
        who = {
            "type": "IdentityCenterUser",
            "arn": "",
            "accountId": account,
            "accessKeyId": "",
            "onBehalfOf": {
                "userId": self.directory_id,
                "identityStoreArn": f"arn:aws:identitystore::{account}:identitystore/d-9067e2a1b3",
            },
        }
        verified, signed_in = {"CredentialVerification": "Success"}, {"UserAuthentication": "Success"}
        steps: list[tuple[str, dict[str, Any], dict[str, str] | None]] = [
            ("CredentialChallenge", {"CredentialType": "PASSWORD", "UserName": self.email}, None),
            ("CredentialVerification", {"CredentialType": "PASSWORD"}, verified),
            ("CredentialChallenge", {"CredentialType": self.mfa}, None),
            ("CredentialVerification", {"CredentialType": self.mfa}, verified),
            ("UserAuthentication", {"CredentialType": f"PASSWORD,{self.mfa}"}, signed_in),
        ]
        episode, w.episode = w.episode, None
        try:
            for n, (name, details, outcome) in enumerate(steps):
                rec: dict[str, Any] = {
                    "eventVersion": "1.10",
                    "userIdentity": who,
                    "eventTime": _iso(ts + 4 * n),
                    "eventSource": "signin.amazonaws.com",
                    "eventName": name,
                    "awsRegion": region,
                    "sourceIPAddress": ip,
                    "userAgent": self.browser,
                    "requestParameters": None,
                    "responseElements": None,
                    "additionalEventData": {
                        "AuthWorkflowID": workflow,
                        "LoginTo": "https://d-9067e2a1b3.awsapps.com/start/",
                        **details,
                    },
                    "eventID": _uuid(rng),
                    "readOnly": False,
                    "eventType": "AwsServiceEvent",
                    "managementEvent": True,
                    "recipientAccountId": account,
                    "eventCategory": "Management",
                }
                if outcome is not None:
                    rec["serviceEventDetails"] = outcome
                w.add(ts + 4 * n, account, region, rec)
        finally:
            w.episode = episode

    def network(self, day: int) -> tuple[_Net, bool]:
        """The day's network: away (trip, offsite, conference), a GeoIP glitch, VPN, office or home."""
        for away in self.away:
            if away.start <= day <= away.end:
                return away.net, True
        # A commuter's home days belong to the commuting too: the office country is the usual one.
        home_tag = f"{self.commuter_tag}/home" if self.commuter_tag else None
        home = _Net(self.offset, self.home_ips, self.home_cum, home_tag)
        if day in self.glitches:
            return self.glitches[day], True
        rng = self.net_rng
        weekday = (day + 3) % 7 < 5
        vpn = (self.vpn_from is not None and day >= self.vpn_from) or rng.random() < self.vpn_rate
        if vpn and weekday and self.hire_tag is None:
            return self.vpn_net(), False
        if self.office is not None and weekday and rng.random() < self.office_share:
            office_country = country_of(self.office)
            tag = self.commuter_tag if office_country != self.country else None
            return _Net(self.offset, [self.office], [1.0], tag), False
        return home, False

    def vpn_net(self) -> _Net:
        rng = self.net_rng
        region = _VPN_GATEWAY[self.country]
        if rng.random() < 0.1:  # the nearest gateway is down or slow: the client picks another
            region = rng.choice([r for r in ("us-east-1", "eu-central-1", "ap-south-1") if r != region])
        gateway_country = _EC2[region][0]
        return _Net(self.offset, self.ent.vpn[region], [1.0, 2.0], self.vpn_tags.get(gateway_country))


class _VendorStaff(_Person):
    """A vendor's employee: sessions of the vendor's role in our accounts, named after them."""

    in_identity_center = False  # the vendor's own directory signs them in, not ours

    def __init__(
        self,
        world: _EntWorld,
        index: int,
        *,
        country: str,
        team: str,
        role: str,
        session: str,
        accounts: tuple[str, ...],
    ) -> None:
        super().__init__(world, index, country=country, team=team, iam_user=False, accounts=accounts)
        self.role = role
        self.session = session
        self.tool_cum = list(itertools.accumulate((0.55, 0.0, 0.45, 0.0)))  # CLI and SDK, no console
        self.vpn_rate = 0.0
        self.office = None

    def role_arn(self, account: str) -> str:
        return f"arn:aws:sts::{account}:assumed-role/{self.role}/{self.session}"

    def all_arns(self) -> tuple[str, ...]:
        return tuple(self.role_arn(a) for a in self.accounts)

    def identity(self) -> str:
        return self.role_arn(self.home_account)

    def sso_ident(self, account: str, access_key_id: str, created: int) -> dict[str, Any]:
        role_id = "AROA" + _rand(self.world.rng("vendor-role", self.role, account), _IDCHARS, 17)
        return {
            "type": "AssumedRole",
            "principalId": f"{role_id}:{self.session}",
            "arn": self.role_arn(account),
            "accountId": account,
            "accessKeyId": access_key_id,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": f"arn:aws:iam::{account}:role/{self.role}",
                    "accountId": account,
                    "userName": self.role,
                },
                "webIdFederationData": {},
                "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "false"},
            },
        }


# ----------------------------------------------------------------------------------------------------------
# Episodes
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Episode:
    id: str
    kind: str  # "attack" | "benign"
    scenario: str
    group: str
    description: str
    benign_kind: str | None = None


@dataclass(slots=True)
class _Org:
    """Everything the builders share while the enterprise is assembled."""

    world: _EntWorld
    cfg: EnterpriseConfig
    rng: random.Random
    people: list[_Person]
    vendors: list[_VendorStaff] = field(default_factory=list)
    episodes: list[_Episode] = field(default_factory=list)
    busy: set[int] = field(default_factory=set)  # people with an episode (never an attack victim)
    used_ips: set[str] = field(default_factory=set)

    @property
    def base(self) -> int:
        return self.world.t0 // _DAY

    @property
    def last(self) -> int:
        return self.cfg.days - 1

    def weekday(self, day: int) -> bool:
        return (self.base + day + 3) % 7 < 5

    def weekday_in(self, lo: int, hi: int) -> int:
        days = [d for d in range(lo, hi + 1) if self.weekday(d)]
        return self.rng.choice(days or [lo])

    def free(self, pred: Any = None) -> list[_Person]:
        return [
            p
            for p in self.people
            if p.index not in self.busy and p.hire_tag is None and (pred is None or pred(p))
        ]

    def add(self, ep: _Episode) -> None:
        self.episodes.append(ep)


def _home_countries(n: int) -> list[str]:
    total = sum(w for _, w in _HOMES)
    exact = [(c, w * n / total) for c, w in _HOMES]
    counts = {c: max(1, int(x)) for c, x in exact}
    order = sorted(exact, key=lambda cx: (-(cx[1] - int(cx[1])), cx[0]))
    for c, _ in itertools.cycle(order):
        if sum(counts.values()) >= n:
            break
        counts[c] += 1
    return [c for c, _ in _HOMES for _ in range(counts[c])]


def _team_accounts(team: str, accounts: tuple[str, ...]) -> list[str]:
    """The team's accounts among the first ``len(accounts)`` (a smaller enterprise has fewer)."""
    return [accounts[k] for k in _TEAM_ACCOUNTS[team] if k < len(accounts)] or [accounts[-1], accounts[0]]


def _build_people(world: _EntWorld, cfg: EnterpriseConfig, accounts: tuple[str, ...]) -> list[_Person]:
    rng = world.rng("people")
    countries = _home_countries(cfg.people)
    rng.shuffle(countries)
    people: list[_Person] = []
    for i, country in enumerate(countries):
        team = _TEAM_CYCLE[i % len(_TEAM_CYCLE)]
        team_accounts = _team_accounts(team, accounts)
        mine = (
            team_accounts[0],
            *rng.sample(team_accounts[1:], min(len(team_accounts) - 1, rng.randint(2, 4))),
        )
        iam_user = i % 10 == 3  # a legacy IAM user with a long-term key, one in ten
        people.append(_Person(world, i, country=country, team=team, iam_user=iam_user, accounts=mine))
    return people


def _place_offices(org: _Org) -> None:
    rng = org.world.rng("offices")
    offices = {c: [_v4(rng, c, org.used_ips) for _ in range(n)] for c, n in _OFFICES.items()}
    commuter, candidates = 0, 0
    for p in org.people:
        if p.country in offices:
            p.office = rng.choice(offices[p.country])
            p.office_share = rng.uniform(0.3, 0.7)
        elif p.country in _COMMUTE_TO and (candidates := candidates + 1) % 2 == 1:  # every other one
            commuter += 1
            p.office = rng.choice(offices[_COMMUTE_TO[p.country]])
            p.office_share = rng.uniform(0.4, 0.7)
            p.commuter_tag = f"commuter-{commuter}"
            org.busy.add(p.index)
            where = _COMMUTE_TO[p.country]
            what = f"{p.name} lives in {p.country} and works at the {where} office on office days"
            org.add(_Episode(p.commuter_tag, "benign", "commuter", p.commuter_tag, what, "commuter"))
            what = f"{p.name} at home in {p.country} on the other days (the office in {where} is usual)"
            org.add(
                _Episode(f"{p.commuter_tag}/home", "benign", "commuter", p.commuter_tag, what, "commuter")
            )


def _vpn(org: _Org) -> None:
    rng = org.world.rng("vpn")
    org.world.vpn = {
        region: [_ec2(rng, region, org.used_ips) for _ in range(2)]
        for region in ("us-east-1", "eu-central-1", "ap-south-1")
    }
    rollout_day = org.weekday_in(org.cfg.first_episode_day + 3, org.last - 5)
    counter = itertools.count(1)
    for p in org.people:
        users = rng.random() < 0.25
        rolled = p.team == "data" and p.index not in org.busy
        if not (users or rolled):
            continue
        if users:
            p.vpn_rate = rng.uniform(0.1, 0.3)
        if rolled:
            p.vpn_from = org.base + rollout_day
        # One cause per gateway (the SOC trusts its egress once), the roll-up's people together.
        scenario = "vpn-rollout" if rolled and not users else "vpn"
        for gateway in ("US", "DE", "IN"):
            if gateway == p.country:
                continue
            tag = f"vpn-{next(counter)}"
            p.vpn_tags[gateway] = tag
            group = "vpn-rollout" if scenario == "vpn-rollout" else f"vpn-egress-{gateway}"
            what = f"{p.name} ({p.country}) on the corporate VPN, egress {gateway}"
            org.add(_Episode(tag, "benign", scenario, group, what, "vpn"))


def _trip_net(rng: random.Random, country: str, used: set[str], tag: str | None, n: int = 2) -> _Net:
    ips = [_v4(rng, country, used) for _ in range(n)]
    return _Net(rng.choice(_OFFSETS[country]) * 60, ips, [4.0, 5.0][:n], tag)


def _trips(org: _Org) -> None:
    rng = org.world.rng("trips")
    n = max(3, len(org.people) // 30)
    for k in range(1, n + 1):
        dest = rng.choice(_TRIP_DESTINATIONS)
        who = rng.choice(org.free(lambda p, dest=dest: p.country != dest))
        org.busy.add(who.index)
        start = org.weekday_in(org.cfg.first_episode_day - 2, org.last - 2)
        length = min(rng.randint(2, 6), org.cfg.days - start)
        tag = f"trip-{k}"
        net = _trip_net(rng, dest, org.used_ips, tag, rng.randint(1, 2))
        who.away.append(_Away(org.base + start, org.base + start + length - 1, net))
        org.add(
            _Episode(
                tag, "benign", "trip", tag, f"{who.name} ({who.country}) in {dest} for {length} days", "trip"
            )
        )


def _gathering(org: _Org, kind: str, country: str, people: Sequence[_Person], days: int) -> None:
    """An offsite or a conference: everyone behind the venue's Wi-Fi for ``days`` weekdays."""
    rng = org.world.rng(kind, country)
    start = org.weekday_in(org.cfg.first_episode_day, org.last - days - 1)
    venue = _trip_net(rng, country, org.used_ips, None, 1)
    group = f"{kind}-1"
    for p in people:
        org.busy.add(p.index)
        tag = f"{group}/{p.name}"
        net = _Net(venue.offset, venue.ips, venue.cum, tag)
        p.away.append(_Away(org.base + start, org.base + start + days - 1, net))
        what = f"{p.name} ({p.country}) at the {kind} in {country}, {days} days from day {start}"
        org.add(_Episode(tag, "benign", kind, group, what, kind))


def _offsite_and_conference(org: _Org) -> None:
    rng = org.world.rng("gatherings")
    team = rng.choice(("developer", "platform", "data"))
    europeans = org.free(lambda p: p.team == team and p.country in {"DE", "GB", "PL", "FR", "NL", "ES"})
    size = min(len(europeans), rng.randint(8, 12))
    _gathering(org, "offsite", rng.choice(_OFFSITE_COUNTRIES), rng.sample(europeans, size), 3)
    abroad = org.free(lambda p: p.country not in {"US", "CA", "MX"})
    _gathering(org, "conference", "US", rng.sample(abroad, min(len(abroad), rng.randint(10, 16))), 4)


def _glitches(org: _Org) -> None:
    rng = org.world.rng("glitches")
    for k in range(1, max(3, len(org.people) // 40) + 1):
        who = rng.choice(org.free(lambda p: p.country in _NEIGHBOURS and p.vpn_rate == 0.0))
        org.busy.add(who.index)
        day = org.weekday_in(org.cfg.first_episode_day, org.last)
        across = rng.choice(_NEIGHBOURS[who.country])
        tag = f"geoip-error-{k}"
        who.glitches[org.base + day] = _Net(who.offset, [_v4(rng, across, org.used_ips)], [1.0], tag)
        what = f"{who.name}'s home line ({who.country}) geolocates to {across} on day {day}"
        org.add(_Episode(tag, "benign", "geoip_error", tag, what, "geoip_error"))


def _new_hires(org: _Org, accounts: tuple[str, ...]) -> list[_Person]:
    hires = []
    for k, country in enumerate(("IN", "PL", "ZA", "AR"), 1):
        index = len(org.people) + k - 1
        team = _TEAM_CYCLE[index % len(_TEAM_CYCLE)]
        team_accounts = _team_accounts(team, accounts)
        p = _Person(
            org.world, index, country=country, team=team, iam_user=False, accounts=tuple(team_accounts[:3])
        )
        start = org.weekday_in(org.cfg.first_episode_day + 2, org.last - 3)
        p.start_day, p.hire_tag = org.base + start, f"new-hire-{k}"
        known = "where colleagues live" if country in dict(_HOMES) else "where nobody works"
        what = f"{p.name}, a {team} in {country} ({known}), starts on day {start}"
        org.add(_Episode(p.hire_tag, "benign", "new_hire", p.hire_tag, what, "new_hire"))
        hires.append(p)
    return hires


def _vendors(org: _Org, accounts: tuple[str, ...]) -> list[_VendorStaff]:
    rng = org.world.rng("vendors")
    msp = (accounts[6], accounts[7], accounts[3], accounts[4])
    audit = (accounts[1], accounts[2], accounts[0])
    staff = [
        ("VendorOps-Acme", "platform", msp, c, f"acme-{n}")
        for c, n in (("IN", "rkumar"), ("IN", "psharma"), ("IN", "anair"), ("PL", "mnowak"), ("US", "jlee"))
    ] + [
        ("VendorAudit-Globex", "security", audit, c, f"globex-{n}")
        for c, n in (("GB", "hwright"), ("DE", "kbauer"), ("GB", "opatel"))
    ]
    out = []
    base = len(org.people) + 10
    for k, (role, team, accts, country, session) in enumerate(staff):
        out.append(
            _VendorStaff(
                org.world, base + k, country=country, team=team, role=role, session=session, accounts=accts
            )
        )
    # The provider takes on staff in a new country: benign, and new to the organization.
    country = rng.choice(_VENDOR_NEW)
    new = _VendorStaff(
        org.world, base + len(staff), country=country, team="platform", role="VendorOps-Acme",
        session="acme-mreyes", accounts=msp,
    )  # fmt: skip
    start = org.weekday_in(org.cfg.first_episode_day + 1, org.last - 3)
    new.start_day, new.hire_tag = org.base + start, "vendor-expansion-1"
    what = f"the managed-service provider's new engineer in {country} starts on day {start}"
    org.add(_Episode(new.hire_tag, "benign", "vendor", new.hire_tag, what, "vendor"))
    out.append(new)
    for v in out:
        v.office = None
    return out


# ----------------------------------------------------------------------------------------------------------
# Attacks
# ----------------------------------------------------------------------------------------------------------
_RECON: tuple[tuple[str, str, bool, str], ...] = (
    ("sts", "GetCallerIdentity", True, ""),
    ("iam", "ListUsers", True, ""),
    ("iam", "ListRoles", True, ""),
    ("s3", "ListBuckets", True, "s3_host"),
    ("ec2", "DescribeRegions", True, "ec2_regions"),
    ("ec2", "DescribeInstances", True, "ec2_filter"),
    ("secretsmanager", "ListSecrets", True, ""),
)


class _Attacker:
    """Plants the attack scenarios, each records tagged with its incident id."""

    def __init__(self, org: _Org) -> None:
        self.org, self.world = org, org.world
        self.rng = org.world.rng("attacks")
        self.victims: set[int] = set()
        span = list(range(org.cfg.first_episode_day, org.cfg.days))
        self.rng.shuffle(span)
        self.days = itertools.cycle(span)
        self.countries = list(_NEW_ORG_ATTACK)
        self.rng.shuffle(self.countries)

    def victim(self, kind: str, pred: Any = None) -> _Person:
        pool = [p for p in self.org.free(pred) if p.kind == kind and p.index not in self.victims] or [
            p for p in self.org.people if p.kind == kind and p.index not in self.victims
        ]
        chosen = self.rng.choice(pool)
        self.victims.add(chosen.index)
        self.org.busy.add(chosen.index)
        return chosen

    def start(self, day: int) -> float:
        return float(self.world.t0 + day * _DAY + self.rng.randint(1 * _HOUR, 20 * _HOUR))

    def in_portal_session(self, victim: _Person, day: int) -> float:
        """When an Identity Center session stolen from ``victim`` (its cookie or cached token) is
        used: within the access portal session of their first sign-in from ``day`` on, 40 minutes
        to 6 hours after it (role credentials come only from a live portal session, 8 hours by
        default). One draw, as ``start``."""
        begun = self.world.t0 + day * _DAY
        at = next((ts for ts in victim.sign_in_times if ts >= begun), None)
        if at is None:
            at = victim.sign_in_times[-1] if victim.sign_in_times else None
        if at is None:
            return self.start(day)
        return float(at + self.rng.randint(40 * 60, 6 * _HOUR))

    def steps(self, plan: Sequence[_Method]) -> list[_Step]:
        g, home = self.world.global_region, self.world.cfg.regions[0]
        return [(m, g if m[0] in {"iam", "s3", "sts"} else home, "", False if m[3] else None) for m in plan]

    def emit(
        self,
        tag: str,
        account: str,
        ident: dict[str, Any],
        steps: Sequence[_Step],
        t: float,
        span: float,
        ips: Sequence[str],
        uas: Sequence[str],
    ) -> None:
        self.world.episode = tag
        try:
            _run_steps(
                self.world, self.rng, name=tag, country="", account=account, ident=ident, steps=steps,
                t=t, span=span, ips=ips, uas=uas,
            )  # fmt: skip
        finally:
            self.world.episode = None

    def plant(self) -> None:
        for scenario in ATTACK_SCENARIOS:
            getattr(self, "_" + scenario.replace("-", "_"))(scenario)

    def _episode(self, scenario: str, what: str, tag: str | None = None, group: str | None = None) -> str:
        tag = tag or f"attack-{scenario}"
        self.org.add(_Episode(tag, "attack", scenario, group or tag, what))
        return tag

    def _stolen_key_new_country(self, scenario: str) -> None:
        v, country = self.victim("iam_user"), self.countries.pop()
        ips = [_v4(self.rng, country, self.org.used_ips) for _ in range(2)]
        tag = self._episode(scenario, f"{v.name}'s long-term key used from {country} (recon, then secrets)")
        steps = self.steps(_RECON) + _theft_steps(self.world, self.rng, v.home_account, v.name)
        t = self.start(next(self.days))
        self.emit(
            tag,
            v.home_account,
            v.long_term_ident(v.home_account),
            steps,
            t,
            25 * 60,
            ips,
            _ATTACK_USER_AGENTS,
        )

    def _hijacked_admin_persistence(self, scenario: str) -> None:
        v, country = self.victim("sso", lambda p: p.team == "platform"), self.countries.pop()
        account = v.accounts[0]
        t = self.in_portal_session(v, next(self.days))
        ident = v.sso_ident(account, "ASIA" + _rand(self.rng, _KEYCHARS, 16), int(t) - 1800)
        what = f"{v.name}'s admin SSO session hijacked from {country}: backdoor user and key, StopLogging"
        tag = self._episode(scenario, what)
        steps = _persistence_steps(self.world, self.rng)
        self.emit(
            tag,
            account,
            ident,
            steps,
            t,
            15 * 60,
            [_v4(self.rng, country, self.org.used_ips)],
            _ATTACK_USER_AGENTS[:1],
        )

    def _hijacked_session_org_country_copied_ua(self, scenario: str) -> None:
        v = self.victim("sso", lambda p: p.country not in {"IN"} and p.team in {"developer", "platform"})
        account = v.accounts[0]
        t = self.in_portal_session(v, next(self.days))
        ident = v.sso_ident(account, "ASIA" + _rand(self.rng, _KEYCHARS, 16), int(t) - 900)
        what = f"{v.name}'s SSO session replayed from IN (where many colleagues live) with {v.name}'s own SDK"
        tag = self._episode(scenario, what)
        everyday = self.rng.choices(v.methods[:6], cum_weights=v.method_cum[:6], k=self.rng.randint(10, 20))
        steps = self.steps(everyday) + _theft_steps(self.world, self.rng, account, v.name)[3:]
        self.emit(tag, account, ident, steps, t, 30 * 60, [_v4(self.rng, "IN", self.org.used_ips)], [v.boto])

    def _stolen_key_from_ec2_other_region(self, scenario: str) -> None:
        v = self.victim("iam_user")
        region = self.rng.choice(("ap-southeast-1", "eu-central-1"))
        ip = _ec2(self.rng, region, self.org.used_ips)
        what = f"{v.name}'s long-term key used from an EC2 instance in {region} ({_EC2[region][0]})"
        tag = self._episode(scenario, what)
        steps = self.steps(_RECON) + _theft_steps(self.world, self.rng, v.home_account, v.name)
        t = self.start(next(self.days))
        ident = v.long_term_ident(v.home_account)
        self.emit(tag, v.home_account, ident, steps, t, 20 * 60, [ip], _ATTACK_USER_AGENTS[1:])

    def _stolen_key_ipv6(self, scenario: str) -> None:
        v = self.victim("iam_user")
        country = self.rng.choice([c for c in ("VN", "ID", "NG") if c in self.countries] or ["VN"])
        if country in self.countries:
            self.countries.remove(country)
        tag = self._episode(scenario, f"{v.name}'s long-term key used over IPv6 from {country}")
        steps = _theft_steps(self.world, self.rng, v.home_account, v.name)
        t = self.start(next(self.days))
        ident = v.long_term_ident(v.home_account)
        self.emit(
            tag,
            v.home_account,
            ident,
            steps,
            t,
            20 * 60,
            [_v6(self.rng, country, self.org.used_ips)],
            _ATTACK_USER_AGENTS[1:],
        )

    def _compromised_vendor_role(self, scenario: str) -> None:
        staff = [s for s in self.org.vendors if s.hire_tag is None]
        if not staff:
            return
        copied = self.rng.choice(staff)
        country = self.countries.pop()
        account = copied.accounts[0]
        t = self.start(next(self.days))
        ident = copied.sso_ident(account, "ASIA" + _rand(self.rng, _KEYCHARS, 16), int(t) - 600)
        what = (
            f"the vendor role {copied.role} used from {country} as {copied.session}, with that engineer's SDK"
        )
        tag = self._episode(scenario, what)
        steps = self.steps(_RECON[:4]) + _theft_steps(self.world, self.rng, account, copied.session)[3:]
        self.emit(
            tag, account, ident, steps, t, 30 * 60, [_v4(self.rng, country, self.org.used_ips)], [copied.boto]
        )

    def _low_and_slow(self, scenario: str) -> None:
        v, country = self.victim("iam_user"), self.countries.pop()
        ips = [_v4(self.rng, country, self.org.used_ips) for _ in range(2)]
        probe = self.rng.randint(self.org.cfg.first_episode_day, self.org.last - 4)
        later = probe + self.rng.randint(3, min(5, self.org.last - probe))
        group = f"attack-{scenario}"
        ident = v.long_term_ident(v.home_account)
        tag = self._episode(
            scenario, f"one GetCallerIdentity with {v.name}'s key from {country}", group + "/probe", group
        )
        steps = self.steps(_RECON[:1])
        self.emit(tag, v.home_account, ident, steps, self.start(probe), 1.0, ips[:1], _ATTACK_USER_AGENTS[1:])
        what = f"{later - probe} days later, slow secret theft with the same key from {country}"
        tag = self._episode(scenario, what, group + "/theft", group)
        steps = _theft_steps(self.world, self.rng, v.home_account, v.name)
        self.emit(
            tag, v.home_account, ident, steps, self.start(later), 100 * 60, ips, _ATTACK_USER_AGENTS[1:]
        )

    def _role_chain(self, scenario: str) -> None:
        v, country = self.victim("iam_user"), self.countries.pop()
        ip = [_v4(self.rng, country, self.org.used_ips)]
        group = f"attack-{scenario}"
        home = v.home_account
        others = [a for a in self.world.cfg.accounts if a != home]
        targets = self.rng.sample(others, self.rng.randint(2, 3))
        t = self.start(next(self.days))
        user = v.long_term_ident(home)
        what = (
            f"{v.name}'s key from {country}: recon in {home}, then {_CHAIN_ROLE} in {len(targets)} accounts"
        )
        tag = self._episode(scenario, what, f"{group}/{home}", group)
        self.emit(tag, home, user, self.steps(_RECON[:3]), t, 5 * 60, ip, _ATTACK_USER_AGENTS[:1])
        for k, account in enumerate(targets):
            t += self.rng.uniform(3, 9) * 60
            session = f"{v.name}-{self.rng.randint(1000, 9999)}"
            role_arn = f"arn:aws:iam::{account}:role/{_CHAIN_ROLE}"
            assume: list[_Step] = [
                (_ASSUME, self.world.global_region, "", {"roleArn": role_arn, "roleSessionName": session})
            ]
            what = f"{_CHAIN_ROLE} assumed in {account} (step {k + 1} of the chain) from the same address"
            tag = self._episode(scenario, what, f"{group}/{account}", group)
            self.emit(tag, account, user, assume, t, 2.0, ip, _ATTACK_USER_AGENTS[:1])
            ident = _chain_ident(self.world, account, session, int(t))
            backdoor = {"userName": "svc-sync"}
            steps = [
                *self.steps(_RECON[1:]),
                (("iam", "CreateUser", False, ""), self.world.global_region, "", backdoor),
                (("iam", "CreateAccessKey", False, ""), self.world.global_region, "", backdoor),
            ]
            self.emit(tag, account, ident, steps, t + 5, 8 * 60, ip, _ATTACK_USER_AGENTS[:1])

    def _stolen_key_known_country_copied_ua(self, scenario: str) -> None:
        v = self.victim("iam_user", lambda p: p.vpn_rate == 0.0 and p.vpn_from is None)
        country = self.rng.choice([c for c in ("DE", "GB", "BR", "PL", "US") if c != v.country])
        what = f"{v.name}'s key used from {country} (colleagues live there, not {v.name}) with {v.name}'s SDK"
        tag = self._episode(scenario, what)
        everyday = self.rng.choices(v.methods[:6], cum_weights=v.method_cum[:6], k=self.rng.randint(10, 20))
        steps = self.steps(everyday) + [
            (("secretsmanager", "GetSecretValue", True, "secret"), self.world.cfg.regions[0], "", False)
        ] * self.rng.randint(2, 4)
        t = self.start(next(self.days))
        ident = v.long_term_ident(v.home_account)
        self.emit(
            tag,
            v.home_account,
            ident,
            steps,
            t,
            30 * 60,
            [_v4(self.rng, country, self.org.used_ips)],
            [v.boto],
        )


def _chain_ident(world: _World, account: str, session: str, created: int) -> dict[str, Any]:
    role_id = "AROA" + _rand(world.rng("chain-role", account), _IDCHARS, 17)
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{_CHAIN_ROLE}/{session}",
        "accountId": account,
        "accessKeyId": "ASIA" + _rand(world.rng("chain-key", account, session), _KEYCHARS, 16),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account}:role/{_CHAIN_ROLE}",
                "accountId": account,
                "userName": _CHAIN_ROLE,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "false"},
        },
    }


# ----------------------------------------------------------------------------------------------------------
# Ground truth, measured on the records
# ----------------------------------------------------------------------------------------------------------
def _identity_of(arn: str) -> str:
    if ":assumed-role/AWSReservedSSO_" in arn:
        return "sso:" + arn.rsplit("/", 1)[1]
    return arn


def _measure(world: _EntWorld, episodes: Sequence[_Episode]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ep in episodes:
        recs = sorted(world.tagged.get(ep.id, ()), key=lambda it: it[2])
        if not recs:
            continue  # e.g. a VPN gateway a person never happened to fail over to
        seen: dict[str, list[str]] = {"arns": [], "keys": [], "ips": [], "methods": [], "accounts": []}
        for account, _, _, rec in recs:
            who = rec["userIdentity"]
            for name, value in (
                ("arns", who.get("arn", "")),
                ("keys", who.get("accessKeyId", "")),
                ("ips", rec["sourceIPAddress"]),
                ("methods", f"{rec['eventSource']}:{rec['eventName']}"),
                ("accounts", account),
            ):
                if value and value not in seen[name]:
                    seen[name].append(value)
        countries = {country_of(rec["sourceIPAddress"]) for _, _, _, rec in recs}
        if len(countries) != 1 or None in countries:
            raise ValueError(f"episode {ep.id} spans countries {countries}")
        out.append(
            {
                "id": ep.id,
                "kind": ep.kind,
                "benign_kind": ep.benign_kind,
                "scenario": ep.scenario,
                "incident_group": ep.group,
                "description": ep.description,
                "account_ids": seen["accounts"],
                "principal_arns": seen["arns"],
                "access_key_ids": seen["keys"],
                "country": countries.pop(),
                "source_ips": seen["ips"],
                "first_event": recs[0][2],
                "last_event": recs[-1][2],
                "first_delivery": min(world.delivered[(a, r, ts // world.slot)] for a, r, ts, _ in recs),
                "events": len(recs),
                "methods": seen["methods"],
            }
        )
    _novelty(world, out)
    out.sort(key=lambda inc: (inc["first_event"], inc["id"]))
    for inc in out:
        for k in ("first_event", "last_event", "first_delivery"):
            inc[k] = _iso(inc[k])
    return out


def _novelty(world: _EntWorld, incidents: list[dict[str, Any]]) -> None:
    """``country_new_to_org`` / ``country_new_to_principal``: no earlier record from the country by anyone
    / by the identity (an SSO person in any account) of any of the incident's principals."""
    wanted = {inc["country"] for inc in incidents}
    identities = {_identity_of(a) for inc in incidents for a in inc["principal_arns"]}
    org_first: dict[str, int] = {}
    who_first: dict[tuple[str, str], int] = {}
    for items in world.buckets.values():
        for ts, rec in items:
            country = country_of(rec["sourceIPAddress"])
            if country is None or country not in wanted:
                continue
            org_first[country] = min(ts, org_first.get(country, world.t1))
            ident = _identity_of(rec["userIdentity"].get("arn", ""))
            if ident in identities:
                who_first[(ident, country)] = min(ts, who_first.get((ident, country), world.t1))
    for inc in incidents:
        first, c = inc["first_event"], inc["country"]
        inc["country_new_to_org"] = org_first[c] >= first
        inc["country_new_to_principal"] = all(
            who_first.get((_identity_of(a), c), world.t1) >= first for a in inc["principal_arns"]
        )


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
def simulate_enterprise(cfg: EnterpriseConfig) -> EnterpriseSimulation:
    """Simulate the enterprise's bucket for ``cfg.days``. Pure and deterministic."""
    accounts = _ACCOUNTS[: cfg.accounts]
    base = SimulationConfig(
        start=cfg.start,
        days=cfg.days,
        seed=cfg.seed,
        accounts=accounts,
        regions=cfg.regions,
        humans=0,
        automation_roles=0,
        attack=False,
        events_per_human_hour=cfg.events_per_person_hour,
        digests=False,
        bucket="aws-cloudtrail-logs-o-e7t2p9r4s1",
        trail_name="org-trail",
        org_id="o-e7t2p9r4s1",
        email_domain="corp.example.com",
    )
    world = _EntWorld(base)
    org = _Org(world, cfg, world.rng("enterprise"), _build_people(world, cfg, accounts))
    return _assemble(org, accounts)


def _assemble(org: _Org, accounts: tuple[str, ...]) -> EnterpriseSimulation:
    world, cfg = org.world, org.cfg
    for p in org.people:
        org.used_ips.update(p.home_ips)
    for account in accounts:
        users = [p.name for p in org.people if p.kind == "iam_user" and p.home_account == account]
        world.res[account] = _resources(world.rng("resources", account), account, users or ["svc-deploy"])
    _place_offices(org)
    _vpn(org)
    _trips(org)
    _offsite_and_conference(org)
    _glitches(org)
    hires = _new_hires(org, accounts)
    if cfg.vendors:
        org.vendors = _vendors(org, accounts)
    roles = [_RoleActor(world, i) for i in range(4)]
    eu = _RoleActor(world, 6)  # a deployer running in eu-central-1: EC2 addresses located in DE
    eu.name, eu.ips = "eu-deployer", [_ec2(world.rng("eu-deployer"), "eu-central-1", org.used_ips)]
    roles.append(eu)
    for actor in (*org.people, *hires, *org.vendors):
        actor.run()
    for r in roles:
        r.run()
    _run_services(world, roles)
    if cfg.attacks:
        _Attacker(org).plant()
    files, _ = _deliver(world)
    files.sort(key=lambda f: (f.delivered_at, f.key))
    incidents = _measure(world, org.episodes)
    truth = {
        "generator": "trailgeo_tools.enterprise",
        "config": cfg.as_json(),
        "window": {"start": _iso(world.t0), "end": _iso(world.t1)},
        "events_count": world.count,
        "events_per_day": round(world.count / cfg.days, 1),
        "log_files": len(files),
        "accounts": [{"id": a, "name": n} for a, n in zip(accounts, _ACCOUNT_NAMES, strict=False)],
        "people": [_person_json(p) for p in (*org.people, *hires)],
        "vendors": [_person_json(v) | {"role": v.role, "session": v.session} for v in org.vendors],
        "automation": [
            {
                "name": r.name,
                "kind": r.kind,
                "accounts": list(r.accounts),
                "ips": list(r.ips),
                "arns": [r.arn(a) for a in r.accounts],
            }
            for r in roles
        ],
        "vpn_egress": {r: list(ips) for r, ips in sorted(world.vpn.items())},
        "incidents": incidents,
    }
    return EnterpriseSimulation(config=cfg, files=files, events_count=world.count, truth=truth)


def _person_json(p: _Person) -> dict[str, Any]:
    return {
        "name": p.name,
        "email": p.email,
        "kind": p.kind,
        "team": p.team,
        "country": p.country,
        "utc_offset_minutes": p.offset // 60,
        "ips": list(p.home_ips),
        "office": p.office,
        "commuter": p.commuter_tag is not None,
        "vpn": p.vpn_rate > 0 or p.vpn_from is not None,
        "accounts": list(p.accounts),
        "access_key_id": p.key_id,
        "arns": list(p.all_arns()),
        "identity": p.identity(),
        # the second factor of their Identity Center sign-ins (WEBAUTHN: a security key or passkey)
        "second_factor": p.mfa if p.kind == "sso" and p.in_identity_center else None,
    }
