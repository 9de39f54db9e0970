"""The LogSource port (listing a window of the trail, reading a file): one contract, run against a
local directory laid out like the bucket and against the S3 trail bucket (moto)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.aws import BUCKET, create_deployment
from tests.builders import delivery_key, gz_file, record, write_tree
from trailgeo.adapters.aws import S3LogSource
from trailgeo.adapters.local import LocalLogSource
from trailgeo.ports import LogSource, ObjectGoneError

# Far from the wall clock: S3's late-file rule (landed within the window) picks nothing up here.
END = datetime(2026, 10, 2, 0, 10, tzinfo=UTC)
START = END - timedelta(hours=2)
ORG = "o-a1b2c3d4e5"

Trail = Callable[[dict[str, bytes]], LogSource]


@pytest.fixture(params=["local", "s3"])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Trail:
    """The trail holding ``files`` (S3 keys and bodies), as each implementation reads it."""
    if request.param == "local":

        def local(files: dict[str, bytes]) -> LogSource:
            write_tree(tmp_path, files)
            return LocalLogSource(tmp_path)

        return local
    session = request.getfixturevalue("aws")
    create_deployment(session)
    s3 = session.client("s3")

    def bucket(files: dict[str, bytes]) -> LogSource:
        for key, body in files.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return S3LogSource(s3, BUCKET)

    return bucket


def test_given_files_around_a_window_when_it_is_listed_then_exactly_those_named_within_are_listed(
    trail: Trail,
) -> None:
    # Given files of two accounts and two regions, delivered across midnight, before, at the edges
    # of and after the window (start excluded, end included)
    delivered = {
        "before": START - timedelta(minutes=5),
        "at-start": START,
        "inside": START + timedelta(minutes=5),
        "before-midnight": END - timedelta(minutes=15),
        "at-end": END,
        "after": END + timedelta(minutes=5),
    }
    files: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for i, (name, when) in enumerate(delivered.items()):
        account = ("111122223333", "444455556666")[i % 2]
        key = delivery_key(when, account=account, region=("us-east-1", "eu-west-1")[i % 2], org=ORG)
        names[name] = key
        files[key] = gz_file([record(when - timedelta(minutes=5), account=account)] * (i + 1))
    source = trail(files)

    # When the window is listed
    window = source.list_window(START, END)

    # Then the files named within it are listed, with their delivery time, size and account
    listed = {(o.key, o.delivered_at, o.size, o.account) for o in window.objects}
    assert listed == {
        (names[n], delivered[n], len(files[names[n]]), names[n].split("/")[2])
        for n in ("inside", "before-midnight", "at-end")
    }


def test_given_a_listed_file_when_it_is_read_then_its_bytes_are_returned_as_stored(trail: Trail) -> None:
    # Given a file in the trail
    key = delivery_key(START + timedelta(minutes=20))
    body = gz_file([record(START + timedelta(minutes=15))])
    source = trail({key: body})

    # When it is read
    read = source.read(key)

    # Then the bytes are the stored ones (still compressed)
    assert read == body


def test_given_a_file_deleted_after_listing_when_it_is_read_then_it_is_gone(trail: Trail) -> None:
    # Given a trail with one file, and a key that is not (or no longer) in it
    source = trail({delivery_key(START + timedelta(minutes=20)): gz_file([])})
    missing = delivery_key(START + timedelta(minutes=25))

    # When the missing key is read
    # Then it fails as gone, not as a transient or permanent read problem
    with pytest.raises(ObjectGoneError):
        source.read(missing)
