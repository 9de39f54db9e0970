"""An attacker who floods trailgeo with alerts must not bury the one that matters.

A role's sessions are one subject (the attacker names sessions at will), and a run with more
alerts than a team reads sends the most urgent in full and rolls the rest up into one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import ACCOUNT, ALICE, SE_IP, T0, files_by_delivery, record, write_tree
from tests.test_adversary_teaching import ADMIN_ROLE, every, role_record
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryOutbox
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import ReplayState, ReplaySummary, replay
from trailgeo.core.alert_builder import ROLLED_UP_LISTED
from trailgeo.core.alerts import Alert
from trailgeo.core.render.email import email_body

ATTACK_AT = T0 + timedelta(days=10, hours=3)


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def run(logs: Path, geo: MaxMindGeoResolver) -> tuple[list[dict[str, Any]], ReplaySummary]:
    out = io.StringIO()
    summary, _ = replay(logs, geo, JsonLinesAlertSink(out), RunOptions())
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def baseline() -> list[dict[str, Any]]:
    """Ten days of alice and the Admin role's ops session from the US."""
    history = [record(t) for t in every(240, T0, step=4)]
    return history + [role_record(t, ADMIN_ROLE, "ops") for t in every(240, T0, step=6)]


def test_given_two_hundred_sessions_of_one_role_from_one_country_then_one_alert(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given the Admin role's credentials in an attacker's hands, assumed under 200 session names
    # from Sweden within one run
    flood = [
        role_record(ATTACK_AT + timedelta(seconds=9 * n), ADMIN_ROLE, f"s-{n:03d}", ip=SE_IP)
        for n in range(200)
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + flood))

    # When the trail is replayed
    alerts, summary = run(tmp_path, geo)

    # Then one alert for the role from Sweden, the other sessions suppressed under it
    (alert,) = alerts
    assert alert["location"] == "SE"
    assert alert["aws"]["cloudtrail"]["user_identity"]["arn"].startswith(f"{ADMIN_ROLE}/s-")
    assert summary.alerts_suppressed == 199


def test_given_a_flood_of_alerts_in_one_run_then_the_sensitive_one_is_sent_in_full_and_the_rest_rolled_up(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given thirty IAM users never seen before calling from Japan, each from a network of its own
    # (so no two are one incident), and in the same run alice's key calling CreateAccessKey from Sweden
    users = [f"arn:aws:iam::{ACCOUNT}:user/decoy-{n:02d}" for n in range(30)]
    decoys = [
        record(
            ATTACK_AT + timedelta(minutes=n % 10),
            arn=arn,
            key=f"AKIADECOY{n:011d}",
            ip=f"2001:218:{n + 1:x}::1",
        )
        for n, arn in enumerate(users)
    ]
    real = [
        record(ATTACK_AT + timedelta(minutes=4), ip=SE_IP, source="iam.amazonaws.com", name="CreateAccessKey")
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + decoys + real))

    # When the trail is replayed
    alerts, summary = run(tmp_path, geo)

    # Then six messages, not thirty-one: alice's sensitive alert first and in full, four more in
    # full, and the sixth carrying the other twenty-five, each named and scored
    assert len(alerts) == 6
    assert alerts[0]["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE
    assert alerts[0]["sensitive_methods"] == ["iam.amazonaws.com:CreateAccessKey"]
    carrier = Alert.model_validate(alerts[-1])
    assert len(carrier.rolled_up) == 25
    assert summary.alerts_rolled_up == 25
    assert {r.principal for r in carrier.rolled_up} | {
        a["aws"]["cloudtrail"]["user_identity"]["arn"] for a in alerts
    } == {
        *users,
        ALICE,
    }
    assert all(r.location == "JP" and r.score >= 50 for r in carrier.rolled_up)
    # And the message a person reads names the first of them and says where the rest are
    body = email_body(carrier)
    assert "This run raised 25 more alert(s), rolled up here" in body
    assert body.count(" from JP") >= ROLLED_UP_LISTED
    assert f"and {25 - ROLLED_UP_LISTED} more" in body


@dataclass
class CountingOutbox(MemoryOutbox):
    """The in-memory outbox, counting the quarantine writes a run sends."""

    extensions: list[str] = field(default_factory=list)

    def extend_quarantine(self, subject: str, alert_id: str, hours: Collection[int]) -> None:
        self.extensions.append(subject)
        super().extend_quarantine(subject, alert_id, hours)


def test_given_a_suppressed_session_flood_then_the_role_s_quarantine_is_written_once_a_run(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given the Admin role alerted from Sweden, then 200 more sessions of it from Sweden an hour later
    first = [role_record(ATTACK_AT, ADMIN_ROLE, "s-first", ip=SE_IP)]
    later = ATTACK_AT + timedelta(hours=1)
    flood = [
        role_record(later + timedelta(seconds=4 * n), ADMIN_ROLE, f"s-{n:03d}", ip=SE_IP) for n in range(200)
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + first + flood))
    outbox = CountingOutbox()

    # When the trail is replayed
    summary, _ = replay(
        tmp_path, geo, JsonLinesAlertSink(io.StringIO()), RunOptions(), ReplayState(outbox=outbox)
    )

    # Then one alert, and the run that read the flood quarantined every session's hours under it in
    # one write for the role, not one per session (a flood of sessions is no flood of writes)
    assert summary.alerts == 1
    assert summary.alerts_suppressed == 200
    assert outbox.extensions == [f"{ADMIN_ROLE}|SE"]
    (remembered,) = outbox.last_alerted.values()  # an incident's record is no subject's
    assert int(later.timestamp()) // 3600 in remembered.hours
