"""The trail bucket listed side by side: day prefixes and accounts in parallel, the same window as
one at a time, and skip logging bounded per listing, not per prefix."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from tests.aws import create_deployment
from tests.builders import ACCOUNT, T0, US_IP, gz_file, record
from tests.test_adversary_ingest import delivery_key, put
from tests.test_hostile_input import LogLines, log_lines  # noqa: F401 - the fixture, by name
from trailgeo.adapters.aws import MAX_LOGGED_SKIPS, S3LogSource

ACCOUNTS = [f"{int(ACCOUNT) + n:012d}" for n in range(6)]
ORG = "o-exampleorgid"


def an_organization(aws: Any) -> tuple[str, list[str]]:
    """A bucket holding six accounts' files in two regions over two days, plus a few files outside
    the window; returns the bucket and the keys a window from T0 to T0+1h should list."""
    deployment = create_deployment(aws)
    inside, files = [], {}
    for n, account in enumerate(ACCOUNTS):
        for region in ("us-east-1", "eu-west-1"):
            when = T0 + timedelta(minutes=5 + n)
            key = delivery_key(when, account=account, region=region, org=ORG)
            files[key] = gz_file([record(when - timedelta(minutes=3), ip=US_IP)])
            inside.append(key)
            early = delivery_key(T0 - timedelta(hours=30), account=account, region=region, org=ORG)
            files[early] = gz_file([record(T0 - timedelta(hours=30), ip=US_IP)])
    put(aws, files)
    return deployment.bucket, inside


def test_given_an_organization_when_listed_in_parallel_then_the_window_is_the_sequential_one(
    aws: Any,
) -> None:
    # Given an organization's bucket
    bucket, inside = an_organization(aws)

    # When the window is listed one prefix at a time and sixteen at a time
    one = S3LogSource(aws.client("s3"), bucket, list_concurrency=1).list_window(T0, T0 + timedelta(hours=1))
    many = S3LogSource(aws.client("s3"), bucket, list_concurrency=16).list_window(T0, T0 + timedelta(hours=1))

    # Then both list the same objects, in the same order, with the same skips
    assert sorted(obj.key for obj in one.objects) == sorted(inside)
    assert [obj.key for obj in many.objects] == [obj.key for obj in one.objects]
    assert many.skipped == one.skipped


def test_given_an_organization_when_listed_then_list_requests_are_in_flight_together(aws: Any) -> None:
    # Given an organization's bucket, and a client whose LIST requests wait at a barrier for a
    # second one (bounded: a listing one request at a time breaks it after five seconds)
    bucket, _ = an_organization(aws)
    s3 = aws.client("s3")
    barrier = threading.Barrier(2, timeout=5)
    lock = threading.Lock()
    met: list[int] = []  # the first two requests, in order of arrival

    def meet(**_: Any) -> None:
        with lock:
            arrival = len(met)
            met.append(arrival)
        if arrival < 2:  # only the first two wait for each other
            barrier.wait()

    source = S3LogSource(s3, bucket)
    source.list_window(T0, T0 + timedelta(hours=1))  # discovery, cached for the next window

    # When the next window is listed (only its day prefixes: twelve LIST requests)
    s3.meta.events.register("before-call.s3.ListObjectsV2", meet)
    window = source.list_window(T0 + timedelta(hours=1), T0 + timedelta(hours=2))

    # Then two LIST requests were in flight at the same time, and the listing completed
    assert met[:2] == [0, 1]
    assert not barrier.broken
    assert window.objects == []


def test_given_junk_keys_under_every_account_when_listed_in_parallel_then_log_lines_stay_bounded(
    aws: Any,
    log_lines: LogLines,  # noqa: F811
) -> None:
    # Given six accounts whose day prefixes each hold 10 keys that are no CloudTrail file
    deployment = create_deployment(aws)
    day = f"CloudTrail/us-east-1/{T0:%Y/%m/%d}"
    junk = {
        f"AWSLogs/{ORG}/{account}/{day}/{account}_CloudTrail_us-east-1_junk{n}.txt": b"x"
        for account in ACCOUNTS
        for n in range(10)
    }
    put(aws, junk)

    # When the window is listed sixteen prefixes at a time
    window = S3LogSource(aws.client("s3"), deployment.bucket).list_window(T0, T0 + timedelta(hours=1))

    # Then all 60 are counted, and only the first MAX_LOGGED_SKIPS of the listing are named (not
    # that many per prefix), then one line says the rest are counted only
    assert sum(window.skipped.values()) == 60
    lines = [line for line in log_lines() if "skip" in line.get("message", "")]
    named = [line for line in lines if line["message"] == "key skipped"]
    assert len(named) == MAX_LOGGED_SKIPS
    assert len(lines) == MAX_LOGGED_SKIPS + 1
