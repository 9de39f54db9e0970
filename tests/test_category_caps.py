"""Bounded category maps: a TOTAL item carries at most ``MAX_CATEGORIES`` categories within
``MAX_CATEGORY_MAP_BYTES``, its lightest folded into one overflow category
(``core.counters.cap_categories``), so that no partition outgrows DynamoDB's 400 KB item."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.aws import TABLE, Deployment, create_deployment
from trailgeo.adapters.dynamodb import DynamoFrequencyStore
from trailgeo.adapters.memory import MemoryFrequencyStore
from trailgeo.core.aggregate import HitGroup, MethodActivity
from trailgeo.core.counters import (
    DEFAULT_HALF_LIFE_HOURS,
    MAX_CATEGORIES,
    MAX_CATEGORY_MAP_BYTES,
    OTHER_CATEGORY,
    TOTAL,
    CounterDelta,
    CounterState,
    category_entry_bytes,
    decay_weight,
    fold_countries,
    hour_of,
    merge,
)
from trailgeo.core.scoring import History, ScoringPolicy, score_group, score_user_methods

NOW = hour_of("2026-10-01T12:00:00Z") or 0
WEIGHT = decay_weight(NOW, DEFAULT_HALF_LIFE_HOURS)
MALLORY = "arn:aws:iam::111122223333:user/mallory"
USER_METHODS = f"U#{MALLORY}"
Categories = dict[str, tuple[int, float]]


@pytest.fixture
def deployment(aws: Any) -> Deployment:
    return create_deployment(aws)


def observed(hour: int = NOW) -> CounterDelta:
    delta = CounterDelta()
    delta.observe(hour, "2026-10-01T12:00:00Z")
    return delta


def made_up_methods(count: int, source: str = "ec2.amazonaws.com") -> list[str]:
    """Methods no AWS service has: 128-character actions (what ``clip`` lets through)."""
    return [f"{source}:{index:06d}{'X' * 122}" for index in range(count)]


def map_bytes(categories: Categories) -> int:
    return sum(category_entry_bytes(name) for name in categories)


def test_given_thousands_of_made_up_methods_when_a_run_commits_them_to_dynamodb_then_the_total_fits(
    aws: Any,
    deployment: Deployment,
) -> None:
    # Given one run in which a person called 1,600 made-up methods, services and actions of 128
    # characters each (a bucket writer's forged records): their map is 430 KB, over DynamoDB's
    # 400 KB item, and every run writing the person's TOTAL failed
    store = DynamoFrequencyStore(aws.client("dynamodb"), TABLE)
    methods = made_up_methods(1_600, source="s" * 128)
    deltas = {(USER_METHODS, f"C#{method}"): observed() for method in methods}
    deltas[(USER_METHODS, TOTAL)] = observed()

    # When the run commits its counters
    stats = store.commit(deltas, {}, "run-1")

    # Then the TOTAL is written, within the bounds, the methods left out held by the overflow,
    # and the capping is counted (the run logs it)
    total = store.load([(USER_METHODS, TOTAL)])[USER_METHODS][TOTAL]
    assert map_bytes(dict(total.countries)) <= MAX_CATEGORY_MAP_BYTES
    kept = [name for name in total.countries if name != OTHER_CATEGORY]
    assert total.countries[OTHER_CATEGORY][0] == len(methods) - len(kept)
    assert stats.maps_capped == 1
    assert stats.categories_folded == len(methods) - len(kept)
    assert stats.capped_partitions == (USER_METHODS,)


def test_given_a_total_of_20000_long_method_names_when_written_to_dynamodb_then_it_reads_back_bounded(
    aws: Any, deployment: Deployment
) -> None:
    # Given a run whose view of a person's TOTAL holds 20,000 made-up methods (2.9 MB as one map),
    # 100 of them the person's habits (a day of hours each), the rest called once
    store = DynamoFrequencyStore(aws.client("dynamodb"), TABLE)
    methods = made_up_methods(20_000)
    habits = set(methods[5_000:5_100])
    categories = {m: (24, 24 * WEIGHT) if m in habits else (1, WEIGHT) for m in methods}
    view: History = {USER_METHODS: {TOTAL: CounterState(countries=categories)}}

    # When the run commits the TOTAL through the DynamoDB store
    stats = store.commit({(USER_METHODS, TOTAL): observed()}, view, "run-1")

    # Then it is written and reads back within both bounds: the habits kept, the rest's mass whole
    # in the overflow, which is counted
    total = store.load([(USER_METHODS, TOTAL)])[USER_METHODS][TOTAL]
    assert len(total.countries) <= MAX_CATEGORIES
    assert map_bytes(dict(total.countries)) <= MAX_CATEGORY_MAP_BYTES
    assert habits <= total.countries.keys()
    buckets = sum(b for b, _ in total.countries.values())
    assert buckets == sum(b for b, _ in categories.values())
    assert stats.maps_capped == 1


def test_given_a_map_exactly_at_the_count_cap_then_nothing_folds_and_one_more_folds_the_lightest() -> None:
    # Given MAX_CATEGORIES short-named categories (well within the bytes), the lightest two last
    at_cap = {f"c{index:05d}": (10, 10.0 + index) for index in range(MAX_CATEGORIES)}
    assert map_bytes(at_cap) < MAX_CATEGORY_MAP_BYTES

    # When folded as they are, and with one more, lighter than all
    unchanged = fold_countries({}, at_cap)
    one_more = fold_countries(at_cap, {"z-lightest": (1, 1.0)})

    # Then at the cap nothing folds; one more folds the two lightest into the overflow, summed
    assert unchanged == at_cap
    assert len(one_more) == MAX_CATEGORIES
    assert one_more[OTHER_CATEGORY] == (11, 11.0)
    assert "z-lightest" not in one_more
    assert "c00000" not in one_more
    assert "c00001" in one_more


def test_given_a_map_exactly_at_the_bytes_cap_then_nothing_folds_and_one_more_folds() -> None:
    # Given 1,000 categories of 274-byte names: exactly MAX_CATEGORY_MAP_BYTES, far under the count
    width = MAX_CATEGORY_MAP_BYTES // 1_000 - category_entry_bytes("")
    at_cap = {f"{index:04d}".ljust(width, "n"): (5, 5.0 + index) for index in range(1_000)}
    assert map_bytes(at_cap) == MAX_CATEGORY_MAP_BYTES

    # When folded as they are, and with one more short one
    unchanged = fold_countries({}, at_cap)
    one_more = fold_countries(at_cap, {"x": (1, 1.0)})

    # Then at the cap nothing folds; one more folds the lightest until the overflow fits
    assert unchanged == at_cap
    assert map_bytes(one_more) <= MAX_CATEGORY_MAP_BYTES
    assert OTHER_CATEGORY in one_more
    folded = (at_cap.keys() | {"x"}) - one_more.keys()
    assert folded == {"x", "0000".ljust(width, "n")}
    assert one_more[OTHER_CATEGORY] == (6, 6.0)


def test_given_categories_of_equal_weight_when_capped_then_the_names_decide_whatever_the_order() -> None:
    # Given more equal-weight categories than the cap, offered in two different orders
    names = [f"m{index:05d}" for index in range(MAX_CATEGORIES + 10)]
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)

    # When each is capped
    first = fold_countries({}, dict.fromkeys(names, (1, 1.0)))
    second = fold_countries({}, dict.fromkeys(shuffled, (1, 1.0)))

    # Then both keep the same categories, the first names, and fold the same mass
    assert first == second
    assert sorted(first)[: MAX_CATEGORIES - 1] == names[: MAX_CATEGORIES - 1]
    assert first[OTHER_CATEGORY] == (11, 11.0)


def test_given_a_capped_total_when_the_same_view_is_written_again_then_the_state_is_the_same() -> None:
    # Given a person's 20,000 made-up methods committed once (counters, TOTAL)
    store = MemoryFrequencyStore()
    deltas = {(USER_METHODS, f"C#{method}"): observed() for method in made_up_methods(20_000)}
    deltas[(USER_METHODS, TOTAL)] = observed()
    store.commit(deltas, {}, "run-1")
    first = dict(store.partitions[USER_METHODS][TOTAL].countries)

    # When a run replays that commit, and another run sees the same methods in the same hour
    replayed = store.commit(deltas, {}, "run-1")
    again = store.commit(deltas, {}, "run-2")

    # Then the replay writes nothing, and the second run leaves the map as it was
    assert (replayed.written, replayed.maps_capped) == (0, 0)
    assert store.partitions[USER_METHODS][TOTAL].countries == first
    assert again.maps_capped == 1  # the tail offered again is folded again: counted
    assert fold_countries(first, first) == first


def _views(rng: random.Random) -> tuple[Categories, Categories, Categories]:
    """A stored (capped) map and two writers' views of the same categories: snapshots of counters
    that only grow, so each view is at least what was stored, the newer at least the older."""
    names = [f"n{index:05d}" for index in range(3 * MAX_CATEGORIES)]
    first = {name: (rng.randint(1, 9), rng.uniform(1, 9)) for name in rng.sample(names, 6_000)}
    older = {
        name: (
            first.get(name, (0, 0.0))[0] + rng.randint(0, 9),
            first.get(name, (0, 0.0))[1] + rng.uniform(0, 9),
        )
        for name in rng.sample(names, 4_000)
    }
    newer = {name: (b + rng.randint(0, 5), w + rng.uniform(0, 5)) for name, (b, w) in older.items()}
    return fold_countries({}, first), older, newer


@pytest.mark.parametrize("seed", range(3))
def test_given_two_writers_with_older_and_newer_views_when_both_fold_then_no_number_rolls_back(
    seed: int,
) -> None:
    # Given a stored map and two writers' views of the same categories, one older
    stored, older, newer = _views(random.Random(seed))
    newer_only = fold_countries(stored, newer)

    # When the newer lands first and the older after it, or the other way round
    newer_first = fold_countries(newer_only, older)
    older_first = fold_countries(fold_countries(stored, older), newer)

    # Then the older view changes nothing after the newer; in either order the same categories
    # are kept with the newer numbers, and no number is below what the older view alone left
    assert newer_first == newer_only
    assert {k: v for k, v in older_first.items() if k != OTHER_CATEGORY} == {
        k: v for k, v in newer_only.items() if k != OTHER_CATEGORY
    }
    older_only = fold_countries(stored, older)
    for name, (buckets, wsum) in older_only.items():
        if name in older_first:
            assert older_first[name][0] >= buckets
            assert older_first[name][1] >= wsum


def test_given_a_capped_total_when_a_writer_merges_then_it_is_idempotent_and_never_rolls_back() -> None:
    # Given a TOTAL capped by one run
    stored = merge(
        CounterState(), observed(), "run-1", countries={f"k{i:05d}": (1, 1.0) for i in range(6_000)}
    )
    assert stored is not None

    # When a later run merges an older view of some of those categories (numbers below the stored)
    later = merge(stored, observed(NOW + 1), "run-2", countries={f"k{i:05d}": (0, 0.5) for i in range(6_000)})

    # Then the map is unchanged: nothing decreases, the overflow keeps its mass
    assert later is not None
    assert later.countries == stored.countries
    assert stored.countries[OTHER_CATEGORY] == (1_001, 1_001.0)


def _method_history(locations: int) -> History:
    """A method called from the US every hour of 20 days and from ``locations`` foreign VPC
    endpoints (``VPCE:<account>``, a bucket writer's forgery) once each."""
    countries = {"US": (480, 480 * WEIGHT)} | {f"VPCE:{i:012d}": (1, WEIGHT) for i in range(locations)}
    capped = fold_countries({}, countries)
    state = CounterState(buckets=480, wsum=480 * WEIGHT, first_seen="2026-09-01T00:00:00Z", countries=capped)
    method = "s3.amazonaws.com:ListBuckets"
    return {
        f"M#{method}": {TOTAL: state},
        "ORG": {TOTAL: state},
        f"P#{MALLORY}": {TOTAL: state},
    }


def test_given_a_capped_country_map_when_scored_then_no_top_list_names_the_overflow() -> None:
    # Given a method, the organization and a person whose locations overflowed their maps
    history = _method_history(MAX_CATEGORIES * 2)
    assert OTHER_CATEGORY in history["ORG"][TOTAL].countries
    group = HitGroup(account="111122223333", principal=MALLORY, country="US")
    group.methods["s3.amazonaws.com:ListBuckets"] = MethodActivity(events=1, hours={NOW})

    # When a call from the US is scored
    scored = score_group(group, history, ScoringPolicy(), NOW)

    # Then the top countries shown are real locations, the US first, and the familiar US scores low
    (method,) = scored.methods
    assert method.top_countries[0][0] == "US"
    assert OTHER_CATEGORY not in dict(method.top_countries)
    assert OTHER_CATEGORY not in dict(scored.principal_countries)
    assert method.score < 50


def test_given_a_persons_capped_methods_when_scored_then_the_overflow_counts_in_totals_never_in_items() -> (
    None
):
    # Given a person whose methods overflowed (10,000 made-up ones), and the organization's methods
    made_up = made_up_methods(10_000)
    real = "iam.amazonaws.com:ListUsers"
    own = fold_countries({}, {real: (30, 30 * WEIGHT)} | dict.fromkeys(made_up, (1, WEIGHT)))
    assert OTHER_CATEGORY in own
    org = {real: (300, 300 * WEIGHT), "s3.amazonaws.com:ListBuckets": (900, 900 * WEIGHT)}

    def history(user: Categories) -> History:
        total = sum(b for b, _ in user.values())
        return {
            "ORG": {TOTAL: CounterState(buckets=2_000, first_seen="2026-08-01T00:00:00Z")},
            "OM": {TOTAL: CounterState(buckets=1_200, countries=org)},
            USER_METHODS: {TOTAL: CounterState(buckets=total, wsum=total * WEIGHT, countries=user)},
        }

    group = HitGroup(account="111122223333", principal=MALLORY, country="US")
    for method in (real, made_up[-1]):
        group.methods[method] = MethodActivity(events=1, hours={NOW})

    # When the person's calls are scored with the overflow, and without it
    scored = score_user_methods(group, history(own), ScoringPolicy(), NOW)
    without = {k: v for k, v in own.items() if k != OTHER_CATEGORY}
    unfolded = score_user_methods(group, history(without), ScoringPolicy(), NOW)

    # Then the items are the calls of the run, never the overflow, and its mass weighs in the
    # person's total: their own method is less probable with it than without
    assert {item.value for item in scored.items} == set(group.methods)
    by_value = {item.value: item for item in scored.items}
    assert by_value[real].probability < {i.value: i for i in unfolded.items}[real].probability
