"""The deployment's AWS resources inside moto, created by the same code the demo uses."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from trailgeo.adapters.aws import S3LogSource, SnsAlertSink
from trailgeo.adapters.dynamodb import DynamoFrequencyStore, DynamoLedger, DynamoOutbox
from trailgeo.app.detect import Dependencies, RunReport
from trailgeo.app.runtime import emit_metrics
from trailgeo.core.alerts import Alert
from trailgeo.observability import metrics
from trailgeo.ports import GeoResolver
from trailgeo_tools.demo import REGION, Deployment, deployment_environment, provision, receive_envelopes

BUCKET = "org-trail-bucket"
TABLE = "trailgeo-state"

__all__ = [
    "BUCKET",
    "REGION",
    "TABLE",
    "Deployment",
    "FakeLambdaContext",
    "create_deployment",
    "deps_for",
    "environment",
    "load_function",
    "queued_outbox",
    "receive_alerts",
]
ROOT = Path(__file__).resolve().parents[1]


def load_function(name: str) -> ModuleType:
    """``functions/<name>/app.py`` as a fresh module: its once-per-environment caches start empty."""
    spec = importlib.util.spec_from_file_location(f"{name}_app", ROOT / "functions" / name / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeLambdaContext:
    function_name: str = "trailgeo-detector"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:trailgeo-detector"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    remaining_ms: int = 600_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def create_deployment(session: Any) -> Deployment:
    return provision(session, bucket=BUCKET, table=TABLE)


def queued_outbox(session: Any, *alerts: Alert) -> DynamoOutbox:
    """The deployment's table with ``alerts`` queued in its outbox, as the detector queues each alert
    before publishing it: what the notifier (TABLE_NAME = ``.table``) reads each message back from."""
    deployed = create_deployment(session)
    outbox = DynamoOutbox(session.client("dynamodb", region_name=REGION), deployed.table)
    for alert in alerts:
        assert outbox.put(alert)
    return outbox


def receive_alerts(session: Any, queue_url: str) -> list[dict[str, Any]]:
    return receive_envelopes(session, queue_url)


def environment(deployment: Deployment, geoip: str, **overrides: str) -> dict[str, str]:
    env = deployment_environment(deployment, Path(geoip))
    env["AWS_DEFAULT_REGION"] = REGION
    env.update(overrides)
    return env


def set_environment(monkeypatch: Any, deployment: Deployment, geoip: str, **overrides: str) -> None:
    """The deployed function's environment (``environment``), set for this test."""
    for name, value in environment(deployment, geoip, **overrides).items():
        monkeypatch.setenv(name, value)


def deps_for(session: Any, geo: GeoResolver, deployment: Deployment, now: datetime) -> Dependencies:
    """The run's dependencies through the real S3, DynamoDB and SNS adapters, at a fixed time."""
    dynamodb = session.client("dynamodb")
    return Dependencies(
        source=S3LogSource(session.client("s3"), deployment.bucket),
        geo=geo,
        store=DynamoFrequencyStore(dynamodb, deployment.table),
        ledger=DynamoLedger(dynamodb, deployment.table),
        outbox=DynamoOutbox(dynamodb, deployment.table),
        sink=SnsAlertSink(session.client("sns"), deployment.topic_arn),
        clock=lambda: now,
    )


def table_items(session: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of ``table``, by (pk, sk)."""
    dynamodb = session.client("dynamodb", region_name=REGION)
    items = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            items[(item["pk"]["S"], item["sk"]["S"])] = item
    return items


def emitted_metrics(report: RunReport) -> Any:
    """The Embedded Metric Format document a run's report becomes (metrics cleared around it)."""
    metrics.clear_metrics()
    try:
        emit_metrics(report)
        return metrics.serialize_metric_set()
    finally:
        metrics.clear_metrics()
