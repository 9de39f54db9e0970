"""The per-run hot path's shortcuts give what the plain formulations give.

A run of a hundred small files pays per counter write, per group scored and per source met: those
paths take shortcuts (a merge written for one or two hours, a short category map not measured in
bytes, a group's levels summed once, bounded memos of pure functions). Each is held here to the
plain formulation on generated inputs, including the awkward ones a bucket writer can produce.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from trailgeo.core import clients, identities, keys, sources
from trailgeo.core.aggregate import HitGroup
from trailgeo.core.counters import (
    CATEGORY_ENTRY_OVERHEAD_BYTES,
    DEFAULT_HALF_LIFE_HOURS,
    EMPTY,
    MAX_CATEGORY_MAP_BYTES,
    OTHER_CATEGORY,
    RECENT_HOURS_KEPT,
    RECENT_RUNS_KEPT,
    TOTAL,
    CounterDelta,
    CounterState,
    cap_categories,
    category_entry_bytes,
    country_sort_key,
    decay_weight,
    fold_countries,
    hour_of,
    identity_index_partition,
    merge,
    method_partition,
    principal_partition,
)
from trailgeo.core.scoring import History, ScoringPolicy, predictive, score_group, tail_probability

HOUR = 495_000  # 2026-06-21: hours since the Unix epoch


# ---- merge ------------------------------------------------------------------------------------
def plain_merge(
    state: CounterState,
    delta: CounterDelta,
    run_id: str,
    countries: Mapping[str, tuple[int, float]] | None = None,
) -> CounterState | None:
    """The merge as first written (one generator per step), the reference for the one in use."""
    if run_id in state.recent_runs:
        return None
    known = set(state.recent_hours)
    new_hours = sorted(h for h in delta.hours if h not in known)
    newest = max((*known, *delta.hours), default=0)
    oldest_kept = newest - RECENT_HOURS_KEPT
    kept = sorted(h for h in known.union(new_hours) if h > oldest_kept)
    first = min(filter(None, (state.first_seen, delta.first_seen)), default=None)
    last = max(filter(None, (state.last_seen, delta.last_seen)), default=None)
    return CounterState(
        buckets=state.buckets + len(new_hours),
        wsum=state.wsum + sum(decay_weight(h, DEFAULT_HALF_LIFE_HOURS) for h in new_hours),
        first_seen=first,
        last_seen=last,
        recent_hours=tuple(kept),
        recent_runs=(*state.recent_runs, run_id)[-RECENT_RUNS_KEPT:],
        version=state.version + 1,
        countries=fold_countries(state.countries, countries or {}),
    )


def _time(rng: random.Random) -> str | None:
    """An event time as a counter holds one: usually a time, sometimes none or empty."""
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.15:
        return ""
    return f"2026-06-{rng.randint(10, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"


def _hours(rng: random.Random, around: int, most: int) -> set[int]:
    # within and beyond the kept window, on both sides
    return {around + rng.randint(-2 * RECENT_HOURS_KEPT, 8) for _ in range(rng.randint(0, most))}


def _categories(rng: random.Random) -> dict[str, tuple[int, float]]:
    names = ["US", "DE", "FR", "BR", "unknown", "VPCE:123456789012", OTHER_CATEGORY]
    return {n: (rng.randint(0, 40), rng.random() * 40) for n in rng.sample(names, rng.randint(0, 4))}


def _state(rng: random.Random) -> CounterState:
    recent = list(_hours(rng, HOUR, 12))
    rng.shuffle(recent)  # a state loaded from elsewhere need not hold its hours in order
    return CounterState(
        buckets=rng.randint(0, 500),
        wsum=rng.random() * 300,
        first_seen=_time(rng),
        last_seen=_time(rng),
        recent_hours=tuple(recent),
        recent_runs=tuple(f"run-{rng.randint(0, 40)}" for _ in range(rng.randint(0, RECENT_RUNS_KEPT))),
        version=rng.randint(0, 9),
        countries=_categories(rng) if rng.random() < 0.5 else {},
    )


def test_given_generated_states_and_deltas_when_merged_then_the_merge_is_the_plain_one() -> None:
    # Given 6,000 counters and one run's observations of each (hours in and out of the kept
    # window, already counted or not, times missing or empty, runs applied already, categories)
    rng = random.Random(16)
    for case in range(6_000):
        state = _state(rng)
        delta = CounterDelta(_hours(rng, HOUR + rng.randint(-3, 3), 3), _time(rng), _time(rng))
        run_id = f"run-{rng.randint(0, 60)}"
        countries = _categories(rng) if rng.random() < 0.4 else None
        # When merged
        merged = merge(state, delta, run_id, countries=countries)
        # Then every field is the plain formulation's, to the last bit of the weight
        assert merged == plain_merge(state, delta, run_id, countries), case
        if merged is not None:
            assert type(merged.countries) is dict
            assert merged.wsum.hex() == plain_merge(state, delta, run_id, countries).wsum.hex()  # type: ignore[union-attr]


def test_given_an_hour_counted_already_when_merged_again_then_nothing_but_the_run_is_recorded() -> None:
    # Given a counter that holds hour HOUR
    first = merge(EMPTY, CounterDelta({HOUR}, "2026-06-21T00:10:00Z", "2026-06-21T00:20:00Z"), "run-1")
    assert first is not None
    # When the next run sees that hour again, earlier and later
    again = merge(first, CounterDelta({HOUR}, "2026-06-21T00:05:00Z", "2026-06-21T00:50:00Z"), "run-2")
    # Then no bucket or weight is added, the times widen and the run is remembered
    assert again is not None
    assert (again.buckets, again.wsum) == (first.buckets, first.wsum)
    assert (again.first_seen, again.last_seen) == ("2026-06-21T00:05:00Z", "2026-06-21T00:50:00Z")
    assert again.recent_runs == ("run-1", "run-2")


# ---- the category cap's short-map shortcut ------------------------------------------------------
def test_given_maps_of_multibyte_names_near_the_limit_when_capped_then_the_bytes_decide_as_before() -> None:
    # Given maps whose names are 1 to 4 bytes a character, from well under to over the byte limit
    rng = random.Random(7)
    alphabets = ["abcdef", "éàü", "日本語", "😀🛰"]
    for case in range(80):
        alphabet = rng.choice(alphabets)
        length = rng.randint(20, 300)
        stem = "".join(rng.choices(alphabet, k=length))
        width = len(stem.encode()) + CATEGORY_ENTRY_OVERHEAD_BYTES + 4
        count = int(MAX_CATEGORY_MAP_BYTES * rng.uniform(0.2, 1.6) / width) + 1  # under and over
        names = {f"{stem}{i}" for i in range(count)}
        categories = {name: (1, rng.random()) for name in names}
        fits = sum(map(category_entry_bytes, categories)) <= MAX_CATEGORY_MAP_BYTES
        # When capped
        capped = cap_categories(dict(categories))
        # Then a map that fits is kept whole, one that does not is folded within the limit
        if fits:
            assert capped == categories, case
        else:
            assert OTHER_CATEGORY in capped, case
            assert sum(map(category_entry_bytes, capped)) <= MAX_CATEGORY_MAP_BYTES, case


def test_given_a_map_just_over_the_limit_in_four_byte_names_then_it_is_capped() -> None:
    # Given names of 4-byte characters whose map is one entry over the byte limit
    per_entry = 4 * 50 + CATEGORY_ENTRY_OVERHEAD_BYTES
    count = MAX_CATEGORY_MAP_BYTES // per_entry + 1
    categories = {chr(0x1F600 + i % 64) * 49 + chr(0x10000 + i): (1, float(i)) for i in range(count)}
    assert sum(map(category_entry_bytes, categories)) > MAX_CATEGORY_MAP_BYTES
    # When capped
    capped = cap_categories(dict(categories))
    # Then its lightest are folded into the overflow, within the limit
    assert OTHER_CATEGORY in capped
    assert min(categories, key=lambda name: categories[name][1]) not in capped
    assert sum(map(category_entry_bytes, capped)) <= MAX_CATEGORY_MAP_BYTES


# ---- hours of event times ------------------------------------------------------------------------
def plain_hour_of(event_time: str) -> int | None:
    """The oracle, written apart from the code under test: strptime of the hour's 13 characters."""
    if not 13 <= len(event_time) <= 40:
        return None
    try:
        stamp = datetime.strptime(event_time[:13], "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(stamp.timestamp()) // 3600 if 2005 <= stamp.year <= 2100 else None


def test_given_event_times_valid_and_not_when_read_twice_then_the_hour_is_the_plain_one() -> None:
    # Given event times, valid, out of range, malformed, overlong, each read twice (the second
    # from the memo of hour prefixes)
    rng = random.Random(3)
    times = [
        "2026-06-21T13:05:00Z",
        "2026-06-21T13",
        "2026-02-30T10:00:00Z",
        "1999-01-01T00:00:00Z",
        "2026-06-21 13:05:00Z",
        "2026-06-21T25:00:00Z",
        "2026-06-21T13:05:00Z" + "x" * 30,
        "abcd",
    ]
    times += [
        f"20{rng.randint(0, 99):02d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
        f"{rng.randint(0, 25):02d}:{rng.randint(0, 59):02d}:00{rng.choice(['Z', '+00:00', ''])}"
        for _ in range(3_000)
    ]
    for event_time in times + times:
        # Then the hour is the plain parse's, and a memo keyed by the 13-character prefix gives it
        assert hour_of(event_time) == plain_hour_of(event_time), event_time
    # Then a time with the same hour prefix but a different rest shares the hour, and an overlong
    # one is refused before any memo
    assert hour_of("2026-06-21T13:59:59Z") == hour_of("2026-06-21T13:00:00.123456Z")
    assert hour_of("2026-06-21T13" + "0" * 40) is None


# ---- bounded memos of pure functions -------------------------------------------------------------
def test_given_sources_when_classified_then_the_memo_gives_the_plain_answer_and_stays_bounded() -> None:
    # Given addresses, names and junk, some longer than any DNS name
    values = [
        "8.8.8.8",
        "::ffff:8.8.8.8",
        "10.0.0.1",
        "AWS Internal",
        "ec2.amazonaws.com",
        "",
        "not an ip",
        "1.2.3.4" + " " * 300,
        "a" * 256,
        "2001:db8::1",
        "100.64.0.1",
    ]
    values += [f"{random.Random(i).randint(1, 223)}.{i % 256}.{i // 256 % 256}.1" for i in range(3_000)]
    # When classified (twice: the second from the memo)
    for value in values + values:
        # Then the answer is the plain classification's
        assert sources.classify_source(value) == sources._classify(value), value
    # Then nothing longer than a DNS name is remembered, and the memo holds at most its bound
    for _ in range(sources.SOURCE_CACHE_ENTRIES + 100):
        sources.classify_source(f"198.51.{random.randint(0, 255)}.{random.randint(0, 255)}x")
    info = sources._classify_remembered.cache_info()
    assert info.maxsize == sources.SOURCE_CACHE_ENTRIES
    assert info.currsize <= sources.SOURCE_CACHE_ENTRIES
    sources._classify_remembered.cache_clear()
    sources.classify_source("a" * 256)
    sources.classify_source("8.8.8.8 " + "x" * 1_000_000)
    assert sources._classify_remembered.cache_info().currsize == 0


def test_given_user_agents_when_their_family_is_read_then_the_memo_keys_by_what_is_read() -> None:
    # Given agents alike in their first 512 characters and different after
    head = "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2 prompt/off command/s3.ls "
    one, two = head + "a" * 600, head + "a" * 600 + " Windows"
    # When their families are read
    clients._family_of_head.cache_clear()
    families = {clients.client_family(one), clients.client_family(two)}
    # Then they are one family, remembered under the head read (never the whole agent)
    assert families == {"aws-cli/2 linux"}
    assert clients._family_of_head.cache_info().currsize == 1
    assert clients.client_family(None) is None
    assert clients._family_of_head.cache_info().maxsize == clients.FAMILY_CACHE_ENTRIES


def test_given_principals_when_their_identity_and_role_are_read_then_the_memo_gives_the_plain_answer() -> (
    None
):
    # Given principals of every shape: users, role sessions, Identity Center users, odd and long ones
    rng = random.Random(5)
    principals = [
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:sts::123456789012:assumed-role/deploy/session-1",
        "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/bob@example.com",
        "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/",
        "arn:aws:sts::123456789012:assumed-role/role-without-session",
        "AWSService:ec2.amazonaws.com",
        "x:assumed-role/r/s",
        "unknown",
        "arn:aws:sts::123456789012:assumed-role/r/" + "s" * 600,
    ]
    principals += [
        f"arn:aws:sts::{rng.randint(0, 10**12):012d}:assumed-role/{rng.choice(['r', 'AWSReservedSSO_x'])}"
        f"{rng.randint(0, 99)}/{rng.choice(['', 'sess', 'a/b'])}{rng.randint(0, 999)}"
        for _ in range(2_000)
    ]
    # When read twice (the second from the memo)
    for principal in principals + principals:
        # Then the answers are the plain ones
        assert identities.identity_of(principal) == identities._identity(principal), principal
        assert identities.role_of(principal) == identities._role(principal), principal
    # Then a principal longer than records keep is never remembered, and the memos are bounded
    identities._identity_remembered.cache_clear()
    identities.identity_of("arn:aws:iam::123456789012:user/" + "u" * 600)
    assert identities._identity_remembered.cache_info().currsize == 0
    assert identities._role_remembered.cache_info().maxsize == identities.IDENTITY_CACHE_ENTRIES


def test_given_delivery_stamps_when_keys_are_parsed_then_the_times_are_the_stamps() -> None:
    # Given log keys of many stamps, some repeated, one out of range
    rng = random.Random(9)
    for _ in range(2_000):
        stamp = datetime(
            2026, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), tzinfo=UTC
        )
        name = f"123456789012_CloudTrail_us-east-1_{stamp:%Y%m%dT%H%MZ}_abc{rng.randint(0, 9)}.json.gz"
        key = f"AWSLogs/123456789012/CloudTrail/us-east-1/{stamp:%Y/%m/%d}/{name}"
        # When parsed (twice)
        # Then the delivery time is the stamp's, to the minute, in UTC
        assert keys.parse_key(key).delivered_at == stamp
        assert keys.parse_key(key).delivered_at == stamp
    bad = (
        "AWSLogs/123456789012/CloudTrail/us-east-1/2026/02/30/"
        "123456789012_CloudTrail_us-east-1_20260230T1000Z_a.json.gz"
    )
    with pytest.raises(ValueError, match="day is out of range"):
        keys.parse_key(bad)


# ---- a group's levels summed once ----------------------------------------------------------------
def _history(rng: random.Random, methods: list[str], principals: list[str]) -> History:
    def total(names: list[str]) -> dict[str, CounterState]:
        countries = {
            n: (rng.randint(1, 60), rng.random() * 80) for n in rng.sample(names, rng.randint(1, len(names)))
        }
        return {
            TOTAL: CounterState(
                buckets=rng.randint(0, 400), first_seen="2026-05-01T00:00:00Z", countries=countries
            )
        }

    countries = ["US", "DE", "FR", "BR", "IN", "JP", "unknown"]
    history: History = {"ORG": total(countries)}
    for cc in countries:
        history["ORG"][country_sort_key(cc)] = CounterState(
            buckets=rng.randint(0, 50), first_seen="2026-05-01T00:00:00Z"
        )
        if rng.random() < 0.6:  # who vouches for the country: often fewer buckets than the organization's
            index = {f"digest-{i}": (rng.randint(1, 30), rng.random() * 30) for i in range(rng.randint(1, 3))}
            history[identity_index_partition(cc)] = {
                TOTAL: CounterState(first_seen="2026-05-01T00:00:00Z", countries=index)
            }
    for method in methods:
        if rng.random() < 0.8:
            history[method_partition(method)] = total(countries)
    for principal in principals:
        if rng.random() < 0.7:
            history[principal_partition(principal)] = total(countries)
    return history


def _plain_tail(
    group: HitGroup, method: str, history: History, policy: ScoringPolicy, shares: Mapping[str, float]
) -> float:
    """The tail of a user's call from its country: organization, method (when trained), principal,
    each level's country scaled by the share its identities vouch for (organization and method)."""
    scale = decay_weight(HOUR + 3, policy.half_life_hours)

    def level(partition: str) -> dict[str, float]:
        total = history.get(partition, {}).get(TOTAL, EMPTY)
        return {cc: wsum / scale for cc, (buckets, wsum) in total.countries.items() if buckets > 0}

    vouched, country = shares.get(group.country, 1.0), group.country
    org, own, principal = (
        level("ORG"),
        level(method_partition(method)),
        level(principal_partition(group.principal)),
    )
    if vouched < 1.0:
        org[country] = org[country] * vouched
        if country in own:
            own[country] = own[country] * vouched
    trained = history.get(method_partition(method), {}).get(TOTAL, EMPTY).buckets >= policy.learning_buckets
    levels = [(org, policy.org_concentration)]
    if trained:
        levels.append((own, policy.method_concentration))
    levels.append((principal, policy.principal_concentration))
    prob, unseen, unseen_count = predictive(levels, {country, *org, *own, *principal})
    return tail_probability(prob, unseen, unseen_count, country)


def test_given_a_runs_groups_when_scored_with_shared_views_then_each_score_is_its_own() -> None:
    # Given runs of groups (principals, roles, long-term keys, several methods) and their history
    rng = random.Random(11)
    methods = [f"s3.amazonaws.com:Op{i}" for i in range(12)]
    principals = [f"arn:aws:iam::123456789012:user/u{i}" for i in range(6)]
    principals += [f"arn:aws:sts::123456789012:assumed-role/r{i}/s{i}" for i in range(4)]
    policy = ScoringPolicy(learning_days=1.0, learning_buckets=5)
    vouched_below_one = 0
    for _ in range(40):
        history = _history(rng, methods, principals)
        groups = []
        for principal in rng.sample(principals, 6):
            group = HitGroup("123456789012", principal, rng.choice(["US", "DE", "BR", "KP", "unknown"]))
            for method in rng.sample(methods, rng.randint(1, 4)):
                group.add_cells(method, {HOUR + rng.randint(0, 2)}, rng.randint(1, 9), "a", "b")
            if rng.random() < 0.3:
                group.access_keys["AKIA" + "X" * 16] += 1
                history["K#AKIA" + "X" * 16] = {TOTAL: CounterState(countries={"US": (3, 2.5)})}
            groups.append(group)
        views: dict = {}  # type: ignore[type-arg]
        shares: dict[str, float] = {}
        for group in groups:
            # When scored as a run scores them (views shared) and alone
            shared = score_group(group, history, policy, HOUR + 3, method_views=views, vouched_shares=shares)
            alone = score_group(group, history, policy, HOUR + 3)
            # Then the scores are the same, and each method's probability is the hierarchy's
            assert shared == alone
            vouched_below_one += any(share < 1.0 for share in shares.values())
            for scored in shared.methods:
                assert 0.0 <= scored.p_tail <= 1.0
                if "assumed-role" not in group.principal and not group.access_keys:
                    # and a user's, without long-term keys, is the plain hierarchy's, built here
                    assert scored.p_tail == _plain_tail(group, scored.method, history, policy, shares)
    assert vouched_below_one  # some countries were vouched for in part (the method level rescaled)


def test_given_levels_when_the_predictive_is_taken_then_probabilities_sum_to_one() -> None:
    # Given three levels over a few countries
    levels = [({"US": 10.0, "DE": 2.0}, 1.0), ({"US": 3.0, "FR": 1.5}, 1.0), ({"DE": 0.5}, 1.0)]
    # When the predictive distribution is taken over the support
    prob, unseen, unseen_count = predictive(levels, {"US", "DE", "FR", "KP"}, 250)
    # Then the candidates and the unseen mass make one
    assert abs(sum(prob.values()) + unseen * unseen_count - 1.0) < 1e-9
    assert prob["KP"] == unseen
