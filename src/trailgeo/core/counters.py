"""Frequency counters: hourly bucket presence, forward-decayed weight, events, first/last seen.

Each counter (a method in a country, a principal in a country, a long-term access key in a
country, the organization in a country, and the totals of each) counts the hours in which it
occurred, as Elastic's ``rare`` function does: a burst of 10,000 calls in one hour is one observation.

Two properties make counting exactly-once without transactions across items:

* **Presence is idempotent.** A counter keeps the hour buckets it counted recently; an hour
  already in that set adds no observation again, however many runs or late files see it.
* **Runs are idempotent.** Each commit carries the id of the run (batch of files) it comes
  from, and a counter remembers the ids of its recent runs; a recovered run that re-applies
  its batch after a crash changes nothing it already changed.

Decay uses forward decay (Cormode et al., ICDE 2009): an observation in hour ``h`` is stored
with weight ``2 ** ((h - EPOCH_HOUR) / half_life)``, so adding stays commutative and the
decayed count at hour ``t`` is ``wsum * 2 ** (-(t - EPOCH_HOUR) / half_life)``.

That weight grows without bound with ``h``: one record dated 2099 would outweigh decades of real
history. So no hour past the run is ever counted: an event is accepted only within its file's
delivery window (``event_hours``), which ends an hour after the run's scheduled time at the
latest. Hours outside are refused, not clamped: a clamped hour would weigh what the run that first
saw it decided, and two runs seeing it in a different order would store different sums. Refused,
every weight stored stays a function of its hour alone, and adding stays commutative and idempotent.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache

from trailgeo.core.identities import identity_digest, role_of

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
EPOCH_HOUR = int(EPOCH.timestamp()) // 3600
# Elastic's anomaly detection decays by 0.0005 per 60-minute bucket: half-life ln2/0.0005 h.
DEFAULT_HALF_LIFE_HOURS = 1386.0
# Hours kept for the presence check; must exceed look-back plus the latest delivery we accept.
RECENT_HOURS_KEPT = 72
RECENT_RUNS_KEPT = 32

ORG_PARTITION = "ORG"
TOTAL = "TOTAL"
# Sibling detectors (off unless configured): each principal's methods, the organization's methods
# (a roll-up of every method's TOTAL: one item holding the whole distribution) and error codes.
ORG_METHODS = "OM"
ORG_ERRORS = "OE"
ORG_CITIES = "OC"
# The organization's own egress on hosting addresses (a VPN gateway on a cloud instance): one
# category per address, recorded when colleagues for whom its country is usual share it in a run.
ORG_EGRESS = "OX"
# Per country (``C#<country>``), the hours of calls held at the organization's learned egress there:
# taken out of what its identities vouch for (the gateway's country is not where its users are).
ORG_EGRESS_HOURS = "OXH"
ORG_ERROR_LEVELS = "OS"  # the organization's hourly error levels (error_spike)
ROLLUPS = frozenset({ORG_METHODS})


# Every counter partition: per method, principal, access key, user's methods, method's and
# principal's cities (prefixes), and the organization's own (whole names).
METHOD_PARTITION_PREFIX = "M#"
PRINCIPAL_PARTITION_PREFIX = "P#"
USER_METHODS_PARTITION_PREFIX = "U#"
CLIENTS_PARTITION_PREFIX = "UA#"  # an identity's client families (core/clients.py), for new_client
SENSITIVE_PARTITION_PREFIX = "SM#"  # an identity's sensitive methods (core/sensitive.py), for the factor
HOURS_PARTITION_PREFIX = "HR#"  # a person's local hours of the week (core/local_time.py), for unusual_hour
SIGN_INS_PARTITION_PREFIX = "SI#"  # a person's networks of sign-ins with a security key (core/sign_ins.py)
# An Identity Center user's sign-ins with any factor, by country and autonomous system: where their
# sessions began (core/sign_ins.sign_in_places), for session_elsewhere
SESSION_SIGN_INS_PARTITION_PREFIX = "SS#"
# A person's calls from access networks in countries usual for them, by country (the counters'
# recent hours): concurrent_use across runs, whichever run read the other country's calls
PRESENCE_PARTITION_PREFIX = "PA#"
IDENTITY_INDEX_PREFIX = "I#"
ERROR_LEVELS_PARTITION_PREFIX = "ES#"  # an identity's hourly error levels (error_spike)
COUNTER_PREFIXES = (
    METHOD_PARTITION_PREFIX,
    PRINCIPAL_PARTITION_PREFIX,
    "K#",
    USER_METHODS_PARTITION_PREFIX,
    CLIENTS_PARTITION_PREFIX,
    SENSITIVE_PARTITION_PREFIX,
    HOURS_PARTITION_PREFIX,
    SIGN_INS_PARTITION_PREFIX,
    SESSION_SIGN_INS_PARTITION_PREFIX,
    PRESENCE_PARTITION_PREFIX,
    "MC#",
    "PC#",
    IDENTITY_INDEX_PREFIX,
    ERROR_LEVELS_PARTITION_PREFIX,
)
ORG_LEVEL_PARTITIONS = frozenset(
    {ORG_PARTITION, ORG_METHODS, ORG_ERRORS, ORG_CITIES, ORG_EGRESS, ORG_EGRESS_HOURS, ORG_ERROR_LEVELS}
)


def is_counter_partition(partition: str) -> bool:
    return partition.startswith(COUNTER_PREFIXES) or partition in ORG_LEVEL_PARTITIONS


def method_partition(method: str) -> str:
    return METHOD_PARTITION_PREFIX + method


def identity_index_partition(country: str) -> str:
    """The identities seen calling from one country (a TOTAL whose categories are identity
    digests): one identity calling every hour must not make a country look common."""
    return IDENTITY_INDEX_PREFIX + country


def principal_partition(principal: str) -> str:
    return PRINCIPAL_PARTITION_PREFIX + principal


def user_methods_partition(identity: str) -> str:
    return USER_METHODS_PARTITION_PREFIX + identity


def clients_partition(identity: str) -> str:
    return CLIENTS_PARTITION_PREFIX + identity


def sensitive_partition(identity: str) -> str:
    return SENSITIVE_PARTITION_PREFIX + identity


def hours_partition(identity: str) -> str:
    return HOURS_PARTITION_PREFIX + identity


def sign_ins_partition(identity: str) -> str:
    return SIGN_INS_PARTITION_PREFIX + identity


def session_sign_ins_partition(identity: str) -> str:
    return SESSION_SIGN_INS_PARTITION_PREFIX + identity


def presence_partition(identity: str) -> str:
    return PRESENCE_PARTITION_PREFIX + identity


def error_levels_partition(identity: str) -> str:
    return ERROR_LEVELS_PARTITION_PREFIX + identity


# The error spike's categories: how many errors an identity got in one hour, as an order of
# magnitude. A counter keeps hourly presence, never a tally (CounterDelta): the magnitude is kept
# as which level was present in an hour, so that counting stays idempotent, and a flood of errors
# or of made-up error codes adds one of these few categories, never more.
ERROR_LEVELS = ("0", "1-9", "10-99", "100-999", "1000-9999", "10000+")


def error_level(errors: int) -> str:
    """The level of an hour's error count: ``0``, then one per power of ten, ``10000+`` the last."""
    if errors <= 0:
        return ERROR_LEVELS[0]
    return ERROR_LEVELS[min(len(str(errors)), len(ERROR_LEVELS) - 1)]


def method_cities_partition(method: str) -> str:
    return f"MC#{method}"


def principal_cities_partition(identity: str) -> str:
    return f"PC#{identity}"


def category_sort_key(value: str) -> str:
    """A category counter under its partition: a country, a method, an error code."""
    return f"C#{value}"


def access_key_partition(access_key_id: str) -> str:
    return f"K#{access_key_id}"


def is_long_term_key(access_key_id: str | None) -> bool:
    """IAM users' long-term keys (``AKIA``) live for months: worth a history of their own.
    Temporary ``ASIA`` keys live for one session and would only bloat the table."""
    return access_key_id is not None and access_key_id.startswith("AKIA")


def country_sort_key(country: str) -> str:
    return f"C#{country}"


# CloudTrail began in 2013; anything outside these years is not a real event time (and a year
# like 9999 would overflow the forward-decay weight).
_FIRST_YEAR, _LAST_YEAR = 2005, 2100
MAX_EVENT_TIME_CHARS = 40


def hour_of(event_time: str) -> int | None:
    """Hours since the Unix epoch of a CloudTrail ``eventTime`` (``2021-07-29T23:53:26Z``)."""
    if not 13 <= len(event_time) <= MAX_EVENT_TIME_CHARS or event_time[10] != "T":
        return None
    return _hour_of_prefix(event_time[:13])  # the rest of the text says nothing of the hour


# Hours worked out once per process for the most recent hour prefixes (``2021-07-29T23``: 13
# characters, a few dozen a run): scoring asks for the same first-seen hours for every group.
@lru_cache(maxsize=4096)
def _hour_of_prefix(event_time: str) -> int | None:
    if not _FIRST_YEAR <= (int(event_time[0:4]) if event_time[0:4].isdigit() else 0) <= _LAST_YEAR:
        return None
    try:
        stamp = datetime(
            int(event_time[0:4]),
            int(event_time[5:7]),
            int(event_time[8:10]),
            int(event_time[11:13]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return int(stamp.timestamp()) // 3600


# CloudTrail delivers a record "within an average of about 5 minutes" of the call, not guaranteed,
# and "a log file delivered at a specific time can contain records written at any point before
# that time" (AWS CloudTrail User Guide). A day before the delivery in the file's name covers late
# deliveries (S3LogSource picks up files landing up to a day late too); an hour after it covers
# clock skew. Anything else in a file is no CloudTrail record of that delivery.
EVENT_HOURS_BEFORE_DELIVERY = 24
EVENT_HOURS_AFTER_DELIVERY = 1
ANY_HOUR = (0, 1 << 62)  # no window: aggregates fed records without their files (tests, tools)


def event_hours(delivered: datetime | None, scheduled: datetime) -> tuple[int, int]:
    """The first and last hour (since the Unix epoch) in which a file's events are counted: from
    ``EVENT_HOURS_BEFORE_DELIVERY`` before its delivery (the time in its name) to
    ``EVENT_HOURS_AFTER_DELIVERY`` after, the delivery taken as the run's scheduled time when the
    name has none or names a later time (no hour past the run: see the module's docstring)."""
    run = int(scheduled.timestamp()) // 3600
    delivery = run if delivered is None else min(int(delivered.timestamp()) // 3600, run)
    return delivery - EVENT_HOURS_BEFORE_DELIVERY, delivery + EVENT_HOURS_AFTER_DELIVERY


def decay_weight(hour: int, half_life_hours: float) -> float:
    return float(2.0 ** ((hour - EPOCH_HOUR) / half_life_hours))


@dataclass(slots=True)
class CounterDelta:
    """What one run observed for one counter: the hours it was present in, first and last time.

    No event tally: every number a counter keeps is idempotent under re-delivery. The same event
    in two files read by different runs (two trails into one bucket) adds no hour and moves no
    time; a tally would count it twice, and could only be made exact by storing every eventID.
    """

    hours: set[int] = field(default_factory=set)
    first_seen: str | None = None
    last_seen: str | None = None

    def observe(self, hour: int, event_time: str) -> None:
        self.observe_hours((hour,), event_time, event_time)

    def observe_hours(self, hours: Iterable[int], first: str, last: str) -> None:
        self.hours.update(hours)
        if self.first_seen is None or first < self.first_seen:
            self.first_seen = first
        if self.last_seen is None or last > self.last_seen:
            self.last_seen = last


@dataclass(frozen=True, slots=True)
class CounterState:
    """A counter as stored. ``version`` guards optimistic concurrent updates."""

    buckets: int = 0
    wsum: float = 0.0
    first_seen: str | None = None
    last_seen: str | None = None
    recent_hours: tuple[int, ...] = ()
    recent_runs: tuple[str, ...] = ()
    version: int = 0
    # On TOTAL counters only: each country's (buckets, wsum) as last seen on its own counter, so
    # that one read of the TOTAL item gives the whole distribution (no partition query).
    countries: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    def decayed_buckets(self, at_hour: int, half_life_hours: float) -> float:
        return self.wsum / decay_weight(at_hour, half_life_hours)


EMPTY = CounterState()


def merge(
    state: CounterState,
    delta: CounterDelta,
    run_id: str,
    *,
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
    countries: Mapping[str, tuple[int, float]] | None = None,
) -> CounterState | None:
    """Apply one run's observations to a counter; None when the run was applied already.

    ``countries`` (TOTAL counters) are folded in by element-wise maximum: both numbers only grow,
    so a writer holding an older view can never roll a newer one back. The map is capped, its
    lightest categories folded into one overflow category (:func:`cap_categories`).
    """
    if run_id in state.recent_runs:
        return None
    # Written for the common case of a replay or a small-file run: one or two hours, most already
    # in the counter's recent hours, no categories (every line measured: this runs per counter
    # write). tests/test_hot_path_equivalence.py holds it to the plain formulation on generated states.
    known = set(state.recent_hours)
    seen = known.union(delta.hours)
    if len(seen) == len(known):  # nothing new: no bucket, no weight
        buckets, wsum = state.buckets, state.wsum + 0
    else:
        new_hours = sorted(seen - known)
        buckets = state.buckets + len(new_hours)
        wsum = state.wsum + sum(decay_weight(h, half_life_hours) for h in new_hours)
    kept = sorted(seen)
    if kept and kept[0] <= kept[-1] - RECENT_HOURS_KEPT:  # some fell out of the kept window
        kept = kept[bisect_right(kept, kept[-1] - RECENT_HOURS_KEPT) :]
    a, b = state.first_seen, delta.first_seen  # the earliest of those set (not None, not "")
    first = (b if b < a else a) if a and b else (a or b or None)
    a, b = state.last_seen, delta.last_seen  # the latest of those set
    last = (b if b > a else a) if a and b else (a or b or None)
    return CounterState(  # not dataclasses.replace: this runs once per counter write
        buckets,
        wsum,
        first,  # first_seen
        last,  # last_seen
        tuple(kept),  # recent_hours
        (*state.recent_runs, run_id)[-RECENT_RUNS_KEPT:],  # recent_runs
        state.version + 1,
        fold_countries(state.countries, countries or {}) if countries or state.countries else {},
    )


def fold_countries(
    current: Mapping[str, tuple[int, float]], update: Mapping[str, tuple[int, float]]
) -> dict[str, tuple[int, float]]:
    """``update`` folded into a TOTAL's categories by element-wise maximum, then capped
    (:func:`cap_categories`)."""
    folded = dict(current)
    for country, (buckets, wsum) in update.items():
        old = folded.get(country, (0, 0.0))
        folded[country] = (max(old[0], buckets), max(old[1], wsum))
    return cap_categories(folded)


# A TOTAL item carries its partition's categories in one map, and DynamoDB refuses an item over
# 400 KB: a person calling thousands of made-up method names, or a large organization's methods,
# cities or error codes, would have failed every run writing it. So the map is bounded.
# The overflow category holds the mass of the categories folded away. No real category takes its
# name: countries are codes (``unknown``, ``VPCE:<account>``), methods ``service:action``, cities
# ``CC/City``, AWS error codes identifiers without ``~``.
OTHER_CATEGORY = "~other"
# What one entry of the map costs in DynamoDB beyond its name's UTF-8 bytes, at most: 1 byte as a
# map element, 3 for its list, 1 for each of its two elements, and each number at DynamoDB's
# widest (38 digits: 20 bytes). The cap holds whatever the numbers grow to.
CATEGORY_ENTRY_OVERHEAD_BYTES = 1 + 3 + 2 + 2 * 20
# The map's share of DynamoDB's 409,600 bytes an item: the 89,600 left hold the rest (keys of at
# most 3 KB, 72 hours, 32 run ids, times and version: under 10 KB) and a wide margin.
MAX_CATEGORY_MAP_BYTES = 320_000
# And by count, whatever the names' length: scoring reads every category of the map (a user's
# methods back off to all the organization's), so the work per item stays bounded too.
MAX_CATEGORIES = 5_000


def category_entry_bytes(name: str) -> int:
    """An upper bound on one category's size in a stored map (its name and numbers)."""
    return (len(name) if name.isascii() else len(name.encode("utf-8", "surrogatepass"))) + (
        CATEGORY_ENTRY_OVERHEAD_BYTES
    )


def cap_categories(categories: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
    """``categories`` within ``MAX_CATEGORIES`` entries and ``MAX_CATEGORY_MAP_BYTES`` bytes: the
    heaviest (by weight, ties by name) kept, the rest folded into :data:`OTHER_CATEGORY`.

    The overflow entry becomes the maximum of its old value and the sum of the tail folded now,
    never their sum: a category folded away comes back (with its whole value, from its own
    counter) the next time a run sees it, and adding its value to the overflow every time would
    count it again each run. With the maximum, merging stays idempotent (a capped map, or one
    merged again with a view already applied, folds nothing new) and monotone (no number
    decreases, so a writer with an older view cannot roll a newer one back). The overflow is an
    estimate of the mass left out: at least the largest tail folded at once (and a category folded,
    then kept again when heavier, counts in both until the overflow is outgrown).
    """
    if len(categories) <= MAX_CATEGORIES and (
        # A character is at most 4 bytes of UTF-8: a map this short fits without counting its bytes.
        4 * sum(map(len, categories)) + len(categories) * CATEGORY_ENTRY_OVERHEAD_BYTES
        <= MAX_CATEGORY_MAP_BYTES
        or sum(map(category_entry_bytes, categories)) <= MAX_CATEGORY_MAP_BYTES
    ):
        return categories
    ranked = sorted(
        (name for name in categories if name != OTHER_CATEGORY),
        key=lambda name: (-categories[name][1], name),
    )
    budget = MAX_CATEGORY_MAP_BYTES - category_entry_bytes(OTHER_CATEGORY)
    kept: dict[str, tuple[int, float]] = {}
    for name in ranked[: MAX_CATEGORIES - 1]:  # the heaviest first; one entry left for the overflow
        budget -= category_entry_bytes(name)
        if budget < 0:
            break
        kept[name] = categories[name]
    tail = ranked[len(kept) :]
    old_buckets, old_wsum = categories.get(OTHER_CATEGORY, (0, 0.0))
    kept[OTHER_CATEGORY] = (
        max(old_buckets, sum(categories[name][0] for name in tail)),
        max(old_wsum, sum(categories[name][1] for name in tail)),
    )
    return kept


def categories_folded(
    current: Mapping[str, tuple[int, float]],
    update: Mapping[str, tuple[int, float]],
    folded: Mapping[str, tuple[int, float]],
) -> int:
    """How many categories of ``current`` and ``update`` the fold into ``folded`` left out (0 when
    nothing was capped)."""
    if OTHER_CATEGORY not in folded:
        return 0
    return len((current.keys() | update.keys()) - folded.keys() - {OTHER_CATEGORY})


CounterKey = tuple[str, str]
# Writes one counter: (key, delta, countries for a TOTAL) -> (state now stored, whether written).
WriteOne = Callable[
    [CounterKey, CounterDelta, Mapping[str, tuple[int, float]] | None], tuple[CounterState, bool]
]
Categories = Mapping[str, tuple[int, float]] | None
MapFn = Callable[
    [
        Callable[[tuple[CounterKey, Categories]], tuple[CounterState, bool]],
        list[tuple[CounterKey, Categories]],
    ],
    Iterable[tuple[CounterState, bool]],
]


def apply_deltas(
    deltas: Mapping[CounterKey, CounterDelta], write_one: WriteOne, map_fn: MapFn
) -> tuple[int, int]:
    """Write category counters first, then TOTALs carrying their categories' fresh values, then
    the roll-ups of TOTALs (the organization's methods).

    Returns (written, already applied). ``map_fn`` may run writes concurrently.
    """
    keys = sorted(deltas)
    country_keys = [k for k in keys if k[1] != TOTAL]
    total_keys = [k for k in keys if k[1] == TOTAL and k[0] not in ROLLUPS]
    rollup_keys = [k for k in keys if k[1] == TOTAL and k[0] in ROLLUPS]
    fresh: dict[CounterKey, CounterState] = {}
    # The fresh categories of each partition, indexed as they are written: a TOTAL looks up its
    # own partition instead of scanning every counter of the batch (quadratic in a large batch).
    categories_of: dict[str, dict[str, tuple[int, float]]] = {}

    @cache  # built once, when phase 2 first asks: phase 1's counters are all fresh by then
    def indexes() -> dict[str, dict[str, tuple[int, float]]]:
        return identity_indexes(fresh)

    def total_categories(key: CounterKey) -> Categories:
        if not key[0].startswith(IDENTITY_INDEX_PREFIX):
            return dict(categories_of.get(key[0], {}))
        return indexes().get(key[0], {})

    written = skipped = 0
    # Phase 1: category counters; 2: TOTALs carrying their categories (an identity index: its
    # identities' principal and role counters); 3: roll-ups of TOTALs.
    phases: tuple[tuple[list[CounterKey], Callable[[CounterKey], Categories]], ...] = (
        (country_keys, lambda _: None),
        (total_keys, total_categories),
        (rollup_keys, lambda key: rollup_for(key[0], fresh)),
    )
    for phase_keys, categories in phases:
        batch = [(key, categories(key)) for key in phase_keys]
        results = map_fn(lambda item: write_one(item[0], deltas[item[0]], item[1]), batch)
        for (key, _), (state, wrote) in zip(batch, results, strict=True):
            fresh[key] = state
            if key[1].startswith("C#"):
                categories_of.setdefault(key[0], {})[key[1][2:]] = (state.buckets, state.wsum)
            written, skipped = written + wrote, skipped + (not wrote)
    return written, skipped


def identity_indexes(states: Mapping[CounterKey, CounterState]) -> dict[str, dict[str, tuple[int, float]]]:
    """Each country's identity index (``I#<cc>``): the fresh principal and role counters of that
    country among ``states``, by identity digest. A role session counts through its role (the
    caller names sessions at will: many sessions are still one identity)."""
    indexes: dict[str, dict[str, tuple[int, float]]] = {}
    for (part, sort_key), state in states.items():
        if not part.startswith(PRINCIPAL_PARTITION_PREFIX) or not sort_key.startswith("C#"):
            continue
        identity = part[len(PRINCIPAL_PARTITION_PREFIX) :]
        if role_of(identity) is not None:
            continue
        index = indexes.setdefault(identity_index_partition(sort_key[2:]), {})
        index[identity_digest(identity)] = (state.buckets, state.wsum)
    return indexes


def rollup_for(partition: str, states: Mapping[CounterKey, CounterState]) -> dict[str, tuple[int, float]]:
    """The organization's methods: every method TOTAL among ``states`` (``M#<method>``), capped
    like any TOTAL's categories when folded into the ``OM`` item (:func:`fold_countries`)."""
    if partition != ORG_METHODS:
        return {}
    return {
        part[2:]: (state.buckets, state.wsum)
        for (part, sort_key), state in states.items()
        if sort_key == TOTAL and part.startswith(METHOD_PARTITION_PREFIX)
    }
