"""Soak: days of simulated CloudTrail through DynamoDB and SNS with random AWS faults.

The faulty deployment must end with the same tables as a fault-free one, every file done, no
alert pending, none delivered twice, and the planted attack alerted.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from moto import mock_aws

from tests.aws import BUCKET, REGION, TABLE, create_deployment, deps_for, receive_alerts
from tests.test_faults import counters
from trailgeo.adapters.dynamodb import DynamoLedger
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.app.detect import RunOptions, detect
from trailgeo.core.categories import EventScope
from trailgeo.core.scoring import ScoringPolicy
from trailgeo.ports import TrailgeoError
from trailgeo_tools.simulate import Simulation, SimulationConfig, simulate

FAULT_CODES = {
    "dynamodb": [
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "InternalServerError",
        "timeout",
    ],
    "sns": ["Throttled", "InternalError", "timeout"],
    "s3": ["SlowDown", "InternalError", "timeout"],
}


class RandomFaults:
    """Fails a seeded share of calls on real clients with real AWS error codes (botocore hook)."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate, self.injected = rng, rate, Counter[str]()

    def attach(self, client: Any, service: str) -> None:
        def maybe_fail(model: Any, **_: Any) -> None:
            if self.rng.random() < self.rate:
                code = self.rng.choice(FAULT_CODES[service])
                self.injected[f"{model.name}:{code}"] += 1
                if code == "timeout":
                    raise ReadTimeoutError(endpoint_url=f"https://{service}.{REGION}.amazonaws.com")
                raise ClientError({"Error": {"Code": code, "Message": "injected"}}, model.name)

        client.meta.events.register(f"before-call.{service}.*", maybe_fail)


def run_deployment(sim: Simulation, geo: MaxMindGeoResolver, faults: RandomFaults | None) -> dict[str, Any]:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        deployment = create_deployment(session)
        s3 = session.client("s3")
        for item in sim.files:
            s3.put_object(Bucket=BUCKET, Key=item.key, Body=item.body)
        # Events=Management, the default: the simulated trail holds management events only
        # (test_simulate checks every record's eventCategory), as the demo's deployment states
        options = RunOptions(policy=ScoringPolicy(learning_days=3), events=EventScope.MANAGEMENT)
        tick = sim.config.start + timedelta(hours=1)
        end = sim.config.start + timedelta(days=sim.config.days, hours=4)
        failed_runs = 0
        delivered: Counter[str] = Counter()
        while tick <= end:
            deps = deps_for(session, geo, deployment, tick)
            if faults is not None:
                faults.attach(deps.store.client, "dynamodb")  # type: ignore[attr-defined]
                faults.attach(deps.sink.client, "sns")  # type: ignore[attr-defined]
                faults.attach(deps.source.client, "s3")  # type: ignore[attr-defined]
            try:
                detect(tick, deps, options)
            except (ClientError, BotoCoreError, TrailgeoError):
                failed_runs += 1  # the Lambda fails; EventBridge's next tick recovers
            for envelope in receive_alerts(session, deployment.queue_url):
                delivered[envelope["MessageAttributes"]["alert_id"]["Value"]] += 1
            tick += timedelta(hours=1)
        # A last clean pass lets the final dead run (if any) be taken over.
        final = tick + timedelta(hours=1)
        detect(final, deps_for(session, geo, deployment, final), options)
        # One more, a schedule period later, sends what its alerts wait for (app/detect/publish.py).
        settled = final + options.settle
        detect(settled, deps_for(session, geo, deployment, settled), options)
        for envelope in receive_alerts(session, deployment.queue_url):
            delivered[envelope["MessageAttributes"]["alert_id"]["Value"]] += 1
        items = session.client("dynamodb").get_paginator("scan").paginate(TableName=TABLE)
        everything = [item for page in items for item in page["Items"]]
        ledger = DynamoLedger(session.client("dynamodb"), TABLE)
        status = ledger.status([i["pk"]["S"][2:] for i in everything if i["pk"]["S"].startswith("F#")])
        return {
            "counters": counters(session),
            "files_done": sorted(key for key, entry in status.items() if entry.state == "done"),
            "pending": [i for i in everything if i["pk"]["S"] == "OUTBOX" and i["st"]["S"] == "pending"],
            "open_runs": [i for i in everything if i["pk"]["S"] == "RUN" and i["st"]["S"] == "open"],
            "delivered": delivered,
            "failed_runs": failed_runs,
        }


@pytest.mark.slow
def test_given_five_days_of_logs_and_random_aws_faults_then_tables_and_alerts_equal_a_fault_free_run(
    dbip_mmdb: Path,
) -> None:
    sim = simulate(
        SimulationConfig(
            start=datetime(2026, 9, 7, tzinfo=UTC),
            # Three days of learning, then two of alerting with the attack on the last: ~120 of the
            # faulty run's ticks fail at this rate, and a swallowed counter write still shows. A week
            # cost a fifth more CPU (291 s against 239 s) and checked nothing more.
            days=5,
            seed=11,
            org_id=None,
            accounts=("111122223333",),
            regions=("us-east-1",),
            humans=6,
            automation_roles=1,
            digests=False,
        )
    )
    geo = MaxMindGeoResolver(dbip_mmdb)
    faults = RandomFaults(random.Random(5), rate=0.02)

    clean = run_deployment(sim, geo, None)
    faulty = run_deployment(sim, geo, faults)

    assert sum(faults.injected.values()) > 20, faults.injected
    assert faulty["failed_runs"] > 5
    assert faulty["counters"] == clean["counters"]
    assert faulty["files_done"] == clean["files_done"]
    assert len(clean["files_done"]) == len(sim.log_files)
    assert faulty["pending"] == []
    assert faulty["open_runs"] == []
    assert clean["delivered"], "the planted attack must alert"
    assert faulty["delivered"], "the planted attack must alert despite the faults"
    assert max(faulty["delivered"].values()) == 1  # nothing delivered twice
