"""The unusual-hour evidence factor: a person's hours as local time where they were
(core/local_time.py, core/evidence.UNUSUAL_HOUR, the ``HR#`` counters)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import ACCOUNT, ALICE, files_by_delivery, record, trail_record, write_tree
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryGeoResolver
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import replay
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.counters import HOURS_PARTITION_PREFIX, TOTAL, category_sort_key, hours_partition
from trailgeo.core.evidence import FACTORS, MIN_HOUR_HISTORY, REGISTRY, hour_evidence
from trailgeo.core.local_time import UTC_OFFSET_MINUTES, local_slot
from trailgeo.core.networks import AsnInfo

CLI_V2 = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5 exe/x86_64.ubuntu.22"
DE_IP = "91.0.0.1"
BT_IP = "67.43.156.1"
JP_IP = "202.248.0.1"
MUMBAI_EC2_IP = "13.126.0.1"  # an EC2 address in ap-south-1 (India): a VPN gateway, a rented server
AMAZON = AsnInfo(16509, "Amazon.com, Inc.")
DEPLOYER = f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci-run-1"
# 2026-10-05 is a Monday: three working weeks of alice's from Germany follow (to Friday 23rd).
MONDAY = datetime(2026, 10, 5, tzinfo=UTC)


def _unix_hour(when: datetime) -> int:
    return int(when.timestamp()) // 3600


def _geo() -> MemoryGeoResolver:
    return MemoryGeoResolver(
        countries={DE_IP: "DE", BT_IP: "BT", JP_IP: "JP", MUMBAI_EC2_IP: "IN"},
        networks={MUMBAI_EC2_IP: AMAZON},
    )


def _working_weeks(arn: str = ALICE) -> list[dict[str, Any]]:
    """``arn``'s calls from Germany on 15 weekdays, 09:00 to 17:00 German time (08:00-16:00 UTC)."""
    days = [MONDAY + timedelta(days=d) for d in range(19) if (MONDAY + timedelta(days=d)).weekday() < 5]
    return [
        record(day + timedelta(hours=h, minutes=5), ip=DE_IP, arn=arn, agent=CLI_V2)
        for day in days
        for h in range(8, 16)
    ]


def _calls(ip: str, at: datetime, arn: str = ALICE) -> list[dict[str, Any]]:
    return [record(at + timedelta(minutes=m), ip=ip, arn=arn, agent=CLI_V2) for m in range(3)]


def _replayed(tmp_path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    write_tree(tmp_path, files_by_delivery(records))
    out = io.StringIO()
    replay(tmp_path, _geo(), JsonLinesAlertSink(out), RunOptions())
    return [json.loads(line) for line in out.getvalue().splitlines()]


# ---------------------------------------------------------------------------- local time


@pytest.mark.parametrize(
    ("utc", "country", "slot"),
    [
        (
            datetime(2026, 10, 20, 8, 30, tzinfo=UTC),
            "DE",
            ("wd", 9),
        ),  # a Tuesday, standard time (DST left out)
        (datetime(2026, 10, 20, 1, 0, tzinfo=UTC), "JP", ("wd", 10)),
        (datetime(2026, 10, 20, 1, 0, tzinfo=UTC), "US", ("wd", 20)),  # Monday evening in New York
        (datetime(2026, 10, 19, 3, 0, tzinfo=UTC), "US", ("we", 22)),  # Sunday night in New York
        (datetime(2026, 10, 17, 9, 0, tzinfo=UTC), "IN", ("we", 14)),  # Saturday 14:30, +05:30
        (datetime(2026, 10, 16, 22, 0, tzinfo=UTC), "BT", ("we", 4)),  # Friday UTC, Saturday in Bhutan
    ],
)
def test_given_an_instant_and_a_country_when_read_as_local_time_then_the_day_kind_and_hour(
    utc: datetime, country: str, slot: tuple[str, int]
) -> None:
    assert local_slot(_unix_hour(utc), country) == slot


def test_given_locations_that_are_no_country_then_no_local_time() -> None:
    hour = _unix_hour(MONDAY)
    assert local_slot(hour, "VPCE:111122223333") is None
    assert local_slot(hour, "unknown") is None
    assert {"US", "DE", "IN", "JP", "BR", "XK"} <= set(UTC_OFFSET_MINUTES)
    assert UTC_OFFSET_MINUTES["IN"] == 330


# ---------------------------------------------------------------------------- the factor


NINE_TO_FIVE = {f"wd{h:02d}": (10, 1.0) for h in range(9, 17)}  # 80 hours on weekdays: two weeks


def test_given_the_registry_then_unusual_hour_raises_one_level() -> None:
    assert "unusual_hour" in FACTORS
    assert REGISTRY["unusual_hour"].raises == 1


@pytest.mark.parametrize(
    ("slots", "unusual"),
    [
        ({("wd", 3)}, True),  # the middle of the night
        ({("we", 10)}, True),  # a weekend morning of someone who never works weekends
        ({("wd", 19)}, False),  # an evening within the margin of a long day
        ({("wd", 10)}, False),
        ({("wd", 3), ("wd", 9)}, False),  # one of the alert's hours is an everyday one
        (set(), False),
    ],
)
def test_given_a_nine_to_five_history_when_hours_are_judged_then_only_far_ones_are_unusual(
    slots: set[tuple[str, int]], unusual: bool
) -> None:
    found = hour_evidence(slots, NINE_TO_FIVE, 80)
    assert (found is not None) is unusual
    if found is not None:
        assert found.factor == "unusual_hour"
        assert found.raises == 1


def test_given_too_little_history_when_judged_then_no_hour_is_unusual() -> None:
    # Given a person with one hour short of a working week of history, and one with it
    # Then only the second has hours that can be unusual
    assert hour_evidence({("wd", 3)}, NINE_TO_FIVE, MIN_HOUR_HISTORY - 1) is None
    found = hour_evidence({("wd", 3)}, NINE_TO_FIVE, MIN_HOUR_HISTORY)
    assert found is not None
    assert found.text.startswith("unusual hour: 03:00 local time on a weekday")


def test_given_an_evening_habit_when_judged_then_it_is_usual() -> None:
    """One percent of a person's hours near an hour makes it theirs: an on-call engineer's nights."""
    history = NINE_TO_FIVE | {"wd02": (1, 0.1)}  # 1 of 81 hours: 1.2%
    assert hour_evidence({("wd", 3)}, history, 81) is None


# ---------------------------------------------------------------------------- counted


def test_given_a_person_and_a_role_when_counted_then_only_the_person_keeps_local_hours() -> None:
    # Given alice (an IAM user) and a deployment role calling from Germany on Tuesday at 08:30 UTC
    at = datetime(2026, 10, 20, 8, 30, tzinfo=UTC)
    aggregate = RunAggregate(geolocate=lambda ip: "DE")
    for item in _calls(DE_IP, at) + _calls(DE_IP, at, arn=DEPLOYER):
        aggregate.add(trail_record(item))

    # When the run's counters are derived
    keys = {key for key in aggregate.counters if key[0].startswith(HOURS_PARTITION_PREFIX)}

    # Then alice's hour is filed as 09:00 on a weekday in German time, with its TOTAL; the role has none
    assert keys == {
        (hours_partition(ALICE), category_sort_key("wd09")),
        (hours_partition(ALICE), TOTAL),
    }


# ---------------------------------------------------------------------------- end to end


def test_given_her_key_used_at_three_in_the_morning_where_it_came_from_then_raised_to_high(
    tmp_path: Path,
) -> None:
    """A thief with alice's key and her own client, from Bhutan at 03:00 there on a Tuesday."""
    # Given alice's working weeks from Germany, then her key from BT at 21:00 UTC on a Monday
    attack = _calls(BT_IP, datetime(2026, 10, 26, 21, 0, tzinfo=UTC))

    # When replayed
    alerts = _replayed(tmp_path, _working_weeks() + attack)

    # Then the alert carries the factor and pages
    (alert,) = alerts
    assert alert["location"] == "BT"
    assert [e["factor"] for e in alert["evidence"]] == ["unusual_hour"]
    assert alert["evidence"][0]["text"].startswith("unusual hour: 03:00 local time on a weekday")
    assert alert["severity"] == "high"


def test_given_a_traveller_working_her_usual_hours_in_tokyo_then_no_factor(tmp_path: Path) -> None:
    """Tokyo's 10:00 is 02:00 in Germany and 01:00 UTC: her day is judged in the time where she is."""
    # Given alice's working weeks, then alice in Japan at 10:00 Tokyo time on a Tuesday
    trip = _calls(JP_IP, datetime(2026, 10, 27, 1, 0, tzinfo=UTC))

    # When replayed
    alerts = _replayed(tmp_path, _working_weeks() + trip)

    # Then the new country is worth a look, no more
    (alert,) = alerts
    assert (alert["location"], alert["severity"], alert["evidence"]) == ("JP", "medium", [])


def test_given_a_thief_who_calls_in_the_victims_working_hours_then_still_alerted_at_medium(
    tmp_path: Path,
) -> None:
    """Calling while the victim works defeats the factor (threat model); its absence lowers nothing."""
    # Given alice's working weeks, then her key from BT at 14:00 Bhutan time (08:00 UTC) on a Tuesday
    attack = _calls(BT_IP, datetime(2026, 10, 27, 8, 0, tzinfo=UTC))

    # When replayed, Then the location's rarity alone still alerts, at medium
    alerts = _replayed(tmp_path, _working_weeks() + attack)
    assert [(a["location"], a["severity"]) for a in alerts] == [("BT", "medium")]


def test_given_calls_from_a_hosting_address_at_night_there_then_its_local_time_is_not_the_callers(
    tmp_path: Path,
) -> None:
    """The gateway's country says where the gateway is: a German on the Indian VPN gateway at 08:00
    in Germany calls at 12:30 in India, and a thief on a server there is anywhere. The hosting
    factor speaks for the server; the hour says nothing."""
    # Given alice's working weeks, then her key from an EC2 address in India at 03:30 there (22:00 UTC)
    calls = _calls(MUMBAI_EC2_IP, datetime(2026, 10, 26, 22, 0, tzinfo=UTC))

    # When replayed with the ASN database
    alerts = _replayed(tmp_path, _working_weeks() + calls)

    # Then the alert names the hosting provider, not the hour
    (alert,) = alerts
    assert [e["factor"] for e in alert["evidence"]] == ["hosting_provider"]


def test_given_a_traveller_alerted_on_arrival_when_she_works_late_two_days_later_then_no_new_alert(
    tmp_path: Path,
) -> None:
    """An odd hour on a trip's third day is the trip's schedule: the team was told of the trip."""
    # Given alice's working weeks, her first calls in Japan at 10:00 Tokyo time on a Tuesday (an
    # alert), then at 23:00 Tokyo time on the Thursday (an hour she never works)
    arrival = _calls(JP_IP, datetime(2026, 10, 27, 1, 0, tzinfo=UTC))
    late = _calls(JP_IP, datetime(2026, 10, 29, 14, 0, tzinfo=UTC))

    # When replayed
    alerts = _replayed(tmp_path, _working_weeks() + arrival + late)

    # Then the arrival alerted once, and the late evening raised nothing more
    assert [(a["location"], a["severity"]) for a in alerts] == [("JP", "medium")]


def test_given_the_registry_then_only_the_unusual_hour_does_not_re_alert_alone() -> None:
    assert {name for name, factor in REGISTRY.items() if not factor.re_alerts} == {"unusual_hour"}
