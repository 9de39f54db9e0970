"""The alert document and its renderings: fields, bounds, and attacker-controlled text."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tests.builders import BT_IP, record, trail_record
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.alert_builder import build_alert
from trailgeo.core.alerts import MAX_LIST, Alert, UserAgent
from trailgeo.core.counters import CounterState, decay_weight, hour_of
from trailgeo.core.render.email import SUBJECT_LIMIT, email_body, email_subject
from trailgeo.core.render.envelope import SNS_MESSAGE_LIMIT, sns_message
from trailgeo.core.scoring import ScoringPolicy, score_group

DETECTED = datetime(2026, 11, 2, 14, 15, tzinfo=UTC)
NOW = hour_of("2026-11-02T14:00:00Z") or 0
EVIL_ARN = "arn:aws:iam::111122223333:user/eve\r\nBcc: victim@example.com"


def established(method: str, now_hour: int = NOW) -> dict[str, dict[str, CounterState]]:
    """History in which ``method`` has 40 hourly buckets and the organization 400, all from the US."""
    weight = decay_weight(now_hour, 1386.0)
    return {
        f"M#{method}": {
            "C#US": CounterState(buckets=40, wsum=40 * weight, first_seen="2026-09-01T00:00:00Z"),
            "TOTAL": CounterState(
                buckets=40,
                wsum=40 * weight,
                first_seen="2026-09-01T00:00:00Z",
                countries={"US": (40, 40 * weight)},
            ),
        },
        "ORG": {
            "TOTAL": CounterState(
                buckets=400,
                wsum=400 * weight,
                first_seen="2026-08-01T00:00:00Z",
                countries={"US": (400, 400 * weight)},
            )
        },
    }


def alert_for(records: list[dict[str, object]]) -> Alert:
    aggregate = RunAggregate(geolocate=lambda ip: "BT")
    aggregate.add_records([trail_record(r) for r in records])
    (group,) = aggregate.groups.values()
    history: dict[str, dict[str, CounterState]] = {}
    for method in group.methods:
        history.update(established(method))
    alert = build_alert(score_group(group, history, ScoringPolicy(), NOW), 50.0, DETECTED, "run-1")
    assert alert is not None
    return alert


def test_given_a_rare_group_then_the_alert_is_stable_and_round_trips_as_json() -> None:
    records = [record(DETECTED, ip=BT_IP, name=f"Describe{i}") for i in range(3)]
    alert = alert_for(records)
    again = alert_for(records)

    assert alert.alert_id == again.alert_id
    assert Alert.model_validate_json(alert.to_json()) == alert
    assert alert.detected_at == DETECTED
    assert len(alert.methods) == 3


def test_given_a_principal_too_long_for_the_subject_then_the_severity_still_leads_it() -> None:
    """An inbox or a pager's e-mail integration sorts on the subject's start; SNS keeps 100 characters."""
    # Given an alert for a principal whose ARN alone fills the subject
    alert = alert_for([record(DETECTED, ip=BT_IP, arn=f"arn:aws:iam::111122223333:user/{'a' * 120}")])

    # When its subject is made
    subject = email_subject(alert)

    # Then it starts with the severity, and the principal is what was cut
    assert subject.startswith(f"[{alert.severity.upper()}] Unusual country for AWS command: ")
    assert alert.severity in {"medium", "high", "critical"}
    assert len(subject) == SUBJECT_LIMIT
    assert subject.endswith("...")
    assert " by arn:aws:iam::" in subject


def test_given_hostile_strings_then_subject_is_one_ascii_line_and_body_has_no_injected_lines() -> None:
    agent = "curl/8\nSubject: you are fired\x1b[31m" + "x" * 2_000_000
    alert = alert_for([record(DETECTED, ip=BT_IP, arn=EVIL_ARN, agent=agent)])

    subject = email_subject(alert)
    body = email_body(alert)

    assert len(subject) <= SUBJECT_LIMIT
    assert all(32 <= ord(ch) < 127 for ch in subject)
    assert "\nBcc:" not in body
    assert "\nSubject: you are fired" not in body
    assert "\x1b" not in body
    assert len(body) < 20_000
    assert len(alert.user_agent.original[0]) < 1100


def test_given_many_addresses_and_methods_then_lists_are_bounded_with_a_count_of_the_rest() -> None:
    records = [
        record(DETECTED, ip=f"67.43.156.{i}", name=f"Call{i}", agent=f"agent-{i}")
        for i in range(1, MAX_LIST + 11)
    ]
    alert = alert_for(records)

    assert len(alert.source.ip) == MAX_LIST
    assert alert.omitted.source_ip == 10
    assert len(alert.methods) == MAX_LIST
    assert alert.omitted.methods == 10
    assert "and 10 more" in alert.explanation
    assert len(sns_message(alert).encode()) < 256 * 1024


def test_given_an_alert_too_large_for_sns_then_it_is_compacted_with_visible_cuts() -> None:
    # Given an alert whose texts exceed SNS's 256 KiB (as no built alert does: a constructed worst case)
    alert = alert_for([record(DETECTED, ip=BT_IP, name=f"Describe{i}") for i in range(30)])
    huge = alert.model_copy(
        update={"explanation": "x" * 400_000, "user_agent": UserAgent(original=["y" * 50_000] * 20)}
    )

    # When it is rendered for SNS
    message = sns_message(huge)

    # Then it fits, still parses, and says what it cut
    assert len(message.encode()) <= SNS_MESSAGE_LIMIT
    document = json.loads(json.loads(message)["default"])
    assert document["explanation"].endswith("[truncated]")
    assert document["omitted"]["user_agent"] == 15
    assert len(document["user_agent"]["original"]) == 5


def test_given_an_alert_then_the_sns_message_has_json_for_machines_and_text_for_email() -> None:
    alert = alert_for([record(DETECTED, ip=BT_IP)])
    message = json.loads(sns_message(alert))
    assert json.loads(message["default"])["alert_id"] == alert.alert_id
    assert set(message) == {"default", "email", "https"}  # SQS, Lambda and HTTP take the default
    assert message["email"].startswith("Unusual Country For an AWS Command: MEDIUM")
    assert "Why it is rare:" in message["email"]
