"""S3 log source and SNS alert sink."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from trailgeo.adapters.dynamodb import error_code_of
from trailgeo.core.alerts import Alert
from trailgeo.core.keys import KeyKind, day_prefixes, is_region, parse_key, start_after
from trailgeo.core.render.email import email_subject
from trailgeo.core.render.envelope import sns_message
from trailgeo.observability import logger
from trailgeo.ports import (
    AlertRefusedError,
    LatePrefixes,
    ListedWindow,
    LogObject,
    ObjectGoneError,
    ObjectUnreadableError,
    PublishError,
    TrailgeoError,
    TransientReadError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sns.client import SNSClient

_T = TypeVar("_T")
_ACCOUNT = re.compile(r"^\d{12}$")
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")
MAX_OBJECT_BYTES = 256 * 1024 * 1024  # compressed; CloudTrail files are a few MB at most
DISCOVERY_TTL_SECONDS = 3600.0  # accounts and regions change rarely: rediscover hourly
# An object S3 refuses to give (403 AccessDenied or KMS, or a 400 such as an SSE-C object) is tried
# again at later runs while it is younger than this, then skipped (counted, logged): long enough to
# fix a permission (the NoCloudTrailFilesAlarm fires within the hour when every file is refused),
# short enough that an object a bucket writer made unreadable cannot hold the watermark back for good.
REFUSED_RETRY_WINDOW = timedelta(hours=24)
# Codes worth another try whatever the object (throttling, timeouts; 5xx are retried too).
_RETRYABLE = frozenset({"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "ThrottlingException"})
# SNS Publish codes about the message itself (too long, a parameter it refuses): no retry can
# deliver that alert. Topic, KMS and permission errors refuse every alert alike: retried next run.
_ALERT_REFUSED = frozenset({"InvalidParameter", "ParameterValueInvalid", "ValidationException"})


def _utc_now() -> datetime:
    return datetime.now(tz=UTC)


def _day_of(day_prefix: str, region_prefix: str) -> date:
    """The date of a ``YYYY/MM/DD/`` prefix under ``region_prefix`` (``core.keys.day_prefixes``)."""
    year, month, day = day_prefix[len(region_prefix) : -1].split("/")
    return date(int(year), int(month), int(day))


# Folders AWS services write beside CloudTrail/ under an account, each its own skip reason
# (app.runtime.REASONS); any other folder is counted as prefix_other.
_KNOWN_FOLDERS = {
    "CloudTrail-Digest": "prefix_cloudtrail-digest",
    "CloudTrail-Insight": "prefix_cloudtrail-insight",
    "Config": "prefix_config",
}
# Log lines naming what a listing skipped, per reason and discovery (or window): a bucket writer's
# thousands of folders or objects are counted, not each logged; a name is cut to this many characters.
MAX_LOGGED_SKIPS = 20
MAX_LOGGED_NAME_CHARS = 300
# LIST requests in flight at once (day prefixes of the window, accounts at discovery): an
# organization's thousands of prefixes are listed at S3's latency divided by this, within the
# clients' connection pool (wiring.CLIENT_CONFIG: 32).
LIST_CONCURRENCY = 16


def _skip(skipped: Counter[str], reason: str, key: str, what: str = "prefix") -> None:
    """Count a folder (or an object: ``what`` "key") the listing does not read, and log it while
    fewer than ``MAX_LOGGED_SKIPS`` of its reason were."""
    skipped[reason] += 1
    if skipped[reason] <= MAX_LOGGED_SKIPS:
        logger.info(f"{what} skipped", key=key[:MAX_LOGGED_NAME_CHARS], reason=reason)
    elif skipped[reason] == MAX_LOGGED_SKIPS + 1:
        logger.info(f"{what} skips no longer logged one by one", reason=reason, logged=MAX_LOGGED_SKIPS)


@dataclass(slots=True)
class _Skips:
    """What one listing task skipped, kept for the merge: counts by reason and the first
    ``MAX_LOGGED_SKIPS`` names of each (a task runs in a thread: the merge logs, in task order, so
    the log is bounded per listing, not per task, and reads as a sequential listing's)."""

    counts: Counter[str] = field(default_factory=Counter)
    names: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, name, what)

    def add(self, reason: str, name: str, what: str = "prefix") -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= MAX_LOGGED_SKIPS:
            self.names.append((reason, name, what))

    def merge_into(self, skipped: Counter[str]) -> None:
        for reason, name, what in self.names:
            _skip(skipped, reason, name, what)
        for reason, count in self.counts.items():
            unnamed = count - min(count, MAX_LOGGED_SKIPS)  # beyond the names kept: counted only
            if unnamed:
                before = skipped[reason]
                skipped[reason] += unnamed
                if before <= MAX_LOGGED_SKIPS < skipped[reason]:
                    what = next(w for r, _, w in self.names if r == reason)
                    logger.info(
                        f"{what} skips no longer logged one by one", reason=reason, logged=MAX_LOGGED_SKIPS
                    )


class TrailBucketError(TrailgeoError):
    """The trail bucket cannot be listed: a deployment problem, not a data problem."""


@dataclass(slots=True)
class S3LogSource:
    """Lists every account and region under ``<prefix>AWSLogs/``, single-account or organization."""

    client: S3Client
    bucket: str
    prefix: str = ""
    monotonic: Callable[[], float] = time.monotonic
    clock: Callable[[], datetime] = _utc_now
    # How far before the window a file's name may be and still be picked up when it lands late.
    late_tolerance: timedelta = timedelta(hours=24)
    list_concurrency: int = LIST_CONCURRENCY
    _regions: list[tuple[str, str, str]] = field(default_factory=list)  # (region prefix, account, region)
    _discovered_at: float | None = None
    _skipped_prefixes: Counter[str] = field(default_factory=Counter)

    def _common_prefixes(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    yield common["Prefix"]
        except ClientError as exc:
            raise TrailBucketError(self._explain(exc, f"s3:ListBucket on {self.bucket}/{prefix}")) from exc

    def _explain(self, exc: ClientError, action: str) -> str:
        code = error_code_of(exc)
        if code in {"AccessDenied", "AllAccessDisabled"}:
            return f"{code}: the function's role needs {action}"
        return f"{code}: {exc}"

    def _discover(self) -> list[tuple[str, str, str]]:
        now = self.monotonic()
        if self._discovered_at is not None and now - self._discovered_at < DISCOVERY_TTL_SECONDS:
            return self._regions
        regions: list[tuple[str, str, str]] = []
        skipped: Counter[str] = Counter()
        base = f"{self.prefix}AWSLogs/"
        account_prefixes: list[tuple[str, str]] = []
        for level in self._common_prefixes(base):
            name = level[len(base) : -1]
            if _ACCOUNT.match(name):
                account_prefixes.append((level, name))
            elif _ORG.match(name):
                for sub in self._common_prefixes(level):
                    if _ACCOUNT.match(sub[len(level) : -1]):
                        account_prefixes.append((sub, sub[len(level) : -1]))
                    else:
                        _skip(skipped, "prefix_other", sub)
            else:
                _skip(skipped, "prefix_other", level)
        for found, skips in self._each(self._account_regions, account_prefixes):
            regions.extend(found)
            skips.merge_into(skipped)
        self._regions, self._discovered_at, self._skipped_prefixes = regions, now, skipped
        return regions

    def _account_regions(
        self, account_prefix: str, account: str
    ) -> tuple[list[tuple[str, str, str]], _Skips]:
        """One account's CloudTrail regions (its service folders, then CloudTrail's regions)."""
        regions: list[tuple[str, str, str]] = []
        skips = _Skips()
        for service in self._common_prefixes(account_prefix):
            kind = service[len(account_prefix) : -1]
            if kind != "CloudTrail":
                # CloudTrail-Digest, CloudTrail-Insight, Config, ...: never read. Any other name
                # is a bucket writer's to choose: one fixed reason, whatever it is.
                skips.add(_KNOWN_FOLDERS.get(kind, "prefix_other"), service)
                continue
            for region_prefix in self._common_prefixes(service):
                region = region_prefix[len(service) : -1]
                if is_region(region):
                    regions.append((region_prefix, account, region))
                else:
                    skips.add("prefix_bad_region", region_prefix)
        return regions, skips

    def _each(self, task: Callable[..., _T], arguments: Sequence[tuple[Any, ...]]) -> list[_T]:
        """``task`` over ``arguments``, up to ``list_concurrency`` at once, results in order (the
        first error raised, as a sequential listing would)."""
        if self.list_concurrency <= 1 or len(arguments) <= 1:
            return [task(*args) for args in arguments]
        with ThreadPoolExecutor(max_workers=min(self.list_concurrency, len(arguments))) as pool:
            return list(pool.map(lambda args: task(*args), arguments))

    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:
        """Objects named within (start, end], and late ones: named up to ``late_tolerance`` earlier
        but landed in the bucket (LastModified) within the window. The window's day prefixes are
        listed every time; the ones only the late tolerance keeps in play (every name in them at or
        before ``start``) as ``late`` says: left for a later run, or read for files landed after
        ``late.since``. Day prefixes are listed side by side (``list_concurrency``), merged in
        prefix order."""
        window = ListedWindow()
        late = late or LatePrefixes()
        since = min(start, late.since or start)
        earliest = since - self.late_tolerance
        first_window_day = start.astimezone(UTC).date()
        days = []
        for region_prefix, account, region in self._discover():
            for day in day_prefixes(region_prefix, earliest, end):
                if _day_of(day, region_prefix) >= first_window_day:  # the window reaches it
                    days.append((day, account, region, (start - self.late_tolerance, start, start, end)))
                elif late.listed:  # only a late file can be there
                    days.append((day, account, region, (earliest, start, since, end)))
                else:
                    window.prefixes_not_due += 1
        window.prefixes_listed = len(days)
        for objects, skips in self._each(self._list_day, days):
            window.objects.extend(objects)
            skips.merge_into(window.skipped)
        window.skipped.update(self._skipped_prefixes)
        return window

    def _list_day(
        self, day: str, account: str, region: str, bounds: tuple[datetime, datetime, datetime, datetime]
    ) -> tuple[list[LogObject], _Skips]:
        """One day prefix's objects named after ``start``, or landed after ``landed_after`` and
        named after ``earliest``, up to ``end`` (bounds: earliest, start, landed_after, end)."""
        earliest, start, landed_after, end = bounds
        objects: list[LogObject] = []
        skips = _Skips()
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            pages = paginator.paginate(
                Bucket=self.bucket, Prefix=day, StartAfter=start_after(day, account, region, earliest)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    parsed = parse_key(obj["Key"])
                    if parsed.kind is not KeyKind.LOG or parsed.delivered_at is None:
                        skips.add(f"key_{parsed.kind.value}", parsed.key, "key")
                        continue
                    if parsed.delivered_at > end:
                        return objects, skips  # keys sort by delivery time within a day
                    landed = obj.get("LastModified")
                    if parsed.delivered_at > start or (landed is not None and landed_after < landed <= end):
                        objects.append(
                            LogObject(
                                parsed.key, parsed.delivered_at, int(obj.get("Size", 0)), account, landed
                            )
                        )
        except ClientError as exc:
            raise TrailBucketError(self._explain(exc, f"s3:ListBucket on {self.bucket}/{day}")) from exc
        return objects, skips

    def read(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            size = int(response.get("ContentLength", 0))
            if size > MAX_OBJECT_BYTES:
                response["Body"].close()
                raise ObjectUnreadableError("too_large", f"{size} bytes compressed")
            body: bytes = response["Body"].read()
            return body
        except ClientError as exc:
            code = error_code_of(exc)
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise ObjectGoneError(key) from exc
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _RETRYABLE or status >= 500:
                raise TransientReadError(f"{code} reading s3://{self.bucket}/{key}") from exc
            raise self._refused(key, code) from exc
        except BotoCoreError as exc:
            raise TransientReadError(f"{type(exc).__name__} reading s3://{self.bucket}/{key}") from exc

    def _refused(self, key: str, code: str) -> TrailgeoError:
        """What a refused GetObject means. Without s3:ListBucket covering a key, S3 answers 403, not
        404, for a key that is not there: the key is listed (the prefix grant allows it) to tell a
        deleted object (gone) from one that is there and refused. A refused one is retried while
        younger than ``REFUSED_RETRY_WINDOW`` (a permission being fixed), then skipped."""
        denied = code in {"AccessDenied", "403", "AllAccessDisabled"} or code.startswith("KMS.")
        hint = (
            ": the function's role needs s3:GetObject on the trail prefix and, for an SSE-KMS trail, "
            "kms:Decrypt on the trail's key (TrailKmsKeyArn)"
            if denied
            else ""
        )
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except (ClientError, BotoCoreError):
            return TransientReadError(f"{code} reading s3://{self.bucket}/{key}{hint}")
        found = [obj for obj in page.get("Contents", []) if obj["Key"] == key]
        if not found:
            logger.warning("listed object gone", key=key, code=code)
            return ObjectGoneError(key)
        landed = found[0].get("LastModified")
        if landed is not None and self.clock() - landed > REFUSED_RETRY_WINDOW:
            age = self.clock() - landed
            return ObjectUnreadableError(
                "access_denied" if denied else "refused",
                f"{code} for {age} since it landed: skipped{hint}",
            )
        return TransientReadError(f"{code} reading s3://{self.bucket}/{key}{hint}")


@dataclass(slots=True)
class SnsAlertSink:
    """Publishes the JSON alert for machines and a text brief for email subscribers."""

    client: SNSClient
    topic_arn: str

    def publish(self, alert: Alert) -> str:
        attributes: dict[str, Any] = {
            "severity": {"DataType": "String", "StringValue": alert.severity},
            "country": {"DataType": "String", "StringValue": alert.country},
            "score": {"DataType": "Number", "StringValue": format(alert.score, "g")},
            "alert_id": {"DataType": "String", "StringValue": alert.alert_id},
            # new | escalation | update: a paging subscription's filter policy leaves updates out
            "notification": {"DataType": "String", "StringValue": alert.notification},
        }
        try:
            message = sns_message(alert)
        except ValueError as exc:
            raise AlertRefusedError(f"too_large: {exc}") from exc
        try:
            response = self.client.publish(
                TopicArn=self.topic_arn,
                Subject=email_subject(alert),
                Message=message,
                MessageStructure="json",
                MessageAttributes=attributes,
            )
        except (ClientError, BotoCoreError) as exc:
            code = error_code_of(exc) if isinstance(exc, ClientError) else type(exc).__name__
            if code in _ALERT_REFUSED:
                raise AlertRefusedError(f"{code} publishing alert {alert.alert_id}") from exc
            raise PublishError(f"{code} publishing alert {alert.alert_id}") from exc
        return str(response["MessageId"])
