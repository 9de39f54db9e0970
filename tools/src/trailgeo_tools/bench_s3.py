"""The scale benchmark with S3 latency: one 15-minute window of an organization trail (by default
1,000 accounts x 17 regions, about 51,000 small files) read through the product's S3 adapter from a
stand-in S3 on 127.0.0.1 that sleeps a fixed time per request (30 ms a GET, 50 ms a LIST by default).

Two intake modes, each a real :func:`~trailgeo.app.detect.detect` run (memory store, ledger and
outbox; the S3 source is the product's ``S3LogSource`` over boto3):

* **List**: the run lists the bucket as deployed (discovery of accounts and regions, then the day
  prefixes of every region, ``LIST_CONCURRENCY`` at once), then reads the new files;
* **Notifications**: the run is handed the window's object keys, as a notification queue hands them
  over, and only GETs them. The seam is the ``LogSource`` port's ``list_window``:
  :class:`NotifiedKeys` answers it with the given keys (parsed as the listing parses them) and
  delegates ``read`` to the ``S3LogSource``, so planning, the ledger, the reads (``ReadConcurrency``
  threads), decoding, aggregation, scoring and commit are the product's own code.

Fan-out is measured per worker: the planner (in-process, memory fan-out adapters) and then each task
against the same stand-in, one after the other, and the reduce. What N workers would take side by
side is not measured here (two cores, shared).

The stand-in S3 (:func:`stand_in_s3`) is a small HTTP server in a child process over the corpus
directory, not moto's server: moto filters every key of the bucket on each LIST (its own CPU, not
the injected latency, would dominate 34,000 LISTs over 51,000 keys). It answers ListObjectsV2
(prefix, delimiter, start-after, continuation token, max-keys) and GetObject, as S3 does for the
calls the adapter makes (``tests/test_bench.py`` checks its listing against moto's), and counts
requests by type.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import multiprocessing
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from trailgeo_tools.bench_common import Corpus, DiscardSink, cached_corpus, discard_stdout, peak_rss_mb, pin

if TYPE_CHECKING:
    from trailgeo.ports import LatePrefixes, ListedWindow

# ------------------------------------------------------------------------------------------------
# The organization corpus: one file per account x region every five minutes, a few events each
# ------------------------------------------------------------------------------------------------
ORG_VERSION = 1  # bump when the recipe changes: a cached corpus is rebuilt
ORG_START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)  # a Tuesday afternoon (UTC)
ORG_ID = "o-a1b2c3d4e5"
ORG_REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "sa-east-1",
)
FULL_ACCOUNTS = 1_000  # the organization: 1,000 accounts x 17 regions, 51,000 files a window
DEFAULT_ACCOUNTS = 100  # make bench's default: 5,100 files a window (--scale-accounts 1000 for the full size)
WINDOW_SLOTS = 3  # three 5-minute deliveries: one 15-minute window
# Records a file: 1 to 5, 2.56 on average (organization trails' small files: issue 16 measured ~2.5)
EVENTS_PER_FILE = (1, 1, 2, 2, 2, 3, 3, 4, 5)
HUMAN_SHARE = 0.25
ORG_SEED = 16

BUCKET = "trailgeo-standin"
GET_MS = 30.0
LIST_MS = 50.0
READ_CONCURRENCIES = (8, 32)  # the default ReadConcurrency, and a raised one (at most 64)
NOTIFICATIONS_TARGET_SECONDS = 300.0  # one window in Notifications mode on one Lambda (issue 16)


def org_accounts(count: int) -> list[str]:
    return [f"{310000000000 + index * 7_919_113:012d}" for index in range(count)]


def org_name(accounts: int, slots: int) -> str:
    return f"org-{accounts}x{len(ORG_REGIONS)}x{slots}"


def org_key(accounts: int, slots: int) -> str:
    from trailgeo_tools import simulate as simulator

    recipe = {
        "version": ORG_VERSION,
        "start": ORG_START.isoformat(),
        "accounts": accounts,
        "regions": ORG_REGIONS,
        "slots": slots,
        "events_per_file": EVENTS_PER_FILE,
        "human_share": HUMAN_SHARE,
        "seed": ORG_SEED,
        "simulator": hashlib.sha256(Path(simulator.__file__).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def prepare_org_corpus(workdir: Path, accounts: int, slots: int, out: Callable[[str], None]) -> Corpus:
    """``accounts`` x 17 regions x ``slots`` five-minute files, generated once and reused after."""
    what = (
        f"the organization corpus ({accounts:,} accounts x {len(ORG_REGIONS)} regions x {slots} deliveries)"
    )
    return cached_corpus(
        workdir,
        org_name(accounts, slots),
        org_key(accounts, slots),
        what,
        out,
        _generate_org,
        accounts,
        slots,
    )


def _generate_org(root: str, accounts: int, slots: int) -> dict[str, Any]:
    """Deterministic: the simulator's weekday records (people and automation, every field
    CloudTrail writes) re-issued with fresh ids and times into each account and region."""
    import random

    # The window corpus's record templates (bench.py); imported here, in the generating child.
    from trailgeo_tools.bench import FULL_PLAN, _uuid, _window_templates
    from trailgeo_tools.simulate import SimulationConfig, simulate
    from trailgeo_tools.simulate import _gzip as gzip_body

    started = time.perf_counter()
    template = simulate(
        SimulationConfig(
            start=ORG_START.replace(hour=0),
            days=1,
            accounts=FULL_PLAN.accounts,
            regions=FULL_PLAN.regions,
            humans=FULL_PLAN.humans,
            automation_roles=FULL_PLAN.automation_roles,
            file_minutes=FULL_PLAN.file_minutes,
            attack=False,
        )
    )
    pools, _ = _window_templates(template)
    template_pairs = [(a, r) for a in FULL_PLAN.accounts for r in FULL_PLAN.regions]
    rng = random.Random(f"trailgeo-bench-org-{ORG_SEED}")  # noqa: S311 - a benchmark corpus
    base = Path(root)
    start = int(ORG_START.timestamp())
    files = gzip_bytes = events = 0
    made: set[Path] = set()
    names = org_accounts(accounts)
    for slot in range(slots):
        slot_start = start + slot * 300
        for number, account in enumerate(names):
            for region_number, region in enumerate(ORG_REGIONS):
                pair = template_pairs[(number + region_number) % len(template_pairs)]
                count = rng.choice(EVENTS_PER_FILE)
                stamps = sorted(slot_start + rng.randrange(300) for _ in range(count))
                records = []
                for stamp in stamps:
                    pool = pools[(*pair, rng.random() < HUMAN_SHARE)]
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
                    records.append(rng.choice(pool).format(when, _uuid(rng), _uuid(rng), account, region))
                delivered = slot_start + 300 + rng.randint(1, 5) * 60
                folder = (
                    base
                    / f"AWSLogs/{ORG_ID}/{account}/CloudTrail/{region}"
                    / time.strftime("%Y/%m/%d", time.gmtime(delivered))
                )
                if folder not in made:
                    folder.mkdir(parents=True, exist_ok=True)
                    made.add(folder)
                stamp_text = time.strftime("%Y%m%dT%H%MZ", time.gmtime(delivered))
                name = f"{account}_CloudTrail_{region}_{stamp_text}_{rng.getrandbits(64):016X}.json.gz"
                body = gzip_body(('{"Records":[' + ",".join(records) + "]}").encode())
                (folder / name).write_bytes(body)
                files += 1
                gzip_bytes += len(body)
                events += count
    config = {
        "start": ORG_START.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days": 0,
        "minutes": slots * 5,
        "accounts": len(names),
        "regions": list(ORG_REGIONS),
        "slots": slots,
        "events_per_file": list(EVENTS_PER_FILE),
        "human_share": HUMAN_SHARE,
        "seed": ORG_SEED,
    }
    return {
        "config": config,
        "events": events,
        "log_files": files,
        "gzip_bytes": gzip_bytes,
        "generated_seconds": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------------------------------------------
# The stand-in S3
# ------------------------------------------------------------------------------------------------
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_COUNTS_PATH = "/__standin/counts"


@dataclass(slots=True)
class _Bucket:
    keys: list[str]  # sorted
    bodies: dict[str, bytes]
    modified: dict[str, str]  # key -> LastModified (ISO 8601)
    get_seconds: float
    list_seconds: float
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] += 1


def load_bucket(root: Path, get_ms: float, list_ms: float) -> _Bucket:
    """Every file under ``root`` as an object named by its relative path; LastModified is the
    delivery time in the name (when CloudTrail wrote it), else the file's own time."""
    from trailgeo.core.keys import parse_key

    bodies: dict[str, bytes] = {}
    modified: dict[str, str] = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        key = path.relative_to(root).as_posix()
        bodies[key] = path.read_bytes()
        delivered = parse_key(key).delivered_at
        moment = delivered if delivered is not None else datetime.fromtimestamp(path.stat().st_mtime, UTC)
        modified[key] = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return _Bucket(sorted(bodies), bodies, modified, get_ms / 1000, list_ms / 1000)


def list_objects_v2(bucket: _Bucket, query: dict[str, str]) -> str:
    """The ListObjectsV2 answer (XML) for ``query``, as S3 gives it for these parameters."""
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    max_keys = max(0, min(1000, int(query.get("max-keys", "1000"))))
    after = query.get("continuation-token") or query.get("start-after", "")
    keys = bucket.keys
    position = bisect.bisect_left(keys, prefix)
    if after:
        position = max(position, bisect.bisect_right(keys, after))
    contents: list[str] = []
    prefixes: list[str] = []
    last = ""
    truncated = False
    while position < len(keys) and keys[position].startswith(prefix):
        if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
        key = keys[position]
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common = key[: cut + len(delimiter)]
            prefixes.append(common)
            last = common
            # past every key under this common prefix (the next key that does not start with it)
            position = bisect.bisect_left(keys, common[:-1] + chr(ord(common[-1]) + 1))
            continue
        contents.append(key)
        last = key
        position += 1
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{_XMLNS}">']
    parts.append(f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix>")
    if delimiter:
        parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
    parts.append(f"<MaxKeys>{max_keys}</MaxKeys><KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
    parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if truncated:
        parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
    if query.get("start-after"):
        parts.append(f"<StartAfter>{escape(query['start-after'])}</StartAfter>")
    parts.extend(
        f"<Contents><Key>{escape(key)}</Key><LastModified>{bucket.modified[key]}</LastModified>"
        f'<ETag>"{_etag(key)}"</ETag>'
        f"<Size>{len(bucket.bodies[key])}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        for key in contents
    )
    parts.extend(f"<CommonPrefixes><Prefix>{escape(common)}</Prefix></CommonPrefixes>" for common in prefixes)
    parts.append("</ListBucketResult>")
    return "".join(parts)


def _etag(key: str) -> str:
    return hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()


def _handler(bucket: _Bucket) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: boto3's pooled connections are reused
        # Headers and body are two writes: with Nagle's algorithm the second waits for the client's
        # delayed ACK (40 ms on Linux), which would add to every request's injected latency.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - the base class's
            return

        def _send(
            self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, kind: str) -> None:
            bucket.count(f"{kind} {code}")
            body = (
                f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code><Message>{code}</Message>"
            )
            body += "</Error>"
            self._send(status, body.encode(), "application/xml")

        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            split = urlsplit(self.path)
            if split.path == _COUNTS_PATH:
                with bucket.lock:
                    body = json.dumps(dict(bucket.counts)).encode()
                    if split.query == "reset":
                        bucket.counts.clear()
                self._send(200, body, "application/json")
                return
            path = unquote(split.path).lstrip("/")
            name, _, key = path.partition("/")
            query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            if name != BUCKET:
                self._error(404, "NoSuchBucket", "other")
                return
            if not key and query.get("list-type") == "2":
                time.sleep(bucket.list_seconds)
                bucket.count("ListObjectsV2")
                self._send(200, list_objects_v2(bucket, query).encode(), "application/xml")
                return
            if not key:
                self._error(400, "NotImplemented", "other")
                return
            time.sleep(bucket.get_seconds)
            found = bucket.bodies.get(key)
            if found is None:
                self._error(404, "NoSuchKey", "GetObject")
                return
            bucket.count("GetObject")
            self._send(200, found, "binary/octet-stream", {"ETag": f'"{_etag(key)}"'})

        do_HEAD = do_GET  # noqa: N815 - not used by the adapter; answered like a GET without a body

    return Handler


def _serve(root: str, get_ms: float, list_ms: float, cores: Sequence[int] | None, ready: Any) -> None:
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cores))
    bucket = load_bucket(Path(root), get_ms, list_ms)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(bucket))
    server.daemon_threads = True
    server.request_queue_size = 128
    ready.send((server.server_address[1], len(bucket.keys)))
    ready.close()
    server.serve_forever()


@contextmanager
def stand_in_s3(
    root: Path, get_ms: float = GET_MS, list_ms: float = LIST_MS, cores: Sequence[int] | None = None
) -> Iterator[str]:
    """The stand-in S3 over ``root`` in a child process (on ``cores`` when given): its endpoint
    URL while the block runs; stopped after it."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_serve, args=(str(root), get_ms, list_ms, cores, send), daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(600):
            raise RuntimeError("the stand-in S3 did not start")
        port, _ = receive.recv()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.join(10)


def request_counts(endpoint: str, *, reset: bool = False) -> dict[str, int]:
    """The stand-in's requests by type since its start (or the last reset); ``reset`` clears them."""
    url = endpoint + _COUNTS_PATH + ("?reset" if reset else "")
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own loopback server
        counts: dict[str, int] = json.loads(response.read())
    return counts


def s3_client(endpoint: str, max_pool_connections: int) -> Any:
    """boto3's S3 client as the detector builds it (wiring.CLIENT_CONFIG), pointed at the stand-in."""
    import boto3

    from trailgeo.app.wiring import CLIENT_CONFIG

    # botocore's Config class, through the detector's own (tooling imports boto3, not botocore)
    config = CLIENT_CONFIG.merge(
        type(CLIENT_CONFIG)(s3={"addressing_style": "path"}, max_pool_connections=max_pool_connections)
    )
    session = boto3.session.Session(
        aws_access_key_id="standin",
        aws_secret_access_key="standin",  # noqa: S106 - the stand-in checks no signature
        region_name="us-east-1",
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


# ------------------------------------------------------------------------------------------------
# Notifications mode: the run handed the window's keys
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class NotifiedKeys:
    """A ``LogSource`` whose ``list_window`` answers with the keys it was handed (what a
    notification queue hands a run) instead of listing; ``read`` is the S3 source's own."""

    source: Any  # S3LogSource
    keys: Sequence[str]

    def list_window(
        self,
        start: datetime,  # noqa: ARG002 - the port's
        end: datetime,  # noqa: ARG002
        late: LatePrefixes | None = None,  # noqa: ARG002
    ) -> ListedWindow:
        from trailgeo.core.keys import KeyKind, parse_key
        from trailgeo.ports import ListedWindow, LogObject

        window = ListedWindow()
        for key in self.keys:
            parsed = parse_key(key)
            if parsed.kind is not KeyKind.LOG or parsed.delivered_at is None:
                window.skipped[f"key_{parsed.kind.value}"] += 1
                continue
            window.objects.append(LogObject(parsed.key, parsed.delivered_at, 0, parsed.account))
        return window

    def read(self, key: str) -> bytes:
        data: bytes = self.source.read(key)
        return data


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class WindowRun:
    mode: str  # "List" or "Notifications"
    read_concurrency: int
    files: int
    events: int
    seconds: float  # wall time of the run
    cpu_seconds: float  # the detector process's CPU time during it
    list_seconds: float  # of which the listing (List mode) or taking the keys (Notifications)
    requests: dict[str, int]
    peak_rss_mb: float
    counters: int


def _window_end(keys: Sequence[str]) -> datetime:
    from trailgeo.core.keys import parse_key

    return max(d for key in keys if (d := parse_key(key).delivered_at) is not None)


def measure_window_run(
    endpoint: str, keys: list[str], geoip: str, mode: str, read_concurrency: int, core: int | None
) -> WindowRun:
    """One ``detect`` over the window through the S3 source: listing (List) or handed ``keys``."""
    from dataclasses import replace

    from trailgeo.adapters.aws import S3LogSource
    from trailgeo.adapters.geoip import MaxMindGeoResolver
    from trailgeo.app.detect import RunOptions, detect
    from trailgeo.app.wiring import memory_dependencies

    pin(core)
    discard_stdout()
    end = _window_end(keys)
    s3 = S3LogSource(s3_client(endpoint, max(32, read_concurrency + 4)), BUCKET)
    source: Any = s3 if mode == "List" else NotifiedKeys(s3, keys)
    timed = _TimedListing(source)
    deps = memory_dependencies(
        source=timed, geo=MaxMindGeoResolver(Path(geoip)), sink=DiscardSink(), clock=lambda: end
    )
    options = replace(RunOptions(), read_concurrency=read_concurrency)
    request_counts(endpoint, reset=True)
    cpu, started = time.process_time(), time.perf_counter()
    report = detect(end, deps, options)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return WindowRun(
        mode=mode,
        read_concurrency=read_concurrency,
        files=report.files_read,
        events=report.events,
        seconds=seconds,
        cpu_seconds=cpu,
        list_seconds=timed.seconds,
        requests=request_counts(endpoint),
        peak_rss_mb=peak_rss_mb(),
        counters=report.counters_written,
    )


@dataclass(slots=True)
class _TimedListing:
    source: Any
    seconds: float = 0.0

    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:
        started = time.perf_counter()
        try:
            listed: ListedWindow = self.source.list_window(start, end, late)
            return listed
        finally:
            self.seconds += time.perf_counter() - started

    def read(self, key: str) -> bytes:
        data: bytes = self.source.read(key)
        return data


@dataclass(slots=True)
class FanoutRun:
    mode: str
    files: int
    events: int
    tasks: int
    plan_seconds: float
    task_seconds: list[float] = field(default_factory=list)
    reduce_seconds: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)  # the planner's, then the tasks'
    plan_requests: dict[str, int] = field(default_factory=dict)


def measure_fanout_run(
    endpoint: str, keys: list[str], geoip: str, mode: str, read_concurrency: int, core: int | None
) -> FanoutRun:
    """Fan-out over the window against the stand-in: the planner (listing, or handed the keys), each
    task one after the other (a worker's wall time), then the reduce (merge, score, commit)."""
    from dataclasses import replace

    from trailgeo.adapters.aws import S3LogSource
    from trailgeo.adapters.geoip import MaxMindGeoResolver
    from trailgeo.adapters.memory import MemoryFanoutTracker, MemoryPartialStore, MemoryTaskQueue
    from trailgeo.app import fanout as fan
    from trailgeo.app.detect import RunOptions
    from trailgeo.app.wiring import memory_dependencies
    from trailgeo.core.records import gc_paused
    from trailgeo_tools.bench_scale import FILES_PER_TASK

    pin(core)
    discard_stdout()
    end = _window_end(keys)
    s3 = S3LogSource(s3_client(endpoint, max(32, read_concurrency + 4)), BUCKET)
    source: Any = s3 if mode == "List" else NotifiedKeys(s3, keys)
    deps = memory_dependencies(
        source=source, geo=MaxMindGeoResolver(Path(geoip)), sink=DiscardSink(), clock=lambda: end
    )
    options = replace(RunOptions(), read_concurrency=read_concurrency)
    fanout = fan.Fanout(
        MemoryTaskQueue(), MemoryPartialStore(), MemoryFanoutTracker(), files_per_task=FILES_PER_TASK
    )
    request_counts(endpoint, reset=True)
    started = time.perf_counter()
    fan.plan(end, deps, options, fanout)
    run = FanoutRun(mode=mode, files=0, events=0, tasks=0, plan_seconds=time.perf_counter() - started)
    run.plan_requests = request_counts(endpoint)
    tasks = fanout.queue.drain()  # type: ignore[attr-defined]
    run.tasks = len(tasks)
    held: dict[str, Any] = {}
    for task in tasks:  # each batch's reduce is held, then timed apart below
        fanout.tracker.reducers[task.run_id] = ("benchmark", end + timedelta(days=1))  # type: ignore[attr-defined]
        held[task.run_id] = task
    for task in tasks:
        started = time.perf_counter()
        result = fan.run_task(task, deps, options, fanout)
        run.task_seconds.append(time.perf_counter() - started)
        run.files += result.files_read
        run.events += result.events
    started = time.perf_counter()
    for task in held.values():
        with gc_paused():
            aggregate, outcomes, report = fan.merge_partials(task, deps, options, fanout.partials)
            from trailgeo.app.detect import finish_batch

            finish_batch(aggregate, outcomes, task.run_id, task.scheduled_at, deps, options, report)
    run.reduce_seconds = time.perf_counter() - started
    run.requests = request_counts(endpoint)
    return run


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class ScaleReport:
    corpus: Corpus
    get_ms: float
    list_ms: float
    runs: list[WindowRun] = field(default_factory=list)
    fanout: list[FanoutRun] = field(default_factory=list)

    @property
    def events_agree(self) -> bool:
        return all(r.events == self.corpus.events for r in self.runs) and all(
            f.events == self.corpus.events for f in self.fanout
        )

    def notifications_seconds(self) -> float | None:
        """The best single-Lambda Notifications figure among the read concurrencies measured."""
        times = [r.seconds for r in self.runs if r.mode == "Notifications"]
        return min(times) if times else None


def log_keys(root: Path) -> list[str]:
    from trailgeo.core.keys import KeyKind, parse_key

    return sorted(
        key
        for path in root.rglob("*")
        if path.is_file() and parse_key(key := path.relative_to(root).as_posix()).kind is KeyKind.LOG
    )


def run_scale(
    workdir: Path,
    geoip: Path,
    accounts: int,
    out: Callable[[str], None],
    *,
    core: int | None,
    get_ms: float = GET_MS,
    list_ms: float = LIST_MS,
    concurrencies: Sequence[int] = READ_CONCURRENCIES,
    fanout: bool = True,
) -> ScaleReport:
    """Generate (or reuse) the window, start the stand-in S3 on the other cores, and measure each
    mode, one child process each (pinned to ``core``)."""
    from trailgeo_tools.bench_common import in_child

    corpus = prepare_org_corpus(workdir, accounts, WINDOW_SLOTS, out)
    report = ScaleReport(corpus=corpus, get_ms=get_ms, list_ms=list_ms)
    origin = "reused" if corpus.reused else f"generated in {corpus.generated_seconds:.0f} s"
    out(
        f"  window {corpus.root} ({origin}): {corpus.events:,} events in {corpus.log_files:,} files "
        f"({corpus.gzip_bytes / 1e6:,.1f} MB gzip, "
        f"{corpus.events / max(1, corpus.log_files):.2f} events a file): "
        f"{accounts:,} accounts x {len(ORG_REGIONS)} regions x {WINDOW_SLOTS} five-minute deliveries"
    )
    keys = log_keys(corpus.root)
    others = sorted(set(os.sched_getaffinity(0)) - {core}) if hasattr(os, "sched_getaffinity") else None
    with stand_in_s3(corpus.root, get_ms, list_ms, others or None) as endpoint:
        out(
            f"  stand-in S3 on {endpoint}: {get_ms:.0f} ms a GET, {list_ms:.0f} ms a LIST, "
            f"on CPU {','.join(map(str, others or [])) or 'any'}; the detector pinned to CPU {core}"
        )
        out(
            f"  {'mode':<34}{'files':>8}{'events':>9}{'wall s':>9}{'CPU s':>8}{'list s':>8}"
            f"{'files/s':>9}  requests"
        )
        for concurrency in concurrencies:
            for mode in ("List", "Notifications"):
                run = in_child(measure_window_run, endpoint, keys, str(geoip), mode, concurrency, core)
                report.runs.append(run)
                out(window_run_line(run))
        if fanout:
            for mode in ("List", "Notifications"):
                fan = in_child(measure_fanout_run, endpoint, keys, str(geoip), mode, concurrencies[0], core)
                report.fanout.append(fan)
                out(fanout_run_line(fan, concurrencies[0]))
    best = report.notifications_seconds()
    if best is not None:
        verdict = "PASS" if best < NOTIFICATIONS_TARGET_SECONDS else "MISS"
        out(
            f"  one window in Notifications mode on one Lambda: {best:,.1f} s for {corpus.log_files:,} files "
            f"(target < {NOTIFICATIONS_TARGET_SECONDS:.0f} s at 51,000 files): {verdict}"
            + (
                ""
                if accounts == FULL_ACCOUNTS
                else f" (measured at {accounts:,} accounts, not the full size)"
            )
        )
    return report


def _requests(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items())) or "none"


def window_run_line(r: WindowRun) -> str:
    label = f"{r.mode}, single Lambda, ReadConcurrency {r.read_concurrency}"
    return (
        f"  {label:<34}{r.files:>8,}{r.events:>9,}{r.seconds:>9.1f}{r.cpu_seconds:>8.1f}"
        f"{r.list_seconds:>8.1f}"
        f"{r.files / max(r.seconds, 1e-9):>9,.0f}  {_requests(r.requests)}"
    )


def fanout_run_line(f: FanoutRun, concurrency: int) -> str:
    tasks = sorted(f.task_seconds)
    median = tasks[len(tasks) // 2] if tasks else 0.0
    return (
        f"  {f.mode}, fan-out (per worker, ReadConcurrency {concurrency}): planner {f.plan_seconds:.1f} s "
        f"({_requests(f.plan_requests)}); {f.tasks} tasks of up to 200 files, each alone: median "
        f"{median:.2f} s, longest {max(tasks, default=0.0):.2f} s, {sum(tasks):.1f} s in all; reduce "
        f"{f.reduce_seconds:.2f} s; {f.files:,} files, {f.events:,} events; requests {_requests(f.requests)}"
    )
