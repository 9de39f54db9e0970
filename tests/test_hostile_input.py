"""Hostile input: every case of the corpus in tests/fixtures/hostile/ through the real pipeline.

Each case lays one hostile object out under an S3-layout key beside ONE good delivery file (a
DescribeInstances call from 216.160.83.56, US) and runs :func:`detect`. Whatever the hostile
object is, the good event is still counted, the hostile one shows up under its exact reason in
the RunReport, the ledger says ``skipped:<reason>`` for a file that was skipped, every skip is a
structured JSON log line naming the key and the reason, and nothing raises.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.builders import ACCOUNT, T0, US_IP, delivery_key, gz_file, record, write_tree
from trailgeo.adapters.aws import S3LogSource
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink, LocalLogSource
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect
from trailgeo.core.counters import ORG_PARTITION, TOTAL
from trailgeo.core.render.email import email_body, email_subject
from trailgeo.observability import logger
from trailgeo.ports import LatePrefixes, ListedWindow, LogSource

FIXTURES = Path(__file__).parent / "fixtures" / "hostile"
MIB = 1024 * 1024
CAP = 2 * MIB  # the bomb inflates to 4 MiB; the largest other fixture (1 MiB userAgent) fits
TICK = datetime(2026, 10, 11, 3, 30, tzinfo=UTC)
ATTACK_AT = datetime(2026, 10, 11, 3, 0, tzinfo=UTC)  # the alert fixtures' eventTime
METHOD = "M#ec2.amazonaws.com:DescribeInstances"
REGION = "us-east-1"
BUCKET = "hostile-trail-bucket"
# Where hostile objects land: delivered five minutes before the run, inside its look-back.
HOSTILE_KEY = delivery_key(TICK - timedelta(minutes=5), unique="HOSTILE000000001")
DAY_DIR = f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2026/10/11/"
WEIRD_PREFIX = "trail%2Flogs with space+plus/"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def good_file() -> tuple[str, bytes]:
    """The one valid delivery file of every case: one call from the US, counted exactly once."""
    event = record(TICK - timedelta(minutes=20), ip=US_IP)
    return delivery_key(TICK - timedelta(minutes=10), unique="GOOD000000000001"), gz_file([event])


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


LogLines = Callable[[], list[dict[str, Any]]]


class _CurrentStdout:
    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[LogLines]:
    """The Powertools logger's JSON lines on stdout, parsed; any line that is not JSON fails.

    Powertools binds its handler to the ``sys.stdout`` of import time, before capsys swaps it:
    for the test, the handler writes to whatever ``sys.stdout`` is when it writes (capsys's).
    """
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(_CurrentStdout())
    level = logger.log_level
    logger.setLevel("INFO")  # skips are logged at INFO and WARNING, whatever LOG_LEVEL says

    def read() -> list[dict[str, Any]]:
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]
        assert all(isinstance(item, dict) for item in parsed), lines
        return parsed

    yield read
    handler.setStream(previous)
    logger.setLevel(level)


@dataclass
class Outcome:
    report: RunReport
    store: MemoryFrequencyStore
    ledger: MemoryLedger
    alerts_out: io.StringIO

    def org_events(self) -> dict[str, int]:
        """Hours with events per country, whatever the method or principal (the ORG counters):
        the cases put their events in one hour, so 1 for each country they reach (the report's
        ``events_geolocated`` counts the events themselves)."""
        return {
            sk: state.buckets
            for sk, state in self.store.partitions.get(ORG_PARTITION, {}).items()
            if sk != TOTAL
        }

    def outcome(self, key: str) -> str | None:
        entry = self.ledger.entries.get(key)
        return entry.outcome if entry is not None else None


def run(
    source: LogSource,
    geo: MaxMindGeoResolver,
    *,
    tick: datetime = TICK,
    options: RunOptions | None = None,
    store: MemoryFrequencyStore | None = None,
    ledger: MemoryLedger | None = None,
    outbox: MemoryOutbox | None = None,
) -> Outcome:
    store = store if store is not None else MemoryFrequencyStore()
    ledger = ledger if ledger is not None else MemoryLedger()
    out = io.StringIO()
    deps = Dependencies(
        source=source,
        geo=geo,
        store=store,
        ledger=ledger,
        outbox=outbox if outbox is not None else MemoryOutbox(),
        sink=JsonLinesAlertSink(out),
        clock=lambda: tick,
    )
    report = detect(tick, deps, options or RunOptions(max_decompressed_bytes=CAP))
    return Outcome(report, store, ledger, out)


def skip_lines(lines: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("message") == "object skipped" and line.get("key") == key]


# --------------------------------------------------------------------------------------------
# The corpus, case by case
# --------------------------------------------------------------------------------------------


class _Unknown(msgspec.Struct):
    """A record-like object whose one field is unknown, so skipped by the decoder, as the
    fixture's nested requestParameters are."""


def _decoder_follows(depth: int) -> bool:
    """Whether msgspec, on this interpreter, gets through ``depth`` nested arrays it skips.

    On 3.11 it raises RecursionError (Python's recursion limit, 1,000); 3.12 and later (the
    Lambda's python3.13) limit C recursion apart, and 5,000 levels decode."""
    try:
        msgspec.json.decode(b'{"x":' + b"[" * depth + b"]" * depth + b"}", type=_Unknown)
    except RecursionError:
        return False
    return True


# deeply_nested.json.gz holds two records, one nested 5,000 arrays deep: the file is skipped as
# too_deep where the decoder cannot follow it, read and both counted where it can; the good file
# counts either way.
DECODER_FOLLOWS_DEEP_NESTING = _decoder_follows(5_000)


@dataclass(frozen=True)
class Case:
    fixture: str
    file_reason: str | None = None  # the object is skipped: files_skipped, ledger "skipped:<reason>"
    records: dict[str, int] = field(default_factory=dict)  # records_skipped, exactly
    key_reason: str | None = None  # never read: a key that is not a CloudTrail log file
    countries: dict[str, int] = field(default_factory=dict)  # events counted besides the good US one
    key: str = HOSTILE_KEY


def _ok(case: Case, name: str | None = None) -> Any:
    return pytest.param(case, id=name or case.fixture.removesuffix(".json.gz"))


CASES = [
    _ok(Case("gzip_bomb.json.gz", file_reason="too_large")),
    _ok(Case("truncated_gzip.json.gz", file_reason="truncated_gzip")),
    _ok(Case("gzip_no_trailer.json.gz", file_reason="truncated_gzip")),
    _ok(Case("gzip_bad_crc.json.gz", file_reason="corrupt_gzip")),
    _ok(Case("not_gzip.json.gz", file_reason="not_gzip")),
    _ok(Case("empty_object.json.gz", file_reason="not_gzip")),
    _ok(Case("empty_gzip.json.gz", file_reason="invalid_json")),
    _ok(Case("invalid_json.json.gz", file_reason="invalid_json")),
    _ok(Case("not_an_object.json.gz", file_reason="not_an_object")),
    _ok(Case("no_records_key.json.gz", file_reason="no_records_key")),
    _ok(Case("records_not_a_list.json.gz", file_reason="records_not_a_list")),
    _ok(Case("records_null.json.gz", file_reason="records_not_a_list")),
    _ok(Case("invalid_utf8.json.gz", records={"invalid_utf8_replaced": 1}, countries={"C#GB": 2})),
    _ok(
        Case("deeply_nested.json.gz", file_reason="too_deep")
        if not DECODER_FOLLOWS_DEEP_NESTING
        else Case("deeply_nested.json.gz", countries={"C#GB": 2})
    ),
    _ok(Case("multi_member.json.gz", countries={"C#GB": 1, "C#SE": 1})),
    _ok(Case("empty_records.json.gz")),
    _ok(Case("records_not_objects.json.gz", records={"record_not_object": 5}, countries={"C#GB": 1})),
    _ok(
        Case(
            "missing_fields.json.gz",
            records={"source_missing": 4, "no_method": 2, "bad_event_time": 4},
            countries={"C#GB": 2},
        )
    ),
    _ok(
        Case(
            "wrong_types.json.gz",
            records={"field_wrong_type": 7, "source_missing": 1, "bad_event_time": 1, "no_method": 1},
            countries={"C#GB": 2},
        )
    ),
    _ok(Case("wrong_types_nested.json.gz", records={"field_wrong_type": 2}, countries={"C#GB": 1})),
    _ok(
        Case(
            "odd_ips.json.gz",
            records={
                "source_invalid": 5,
                "geo_unknown": 1,
                "source_aws_internal": 1,
                "source_service_host": 1,
                "source_hostname": 1,
                "source_private": 3,
                "source_special": 3,
            },
            countries={"C#GB": 1, "C#unknown": 1},  # geo_unknown: scored from "unknown", not skipped
        )
    ),
    _ok(Case("huge_user_agent.json.gz", records={"field_truncated": 1}, countries={"C#BT": 1})),
    _ok(
        Case(
            "huge_strings.json.gz",
            records={"source_invalid": 1, "field_truncated": 1},
            countries={"C#GB": 3},
        )
    ),
    _ok(Case("far_future_event_time.json.gz", records={"bad_event_time": 1})),
    _ok(Case("control_chars.json.gz", countries={"C#BT": 1})),
    _ok(
        Case("url_encoded_key.json.gz", countries={"C#SE": 1}, key=WEIRD_PREFIX + HOSTILE_KEY),
        "url_encoded_prefix",
    ),
]

DIGEST_KEY = (
    f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/2026/10/11/"
    f"{ACCOUNT}_CloudTrail-Digest_{REGION}_management_{REGION}_20261011T032500Z.json.gz"
)
INSIGHT_KEY = (
    f"AWSLogs/{ACCOUNT}/CloudTrail-Insight/{REGION}/2026/10/11/"
    f"{ACCOUNT}_CloudTrail-Insight_{REGION}_20261011T0325Z_INSIGHT000000001.json.gz"
)
ODD_NAME_KEY = f"{DAY_DIR}{ACCOUNT}_CloudTrail_{REGION}_20261011T0325Z_a%2Fb+c d.json.gz"
KEY_CASES = [
    pytest.param(Case("digest.json.gz", key_reason="key_digest", key=DIGEST_KEY), id="digest"),
    pytest.param(Case("insight.json.gz", key_reason="key_insight", key=INSIGHT_KEY), id="insight"),
    pytest.param(
        Case("url_encoded_key.json.gz", key_reason="key_other", key=ODD_NAME_KEY), id="url_encoded_name"
    ),
]


def lay_out(root: Path, case: Case) -> str:
    good_key, good = good_file()
    write_tree(root, {good_key: good, case.key: fixture_bytes(case.fixture)})
    return good_key


@pytest.mark.parametrize("case", CASES)
def test_given_a_hostile_object_beside_a_good_file_then_it_is_skipped_by_reason_and_the_good_event_counts(
    case: Case, tmp_path: Path, geo: MaxMindGeoResolver, log_lines: LogLines
) -> None:
    good_key = lay_out(tmp_path, case)

    result = run(LocalLogSource(tmp_path), geo)

    report = result.report
    assert result.store.partitions[METHOD]["C#US"].buckets == 1
    assert result.org_events() == {"C#US": 1, **dict.fromkeys(case.countries, 1)}  # one hour each
    assert report.events_geolocated == 1 + sum(case.countries.values())
    assert report.files_listed == 2
    assert report.files_skipped == Counter({case.file_reason: 1} if case.file_reason else {})
    assert report.records_skipped == Counter(case.records)
    assert report.keys_skipped == Counter()
    assert report.files_read == (1 if case.file_reason else 2)
    assert result.outcome(good_key) == "done"
    assert result.outcome(case.key) == (f"skipped:{case.file_reason}" if case.file_reason else "done")
    lines = log_lines()
    assert skip_lines(lines, good_key) == []
    skipped = skip_lines(lines, case.key)
    if case.file_reason:
        assert [(line["level"], line["reason"]) for line in skipped] == [("WARNING", case.file_reason)]
    else:
        assert skipped == []


RECORD_LOG_CASES = [
    pytest.param("records_not_objects.json.gz", {"record_not_object": 5}, id="records_not_objects"),
    pytest.param(
        "missing_fields.json.gz",
        {"source_missing": 4, "no_method": 2, "bad_event_time": 4},
        id="missing_fields",
    ),
    pytest.param(
        "wrong_types.json.gz",
        {"field_wrong_type": 7, "source_missing": 1, "bad_event_time": 1, "no_method": 1},
        id="wrong_types",
    ),
    pytest.param(
        "odd_ips.json.gz",
        {
            "source_invalid": 5,
            "geo_unknown": 1,
            "source_aws_internal": 1,
            "source_service_host": 1,
            "source_hostname": 1,
            "source_private": 3,
            "source_special": 3,
        },
        id="odd_ips",
    ),
    pytest.param("huge_strings.json.gz", {"source_invalid": 1, "field_truncated": 1}, id="huge_strings"),
]


@pytest.mark.parametrize(("fixture", "expected"), RECORD_LOG_CASES)
def test_given_records_skipped_in_an_object_then_one_json_log_line_names_the_key_and_every_reason(
    fixture: str, expected: dict[str, int], tmp_path: Path, geo: MaxMindGeoResolver, log_lines: LogLines
) -> None:
    lay_out(tmp_path, Case(fixture))

    result = run(LocalLogSource(tmp_path), geo)

    assert result.report.records_skipped == Counter(expected)
    about_key = [
        line
        for line in log_lines()
        if line.get("key") == HOSTILE_KEY and isinstance(line.get("skipped"), dict)
    ]
    assert [line["skipped"] for line in about_key] == [expected]


@pytest.mark.parametrize("case", KEY_CASES)
def test_given_a_key_that_is_not_a_log_file_then_it_is_never_read_nor_claimed_and_the_source_counts_it(
    case: Case, tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    good_key = lay_out(tmp_path, case)
    source = LocalLogSource(tmp_path)

    result = run(source, geo)

    assert source.skipped_keys == Counter({case.key_reason: 1})
    assert result.store.partitions[METHOD]["C#US"].buckets == 1
    assert result.org_events() == {"C#US": 1}
    assert result.report.files_listed == 1
    assert result.report.files_skipped == Counter()
    assert result.report.records_skipped == Counter()
    assert set(result.ledger.entries) == {good_key}


@pytest.mark.parametrize("case", KEY_CASES)
def test_given_a_key_that_is_not_a_log_file_then_the_run_report_counts_it_under_its_reason(
    case: Case, tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    lay_out(tmp_path, case)

    result = run(LocalLogSource(tmp_path), geo)

    assert result.report.keys_skipped == Counter({case.key_reason: 1})


@pytest.mark.parametrize("case", KEY_CASES)
def test_given_a_key_that_is_not_a_log_file_then_a_json_log_line_names_the_key_and_the_reason(
    case: Case, tmp_path: Path, geo: MaxMindGeoResolver, log_lines: LogLines
) -> None:
    lay_out(tmp_path, case)

    run(LocalLogSource(tmp_path), geo)

    about_key = [line for line in log_lines() if line.get("key") == case.key]
    assert [line.get("reason") for line in about_key] == [case.key_reason]


def test_given_the_gzip_bomb_under_a_cap_it_fits_then_it_is_read_so_the_cap_is_what_stopped_it(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    lay_out(tmp_path, Case("gzip_bomb.json.gz"))
    assert (FIXTURES / "gzip_bomb.json.gz").stat().st_size < 8 * 1024

    result = run(LocalLogSource(tmp_path), geo, options=RunOptions(max_decompressed_bytes=8 * MIB))

    assert result.report.files_skipped == Counter()
    assert result.report.files_read == 2
    assert result.outcome(HOSTILE_KEY) == "done"
    assert result.store.partitions[METHOD]["C#US"].buckets == 1


@dataclass
class VanishingLocalSource:
    """The object is listed, then deleted from disk just before it is fetched."""

    inner: LocalLogSource
    victim: str

    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:
        return self.inner.list_window(start, end, late)

    def read(self, key: str) -> bytes:
        if key == self.victim:
            (self.inner.root / key).unlink()
        return self.inner.read(key)


def test_given_an_object_deleted_between_list_and_get_then_it_is_skipped_as_gone_and_the_window_goes_on(
    tmp_path: Path, geo: MaxMindGeoResolver, log_lines: LogLines
) -> None:
    good_key = lay_out(tmp_path, Case("vanishing.json.gz"))
    source = VanishingLocalSource(LocalLogSource(tmp_path), HOSTILE_KEY)

    result = run(source, geo)

    assert not (tmp_path / HOSTILE_KEY).exists()
    assert result.report.files_listed == 2
    assert result.report.files_skipped == Counter({"gone": 1})
    assert result.outcome(HOSTILE_KEY) == "skipped:gone"
    assert result.outcome(good_key) == "done"
    assert result.org_events() == {"C#US": 1}
    skipped = skip_lines(log_lines(), HOSTILE_KEY)
    assert [(line["level"], line["reason"]) for line in skipped] == [("WARNING", "gone")]


def test_given_an_empty_directory_then_the_run_reports_nothing_and_raises_nothing(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    result = run(LocalLogSource(tmp_path), geo)

    assert_clean_empty_run(result)


def assert_clean_empty_run(result: Outcome) -> None:
    report = result.report
    assert (report.files_listed, report.files_new, report.files_read, report.events) == (0, 0, 0, 0)
    assert (report.alerts_raised, report.alerts_published, report.counters_written) == (0, 0, 0)
    assert report.files_skipped == report.records_skipped == report.keys_skipped == Counter()
    assert result.ledger.entries == {}
    assert dict(result.store.partitions) == {}
    assert result.alerts_out.getvalue() == ""


# --------------------------------------------------------------------------------------------
# Huge strings and control characters, as far as the alert
# --------------------------------------------------------------------------------------------


def trained(tmp_path: Path, geo: MaxMindGeoResolver) -> tuple[MemoryFrequencyStore, MemoryLedger]:
    """tests/test_detect.py's baseline: alice, DescribeInstances from the US every 6 hours, 40 buckets."""
    assert T0 + timedelta(days=10, hours=3) == ATTACK_AT
    moments = [T0 + timedelta(hours=6 * i, minutes=3) for i in range(40)]
    base = tmp_path / "baseline"
    files = {
        delivery_key(when + timedelta(minutes=10)): gz_file([record(when, ip=US_IP)]) for when in moments
    }
    write_tree(base, files)
    store, ledger = MemoryFrequencyStore(), MemoryLedger()
    run(
        LocalLogSource(base),
        geo,
        tick=ATTACK_AT - timedelta(hours=6),
        options=RunOptions(lookback=timedelta(days=11), alerting=False),
        store=store,
        ledger=ledger,
    )
    assert store.partitions[METHOD][TOTAL].buckets == 40
    return store, ledger


def attack(tmp_path: Path, geo: MaxMindGeoResolver, fixture: str) -> Outcome:
    store, ledger = trained(tmp_path, geo)
    lay_out(tmp_path / "attack", Case(fixture))
    return run(LocalLogSource(tmp_path / "attack"), geo, store=store, ledger=ledger)


def test_given_a_1mb_user_agent_on_a_rare_hit_then_the_alert_carries_it_truncated(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    result = attack(tmp_path, geo, "huge_user_agent.json.gz")

    assert result.store.partitions[METHOD]["C#US"].buckets == 41
    (alert,) = result.report.alerts
    assert alert.country == "BT"
    assert alert.user_agent.original == ["A" * 1024 + "…[truncated]"]
    (published,) = [json.loads(line) for line in result.alerts_out.getvalue().splitlines()]
    assert published["user_agent"]["original"] == alert.user_agent.original
    assert len(result.alerts_out.getvalue()) < 16 * 1024
    assert max(len(line) for line in email_body(alert).splitlines()) < 1100


def test_given_a_1mb_user_agent_then_the_truncation_is_counted_and_logged_with_the_key(
    tmp_path: Path, geo: MaxMindGeoResolver, log_lines: LogLines
) -> None:
    result = attack(tmp_path, geo, "huge_user_agent.json.gz")

    report = result.report
    counted = [
        reason
        for counter in (report.records_skipped, report.files_skipped, report.keys_skipped)
        for reason in counter
        if "truncat" in reason
    ]
    assert counted
    assert any(line.get("key") == HOSTILE_KEY and "truncat" in json.dumps(line) for line in log_lines())


def test_given_huge_strings_then_every_counter_key_stays_bounded(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    lay_out(tmp_path, Case("huge_strings.json.gz"))

    result = run(LocalLogSource(tmp_path), geo)

    keys = [(p, sk) for p, items in result.store.partitions.items() for sk in items]
    assert max(len(p) + len(sk) for p, sk in keys) < 600
    clipped = sorted({p for p, _ in keys if p.startswith("M#ec2.amazonaws.com:DescribeInstancesXXX")})
    assert clipped == ["M#ec2.amazonaws.com:DescribeInstances" + "X" * (128 - 17) + "…[truncated]"]
    assert result.store.partitions[clipped[0]]["C#GB"].buckets == 1


def test_given_a_1mb_event_time_then_neither_the_counters_nor_the_alert_carry_it_whole(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    result = attack(tmp_path, geo, "huge_event_time.json.gz")

    stored = [
        text
        for items in result.store.partitions.values()
        for state in items.values()
        for text in (state.first_seen, state.last_seen)
        if text is not None
    ]
    assert max(map(len, stored)) <= 64
    assert len(result.alerts_out.getvalue()) < 64 * 1024


# Every C0/C1 control, DEL and the Unicode line/paragraph separators, but TAB (its own test below).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def test_given_control_characters_in_fields_then_none_reaches_the_email_body_or_subject(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    result = attack(tmp_path, geo, "control_chars.json.gz")

    (alert,) = result.report.alerts
    assert alert.country == "BT"
    assert "\r\nInjected: header" in alert.principal  # the document keeps the evidence...
    body = email_body(alert)
    lines = body.splitlines()
    assert [line for line in lines if _FORBIDDEN.search(line)] == []  # ...the email gets none of it
    assert not [line for line in lines if line.startswith(("Bcc:", "Injected:", "FAKE", "red"))]
    (who,) = [line for line in lines if line.startswith("Who:")]
    assert "Injected: header" in who
    subject = email_subject(alert)
    assert all(32 <= ord(ch) < 127 for ch in subject)
    assert len(subject) <= 100


def test_given_control_characters_in_fields_then_not_even_a_tab_reaches_the_email_body(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    result = attack(tmp_path, geo, "control_chars.json.gz")

    (alert,) = result.report.alerts
    body = email_body(alert)
    assert [ch for ch in body if ch != "\n" and unicodedata.category(ch) == "Cc"] == []


# --------------------------------------------------------------------------------------------
# The same through S3 (moto)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def s3(aws: Any) -> Any:
    client = aws.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@dataclass
class VanishingS3Source:
    """A real S3LogSource; the victim object is deleted from the bucket between list and get."""

    inner: S3LogSource
    victim: str

    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:
        return self.inner.list_window(start, end, late)

    def read(self, key: str) -> bytes:
        if key == self.victim:
            self.inner.client.delete_object(Bucket=self.inner.bucket, Key=key)
        return self.inner.read(key)


def put(s3: Any, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def test_given_an_s3_object_deleted_between_list_and_get_then_it_is_skipped_as_gone_and_the_window_goes_on(
    s3: Any, geo: MaxMindGeoResolver, log_lines: LogLines
) -> None:
    good_key, good = good_file()
    put(s3, {good_key: good, HOSTILE_KEY: fixture_bytes("vanishing.json.gz")})
    source = VanishingS3Source(S3LogSource(s3, BUCKET), HOSTILE_KEY)

    result = run(source, geo)

    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=HOSTILE_KEY)["KeyCount"] == 0
    assert result.report.files_listed == 2
    assert result.report.files_skipped == Counter({"gone": 1})
    assert result.outcome(HOSTILE_KEY) == "skipped:gone"
    assert result.outcome(good_key) == "done"
    assert result.org_events() == {"C#US": 1}
    skipped = skip_lines(log_lines(), HOSTILE_KEY)
    assert [(line["level"], line["reason"]) for line in skipped] == [("WARNING", "gone")]


def test_given_s3_keys_with_percent_2f_spaces_and_plus_then_they_are_read_by_their_exact_key(
    s3: Any, geo: MaxMindGeoResolver
) -> None:
    good_key, good = good_file()
    weird_log = WEIRD_PREFIX + HOSTILE_KEY
    weird_name = WEIRD_PREFIX + ODD_NAME_KEY
    put(
        s3,
        {
            WEIRD_PREFIX + good_key: good,
            weird_log: fixture_bytes("url_encoded_key.json.gz"),
            weird_name: fixture_bytes("url_encoded_key.json.gz"),
        },
    )

    result = run(S3LogSource(s3, BUCKET, prefix=WEIRD_PREFIX), geo)

    assert result.report.files_listed == 2
    assert result.report.files_skipped == Counter()
    assert result.report.records_skipped == Counter()
    assert result.report.keys_skipped == Counter({"key_other": 1})
    assert result.org_events() == {"C#US": 1, "C#SE": 1}
    assert set(result.ledger.entries) == {WEIRD_PREFIX + good_key, weird_log}
    assert {entry.outcome for entry in result.ledger.entries.values()} == {"done"}


def test_given_digest_and_insight_objects_in_s3_then_their_prefixes_are_counted_and_never_read(
    s3: Any, geo: MaxMindGeoResolver
) -> None:
    good_key, good = good_file()
    put(
        s3,
        {
            good_key: good,
            DIGEST_KEY: fixture_bytes("digest.json.gz"),
            INSIGHT_KEY: fixture_bytes("insight.json.gz"),
        },
    )

    result = run(S3LogSource(s3, BUCKET), geo)

    assert result.report.keys_skipped == Counter(
        {"prefix_cloudtrail-digest": 1, "prefix_cloudtrail-insight": 1}
    )
    assert result.report.files_listed == 1
    assert set(result.ledger.entries) == {good_key}
    assert result.org_events() == {"C#US": 1}


def test_given_an_empty_s3_bucket_then_the_run_reports_nothing_and_raises_nothing(
    s3: Any, geo: MaxMindGeoResolver
) -> None:
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0

    result = run(S3LogSource(s3, BUCKET), geo)

    assert_clean_empty_run(result)


# --------------------------------------------------------------------------------------------
# The corpus itself
# --------------------------------------------------------------------------------------------

SPECIAL_FIXTURES = {"vanishing.json.gz", "huge_event_time.json.gz"}


def test_given_the_corpus_then_every_fixture_is_small_documented_and_exercised() -> None:
    on_disk = {path.name for path in FIXTURES.glob("*.json.gz")}
    exercised = {p.values[0].fixture for p in CASES + KEY_CASES} | SPECIAL_FIXTURES
    documented = set(re.findall(r"^\* `([^`]+\.json\.gz)`", (FIXTURES / "README.md").read_text(), re.M))

    assert on_disk == exercised == documented
    assert all((FIXTURES / name).stat().st_size <= 8 * 1024 for name in on_disk)
