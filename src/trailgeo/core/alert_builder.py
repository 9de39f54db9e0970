"""From scores to alert documents: the country detector's and the sibling detectors' alerts,
their explanations (the words and numbers an analyst acts on), severities and stable ids, and
what a run does to its alerts as a whole (a roll-up in a flood, a correlation across detectors).

Imports: the standard library and pure modules of ``trailgeo.core`` (the alert model in
``core.alerts``; never ``core.render``, never boto3).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from trailgeo.core.alerts import (
    MAX_LIST,
    SEVERITY_LEVELS,
    Account,
    Alert,
    Aws,
    Cloud,
    CloudTrail,
    Event,
    Finding,
    Geo,
    MethodEvidence,
    Omitted,
    RolledUp,
    Rule,
    Severity,
    Source,
    UserAgent,
    UserIdentity,
    addresses_and_endpoints,
    endpoint_fields,
    is_country,
    location_label,
    location_note,
)
from trailgeo.core.detectors import detector
from trailgeo.core.scoring import CategoryScore, GroupScore, LevelView, MethodScore, SiblingScore
from trailgeo.core.sensitive import is_sensitive, tactics_of
from trailgeo.core.text import plain


def rarity_severity(score: float) -> Severity:
    """A country alert's severity from its location's rarity alone: medium at a score of 75 (the
    default threshold) or more, else low. Only corroboration (the evidence factors of
    core/evidence.py: a new client, a hosting address, a sensitive method new to the identity)
    raises it: a new country, whoever calls from it, is worth a look; a traveller and an attacker
    both have one, so it does not page alone. A country new to the organization and one only new
    to the principal weigh the same here: attackers use both (a VPS in a colleague's country is a
    click away)."""
    return SEVERITY_LEVELS[score >= 75]


def severity_for(score: float, *, sensitive: bool = False) -> Severity:
    """From the score; one level higher when a rare method is sensitive (IAM and credential
    changes, logging tampering, ...: core/sensitive.py)."""
    level = 2 if score >= 90 else 1 if score >= 75 else 0
    return SEVERITY_LEVELS[level + sensitive]


def alert_id_for(account: str, principal: str, country: str, run_id: str) -> str:
    """Stable across retries of the same run, so a re-published alert can be recognised."""
    digest = hashlib.sha256(f"{account}\x1f{principal}\x1f{country}\x1f{run_id}".encode()).hexdigest()
    return digest[:32]


def _bounded(values: list[str]) -> tuple[list[str], int]:
    return values[:MAX_LIST], max(0, len(values) - MAX_LIST)


def _source(location: str, sources: list[str], city: str | None = None) -> tuple[Source, dict[str, Any]]:
    """ECS ``source`` for a location and the aggregate's sources, and the CloudTrail endpoint fields."""
    addresses, endpoints = addresses_and_endpoints(sources)
    country = location if is_country(location) else None
    return Source(geo=Geo(country_iso_code=country, city_name=city), ip=addresses), endpoint_fields(
        location, endpoints
    )


def build_alert(
    scored: GroupScore, threshold: float, detected_at: datetime, run_id: str, *, below: bool = False
) -> Alert | None:
    """An alert for a (principal, country) when some method in it is rare enough, else None.
    ``below``: the group is under ``threshold`` and alerts for evidence beside its rarity (a person
    in two countries at once, a session begun elsewhere): its top-scoring methods are the alert's,
    the threshold stays the rule's and the explanation says so."""
    rare = scored.rare_methods(scored.score if below else threshold)
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
        severity=rarity_severity(score),
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
        explanation=explain(scored, rare, under=threshold if below else None),
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


# The sibling detectors whose findings are methods (sensitive methods and tactics apply to them)
_METHOD_VALUED = frozenset({"user_method", "city"})


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
            sensitive=scored.detector in _METHOD_VALUED and is_sensitive(i.value),
            tactics=list(tactics_of(i.value)) if scored.detector in _METHOD_VALUED else [],
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
    elif scored.detector == "error_spike":
        lines = [
            (
                f"{who} got {top.events} error(s) in one hour (level {top.value}); it had that many in "
                f"{top.own_buckets} of its {top.own_total} hourly buckets, the organization in "
                f"{top.org_buckets} (probability of at least that level {top.p_tail:.2g}, score "
                f"{top.score:g} >= {scored.threshold:g})."
            )
        ]
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
    level = min(SEVERITY_LEVELS.index(alert.severity) + 1, len(SEVERITY_LEVELS) - 1)
    return alert.model_copy(
        update={"severity": SEVERITY_LEVELS[level], "correlated_detectors": sorted(detectors)}
    )


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


def explain(scored: GroupScore, rare: tuple[MethodScore, ...], under: float | None = None) -> str:
    """Words and numbers an analyst can act on without opening another tool (``under``: the
    threshold the group did not reach, when it alerts for what came with it)."""
    group = scored.group
    cc = location_label(group.country)
    top = rare[0]
    lines = [
        (
            f"{len(rare)} AWS method(s) called by {plain(group.principal)} from {cc} are unusual "
            f"(top score {top.score:g} >= threshold)."
            if under is None
            else f"{plain(group.principal)} called AWS from {cc}, a country new to them (top score "
            f"{top.score:g}, under the threshold {under:g}): alerted because the same person called "
            "from a usual country at the same time, or their session began elsewhere (see the evidence)."
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
