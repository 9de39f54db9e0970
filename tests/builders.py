"""Small builders for CloudTrail records and delivery files, shared by the tests."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import msgspec

from trailgeo.core.records import TrailRecord

ACCOUNT = "111122223333"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
# Addresses in MaxMind's GeoIP2-Country-Test / GeoLite2-City-Test databases.
US_IP = "216.160.83.56"
US_IP_2 = "50.114.0.1"
GB_IP = "81.2.69.142"
SE_IP = "89.160.20.112"
JP_IP = "2001:218::1"
BT_IP = "67.43.156.1"

_ids = count(1)


def record(
    when: datetime,
    *,
    name: str = "DescribeInstances",
    source: str = "ec2.amazonaws.com",
    ip: str = US_IP,
    arn: str = ALICE,
    key: str = "AKIAALICE0000000001",
    agent: str = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5 exe/x86_64.ubuntu.22",
    account: str = ACCOUNT,
    region: str = "us-east-1",
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDA" + arn[-8:].upper(),
            "arn": arn,
            "accountId": account,
            "accessKeyId": key,
            "userName": arn.rsplit("/", 1)[-1],
        },
        "eventTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": ip,
        "userAgent": agent,
        "requestParameters": None,
        "responseElements": None,
        "requestID": f"req-{next(_ids)}",
        "eventID": f"00000000-0000-4000-8000-{next(_ids):012d}",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }
    body.update(extra)
    return body


def trail_record(body: dict[str, Any]) -> TrailRecord:
    """A record as a delivery file gives it: through JSON, as the product decodes (the fields kept
    undecoded, ``additionalEventData`` and the like, come from JSON only)."""
    return msgspec.json.decode(json.dumps(body).encode(), type=TrailRecord)


def delivery_key(
    delivered: datetime,
    *,
    account: str = ACCOUNT,
    region: str = "us-east-1",
    org: str | None = None,
    unique: str | None = None,
) -> str:
    stamp = delivered.astimezone(UTC)
    unique = unique or f"U{next(_ids):015d}"
    base = f"AWSLogs/{org}/{account}" if org else f"AWSLogs/{account}"
    return (
        f"{base}/CloudTrail/{region}/{stamp:%Y/%m/%d}/"
        f"{account}_CloudTrail_{region}_{stamp:%Y%m%dT%H%MZ}_{unique}.json.gz"
    )


def gz_file(records: list[dict[str, Any]]) -> bytes:
    return gzip.compress(json.dumps({"Records": records}).encode(), mtime=0)


def hourly_history(start: datetime, hours: int, **fields: Any) -> list[dict[str, Any]]:
    """One call per hour: ``hours`` hourly buckets of presence."""
    return [record(start + timedelta(hours=h, minutes=7), **fields) for h in range(hours)]


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def files_by_delivery(
    records: list[dict[str, Any]], *, minutes: int = 15, **key_args: Any
) -> dict[str, bytes]:
    """Bucket records into delivery files, delivered at the end of their slot plus 5 minutes."""
    slots: dict[datetime, list[dict[str, Any]]] = {}
    for item in records:
        when = datetime.strptime(item["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        slot = when.replace(minute=when.minute - when.minute % minutes, second=0)
        slots.setdefault(slot, []).append(item)
    return {
        delivery_key(slot + timedelta(minutes=minutes + 5), **key_args): gz_file(items)
        for slot, items in sorted(slots.items())
    }


T0 = datetime(2026, 10, 1, tzinfo=UTC)
