"""``trailgeo-tools eval``: our detector against two reference detectors, scored on planted incidents.

Three detectors read the same simulated trail (``trailgeo_tools.simulate``):

* **trailgeo**: :func:`trailgeo.app.replay.replay` with default :class:`RunOptions`, a tick every
  15 minutes over the delivered files, every alert collected. Replayed a second time in continuous
  mode (``CONTINUOUS_WINDOW``: an event-driven run a batching window after each delivery, beside
  the ticks), reported apart (``continuous``): the same figures, the latency above all.
* **first-seen**: one organization-wide table of ``(eventSource:eventName, country)`` pairs. The
  first 7 days of data (by event time) only fill it; afterwards every pair never seen before, by
  anyone, raises one alert with the principal of the event that introduced it. The rule runs every
  15 minutes over the files delivered since its last run: ``detected_at`` is the first 15-minute
  tick at or after the file's delivery time.
* **elastic-approx**: an approximation of Elastic's anomaly-detection job
  ``rare_method_for_a_country`` (``function: rare``, ``by_field_name: event.action`` (the bare
  ``eventName``), ``partition_field_name: source.geo.country_iso_code``, ``bucket_span: 60m``) and
  of the detection rule over it (anomaly threshold 50, runs every 15 minutes). Per country, a
  categorical model of actions counts **bucket presence**: an action seen in a 60-minute bucket is
  one observation, however many calls it had. Observations decay by ``exp(-0.0005)`` per bucket,
  Elastic's default model decay for a 60-minute bucket span, applied with forward decay. A country
  model scores only once it has seen 20 buckets (Elastic's documented minimum), so **a country
  with no history never scores** (a partition without a model has no anomaly records). Each
  bucket is scored against the model before it, then added to the model.

  Score: Elastic's ``rare`` reports the "probability of less likely categories". With ``n_j`` the
  decayed bucket observations of action ``j`` in the country, ``N = sum n_j`` and a
  Dirichlet-process prior of concentration ``theta = 1`` (the mass of unseen categories), an
  action seen ``n_a`` times has ``p_tail = (theta + sum_{j: n_j <= n_a} n_j) / (N + theta)``, and
  one never seen in the country ``theta / (N + theta)``. The record score maps ``p_tail``
  log-linearly between two anchors taken from Elastic's ml-cpp (``maths/CTools.h``):
  ``LARGEST_SIGNIFICANT_PROBABILITY = 0.05``, above which a record is not anomalous at all (its
  deviation is 0), scores 0, and ``SMALL_PROBABILITY = 1e-4``, "deemed significantly anomalous",
  scores 100::

      score = 100 * log(0.05 / p_tail) / log(0.05 / 1e-4), clamped to [0, 100]

  so the rule's threshold of 50 is ``p_tail <= 0.05 / sqrt(500) = 0.0022``. Why this mapping:
  Elastic turns ``-log(p)`` into a 0-100 record score (``CTools::deviation``, then a
  renormalisation against the job's own past scores that cannot be reproduced without its
  history); what must hold is that probabilities above 0.05 never alert and that the score grows
  with ``-log(p)``. ``100 * (1 - p_tail)`` (trailgeo's own scale, where the categories are a
  method's few countries) is not faithful here: over a country's hundreds of actions, any action
  in the long tail of a Zipf-like mix has ``p_tail < 0.5`` and would alert in every bucket it
  appears in (measured: over a thousand records a day on the simulation), whereas Elastic would
  not report those records at all. A never-seen action in a country with ``N`` observations
  scores >= 50 once ``N >= 447``: a country model sees tens of actions per active bucket, so
  that is a few days of an office country, and longer for a country of one traveller.
  One alert per anomalous (bucket, country, action) record with score >= 50, as Elastic's rule
  raises one per record; its principal is the record's top ``user.name`` influencer (the principal
  with the most calls of that action from that country in the bucket), ``detected_at`` is the
  bucket's end + 15 minutes.

The reference detectors read only events from public source IPs (``classify_source``), located
with the same :class:`GeoResolver` as ours, duplicates (same ``eventID``) dropped. So an attack
through another account's VPC endpoint (the simulator's ``stolen-key-via-foreign-vpc-endpoint``,
whose incident ``country`` is the location ``VPCE:<account>`` trailgeo scores it from) counts as
an attack to detect that they cannot see.

Metrics come from the ground truth's ``incidents`` (see the simulator): an alert matches an
incident when account, principal (one of ``principal_arns``) and country are equal and the
alert's event-time range overlaps ``[first_event - 1 h, last_event + 1 h]``.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from trailgeo.adapters.local import LocalLogSource
from trailgeo.app.detect import RunOptions
from trailgeo.core.aggregate import principal_of
from trailgeo.core.alerts import Alert
from trailgeo.core.payload import UnreadablePayloadError, decompress
from trailgeo.core.records import MalformedFileError, decode_trail_file
from trailgeo.core.sources import SourceKind, classify_source
from trailgeo.ports import GeoResolver

DETECTORS = ("trailgeo", "first-seen", "elastic-approx")
TICK_SECONDS = 15 * 60
BUCKET_SECONDS = 3600
MATCH_SLACK = timedelta(hours=1)
LEARNING_DAYS = 7
BENIGN_KINDS = ("travel", "new_hire", "crossover")
ALLOWED_BENIGN = frozenset({"travel", "new_hire"})  # at most one alert each: a target of its own
EVAL_START = datetime(2026, 10, 5, tzinfo=UTC)  # the simulated window when eval_config is absent
LATENCY_TARGET_MINUTES = 30.0
# The severities that page the on-call (the enterprise's ">= high"): the ablation's figures.
_HIGH = frozenset({"high", "critical"})
# Continuous mode's batching window (template parameter ContinuousBatchingWindow's default), and its
# target: the median attack detected within 2 minutes of its first file's delivery.
CONTINUOUS_WINDOW = timedelta(seconds=60)
CONTINUOUS_TARGET_MINUTES = 2.0
FALSE_PER_DAY_TARGET = 0.1

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# ------------------------------------------------------------------------------------------------
# What the detectors produce and what the ground truth holds
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Detection:
    """One alert of any detector, reduced to what matching and metrics need."""

    detector: str
    account: str
    principal: str
    country: str
    methods: tuple[str, ...]
    first_event: datetime
    last_event: datetime
    detected_at: datetime
    score: float
    # An update of an earlier alert of the same incident (trailgeo's re-alert on a sensitive
    # method within the suppression window): a notification, but not a new incident thread.
    follows: str | None = None
    alert_id: str = ""
    # An alert sent inside another's incident notification (core/incidents.py): the carrier's id.
    # Matched to its own incident (recall), never counted as a notification of its own.
    member_of: str | None = None
    # trailgeo's severity with each ablation variant's evidence factors (enterprise_eval's
    # ablation_variants: "all", "rarity alone", "without <factor>"); empty for the references.
    severities: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_alert(cls, alert: Alert) -> Detection:
        detected = alert.detected_at.astimezone(UTC)
        first = parse_time(alert.first_event_time) or detected
        last = parse_time(alert.last_event_time) or first
        methods = tuple(m.method for m in alert.methods) or tuple(alert.event.action)
        return cls(
            "trailgeo",
            alert.cloud.account.id,
            alert.principal,
            alert.country,
            methods,
            first,
            last,
            detected,
            alert.score,
            # A re-alert, or a quiet update of an incident: sent in an earlier alert's thread.
            alert.thread_id if alert.thread_id != alert.alert_id else None,
            alert.alert_id,
        )

    @property
    def notification(self) -> bool:
        return self.member_of is None

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "principal": self.principal,
            "country": self.country,
            "methods": list(self.methods),
            "first_event": iso(self.first_event),
            "last_event": iso(self.last_event),
            "detected_at": iso(self.detected_at),
            "score": round(self.score, 2),
            "follows": self.follows,
            "alert_id": self.alert_id,
            "member_of": self.member_of,
        }


def detections_of(alert: Alert) -> list[Detection]:
    """An alert's detection, then one for each incident member it carries (each matched to the
    planted incident it belongs to; the notification counted once, as the carrier). A member of the
    carrier's own subject (its re-alert, sent inside it after waiting to settle) is an update of it,
    as it would have been sent alone."""
    from trailgeo_tools.enterprise_eval import variant_severities  # it imports this module

    by_variant = variant_severities(alert)
    carrier = replace(Detection.from_alert(alert), severities={v: s[0] for v, s in by_variant.items()})
    members = alert.incident.members if alert.incident is not None else []
    subject = (carrier.account, carrier.principal, alert.location)
    return [
        carrier,
        *(
            replace(
                carrier,
                account=m.account,
                principal=m.principal,
                country=m.location,
                methods=tuple(m.methods),
                first_event=parse_time(m.first_event_time) or carrier.first_event,
                last_event=parse_time(m.last_event_time) or carrier.last_event,
                score=m.score,
                follows=alert.alert_id if (m.account, m.principal, m.location) == subject else None,
                alert_id=m.alert_id,
                member_of=alert.alert_id,
                severities={v: s[k + 1] for v, s in by_variant.items()},
            )
            for k, m in enumerate(members)
        ),
    ]


@dataclass(frozen=True, slots=True)
class Incident:
    """One planted episode of the ground truth (``incidents`` in ground-truth.json)."""

    id: str
    kind: str  # "attack" | "travel" | "new_hire" | "crossover"
    scenario: str
    account_id: str
    principal_arns: frozenset[str]
    country: str
    first_event: datetime
    last_event: datetime
    first_delivery: datetime | None = None
    country_new_to_org: bool = False
    country_new_to_principal: bool = False
    events: int = 0
    description: str = ""

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Incident:
        first = parse_time(str(item["first_event"]))
        last = parse_time(str(item["last_event"]))
        if first is None or last is None:
            raise ValueError(f"incident {item.get('id')}: bad first_event/last_event")
        delivery = item.get("first_delivery")
        return cls(
            id=str(item["id"]),
            kind=str(item["kind"]),
            scenario=str(item.get("scenario", item["id"])),
            account_id=str(item["account_id"]),
            principal_arns=frozenset(str(a) for a in item["principal_arns"]),
            country=str(item["country"]),
            first_event=first,
            last_event=last,
            first_delivery=parse_time(str(delivery)) if delivery else None,
            country_new_to_org=bool(item.get("country_new_to_org", False)),
            country_new_to_principal=bool(item.get("country_new_to_principal", False)),
            events=int(item.get("events", 0)),
            description=str(item.get("description", "")),
        )

    @property
    def new_country(self) -> bool:
        return self.country_new_to_org or self.country_new_to_principal


@dataclass(frozen=True, slots=True)
class Principals:
    """Who is who in the simulated organization, for the cause of a false alert."""

    humans: frozenset[str] = frozenset()
    automation: frozenset[str] = frozenset()

    @classmethod
    def from_truth(cls, truth: Mapping[str, Any]) -> Principals:
        return cls(
            humans=frozenset(a for h in truth.get("humans", []) for a in h.get("arns", [])),
            automation=frozenset(a for r in truth.get("automation", []) for a in r.get("arns", [])),
        )

    def cause(self, principal: str) -> str:
        if principal in self.automation:
            return "automation_role"
        if principal in self.humans:
            return "human"
        if (
            not principal.startswith("arn:")
            or ":assumed-role/AWSServiceRole" in principal
            or ":role/aws-service-role/" in principal
            or "amazonaws.com" in principal
        ):
            return "service"
        return "unknown_principal"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


# ------------------------------------------------------------------------------------------------
# Our detector
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class ListAlertSink:
    """Keeps every published alert in a list, and the run that sent each (``stamp``)."""

    alerts: list[Alert] = field(default_factory=list)
    sent_at: list[datetime] = field(default_factory=list)

    def publish(self, alert: Alert) -> str:
        self.alerts.append(alert)
        return f"list-{len(self.alerts)}"

    def stamp(self, at: datetime) -> None:
        """The alerts published since the last stamp went out in the run at ``at`` (a replay's
        ``on_tick``)."""
        self.sent_at.extend([at] * (len(self.alerts) - len(self.sent_at)))

    def as_received(self) -> list[Alert]:
        """Every alert as the team got it, ``detected_at`` the run that sent it: a first
        notification below the paging severity waits a run to settle (app/detect/publish.py), and
        the latency figures count from when it went out, not from when it was detected."""
        unstamped = (a.detected_at for a in self.alerts[len(self.sent_at) :])
        return [
            a if a.detected_at == at else a.model_copy(update={"detected_at": at})
            for a, at in zip(self.alerts, [*self.sent_at, *unstamped], strict=True)
        ]


def run_trailgeo(
    logs: Path,
    geo: GeoResolver,
    options: RunOptions | None = None,
    *,
    report: Path | None = None,
    title: str = "trailgeo replay",
    continuous: timedelta | None = None,
) -> list[Detection]:
    """Replay the tree tick by tick with the production code; every alert, in publication order.
    ``report``: write the replay there as an HTML page (``trailgeo replay --report``'s).
    ``continuous``: in continuous mode, with this batching window."""
    from trailgeo.app.replay import html_report, replay

    sink = ListAlertSink()
    summary, state = replay(
        logs,
        geo,
        sink,
        options or RunOptions(),
        on_tick=lambda r: sink.stamp(r.scheduled_at),
        continuous=continuous,
    )
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(html_report(summary, state, sink.alerts, title=title), encoding="utf-8")
    return [d for a in sink.as_received() for d in detections_of(a)]


# ------------------------------------------------------------------------------------------------
# The events the reference detectors read
# ------------------------------------------------------------------------------------------------
class TrailEvent(NamedTuple):
    delivered_at: int  # epoch seconds of the file's delivery
    event_time: int  # epoch seconds
    account: str
    principal: str
    country: str
    method: str  # eventSource:eventName
    action: str  # eventName (Elastic's event.action)


class _TimeParser:
    """``YYYY-MM-DDTHH:MM:SS...`` to epoch seconds, one ``datetime`` per distinct day."""

    def __init__(self) -> None:
        self._days: dict[str, int | None] = {}

    def __call__(self, value: str | None) -> int | None:
        if not value or len(value) < 19 or value[10] != "T":
            return None
        day = value[:10]
        midnight = self._days.get(day, -1)
        if midnight == -1:
            try:
                midnight = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
            except ValueError:
                midnight = None
            self._days[day] = midnight
        if midnight is None:
            return None
        try:
            return midnight + int(value[11:13]) * 3600 + int(value[14:16]) * 60 + int(value[17:19])
        except ValueError:
            return None


def read_events(logs: Path, geo: GeoResolver) -> list[TrailEvent]:
    """Every geolocated event of the tree, in delivery order (files by delivery time, then key)."""
    source = LocalLogSource(logs)
    times = source.delivery_times
    if not times:
        return []
    window = source.list_window(times[0] - timedelta(seconds=1), times[-1])
    parse = _TimeParser()
    located: dict[str, str | None] = {}
    seen_ids: set[int] = set()
    interned: dict[str, str] = {}
    methods: dict[tuple[str, str], str] = {}
    events: list[TrailEvent] = []
    for obj in window.objects:
        try:
            decoded = decode_trail_file(decompress(source.read(obj.key), name=obj.key))
        except (UnreadablePayloadError, MalformedFileError):
            continue
        delivered = int(obj.delivered_at.timestamp())
        for record in decoded.records:
            if record.eventID:
                digest = hash(record.eventID)
                if digest in seen_ids:
                    continue
                seen_ids.add(digest)
            address = record.sourceIPAddress or ""
            country = located.get(address, "?")
            if country == "?":
                kind, ip = classify_source(address)
                country = geo.country(ip) if kind is SourceKind.PUBLIC and ip is not None else None
                located[address] = country
            if country is None or not record.eventSource or not record.eventName:
                continue
            event_time = parse(record.eventTime)
            if event_time is None:
                continue
            method = methods.get((record.eventSource, record.eventName))
            if method is None:
                method = methods[(record.eventSource, record.eventName)] = (
                    f"{record.eventSource}:{record.eventName}"
                )
            principal = principal_of(record)
            principal = interned.setdefault(principal, principal)
            identity = record.userIdentity
            account = record.recipientAccountId or (identity.accountId if identity else None) or obj.account
            account = interned.setdefault(account or "unknown", account or "unknown")
            events.append(
                TrailEvent(delivered, event_time, account, principal, country, method, record.eventName)
            )
    return events


# ------------------------------------------------------------------------------------------------
# Reference A: first-seen (method, country)
# ------------------------------------------------------------------------------------------------
def first_seen(events: Sequence[TrailEvent], learning_days: float = LEARNING_DAYS) -> list[Detection]:
    """One alert per organization-wide (method, country) pair first seen after the learning period.

    ``events`` in delivery order. The learning period is the first ``learning_days`` of data by
    event time, from the UTC midnight of the earliest event.
    """
    if not events:
        return []
    start = min(e.event_time for e in events) // 86400 * 86400
    learning_end = start + int(learning_days * 86400)
    seen: set[tuple[str, str]] = set()
    alerts: list[Detection] = []
    for event in sorted(events, key=lambda e: e.delivered_at):  # stable: file order kept
        pair = (event.method, event.country)
        if pair in seen:
            continue
        seen.add(pair)
        if event.event_time < learning_end:
            continue
        tick = -(-event.delivered_at // TICK_SECONDS) * TICK_SECONDS
        moment = _dt(event.event_time)
        alerts.append(
            Detection(
                "first-seen",
                event.account,
                event.principal,
                event.country,
                (event.method,),
                moment,
                moment,
                _dt(tick),
                100.0,
            )
        )
    return alerts


# ------------------------------------------------------------------------------------------------
# Reference B: Elastic's rare_method_for_a_country, approximated
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ElasticSettings:
    bucket_seconds: int = BUCKET_SECONDS
    min_buckets: int = 20  # buckets a country model must have seen before it scores
    threshold: float = 50.0
    theta: float = 1.0
    decay_per_bucket: float = 0.0005  # Elastic's model decay for a 60-minute bucket span
    rule_delay: timedelta = timedelta(minutes=15)  # the rule runs every 15 minutes


@dataclass(slots=True)
class CountryModel:
    """Decayed bucket-presence counts of each action in one country (forward decay)."""

    weights: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    buckets: int = 0

    def p_tail(self, action: str, theta_now: float) -> float:
        """Probability that the next observation is at most as likely as ``action``."""
        count = self.weights.get(action, 0.0)
        less_likely = 0.0 if count == 0.0 else sum(w for w in self.weights.values() if w <= count)
        return (theta_now + less_likely) / (self.total + theta_now)

    def add(self, actions: Iterable[str], weight: float) -> None:
        for action in actions:
            self.weights[action] = self.weights.get(action, 0.0) + weight
            self.total += weight
        self.buckets += 1


SIGNIFICANT_PROBABILITY = 0.05  # ml-cpp LARGEST_SIGNIFICANT_PROBABILITY: above it, no anomaly
SMALL_PROBABILITY = 1e-4  # ml-cpp SMALL_PROBABILITY: "significantly anomalous"


def record_score(p_tail: float) -> float:
    """The 0-100 record score of a ``p_tail`` (see the module docstring)."""
    if p_tail >= SIGNIFICANT_PROBABILITY:
        return 0.0
    if p_tail <= SMALL_PROBABILITY:
        return 100.0
    return (
        100.0
        * math.log(SIGNIFICANT_PROBABILITY / p_tail)
        / math.log(SIGNIFICANT_PROBABILITY / SMALL_PROBABILITY)
    )


@dataclass(slots=True)
class _Record:
    """All calls of one action from one country in one bucket."""

    first: int
    last: int
    methods: set[str] = field(default_factory=set)
    callers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (account, principal)


def elastic_rare(events: Sequence[TrailEvent], settings: ElasticSettings | None = None) -> list[Detection]:
    """Anomaly records of ``rare`` by action, partitioned by country, one alert per record >= threshold."""
    cfg = settings or ElasticSettings()
    if not events:
        return []
    buckets: dict[int, dict[str, dict[str, _Record]]] = defaultdict(lambda: defaultdict(dict))
    for e in events:
        records = buckets[e.event_time // cfg.bucket_seconds][e.country]
        record = records.get(e.action)
        if record is None:
            record = records[e.action] = _Record(e.event_time, e.event_time)
        elif e.event_time < record.first:
            record.first = e.event_time
        elif e.event_time > record.last:
            record.last = e.event_time
        record.methods.add(e.method)
        record.callers[(e.account, e.principal)] += 1
    first_bucket = min(buckets)
    models: dict[str, CountryModel] = defaultdict(CountryModel)
    alerts: list[Detection] = []
    for bucket in sorted(buckets):
        weight = math.exp(cfg.decay_per_bucket * (bucket - first_bucket))  # forward decay
        theta_now = cfg.theta * weight
        bucket_end = _dt((bucket + 1) * cfg.bucket_seconds)
        for country, records in sorted(buckets[bucket].items()):
            model = models[country]
            if model.buckets >= cfg.min_buckets:
                for action, record in sorted(records.items()):
                    score = record_score(model.p_tail(action, theta_now))
                    if score < cfg.threshold:
                        continue
                    (account, principal), _ = max(record.callers.items(), key=lambda kv: (kv[1], kv[0]))
                    alerts.append(
                        Detection(
                            "elastic-approx",
                            account,
                            principal,
                            country,
                            tuple(sorted(record.methods)),
                            _dt(record.first),
                            _dt(record.last),
                            bucket_end + cfg.rule_delay,
                            score,
                        )
                    )
            model.add(records, weight)
    return alerts


# ------------------------------------------------------------------------------------------------
# Ground truth
# ------------------------------------------------------------------------------------------------
def incidents_from_truth(truth: Mapping[str, Any], sim: Any = None) -> list[Incident]:
    """``truth["incidents"]``; for an older simulator, the planted ``attacks`` turned into incidents.

    ``sim`` (a :class:`trailgeo_tools.simulate.Simulation`) lets the fallback find each attack's first
    delivery; without it ``first_delivery`` is unknown.
    """
    if "incidents" in truth:
        return [Incident.from_json(item) for item in truth["incidents"]]
    homes = set(truth.get("benign_countries", []))
    incidents = []
    for number, attack in enumerate(truth.get("attacks", [])):
        first = parse_time(attack["first_event"])
        last = parse_time(attack["last_event"])
        if first is None or last is None:
            continue
        delivery = _first_delivery(sim, set(attack.get("event_ids", [])), first) if sim is not None else None
        new = attack["country"] not in homes
        incidents.append(
            Incident(
                id="attack-recon-new-country" if number == 0 else f"attack-{number + 1}",
                kind="attack",
                scenario="stolen-key-recon-new-country",
                account_id=attack["account_id"],
                principal_arns=frozenset([attack["principal_arn"]]),
                country=attack["country"],
                first_event=first,
                last_event=last,
                first_delivery=delivery,
                country_new_to_org=new,
                country_new_to_principal=new,
                events=len(attack.get("event_ids", [])),
                description=str(attack.get("name", "")),
            )
        )
    return incidents


def _first_delivery(sim: Any, event_ids: set[str], first: datetime) -> datetime | None:
    import gzip

    for f in sim.log_files:
        if f.delivered_at < first:
            continue
        records = json.loads(gzip.decompress(f.body))["Records"]
        if any(r.get("eventID") in event_ids for r in records):
            return f.delivered_at  # type: ignore[no-any-return]
    return None


# ------------------------------------------------------------------------------------------------
# Matching and metrics
# ------------------------------------------------------------------------------------------------
def matches(alert: Detection, incident: Incident, slack: timedelta = MATCH_SLACK) -> bool:
    return (
        alert.account == incident.account_id
        and alert.principal in incident.principal_arns
        and alert.country == incident.country
        and alert.first_event <= incident.last_event + slack
        and alert.last_event >= incident.first_event - slack
    )


def _minutes(later: datetime, earlier: datetime | None) -> float | None:
    return None if earlier is None else round((later - earlier).total_seconds() / 60, 1)


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def evaluate(
    alerts: Sequence[Detection],
    incidents: Sequence[Incident],
    *,
    days: float,
    principals: Principals | None = None,
    learning_days: float = LEARNING_DAYS,
) -> dict[str, Any]:
    """Every figure of one detector on one simulation, as a JSON-ready dictionary."""
    who = principals or Principals()
    attacks = [i for i in incidents if i.kind == "attack"]
    benign = [i for i in incidents if i.kind != "attack"]
    matched_attack = [[a for a in attacks if matches(alert, a)] for alert in alerts]
    per_attack: list[dict[str, Any]] = []
    for incident in attacks:
        hits = sorted((al for al in alerts if matches(al, incident)), key=lambda al: al.detected_at)
        first_hit = hits[0].detected_at if hits else None
        per_attack.append(
            {
                "id": incident.id,
                "scenario": incident.scenario,
                "country": incident.country,
                "country_new_to_org": incident.country_new_to_org,
                "country_new_to_principal": incident.country_new_to_principal,
                "detected": bool(hits),
                "alerts": sum(1 for al in hits if al.follows is None),  # incident threads
                "updates": sum(1 for al in hits if al.follows is not None),
                "latency_from_first_event_min": _minutes(first_hit, incident.first_event)
                if first_hit
                else None,
                "latency_from_first_delivery_min": (
                    _minutes(first_hit, incident.first_delivery) if first_hit else None
                ),
            }
        )
    # A notification is false when neither it nor any incident member it carries is an attack's.
    carrying_attacks = {al.member_of for al, hit in zip(alerts, matched_attack, strict=True) if hit}
    false_alerts = [
        al
        for al, hit in zip(alerts, matched_attack, strict=True)
        if al.notification and not hit and al.alert_id not in carrying_attacks
    ]
    causes: Counter[str] = Counter()
    for al in false_alerts:
        kinds = [i.kind for i in benign if matches(al, i)]
        causes[next((k for k in BENIGN_KINDS if k in kinds), None) or who.cause(al.principal)] += 1
    benign_stats: dict[str, dict[str, Any]] = {}
    for kind in sorted({i.kind for i in benign} | set(BENIGN_KINDS)):
        counts = [
            sum(1 for al in alerts if al.follows is None and matches(al, i)) for i in benign if i.kind == kind
        ]
        benign_stats[kind] = {
            "incidents": len(counts),
            "max_alerts": max(counts) if counts else None,
            "mean_alerts": round(statistics.fmean(counts), 3) if counts else None,
            "alerts": sum(counts),
        }
    new_country = [r for r in per_attack if r["country_new_to_org"] or r["country_new_to_principal"]]
    detected = [r for r in per_attack if r["detected"]]
    post_learning_days = max(0.0, days - learning_days)
    # Trips and new hires are allowed one alert each (their own target); the rest is noise.
    noise = sum(n for cause, n in causes.items() if cause not in ALLOWED_BENIGN)
    return {
        "alerts_total": sum(1 for al in alerts if al.notification),
        "alert_updates": sum(1 for al in alerts if al.notification and al.follows is not None),
        "alerts_linked": sum(1 for al in alerts if not al.notification),
        "noise_alerts": noise,
        "noise_alerts_per_day": round(noise / post_learning_days, 3) if post_learning_days else None,
        "attacks": per_attack,
        "attack_incidents": len(per_attack),
        "attacks_detected": len(detected),
        "attack_recall": _ratio(len(detected), len(per_attack)),
        "new_country_attacks": len(new_country),
        "new_country_detected": sum(1 for r in new_country if r["detected"]),
        "new_country_recall": _ratio(sum(1 for r in new_country if r["detected"]), len(new_country)),
        "new_country_detected_within_30_min": sum(
            1
            for r in new_country
            if r["detected"]
            and r["latency_from_first_delivery_min"] is not None
            and r["latency_from_first_delivery_min"] <= LATENCY_TARGET_MINUTES
        ),
        "alerts_on_attacks": sum(r["alerts"] for r in per_attack),
        "alerts_per_detected_attack": (
            round(statistics.fmean(r["alerts"] for r in detected), 3) if detected else None
        ),
        "max_alerts_per_attack": max((r["alerts"] for r in per_attack), default=None),
        "false_alerts": len(false_alerts),
        "post_learning_days": post_learning_days,
        "false_alerts_per_day": (
            round(len(false_alerts) / post_learning_days, 3) if post_learning_days else None
        ),
        "false_alerts_by_cause": dict(sorted(causes.items())),
        "benign": benign_stats,
        "ablation": severity_ablation(alerts, matched_attack, attacks),
    }


def severity_ablation(
    alerts: Sequence[Detection], matched: Sequence[Sequence[Incident]], attacks: Sequence[Incident]
) -> dict[str, dict[str, int]]:
    """For each ablation variant of trailgeo's alerts (``Detection.severities``): the attack
    incidents with an alert at >= high, and the alerts at >= high, those on an attack among them
    (each incident member counted as the alert it is). Empty for the references."""
    variants = sorted({v for al in alerts for v in al.severities})
    out: dict[str, dict[str, int]] = {}
    for variant in variants:
        high = [
            (al, hit) for al, hit in zip(alerts, matched, strict=True) if al.severities.get(variant) in _HIGH
        ]
        out[variant] = {
            "attacks_high": sum(1 for a in attacks if any(a in hit for _, hit in high)),
            "alerts_high": len(high),
            "alerts_high_on_attacks": sum(1 for _, hit in high if hit),
        }
    return out


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The figures of one detector summed over seeds (ratios recomputed from the sums)."""
    total = {
        key: sum(m[key] for m in per_seed)
        for key in (
            "alerts_total",
            "attack_incidents",
            "attacks_detected",
            "new_country_attacks",
            "new_country_detected",
            "new_country_detected_within_30_min",
            "alerts_on_attacks",
            "false_alerts",
            "post_learning_days",
            "alert_updates",
            "noise_alerts",
        )
    }
    total |= {  # figures an older result may lack
        key: sum(m.get(key, 0) for m in per_seed) for key in ("alerts_linked",)
    }
    attacks = [r for m in per_seed for r in m["attacks"]]
    detected = [r for r in attacks if r["detected"]]
    causes: Counter[str] = Counter()
    for m in per_seed:
        causes.update(m["false_alerts_by_cause"])
    benign: dict[str, dict[str, Any]] = {}
    for kind in sorted({k for m in per_seed for k in m["benign"]}):
        stats = [m["benign"][kind] for m in per_seed if kind in m["benign"]]
        count = sum(s["incidents"] for s in stats)
        maxima = [s["max_alerts"] for s in stats if s["max_alerts"] is not None]
        benign[kind] = {
            "incidents": count,
            "max_alerts": max(maxima) if maxima else None,
            "mean_alerts": round(sum(s["alerts"] for s in stats) / count, 3) if count else None,
            "alerts": sum(s["alerts"] for s in stats),
        }
    latencies = [r["latency_from_first_delivery_min"] for r in detected]
    return {
        **total,
        "seeds": len(per_seed),
        "attack_recall": _ratio(total["attacks_detected"], total["attack_incidents"]),
        "new_country_recall": _ratio(total["new_country_detected"], total["new_country_attacks"]),
        "alerts_per_detected_attack": (
            round(statistics.fmean(r["alerts"] for r in detected), 3) if detected else None
        ),
        "max_alerts_per_attack": max((r["alerts"] for r in attacks), default=None),
        "false_alerts_per_day": (
            round(total["false_alerts"] / total["post_learning_days"], 3)
            if total["post_learning_days"]
            else None
        ),
        "noise_alerts_per_day": (
            round(total["noise_alerts"] / total["post_learning_days"], 3)
            if total["post_learning_days"]
            else None
        ),
        "false_alerts_by_cause": dict(sorted(causes.items())),
        "benign": benign,
        "median_latency_from_first_delivery_min": statistics.median(latencies) if latencies else None,
        "max_latency_from_first_delivery_min": max(latencies) if latencies else None,
        "detected_by_scenario": dict(sorted(Counter(r["scenario"] for r in detected).items())),
        "attacks_by_scenario": dict(sorted(Counter(r["scenario"] for r in attacks).items())),
        "ablation": {
            variant: {
                key: sum(m.get("ablation", {}).get(variant, {}).get(key, 0) for m in per_seed)
                for key in ("attacks_high", "alerts_high", "alerts_high_on_attacks")
            }
            for variant in sorted({v for m in per_seed for v in m.get("ablation", {})})
        },
    }


def targets(figures: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our targets, checked on the aggregate figures of every detector."""
    ours = figures["trailgeo"]
    refs = {name: figures[name] for name in DETECTORS[1:] if name in figures}
    results = []

    def add(name: str, passed: bool, value: str) -> None:
        results.append({"target": name, "passed": passed, "value": value})

    new, within = ours["new_country_attacks"], ours["new_country_detected_within_30_min"]
    add(
        "100% recall of attacks from a country new to the org or to the principal, "
        "within 30 min of first_delivery",
        new > 0 and within == new,
        f"{within}/{new} within 30 min ({ours['new_country_detected']}/{new} detected at all)",
    )
    most = ours["max_alerts_per_attack"]
    add("<= 1 alert per attack incident", most is not None and most <= 1, f"max {most}")
    benign_max = [
        ours["benign"][k]["max_alerts"]
        for k in ("travel", "new_hire")
        if ours["benign"].get(k, {}).get("max_alerts") is not None
    ]
    add(
        "<= 1 alert per benign trip / new hire",
        all(m <= 1 for m in benign_max),
        f"max {max(benign_max)}" if benign_max else "no such incidents",
    )
    per_day = ours["noise_alerts_per_day"]
    add(
        "<= 0.1 false alerts per day beyond the one allowed per trip / new hire",
        per_day is not None and per_day <= FALSE_PER_DAY_TARGET,
        f"{per_day} per day ({ours['noise_alerts']} over {ours['post_learning_days']:g} days; "
        f"all false alerts incl. trips and hires: {ours['false_alerts_per_day']} per day)",
    )
    add(
        "fewer total alerts than both references",
        all(ours["alerts_total"] < r["alerts_total"] for r in refs.values()),
        ", ".join(
            [f"trailgeo {ours['alerts_total']}", *(f"{n} {r['alerts_total']}" for n, r in refs.items())]
        ),
    )
    recall = ours["attack_recall"] or 0.0
    add(
        "higher attack recall than either reference",
        all(recall > (r["attack_recall"] or 0.0) for r in refs.values()),
        ", ".join(
            [f"trailgeo {_pct(recall)}", *(f"{n} {_pct(r['attack_recall'])}" for n, r in refs.items())]
        ),
    )
    return results


# ------------------------------------------------------------------------------------------------
# Running everything on one simulation
# ------------------------------------------------------------------------------------------------
def evaluation_config(seed: int, days: int) -> Any:
    """``simulate.eval_config`` when the simulator has it, else the default organization."""
    from trailgeo_tools import simulate

    factory: Callable[..., Any] | None = getattr(simulate, "eval_config", None)
    if factory is not None:
        return factory(seed, days=days)
    return simulate.SimulationConfig(start=EVAL_START, days=days, seed=seed)


def evaluate_simulation(
    sim: Any,
    geo: GeoResolver,
    *,
    workdir: Path | None = None,
    progress: Progress = _quiet,
    report: Path | None = None,
) -> dict[str, Any]:
    """Write ``sim``'s tree, run the three detectors, score them. ``sim``: a Simulation.
    ``report``: trailgeo's replay written there as an HTML page."""
    from trailgeo_tools.simulate import write_tree

    truth = sim.ground_truth()
    incidents = incidents_from_truth(truth, sim)
    days = float(sim.config.days)
    who = Principals.from_truth(truth)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp) / "trail"
        started = time.perf_counter()
        write_tree(sim, root)
        progress(f"  wrote {len(sim.files):,} objects ({time.perf_counter() - started:.1f} s)")
        started = time.perf_counter()
        title = f"trailgeo evaluation: seed {sim.config.seed}, {sim.config.days} days"
        ours = run_trailgeo(root, geo, report=report, title=title)
        progress(f"  trailgeo replay: {len(ours)} alerts ({time.perf_counter() - started:.1f} s)")
        started = time.perf_counter()
        continuous = run_trailgeo(root, geo, continuous=CONTINUOUS_WINDOW)
        progress(
            f"  trailgeo replay, continuous: {len(continuous)} alerts ({time.perf_counter() - started:.1f} s)"
        )
        if report is not None:
            progress(f"  report: {report}")
        started = time.perf_counter()
        events = read_events(root, geo)
        seconds = time.perf_counter() - started
        progress(f"  read {len(events):,} geolocated events for the references ({seconds:.1f} s)")
    started = time.perf_counter()
    detections = {"trailgeo": ours, "first-seen": first_seen(events), "elastic-approx": elastic_rare(events)}
    progress(
        f"  first-seen: {len(detections['first-seen'])} alerts, elastic-approx: "
        f"{len(detections['elastic-approx'])} alerts ({time.perf_counter() - started:.1f} s)"
    )
    return {
        "seed": sim.config.seed,
        "days": sim.config.days,
        "start": iso(sim.config.start),
        "events": sim.events_count,
        "geolocated_events": len(events),
        "incidents": [
            {
                "id": i.id,
                "kind": i.kind,
                "scenario": i.scenario,
                "country": i.country,
                "first_event": iso(i.first_event),
                "first_delivery": iso(i.first_delivery),
                "country_new_to_org": i.country_new_to_org,
                "country_new_to_principal": i.country_new_to_principal,
            }
            for i in incidents
        ],
        "detectors": {
            name: {
                **evaluate(found, incidents, days=days, principals=who),
                "alerts": [a.as_json() for a in found],
            }
            for name, found in detections.items()
        },
        "continuous": {
            **evaluate(continuous, incidents, days=days, principals=who),
            "alerts": [a.as_json() for a in continuous],
        },
    }


def run_evaluation(
    geo: GeoResolver,
    seeds: Sequence[int],
    days: int,
    *,
    progress: Progress = _quiet,
    make_config: Callable[[int, int], Any] | None = None,
    report_dir: Path | None = None,
) -> dict[str, Any]:
    """Simulate each seed, evaluate it; the per-seed figures, the aggregate and the targets.

    ``make_config(seed, days)`` gives each simulation's config (default :func:`evaluation_config`).
    ``report_dir``: trailgeo's replay of each seed written there as ``report-seed<N>.html``.
    """
    from trailgeo_tools.simulate import simulate

    configure = make_config or evaluation_config
    reports = []
    for seed in seeds:
        started = time.perf_counter()
        sim = simulate(configure(seed, days))
        progress(
            f"seed {seed}: simulated {sim.config.days} days, {sim.events_count:,} events "
            f"({time.perf_counter() - started:.1f} s)"
        )
        report = report_dir / f"report-seed{seed}.html" if report_dir is not None else None
        reports.append(evaluate_simulation(sim, geo, progress=progress, report=report))
    overall = {name: aggregate([r["detectors"][name] for r in reports]) for name in DETECTORS}
    continuous = aggregate([r["continuous"] for r in reports])
    return {
        "seeds": reports,
        "aggregate": overall,
        "continuous": continuous,
        "targets": [*targets(overall), continuous_target(continuous)],
    }


def continuous_target(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Continuous mode's target (issue 16): the median attack detected within 2 minutes of the
    delivery of its first file."""
    median = figures["median_latency_from_first_delivery_min"]
    return {
        "target": "continuous mode: median detection within 2 min of the first file's delivery",
        "passed": median is not None and median <= CONTINUOUS_TARGET_MINUTES,
        "value": f"median {_num(median)} min, max {_num(figures['max_latency_from_first_delivery_min'])} min "
        f"({figures['attacks_detected']}/{figures['attack_incidents']} detected)",
    }


# ------------------------------------------------------------------------------------------------
# The printed report
# ------------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == int(value) or abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _attack_cell(row: Mapping[str, Any]) -> str:
    if not row["detected"]:
        return "missed"
    event = row["latency_from_first_event_min"]
    delivery = row["latency_from_first_delivery_min"]
    return f"{_num(event)}m/{_num(delivery)}m x{row['alerts']}"


def _table(rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    width = max(len(label) for label, _ in rows)
    cols = [max(len(DETECTORS[i]), *(len(cells[i]) for _, cells in rows)) for i in range(len(DETECTORS))]
    header = "  ".join([" " * width, *(d.rjust(w) for d, w in zip(DETECTORS, cols, strict=True))])
    lines = [header]
    for label, cells in rows:
        lines.append("  ".join([label.ljust(width), *(c.rjust(w) for c, w in zip(cells, cols, strict=True))]))
    return lines


def _summary_rows(figures: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    def row(label: str, get: Callable[[Mapping[str, Any]], str]) -> tuple[str, list[str]]:
        return label, [get(figures[d]) for d in DETECTORS]

    rows = [
        row(
            "attack recall",
            lambda m: f"{_pct(m['attack_recall'])} ({m['attacks_detected']}/{m['attack_incidents']})",
        ),
        row(
            "recall, country new to org/principal",
            lambda m: (
                f"{_pct(m['new_country_recall'])} ({m['new_country_detected']}/{m['new_country_attacks']})"
            ),
        ),
        row(
            "  of which within 30 min of delivery",
            lambda m: f"{m['new_country_detected_within_30_min']}/{m['new_country_attacks']}",
        ),
        row("alerts per detected attack (mean)", lambda m: _num(m["alerts_per_detected_attack"])),
        row("max alerts on one attack", lambda m: _num(m["max_alerts_per_attack"])),
        row("  + updates (sensitive re-alerts, incident updates)", lambda m: str(m["alert_updates"])),
        row("  + alerts sent inside an incident", lambda m: str(m.get("alerts_linked", 0))),
        row("false alerts", lambda m: str(m["false_alerts"])),
        row("false alerts per day (after learning)", lambda m: _num(m["false_alerts_per_day"])),
        row("  outside trips/new hires, per day", lambda m: _num(m["noise_alerts_per_day"])),
    ]
    causes = sorted({c for d in DETECTORS for c in figures[d]["false_alerts_by_cause"]})
    rows.extend(
        (f"  cause: {c}", [str(figures[d]["false_alerts_by_cause"].get(c, 0)) for d in DETECTORS])
        for c in causes
    )
    kinds = sorted({k for d in DETECTORS for k, s in figures[d]["benign"].items() if s["incidents"]})
    rows.extend(
        (
            f"alerts per {k} incident (max/mean, n={figures['trailgeo']['benign'][k]['incidents']})",
            [
                f"{_num(figures[d]['benign'][k]['max_alerts'])}/{_num(figures[d]['benign'][k]['mean_alerts'])}"
                for d in DETECTORS
            ],
        )
        for k in kinds
    )
    rows.append(row("total alerts (updates included)", lambda m: str(m["alerts_total"])))
    return rows


def format_report(result: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for seed in result["seeds"]:
        figures = seed["detectors"]
        lines.append(
            f"== seed {seed['seed']}: {seed['days']} days from {seed['start']}, {seed['events']:,} events "
            f"({seed['geolocated_events']:,} geolocated), {len(seed['incidents'])} incidents =="
        )
        rows: list[tuple[str, Sequence[str]]] = []
        for incident in seed["incidents"]:
            if incident["kind"] != "attack":
                continue
            flags = (
                "new-org"
                if incident["country_new_to_org"]
                else ("new-principal" if incident["country_new_to_principal"] else "known")
            )
            cells = []
            for d in DETECTORS:
                found = next(r for r in figures[d]["attacks"] if r["id"] == incident["id"])
                cells.append(_attack_cell(found))
            rows.append((f"{incident['id']} ({incident['country']}, {flags})", cells))
        if rows:
            lines.append("attacks (latency from first event / from first delivery, x alerts):")
            lines.extend(_table(rows))
        lines.extend(_table(_summary_rows(figures)))
        lines.append("")
    lines.append(f"== aggregate over {len(result['seeds'])} seed(s) ==")
    overall = result["aggregate"]
    lines.extend(_table(_summary_rows(overall)))
    lines.append(
        "latency from first delivery (median/max, min): "
        + ", ".join(
            f"{d} {_num(overall[d]['median_latency_from_first_delivery_min'])}/"
            f"{_num(overall[d]['max_latency_from_first_delivery_min'])}"
            for d in DETECTORS
        )
    )
    continuous = result.get("continuous")
    if continuous is not None:
        window = int(CONTINUOUS_WINDOW.total_seconds())
        lines.append(
            f"latency from first delivery (median/max, min), continuous mode ({window} s batching window): "
            f"trailgeo {_num(continuous['median_latency_from_first_delivery_min'])}/"
            f"{_num(continuous['max_latency_from_first_delivery_min'])}; "
            f"recall {_pct(continuous['attack_recall'])} "
            f"({continuous['attacks_detected']}/{continuous['attack_incidents']}), "
            f"false alerts per day {_num(continuous['false_alerts_per_day'])}"
        )
    lines.extend(_ablation_lines(overall["trailgeo"]))
    lines.append("")
    failed = 0
    for target in result["targets"]:
        verdict = "PASS" if target["passed"] else "FAIL"
        failed += not target["passed"]
        lines.append(f"TARGET {verdict}: {target['target']}: {target['value']}")
    total = len(result["targets"])
    lines.append(
        f"targets: {total - failed}/{total} passed"
        + (f", {failed} FAILED (see FAIL lines)" if failed else "")
    )
    return "\n".join(lines)


def _ablation_lines(figures: Mapping[str, Any]) -> list[str]:
    """trailgeo's severity ablation (attacks at >= high, precision at >= high), as the enterprise's."""
    ablation = figures.get("ablation") or {}
    if not ablation:
        return []
    lines = ["ablation (severity recomputed; attacks with an alert at >= high / precision at >= high):"]
    attacks = figures["attack_incidents"]
    for variant in ("all", "rarity alone", *sorted(v for v in ablation if v.startswith("without "))):
        row = ablation.get(variant)
        if row is None:
            continue
        high, on_attacks = row["alerts_high"], row["alerts_high_on_attacks"]
        precision = f"{on_attacks / high:.3g} ({on_attacks}/{high})" if high else "None (0/0)"
        lines.append(f"  {variant:<28} {row['attacks_high']}/{attacks}  {precision}")
    return lines


def write_json(result: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
