"""CloudTrail's S3 key layout: what an object is, and which prefixes a time window needs.

Single-account trail: ``[prefix/]AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<file>``
Organization trail:   ``[prefix/]AWSLogs/<o-org-id>/<account>/CloudTrail/<region>/YYYY/MM/DD/<file>``
with ``<file>`` = ``<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<unique>.json.gz``, the
timestamp being CloudTrail's delivery time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache


class KeyKind(StrEnum):
    LOG = "log"
    DIGEST = "digest"
    INSIGHT = "insight"
    OTHER = "other"


# Every part of a key is bounded: a batch's keys are kept in its run record (DynamoDB, 400 KB),
# and a bucket writer's long names must not push it over (runs would stop). AWS region names
# (``us-east-1``, ``us-isof-south-1``, ``ap-southeast-5``) are a two-letter area, one to three
# words and a number, 15 characters at most today; CloudTrail's unique string is "the 16-character
# UniqueString" of its documentation (CloudTrail log file name format).
MAX_REGION_CHARS = 25
_REGION = r"[a-z]{2}(?:-[a-z]{1,12}){1,3}-\d{1,2}"
_REGION_RE = re.compile(_REGION)
UNIQUE_STRING_CHARS = 16
_KEY_RE = re.compile(
    r"^(?P<prefix>(?:.*/)?)AWSLogs/(?:(?P<org>o-[a-z0-9]{10,32})/)?(?P<account>\d{12})/"
    r"(?P<kind>CloudTrail|CloudTrail-Digest|CloudTrail-Insight)/"
    rf"(?P<region>(?=[a-z0-9-]{{1,{MAX_REGION_CHARS}}}/){_REGION})/"
    r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<name>[^/]+)$"
)
_LOG_NAME_RE = re.compile(
    rf"^(?P<account>\d{{12}})_CloudTrail_(?P<region>{_REGION})_(?P<ts>\d{{8}}T\d{{4}}Z)_"
    rf"[A-Za-z0-9]{{1,{UNIQUE_STRING_CHARS}}}\.json(?:\.gz)?$"
)


def is_region(name: str) -> bool:
    """Whether a folder under ``CloudTrail/`` is named like an AWS region."""
    return len(name) <= MAX_REGION_CHARS and _REGION_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class TrailKey:
    key: str
    kind: KeyKind
    account: str | None = None
    region: str | None = None
    org_id: str | None = None
    delivered_at: datetime | None = None


def parse_key(key: str) -> TrailKey:
    """Classify an S3 key; for log files also read the account, region and delivery time."""
    match = _KEY_RE.match(key)
    if match is None:
        return TrailKey(key, KeyKind.OTHER)
    kind = match["kind"]
    if kind == "CloudTrail-Digest":
        return TrailKey(key, KeyKind.DIGEST, match["account"], match["region"], match["org"])
    if kind == "CloudTrail-Insight":
        return TrailKey(key, KeyKind.INSIGHT, match["account"], match["region"], match["org"])
    name = _LOG_NAME_RE.match(match["name"])
    if name is None or name["account"] != match["account"] or name["region"] != match["region"]:
        return TrailKey(key, KeyKind.OTHER, match["account"], match["region"], match["org"])
    # The stamp is 8 digits, "T", 4 digits, "Z" (the pattern checked it): read as integers, not with
    # strptime (most of the cost of this function, twice per file read); out-of-range values raise
    # ValueError as strptime did.
    delivered = _delivery_time(name["ts"])
    return TrailKey(key, KeyKind.LOG, match["account"], match["region"], match["org"], delivered)


# An organization's files share their stamps (every account and region delivers every five
# minutes): the times of the most recent stamps are kept per process (13 characters each).
@lru_cache(maxsize=4096)
def _delivery_time(ts: str) -> datetime:
    return datetime(int(ts[0:4]), int(ts[4:6]), int(ts[6:8]), int(ts[9:11]), int(ts[11:13]), tzinfo=UTC)


def day_prefixes(region_prefix: str, start: datetime, end: datetime) -> list[str]:
    """The ``YYYY/MM/DD/`` prefixes under ``.../CloudTrail/<region>/`` covering [start, end]."""
    day = start.astimezone(UTC).date()
    last = end.astimezone(UTC).date()
    out = []
    while day <= last:
        out.append(f"{region_prefix}{day:%Y/%m/%d}/")
        day += timedelta(days=1)
    return out


def start_after(day_prefix: str, account: str, region: str, start: datetime) -> str:
    """Within a day prefix, keys sort by delivery time: list from the window's start only."""
    stamp = start.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
    return f"{day_prefix}{account}_CloudTrail_{region}_{stamp}"
