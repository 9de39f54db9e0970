"""``trailgeo-tools demo``: the whole detector through real AWS APIs, served by moto on 127.0.0.1.

1. Starts moto's server and points boto3 at it (``AWS_ENDPOINT_URL``).
2. Creates what ``template.yaml`` deploys: the trail bucket, the table, the topic, and an SQS
   queue subscribed to the topic (standing in for an email inbox, so the demo can read it).
3. Writes a simulated organization's CloudTrail history into the bucket, in the organization
   trail layout, with one stolen-key attacker from a country the organization never used.
4. Trains the tables on all days but the last (``backfill``: the same detection code with
   alerting off, one run per day), then invokes the Lambda handler for every 15-minute tick of
   the last day and shows the alerts as they arrive on the subscriber queue.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.app.runtime import DetectorRuntime
from trailgeo.app.settings import Settings
from trailgeo.app.wiring import build_dependencies
from trailgeo.core.alerts import Alert
from trailgeo.core.render.email import email_body
from trailgeo_tools.simulate import Simulation, SimulationConfig, simulate

REGION = "us-east-1"
BUCKET = "aws-cloudtrail-logs-o-a1b2c3d4e5"
TABLE = "trailgeo-state"
TOPIC = "trailgeo-alerts"
QUEUE = "trailgeo-alerts-inbox"
TICK = timedelta(minutes=15)
DEMO_START = datetime(2026, 10, 5, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Deployment:
    bucket: str
    table: str
    topic_arn: str
    queue_url: str


def provision(session: Any, *, bucket: str = BUCKET, table: str = TABLE) -> Deployment:
    """Create the bucket, the table (keys and TTL as template.yaml), the topic and a subscriber."""
    s3 = session.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    dynamodb = session.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    sns = session.client("sns", region_name=REGION)
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    sqs = session.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return Deployment(bucket, table, topic_arn, queue_url)


def receive_envelopes(session: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every SNS envelope waiting on the subscriber queue, deleted once read."""
    sqs = session.client("sqs", region_name=REGION)
    envelopes: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return envelopes
        for message in messages:
            envelopes.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def deployment_environment(deployment: Deployment, geoip: Path) -> dict[str, str]:
    """The function's environment, as template.yaml sets it for a stack named ``trailgeo-demo``."""
    return {
        "TRAIL_BUCKET": deployment.bucket,
        "TRAIL_PREFIX": "",
        "TABLE_NAME": deployment.table,
        "TOPIC_ARN": deployment.topic_arn,
        "GEOIP_DB_PATH": str(geoip),
        "LOOKBACK_MINUTES": "120",
        "SCORE_THRESHOLD": "50",
        # the template's default: the simulated trail holds management events only
        "EVENTS": "Management",
        "POWERTOOLS_SERVICE_NAME": "trailgeo-demo",
        "POWERTOOLS_METRICS_NAMESPACE": "trailgeo/trailgeo-demo",
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's AWS server on a free loopback port, with boto3 pointed at it.

    The server runs in a child process (``python -m moto.server``) rather than a thread: the
    detector and the server then use a core each instead of sharing one interpreter lock,
    which makes the demo about twice as fast.
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    try:
        _wait_for_port(port, server)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: stop it for good rather than fail the run
            server.kill()
            server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_for_port(port: int, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto server exited with code {server.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
)


def upload(session: Any, bucket: str, sim: Simulation) -> None:
    s3 = session.client("s3", region_name=REGION)

    def put(item: Any) -> None:
        s3.put_object(Bucket=bucket, Key=item.key, Body=item.body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, sim.files))


def _handler_invoker() -> Callable[[datetime], dict[str, Any]]:
    """The real Lambda entry point when run from a checkout; the same runtime otherwise."""
    app_path = Path(__file__).resolve().parents[2] / "functions" / "detector" / "app.py"
    if app_path.is_file():
        spec = importlib.util.spec_from_file_location("trailgeo_detector_app", app_path)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            event = json.loads(
                (app_path.parents[2] / "events" / "scheduled.json").read_text(encoding="utf-8")
            )
            context = _DemoContext()

            def invoke(tick: datetime) -> dict[str, Any]:
                result: dict[str, Any] = module.lambda_handler(
                    {**event, "time": tick.strftime("%Y-%m-%dT%H:%M:%SZ")}, context
                )
                return result

            return invoke
    runtime = DetectorRuntime.from_environ(os.environ)
    return lambda tick: runtime.run(tick.isoformat(), lambda: 600.0)


@dataclass(frozen=True, slots=True)
class _DemoContext:
    function_name: str = "trailgeo-detector"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:trailgeo-detector"
    aws_request_id: str = "demo"

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


def run_demo(geoip: Path, days: int = 14, seed: int = 7, out: Callable[[str], None] | None = None) -> int:
    import boto3

    out = out or partial(print, flush=True)
    if days < 9:
        out(
            "trailgeo-tools demo: --days must be at least 9 "
            "(7 days of baseline before any alert, plus the attack day)"
        )
        return 2
    geo = MaxMindGeoResolver(geoip)
    started = time.perf_counter()
    with moto_server() as endpoint:
        session = boto3.session.Session(region_name=REGION)
        deployment = provision(session)
        out(f"moto server on {endpoint}: bucket {deployment.bucket}, table {deployment.table}, topic {TOPIC}")
        out("  an SQS queue subscribed to the topic stands in for an email inbox")
        sim = simulate(SimulationConfig(start=DEMO_START, days=days, seed=seed, bucket=deployment.bucket))
        upload(session, deployment.bucket, sim)
        out(f"  wrote the trail into the bucket ({time.perf_counter() - started:.0f} s so far)")
        attack = sim.attacks[0] if sim.attacks else None
        out(
            f"simulated organization: {days} days, {sim.events_count:,} events in {len(sim.files):,} objects "
            f"(organization trail layout, digests included); GeoIP: {geo.description}"
        )
        os.environ.update(deployment_environment(deployment, geoip))
        settings = Settings.from_environ(os.environ)
        live_day = DEMO_START + timedelta(days=days - 1)

        trained = _train(settings, geo, DEMO_START, live_day)
        out(
            f"backfill of days 1-{days - 1} (alerting off, one run a day): {trained['events']:,.0f} events, "
            f"{trained['files']:,.0f} files, {trained['counters']:,.0f} counter writes, "
            f"{trained['seconds']:.1f} s"
        )
        out(f"live: invoking the Lambda handler for each 15-minute tick of {live_day:%Y-%m-%d} (UTC)")
        invoke = _handler_invoker()
        received: list[Alert] = []
        tick = live_day + TICK
        while tick <= live_day + timedelta(days=1, hours=2):
            with redirect_stdout(io.StringIO()):  # the handler's EMF metric lines, not for this screen
                summary = invoke(tick)
            for envelope in receive_envelopes(session, deployment.queue_url):
                alert = Alert.model_validate_json(envelope["Message"])
                received.append(alert)
                # What it is to a pager: a new thread, an escalation of one (it pages), an update (no page)
                kind = (
                    f"{alert.notification.upper()} of {alert.thread_id[:8]}"
                    if alert.notification != "new"
                    else "ALERT"
                )
                out(
                    f"  {tick:%H:%M}Z {kind} via SNS: {alert.country} {alert.principal} "
                    f"score {alert.score:g} ({alert.severity}) methods: {', '.join(alert.event.action)}"
                )
                out(f"         subject: {envelope.get('Subject')}")
            if summary["files_new"] and tick.minute == 0 and tick.hour % 3 == 0:
                out(
                    f"  {tick:%H:%M}Z run: {summary['files_new']} new files, {summary['events']} events, "
                    f"{summary['alerts_raised']} alerts"
                )
            tick += TICK
        for alert in received[:1]:
            out("\nWhat an email subscriber reads:\n")
            out(email_body(alert))
    return _verdict(attack, received, time.perf_counter() - started, out)


def _train(settings: Settings, geo: MaxMindGeoResolver, start: datetime, end: datetime) -> dict[str, float]:
    """Daily runs with alerting off: `trailgeo backfill` on the demo's deployment."""
    from trailgeo.app.backfill import backfill

    deps = build_dependencies(settings, geo=geo)
    summary = backfill(deps, settings.run_options(), end=end, days=(end - start) // timedelta(days=1))
    return {
        "events": summary.events,
        "files": summary.files,
        "counters": summary.counters_written,
        "seconds": summary.seconds,
    }


def _verdict(attack: Any, received: list[Alert], seconds: float, out: Callable[[str], None]) -> int:
    if attack is None:
        out(f"no attack planted; {len(received)} alert(s); {seconds:.1f} s")
        return 0
    caught = [a for a in received if a.principal == attack.principal_arn and a.country == attack.country]
    others = [a for a in received if a not in caught]
    out(
        f"planted attack: {attack.name} from {attack.country} by {attack.principal_arn}, "
        f"{attack.first_event:%H:%M}-{attack.last_event:%H:%M}Z"
    )
    if caught:
        latency = caught[0].detected_at - attack.first_event
        out(f"detected: yes, {latency.total_seconds() / 60:.0f} minutes after its first call")
    else:
        out("detected: NO")
    out(f"other alerts: {len(others)}; demo took {seconds:.1f} s")
    return 0 if caught else 1
