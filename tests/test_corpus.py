"""Every real CloudTrail corpus in ../shared/data through the package's real entry points.

The SANS files are read in place and never copied; the Panther scenario is rebuilt in a
temporary directory in CloudTrail's S3 layout.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, require
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import replay
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.categories import EventScope
from trailgeo.core.payload import decompress
from trailgeo.core.records import DecodedFile, MalformedFileError, TrailRecord, decode_trail_file
from trailgeo.core.sources import SourceKind, classify_source

pytestmark = pytest.mark.corpus

CLOUDTRAIL = SHARED_DATA / "cloudtrail"
SANS = CLOUDTRAIL / "sans504-s3-ransomware-lab"


@dataclass(frozen=True)
class Dataset:
    name: str
    pattern: str  # glob under cloudtrail/
    files: int
    events: int  # the README table's count
    reasons: dict[str, int]  # MalformedFileError reasons by file; "ok" for {"Records": [...]}
    field: str | None = None  # events sit under this key of each JSON line (Panther rule tests)


RECORDS_FILES = [
    Dataset("sans504", "sans504-s3-ransomware-lab/AWSLogs/**/*.json.gz", 3872, 30_477, {"ok": 3872}),
    Dataset("invictus", "invictus-ir-aws-dataset/CloudTrail/*.json", 55, 2900, {"ok": 55}),
    Dataset(
        "otrf-honeybucket",
        "otrf-security-datasets/aws_s3_honeybucketlogs/honeybucket_cloudtrail_shaped.json",
        1,
        301,
        {"ok": 1},
    ),
    Dataset("panther-scenarios", "panther-analysis/scenarios/*/*.json", 4, 27, {"ok": 4}),
]
OTHER_SHAPES = [
    # one JSON array per technique
    Dataset("stratus", "stratus-red-team-detonations/*.json", 35, 310, {"not_an_object": 35}),
    # arrays (21 of them empty) and single event objects
    Dataset(
        "traildiscover",
        "traildiscover/logExamples/*.cloudtrail",
        584,
        563,
        {"not_an_object": 564, "no_records_key": 20},
    ),
    # JSON Lines after Logstash
    Dataset(
        "otrf-ec2-proxy",
        "otrf-security-datasets/ec2_proxy_s3_exfiltration/*.json",
        1,
        103,
        {"invalid_json": 1},
    ),
    Dataset(
        "panther-rule-tests", "panther-analysis/rule_tests.jsonl", 1, 537, {"invalid_json": 1}, field="log"
    ),
]

STRATUS = OTHER_SHAPES[0]


def _files(dataset: Dataset) -> list[Path]:
    require(CLOUDTRAIL, "CloudTrail corpora")
    files = sorted(p for p in CLOUDTRAIL.glob(dataset.pattern) if p.is_file())
    assert len(files) == dataset.files, f"{dataset.name}: {len(files)} files"
    return files


def _decode(path: Path) -> DecodedFile:
    return decode_trail_file(decompress(path.read_bytes(), name=path.name))


def _events_in(path: Path, field: str | None) -> list[Any]:
    """The events of a file that is not a delivery file, read with the stdlib as an oracle."""
    text = path.read_text(encoding="utf-8")
    try:
        documents = [json.loads(text)]
    except json.JSONDecodeError:
        documents = [json.loads(line) for line in text.splitlines() if line.strip()]
    events: list[Any] = []
    for document in documents:
        item = document[field] if field else document
        events.extend(item if isinstance(item, list) else [item])
    return events


def _expected_reason(path: Path) -> str:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return "invalid_json"
    if not isinstance(document, dict):
        return "not_an_object"
    return "no_records_key" if "Records" not in document else "records_not_a_list"


@pytest.mark.parametrize("dataset", RECORDS_FILES, ids=lambda d: d.name)
def test_given_records_shaped_corpus_when_every_file_decoded_then_every_event_kept(dataset: Dataset) -> None:
    """Given a corpus of ``{"Records": [...]}`` files, when each goes through decompress and
    decode_trail_file, then none is rejected, no record is skipped, and the event count is the
    README's."""
    events = 0
    for path in _files(dataset):
        decoded = _decode(path)
        assert not decoded.skipped, f"{path.name}: {decoded.skipped}"
        assert all(isinstance(r, TrailRecord) for r in decoded.records)
        events += len(decoded.records)
    assert events == dataset.events


@pytest.mark.parametrize("dataset", OTHER_SHAPES, ids=lambda d: d.name)
def test_given_other_shaped_corpus_when_decoded_then_malformed_with_reason_and_every_event_decodes_wrapped(
    dataset: Dataset,
) -> None:
    """Given files that are a bare array, a single event or JSON lines, when decoded as delivery
    files, then each raises MalformedFileError with the reason its shape calls for; and when each
    of their events is wrapped as ``{"Records": [event]}``, then every event either decodes or is
    counted as a skipped record, and the total is the README's."""
    reasons: Counter[str] = Counter()
    events_in = records_out = records_skipped = 0
    field_problems: Counter[str] = Counter()
    for path in _files(dataset):
        with pytest.raises(MalformedFileError) as raised:
            _decode(path)
        assert raised.value.reason == _expected_reason(path), path.name
        reasons[raised.value.reason] += 1
        for event in _events_in(path, dataset.field):
            events_in += 1
            decoded = decode_trail_file(b'{"Records":[' + json.dumps(event).encode() + b"]}")
            records_out += len(decoded.records)
            records_skipped += decoded.skipped["record_not_object"]
            field_problems.update(decoded.skipped)
    assert dict(reasons) == dataset.reasons
    assert records_out + records_skipped == events_in
    assert events_in == dataset.events
    assert field_problems == Counter(), "no field of these corpora has a wrong type"


@pytest.mark.parametrize(
    "relative",
    [
        "otrf-security-datasets/aws_s3_honeybucketlogs/AWS_S3_HoneyBucketLogs.csv",
        "otrf-security-datasets/aws_s3_honeybucketlogs/SDAWS-2202181000.yaml",
        "otrf-security-datasets/ec2_proxy_s3_exfiltration/SDAWS-200914011940.yaml",
        "panther-analysis/scenarios/compromised-root-creds/README.md",
    ],
)
def test_given_companion_non_json_file_when_decoded_then_invalid_json(relative: str) -> None:
    """Given a corpus's CSV/YAML/Markdown companion file, when decoded, then invalid_json."""
    path = require(CLOUDTRAIL / relative, "CloudTrail corpora")
    with pytest.raises(MalformedFileError) as raised:
        _decode(path)
    assert raised.value.reason == "invalid_json"


def _parses(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def test_given_stratus_randomised_addresses_when_classified_then_invalid_never_geolocated() -> None:
    """Given Stratus Red Team's randomised sourceIPAddress values, when classified, then the
    known broken ones (leading zeros) are invalid, and no value that merely looks like an IPv4
    address but does not parse is ever treated as an address."""
    values: Counter[str] = Counter()
    for path in _files(STRATUS):
        values.update(e.get("sourceIPAddress") for e in _events_in(path, None))
    for known in ("253.252.51.07", "035.249.253.232"):
        assert known in values
        assert classify_source(known).kind is SourceKind.INVALID
    kinds: Counter[str] = Counter()
    for value, n in values.items():
        kind, ip = classify_source(value)
        kinds[kind.value] += n
        if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", value) and not _parses(value):
            assert (kind, ip) == (SourceKind.INVALID, None), value
    assert kinds["invalid"] == 107  # stats.py: 34.5% of 310 "unparseable"
    assert sum(kinds.values()) == 310


@pytest.fixture(scope="module")
def sans_records() -> list[TrailRecord]:
    require(SANS, "SANS SEC504 lab CloudTrail")
    records: list[TrailRecord] = []
    for path in sorted(SANS.glob("AWSLogs/**/*.json.gz")):
        records.extend(_decode(path).records)
    return records


# The SANS lab is an S3 ransomware exercise: 16,574 of its 30,477 records are data events (S3
# PutObject, GetObject, HeadBucket), 1,170 of them from the two public addresses (the attacker's
# object reads among them). A deployment sees them only with Events=All, so each test below states
# the scope it replays, and the books of both.
SANS_DATA_EVENTS = 16_574
SANS_SCOPES = [
    pytest.param(
        EventScope.MANAGEMENT,
        {"data_event": SANS_DATA_EVENTS, "source_service_host": 6145},
        696,
        id="management",
    ),
    pytest.param(
        EventScope.ALL,
        {"data_event_scored": SANS_DATA_EVENTS, "source_service_host": 21_549},
        696 + 1170,
        id="all",
    ),
]


@pytest.mark.parametrize(("scope", "by_scope", "geolocated"), SANS_SCOPES)
def test_given_all_sans_files_in_one_aggregate_when_added_then_6496_duplicates_dropped(
    sans_records: list[TrailRecord], scope: EventScope, by_scope: dict[str, int], geolocated: int
) -> None:
    """Given all 30,477 SANS events (two trails deliver 6,496 eventIDs twice), when added to one
    RunAggregate of the scope, then exactly 6,496 are skipped as duplicates, only the two public
    IPs are ever geolocated, and the data events are skipped (Management) or scored and counted
    apart (All)."""
    looked_up: list[str] = []

    def geolocate(ip: str) -> str:
        looked_up.append(ip)
        return "US"

    aggregate = RunAggregate(geolocate=geolocate, scope=scope)
    aggregate.add_records(sans_records)
    assert aggregate.events == 30_477
    assert aggregate.skipped["duplicate_event"] == 6496
    assert sorted(looked_up) == ["3.238.12.183", "96.253.26.224"]
    assert dict(aggregate.skipped) == {"duplicate_event": 6496, "source_aws_internal": 566, **by_scope}
    assert aggregate.geolocated == geolocated
    skips = sum(n for reason, n in aggregate.skipped.items() if reason != "data_event_scored")
    assert aggregate.events == skips + aggregate.geolocated


@pytest.mark.parametrize(("scope", "by_scope", "geolocated"), SANS_SCOPES)
def test_given_sans_lab_when_replayed_with_dbip_then_no_alert(
    dbip_mmdb: Path, scope: EventScope, by_scope: dict[str, int], geolocated: int
) -> None:
    """Given the SANS lab (admin and attacker both in the US), when replayed tick by tick with
    DB-IP Lite under either scope, then every file and event is read, both public IPs geolocate
    to US, the data events are skipped or scored as the scope says, and no alert is raised: with
    Events=All the attacker's object reads are scored, from a country the account knows."""
    require(SANS, "SANS SEC504 lab CloudTrail")
    geo = MaxMindGeoResolver(dbip_mmdb)
    stream = io.StringIO()
    summary, _ = replay(SANS, geo, JsonLinesAlertSink(stream), RunOptions(events=scope))
    assert summary.files == 3872
    assert summary.events == 30_477
    assert dict(summary.files_skipped) == {}
    assert dict(summary.keys_skipped) == {"key_other": 1}  # LICENSE-NOTE.txt beside AWSLogs/
    assert geo._cache == {"96.253.26.224": "US", "3.238.12.183": "US"}
    category = next(reason for reason in by_scope if reason.startswith("data_event"))
    assert summary.records_skipped[category] == SANS_DATA_EVENTS
    assert summary.events_geolocated == geolocated
    assert summary.alerts == 0
    assert stream.getvalue() == ""


# --- Panther: compromised root credentials ----------------------------------------------------

PANTHER = CLOUDTRAIL / "panther-analysis" / "scenarios" / "compromised-root-creds"
PANTHER_ACCOUNT = "493859302102"
ROOT_ARN = f"arn:aws:iam::{PANTHER_ACCOUNT}:root"


def _write_s3_layout(root: Path, events: list[dict[str, Any]], account: str) -> int:
    """Bucket events into 15-minute delivery files, delivered at the end of their slot."""
    slots: dict[datetime, list[dict[str, Any]]] = {}
    for event in events:
        when = datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        slot = when.replace(minute=when.minute - when.minute % 15, second=0)
        slots.setdefault(slot + timedelta(minutes=15), []).append(event)
    for n, (delivered, items) in enumerate(sorted(slots.items())):
        key = (
            f"AWSLogs/{account}/CloudTrail/us-east-1/{delivered:%Y/%m/%d}/"
            f"{account}_CloudTrail_us-east-1_{delivered:%Y%m%dT%H%MZ}_Panther{n:09d}.json.gz"
        )
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(json.dumps({"Records": items}).encode(), mtime=0))
    return len(slots)


def _shift(event_time: str, *, days: int) -> str:
    moment = datetime.strptime(event_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) + timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("unique_event_ids", "duplicates"),
    [
        # Real eventIDs are unique; the scenario's are all the placeholder "1".
        pytest.param(True, 0, id="unique-eventIDs"),
        # Kept as is, same-batch events sharing "1" are dropped as duplicates: the alert must
        # still come from the first RO ConsoleLogin.
        pytest.param(False, 7, id="placeholder-eventIDs"),
    ],
)
def test_given_panther_compromised_root_scenario_when_replayed_then_ro_alert_for_root_and_none_for_us(
    tmp_path: Path, dbip_mmdb: Path, unique_event_ids: bool, duplicates: int
) -> None:
    """Given the victim's US root logins and, as the baseline the scenario lacks, the same logins
    repeated weekly for the eight weeks before, and the attacker's RO activity, laid out as
    15-minute delivery files, when replayed with the default policy (20 buckets, 7 days), then
    an alert names RO for the root ARN, and no alert names US.

    With the scenario's own three hours of history alone a new country is not yet surprising
    (the model gives the unseen a quarter of the mass at each level: score 45): a baseline must
    exist first, as for Elastic's job."""
    require(PANTHER, "Panther compromised-root-creds scenario")
    victim = json.loads((PANTHER / "victim_cloudtrail.json").read_text())["Records"]
    attacker = json.loads((PANTHER / "attacker_cloudtrail.json").read_text())["Records"]
    events = victim + attacker
    assert {e["sourceIPAddress"] for e in victim} == {"71.253.251.71"}
    assert {e["sourceIPAddress"] for e in attacker} == {"92.55.146.245"}
    if unique_event_ids:
        events = [dict(e, eventID=f"panther-root-{n:04d}") for n, e in enumerate(events)]
    baseline = [
        dict(e, eventID=f"baseline-{week}-{n}", eventTime=_shift(e["eventTime"], days=-7 * week))
        for week in range(1, 9)
        for n, e in enumerate(victim)
    ]
    files = _write_s3_layout(tmp_path, baseline + events, PANTHER_ACCOUNT)

    stream = io.StringIO()
    options = RunOptions()
    summary, _ = replay(tmp_path, MaxMindGeoResolver(dbip_mmdb), JsonLinesAlertSink(stream), options)

    assert summary.files == files
    assert summary.events == 16 + len(baseline)
    assert dict(summary.records_skipped) == ({"duplicate_event": duplicates} if duplicates else {})
    assert summary.events_geolocated == 16 + len(baseline) - duplicates
    alerts = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert summary.alerts == len(alerts)
    assert not [a for a in alerts if a["source"]["geo"]["country_iso_code"] == "US"]
    ro_root = [
        a
        for a in alerts
        if a["source"]["geo"]["country_iso_code"] == "RO"
        and a["aws"]["cloudtrail"]["user_identity"]["arn"] == ROOT_ARN
    ]
    assert ro_root, alerts
    assert ro_root[0]["source"]["ip"] == ["92.55.146.245"]
    assert ro_root[0]["cloud"]["account"]["id"] == PANTHER_ACCOUNT
    assert "signin.amazonaws.com:ConsoleLogin" in [m["method"] for m in ro_root[0]["methods"]]
    assert ro_root[0]["score"] >= options.policy.threshold
