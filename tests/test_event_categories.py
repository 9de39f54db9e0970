"""Data and network activity events (``eventCategory``): skipped and counted by default
(``Events=Management``), scored and counted apart with ``Events=All``; any other category, or
none, is a management event, so that a forged category never hides a call."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import (
    ACCOUNT,
    ALICE,
    SE_IP,
    T0,
    US_IP,
    files_by_delivery,
    record,
    trail_record,
    write_tree,
)
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import RunOptions
from trailgeo.app.detect.ingest import ROUTINE_SKIPS
from trailgeo.app.replay import ReplaySummary, replay
from trailgeo.app.runtime import REASONS
from trailgeo.app.settings import Settings, SettingsError
from trailgeo.cli import main
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.categories import EventScope
from trailgeo.core.counters import CLIENTS_PARTITION_PREFIX, HOURS_PARTITION_PREFIX
from trailgeo.core.records import TrailRecord, decode_trail_file

WHEN = datetime(2026, 10, 11, 3, 0, tzinfo=UTC)
ATTACK_AT = T0 + timedelta(days=10, hours=3)
ATTACKER_ACCOUNT = "999988887777"
PRIVATE_IP = "10.1.2.3"
BASE_ENVIRONMENT = {
    "TRAIL_BUCKET": "trail-bucket",
    "TABLE_NAME": "trailgeo-table",
    "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
}


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def _records(*bodies: dict[str, Any]) -> list[TrailRecord]:
    return [trail_record(body) for body in bodies]


def _data(when: datetime = WHEN, **fields: Any) -> dict[str, Any]:
    """An S3 object-level call, as CloudTrail logs a data event."""
    fields = {"source": "s3.amazonaws.com", "name": "GetObject", "managementEvent": False, **fields}
    return record(when, eventCategory="Data", **fields)


def _network(when: datetime = WHEN, **fields: Any) -> dict[str, Any]:
    """A call through a VPC endpoint, as CloudTrail logs a network activity event."""
    return record(when, eventCategory="NetworkActivity", managementEvent=False, **fields)


class Lookups:
    """A GeoIP lookup that remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, ip: str) -> str | None:
        self.asked.append(ip)
        return {US_IP: "US", SE_IP: "SE"}.get(ip)


def _locations(aggregate: RunAggregate) -> set[str]:
    """The locations the aggregate's counters were counted in."""
    identity_histories = (CLIENTS_PARTITION_PREFIX, HOURS_PARTITION_PREFIX)  # client families, local hours
    return {key[1] for key in aggregate.counters if not key[0].startswith(identity_histories)} - {"TOTAL"}


def baseline() -> list[dict[str, Any]]:
    """Ten days of alice calling DescribeInstances from the US, every 6 hours (40 hourly buckets)."""
    return [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]


def run_replay(logs: Path, geo: MaxMindGeoResolver, events: EventScope) -> tuple[list[Any], ReplaySummary]:
    out = io.StringIO()
    summary, _ = replay(logs, geo, JsonLinesAlertSink(out), RunOptions(events=events))
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


# ------------------------------------------------------------------------------------ decoding


def test_given_records_of_each_category_when_decoded_then_the_category_is_kept_and_a_wrong_type_counted() -> (
    None
):
    # Given a delivery file with a data, a network activity, a management event, one without a
    # category and one whose category is no string
    bodies = [_data(), _network(), record(WHEN), record(WHEN), record(WHEN, eventCategory=["Data"])]
    del bodies[3]["eventCategory"]

    # When it is decoded
    decoded = decode_trail_file(json.dumps({"Records": bodies}).encode())

    # Then each category is read, the wrong type dropped from its record (kept) and counted
    assert [r.eventCategory for r in decoded.records] == ["Data", "NetworkActivity", "Management", None, None]
    assert decoded.skipped == Counter({"field_wrong_type": 1})


# ------------------------------------------------------------------------------------ the loop


def test_given_management_scope_when_data_and_network_events_come_then_skipped_first_never_geolocated() -> (
    None
):
    # Given a file of one management call, then data and network activity events from addresses
    # no other record uses (one without a method, one out of the file's window: skipped by
    # category first, before any other check)
    lookups = Lookups()
    aggregate = RunAggregate(geolocate=lookups)
    file = _records(
        record(WHEN, ip=US_IP),
        _data(ip=SE_IP),
        _data(ip=SE_IP, eventName=""),
        _network(ip=SE_IP),
        _data(WHEN + timedelta(days=30), ip=SE_IP),
    )

    # When it is added
    skipped = aggregate.add_records(file)

    # Then the four are skipped under their category, and their address was never looked up
    assert skipped == Counter({"data_event": 3, "network_activity_event": 1})
    assert lookups.asked == [US_IP]
    assert aggregate.geolocated == 1
    assert aggregate.events == sum(skipped.values()) + aggregate.geolocated
    assert _locations(aggregate) == {"C#US"}


def test_given_all_scope_when_data_and_network_events_come_then_scored_as_management_and_counted_apart() -> (
    None
):
    # Given the same calls once as data and network activity events, once as management events
    calls = [("s3.amazonaws.com", "GetObject", US_IP), ("ec2.amazonaws.com", "DescribeVpcs", SE_IP)]
    categorised = _records(
        *(
            record(WHEN, source=s, name=n, ip=ip, eventCategory=c, eventID=f"id-{i}")
            for i, ((s, n, ip), c) in enumerate(zip(calls, ["Data", "NetworkActivity"], strict=True))
        )
    )
    managed = _records(
        *(record(WHEN, source=s, name=n, ip=ip, eventID=f"id-{i}") for i, (s, n, ip) in enumerate(calls))
    )

    # When each is added to an aggregate scoring every category
    scored = RunAggregate(geolocate=Lookups(), scope=EventScope.ALL)
    skipped = scored.add_records(categorised)
    reference = RunAggregate(geolocate=Lookups(), scope=EventScope.ALL)
    reference.add_records(managed)

    # Then they are counted exactly as management calls, and counted apart (no skip)
    assert skipped == Counter({"data_event_scored": 1, "network_activity_event_scored": 1})
    assert scored.geolocated == 2
    assert scored.counters == reference.counters
    assert scored.groups.keys() == reference.groups.keys()


@pytest.mark.parametrize(
    "category",
    [None, "Management", "Foo", "Insight", "insight", "data", "Data ", "NetworkActivity\u200b", ""],
    ids=repr,
)
def test_given_a_category_that_is_not_data_or_network_activity_when_added_then_it_is_scored_as_management(
    category: str | None,
) -> None:
    # Given a call whose eventCategory is absent, Management, or anything a bucket writer could
    # forge (a made-up word, Insight, a near-miss of Data or NetworkActivity)
    body = record(WHEN, ip=SE_IP, eventCategory=category)
    if category is None:
        del body["eventCategory"]
    aggregate = RunAggregate(geolocate=Lookups())

    # When it is added under the default scope
    skipped = aggregate.add_records(_records(body))

    # Then it is scored as a management event: located, counted, nothing skipped
    assert skipped == Counter()
    assert aggregate.geolocated == 1
    assert _locations(aggregate) == {"C#SE"}


def test_given_stolen_keys_used_with_a_forged_event_category_when_replayed_then_the_attack_alerts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given alice's ten days from the US, then her keys used from Sweden in files a bucket writer
    # forged: every attack record claims a category of its own ("Foo", "Insight"), hoping that
    # whatever is not "Management" is set aside
    attack = [
        record(ATTACK_AT + timedelta(minutes=m), source=s, name=n, ip=SE_IP, eventCategory=c)
        for m, (s, n, c) in enumerate(
            [("iam.amazonaws.com", "CreateAccessKey", "Foo"), ("iam.amazonaws.com", "ListUsers", "Insight")]
        )
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + attack))

    # When the trail is replayed with the default scope
    alerts, summary = run_replay(tmp_path, geo, EventScope.MANAGEMENT)

    # Then the attack alerts from Sweden for alice, and nothing was skipped
    assert [(a["location"], a["aws"]["cloudtrail"]["user_identity"]["arn"]) for a in alerts] == [
        ("SE", ALICE)
    ]
    assert summary.records_skipped == Counter()
    assert summary.events_geolocated == 40 + 2


def test_given_object_reads_from_an_unusual_country_when_replayed_then_only_events_all_alerts(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given alice's ten days from the US, then her keys reading S3 objects from Sweden (data
    # events only: the exfiltration of a ransomware crew)
    exfiltration = [_data(ATTACK_AT + timedelta(minutes=m), ip=SE_IP, arn=ALICE) for m in range(5)]
    write_tree(tmp_path, files_by_delivery(baseline() + exfiltration))

    # When it is replayed as deployed by default, then as deployed with Events=All
    quiet, management = run_replay(tmp_path, geo, EventScope.MANAGEMENT)
    alerts, everything = run_replay(tmp_path, geo, EventScope.ALL)

    # Then the default skips the reads, counted, and raises nothing; All alerts on them
    assert quiet == []
    assert management.records_skipped == Counter({"data_event": 5})
    assert management.events_geolocated == 40
    assert [(a["location"], [m["method"] for m in a["methods"]]) for a in alerts] == [
        ("SE", ["s3.amazonaws.com:GetObject"])
    ]
    assert everything.records_skipped == Counter({"data_event_scored": 5})
    assert everything.events_geolocated == 45


@pytest.mark.parametrize(
    ("scope", "expected", "located"),
    [
        # the file's pass skips them by category: never taken for source_private, never moved
        (
            EventScope.MANAGEMENT,
            {"data_event": 1, "network_activity_event": 1, "source_vpce_own": 1},
            {"C#US"},
        ),
        # scored from the endpoint's location, their category counted once (not again by the endpoint pass)
        (
            EventScope.ALL,
            {"data_event_scored": 1, "network_activity_event_scored": 1, "source_vpce_own": 1},
            {"C#US", f"C#VPCE:{ATTACKER_ACCOUNT}"},
        ),
    ],
    ids=["management", "all"],
)
def test_given_data_and_network_events_through_a_foreign_vpc_endpoint_when_added_then_counted_once(
    scope: EventScope, expected: dict[str, int], located: set[str]
) -> None:
    # Given a file with a public call, a call through the organization's own endpoint, and a data
    # and a network activity event through the attacker's endpoint, from a private address
    endpoint = {"vpcEndpointId": "vpce-0a1b2c3d4e5f60718", "ip": PRIVATE_IP}
    file = _records(
        record(WHEN, ip=US_IP),
        record(WHEN, vpcEndpointAccountId=ACCOUNT, **endpoint),
        _data(vpcEndpointAccountId=ATTACKER_ACCOUNT, **endpoint),
        _network(vpcEndpointAccountId=ATTACKER_ACCOUNT, **endpoint),
    )
    aggregate = RunAggregate(geolocate=Lookups(), scope=scope)

    # When it is added
    skipped = aggregate.add_records(file, folder=ACCOUNT)

    # Then every record is counted once, under one outcome
    assert skipped == Counter(expected)
    assert _locations(aggregate) == located
    not_skips = sum(n for reason, n in skipped.items() if reason.endswith("_scored"))
    assert aggregate.events == aggregate.geolocated + sum(skipped.values()) - not_skips


def test_given_partials_of_another_scope_when_merged_then_refused() -> None:
    # Given a fan-out partial taken while data events were skipped
    partial = RunAggregate(geolocate=Lookups())
    partial.add_records(_records(_data(ip=US_IP), record(WHEN, ip=US_IP)))

    # When a reduce that scores them merges it, then it is refused; one of its own scope merges
    with pytest.raises(ValueError, match="events Management"):
        RunAggregate(geolocate=Lookups(), scope=EventScope.ALL).merge_snapshot(partial.snapshot())
    same = RunAggregate(geolocate=Lookups())
    same.merge_snapshot(partial.snapshot())
    assert same.skipped == Counter({"data_event": 1})


# ---------------------------------------------------------------------------- settings, CLI


def test_given_the_events_setting_when_read_then_management_by_default_all_on_request_and_else_refused() -> (
    None
):
    # Given a deployment's environment with no EVENTS, with EVENTS=All, and with values it refuses
    default = Settings.from_environ(BASE_ENVIRONMENT).run_options()
    everything = Settings.from_environ({**BASE_ENVIRONMENT, "EVENTS": "All"}).run_options()

    # Then the run options carry the scope, which the run's aggregates take
    assert default.events is EventScope.MANAGEMENT
    assert everything.events is EventScope.ALL
    for value in ("all", "Data", ""):
        with pytest.raises(SettingsError, match="EVENTS"):
            Settings.from_environ({**BASE_ENVIRONMENT, "EVENTS": value})


def test_given_the_category_reasons_then_the_metric_registry_knows_them_and_files_do_not_log_them() -> None:
    # Given the reasons a category is counted under
    reasons = {"data_event", "network_activity_event", "data_event_scored", "network_activity_event_scored"}

    # Then each is a value of RecordsSkipped's reason dimension, and routine in a file's log line
    assert reasons <= REASONS["RecordsSkipped"]
    assert reasons <= ROUTINE_SKIPS


@pytest.mark.parametrize(
    ("argv", "skipped", "alerts"),
    [
        ([], {"data_event": 5}, 0),
        (["--events", "management"], {"data_event": 5}, 0),
        (["--events", "all"], {"data_event_scored": 5}, 1),
    ],
    ids=["default", "management", "all"],
)
def test_given_a_trail_with_data_events_when_the_cli_replays_it_then_events_says_which_are_scored(
    tmp_path: Path,
    country_test_mmdb: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    skipped: dict[str, int],
    alerts: int,
) -> None:
    # Given alice's history and five object reads from Sweden
    logs = tmp_path / "trail"
    exfiltration = [_data(ATTACK_AT + timedelta(minutes=m), ip=SE_IP) for m in range(5)]
    write_tree(logs, files_by_delivery(baseline() + exfiltration))

    # When `trailgeo replay` runs with the option as given
    code = main(
        ["replay", str(logs), "--geoip", str(country_test_mmdb), "--alerts-out", str(tmp_path / "a"), *argv]
    )

    # Then the data events are skipped by default, scored with --events all
    assert code == 0
    summary = json.loads(capsys.readouterr().err)["replay"]
    assert summary["records_skipped"] == skipped
    assert summary["alerts"] == alerts


def test_given_a_trail_with_data_events_when_backfilled_with_events_all_then_they_are_trained(
    tmp_path: Path, country_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a day of alice's object reads from the US
    logs = tmp_path / "trail"
    reads = [_data(T0 + timedelta(hours=h, minutes=5), ip=US_IP) for h in range(24)]
    write_tree(logs, files_by_delivery(reads))
    common = ["backfill", "--logs", str(logs), "--days", "2", "--geoip", str(country_test_mmdb)]
    end = ["--end", (T0 + timedelta(days=2)).isoformat()]

    # When it is backfilled by default, then with --events all
    assert main([*common, "--state", str(tmp_path / "m.json"), *end]) == 0
    management = json.loads(capsys.readouterr().out)["backfill"]
    assert main([*common, "--state", str(tmp_path / "a.json"), *end, "--events", "all"]) == 0
    everything = json.loads(capsys.readouterr().out)["backfill"]

    # Then only the second counted them into the history
    assert (management["records_skipped"], management["events_geolocated"]) == ({"data_event": 24}, 0)
    assert (everything["records_skipped"], everything["events_geolocated"]) == ({"data_event_scored": 24}, 24)
