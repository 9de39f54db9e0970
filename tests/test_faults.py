"""AWS faults mid-run: the run fails loudly, the next run finishes the work, counts stay exact."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tests.aws import BUCKET, REGION, TABLE, create_deployment, deps_for, receive_alerts
from tests.builders import BT_IP, GB_IP, SE_IP, T0, US_IP, files_by_delivery, record
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.app.detect import RunOptions, detect
from trailgeo.core.scoring import ScoringPolicy


class FailNthCall:
    """A botocore event hook that makes the Nth call of one operation fail with a real AWS error."""

    def __init__(self, client: Any, operation: str, nth: int, code: str) -> None:
        self.calls, self.nth, self.code, self.operation = 0, nth, code, operation
        client.meta.events.register(f"before-call.dynamodb.{operation}", self)

    def __call__(self, **_: Any) -> None:
        self.calls += 1
        if self.calls == self.nth:
            raise ClientError({"Error": {"Code": self.code, "Message": "injected"}}, self.operation)


def counters(session: Any) -> dict[tuple[str, str], tuple[int, list[str], float]]:
    """Buckets and recent hours exactly; the decayed weight is a float sum, equal up to rounding."""
    dynamodb = session.client("dynamodb")
    out = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE):
        for item in page["Items"]:
            if item["pk"]["S"].startswith(("M#", "P#", "K#", "ORG")):
                out[(item["pk"]["S"], item["sk"]["S"])] = (
                    int(item["b"]["N"]),
                    [h["N"] for h in item.get("hr", {}).get("L", [])],
                    pytest.approx(float(item["w"]["N"]), rel=1e-9),
                )
    return out


def load_trail(session: Any) -> None:
    events = [
        record(T0 + timedelta(minutes=4 * i), ip=[US_IP, GB_IP, SE_IP, BT_IP][i % 4], name=f"Call{i % 5}")
        for i in range(30)
    ]
    s3 = session.client("s3")
    for key, body in files_by_delivery(events).items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


@pytest.mark.parametrize(
    ("operation", "nth", "code"),
    [
        ("PutItem", 9, "ProvisionedThroughputExceededException"),  # a counter write, mid-commit
        ("PutItem", 2, "ThrottlingException"),  # a ledger claim
        ("BatchGetItem", 2, "InternalServerError"),  # reading history
        ("UpdateItem", 1, "ThrottlingException"),  # closing the run record: its files done
    ],
)
def test_given_a_dynamodb_fault_outlasting_retries_when_the_next_run_takes_over_then_counts_are_exact(
    country_test_mmdb: Path, operation: str, nth: int, code: str
) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    tick = T0 + timedelta(hours=2, minutes=30)
    later = tick + timedelta(minutes=30)  # claims (20-minute lease) have expired by then
    options = RunOptions(policy=ScoringPolicy(learning_days=0, learning_buckets=0))

    with mock_aws():
        clean = boto3.session.Session(region_name=REGION)
        clean_deployment = create_deployment(clean)
        load_trail(clean)
        detect(tick, deps_for(clean, geo, clean_deployment, tick), options)
        reference = counters(clean)

    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        deployment = create_deployment(session)
        load_trail(session)
        faulty = deps_for(session, geo, deployment, tick)
        FailNthCall(faulty.store.client, operation, nth, code)  # type: ignore[attr-defined]
        with pytest.raises(ClientError, match=code):
            detect(tick, faulty, options)

        report = detect(later, deps_for(session, geo, deployment, later), options)

        assert counters(session) == reference
        assert report.files_new + report.files_recovered > 0
        again = detect(later + timedelta(minutes=15), deps_for(session, geo, deployment, later), options)
        assert again.files_new == again.files_recovered == 0
        assert counters(session) == reference


def test_given_sns_down_for_one_run_then_the_alert_is_delivered_once_by_the_next(
    aws: Any, country_test_mmdb: Path
) -> None:
    geo = MaxMindGeoResolver(country_test_mmdb)
    deployment = create_deployment(aws)
    history = [record(T0 + timedelta(hours=6 * i), ip=US_IP) for i in range(40)]
    attack = [record(T0 + timedelta(days=10, minutes=2), ip=BT_IP)]
    s3 = aws.client("s3")
    for key, body in files_by_delivery(history + attack).items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    # Published in the run that raises it (no wait to settle): that run's SNS is down
    options = RunOptions(lookback=timedelta(days=11), settle=timedelta(0))
    baseline_tick = T0 + timedelta(days=10)
    detect(baseline_tick, deps_for(aws, geo, deployment, baseline_tick), options)
    tick = T0 + timedelta(days=10, minutes=30)
    deps = deps_for(aws, geo, deployment, tick)
    deps.sink.client.meta.events.register(  # type: ignore[attr-defined]
        "before-call.sns.Publish",
        lambda **_: (_ for _ in ()).throw(
            ClientError({"Error": {"Code": "Throttled", "Message": "injected"}}, "Publish")
        ),
    )

    down = detect(tick, deps, options)
    later = tick + timedelta(minutes=15)
    up = detect(later, deps_for(aws, geo, deployment, later), options)

    assert (down.alerts_raised, down.alerts_published, down.alerts_pending) == (1, 0, 1)
    assert (up.alerts_raised, up.alerts_published, up.alerts_pending) == (0, 1, 0)
    envelopes = receive_alerts(aws, deployment.queue_url)
    assert len(envelopes) == 1
    assert json.loads(envelopes[0]["Message"])["source"]["geo"]["country_iso_code"] == "BT"
