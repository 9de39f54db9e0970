"""A bucket writer's poison: an object that costs more to read than the function has, planted so
that every run reading its batch dies, and the window around it is never scored (issue 13).

Bounds a file cannot pass (records, what decoding would take), a record budget per batch, and,
for whatever still kills the runs, takeovers counted in the run record and a batch read file by
file after two failed attempts, its poison set aside (counted, logged, alarmed, in ``trailgeo
status``). Each test fails without the defence it names in docs/threat-model.md.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws import create_deployment, deps_for, emitted_metrics
from tests.builders import (
    GB_IP,
    SE_IP,
    T0,
    US_IP,
    delivery_key,
    files_by_delivery,
    gz_file,
    record,
    write_tree,
)
from tests.test_template import resources_of, sub_text, template  # noqa: F401 - the parsed template fixture
from trailgeo.adapters.dynamodb import RUN_PARTITION
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink, LocalLogSource
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.adapters.operations import DynamoOperations
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect
from trailgeo.app.operate import format_status, read_status
from trailgeo.core.counters import ORG_PARTITION
from trailgeo.core.networks import AsnInfo
from trailgeo.core.records import MAX_RECORDS_PER_FILE, MalformedFileError, decode_trail_file
from trailgeo.ports import LatePrefixes, ListedWindow

ATTACK_AT = T0 + timedelta(days=10, hours=3)
TICK = ATTACK_AT + timedelta(minutes=30)  # the run whose 2-hour look-back holds the attack
LEASE_PASSED = timedelta(minutes=30)  # a dead run's lease (20 minutes) has run out by the next-but-one run


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def empty_records(count: int) -> bytes:
    """``{"Records":[{},{},...]}``, gzipped: ten million of them are issue 13's 29 KB object."""
    return gzip.compress(b'{"Records":[' + b"{}," * (count - 1) + b"{}]}", compresslevel=9, mtime=0)


def baseline() -> list[dict[str, Any]]:
    """Ten days of alice calling DescribeInstances from the US, every 6 hours: enough to alert on."""
    return [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]


@dataclass
class Trail:
    """Local delivery files and in-memory state, kept across runs."""

    root: Path
    geo: Any
    store: MemoryFrequencyStore = field(default_factory=MemoryFrequencyStore)
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    outbox: MemoryOutbox = field(default_factory=MemoryOutbox)
    wrap: Callable[[LocalLogSource], Any] = lambda source: source

    def run(self, at: datetime, options: RunOptions | None = None) -> RunReport:
        deps = Dependencies(
            self.wrap(LocalLogSource(self.root)),
            self.geo,
            self.store,
            self.ledger,
            self.outbox,
            JsonLinesAlertSink(io.StringIO()),
            clock=lambda: at,
        )
        return detect(at, deps, options or RunOptions())

    def trained(self) -> Trail:
        """The baseline counted, without alerting, by one run with a long look-back."""
        self.run(ATTACK_AT - timedelta(hours=1), RunOptions(lookback=timedelta(days=11), alerting=False))
        return self

    def org_hours(self, country: str) -> int:
        state = self.store.partitions.get(ORG_PARTITION, {}).get(f"C#{country}")
        return state.buckets if state is not None else 0


def attack_files() -> dict[str, bytes]:
    """alice's key used from Great Britain, then from Sweden, in two delivery files."""
    calls = [record(ATTACK_AT, ip=GB_IP), record(ATTACK_AT + timedelta(minutes=7), ip=SE_IP)]
    return files_by_delivery(calls, minutes=5)


# ---------------------------------------------------------------------------- bounds of one file


def test_given_a_29_kb_object_of_ten_million_empty_records_beside_an_attack_then_it_is_refused_undecoded(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given a trained history, then the attacker's calls and, in the same window, their 29 KB
    # object of ten million "{}" records (1.15 GB once decoded, more than the function had)
    hostile = empty_records(10_000_000)
    assert len(hostile) < 40_000
    hostile_key = delivery_key(ATTACK_AT + timedelta(minutes=5), unique="POISON0000000001")
    write_tree(tmp_path, files_by_delivery(baseline()))
    trail = Trail(tmp_path, geo).trained()
    write_tree(tmp_path, attack_files() | {hostile_key: hostile})

    # When the next run reads the window
    tracemalloc.start()
    try:
        report = trail.run(TICK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then the object is skipped by its reason before it is decoded (its 29 MB of JSON is all
    # that is held), and the attack beside it is scored and alerts in that same run
    assert report.files_skipped == {"too_many_records": 1}
    assert trail.ledger.entries[hostile_key].outcome == "skipped:too_many_records"
    assert peak < 128 * 1024 * 1024
    assert report.events == 2
    assert sorted(a.country for a in report.alerts) == ["GB", "SE"]


@pytest.mark.parametrize(
    "document",
    [
        # decodable within the budget, but more records than a delivery holds: counted after decoding
        pytest.param(gzip.decompress(empty_records(MAX_RECORDS_PER_FILE + 1)), id="records"),
        # no record an object: the slow path would hold a value for each of three million
        pytest.param(b'{"Records":[' + b"0," * 3_000_000 + b"0]}", id="slow-path-values"),
        # no Records at all: the slow path would decode the whole document to say why
        pytest.param(b'{"Logs":[' + b"[]," * 3_000_000 + b"[]]}", id="whole-document"),
    ],
)
def test_given_a_file_with_more_values_than_any_delivery_when_decoded_then_it_is_skipped_whole(
    document: bytes,
) -> None:
    # Given a document of more records or values than a delivery file holds (see the parameters)
    tracemalloc.start()
    try:
        # When it is decoded
        with pytest.raises(MalformedFileError) as refused:
            decode_trail_file(document)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then the whole file is refused with the reason, none of it counted, within the budget
    assert refused.value.reason == "too_many_records"
    assert peak < 64 * 1024 * 1024


def test_given_the_real_corpora_and_a_busy_accounts_file_when_decoded_then_the_bounds_leave_a_wide_margin(
    shared_data: Path,
) -> None:
    # Given every delivery document of the real corpora, and a file of 20,000 records (above the
    # size from which the file's "{" and "," are counted before decoding)
    largest, refused = 0, Counter[str]()
    for path in sorted((shared_data / "cloudtrail").rglob("*.json*")):
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        try:
            # When each is decoded
            largest = max(largest, len(decode_trail_file(data).records))
        except MalformedFileError as exc:  # some of them are no delivery document at all
            refused[exc.reason] += 1
    busy = gzip.decompress(gz_file([record(T0 + timedelta(seconds=i), ip=US_IP) for i in range(20_000)]))
    assert len(busy) > 4 * 1024 * 1024

    # Then none is refused for its size, the busy file included
    assert "too_many_records" not in refused
    assert len(decode_trail_file(busy).records) == 20_000
    # And the record bound is a hundred times the largest real file
    assert largest > 600
    assert 100 * largest < MAX_RECORDS_PER_FILE


# ---------------------------------------------------------------------------- the batch's budget


def test_given_a_batch_over_its_record_budget_when_read_then_the_files_past_it_go_to_the_next_run_none_lost(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given three delivery files of two records each, and a batch budget of four records
    files = files_by_delivery([record(ATTACK_AT + timedelta(minutes=m), ip=SE_IP) for m in range(0, 45, 8)])
    assert sorted(len(json.loads(gzip.decompress(body))["Records"]) for body in files.values()) == [2, 2, 2]
    write_tree(tmp_path, files)
    trail = Trail(tmp_path, geo)
    options = RunOptions(batch_records=4)

    # When a run reads them
    first = trail.run(ATTACK_AT + timedelta(hours=1), options)

    # Then it stops at the file that takes it over the budget and hands that one back; the
    # watermark stays where it was, so that no look-back loses it
    assert (first.files_read, first.files_over_budget, first.files_released, first.events) == (2, 1, 1, 4)
    assert trail.ledger.high_water == ATTACK_AT + timedelta(hours=1) - RunOptions().lookback
    # And the next run reads it: every event counts once
    second = trail.run(ATTACK_AT + timedelta(hours=1, minutes=15), options)
    assert (second.files_new, second.files_read, second.events) == (1, 1, 2)
    assert {entry.outcome for entry in trail.ledger.entries.values()} == {"done"}


# ---------------------------------------------------------------------------- takeovers and poison


@dataclass
class DyingOn:
    """A log source whose read of one key raises MemoryError, as inflating a bomb would."""

    inner: LocalLogSource
    poison: str
    reads: Counter[str]

    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:
        return self.inner.list_window(start, end, late)

    def read(self, key: str) -> bytes:
        self.reads[key] += 1
        if key == self.poison:
            raise MemoryError(f"reading {key}")
        return self.inner.read(key)


def test_given_a_file_that_kills_every_run_reading_it_when_taken_over_twice_then_the_third_sets_it_aside(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given a trained history, the attacker's calls, and in the same batch a file whose reading
    # makes the run die (MemoryError)
    write_tree(tmp_path, files_by_delivery(baseline()))
    trail = Trail(tmp_path, geo).trained()
    poison = delivery_key(ATTACK_AT + timedelta(minutes=5), unique="POISON0000000002")
    batch = attack_files() | {poison: gz_file([record(ATTACK_AT, ip=US_IP)])}
    write_tree(tmp_path, batch)
    reads: Counter[str] = Counter()
    trail.wrap = lambda source: DyingOn(source, poison, reads)

    # When its run dies, and so does the takeover of its batch once the lease has run out
    for attempt in range(2):
        with pytest.raises(MemoryError):
            trail.run(TICK + attempt * LEASE_PASSED)
    third = trail.run(TICK + 2 * LEASE_PASSED)

    # Then the third attempt reads the batch file by file: the poison is set aside, counted and
    # closed with the batch; the attack beside it is scored and alerts
    assert third.files_recovered == len(batch)
    assert third.files_skipped == {"poison": 1}
    assert trail.ledger.entries[poison].outcome == "skipped:poison"
    assert trail.ledger.poison == {trail.ledger.entries[poison].run_id: {poison}}
    assert sorted(a.country for a in third.alerts) == ["GB", "SE"]
    assert (trail.org_hours("GB"), trail.org_hours("SE")) == (1, 1)
    # And no later run reads it again: it is done, never retried
    later = trail.run(TICK + 3 * LEASE_PASSED)
    assert (later.files_recovered, later.files_new, reads[poison]) == (0, 0, 3)


class Killed(BaseException):
    """The platform ending the process (out of memory, out of time): nothing in it can catch it."""


@dataclass
class KilledOn:
    """A GeoIP resolver during whose lookup of one address the process is killed."""

    inner: MaxMindGeoResolver
    address: str

    def country(self, ip: str) -> str | None:
        if ip == self.address:
            raise Killed(ip)
        return self.inner.country(ip)

    @property
    def has_cities(self) -> bool:
        return self.inner.has_cities

    def city(self, ip: str) -> str | None:
        return self.inner.city(ip)

    @property
    def description(self) -> str:
        return self.inner.description

    @property
    def has_asn(self) -> bool:
        return self.inner.has_asn

    def asn(self, ip: str) -> AsnInfo | None:
        return self.inner.asn(ip)


def test_given_a_file_whose_counting_kills_the_process_on_dynamodb_then_its_name_survives_and_status_lists_it(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given, in the trail bucket, two good delivery files and one whose counting kills the
    # process: no exception to catch, only the run record to remember what was being read
    deployment = create_deployment(aws)
    calls = [record(ATTACK_AT, ip=GB_IP), record(ATTACK_AT + timedelta(minutes=7), ip=US_IP)]
    good = files_by_delivery(calls, minutes=5)
    poison = delivery_key(ATTACK_AT + timedelta(minutes=5), unique="POISON0000000003")
    s3 = aws.client("s3")
    for key, body in (good | {poison: gz_file([record(ATTACK_AT, ip=SE_IP)])}).items():
        s3.put_object(Bucket=deployment.bucket, Key=key, Body=body)

    def run(at: datetime) -> RunReport:
        deps = deps_for(aws, KilledOn(geo, SE_IP), deployment, at)
        return detect(at, deps, RunOptions(alerting=False))

    # When its run, the first takeover and the first file-by-file attempt are killed
    for attempt in range(3):
        with pytest.raises(Killed):
            run(TICK + attempt * LEASE_PASSED)
    dynamodb = aws.client("dynamodb")
    (open_run,) = dynamodb.query(
        TableName=deployment.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": RUN_PARTITION}},
    )["Items"]
    assert (open_run["att"]["N"], open_run["cur"]["S"]) == ("2", poison)
    last = run(TICK + 3 * LEASE_PASSED)

    # Then the next attempt sets the named file aside and scores the rest
    assert last.files_skipped == {"poison": 1}
    assert (last.files_read, last.events) == (2, 2)
    closed = dynamodb.get_item(TableName=deployment.table, Key={"pk": open_run["pk"], "sk": open_run["sk"]})
    assert closed["Item"]["st"]["S"] == "closed"
    kept = closed["Item"]
    assert (kept["att"]["N"], kept["pz"]["SS"], "cur" in kept) == (
        "3",
        [poison],
        False,
    )
    # And `trailgeo status` lists it, with a warning, for as long as the run record is kept
    status = read_status(DynamoOperations(dynamodb, deployment.table), TICK + 4 * LEASE_PASSED)
    assert status.as_dict()["files_poison"] == [{"run_id": open_run["sk"]["S"], "key": poison}]
    text = format_status(status)
    assert poison in text
    assert "1 file(s) set aside as poison" in text


# ---------------------------------------------------------------------------- metrics and alarms


def alarm_fires(alarm: dict[str, Any], per_period: list[float]) -> bool:
    """CloudWatch's M out of N: some N consecutive periods hold M breaching data points."""
    periods = alarm["EvaluationPeriods"]
    needed = alarm.get("DatapointsToAlarm", periods)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    breaching = [value >= alarm["Threshold"] for value in per_period]
    return any(sum(breaching[i : i + periods]) >= needed for i in range(len(breaching) - periods + 1))


def test_given_runs_failing_every_other_quarter_hour_then_the_failing_runs_alarm_fires_one_failure_does_not(
    template: dict[str, Any],  # noqa: F811
) -> None:
    # Given the detector's failing-runs alarm (Lambda Errors, summed by quarter-hour)
    failing = resources_of(template, "AWS::CloudWatch::Alarm")["DetectorFailingAlarm"]["Properties"]
    assert (failing["MetricName"], failing["Statistic"], failing["Period"]) == ("Errors", "Sum", 900)

    # When a poisoned batch kills every other run (each takeover dies, the runs between succeed),
    # Then it fires within the hour; one failed run and its retry, recovered, do not page
    assert alarm_fires(failing, [1, 0, 1, 0, 1, 0, 1, 0])
    assert alarm_fires(failing, [2, 0, 0, 1])
    assert not alarm_fires(failing, [0, 2, 0, 0, 0, 0, 0, 0])


def test_given_a_run_that_sets_a_poison_file_aside_then_its_metric_is_emitted_and_an_alarm_watches_it(
    template: dict[str, Any],  # noqa: F811
) -> None:
    # Given a run report with one poison file
    report = RunReport(scheduled_at=TICK, window_start=TICK - timedelta(hours=2), window_end=TICK)
    report.files_skipped["poison"] += 1

    # When its metrics are emitted
    emitted = emitted_metrics(report)

    # Then FilesPoisoned carries it, and an alarm tells the operations topic from the first one
    assert emitted["FilesPoisoned"] == [1.0]
    (alarm,) = [
        a["Properties"]
        for a in resources_of(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "FilesPoisoned"
    ]
    assert sub_text(alarm["Namespace"]) == "trailgeo/${AWS::StackName}"
    assert alarm_fires(alarm, [1])
    assert alarm["AlarmActions"] == [{"Ref": "OperationsTopic"}]
