"""CloudTrail's S3 key layout: single-account and organization trails, and what is skipped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trailgeo.core.keys import KeyKind, day_prefixes, parse_key, start_after


def test_given_a_single_account_key_then_account_region_and_delivery_time_are_read() -> None:
    key = (
        "AWSLogs/342082656213/CloudTrail/us-east-2/2021/07/29/"
        "342082656213_CloudTrail_us-east-2_20210729T2355Z_1lQFb8HU3K2s72AX.json.gz"
    )
    parsed = parse_key(key)
    assert parsed.kind is KeyKind.LOG
    assert (parsed.account, parsed.region, parsed.org_id) == ("342082656213", "us-east-2", None)
    assert parsed.delivered_at == datetime(2021, 7, 29, 23, 55, tzinfo=UTC)


def test_given_an_organization_trail_key_with_a_prefix_then_the_org_is_read_too() -> None:
    key = (
        "trails/prod/AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/eu-west-1/2026/11/02/"
        "111122223333_CloudTrail_eu-west-1_20261102T1405Z_AbCdEf0123456789.json.gz"
    )
    parsed = parse_key(key)
    assert parsed.kind is KeyKind.LOG
    assert (parsed.org_id, parsed.account, parsed.region) == ("o-a1b2c3d4e5", "111122223333", "eu-west-1")


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (
            (
                "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/11/02/"
                "111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20261102T140500Z.json.gz"
            ),
            KeyKind.DIGEST,
        ),
        (
            (
                "AWSLogs/111122223333/CloudTrail-Insight/us-east-1/2026/11/02/"
                "111122223333_CloudTrail-Insight_us-east-1_20261102T1405Z_AbCd.json.gz"
            ),
            KeyKind.INSIGHT,
        ),
        ("AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/02/readme.txt", KeyKind.OTHER),
        # the file name must agree with the path it sits in
        (
            (
                "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/02/"
                "444455556666_CloudTrail_us-east-1_20261102T1405Z_AbCd.json.gz"
            ),
            KeyKind.OTHER,
        ),
        ("AWSLogs/111122223333/Config/us-east-1/2026/11/02/x.json.gz", KeyKind.OTHER),
        ("LICENSE-NOTE.txt", KeyKind.OTHER),
        ("AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/02/a%2Fb.json.gz", KeyKind.OTHER),
    ],
)
def test_given_keys_that_are_not_log_files_then_they_are_classified_for_counting(
    key: str, kind: KeyKind
) -> None:
    assert parse_key(key).kind is kind


def test_given_a_window_across_midnight_then_both_day_prefixes_are_listed_from_the_window_start() -> None:
    start = datetime(2026, 11, 1, 23, 0, tzinfo=UTC)
    end = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    base = "AWSLogs/111122223333/CloudTrail/us-east-1/"
    days = day_prefixes(base, start, end)
    assert days == [base + "2026/11/01/", base + "2026/11/02/"]
    marker = start_after(days[0], "111122223333", "us-east-1", start)
    earlier = days[0] + "111122223333_CloudTrail_us-east-1_20261101T2255Z_X.json.gz"
    at_start = days[0] + "111122223333_CloudTrail_us-east-1_20261101T2300Z_X.json.gz"
    assert earlier < marker < at_start
