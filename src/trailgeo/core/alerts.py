"""The alert document (ECS-style paths) and its renderings for machines and for email.

Field paths follow Elastic Common Schema so that Elastic's investigation guide for "Unusual
Country For an AWS Command" and SIEM pipelines apply unchanged. Every string in here came
from CloudTrail, i.e. possibly from an attacker: lengths and list sizes are bounded, and the
email rendering neutralises control, bidirectional, zero-width and tag characters and keeps the
subject on one line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal, TypeGuard

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from trailgeo.core.detectors import COUNTRY, DetectorName, detector
from trailgeo.core.scoring import CategoryScore, GroupScore, LevelView, MethodScore, SiblingScore
from trailgeo.core.sensitive import is_sensitive, tactics_of
from trailgeo.core.sources import UNKNOWN_LOCATION, VIA_ENDPOINT, endpoint_account
from trailgeo.core.text import visible

MAX_LIST = 20
Severity = Literal["low", "medium", "high", "critical"]


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
    findings: list[Finding] = []  # sibling detectors: what is rare (the country detector uses methods)
    correlated_detectors: list[str] = []  # other detectors that fired for this principal in the run
    rolled_up: list[RolledUp] = []  # more alerts of the run, carried by this one (an alert flood)

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
        addresses, endpoints = _addresses_and_endpoints(sources)
        aws = data.get("aws")
        if endpoints and isinstance(aws, dict) and isinstance(aws.get("cloudtrail"), dict):
            aws = {**aws, "cloudtrail": {**aws["cloudtrail"], **_endpoint_fields(location, endpoints)}}
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


_LEVELS: tuple[Severity, ...] = ("low", "medium", "high", "critical")


def severity_for(score: float, *, sensitive: bool = False) -> Severity:
    """From the score; one level higher when a rare method is sensitive (IAM and credential
    changes, logging tampering, ...: core/sensitive.py)."""
    level = 2 if score >= 90 else 1 if score >= 75 else 0
    return _LEVELS[level + sensitive]


def alert_id_for(account: str, principal: str, country: str, run_id: str) -> str:
    """Stable across retries of the same run, so a re-published alert can be recognised."""
    digest = hashlib.sha256(f"{account}\x1f{principal}\x1f{country}\x1f{run_id}".encode()).hexdigest()
    return digest[:32]


def _bounded(values: list[str]) -> tuple[list[str], int]:
    return values[:MAX_LIST], max(0, len(values) - MAX_LIST)


def _strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _addresses_and_endpoints(sources: list[str]) -> tuple[list[str], list[str]]:
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


def _endpoint_fields(location: str, endpoints: list[str]) -> dict[str, Any]:
    account = endpoint_account(location)
    return {
        "vpc_endpoint_id": endpoints or None,
        "vpc_endpoint_account_id": account if account is not None and account.isdigit() else None,
    }


def _source(location: str, sources: list[str], city: str | None = None) -> tuple[Source, dict[str, Any]]:
    """ECS ``source`` for a location and the aggregate's sources, and the CloudTrail endpoint fields."""
    addresses, endpoints = _addresses_and_endpoints(sources)
    country = location if is_country(location) else None
    return Source(geo=Geo(country_iso_code=country, city_name=city), ip=addresses), _endpoint_fields(
        location, endpoints
    )


def build_alert(scored: GroupScore, threshold: float, detected_at: datetime, run_id: str) -> Alert | None:
    """An alert for a (principal, country) when some method in it is rare enough, else None."""
    rare = scored.rare_methods(threshold)
    if not rare:
        return None
    group = scored.group
    score = max(m.score for m in rare)
    ips, ips_omitted = _merged([group.source_ips])
    agents, agents_omitted = _merged([group.user_agents])
    keys, keys_omitted = _merged([group.access_keys])
    evidence = [_evidence(m) for m in rare[:MAX_LIST]]
    sensitive = [m.method for m in rare if m.sensitive]
    tactics = sorted({t for m in rare for t in m.tactics})
    all_methods = sorted(group.methods)
    first = group.first_event or ""
    last = group.last_event or ""
    source, endpoints = _source(group.country, ips)
    return Alert(
        alert_id=alert_id_for(group.account, group.principal, group.country, run_id),
        detected_at=detected_at.astimezone(UTC),
        score=score,
        severity=severity_for(score, sensitive=bool(sensitive)),
        rule=Rule(threshold=threshold),
        location=group.country,
        source=source,
        aws=Aws(
            cloudtrail=CloudTrail(
                user_identity=UserIdentity(
                    arn=group.principal, type=group.identity_type, access_key_id=keys[0] if keys else None
                ),
                **endpoints,
            )
        ),
        event=_event(all_methods, first, last),
        user_agent=UserAgent(original=agents),
        cloud=Cloud(account=Account(id=group.account), region=sorted(group.regions)[:MAX_LIST]),
        first_event_time=first,
        last_event_time=last,
        access_key_ids=keys,
        explanation=explain(scored, rare),
        methods=evidence,
        principal_usual_countries=list(scored.principal_countries),
        country_new_to_organization=scored.new_to_org,
        country_new_to_principal=scored.new_to_principal,
        sensitive_methods=sensitive[:MAX_LIST],
        tactics=tactics,
        event_ids=group.event_ids[:MAX_LIST],
        omitted=Omitted(
            source_ip=ips_omitted,
            user_agent=agents_omitted,
            methods=max(0, len(rare) - MAX_LIST),
            access_key_ids=keys_omitted,
        ),
    )


def build_sibling_alert(scored: SiblingScore, detected_at: datetime, run_id: str) -> Alert | None:
    """An alert of a sibling detector (unusual command for a user, rare error code), or None."""
    rare = scored.rare()
    if not rare or not scored.sources:
        return None
    sources = sorted(scored.sources, key=lambda g: -sum(a.events for a in g.methods.values()))
    main = sources[0]
    ips = _merged([g.source_ips for g in sources])
    agents = _merged([g.user_agents for g in sources])
    keys = _merged([g.access_keys for g in sources])
    regions = sorted({r for g in sources for r in g.regions})
    if scored.detector in {"user_method", "city"}:
        actions_of = [i.value for i in rare]
    else:
        actions_of = sorted({m for g in sources for m in g.methods})
    firsts = [g.first_event for g in sources if g.first_event]
    lasts = [g.last_event for g in sources if g.last_event]
    first, last = min(firsts, default=""), max(lasts, default="")
    findings = [
        Finding(
            value=i.value,
            score=i.score,
            events_in_run=i.events,
            hourly_buckets=i.own_buckets,
            history_hourly_buckets=i.own_total,
            organization_hourly_buckets=i.org_buckets,
            probability=i.probability,
            p_tail=i.p_tail,
            sensitive=scored.detector != "error_code" and is_sensitive(i.value),
            tactics=list(tactics_of(i.value)) if scored.detector != "error_code" else [],
        )
        for i in rare[:MAX_LIST]
    ]
    score = max(i.score for i in rare)
    source, endpoints = _source(main.country, ips[0], _city_name(scored.context))
    subject = {"error_code": ",".join(i.value for i in rare), "city": scored.context}.get(
        scored.detector, scored.detector
    )
    return Alert(
        alert_id=alert_id_for(scored.account, scored.principal, f"{scored.detector}:{subject}", run_id),
        detector=detector(scored.detector).name,
        detected_at=detected_at.astimezone(UTC),
        score=score,
        severity=severity_for(score, sensitive=any(f.sensitive for f in findings)),
        rule=Rule(name=detector(scored.detector).rule_name, threshold=scored.threshold),
        location=main.country,
        source=source,
        aws=Aws(
            cloudtrail=CloudTrail(
                user_identity=UserIdentity(
                    arn=scored.principal,
                    type=main.identity_type,
                    access_key_id=keys[0][0] if keys[0] else None,
                ),
                **endpoints,
            )
        ),
        event=_event(actions_of, first, last),
        user_agent=UserAgent(original=agents[0]),
        cloud=Cloud(account=Account(id=scored.account), region=regions[:MAX_LIST]),
        first_event_time=first,
        last_event_time=last,
        access_key_ids=keys[0],
        explanation=explain_sibling(scored, rare),
        methods=[],
        principal_usual_countries=[],
        country_new_to_organization=False,
        country_new_to_principal=False,
        sensitive_methods=[f.value for f in findings if f.sensitive],
        tactics=sorted({t for f in findings for t in f.tactics}),
        event_ids=[e for g in sources for e in g.event_ids][:MAX_LIST],
        omitted=Omitted(
            source_ip=ips[1],
            user_agent=agents[1],
            methods=max(0, len(rare) - MAX_LIST),
            access_key_ids=keys[1],
        ),
        findings=findings,
    )


def _event(methods: list[str], first: str, last: str) -> Event:
    """ECS ``event``: the actions and providers of ``eventSource:eventName`` methods, bounded."""
    actions = sorted({m.split(":", 1)[-1] for m in methods})
    providers = sorted({m.split(":", 1)[0] for m in methods})
    return Event(action=actions[:MAX_LIST], provider=providers[:MAX_LIST], start=first, end=last)


def _city_name(context: str) -> str | None:
    return context.partition("/")[2] or None


def _merged(counters: list[Counter[str]]) -> tuple[list[str], int]:
    """The values of one or more evidence counters, most common first, bounded to MAX_LIST."""
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return _bounded([value for value, _ in total.most_common()])


def explain_sibling(scored: SiblingScore, rare: tuple[CategoryScore, ...]) -> str:
    who = plain(scored.principal)
    top = rare[0]
    if scored.detector == "user_method":
        lines = [
            f"{len(rare)} AWS method(s) unusual for {who} (top score {top.score:g} >= {scored.threshold:g})."
        ]
        lines.extend(
            f"- {plain(i.value)}: {i.own_buckets} of this principal's {i.own_total} hourly buckets; "
            f"the organization's: {i.org_buckets}; probability {i.probability:.2g}, less likely or equal "
            f"{i.p_tail:.2g} (score {i.score:g}; {i.events} call(s) in this run)"
            for i in rare[:MAX_LIST]
        )
    elif scored.detector == "city":
        city = plain(scored.context.replace("/", ": ", 1), 200)
        lines = [
            (
                f"{len(rare)} AWS method(s) called by {who} from {city} are unusual for that city "
                f"(top score {top.score:g} >= {scored.threshold:g})."
            )
        ]
        lines.extend(
            f"- {plain(i.value)}: this principal was in that city in {i.own_buckets} of its {i.own_total} "
            f"hourly buckets, the organization in {i.org_buckets}; probability {i.probability:.2g}, less "
            f"likely or equal {i.p_tail:.2g} (score {i.score:g}; {i.events} call(s) in this run)"
            for i in rare[:MAX_LIST]
        )
    else:
        lines = [
            (
                f"{who} got the error code {plain(top.value)} {top.events} time(s); the organization saw it "
                f"in {top.own_buckets} of {top.own_total} hourly buckets with an error (probability "
                f"{top.probability:.2g}, less likely or equal {top.p_tail:.2g}, score {top.score:g})."
            )
        ]
    if len(rare) > MAX_LIST:
        lines.append(f"- and {len(rare) - MAX_LIST} more")
    return "\n".join(lines)


ROLLED_UP_LISTED = 20  # rolled-up alerts named in the explanation; the document holds every one
ROLLED_UP_METHODS = 3


def with_rollup(carrier: Alert, others: list[Alert]) -> Alert:
    """``carrier`` carrying ``others`` (an alert flood: more alerts in one run than a team reads):
    each named, scored and kept in the document, the first ``ROLLED_UP_LISTED`` in its text."""
    rolled = [
        RolledUp(
            alert_id=a.alert_id,
            account=a.cloud.account.id,
            principal=a.principal,
            location=a.location,
            score=a.score,
            severity=a.severity,
            methods=[m.method for m in a.methods[:ROLLED_UP_METHODS]]
            or [f.value for f in a.findings[:ROLLED_UP_METHODS]],
            events_in_run=sum(m.events_in_run for m in a.methods) or sum(f.events_in_run for f in a.findings),
        )
        for a in others
    ]
    lines = [
        f"- {plain(r.principal, 200)} from {location_label(r.location)}: score {r.score:.0f} ({r.severity}), "
        + ", ".join(plain(m, 100) for m in r.methods)
        for r in rolled[:ROLLED_UP_LISTED]
    ]
    if len(rolled) > ROLLED_UP_LISTED:
        lines.append(f"- and {len(rolled) - ROLLED_UP_LISTED} more (in this alert's rolled_up list)")
    text = (
        f"{carrier.explanation}\n\nThis run raised {len(rolled)} more alert(s), rolled up here rather than "
        "sent one by one (each is recorded and suppressed like a sent alert):\n" + "\n".join(lines)
    )
    return carrier.model_copy(update={"rolled_up": rolled, "explanation": text})


def with_correlation(alert: Alert, detectors: list[str]) -> Alert:
    """The same principal hit several detectors in one run: one severity level higher."""
    level = min(_LEVELS.index(alert.severity) + 1, len(_LEVELS) - 1)
    return alert.model_copy(update={"severity": _LEVELS[level], "correlated_detectors": sorted(detectors)})


def _evidence(m: MethodScore) -> MethodEvidence:
    provider, _, action = m.method.partition(":")
    return MethodEvidence(
        method=m.method,
        provider=provider,
        action=action,
        score=m.score,
        events_in_run=m.events,
        method_hourly_buckets=m.method_buckets,
        country_hourly_buckets=m.country_buckets,
        method_first_seen=m.method_first_seen,
        top_countries=list(m.top_countries),
        probability=m.probability,
        p_tail=m.p_tail,
        method_model="trained" if m.method_model == "trained" else "learning",
        sensitive=m.sensitive,
        tactics=list(m.tactics),
    )


def _countries_text(countries: tuple[tuple[str, float], ...]) -> str:
    if not countries:
        return "none yet"
    return ", ".join(f"{cc} ({weight:g})" for cc, weight in countries)


def _share(level: LevelView) -> str:
    if level.total == 0:
        return "no history before this run"
    if level.country == 0:
        return f"never seen from there in {level.total:.0f} decayed hourly buckets"
    return f"{level.country:.1f} of {level.total:.0f} decayed hourly buckets ({100 * level.share:.1f}%)"


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


def via_endpoints(alert: Alert) -> str:
    """`` via <endpoint ids>`` after the addresses of calls through VPC endpoints, else ``""``."""
    endpoints = alert.vpc_endpoint_ids
    return f" via {', '.join(endpoints)}" if endpoints else ""


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


def explain(scored: GroupScore, rare: tuple[MethodScore, ...]) -> str:
    """Words and numbers an analyst can act on without opening another tool."""
    group = scored.group
    cc = location_label(group.country)
    top = rare[0]
    lines = [
        (
            f"{len(rare)} AWS method(s) called by {plain(group.principal)} from {cc} are unusual "
            f"(top score {top.score:g} >= threshold)."
        ),
    ]
    note = location_note(group.country)
    if note is not None:
        lines.append(note)
    if scored.new_to_org:
        lines.append(
            f"Organization: no call from {cc} before this run, in {scored.org_buckets} hourly buckets "
            f"of history from {scored.org_countries} countries since {scored.org_first_seen}."
        )
    else:
        lines.append(f"Organization: {cc} in {_share(scored.levels[0])}.")
    principal = scored.levels[1]
    if principal.total == 0:
        lines.append("Principal: no geolocated history before this run.")
    else:
        lines.append(
            f"Principal: usual countries {_countries_text(scored.principal_countries)} "
            f"(decayed hourly buckets, since {scored.principal_first_seen}); {cc}: {_share(principal)}."
        )
    lines.extend(
        f"{plain(level.level, 200).capitalize()}: {cc}: {_share(level)}." for level in scored.levels[2:]
    )
    lines.append(
        f"Why: under the model a call like {top.method} by this principal comes from {cc} with probability "
        f"{top.probability:.2g}; countries at most that likely add up to {top.p_tail:.2g}, so "
        f"{100 * (1 - top.p_tail):.2f}% of its calls are expected from more usual countries (score "
        f"{top.score:g})."
    )
    sensitive = [m for m in rare if m.sensitive]
    if sensitive:
        lines.append(
            "Sensitive: "
            + "; ".join(f"{plain(m.method)} ({', '.join(m.tactics)})" for m in sensitive[:MAX_LIST])
            + (f"; and {len(sensitive) - MAX_LIST} more" if len(sensitive) > MAX_LIST else "")
            + "."
        )
    lines.extend(
        f"- {plain(m.reasons())} "
        f"(since {m.method_first_seen}; top countries {_countries_text(m.top_countries)}; "
        f"{m.events} call(s) in this run; score {m.score:g})"
        for m in rare[:MAX_LIST]
    )
    if len(rare) > MAX_LIST:
        lines.append(f"- and {len(rare) - MAX_LIST} more")
    return "\n".join(lines)


def plain(value: str, limit: int = 300) -> str:
    """Attacker-controlled text made safe for a plain-text line (e-mail, Security Hub): line
    breaks become spaces, the other characters of ``core.text.NEUTRALISED`` ``?`` (controls) or
    their ``\\uXXXX`` escape (bidirectional overrides, zero-width and tag characters)."""
    cleaned = visible(value.replace("\r", " ").replace("\n", " "))
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


SUBJECT_LIMIT = 100  # SNS rejects longer subjects


def email_subject(alert: Alert) -> str:
    actions = alert.event.action
    what = actions[0] if len(actions) == 1 else f"{len(actions)} methods"
    who = alert.principal
    if alert.detector == "user_method":
        subject = f"Unusual AWS command for a user: {what} by {alert.principal}"
    elif alert.detector == "city":
        subject = (
            f"Unusual city for AWS command: {what} from {alert.source.geo.city_name} by {alert.principal}"
        )
    elif alert.detector == "error_code":
        code = alert.findings[0].value if alert.findings else "?"
        subject = f"Rare AWS error code: {code} for {alert.principal}"
    elif alert.country == UNKNOWN_LOCATION:  # short: the principal has to fit in SNS's 100 characters
        subject = f"Unusual location for AWS command: {what} from an address not in GeoIP by {who}"
    elif not is_country(alert.country):  # a VPC endpoint
        subject = f"Unusual {location_label(alert.country)} for AWS command: {what} by {alert.principal}"
    else:
        subject = f"Unusual country for AWS command: {what} from {alert.country} by {alert.principal}"
    # SNS subjects: ASCII, no line breaks, at most 100 characters.
    subject = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in subject)
    return subject if len(subject) <= SUBJECT_LIMIT else subject[: SUBJECT_LIMIT - 3] + "..."


def email_body(alert: Alert) -> str:
    rows = [
        f"{detector(alert.detector).rule_name}: {alert.severity.upper()} (score {alert.score:g}/100)",
        "",
        f"Who:      {plain(alert.principal)}",
        f"Account:  {plain(alert.cloud.account.id)}",
        f"Key:      {plain(', '.join(alert.access_key_ids) or 'none')}",
        f"From:     {location_label(alert.country)}  IPs: {plain(', '.join(alert.source.ip))}"
        + (f" and {alert.omitted.source_ip} more" if alert.omitted.source_ip else "")
        + plain(via_endpoints(alert), 600),
        f"When:     {plain(alert.first_event_time)} .. {plain(alert.last_event_time)}",
        f"Detected: {alert.detected_at:%Y-%m-%dT%H:%M:%SZ}",
        f"Agents:   {plain('; '.join(alert.user_agent.original), 600)}"
        + (f" and {alert.omitted.user_agent} more" if alert.omitted.user_agent else ""),
        f"Calls:    {plain(', '.join(alert.event.action), 600)}",
        "",
        "Why it is rare:",
        *(plain(line, 1000) for line in alert.explanation.splitlines()),
        "",
        "First steps:",
        "1. Ask the owner of the principal whether they are travelling or using a new VPN or network.",
        "2. Review every call made with the access key(s) above in CloudTrail event history.",
        "3. If not recognised: deactivate the key / revoke the sessions, then look for persistence",
        "   (new users, access keys, roles, policies) and changes to CloudTrail or GuardDuty.",
        "",
        f"Alert id: {alert.alert_id}",
    ]
    return "\n".join(rows) + "\n"


SNS_MESSAGE_LIMIT = 250_000  # bytes; SNS takes 256 KiB, subject and attributes included


def sns_message(alert: Alert) -> str:
    """A MessageStructure=json payload: JSON for machines (``default``: SQS, Lambda, HTTP), text for
    email subscribers and an AWS Chatbot custom notification for https subscribers (Chatbot:
    core/chatbot.py). Never over SNS's size limit: an alert that would be is compacted first,
    with visible "truncated" marks."""
    from trailgeo.core.chatbot import chatbot_message

    for candidate in (alert, compacted(alert)):
        message = json.dumps(
            {
                "default": candidate.to_json(),
                "email": email_body(candidate),
                "https": chatbot_message(candidate),
            }
        )
        if len(message.encode()) <= SNS_MESSAGE_LIMIT:
            return message
    raise ValueError(f"alert {alert.alert_id} does not fit in an SNS message even compacted")


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
            "omitted": alert.omitted.model_copy(
                update={
                    "user_agent": alert.omitted.user_agent + max(0, len(alert.user_agent.original) - keep),
                    "methods": alert.omitted.methods + more,
                }
            ),
        }
    )
