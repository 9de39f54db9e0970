"""Day prefixes only the late tolerance keeps in play (yesterday's, once the look-back no longer
reaches it): listed by the first run of each hour to complete, not by every run, and still no late
file lost, whichever runs fail; the LIST requests a day of runs makes, before and after."""

from __future__ import annotations

import dataclasses
import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.aws import Deployment, create_deployment, deps_for, emitted_metrics
from tests.builders import US_IP, delivery_key, gz_file, record
from tests.test_adversary_ingest import put
from trailgeo.adapters.aws import S3LogSource, TrailBucketError
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect
from trailgeo.app.detect.plan import late_prefixes
from trailgeo.app.runtime import summarize
from trailgeo.ports import LatePrefixes, ListedWindow

HOUR = timedelta(hours=1)
TICK = timedelta(minutes=15)
LOOKBACK = timedelta(hours=2)
DAY = datetime(2026, 10, 2, tzinfo=UTC)
_DAY_PREFIX = re.compile(r"/CloudTrail/[^/]+/(\d{4}/\d{2}/\d{2})/$")


# ---- The rule: which run lists the late-only prefixes, and from when --------------------------------


def test_given_a_run_of_an_hour_already_listed_then_it_leaves_the_late_prefixes() -> None:
    # Given the 10:00 run completed (the watermark), when the 10:15 and 10:45 runs plan
    for end in (DAY + timedelta(hours=10, minutes=15), DAY + timedelta(hours=10, minutes=45)):
        late = late_prefixes(end, DAY + timedelta(hours=10), end - LOOKBACK, HOUR, LOOKBACK)

        # Then they list only their window's day prefixes
        assert late == LatePrefixes(listed=False)


def test_given_a_new_hour_then_its_first_run_lists_them_from_an_hour_before_its_window() -> None:
    # Given the 10:45 run completed, when the 11:00 run plans
    end = DAY + timedelta(hours=11)
    late = late_prefixes(end, DAY + timedelta(hours=10, minutes=45), end - LOOKBACK, HOUR, LOOKBACK)

    # Then it lists them, for files landed since an hour before its window's start
    assert late == LatePrefixes(listed=True, since=end - LOOKBACK - HOUR)


def test_given_the_hours_first_runs_failed_then_the_next_run_lists_them_from_the_watermarks_hour() -> None:
    # Given the last complete run at 10:45, and the 11:00 to 12:15 runs failed (the watermark stays),
    # with a look-back shorter than the outage (15 minutes)
    watermark = DAY + timedelta(hours=10, minutes=45)
    end = DAY + timedelta(hours=12, minutes=30)

    # When the 12:30 run plans (a catch-up: its window starts at the watermark)
    late = late_prefixes(end, watermark, watermark, HOUR, TICK)

    # Then it lists them, from an hour before the start of the watermark's hour: the last run that
    # listed them and completed ended at 10:00 or later
    assert late == LatePrefixes(listed=True, since=DAY + timedelta(hours=9))


def test_given_no_run_ever_completed_then_the_first_run_lists_them() -> None:
    end = DAY + timedelta(hours=11, minutes=30)
    late = late_prefixes(end, None, end - LOOKBACK, HOUR, LOOKBACK)
    assert late == LatePrefixes(listed=True, since=end - 3 * HOUR)


def test_given_an_outage_then_the_catch_up_lists_them_from_where_the_schedule_would_have() -> None:
    # Given the last complete run at 01:59 (runs a minute apart), then two hours of failed runs, and
    # the 2-hour look-back: had the schedule gone on, the 02:00 run (window from 00:00) would have
    # listed them for files landed since 23:00, named up to the late tolerance before that
    watermark = DAY + timedelta(hours=1, minutes=59)
    scheduled = late_prefixes(DAY + timedelta(hours=2), watermark, DAY, HOUR, LOOKBACK)

    # When the 04:00 run plans (a catch-up: its window starts at the watermark)
    late = late_prefixes(DAY + timedelta(hours=4), watermark, watermark, HOUR, LOOKBACK)

    # Then it lists them from as far back as that run would have, not from the watermark's hour
    # less one (00:00): a file named 23:50 two days before and landed at 01:05 is still within the
    # late tolerance it counts from there
    assert late == scheduled == LatePrefixes(listed=True, since=DAY - HOUR)


# ---- The S3 source: what is listed, what is left, what is counted -----------------------------------


def _late_file(landed_before: datetime) -> tuple[str, bytes]:
    """A file named in the day prefix before ``landed_before``'s (23:50 that day): late."""
    named = datetime.combine(landed_before.date(), datetime.min.time(), tzinfo=UTC) - timedelta(minutes=10)
    return delivery_key(named), gz_file([record(named - timedelta(minutes=5), ip=US_IP)])


def _counting(s3: Any) -> Counter[str]:
    """ListObjectsV2 requests by prefix, counted through botocore's event hooks."""
    calls: Counter[str] = Counter()

    def count(params: dict[str, Any], **_: Any) -> None:
        calls[params.get("Prefix", "")] += 1

    s3.meta.events.register("provide-client-params.s3.ListObjectsV2", count)
    return calls


def test_given_a_late_file_in_yesterdays_prefix_when_not_due_then_the_prefix_is_counted_not_listed(
    aws: Any,
) -> None:
    # Given a bucket whose yesterday's prefix holds a file landed now, and a window of today only
    bucket = create_deployment(aws).bucket
    end = datetime.now(tz=UTC) + timedelta(minutes=1)
    start = max(end - LOOKBACK, datetime.combine(end.date(), datetime.min.time(), tzinfo=UTC))
    key, body = _late_file(start)
    put(aws, {key: body})
    s3 = aws.client("s3")
    source = S3LogSource(s3, bucket)
    source.list_window(start, end)  # discovery, cached for the listings below
    calls = _counting(s3)

    # When the window is listed by a run that is not the hour's late listing
    skipped = source.list_window(start, end, LatePrefixes(listed=False))
    not_due_calls = sum(calls.values())

    # Then yesterday's prefix is not listed (one LIST request, today's), and counted as not due
    yesterday = key[: key.rindex("/") + 1]
    assert calls[yesterday] == 0
    assert not_due_calls == 1
    assert (skipped.prefixes_listed, skipped.prefixes_not_due) == (1, 1)
    assert skipped.objects == []

    # When the hour's late listing comes (since an hour before the window, within its day: from
    # yesterday's 23:00 the tolerance would reach the day before yesterday too, a third prefix)
    today = datetime.combine(start.date(), datetime.min.time(), tzinfo=UTC)
    listed = source.list_window(start, end, LatePrefixes(listed=True, since=max(start - HOUR, today)))

    # Then it lists yesterday's prefix too and finds the late file
    assert calls[yesterday] == 1
    assert (listed.prefixes_listed, listed.prefixes_not_due) == (2, 0)
    assert [obj.key for obj in listed.objects] == [key]


# ---- Whole runs on moto: a late file in yesterday's prefix is read, once ----------------------------


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def _runs(
    aws: Any,
    deployment: Deployment,
    geo: MaxMindGeoResolver,
    ticks: list[datetime],
    failing: frozenset[datetime] = frozenset(),
    down: frozenset[datetime] = frozenset(),
) -> list[RunReport | None]:
    """Scheduled runs at ``ticks`` through the S3 and DynamoDB adapters. A run in ``failing`` has S3
    refuse (SlowDown, injected through an event hook) the listing of any day prefix its window does
    not reach: that run fails (None), as one whose late listing fails does. A run in ``down`` has
    every day prefix refused: an outage."""
    s3 = aws.client("s3")
    source = S3LogSource(s3, deployment.bucket)
    reports: list[RunReport | None] = []
    for tick in ticks:
        first_day = f"{(tick - LOOKBACK):%Y/%m/%d}" if tick in failing else "9999"

        def slow_down(params: dict[str, Any], first_day: str = first_day, **_: Any) -> None:
            day = _DAY_PREFIX.search(params.get("Prefix", ""))
            if day is not None and day.group(1) < first_day:
                raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "ListObjectsV2")

        if tick in failing | down:
            s3.meta.events.register("provide-client-params.s3.ListObjectsV2", slow_down)
        deps = dataclasses.replace(deps_for(aws, geo, deployment, tick), source=source)
        try:
            reports.append(detect(tick, deps, RunOptions(lookback=LOOKBACK)))
        except TrailBucketError:
            reports.append(None)
        finally:
            s3.meta.events.unregister("provide-client-params.s3.ListObjectsV2", slow_down)
    return reports


def _hours_of_runs(aws: Any) -> tuple[datetime, str, list[datetime]]:
    """A file landed now, named in the day prefix before the windows of the runs that can see it
    land (their windows start at top - 1h45 or later, top the start of this hour); and runs every
    15 minutes from top (the first of its hour) to top + 2h."""
    top = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0)
    key, body = _late_file(top + TICK - LOOKBACK)
    put(aws, {key: body})
    landed = aws.client("s3").head_object(Bucket="org-trail-bucket", Key=key)["LastModified"]
    assert top < landed < top + HOUR
    return landed, key, [top + n * TICK for n in range(9)]


def test_given_a_late_file_in_yesterdays_prefix_then_the_first_run_of_the_next_hour_reads_it_once(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given a file named in the day prefix before the windows' (yesterday's), landed within this hour
    deployment = create_deployment(aws)
    landed, _, ticks = _hours_of_runs(aws)

    # When runs come every 15 minutes from the top of this hour for two hours
    reports = _runs(aws, deployment, geo, ticks)

    # Then the first run of the next hour reads it, none before, none again after
    read = [report.files_read if report is not None else None for report in reports]
    assert read == [0] * 4 + [1] + [0] * 4
    late_run = reports[4]
    assert late_run is not None
    assert late_run.files_late == 1
    assert landed <= ticks[4]
    # And only the first run of each hour listed the late-only prefix; the others counted it
    assert [r.late_prefixes_listed for r in reports if r is not None] == [n % 4 == 0 for n in range(9)]
    assert [r.prefixes_not_due > 0 for r in reports if r is not None] == [n % 4 != 0 for n in range(9)]
    assert all(r.prefixes_not_due == 0 for r in reports[::4] if r is not None)
    summary = summarize(late_run)
    assert (summary["prefixes_listed"], summary["late_prefixes_listed"]) == (late_run.prefixes_listed, True)
    quiet = reports[5]
    assert quiet is not None
    emitted = emitted_metrics(quiet)
    assert emitted["PrefixesListed"] == [float(quiet.prefixes_listed)]
    assert emitted["PrefixesNotDue"] == [float(quiet.prefixes_not_due)]


def test_given_the_hours_late_listing_fails_then_the_hours_next_runs_list_it_and_the_file_is_read(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given the same late file; S3 refuses the late-only prefix to the first two runs of the next
    # hour (what a bucket writer who made it slow to list, or a throttled bucket, would do)
    deployment = create_deployment(aws)
    _, key, ticks = _hours_of_runs(aws)

    # When runs come every 15 minutes from the top of this hour for two hours
    reports = _runs(aws, deployment, geo, ticks, failing=frozenset(ticks[4:6]))

    # Then those two fail (the watermark stays); the third run of that hour, whose hour no complete
    # run holds yet, lists the late-only prefix and reads the file, once; the next leaves it again
    read = [report.files_read if report is not None else None for report in reports]
    assert read == [0] * 4 + [None, None, 1, 0, 0]
    assert [r.late_prefixes_listed for r in reports[6:] if r is not None] == [True, False, True]
    ledger = deps_for(aws, geo, deployment, ticks[-1]).ledger
    assert key in ledger.status([key])


# ---- LIST requests over a day of runs, before and after ------------------------------------------

ORG = "o-exampleorgid"
ACCOUNTS = [f"{111122223333 + n:012d}" for n in range(4)]
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


@dataclasses.dataclass(slots=True)
class _EveryPrefix:
    """The listing before the late-only prefixes waited for the hour: every day prefix the window
    and the late tolerance touch, every run."""

    inner: S3LogSource

    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:  # noqa: ARG002
        return self.inner.list_window(start, end)

    def read(self, key: str) -> bytes:
        return self.inner.read(key)


def _day_of_list_requests(aws: Any, geo: MaxMindGeoResolver, *, every_prefix: bool) -> tuple[int, int]:
    """ListObjectsV2 requests of 96 scheduled runs (one day, every 15 minutes) over an organization
    of 4 accounts x 3 regions: (day prefixes, discovery). Discovery is cached for an hour, as in
    Lambda (a run's monotonic clock moves 15 minutes a run)."""
    s3 = aws.client("s3")
    files = {}
    for account in ACCOUNTS:
        for region in REGIONS:  # one old file each: the accounts and regions are there to discover
            named = DAY - timedelta(days=5)
            files[delivery_key(named, account=account, region=region, org=ORG)] = gz_file(
                [record(named, ip=US_IP)]
            )
    put(aws, files)
    seconds = [0.0]
    source = S3LogSource(s3, "org-trail-bucket", monotonic=lambda: seconds[0])
    calls = _counting(s3)
    ledger = MemoryLedger()
    for n in range(96):
        tick = DAY + n * TICK
        seconds[0] = n * TICK.total_seconds()
        deps = Dependencies(
            _EveryPrefix(source) if every_prefix else source,
            geo,
            MemoryFrequencyStore(),
            ledger,
            MemoryOutbox(),
            JsonLinesAlertSink(io.StringIO()),
            clock=lambda tick=tick: tick,
        )
        report = detect(tick, deps, RunOptions(lookback=LOOKBACK))
        assert report.files_read == 0
    days = sum(count for prefix, count in calls.items() if _DAY_PREFIX.search(prefix))
    return days, sum(calls.values()) - days


def test_given_a_day_of_runs_over_an_organization_then_the_late_only_prefixes_are_listed_hourly(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given an organization of 4 accounts x 3 regions (12 region prefixes) in the trail bucket
    create_deployment(aws)

    # When a day of 96 runs lists it every prefix every run (before), then the late-only prefixes
    # only in the first run of each hour (after)
    before = _day_of_list_requests(aws, geo, every_prefix=True)
    after = _day_of_list_requests(aws, geo, every_prefix=False)

    # Then a region prefix's day prefixes cost 200 LIST requests a day before (two day prefixes a
    # run, three before 02:00) and 129 after (104 for the windows' days: one a run, two before
    # 02:00; 25 for the late-only ones: one an hour, two at 02:00); discovery is the same
    assert before == (12 * 200, 24 * 10)
    assert after == (12 * 129, 24 * 10)


def test_given_an_outage_after_the_file_landed_then_the_catch_up_reads_it_from_the_watermarks_hour(
    aws: Any, geo: MaxMindGeoResolver
) -> None:
    # Given the same late file, landed this hour after its first run; then runs a minute apart to the
    # end of the hour, which complete without listing yesterday's prefix (the watermark moves past
    # the file's landing), then every run fails for two hours (an outage)
    deployment = create_deployment(aws)
    landed, _, ticks = _hours_of_runs(aws)
    top = ticks[0]
    minute = timedelta(minutes=1)
    after = [top + n * minute for n in range(int((landed - top) / minute) + 1, 60)]
    outage = [top + HOUR + n * TICK for n in range(8)]
    ticks = [top, *after, *outage, top + 3 * HOUR]

    # When the first run after the outage catches up from the watermark (this hour's last run)
    reports = _runs(aws, deployment, geo, ticks, down=frozenset(outage))

    # Then it lists yesterday's prefix from the start of the watermark's hour less one (where the
    # last run that listed it and completed ended), not from the watermark, and reads the file once
    read = [report.files_read if report is not None else None for report in reports]
    assert read == [0] * (1 + len(after)) + [None] * 8 + [1]
    last = reports[-1]
    assert last is not None
    assert last.catch_up
    assert last.files_late == 1
