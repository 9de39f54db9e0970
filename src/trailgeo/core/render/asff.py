"""The alert as an AWS Security Finding Format (ASFF) finding for Security Hub (pure).

One finding per alert thread: its ``Id`` is the thread's first alert id (``Alert.thread_id``: the
incident's for a quiet update of an incident, else ``follows_alert_id or alert_id``), so a re-alert
within the suppression window, or a later alert of an incident from the same network, re-imports,
i.e. updates, the same finding instead of adding one (BatchImportFindings updates a finding whose
Id and ProductArn it already holds). An incident's members are in ``ProductFields``.

Findings are imported under the account's default product (``product/<account>/default``);
Security Hub accepts them only with ``AwsAccountId`` equal to the importing account, so the
account the calls were made in (an organization trail covers many) is in ``ProductFields`` and in
the resources' ARNs.

Limits (Security Hub API reference, AwsSecurityFinding): Id and GeneratorId 512 characters,
Title 256, Description 1024, 1 to 50 Types, 1 to 32 Resources, at most 50 ProductFields with
keys of 128 and values of 2048 characters. :func:`validate_finding` checks them.

Imports: the standard library and ``trailgeo.core`` (the alert model, the detector registry,
``core.text``, ``core.render``).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

from trailgeo.core.alerts import Alert, is_country, location_label
from trailgeo.core.detectors import detector
from trailgeo.core.render.shared import (
    console_links,
    event_time,
    evidence_words,
    finding_description,
    finding_title,
    incident_member_lines,
    network_words,
    principal_name,
    rare_items,
    safe_id,
)
from trailgeo.core.text import plain

SCHEMA_VERSION = "2018-10-08"
VALID_ACCOUNTS = "TTPs/Initial Access/T1078.004-Valid Accounts: Cloud Accounts"
SEVERITY_LABELS = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH", "critical": "CRITICAL"}
REQUIRED = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "Types",
    "CreatedAt",
    "UpdatedAt",
    "Severity",
    "Title",
    "Description",
    "Resources",
)
ID_LIMIT = 512
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 1024
MAX_TYPES = 50
MAX_RESOURCES = 32
MAX_PRODUCT_FIELDS = 50
PRODUCT_FIELD_KEY_LIMIT = 128
PRODUCT_FIELD_VALUE_LIMIT = 2048
TYPE_NAMESPACES = {
    "Software and Configuration Checks",
    "TTPs",
    "Effects",
    "Unusual Behaviors",
    "Sensitive Data Identifications",
}
_PRODUCT_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):securityhub:([a-z0-9-]+):(\d{12}):product/(\d{12})/default$"
)
_ACCOUNT = re.compile(r"^\d{12}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def default_product_arn(partition: str, region: str, account: str) -> str:
    """The ARN of the account's default product, the one custom findings are imported under."""
    return f"arn:{partition}:securityhub:{region}:{account}:product/{account}/default"


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_time(value: str, fallback: datetime) -> str:
    return _timestamp(event_time(value, fallback))


def _bounded(value: str, limit: int) -> str:
    return plain(value, limit - 1)


def _principal_resource(alert: Alert, partition: str, region: str) -> dict[str, Any]:
    arn = alert.principal
    named = principal_name(arn)
    base = {"Partition": partition, "Region": region}
    if named and named[0] == "user":
        return {"Type": "AwsIamUser", "Id": _bounded(arn, ID_LIMIT), **base}
    if named and named[0] == "role":
        parts = arn.split(":")
        role_arn = f"arn:{parts[1]}:iam::{parts[4]}:role/{named[1]}" if ":assumed-role/" in arn else arn
        resource: dict[str, Any] = {"Type": "AwsIamRole", "Id": _bounded(role_arn, ID_LIMIT), **base}
        if role_arn != arn:
            resource["Details"] = {"Other": {"SessionArn": _bounded(arn, PRODUCT_FIELD_VALUE_LIMIT)}}
        return resource
    return {"Type": "Other", "Id": _bounded(arn or "unknown principal", ID_LIMIT), **base}


def _network(alert: Alert) -> dict[str, str] | None:
    for ip in alert.source.ip:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            continue
        key = "SourceIpV4" if address.version == 4 else "SourceIpV6"
        return {"Direction": "IN", key: str(address)}
    return None


def _action(alert: Alert) -> dict[str, Any] | None:
    """ASFF's ``Action`` (an AWS API call, as GuardDuty writes it) with the remote address's
    autonomous system in ``RemoteIpDetails.Organization``: the first hosting network, else the
    first network found. None without an ASN database's answer."""
    if not alert.networks:
        return None
    network = next((n for n in alert.networks if n.hosting), alert.networks[0])
    remote: dict[str, Any] = {
        "Organization": {
            "Asn": network.asn,
            "AsnOrg": plain(network.organization, 255),
            "Org": plain(network.hosting or network.organization, 255),
        },
    }
    address = ipaddress.ip_address(network.ip)
    if address.version == 4:  # ASFF's RemoteIpDetails has no IPv6 field
        remote["IpAddressV4"] = str(address)
    if is_country(alert.country):
        remote["Country"] = {"CountryCode": alert.country}
    call: dict[str, Any] = {"CallerType": "remoteip", "RemoteIpDetails": remote}
    if alert.event.action:
        call["Api"] = plain(alert.event.action[0], 127)
    if alert.event.provider:
        call["ServiceName"] = plain(alert.event.provider[0], 127)
    return {"ActionType": "AWS_API_CALL", "AwsApiCallAction": call}


def _description(alert: Alert) -> str:
    return plain(finding_description(alert), DESCRIPTION_LIMIT - 1)


def _product_fields(alert: Alert) -> dict[str, str]:
    def joined(values: list[str], omitted: int) -> str:
        text = ", ".join(values) + (f" and {omitted} more" if omitted else "")
        return plain(text, PRODUCT_FIELD_VALUE_LIMIT - 1)

    fields = {
        "trailgeo/AlertId": alert.alert_id,
        "trailgeo/ThreadId": alert.thread_id,
        "trailgeo/Score": f"{alert.score:g}",
        # A country code only; any other location is named in words (Location) and by its endpoints.
        "trailgeo/Country": alert.country if is_country(alert.country) else "",
        "trailgeo/Location": location_label(alert.country),
        "trailgeo/VpcEndpointIds": joined(alert.vpc_endpoint_ids, 0),
        "trailgeo/VpcEndpointAccountId": alert.aws.cloudtrail.vpc_endpoint_account_id or "",
        "trailgeo/Severity": alert.severity,
        "trailgeo/AccountId": alert.cloud.account.id,
        "trailgeo/Principal": alert.principal,
        "trailgeo/Methods": joined([item.value for item in rare_items(alert)], alert.omitted.methods),
        "trailgeo/SourceIps": joined(alert.source.ip, alert.omitted.source_ip),
        "trailgeo/UserAgents": joined(alert.user_agent.original, alert.omitted.user_agent),
        "trailgeo/Regions": joined(alert.cloud.region, 0),
        "trailgeo/FirstEventTime": alert.first_event_time,
        "trailgeo/LastEventTime": alert.last_event_time,
        "trailgeo/NewToOrganization": str(alert.country_new_to_organization).lower(),
        "trailgeo/NewToPrincipal": str(alert.country_new_to_principal).lower(),
    }
    if alert.tactics:
        fields["trailgeo/Tactics"] = joined(alert.tactics, 0)
    if alert.networks:
        fields["trailgeo/Networks"] = network_words(alert)
    if alert.evidence:
        fields["trailgeo/Evidence"] = "; ".join(evidence_words(alert))
        fields["trailgeo/EvidenceFactors"] = joined([e.factor for e in alert.evidence], 0)
    if alert.follows_alert_id:
        fields["trailgeo/FollowsAlertId"] = alert.follows_alert_id
    fields.update(_incident_fields(alert))
    return {key: plain(value, PRODUCT_FIELD_VALUE_LIMIT - 1) for key, value in fields.items() if value}


def _incident_fields(alert: Alert) -> dict[str, str]:
    info = alert.incident
    if info is None:
        return {}
    kind = "update" if info.update else "escalation" if info.escalation else "new"
    return {
        "trailgeo/IncidentId": info.id,
        "trailgeo/IncidentKind": kind,
        "trailgeo/IncidentAlerts": str(info.alerts),
        "trailgeo/IncidentAccounts": str(info.accounts),
        "trailgeo/IncidentNetworks": ", ".join(info.networks),
        "trailgeo/IncidentMembers": "; ".join(incident_member_lines(alert, 10)),
    }


def asff_finding(alert: Alert, product_arn: str) -> dict[str, Any]:
    """The finding for ``alert``, imported under ``product_arn`` (the default product's ARN)."""
    match = _PRODUCT_ARN.match(product_arn)
    if match is None:
        raise ValueError(f"not the ARN of an account's default Security Hub product: {product_arn!r}")
    partition, region, account = match.group(1), match.group(2), match.group(3)
    detected = _timestamp(alert.detected_at)
    found = detector(alert.detector)
    types = [VALID_ACCOUNTS, found.finding_type]
    title = finding_title(alert)
    severity = {"Label": SEVERITY_LABELS[alert.severity], "Original": f"{alert.score:g}"}
    resources = [_principal_resource(alert, partition, region)]
    resources.extend(
        {"Type": "AwsIamAccessKey", "Id": _bounded(key, ID_LIMIT), "Partition": partition, "Region": region}
        for key in alert.access_key_ids[: MAX_RESOURCES - 1]
    )
    finding: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": safe_id(alert.thread_id),
        "ProductArn": product_arn,
        "GeneratorId": found.generator_id,
        "AwsAccountId": account,
        "Types": list(types),
        "CreatedAt": detected,
        "UpdatedAt": detected,
        "FirstObservedAt": _event_time(alert.first_event_time, alert.detected_at),
        "LastObservedAt": _event_time(alert.last_event_time, alert.detected_at),
        "Severity": severity,
        "FindingProviderFields": {"Severity": dict(severity), "Types": list(types)},
        "Title": plain(title, TITLE_LIMIT - 1),
        "Description": _description(alert),
        "ProductFields": _product_fields(alert),
        "Resources": resources,
        "RecordState": "ACTIVE",
    }
    source_url = console_links(alert, region).get("access_key")
    if source_url:
        finding["SourceUrl"] = source_url
    network = _network(alert)
    if network:
        finding["Network"] = network
    action = _action(alert)
    if action:
        finding["Action"] = action
    return finding


def validate_finding(finding: dict[str, Any]) -> list[str]:
    """What makes ``finding`` invalid for BatchImportFindings (required fields and limits)."""
    problems = [f"missing {name}" for name in REQUIRED if not finding.get(name)]
    if problems:
        return problems
    if finding["SchemaVersion"] != SCHEMA_VERSION:
        problems.append("SchemaVersion")
    for name, limit in (("Id", ID_LIMIT), ("GeneratorId", ID_LIMIT), ("Title", TITLE_LIMIT)):
        if len(finding[name]) > limit:
            problems.append(f"{name} longer than {limit}")
    if len(finding["Description"]) > DESCRIPTION_LIMIT:
        problems.append(f"Description longer than {DESCRIPTION_LIMIT}")
    if not _PRODUCT_ARN.match(finding["ProductArn"]):
        problems.append("ProductArn is not a default product ARN")
    if not _ACCOUNT.match(finding["AwsAccountId"]):
        problems.append("AwsAccountId")
    types = finding["Types"]
    if not 1 <= len(types) <= MAX_TYPES:
        problems.append("Types count")
    problems.extend(
        f"Type {t!r}" for t in types if t.count("/") < 1 or t.split("/", 1)[0] not in TYPE_NAMESPACES
    )
    problems.extend(
        f"{name} is not an ISO 8601 UTC timestamp"
        for name in ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt")
        if name in finding and not _TIMESTAMP.match(finding[name])
    )
    if finding["Severity"].get("Label") not in {"INFORMATIONAL", *SEVERITY_LABELS.values()}:
        problems.append("Severity.Label")
    resources = finding["Resources"]
    if not 1 <= len(resources) <= MAX_RESOURCES:
        problems.append("Resources count")
    problems.extend(
        f"Resource {i} lacks Type or Id"
        for i, r in enumerate(resources)
        if not r.get("Type") or not r.get("Id")
    )
    fields = finding.get("ProductFields", {})
    if len(fields) > MAX_PRODUCT_FIELDS:
        problems.append("too many ProductFields")
    problems.extend(
        f"ProductFields[{key!r}] too long"
        for key, value in fields.items()
        if len(key) > PRODUCT_FIELD_KEY_LIMIT or len(value) > PRODUCT_FIELD_VALUE_LIMIT
    )
    return problems
