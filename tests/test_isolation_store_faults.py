"""A batch read file by file (app.detect.ingest.read_isolated) under transient DynamoDB faults.

The run record names the file being read, so that the next attempt can set aside a file that
killed the process. A throttled write of that name must not leave the file before it named: that
file was read and counted, and the next attempt would set it aside for good (the soak's random
faults did, tens of times a week). docs/threat-model.md names this test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.aws import create_deployment, deps_for
from tests.builders import GB_IP, SE_IP, T0, US_IP, files_by_delivery, record
from trailgeo.adapters.dynamodb import RUN_PARTITION
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.app.detect import RunOptions, RunReport, detect

CALLS_AT = T0 + timedelta(days=2, hours=3)
TICK = CALLS_AT + timedelta(minutes=30)
LEASE_PASSED = timedelta(minutes=30)  # a dead run's lease (20 minutes) has run out by then
NOTE_FILE = "SET cur = :key"  # DynamoLedger.note_reading naming the file about to be read
CLEAR_NOTE = "REMOVE cur"  # and clearing it once the batch is read


@dataclass
class StoreFaults:
    """Throttles chosen DynamoDB writes through a botocore hook, as DynamoDB would."""

    commits_fail: bool = False  # every counter PutItem fails: the run dies in its commit
    note: tuple[str, int] | None = None  # (UpdateExpression, which call of it): failed once
    seen: Counter[str] = field(default_factory=Counter)

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb.PutItem", self._put)
        client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", self._update)

    def _put(self, params: dict[str, Any], **_: Any) -> None:
        if self.commits_fail and params["Item"]["pk"]["S"].startswith("M#"):
            raise throttled("PutItem")

    def _update(self, params: dict[str, Any], **_: Any) -> None:
        expression = params.get("UpdateExpression", "")
        self.seen[expression] += 1
        if self.note is not None and self.note == (expression, self.seen[expression]):
            raise throttled("UpdateItem")


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}}, operation)


@pytest.mark.parametrize(
    ("expression", "nth"),
    [(NOTE_FILE, 2), (CLEAR_NOTE, 1)],
    ids=["naming-the-second-file", "clearing-after-the-last"],
)
def test_given_a_batch_read_file_by_file_when_a_write_of_its_note_is_throttled_then_no_file_is_set_aside(
    aws: Any, country_test_mmdb: Path, expression: str, nth: int
) -> None:
    # Given three good delivery files whose run and first takeover died on a throttled counter
    # write, so that the next attempt reads them file by file
    deployment = create_deployment(aws)
    calls = [record(CALLS_AT + timedelta(minutes=7 * i), ip=ip) for i, ip in enumerate((GB_IP, US_IP, SE_IP))]
    files = files_by_delivery(calls, minutes=5)
    assert len(files) == 3
    for key, body in files.items():
        aws.client("s3").put_object(Bucket=deployment.bucket, Key=key, Body=body)
    geo = MaxMindGeoResolver(country_test_mmdb)
    faults = StoreFaults(commits_fail=True)

    def run(attempt: int) -> RunReport:
        at = TICK + attempt * LEASE_PASSED
        deps = deps_for(aws, geo, deployment, at)
        faults.attach(deps.store.client)  # type: ignore[attr-defined]
        return detect(at, deps, RunOptions(alerting=False))

    for attempt in range(2):
        with pytest.raises(ClientError, match="ThrottlingException"):
            run(attempt)
    faults.commits_fail = False

    # When that attempt's write of the run record's note is throttled: naming the second file
    # (the first one read and counted), or clearing the note once every file is read
    faults.note = (expression, nth)
    with pytest.raises(ClientError, match="ThrottlingException"):
        run(2)
    last = run(3)

    # Then the next attempt sets no file aside: every file is read and counted once, and the
    # closed run record holds no poison
    assert last.files_skipped == Counter()
    assert (last.files_recovered, last.files_read, last.events) == (3, 3, 3)
    (closed,) = aws.client("dynamodb").query(
        TableName=deployment.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": RUN_PARTITION}},
    )["Items"]
    assert (closed["st"]["S"], closed["att"]["N"], "pz" in closed, "cur" in closed) == (
        "closed",
        "3",
        False,
        False,
    )
