"""Counting hourly bucket presence exactly once, with forward decay."""

from __future__ import annotations

from trailgeo.core.counters import (
    DEFAULT_HALF_LIFE_HOURS,
    EMPTY,
    EPOCH_HOUR,
    RECENT_HOURS_KEPT,
    CounterDelta,
    hour_of,
    merge,
)


def delta(*hours: int) -> CounterDelta:
    d = CounterDelta()
    for h in hours:
        d.observe(h, f"t{h:08d}")
    return d


def test_given_a_burst_in_one_hour_then_it_is_one_observation() -> None:
    d = CounterDelta()
    for minute in range(60):
        d.observe(500_000, f"2026-11-02T14:{minute:02d}:00Z")
    state = merge(EMPTY, d, "run-1")
    assert state is not None
    assert state.buckets == 1
    assert (state.first_seen, state.last_seen) == ("2026-11-02T14:00:00Z", "2026-11-02T14:59:00Z")


def test_given_an_hour_already_counted_by_an_earlier_run_then_a_late_file_adds_no_bucket() -> None:
    first = merge(EMPTY, delta(100, 101), "run-1")
    assert first is not None
    second = merge(first, delta(101, 102), "run-2")
    assert second is not None
    assert second.buckets == 3
    assert second.recent_hours == (100, 101, 102)


def test_given_a_run_already_applied_then_applying_it_again_changes_nothing() -> None:
    first = merge(EMPTY, delta(100), "run-1")
    assert first is not None
    assert merge(first, delta(100), "run-1") is None


def test_given_hours_far_in_the_past_then_the_recent_set_stays_bounded() -> None:
    state = EMPTY
    for h in range(500):
        merged = merge(state, delta(h), f"run-{h}")
        assert merged is not None
        state = merged
    assert state.buckets == 500
    assert len(state.recent_hours) == RECENT_HOURS_KEPT
    assert state.recent_hours[-1] == 499
    assert len(state.recent_runs) <= 32


def test_given_forward_decay_then_one_half_life_halves_the_decayed_count() -> None:
    state = merge(EMPTY, delta(EPOCH_HOUR + 10), "r")
    assert state is not None
    now = EPOCH_HOUR + 10
    assert abs(state.decayed_buckets(now, DEFAULT_HALF_LIFE_HOURS) - 1.0) < 1e-9
    later = now + int(DEFAULT_HALF_LIFE_HOURS)
    assert abs(state.decayed_buckets(later, DEFAULT_HALF_LIFE_HOURS) - 0.5) < 1e-3


def test_given_cloudtrail_times_then_hours_are_read_and_garbage_is_refused() -> None:
    assert hour_of("2021-07-29T23:53:26Z") == 1627599600 // 3600
    assert hour_of("1970-01-01T01:59:59Z") is None  # before CloudTrail existed
    assert hour_of("9999-12-31T23:59:59Z") is None  # would overflow the decay weight
    assert hour_of("2021-07-29T23:53:26Z" + "0" * 100) is None
    assert hour_of("2021-07-29T23:53:26Z") == hour_of("2021-07-29T23:00:00.000Z")
    assert hour_of("2021-13-29T23:53:26Z") is None
    assert hour_of("yesterday") is None
    assert hour_of("2021-07-29 23:53:26") is None


def test_given_methods_and_the_org_methods_rollup_then_the_rollup_holds_every_method_total() -> None:
    # Given one run touching two methods' counters and the organization's methods roll-up
    from trailgeo.adapters.memory import MemoryFrequencyStore

    deltas = {
        ("M#iam:ListUsers", "C#US"): delta(1, 2),
        ("M#iam:ListUsers", "TOTAL"): delta(1, 2),
        ("M#s3:ListBuckets", "C#US"): delta(2),
        ("M#s3:ListBuckets", "TOTAL"): delta(2),
        ("OM", "TOTAL"): delta(1, 2),
    }
    store = MemoryFrequencyStore()

    # When committed
    store.commit(deltas, {}, "run-1")

    # Then the roll-up carries each method's buckets, read in one item by the user-method detector
    rollup = store.partitions["OM"]["TOTAL"]
    assert {m: b for m, (b, _) in rollup.countries.items()} == {"iam:ListUsers": 2, "s3:ListBuckets": 1}
    assert store.partitions["M#iam:ListUsers"]["TOTAL"].countries == {
        "US": (2, rollup.countries["iam:ListUsers"][1])
    }
