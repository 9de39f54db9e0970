"""The OCSF Detection Finding rendering (core/render/ocsf.py) against the OCSF schema it declares.

tests/fixtures/ocsf/detection_finding-1.6.0.json holds, for class 2004 and every object the
rendering emits, each attribute's requirement, type, array-ness, profile and enumeration, and each
object's constraints, derived from github.com/ocsf/ocsf-schema at tag 1.6.0 by the derive.py beside
it. :func:`problems` holds a document to it the way OCSF's validator does: every attribute known,
every required one present (those of the applied profiles too), every value of its dictionary type
(``string_t``, ``integer_t``, ``long_t`` for timestamps, ``boolean_t``, ``json_t``, objects and
arrays, recursively), every enumerated value one of its enumeration, every ``at_least_one`` and
``just_one`` constraint met.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.test_channels import ALERT_ID, all_texts, fixed_alert, hostile_alert
from trailgeo.core.alerts import (
    AlertIncident,
    Evidence,
    Finding,
    Geo,
    IncidentMember,
    Network,
    RolledUp,
    Rule,
    Source,
)
from trailgeo.core.render.ocsf import OCSF_VERSION, detection_finding
from trailgeo.core.text import UNSAFE

FIXTURE = Path(__file__).parent / "fixtures" / "ocsf" / f"detection_finding-{OCSF_VERSION}.json"
SCHEMA: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
VERSION = "0.1.0"


# ---------------------------------------------------------------------------- the validator


def _type_problem(value: Any, kind: str) -> str | None:
    """What is wrong with a scalar ``value`` of dictionary type ``kind`` (None: nothing)."""
    if kind == "string_t":
        return None if isinstance(value, str) else "not a string"
    if kind == "boolean_t":
        return None if isinstance(value, bool) else "not a boolean"
    if kind in {"integer_t", "long_t"}:
        low, high = INT32 if kind == "integer_t" else INT64
        if isinstance(value, bool) or not isinstance(value, int):
            return f"not an integer ({kind})"
        return None if low <= value <= high else f"out of {kind}'s range"
    if kind == "float_t":
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "not a number"
    if kind == "json_t":
        json.dumps(value)  # any JSON value
        return None
    raise AssertionError(f"the fixture names a type the validator does not know: {kind}")


def _check(value: Any, spec: dict[str, Any], path: str, profiles: set[str], found: list[str]) -> None:
    """``found`` gets a line per problem of the object ``value`` held to ``spec`` (``path``: the
    prefix of its attributes' paths, ``""`` or ending in ``.``)."""
    where = path.removesuffix(".") or "(the event)"
    if not isinstance(value, dict):
        found.append(f"{where}: not an object")
        return
    attributes = spec["attributes"]
    for name, row in attributes.items():
        applies = row.get("profile") is None or row["profile"] in profiles
        if row["requirement"] == "required" and applies and name not in value:
            found.append(f"{path}{name}: required, missing")
    for name, item in value.items():
        row = attributes.get(name)
        if row is None:
            found.append(f"{path}{name}: not an attribute of this object")
            continue
        if row.get("profile") is not None and row["profile"] not in profiles:
            found.append(f"{path}{name}: of profile {row['profile']}, not applied (metadata.profiles)")
        if row["array"]:
            if not isinstance(item, list):
                found.append(f"{path}{name}: not an array")
                continue
            for index, element in enumerate(item):
                _check_value(element, row, f"{path}{name}[{index}]", profiles, found)
        else:
            _check_value(item, row, f"{path}{name}", profiles, found)
    for name, members in spec["constraints"].items():
        present = [m for m in members if m in value]
        if name == "at_least_one" and not present:
            found.append(f"{where}: none of {members} (at_least_one)")
        elif name == "just_one" and len(present) != 1:
            found.append(f"{where}: {present} where just one of {members} is allowed")


def _check_value(value: Any, row: dict[str, Any], path: str, profiles: set[str], found: list[str]) -> None:
    if row["type"] == "object":
        name = row["object"]
        if name == "object":  # OCSF's ``object`` type: any object (``unmapped``)
            if not isinstance(value, dict):
                found.append(f"{path}: not an object")
            return
        spec = SCHEMA["objects"].get(name)
        if spec is None:
            found.append(f"{path}: object {name} not in {FIXTURE.name}: add it to derive.py's OBJECTS")
            return
        _check(value, spec, f"{path}.", profiles, found)
        return
    problem = _type_problem(value, row["type"])
    if problem:
        found.append(f"{path}: {problem}")
    elif "enum" in row and value not in row["enum"]:
        found.append(f"{path}: {value!r} not in its enumeration {row['enum']}")


def problems(document: dict[str, Any]) -> list[str]:
    """Everything that makes ``document`` no Detection Finding of the fixture's schema version."""
    found: list[str] = []
    metadata = document.get("metadata")
    profiles = set(metadata.get("profiles", [])) if isinstance(metadata, dict) else set()
    _check(document, SCHEMA["class"], "", profiles, found)
    cls = SCHEMA["class"]
    if document.get("class_uid") != cls["class_uid"]:
        found.append(f"class_uid: {document.get('class_uid')!r}, not {cls['class_uid']}")
    if document.get("category_uid") != cls["category_uid"]:
        found.append(f"category_uid: {document.get('category_uid')!r}, not {cls['category_uid']}")
    activity = document.get("activity_id")
    if isinstance(activity, int) and document.get("type_uid") != cls["class_uid"] * 100 + activity:
        found.append(f"type_uid: {document.get('type_uid')!r}, not class_uid * 100 + activity_id")
    if isinstance(metadata, dict) and metadata.get("version") != SCHEMA["schema_version"]:
        found.append(f"metadata.version: {metadata.get('version')!r}, not {SCHEMA['schema_version']}")
    return found


def required_paths(
    value: Any, spec: dict[str, Any], profiles: set[str], path: tuple[Any, ...] = ()
) -> Iterator:
    """The path of every required attribute present in ``value`` (an object held to ``spec``)."""
    for name, row in spec["attributes"].items():
        if name not in value:
            continue
        applies = row.get("profile") is None or row["profile"] in profiles
        if row["requirement"] == "required" and applies:
            yield (*path, name)
        if row["type"] != "object" or row["object"] == "object":
            continue
        child = SCHEMA["objects"][row["object"]]
        items = enumerate(value[name]) if row["array"] else [(None, value[name])]
        for index, item in items:
            where = (*path, name) if index is None else (*path, name, index)
            yield from required_paths(item, child, profiles, where)


def without(document: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    copied = copy.deepcopy(document)
    holder: Any = copied
    for step in path[:-1]:
        holder = holder[step]
    del holder[path[-1]]
    return copied


def objects_named(value: Any, spec: dict[str, Any]) -> Iterator[str]:
    """The object types ``value`` holds (the schema names of its nested objects)."""
    for name, item in value.items():
        row = spec["attributes"].get(name)
        if row is None or row["type"] != "object" or row["object"] == "object":
            continue
        yield row["object"]
        child = SCHEMA["objects"].get(row["object"])
        if child is not None:
            for element in item if row["array"] else [item]:
                yield from objects_named(element, child)


# ---------------------------------------------------------------------------- alerts to render


def incident_alert(*, update: bool = False, escalation: bool = False) -> Any:
    member = IncidentMember(
        alert_id="b" * 32,
        account="444455556666",
        principal="arn:aws:iam::444455556666:user/bob",
        location="BT",
        score=88.0,
        severity="high",
        methods=["ec2.amazonaws.com:RunInstances"],
    )
    incident = AlertIncident(
        id=ALERT_ID if update else "c" * 32,
        update=update,
        escalation=escalation,
        networks=["67.43.156.0/24"],
        alerts=3,
        accounts=2,
        principals=2,
        members=[member],
        omitted_members=1,
    )
    alert_id = "c" * 32 if not update else "d" * 32
    return fixed_alert(alert_id=alert_id, incident=incident)


def variants() -> dict[str, Any]:
    """The alerts a deployment sends: every detector, incidents, re-alerts, roll-ups, locations."""
    base = fixed_alert()
    rolled = RolledUp(
        alert_id="e" * 32,
        account="111122223333",
        principal="arn:aws:iam::111122223333:user/carol",
        location="BT",
        score=70.0,
        severity="medium",
        methods=["s3.amazonaws.com:GetObject"],
        events_in_run=4,
    )
    finding = Finding(
        value="AccessDenied",
        score=88.0,
        events_in_run=4,
        hourly_buckets=0,
        history_hourly_buckets=300,
        organization_hourly_buckets=900,
        probability=0.001,
        p_tail=0.001,
    )
    method_finding = finding.model_copy(update={"value": "iam.amazonaws.com:CreateUser", "sensitive": True})
    return {
        "country": base,
        "hostile": hostile_alert(),
        "error_code": fixed_alert(
            methods=[],
            detector="error_code",
            rule=Rule(name="Rare AWS Error Code", threshold=50),
            findings=[finding],
        ),
        "user_method": fixed_alert(
            methods=[],
            detector="user_method",
            rule=Rule(name="Unusual AWS Command For a User", threshold=50),
            findings=[method_finding],
        ),
        "city": fixed_alert(
            detector="city",
            rule=Rule(name="Unusual City For an AWS Command", threshold=50),
            source=Source(geo=Geo(country_iso_code="BT", city_name="Thimphu\u202e"), ip=["67.43.156.10"]),
        ),
        "re_alert": fixed_alert(alert_id="f" * 32, follows_alert_id=ALERT_ID),
        "incident": incident_alert(),
        "incident_update": incident_alert(update=True),
        "incident_escalation": incident_alert(escalation=True),
        "rolled_up": fixed_alert(rolled_up=[rolled]),
        "networks_and_evidence": fixed_alert(
            networks=[Network(ip="67.43.156.10", asn=16509, organization="Amazon.com, Inc.", hosting="AWS")],
            evidence=[Evidence(factor="hosting_provider", raises=1, text="from a hosting provider: AWS")],
            source=Source(geo=base.source.geo, ip=["67.43.156.10", "2001:db8::1"]),
        ),
        "vpc_endpoint": fixed_alert(
            location="VPCE:999988887777",
            source=Source(ip=["10.0.0.5"]),
            aws=base.aws.model_copy(
                update={
                    "cloudtrail": base.aws.cloudtrail.model_copy(
                        update={"vpc_endpoint_id": ["vpce-0abc"], "vpc_endpoint_account_id": "999988887777"}
                    )
                }
            ),
        ),
        "unknown_location": fixed_alert(location="unknown", source=Source(ip=["198.51.100.7"])),
        "no_access_key": fixed_alert(
            access_key_ids=[], user_agent=base.user_agent.model_copy(update={"original": []})
        ),
    }


VARIANTS = variants()


# ---------------------------------------------------------------------------- the tests


def test_given_the_fixture_then_it_is_class_2004_of_the_schema_version_the_rendering_declares() -> None:
    assert (SCHEMA["schema_version"], SCHEMA["ref"]) == (OCSF_VERSION, "1.6.0")
    assert len(SCHEMA["commit"]) == 40
    assert (SCHEMA["class"]["name"], SCHEMA["class"]["class_uid"], SCHEMA["class"]["category_uid"]) == (
        "detection_finding",
        2004,
        2,
    )
    required = {n for n, row in SCHEMA["class"]["attributes"].items() if row["requirement"] == "required"}
    assert {
        "activity_id",
        "category_uid",
        "class_uid",
        "finding_info",
        "metadata",
        "severity_id",
        "time",
    } <= required
    assert {"type_uid", "cloud"} <= required  # cloud: of the cloud profile


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_given_an_alert_when_rendered_as_ocsf_then_it_is_a_valid_detection_finding(name: str) -> None:
    document = detection_finding(VARIANTS[name], VERSION, "us-east-1")
    assert problems(document) == []
    assert json.loads(json.dumps(document)) == document  # plain JSON


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_given_an_alert_when_rendered_then_each_object_it_holds_is_one_the_fixture_describes(
    name: str,
) -> None:
    document = detection_finding(VARIANTS[name], VERSION, "us-east-1")
    assert set(objects_named(document, SCHEMA["class"])) <= set(SCHEMA["objects"])


def test_given_the_fixed_alert_when_rendered_then_the_finding_says_what_the_alert_says() -> None:
    alert = fixed_alert()
    document = detection_finding(alert, VERSION, "us-east-1")
    detected = int(datetime(2026, 11, 2, 14, 15, tzinfo=UTC).timestamp() * 1000)
    first = int(datetime(2026, 11, 2, 14, 3, tzinfo=UTC).timestamp() * 1000)
    last = int(datetime(2026, 11, 2, 14, 9, tzinfo=UTC).timestamp() * 1000)
    assert {
        k: document[k] for k in ("activity_id", "activity_name", "class_uid", "category_uid", "type_uid")
    } == {
        "activity_id": 1,
        "activity_name": "Create",
        "class_uid": 2004,
        "category_uid": 2,
        "type_uid": 200401,
    }
    assert (document["severity_id"], document["severity"], document["risk_score"]) == (5, "Critical", 94)
    assert (document["time"], document["start_time"], document["end_time"]) == (detected, first, last)
    assert (document["status_id"], document["is_alert"]) == (1, True)
    assert document["metadata"] == {
        "version": "1.6.0",
        "profiles": ["cloud"],
        "product": {"name": "trailgeo", "vendor_name": "trailgeo", "version": VERSION},
        "uid": ALERT_ID,
        "correlation_uid": ALERT_ID,
        "event_code": "country",
    }
    info = document["finding_info"]
    assert info["uid"] == ALERT_ID
    assert info["title"] == "Unusual country BT for AWS command by arn:aws:iam::111122223333:user/ops/alice"
    assert info["types"] == ["Unusual Behaviors/User/Unusual country for AWS command"]
    assert (info["created_time"], info["first_seen_time"], info["last_seen_time"]) == (detected, first, last)
    assert info["analytic"] == {
        "uid": "trailgeo/unusual-country-for-aws-command",
        "name": "Unusual Country For an AWS Command",
        "type_id": 3,
        "type": "Statistical",
    }
    assert info["attacks"][0]["sub_technique"] == {"uid": "T1078.004", "name": "Cloud Accounts"}
    assert info["attacks"][1] == {"tactic": {"name": "Persistence", "uid": "TA0003"}}
    assert info["src_url"].endswith("#/events?AccessKeyId=AKIAEXAMPLEKEY000001")
    assert document["cloud"] == {
        "provider": "AWS",
        "account": {"uid": "111122223333", "type_id": 10, "type": "AWS Account"},
        "region": "eu-west-1",
    }
    principal, source, rare, _second, agent = document["evidences"]
    assert principal["actor"]["user"] == {
        "uid": "arn:aws:iam::111122223333:user/ops/alice",
        "name": "alice",
        "type_id": 1,
        "type": "User",
        "credential_uid": "AKIAEXAMPLEKEY000001",
        "account": {"uid": "111122223333", "type_id": 10, "type": "AWS Account"},
    }
    assert document["api"] == {"operation": "CreateAccessKey", "service": {"name": "iam.amazonaws.com"}}
    assert source["src_endpoint"] == {"ip": "67.43.156.10", "location": {"country": "BT"}}
    assert rare["api"] == {"operation": "CreateAccessKey", "service": {"name": "iam.amazonaws.com"}}
    assert rare["data"]["score"] == 93.5
    assert agent["http_request"] == {"user_agent": "aws-cli/2.15.0 Python/3.11.6"}
    assert {(o["name"], o["type_id"], o["value"]) for o in document["observables"]} == {
        ("evidences.actor.user.uid", 10, "arn:aws:iam::111122223333:user/ops/alice"),
        ("evidences.actor.user.name", 4, "alice"),
        ("evidences.actor.user.credential_uid", 19, "AKIAEXAMPLEKEY000001"),
        ("evidences.src_endpoint.ip", 2, "67.43.156.10"),
        ("evidences.src_endpoint.location.country", 14, "BT"),
        ("evidences.http_request.user_agent", 16, "aws-cli/2.15.0 Python/3.11.6"),
    }


def test_given_a_thread_when_rendered_then_its_later_alerts_update_the_first_ones_finding() -> None:
    # A re-alert and a quiet incident update are activity Update of the thread's finding
    re_alert = detection_finding(VARIANTS["re_alert"], VERSION)
    assert (re_alert["activity_id"], re_alert["type_uid"], re_alert["finding_info"]["uid"]) == (
        2,
        200402,
        ALERT_ID,
    )
    assert re_alert["metadata"]["uid"] == "f" * 32
    assert "modified_time" in re_alert["finding_info"]
    assert "created_time" not in re_alert["finding_info"]
    assert re_alert["is_alert"] is True  # a re-alert more severe than the subject's earlier ones pages
    quiet = detection_finding(VARIANTS["re_alert"].model_copy(update={"quiet_update": True}), VERSION)
    assert (quiet["activity_id"], quiet["finding_info"]["uid"], quiet["is_alert"]) == (2, ALERT_ID, False)

    update = detection_finding(VARIANTS["incident_update"], VERSION)
    assert (update["activity_id"], update["finding_info"]["uid"], update["is_alert"]) == (2, ALERT_ID, False)
    assert update["metadata"]["correlation_uid"] == ALERT_ID
    assert update["message"].startswith(
        "One incident: 3 alerts across 2 accounts (2 principals); update of incident"
    )

    # An incident's first notification and an escalation are new findings naming the incident
    for name in ("incident", "incident_escalation"):
        document = detection_finding(VARIANTS[name], VERSION)
        assert (document["activity_id"], document["is_alert"]) == (1, True)
        assert document["finding_info"]["related_events"] == [
            {
                "uid": "b" * 32,
                "title": "arn:aws:iam::444455556666:user/bob (account 444455556666) from BT",
                "severity_id": 4,
                "severity": "High",
            }
        ]
        assert document["finding_info"]["related_events_count"] == 2  # one named, one omitted


def test_given_a_location_that_is_no_country_when_rendered_then_no_country_is_claimed() -> None:
    for name in ("vpc_endpoint", "unknown_location"):
        document = detection_finding(VARIANTS[name], VERSION)
        (source,) = [e for e in document["evidences"] if "src_endpoint" in e]
        assert "location" not in source["src_endpoint"]
        assert all(o["type_id"] != 14 for o in document["observables"])
    vpce = detection_finding(VARIANTS["vpc_endpoint"], VERSION)
    (source,) = [e for e in vpce["evidences"] if "src_endpoint" in e]
    assert source["data"] == {
        "location": "VPC endpoint of account 999988887777",
        "vpc_endpoint_ids": ["vpce-0abc"],
    }


def test_given_networks_when_rendered_then_each_address_carries_its_autonomous_system() -> None:
    document = detection_finding(VARIANTS["networks_and_evidence"], VERSION)
    first, second = (e for e in document["evidences"] if "src_endpoint" in e)
    assert first["src_endpoint"]["autonomous_system"] == {"number": 16509, "name": "Amazon.com, Inc."}
    assert first["data"]["hosting_provider"] == "AWS"
    assert second["src_endpoint"]["ip"] == "2001:db8::1"
    assert "autonomous_system" not in second["src_endpoint"]
    (factor,) = [e for e in document["evidences"] if e["name"].startswith("evidence factor")]
    assert factor["data"] == {
        "factor": "hosting_provider",
        "raises": 1,
        "text": "from a hosting provider: AWS",
    }


@pytest.mark.parametrize(
    "path",
    sorted(
        required_paths(detection_finding(fixed_alert(), VERSION), SCHEMA["class"], {"cloud"}),
        key=lambda p: [str(s) for s in p],
    ),
    ids=lambda p: ".".join(str(s) for s in p),
)
def test_given_a_required_attribute_dropped_then_the_validation_names_it(path: tuple[Any, ...]) -> None:
    document = detection_finding(fixed_alert(), VERSION)
    found = problems(without(document, path))
    dotted = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path).lstrip(".")
    assert f"{dotted}: required, missing" in found, found


def test_given_the_required_attributes_then_every_one_the_schema_requires_is_checked() -> None:
    # The parametrized test above drops each required attribute the rendering writes: those are the
    # class's own and those of every object it emits, none left out
    paths = set(required_paths(detection_finding(fixed_alert(), VERSION), SCHEMA["class"], {"cloud"}))
    top = {p[0] for p in paths if len(p) == 1}
    assert top == {"activity_id", "category_uid", "class_uid", "cloud", "finding_info", "metadata"} | {
        "severity_id",
        "time",
        "type_uid",
    }
    nested = {p[-1] for p in paths if len(p) > 1}
    assert {"uid", "product", "version", "provider", "operation", "type_id"} <= nested


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(time="2026-11-02T14:15:00Z"), "time: not an integer (long_t)"),
        (lambda d: d.update(severity_id=7), "severity_id: 7 not in its enumeration"),
        (lambda d: d.update(is_alert="true"), "is_alert: not a boolean"),
        (lambda d: d.update(risk_score=2**40), "risk_score: out of integer_t's range"),
        (lambda d: d["finding_info"].update(types="x"), "finding_info.types: not an array"),
        (lambda d: d["finding_info"].update(title=["x"]), "finding_info.title: not a string"),
        (lambda d: d["cloud"].update(account="111122223333"), "cloud.account: not an object"),
        (lambda d: d.update(surprise=1), "surprise: not an attribute of this object"),
        (lambda d: d["metadata"].update(profiles=[]), "cloud: of profile cloud, not applied"),
        (lambda d: d.update(actor={"app_name": "x"}), "actor: of profile host, not applied"),
        (lambda d: d["evidences"].append({"name": "nothing"}), "evidences[5]: none of"),
        (lambda d: d["observables"][0].update(type_id=999), "observables[0].type_id: 999 not in"),
        (lambda d: d.update(type_uid=200402), "type_uid: 200402, not class_uid * 100 + activity_id"),
        (lambda d: d["metadata"].update(version="1.1.0"), "metadata.version: '1.1.0', not 1.6.0"),
    ],
)
def test_given_a_broken_document_then_the_validation_names_the_problem(change: Any, expected: str) -> None:
    document = copy.deepcopy(detection_finding(fixed_alert(), VERSION))
    change(document)
    found = problems(document)
    assert any(line.startswith(expected) for line in found), found


def test_given_hostile_strings_when_rendered_then_every_string_is_one_plain_bounded_line() -> None:
    document = detection_finding(hostile_alert(), VERSION)
    for text in all_texts(document):  # the keys are the rendering's own
        assert not UNSAFE.search(text), text[:200]  # no line break, control or invisible character
        assert len(text) <= 4001, len(text)
    assert len(json.dumps(document).encode()) < 64 * 1024  # a megabyte user agent costs a few hundred bytes
    # the hostile value that is no address is no IP address and no observable of one
    (source,) = [e for e in document["evidences"] if "src_endpoint" in e]
    assert source["src_endpoint"]["ip"] == "67.43.156.10"
    assert [o["value"] for o in document["observables"] if o["type_id"] == 2] == ["67.43.156.10"]
    # the hostile re-alert target becomes an identifier, not text
    assert set(document["finding_info"]["uid"]) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    )
    city = detection_finding(VARIANTS["city"], VERSION)
    (source,) = [e for e in city["evidences"] if "src_endpoint" in e]
    assert source["src_endpoint"]["location"] == {"country": "BT", "city": "Thimphu\\u202e"}
