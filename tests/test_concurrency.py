"""Invocations running at the same time (a retried run overlapping the next one, a manual run
during the schedule) against moto's server on 127.0.0.1: nothing is counted twice or lost."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.aws import BUCKET, REGION, Deployment, create_deployment, deps_for
from tests.builders import BT_IP, GB_IP, SE_IP, T0, US_IP, files_by_delivery, record
from tests.conftest import reset_moto
from tests.test_faults import counters
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.intake import SqsEventIntake
from trailgeo.app.detect import RunOptions, RunReport, detect, detect_arrivals

RACERS = 3
TICK = T0 + timedelta(hours=4)
# Small batches, so that the racers' claims interleave batch by batch.
OPTIONS = RunOptions(lookback=timedelta(hours=5), batch_files=4)


@pytest.fixture
def moto_server(moto_server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    return moto_server_url


def deploy_trail(session: Any) -> tuple[Deployment, int]:
    deployment = create_deployment(session)
    events = [
        record(T0 + timedelta(minutes=2 * i), ip=[US_IP, GB_IP, SE_IP, BT_IP][i % 4], name=f"Call{i % 7}")
        for i in range(90)
    ]
    files = files_by_delivery(events)
    s3 = session.client("s3")
    for key, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return deployment, len(files)


def single_then_fresh(
    moto_server: str, geo: MaxMindGeoResolver, tick: Any, options: RunOptions
) -> tuple[RunReport, int, Any, Any, Deployment]:
    """The window's counts from a single scheduled run, then moto reset and the same trail deployed
    afresh: (that run's report, the files, its counters, a new session, the new deployment)."""
    session = boto3.session.Session(region_name=REGION)
    deployment, files = deploy_trail(session)
    single = detect(tick, deps_for(session, geo, deployment, tick), options)
    expected = counters(session)
    reset_moto(moto_server)
    session = boto3.session.Session(region_name=REGION)
    deployment, _ = deploy_trail(session)
    return single, files, expected, session, deployment


def run_together(*runs: Any) -> list[BaseException]:
    """Each callable in a thread of its own, started at once; what they raised."""
    start = threading.Barrier(len(runs))
    errors: list[BaseException] = []

    def race(run: Any) -> None:
        start.wait()
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - reported by the callers' assertions
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_given_invocations_racing_on_one_window_then_counts_equal_a_single_run(
    moto_server: str, country_test_mmdb: Path
) -> None:
    geo, tick, options = MaxMindGeoResolver(country_test_mmdb), TICK, OPTIONS

    # Given the counts of a single run over the window
    single, files, expected, session, deployment = single_then_fresh(moto_server, geo, tick, options)

    # When three invocations run the same window at the same moment, each with its own clients
    reports: list[RunReport] = []

    def race() -> None:
        deps = deps_for(boto3.session.Session(region_name=REGION), geo, deployment, tick)
        reports.append(detect(tick, deps, options))

    errors = run_together(*[race] * RACERS)

    # Then every file was read by exactly one of them, and the tables equal the single run's
    assert errors == []
    assert single.files_read == files
    assert sum(r.files_read for r in reports) == files
    assert sum(r.events for r in reports) == single.events
    assert counters(session) == expected


def test_given_a_scheduled_run_and_an_arrivals_run_racing_on_the_same_files_then_counts_equal_a_single_run(
    moto_server: str, country_test_mmdb: Path
) -> None:
    geo, tick, options = MaxMindGeoResolver(country_test_mmdb), TICK, OPTIONS

    # Given the counts of a single scheduled run over the window
    single, files, expected, session, deployment = single_then_fresh(moto_server, geo, tick, options)

    # When, continuous mode on, the scheduled run lists the window while an event-driven run takes
    # a batch of notifications naming every one of its files, at the same moment
    keys = [obj["Key"] for obj in session.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    notices = [
        (f"m{n}", json.dumps({"s3Bucket": BUCKET, "s3ObjectKey": [key]}), "") for n, key in enumerate(keys)
    ]
    reports: list[RunReport] = []
    batch = SqsEventIntake(notices, BUCKET)

    def scheduled() -> None:
        deps = deps_for(boto3.session.Session(region_name=REGION), geo, deployment, tick)
        reports.append(detect(tick, deps, options))

    def arrivals() -> None:
        deps = deps_for(boto3.session.Session(region_name=REGION), geo, deployment, tick)
        deps.intake = batch
        reports.append(detect_arrivals(tick, deps, options))

    errors = run_together(scheduled, arrivals)

    # Then every file was read by exactly one of them, the tables equal the single run's, and the
    # event source deletes every message (each file claimed or done)
    assert errors == []
    assert sum(r.files_read for r in reports) == files == single.files_read
    assert sum(r.events for r in reports) == single.events
    assert counters(session) == expected
    assert batch.failures() == []
