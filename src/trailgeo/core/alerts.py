"""The alert document (ECS-style paths): its model, the validation of an alert JSON, and how it
names a location. What builds an alert from scores lives in ``core.alert_builder``; its
renderings (e-mail, Slack, Chatbot, ASFF, the SNS envelope) in ``core.render``, which reads this
module and is never read by it.

Field paths follow Elastic Common Schema so that Elastic's investigation guide for "Unusual
Country For an AWS Command" and SIEM pipelines apply unchanged. Every string in here came
from CloudTrail, i.e. possibly from an attacker: lengths and list sizes are bounded.

Imports: pydantic, the standard library and pure modules of ``trailgeo.core`` (never
``core.render``, never boto3).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal, TypeGuard, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from trailgeo.core.detectors import COUNTRY, DetectorName
from trailgeo.core.sources import UNKNOWN_LOCATION, VIA_ENDPOINT, endpoint_account
from trailgeo.core.text import plain

MAX_LIST = 20
Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_LEVELS: tuple[Severity, ...] = get_args(Severity)  # lowest first
# What a notification is to a subscriber that pages (``Alert.notification``, the ``notification``
# attribute of every message on the alerts topic), and the kinds that page.
NOTIFICATION_KINDS = ("new", "escalation", "update")
PAGING_NOTIFICATIONS = ("new", "escalation")
DEFAULT_PAGING_SEVERITY: Severity = "high"  # the template's PagingSeverity default
# How long a page holds the on-call's attention: within it a thread's higher severity is an update
# in the thread the responder is working; after it, a page again (core.alerts.pages_again).
PAGE_HOLDS = timedelta(hours=1)


def paging_filter_policy(lowest: Severity) -> dict[str, list[str]]:
    """The SNS filter policy of the on-call pager's subscription (template.yaml: ``PagingLevels``,
    ``PagingEmailSubscription``): new and escalating notifications at ``lowest`` or above."""
    return {
        "severity": list(SEVERITY_LEVELS[SEVERITY_LEVELS.index(lowest) :]),
        "notification": list(PAGING_NOTIFICATIONS),
    }


def _rank(value: str) -> int:
    return SEVERITY_LEVELS.index(value) if value in SEVERITY_LEVELS else -1


def more_severe(severity: str, than: str) -> bool:
    """Whether ``severity`` is above ``than`` (anything unknown is below every level)."""
    return _rank(severity) > _rank(than)


def pages_again(
    severity: str,
    paged: str,
    paging: Severity,
    *,
    resolved: bool,
    new_sensitive: bool = False,
    paged_ago: timedelta | None = None,
) -> bool:
    """Whether a later alert of a thread (a subject's re-alert, an incident's new members) pages as
    an escalation rather than going into the thread as a quiet update. ``paged``: the thread's
    highest severity so far; ``paging``: the deployment's paging severity; ``new_sensitive``: it
    brings a sensitive method new to the thread; ``paged_ago``: how long since the thread last paged
    the on-call (None: unknown).

    While the thread's highest severity is below ``paging`` (the on-call has not been paged for it),
    a higher severity (or a new sensitive method) pages. Once the on-call was paged, the page holds
    for ``PAGE_HOLDS`` (an hour): what follows within it (the backdoor a run after the recon, a role
    chain's next accounts) is sent in the thread at the severity it brings, every channel's copy
    raised to it, since the responder is on it; after it, a higher severity pages again (a thread set
    aside unresolved cannot absorb the real theft hours later), anything else stays in the thread.
    Once the team resolved the thread (any verdict), whatever follows pages anew: an attacker's
    decoy that a hurried analyst closed as a trip cannot carry the real theft in quietly."""
    if resolved:
        return True
    if at_least(paged, paging):
        held = paged_ago is not None and paged_ago < PAGE_HOLDS
        return more_severe(severity, paged) and not held
    return more_severe(severity, paged) or new_sensitive


def at_least(severity: str, level: Severity) -> bool:
    """Whether ``severity`` is ``level`` or above (anything unknown is below every level)."""
    return _rank(severity) >= _rank(level)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ISO 3166-1 alpha-2 as every GeoIP database writes it. A location that is no country (a VPC
# endpoint, an address the database lacks: core/sources.py) never goes into ECS's country field,
# whose consumers (SIEM pipelines, rules keyed on a country) take any value there for a country.
COUNTRY_CODE = re.compile(r"[A-Z]{2}")


def is_country(location: str) -> bool:
    """Whether a scored location is a country (an ISO 3166-1 alpha-2 code), not a stand-in for one."""
    return COUNTRY_CODE.fullmatch(location) is not None


def _without_none(data: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if data.get(name) is None:
            data.pop(name, None)
    return data


class Geo(_Model):
    country_iso_code: str | None = Field(default=None, pattern=COUNTRY_CODE.pattern)  # a country only
    city_name: str | None = None  # the city detector's alerts

    @model_serializer(mode="wrap")
    def _without_empty_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "country_iso_code", "city_name")


class Source(_Model):
    geo: Geo = Field(default_factory=Geo)  # written only when located (ECS: geo only when located)
    ip: list[str]  # addresses only, as ECS's ``ip`` type takes them

    @model_serializer(mode="wrap")
    def _without_empty_geo(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not data.get("geo"):
            data.pop("geo", None)
        return data


class UserIdentity(_Model):
    arn: str
    type: str | None = None
    access_key_id: str | None = None


class CloudTrail(_Model):
    user_identity: UserIdentity
    # Calls through another account's VPC endpoint (location ``VPCE:<account>``): the endpoints
    # (Elastic's ``aws.cloudtrail.vpc_endpoint_id``) and their owner, CloudTrail's
    # ``vpcEndpointAccountId`` when it is an account id. ECS has no field for either.
    vpc_endpoint_id: list[str] | None = None
    vpc_endpoint_account_id: str | None = None

    @model_serializer(mode="wrap")
    def _without_endpoint_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "vpc_endpoint_id", "vpc_endpoint_account_id")


class Aws(_Model):
    cloudtrail: CloudTrail


class Event(_Model):
    kind: Literal["alert"] = "alert"
    action: list[str]
    provider: list[str]
    start: str
    end: str


class UserAgent(_Model):
    original: list[str]


class Account(_Model):
    id: str


class Cloud(_Model):
    provider: Literal["aws"] = "aws"
    account: Account
    region: list[str]


class Rule(_Model):
    name: str = COUNTRY.rule_name
    threshold: float


class MethodEvidence(_Model):
    method: str
    provider: str
    action: str
    score: float
    events_in_run: int
    method_hourly_buckets: int
    country_hourly_buckets: int
    method_first_seen: str | None
    top_countries: list[tuple[str, float]]
    probability: float  # P(this country) for this call under the model
    p_tail: float  # P(a country at most as likely): the score is its surprisal
    method_model: Literal["trained", "learning"]
    sensitive: bool
    tactics: list[str]


class Finding(_Model):
    """What a sibling detector found rare: a method for this principal, or an error code."""

    value: str
    score: float
    events_in_run: int
    hourly_buckets: int  # of this value in the history scored against
    history_hourly_buckets: int  # all hourly buckets of that history
    organization_hourly_buckets: int
    probability: float
    p_tail: float
    sensitive: bool = False
    tactics: list[str] = []


class Omitted(_Model):
    """How many items each bounded list left out (an alert never silently drops evidence)."""

    source_ip: int = 0
    user_agent: int = 0
    methods: int = 0
    access_key_ids: int = 0


class RolledUp(_Model):
    """An alert of the run sent inside a roll-up instead of one by one (an alert flood)."""

    alert_id: str
    account: str
    principal: str
    location: str
    score: float
    severity: Severity
    methods: list[str]  # the rarest few
    events_in_run: int


class IncidentMember(_Model):
    """An alert of the run sent inside its incident's notification (linked by source network):
    recorded, suppressed and quarantined as if it had been sent alone."""

    alert_id: str
    account: str
    principal: str
    location: str
    score: float
    severity: Severity
    sensitive_methods: list[str] = []
    methods: list[str] = []  # the rarest few
    first_event_time: str = ""
    last_event_time: str = ""
    detector: str = "country"
    # What weighed in its severity beside the rarity: each evidence factor's levels (raises; 0 shown
    # only) and whether another detector fired with it. An evaluation's ablation recomputes the
    # member's severity from these, as the carrier's from its evidence.
    factors: dict[str, int] = {}
    correlated: bool = False


class AlertIncident(_Model):
    """The incident an alert is part of: alerts linked by source network (an IPv4 /24, an IPv6 /48,
    a VPC endpoint's or an unknown location's exact address) within the incident window, across
    principals and accounts (core/incidents.py)."""

    id: str  # the incident's first alert id: the thread its updates are sent in
    # A later alert of an incident notified before, sent in its thread (not a new page). False for
    # the incident's first notification and for an escalation (higher severity than the incident's
    # highest, or a sensitive method new to it), which pages anew and still names the incident.
    update: bool = False
    escalation: bool = False
    networks: list[str] = []  # the networks that link it (bounded)
    alerts: int = 1  # alerts this notification stands for: this one and all its members
    accounts: int = 1
    principals: int = 1
    members: list[IncidentMember] = []  # the others, most urgent first (bounded)
    omitted_members: int = 0  # members beyond the bound: counted, not named


class Network(_Model):
    """The autonomous system of one source address (an ASN database beside the GeoIP one)."""

    ip: str
    asn: int = Field(ge=0, lt=2**32)
    organization: str
    hosting: str | None = None  # the hosting or cloud provider (core/networks.py), None if not known as one

    @model_serializer(mode="wrap")
    def _without_empty_hosting(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "hosting")


class Evidence(_Model):
    """One evidence factor present in the alert (core/evidence.py): its registry name, the severity
    levels it added, and what it found, in words."""

    factor: str
    raises: int = Field(ge=0, le=3)
    text: str


class Alert(_Model):
    alert_id: str
    detector: DetectorName = "country"
    detected_at: datetime
    score: float = Field(ge=0, le=100)
    severity: Severity
    rule: Rule
    # Where the calls came from as scored: a country code, ``VPCE:<account>`` or ``unknown``
    # (core/sources.py). Only a country is also ECS's ``source.geo.country_iso_code``.
    location: str
    source: Source
    aws: Aws
    event: Event
    user_agent: UserAgent
    cloud: Cloud
    first_event_time: str
    last_event_time: str
    access_key_ids: list[str]
    explanation: str
    methods: list[MethodEvidence]
    principal_usual_countries: list[tuple[str, float]]
    country_new_to_organization: bool
    country_new_to_principal: bool
    sensitive_methods: list[str]
    tactics: list[str]
    event_ids: list[str]
    omitted: Omitted
    follows_alert_id: str | None = None  # a re-alert within the suppression window (sensitive method)
    # A re-alert no more severe than what its subject already sent in the window: an update in the
    # thread of the alert it follows, not a new page (the team was told at that severity already).
    quiet_update: bool = False
    findings: list[Finding] = []  # sibling detectors: what is rare (the country detector uses methods)
    correlated_detectors: list[str] = []  # other detectors that fired for this principal in the run
    rolled_up: list[RolledUp] = []  # more alerts of the run, carried by this one (an alert flood)
    incident: AlertIncident | None = None  # alerts linked by source network (core/incidents.py)
    # Beside the rarity: evidence factors found (core/evidence.py) and the source addresses'
    # autonomous systems (an ASN database configured), each bounded to MAX_LIST.
    evidence: list[Evidence] = []
    networks: list[Network] = []

    @model_validator(mode="before")
    @classmethod
    def _from_before_location(cls, data: Any) -> Any:
        """An alert written before ``location`` existed (still pending in an outbox) had its
        location in ``source.geo.country_iso_code`` and its endpoints in ``source.ip``."""
        if not isinstance(data, dict) or "location" in data:
            return data
        source = data.get("source")
        if not isinstance(source, dict):
            return data  # not an alert of either form: the validation says what is missing
        geo, sources = source.get("geo"), source.get("ip")
        location = geo.get("country_iso_code") if isinstance(geo, dict) else None
        if not isinstance(geo, dict) or not isinstance(location, str) or not _strings(sources):
            return data
        if is_country(location):
            return {**data, "location": location}
        addresses, endpoints = addresses_and_endpoints(sources)
        aws = data.get("aws")
        if endpoints and isinstance(aws, dict) and isinstance(aws.get("cloudtrail"), dict):
            aws = {**aws, "cloudtrail": {**aws["cloudtrail"], **endpoint_fields(location, endpoints)}}
        geo = {k: v for k, v in geo.items() if k != "country_iso_code"}
        source = {**source, "geo": geo, "ip": addresses}
        return {**data, "location": location, "aws": aws, "source": source}

    @model_validator(mode="after")
    def _country_only_in_ecs(self) -> Alert:
        if self.source.geo.country_iso_code != (self.location if is_country(self.location) else None):
            raise ValueError(
                "source.geo.country_iso_code must be the location when it is a country, absent otherwise"
            )
        return self

    @property
    def country(self) -> str:
        """The location scored (a country code or a stand-in for one), the alert's subject."""
        return self.location

    @property
    def vpc_endpoint_ids(self) -> list[str]:
        return self.aws.cloudtrail.vpc_endpoint_id or []

    @property
    def principal(self) -> str:
        return self.aws.cloudtrail.user_identity.arn

    def to_json(self) -> str:
        return self.model_dump_json()

    @property
    def is_update(self) -> bool:
        """Sent in an existing thread without paging: an incident's quiet update, a quiet re-alert."""
        return self.quiet_update or (self.incident is not None and self.incident.update)

    @property
    def notification(self) -> str:
        """What the notification is to a subscriber that pages: ``new`` (a thread opens),
        ``escalation`` (an update that pages: an incident's escalation, a re-alert more severe than
        its subject's earlier ones) or ``update`` (no page)."""
        if self.is_update:
            return "update"
        escalated = self.incident is not None and self.incident.escalation
        return "escalation" if escalated or self.follows_alert_id else "new"

    @property
    def thread_id(self) -> str:
        """The notification thread the alert is sent in (Security Hub finding, Chatbot thread): its
        incident's for a quiet update, the alert it follows for a re-alert, else its own."""
        if self.incident is not None and self.incident.update:
            return self.incident.id
        return self.follows_alert_id or self.alert_id


def _strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def addresses_and_endpoints(sources: list[str]) -> tuple[list[str], list[str]]:
    """The addresses of the aggregate's sources and the VPC endpoints they came through, each
    distinct, in order."""
    addresses: dict[str, None] = {}
    endpoints: dict[str, None] = {}
    for source in sources:
        address, _, endpoint = source.partition(VIA_ENDPOINT)  # an address holds no space; an endpoint may
        addresses[address] = None
        if endpoint:
            endpoints[endpoint] = None
    return list(addresses), list(endpoints)[:MAX_LIST]


def endpoint_fields(location: str, endpoints: list[str]) -> dict[str, Any]:
    """CloudTrail's endpoint fields of an alert (``vpc_endpoint_id``, ``vpc_endpoint_account_id``),
    None where they do not apply."""
    account = endpoint_account(location)
    return {
        "vpc_endpoint_id": endpoints or None,
        "vpc_endpoint_account_id": account if account is not None and account.isdigit() else None,
    }


def location_label(location: str) -> str:
    """A location as an alert names it: the country code, or what stands in for one, in words that
    cannot be read as a country (``sources.endpoint_location``, ``UNKNOWN_LOCATION``)."""
    account = endpoint_account(location)
    if account is not None:
        return f"VPC endpoint of account {account}"
    return UNKNOWN_LABEL if location == UNKNOWN_LOCATION else location


UNKNOWN_LABEL = "unknown location (address not in the GeoIP database)"


def location_noun(location: str) -> str:
    """``country JP``, or the label of a location that is no country."""
    label = location_label(location)
    return f"country {label}" if is_country(location) else label


def location_note(location: str) -> str | None:
    """What a location that is no country means, for the explanation; None for a country."""
    account = endpoint_account(location)
    if account is not None:
        return (
            "Location: not a country. The calls came from a private address through a VPC endpoint "
            f"owned by AWS account {account}, which is neither an account of this trail nor trusted in "
            'the tuning: credentials used from another account\'s VPC (the "sneaky endpoints" technique) '
            "look like this. The endpoint ids are given with the addresses."
        )
    if location == UNKNOWN_LOCATION:
        return (
            "Location: not a country. The GeoIP database has no country for the address(es); all such "
            'addresses share the location "unknown", scored like a country.'
        )
    return None


def compacted(alert: Alert, keep: int = 5) -> Alert:
    """The alert with its long texts and lists cut (each cut says so and how much was left out)."""
    more = max(0, len(alert.methods) - keep)
    return alert.model_copy(
        update={
            "explanation": plain(alert.explanation, 2000) + " [truncated]",
            "user_agent": UserAgent(original=[plain(ua, 200) for ua in alert.user_agent.original[:keep]]),
            "methods": alert.methods[:keep],
            "findings": alert.findings[:keep],
            "event_ids": alert.event_ids[:keep],
            "incident": None
            if alert.incident is None
            else alert.incident.model_copy(
                update={
                    "members": alert.incident.members[:keep],
                    "omitted_members": alert.incident.omitted_members
                    + max(0, len(alert.incident.members) - keep),
                }
            ),
            "omitted": alert.omitted.model_copy(
                update={
                    "user_agent": alert.omitted.user_agent + max(0, len(alert.user_agent.original) - keep),
                    "methods": alert.omitted.methods + more,
                }
            ),
        }
    )
