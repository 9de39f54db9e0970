"""The alert as an OCSF Detection Finding (class 2004, schema 1.6.0) (pure).

OCSF (https://schema.ocsf.io) is what Security Lake stores and what the current Security Hub
ingests (it reads OCSF 1.6). One finding per alert thread, as in Security Hub's ASFF rendering:
``finding_info.uid`` is the thread's first alert id (``Alert.thread_id``), so a re-alert or a quiet
update of an incident is activity *Update* (``activity_id`` 2) of the same finding, anything else
activity *Create* (1); ``metadata.uid`` is always this alert's own id.

The ``cloud`` profile is applied (``metadata.profiles``): ``cloud`` (provider, account, region)
and ``api`` (the rarest method) sit at the top level. The rest of the alert is in the attributes
OCSF has for it: ``finding_info`` (title, description, types, times, the analytic, MITRE ATT&CK),
``evidences`` (the principal as ``actor.user``: ARN, name, access key; each source address with
its country and autonomous system; each rare method or value with its score; each user agent; each
evidence factor), ``observables`` (ARN, user name, access key, addresses, country, user agents)
and, for an incident or a roll-up, ``finding_info.related_events`` (the other alerts it stands
for). A Detection Finding's top-level ``actor`` belongs to the ``host`` profile, which describes a
device: the principal is an evidence instead.

Every string that came from CloudTrail is attacker-controlled: each goes through
:func:`trailgeo.core.text.plain` (no line break, no control or invisible character, a bounded
length) and every list is bounded, so a megabyte user agent costs a few hundred bytes.
tests/test_ocsf.py checks the document against the schema's required attributes, types,
enumerations and constraints (tests/fixtures/ocsf/, derived from github.com/ocsf/ocsf-schema 1.6.0).

Imports: the standard library and ``trailgeo.core`` (the alert model, the detector registry,
``core.text``, ``core.render``).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

from trailgeo.core.alerts import Alert, IncidentMember, RolledUp, is_country, location_label
from trailgeo.core.detectors import detector
from trailgeo.core.render.shared import (
    alert_region,
    console_links,
    event_history_user_name,
    event_time,
    finding_description,
    finding_title,
    incident_text,
    rare_items,
    safe_id,
)
from trailgeo.core.text import plain

OCSF_VERSION = "1.6.0"
PRODUCT_NAME = "trailgeo"
CATEGORY_UID, CATEGORY_NAME = 2, "Findings"
CLASS_UID, CLASS_NAME = 2004, "Detection Finding"
CREATE, UPDATE = 1, 2
ACTIVITY_NAMES = {CREATE: "Create", UPDATE: "Update"}
SEVERITY_IDS = {"low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_NAMES = {2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
STATUS_NEW = 1
AWS_ACCOUNT = 10  # account.type_id "AWS Account"
STATISTICAL = 3  # analytic.type_id: the rarity model is a statistical analytic
# user.type_id from CloudTrail's userIdentity.type; any other type is 99 (Other), named in ``type``.
USER_TYPES = {"IAMUser": (1, "User"), "Root": (2, "Admin"), "AWSService": (4, "Service")}
# observable.type_id (schema 1.6.0's observable types) for the values trailgeo names.
IP_ADDRESS, USER_NAME, RESOURCE_UID, COUNTRY_CODE, USER_AGENT, CREDENTIAL = 2, 4, 10, 14, 16, 19
OBSERVABLE_TYPES = {
    IP_ADDRESS: "IP Address",
    USER_NAME: "User Name",
    RESOURCE_UID: "Resource UID",
    COUNTRY_CODE: "Country",
    USER_AGENT: "HTTP User-Agent",
    CREDENTIAL: "User Credential ID",
}
# MITRE ATT&CK Enterprise tactics by the names data/attack_methods.json gives them.
TACTIC_IDS = {
    "Reconnaissance": "TA0043",
    "Resource Development": "TA0042",
    "Initial Access": "TA0001",
    "Execution": "TA0002",
    "Persistence": "TA0003",
    "Privilege Escalation": "TA0004",
    "Defense Evasion": "TA0005",
    "Credential Access": "TA0006",
    "Discovery": "TA0007",
    "Lateral Movement": "TA0008",
    "Collection": "TA0009",
    "Command and Control": "TA0011",
    "Exfiltration": "TA0010",
    "Impact": "TA0040",
}
# Every alert is valid credentials used from an unusual place: T1078.004, as in the ASFF Types.
VALID_CLOUD_ACCOUNTS = {
    "tactic": {"uid": "TA0001", "name": "Initial Access"},
    "technique": {"uid": "T1078", "name": "Valid Accounts"},
    "sub_technique": {"uid": "T1078.004", "name": "Cloud Accounts"},
}
TITLE_LIMIT = 255
DESCRIPTION_LIMIT = 4000
TEXT_LIMIT = 512  # an ARN, a user agent, a method, an organization
MAX_RARE = 10
MAX_USER_AGENTS = 5
MAX_RELATED = 20


def _millis(value: datetime) -> int:
    return int(value.astimezone(UTC).timestamp() * 1000)


def _event_millis(value: str, fallback: datetime) -> int:
    return _millis(event_time(value, fallback))


def _addresses(alert: Alert) -> list[str]:
    """The source addresses that are IP addresses (``ip_t``), distinct, in order."""
    found: dict[str, None] = {}
    for value in alert.source.ip:
        try:
            found[str(ipaddress.ip_address(value))] = None
        except ValueError:
            continue
    return list(found)


def _account(alert: Alert) -> dict[str, Any]:
    return {"uid": plain(alert.cloud.account.id, 64), "type_id": AWS_ACCOUNT, "type": "AWS Account"}


def _user(alert: Alert) -> dict[str, Any]:
    identity = alert.aws.cloudtrail.user_identity
    user: dict[str, Any] = {"uid": plain(identity.arn, TEXT_LIMIT), "account": _account(alert)}
    name = event_history_user_name(identity.arn)
    if name:
        user["name"] = plain(name, TEXT_LIMIT)
    if identity.type:
        type_id, type_name = USER_TYPES.get(identity.type, (99, identity.type))
        user["type_id"], user["type"] = type_id, plain(type_name, 64)
    if alert.access_key_ids:
        user["credential_uid"] = plain(alert.access_key_ids[0], 128)
    return user


def _api(value: str) -> dict[str, Any] | None:
    """``eventSource:eventName`` as OCSF's ``api`` (operation and service), None for another value."""
    provider, colon, action = value.partition(":")
    if not colon or not action or not provider.endswith(".amazonaws.com"):
        return None
    return {"operation": plain(action, 128), "service": {"name": plain(provider, 128)}}


def _attacks(alert: Alert) -> list[dict[str, Any]]:
    attacks: list[dict[str, Any]] = [{key: dict(value) for key, value in VALID_CLOUD_ACCOUNTS.items()}]
    for tactic in alert.tactics[:MAX_RARE]:
        named: dict[str, str] = {"name": plain(tactic, 64)}
        if tactic in TACTIC_IDS:
            named["uid"] = TACTIC_IDS[tactic]
        attacks.append({"tactic": named})
    return attacks


def _title(alert: Alert) -> str:
    return plain(finding_title(alert), TITLE_LIMIT)


def _description(alert: Alert) -> str:
    incident = incident_text(alert)
    text = finding_description(alert)
    return plain(f"{incident}. {text}" if incident else text, DESCRIPTION_LIMIT)


def _related_events(alert: Alert) -> list[dict[str, Any]]:
    """The other alerts this one stands for: its incident's members, its roll-up."""
    related: list[dict[str, Any]] = []
    others: list[IncidentMember | RolledUp] = [*(alert.incident.members if alert.incident else [])]
    others.extend(alert.rolled_up)
    for other in others[:MAX_RELATED]:
        severity_id = SEVERITY_IDS[other.severity]
        where = location_label(other.location)
        related.append(
            {
                "uid": safe_id(other.alert_id),
                "title": plain(f"{other.principal} (account {other.account}) from {where}"),
                "severity_id": severity_id,
                "severity": SEVERITY_NAMES[severity_id],
            }
        )
    return related


def _finding_info(alert: Alert, activity: int, region: str) -> dict[str, Any]:
    found = detector(alert.detector)
    detected = _millis(alert.detected_at)
    info: dict[str, Any] = {
        "uid": safe_id(alert.thread_id),
        "title": _title(alert),
        "desc": _description(alert),
        "types": [found.finding_type],
        "first_seen_time": _event_millis(alert.first_event_time, alert.detected_at),
        "last_seen_time": _event_millis(alert.last_event_time, alert.detected_at),
        "analytic": {
            "uid": found.generator_id,
            "name": found.rule_name,
            "type_id": STATISTICAL,
            "type": "Statistical",
        },
        "attacks": _attacks(alert),
        "data_sources": ["AWS CloudTrail"],
    }
    # The finding's creation is its first alert's detection: known for a new finding only.
    info["created_time" if activity == CREATE else "modified_time"] = detected
    source_url = console_links(alert, region).get("access_key")
    if source_url:
        info["src_url"] = source_url
    related = _related_events(alert)
    if related:
        info["related_events"] = related
        omitted = alert.incident.omitted_members if alert.incident else 0
        info["related_events_count"] = len(related) + omitted
    return info


def _source_evidence(alert: Alert, address: str) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"ip": address}
    if is_country(alert.country):
        location: dict[str, Any] = {"country": alert.country}
        if alert.source.geo.city_name:
            location["city"] = plain(alert.source.geo.city_name, 128)
        endpoint["location"] = location
    data: dict[str, Any] = {"location": location_label(alert.country)}
    for network in alert.networks:
        if network.ip == address:
            endpoint["autonomous_system"] = {"number": network.asn, "name": plain(network.organization, 255)}
            if network.hosting:
                data["hosting_provider"] = plain(network.hosting, 255)
            break
    if alert.vpc_endpoint_ids:
        data["vpc_endpoint_ids"] = [plain(e, 128) for e in alert.vpc_endpoint_ids]
    return {"name": "source address", "src_endpoint": endpoint, "data": data}


def _rare_evidence(alert: Alert) -> list[dict[str, Any]]:
    what = "method" if alert.methods else "value"
    evidences = []
    for item in rare_items(alert)[:MAX_RARE]:
        evidence: dict[str, Any] = {
            "name": f"rare {what}",
            "data": {
                "value": plain(item.value, TEXT_LIMIT),
                "score": item.score,
                "events_in_run": item.events,
                "sensitive": item.sensitive,
            },
        }
        if item.usual:
            evidence["data"]["usual_countries"] = plain(item.usual, TEXT_LIMIT)
        api = _api(item.value)
        if api:
            evidence["api"] = api
        evidences.append(evidence)
    return evidences


def _evidences(alert: Alert, user: dict[str, Any], addresses: list[str]) -> list[dict[str, Any]]:
    evidences: list[dict[str, Any]] = [{"name": "principal", "actor": {"user": user}}]
    evidences.extend(_source_evidence(alert, address) for address in addresses)
    evidences.extend(_rare_evidence(alert))
    # An http_request alone is no evidence OCSF accepts (``at_least_one``): the actor that sent it.
    actor = {"user": {"uid": plain(alert.principal, TEXT_LIMIT)}}
    evidences.extend(
        {"name": "user agent", "actor": actor, "http_request": {"user_agent": plain(agent, TEXT_LIMIT)}}
        for agent in alert.user_agent.original[:MAX_USER_AGENTS]
    )
    evidences.extend(
        {
            "name": f"evidence factor: {plain(factor.factor, 64)}",
            "data": {"factor": plain(factor.factor, 64), "raises": factor.raises, "text": plain(factor.text)},
        }
        for factor in alert.evidence
    )
    return evidences


def _observable(name: str, type_id: int, value: str) -> dict[str, Any]:
    return {"name": name, "type_id": type_id, "type": OBSERVABLE_TYPES[type_id], "value": value}


def _observables(alert: Alert, user: dict[str, Any], addresses: list[str]) -> list[dict[str, Any]]:
    observables = [_observable("evidences.actor.user.uid", RESOURCE_UID, user["uid"])]
    if "name" in user:
        observables.append(_observable("evidences.actor.user.name", USER_NAME, user["name"]))
    if "credential_uid" in user:
        credential = _observable("evidences.actor.user.credential_uid", CREDENTIAL, user["credential_uid"])
        observables.append(credential)
    observables.extend(_observable("evidences.src_endpoint.ip", IP_ADDRESS, a) for a in addresses)
    if is_country(alert.country) and addresses:
        country = _observable("evidences.src_endpoint.location.country", COUNTRY_CODE, alert.country)
        observables.append(country)
    observables.extend(
        _observable("evidences.http_request.user_agent", USER_AGENT, plain(agent, TEXT_LIMIT))
        for agent in alert.user_agent.original[:MAX_USER_AGENTS]
    )
    return observables


def _top_api(alert: Alert) -> dict[str, Any] | None:
    """The cloud profile's ``api``: the rarest method (sibling detectors: the first one called)."""
    if alert.methods:
        return _api(alert.methods[0].method)
    pairs = zip(alert.event.provider, alert.event.action, strict=False)
    return next((api for api in (_api(f"{p}:{a}") for p, a in pairs) if api), None)


def detection_finding(
    alert: Alert, product_version: str, default_region: str = "us-east-1"
) -> dict[str, Any]:
    """The OCSF Detection Finding for ``alert`` (``product_version``: trailgeo's version)."""
    activity = UPDATE if alert.thread_id != alert.alert_id else CREATE
    severity_id = SEVERITY_IDS[alert.severity]
    region = alert_region(alert, default_region)
    user = _user(alert)
    addresses = _addresses(alert)
    title = _title(alert)
    incident = alert.incident
    finding: dict[str, Any] = {
        "activity_id": activity,
        "activity_name": ACTIVITY_NAMES[activity],
        "category_uid": CATEGORY_UID,
        "category_name": CATEGORY_NAME,
        "class_uid": CLASS_UID,
        "class_name": CLASS_NAME,
        "type_uid": CLASS_UID * 100 + activity,
        "type_name": f"{CLASS_NAME}: {ACTIVITY_NAMES[activity]}",
        "severity_id": severity_id,
        "severity": SEVERITY_NAMES[severity_id],
        "status_id": STATUS_NEW,
        "status": "New",
        # A quiet update (of an incident, or a re-alert no more severe) is sent in its thread: no page.
        "is_alert": not alert.is_update,
        "risk_score": round(alert.score),
        "message": plain(f"{incident_text(alert)}: {title}", TITLE_LIMIT) if incident else title,
        "time": _millis(alert.detected_at),
        "start_time": _event_millis(alert.first_event_time, alert.detected_at),
        "end_time": _event_millis(alert.last_event_time, alert.detected_at),
        "timezone_offset": 0,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": ["cloud"],
            "product": {"name": PRODUCT_NAME, "vendor_name": PRODUCT_NAME, "version": product_version},
            "uid": safe_id(alert.alert_id),
            "correlation_uid": safe_id(incident.id if incident else alert.thread_id),
            "event_code": alert.detector,
        },
        "finding_info": _finding_info(alert, activity, region),
        "cloud": {"provider": "AWS", "account": _account(alert), "region": region},
        "evidences": _evidences(alert, user, addresses),
        "observables": _observables(alert, user, addresses),
    }
    api = _top_api(alert)
    if api:
        finding["api"] = api
    return finding
