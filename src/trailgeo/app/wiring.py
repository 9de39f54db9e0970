"""Building the AWS clients and adapters, once per execution environment: the one place that turns
settings and a boto3 session into the ports the app runs on (the handlers' runtime and the CLI
alike)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from trailgeo.adapters.aws import S3LogSource, SnsAlertSink
from trailgeo.adapters.dynamodb import DynamoFrequencyStore, DynamoLedger, DynamoOutbox
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.adapters.operations import DynamoOperations, SsmTuningStore
from trailgeo.app.detect import Dependencies
from trailgeo.app.fanout import Fanout
from trailgeo.app.settings import Settings
from trailgeo.ports import AlertSink, GeoResolver, LogSource

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sns.client import SNSClient

# Bounded waits and botocore's standard retry mode (exponential backoff with jitter, retry quota).
# Config keeps the retries dict it is given and botocore rewrites it in place when a client is made
# (max_attempts becomes total_max_attempts): callers that start from these settings copy RETRIES.
RETRIES = {"mode": "standard", "max_attempts": 5}
CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries=dict(RETRIES),  # type: ignore[arg-type]
    max_pool_connections=32,
)


def aws_clients(session: boto3.session.Session | None = None) -> tuple[S3Client, DynamoDBClient, SNSClient]:
    """Clients honour AWS_ENDPOINT_URL (moto's server in the demo and end-to-end tests)."""
    session = session or boto3.session.Session()
    return (
        session.client("s3", config=CLIENT_CONFIG),
        session.client("dynamodb", config=CLIENT_CONFIG),
        session.client("sns", config=CLIENT_CONFIG),
    )


def ssm_client(session: boto3.session.Session | None = None) -> Any:
    """For the tuning parameter only (built when TUNING_PARAMETER is set)."""
    return (session or boto3.session.Session()).client("ssm", config=CLIENT_CONFIG)


def build_dependencies(
    settings: Settings,
    *,
    session: boto3.session.Session | None = None,
    clients: tuple[Any, Any, Any] | None = None,
    geo: MaxMindGeoResolver | None = None,
    time_left: Callable[[], float] | None = None,
) -> Dependencies:
    """A deployment's detection run: its trail bucket, table and topic (``clients``: made already)."""
    s3, dynamodb, sns = clients or aws_clients(session)
    deps = table_dependencies(
        dynamodb,
        settings.table_name,
        source=S3LogSource(s3, settings.trail_bucket, settings.trail_prefix),
        geo=geo or MaxMindGeoResolver(settings.geoip_db_path, settings.geoip_asn_path),
        sink=SnsAlertSink(sns, settings.topic_arn),
    )
    if time_left is not None:
        deps.time_left = time_left
    if settings.intake == "Notifications":
        from trailgeo.adapters.intake import SqsNotificationIntake

        sqs = (session or boto3.session.Session()).client("sqs", config=CLIENT_CONFIG)
        deps.intake = SqsNotificationIntake(
            sqs, settings.intake_queue_url, settings.trail_bucket, settings.trail_prefix
        )
    return deps


def table_dependencies(
    dynamodb: Any, table: str, *, source: LogSource, geo: GeoResolver, sink: AlertSink
) -> Dependencies:
    """A run whose counters, ledger and outbox are a deployment's table (``trailgeo backfill
    --table`` reads its own logs and alerts nowhere)."""
    return Dependencies(
        source=source,
        geo=geo,
        store=DynamoFrequencyStore(dynamodb, table),
        ledger=DynamoLedger(dynamodb, table),
        outbox=DynamoOutbox(dynamodb, table),
        sink=sink,
    )


def memory_dependencies(
    *,
    source: LogSource,
    geo: GeoResolver,
    sink: AlertSink,
    store: MemoryFrequencyStore | None = None,
    ledger: MemoryLedger | None = None,
    outbox: MemoryOutbox | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Dependencies:
    """A run whose counters, ledger and outbox live in memory (fresh unless given): replays,
    ``trailgeo backfill`` without a table, the benchmark. ``clock`` is the run's time (a replay's
    tick); the wall clock when None."""
    deps = Dependencies(
        source=source,
        geo=geo,
        store=store if store is not None else MemoryFrequencyStore(),
        ledger=ledger if ledger is not None else MemoryLedger(),
        outbox=outbox if outbox is not None else MemoryOutbox(),
        sink=sink,
    )
    if clock is not None:
        deps.clock = clock
    return deps


def operations_view(
    session: boto3.session.Session, table: str, config: Config = CLIENT_CONFIG
) -> DynamoOperations:
    """What ``trailgeo status`` and ``explain`` read: the deployment's table."""
    return DynamoOperations(session.client("dynamodb", config=config), table)


def tuning_store(session: boto3.session.Session, config: Config = CLIENT_CONFIG) -> SsmTuningStore:
    """What ``trailgeo allow`` reads and writes: the tuning parameter (SSM)."""
    return SsmTuningStore(session.client("ssm", config=config))


def build_fanout(settings: Settings, session: boto3.session.Session | None = None) -> Fanout | None:
    """The queue, partials bucket and tracker of fan-out mode; None in single-Lambda mode."""
    if not settings.fanout:
        return None
    from trailgeo.adapters.fanout import DynamoFanoutTracker, S3PartialStore, SqsTaskQueue

    session = session or boto3.session.Session()
    return Fanout(
        queue=SqsTaskQueue(session.client("sqs", config=CLIENT_CONFIG), settings.fanout_queue_url),
        partials=S3PartialStore(session.client("s3", config=CLIENT_CONFIG), settings.partials_bucket),
        tracker=DynamoFanoutTracker(session.client("dynamodb", config=CLIENT_CONFIG), settings.table_name),
        files_per_task=settings.files_per_task,
    )
