"""The error spike detector ("Spike in AWS Error Messages"): an identity's errors in one hour, as an
order of magnitude, against its own hours and the organization's."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import ACCOUNT, ALICE, T0, US_IP, files_by_delivery, record, trail_record, write_tree
from tests.test_siblings import DESCRIBE, NOW, WEIGHT, total
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import RunOptions, subject_of
from trailgeo.app.replay import replay
from trailgeo.core.aggregate import CategoryGroup, HitGroup, MethodActivity, RunAggregate
from trailgeo.core.counters import ERROR_LEVELS, CounterState
from trailgeo.core.scoring import History, ScoringPolicy, score_error_spike

SPIKE = frozenset({"country", "error_spike"})
BOB = "arn:aws:iam::111122223333:user/bob"
CAROL = "arn:aws:iam::111122223333:user/carol"
ROLE = "arn:aws:sts::111122223333:assumed-role/deploy"
ORG_LEVELS = {"0": 3000, "1-9": 400, "10-99": 50}


def levels_history(own: dict[str, int]) -> History:
    return {
        "ORG": {"TOTAL": total({"US": 2000})},
        "OS": {"TOTAL": total(ORG_LEVELS)},
        f"ES#{ALICE}": {"TOTAL": total(own)}
        | {f"C#{level}": CounterState(buckets=n, wsum=n * WEIGHT) for level, n in own.items()},
    }


def errors_group(level: str, events: int) -> CategoryGroup:
    source = HitGroup(account=ACCOUNT, principal=ALICE, country="US")
    source.methods[DESCRIBE] = MethodActivity(events=events, hours={NOW})
    return CategoryGroup(ACCOUNT, ALICE, level, {DESCRIBE: MethodActivity(events, {NOW})}, [source])


def test_given_a_quiet_error_history_when_an_hour_has_hundreds_of_errors_then_it_is_a_spike() -> None:
    # Given alice, whose hours had no error or a few
    h = levels_history({"0": 200, "1-9": 40})

    # When one hour has 300
    scored = score_error_spike(errors_group("100-999", 300), h, ScoringPolicy(), NOW)

    # Then that level is rare for her: it alerts
    (item,) = scored.rare()
    assert (item.value, item.events, item.own_buckets, item.own_total) == ("100-999", 300, 0, 240)
    assert item.score >= 90


def test_given_hours_that_usually_have_hundreds_of_errors_when_one_more_does_then_no_spike() -> None:
    # Given a principal whose normal hours have hundreds of errors (a scanner, a chatty script)
    h = levels_history({"100-999": 150, "10-99": 50, "0": 40})

    # When one more hour has 300
    scored = score_error_spike(errors_group("100-999", 300), h, ScoringPolicy(), NOW)

    # Then that is its usual level: no alert
    assert scored.suppressed is None
    assert scored.score < 20
    assert scored.rare() == ()


def test_given_a_noisy_principal_when_an_hour_has_fewer_errors_than_usual_then_it_is_never_a_spike() -> None:
    # Given a principal whose hours nearly always have thousands of errors
    h = levels_history({"1000-9999": 300, "100-999": 1})

    # When an hour has only hundreds (rarer for it, but fewer: the tail is the upper one)
    scored = score_error_spike(errors_group("100-999", 150), h, ScoringPolicy(), NOW)

    # Then no alert
    assert scored.rare() == ()


def test_given_too_little_history_when_an_hour_has_hundreds_of_errors_then_it_is_still_learning() -> None:
    # Given a principal seen in only five hours
    h = levels_history({"0": 5})

    # When its next hour has 300 errors
    scored = score_error_spike(errors_group("100-999", 300), h, ScoringPolicy(), NOW)

    # Then it does not page: the detector is still learning it
    assert scored.suppressed == "learning"
    assert scored.rare() == ()


def test_given_a_quiet_history_when_an_hour_has_a_few_dozen_errors_then_it_is_under_the_floor() -> None:
    # Given alice's quiet history, when one hour has 50 errors (rare for her, but a script's bad day)
    h = levels_history({"0": 200, "1-9": 40})
    scored = score_error_spike(errors_group("10-99", 50), h, ScoringPolicy(), NOW)

    # Then it is scored (rare) but does not page: fewer than ERROR_SPIKE_MIN_EVENTS
    assert scored.items[0].score >= 50
    assert scored.suppressed == "few_errors"
    assert scored.rare() == ()


def _denied(when: Any, code: str = "AccessDenied", **extra: Any) -> dict[str, Any]:
    return record(when, errorCode=code, **extra)


@pytest.fixture(scope="module")
def spike_alerts(tmp_path_factory: pytest.TempPathFactory, country_test_mmdb: Path) -> list[dict[str, Any]]:
    """Ten days of four identities' calls, then one hour of errors from each, replayed."""
    baseline: list[dict[str, Any]] = []
    for i in range(240):
        at = T0 + timedelta(hours=i, minutes=3)
        # alice: hourly calls, a denied one every fourth hour
        baseline.append(_denied(at) if i % 4 == 0 else record(at))
        # the deploy role: hourly calls from its CI session
        baseline.append(record(at, arn=f"{ROLE}/ci", key="ASIADEPLOY000000001"))
        # bob: every sixth hour, 150 errors (a scanner that is always denied a lot)
        if i % 6 == 0:
            baseline.extend(
                _denied(at + timedelta(seconds=s), arn=BOB, key="AKIABOB000000000001") for s in range(150)
            )
    attack = T0 + timedelta(days=10, hours=3, minutes=2)
    names = ("ListUsers", "ListRoles", "ListPolicies", "GetAccountAuthorizationDetails", "ListGroups")
    burst = [
        # alice's stolen key enumerating permissions: 300 denied calls in a few minutes
        *(
            _denied(attack + timedelta(seconds=s), name=names[s % 5], source="iam.amazonaws.com")
            for s in range(300)
        ),
        # bob's usual hundreds
        *(_denied(attack + timedelta(seconds=s), arn=BOB, key="AKIABOB000000000001") for s in range(200)),
        # carol's first hour ever: 3,000 errors, a level the organization never had (still learning)
        *(
            _denied(attack + timedelta(seconds=s // 10), arn=CAROL, key="AKIACAROL0000000001")
            for s in range(3000)
        ),
        # the deploy role's credentials enumerating, one session name per call
        *(
            _denied(attack + timedelta(seconds=s), arn=f"{ROLE}/s{s}", key="ASIADEPLOY000000001")
            for s in range(300)
        ),
    ]
    logs = tmp_path_factory.mktemp("spike")
    write_tree(logs, files_by_delivery(baseline + burst))
    out = io.StringIO()
    replay(logs, MaxMindGeoResolver(country_test_mmdb), JsonLinesAlertSink(out), RunOptions(detectors=SPIKE))
    return [a for a in map(json.loads, out.getvalue().splitlines()) if a["detector"] == "error_spike"]


def _for(alerts: list[dict[str, Any]], principal: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["aws"]["cloudtrail"]["user_identity"]["arn"] == principal]


def test_given_stolen_keys_enumerating_permissions_when_replayed_then_a_spike_alert(
    spike_alerts: list[dict[str, Any]],
) -> None:
    # Then alice's hour of 300 denied calls alerts once, under the rule's own name
    (alert,) = _for(spike_alerts, ALICE)
    assert alert["rule"]["name"] == "Spike in AWS Error Messages"
    assert alert["findings"][0]["value"] == "100-999"
    assert alert["findings"][0]["events_in_run"] == 300
    assert "300 error(s) in one hour" in alert["explanation"]
    assert "iam:ListUsers" in {f"iam:{a}" for a in alert["event"]["action"]}


def test_given_a_principal_whose_hours_usually_have_hundreds_of_errors_then_no_spike_alert(
    spike_alerts: list[dict[str, Any]],
) -> None:
    assert _for(spike_alerts, BOB) == []


def test_given_a_principal_in_its_first_hour_when_it_makes_hundreds_of_errors_then_no_page(
    spike_alerts: list[dict[str, Any]],
) -> None:
    assert _for(spike_alerts, CAROL) == []


def test_given_a_role_enumerating_under_a_new_session_name_per_call_then_one_alert_for_the_role(
    spike_alerts: list[dict[str, Any]],
) -> None:
    # Session names are the caller's: 300 sessions of one error each are still the role's 300 errors
    (alert,) = _for(spike_alerts, ROLE)
    assert alert["findings"][0]["events_in_run"] == 300
    assert subject_of(ROLE, "error_spike") == f"{ROLE}|error_spike"


def test_given_a_flood_of_made_up_error_codes_when_only_the_spike_is_on_then_the_run_stays_small() -> None:
    # Given 5,000 errors of one code, and 5,000 errors each of a made-up code
    def aggregate(codes: list[str]) -> RunAggregate:
        run = RunAggregate(geolocate=lambda ip: "US" if ip == US_IP else None, detectors=SPIKE)
        bodies = [_denied(T0 + timedelta(seconds=n), code) for n, code in enumerate(codes)]
        run.add_records([trail_record(b) for b in bodies])
        return run

    same = aggregate(["AccessDenied"] * 5000)
    made_up = aggregate([f"Made.Up.{n}.{'x' * 100}" for n in range(5000)])

    # Then both keep the same cells (the spike counts errors, not codes) and the same counters: the
    # identity's levels and the organization's, a handful of categories whatever the codes
    assert len(made_up.snapshot()) < 2 * len(same.snapshot())
    assert set(made_up.counters) == set(same.counters)
    levels = {key for key in made_up.counters if key[0] in {"OS", f"ES#{ALICE}"}}
    assert levels == {
        ("OS", "C#1000-9999"),
        ("OS", "TOTAL"),
        (f"ES#{ALICE}", "C#1000-9999"),
        (f"ES#{ALICE}", "TOTAL"),
    }
    assert all(key[1][2:] in ERROR_LEVELS for key in levels if key[1] != "TOTAL")
    ((_, _, level),) = made_up.spike_groups
    assert level == "1000-9999"
