"""Sibling detectors from the same pass: unusual AWS command for a user, rare AWS error code."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.builders import ALICE, T0, US_IP, files_by_delivery, record, write_tree
from tests.conftest import MAXMIND_TEST_DATA
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import replay
from trailgeo.app.settings import Settings, SettingsError
from trailgeo.core.aggregate import CategoryGroup, HitGroup, MethodActivity, RunAggregate
from trailgeo.core.counters import DEFAULT_HALF_LIFE_HOURS, CounterState, decay_weight, hour_of
from trailgeo.core.scoring import History, ScoringPolicy, score_error_codes, score_user_methods

NOW = hour_of("2026-11-02T14:00:00Z") or 0
WEIGHT = decay_weight(NOW, DEFAULT_HALF_LIFE_HOURS)
DESCRIBE = "ec2.amazonaws.com:DescribeInstances"
CREATE_USER = "iam.amazonaws.com:CreateUser"
ALL = frozenset({"country", "user_method", "error_code"})
LONDON_IP, BOXFORD_IP = "81.2.69.142", "2.125.160.216"  # GB in MaxMind's GeoLite2-City test database


def total(categories: dict[str, int], buckets: int | None = None) -> CounterState:
    return CounterState(
        buckets=buckets if buckets is not None else sum(categories.values()),
        wsum=(buckets or sum(categories.values())) * WEIGHT,
        first_seen="2026-08-01T00:00:00Z",
        countries={c: (n, n * WEIGHT) for c, n in categories.items()},
    )


def history(org_methods: dict[str, int], alice_methods: dict[str, int], errors: dict[str, int]) -> History:
    return {
        "ORG": {"TOTAL": total({"US": 2000})},
        "OM": {"TOTAL": total(org_methods, buckets=2000)},
        f"U#{ALICE}": {"TOTAL": total(alice_methods)}
        | {f"C#{m}": CounterState(buckets=n) for m, n in alice_methods.items()},
        "OE": {"TOTAL": total(errors)},
    }


def group(*methods: str) -> HitGroup:
    g = HitGroup(account="111122223333", principal=ALICE, country="US")
    for m in methods:
        g.methods[m] = MethodActivity(events=2, hours={NOW})
    return g


ORG_METHODS = {DESCRIBE: 900, "s3.amazonaws.com:ListBuckets": 700, "sts.amazonaws.com:GetCallerIdentity": 800}


def test_given_a_method_alice_never_calls_and_the_org_rarely_does_then_it_is_unusual_for_her() -> None:
    h = history({**ORG_METHODS, CREATE_USER: 3}, {DESCRIBE: 120}, {})
    scored = score_user_methods(group(DESCRIBE, CREATE_USER), h, ScoringPolicy(), NOW)
    by_value = {i.value: i for i in scored.items}
    assert by_value[CREATE_USER].score >= 75
    assert by_value[DESCRIBE].score < 10
    assert [i.value for i in scored.rare()] == [CREATE_USER]


def test_given_a_principal_with_little_history_then_the_user_detector_is_still_learning() -> None:
    h = history({**ORG_METHODS, CREATE_USER: 3}, {DESCRIBE: 5}, {})
    scored = score_user_methods(group(CREATE_USER), h, ScoringPolicy(), NOW)
    assert scored.suppressed == "learning"
    assert scored.rare() == ()


def test_given_error_codes_then_a_code_the_org_never_got_is_rare_and_a_common_one_is_not() -> None:
    h = history(ORG_METHODS, {DESCRIBE: 120}, {"AccessDenied": 300, "ThrottlingException": 80})
    new = CategoryGroup(
        "111122223333", ALICE, "NoSuchEntity", {CREATE_USER: MethodActivity(1, {NOW})}, [group()]
    )
    common = CategoryGroup(
        "111122223333", ALICE, "AccessDenied", {DESCRIBE: MethodActivity(4, {NOW})}, [group()]
    )
    assert score_error_codes(new, h, ScoringPolicy(), NOW).score >= 50
    assert score_error_codes(common, h, ScoringPolicy(), NOW).score < 10


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def test_given_all_detectors_when_alice_does_something_new_from_home_then_two_correlated_alerts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given ten days of alice's usual hourly calls from the US, every other one denied
    baseline = [
        record(
            T0 + timedelta(hours=i, minutes=3), ip=US_IP, **({"errorCode": "AccessDenied"} if i % 2 else {})
        )
        for i in range(240)
    ]
    # When she (or someone with her key, from her country) creates a user, which fails in a new way
    attack_at = T0 + timedelta(days=10, hours=3)
    odd = [
        record(
            attack_at,
            ip=US_IP,
            name="CreateUser",
            source="iam.amazonaws.com",
            errorCode="EntityAlreadyExists",
        )
    ]
    write_tree(tmp_path, files_by_delivery(baseline + odd))
    out = io.StringIO()
    replay(tmp_path, geo, JsonLinesAlertSink(out), RunOptions(detectors=ALL))

    # Then no country alert (the US is hers), but the new command and the new error code each alert,
    # one severity level up because they concern the same person in the same run
    alerts = {a["detector"]: a for a in map(json.loads, out.getvalue().splitlines())}
    assert set(alerts) == {"user_method", "error_code"}
    user, error = alerts["user_method"], alerts["error_code"]
    assert user["rule"]["name"] == "Unusual AWS Command For a User"
    assert [f["value"] for f in user["findings"]] == ["iam.amazonaws.com:CreateUser"]
    assert user["findings"][0]["sensitive"]  # CreateUser: persistence
    assert user["correlated_detectors"] == ["error_code"]
    assert error["rule"]["name"] == "Rare AWS Error Code"
    assert error["findings"][0]["value"] == "EntityAlreadyExists"
    assert error["correlated_detectors"] == ["user_method"]
    assert error["severity"] in {"medium", "high", "critical"}
    assert "EntityAlreadyExists" in error["explanation"]


def test_given_the_default_settings_then_only_the_country_detector_runs_and_unknown_names_are_refused() -> (
    None
):
    base = {
        "TRAIL_BUCKET": "trail-bucket",
        "TABLE_NAME": "trailgeo",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:alerts",
    }
    assert Settings.from_environ(base).run_options().detectors == {"country"}
    both = Settings.from_environ({**base, "DETECTORS": "error_code, user_method"}).run_options().detectors
    assert both == ALL
    assert Settings.from_environ({**base, "DETECTORS": "city"}).run_options().detectors == {"country", "city"}
    with pytest.raises(SettingsError, match="unknown detector"):
        Settings.from_environ({**base, "DETECTORS": "town,userr_method"})


def test_given_the_city_detector_when_a_principal_calls_from_another_city_of_her_country_then_it_alerts(
    tmp_path: Path,
) -> None:
    # Given a City database, and ten days of alice's hourly calls from London
    city_db = MAXMIND_TEST_DATA / "GeoLite2-City-Test.mmdb"
    if not city_db.is_file():
        pytest.skip("MaxMind GeoLite2-City test database not available")
    geo = MaxMindGeoResolver(city_db)
    assert geo.has_cities
    baseline = [record(T0 + timedelta(hours=i, minutes=3), ip=LONDON_IP) for i in range(240)]
    # When her key is used from Boxford (GB too: the country detector has nothing to say)
    later = [record(T0 + timedelta(days=10, hours=3, minutes=m), ip=BOXFORD_IP) for m in range(3)]
    write_tree(tmp_path, files_by_delivery(baseline + later))
    out = io.StringIO()
    replay(tmp_path, geo, JsonLinesAlertSink(out), RunOptions(detectors=frozenset({"country", "city"})))

    # Then one city alert names the city, and no country alert
    (alert,) = map(json.loads, out.getvalue().splitlines())
    assert alert["detector"] == "city"
    assert alert["rule"]["name"] == "Unusual City For an AWS Command"
    assert alert["source"]["geo"] == {"country_iso_code": "GB", "city_name": "Boxford"}
    assert alert["findings"][0]["value"] == DESCRIBE
    assert "GB: Boxford" in alert["explanation"]


def test_given_the_city_detector_with_a_country_only_database_then_the_aggregate_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="City database"):
        RunAggregate(geolocate=lambda ip: "US", detectors=frozenset({"country", "city"}))
