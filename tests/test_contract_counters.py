"""The FrequencyStore port (the learned counters): one contract, run against the in-memory fake and
against DynamoDB (moto)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tests.aws import TABLE
from tests.conftest import Backend
from trailgeo.adapters.dynamodb import DynamoFrequencyStore
from trailgeo.adapters.memory import MemoryFrequencyStore
from trailgeo.core.counters import (
    TOTAL,
    CounterDelta,
    CounterKey,
    CounterState,
    country_sort_key,
    decay_weight,
    method_partition,
)
from trailgeo.core.scoring import History
from trailgeo.ports import FrequencyStore

NOW = datetime(2026, 10, 2, 12, tzinfo=UTC)
HOUR = int(NOW.timestamp()) // 3600
METHOD = method_partition("ec2.amazonaws.com:DescribeInstances")
IN_SE: CounterKey = (METHOD, country_sort_key("SE"))
IN_FR: CounterKey = (METHOD, country_sort_key("FR"))
ALL: CounterKey = (METHOD, TOTAL)


@pytest.fixture
def store(backend: Backend) -> FrequencyStore:
    if backend.kind == "memory":
        return MemoryFrequencyStore()
    return DynamoFrequencyStore(backend.client("dynamodb"), TABLE, concurrency=2)


def delta(*hours: int) -> CounterDelta:
    seen = CounterDelta()
    for hour in hours:
        seen.observe(hour, datetime.fromtimestamp(hour * 3600, tz=UTC).isoformat())
    return seen


def rounded(history: History) -> History:
    """The counters as DynamoDB keeps their weights: six decimals."""
    return {
        partition: {
            sort_key: replace(
                state,
                wsum=round(state.wsum, 6),
                countries={cc: (b, round(w, 6)) for cc, (b, w) in state.countries.items()},
            )
            for sort_key, state in items.items()
        }
        for partition, items in history.items()
    }


def weight(*hours: int) -> float:
    return round(sum(decay_weight(h, 1386.0) for h in hours), 6)


def test_given_no_counters_when_they_are_loaded_then_none_is_returned(store: FrequencyStore) -> None:
    # Given an empty store
    # When counters are asked for
    history = store.load([IN_SE, ALL])

    # Then absent keys are left out
    assert history == {}


def test_given_a_run_when_it_commits_new_counters_then_they_are_loaded_as_written(
    store: FrequencyStore,
) -> None:
    # Given a run that saw the method from Sweden in two hours
    deltas = {IN_SE: delta(HOUR - 1, HOUR), ALL: delta(HOUR - 1, HOUR)}

    # When it commits them on an empty history
    stats = store.commit(deltas, {}, "run-1")

    # Then both are written, and read back with the hours, times and run; the TOTAL carries Sweden
    assert (stats.written, stats.already_applied) == (2, 0)
    first, last = delta(HOUR - 1).first_seen, delta(HOUR).last_seen
    expected = CounterState(2, weight(HOUR - 1, HOUR), first, last, (HOUR - 1, HOUR), ("run-1",), 1)
    assert rounded(store.load([IN_SE, ALL, IN_FR])) == {
        METHOD: {IN_SE[1]: expected, TOTAL: replace(expected, countries={"SE": (2, weight(HOUR - 1, HOUR))})}
    }


def test_given_a_committed_run_when_its_commit_is_retried_then_nothing_is_counted_twice(
    store: FrequencyStore,
) -> None:
    # Given a run's counters committed
    deltas = {IN_SE: delta(HOUR), ALL: delta(HOUR)}
    store.commit(deltas, {}, "run-1")
    before = store.load([IN_SE, ALL])

    # When the same run commits them again (a retried invocation)
    stats = store.commit({IN_SE: delta(HOUR), ALL: delta(HOUR)}, before, "run-1")

    # Then every counter says it was applied already and none moved
    assert (stats.written, stats.already_applied) == (0, 2)
    assert store.load([IN_SE, ALL]) == before


def test_given_two_runs_that_read_the_same_history_when_both_commit_then_neither_is_lost(
    store: FrequencyStore,
) -> None:
    # Given two runs that read the counters before either wrote (both saw nothing)
    stale: History = {}

    # When both commit, each its own hour, on that same reading
    store.commit({IN_SE: delta(HOUR - 2)}, stale, "run-1")
    stats = store.commit({IN_SE: delta(HOUR - 1), IN_FR: delta(HOUR - 1)}, stale, "run-2")

    # Then the counter holds both runs' hours: the second merged into what the first wrote
    assert stats.written == 2
    counter = store.load([IN_SE])[METHOD][IN_SE[1]]
    assert (counter.buckets, counter.recent_hours, counter.recent_runs) == (
        2,
        (HOUR - 2, HOUR - 1),
        ("run-1", "run-2"),
    )
    assert counter.wsum == pytest.approx(weight(HOUR - 2, HOUR - 1))


def test_given_a_run_seeing_known_hours_when_it_commits_then_the_run_is_recorded_and_no_hour_added(
    store: FrequencyStore,
) -> None:
    # Given a counter that knows an hour
    store.commit({IN_SE: delta(HOUR)}, {}, "run-1")

    # When another run saw the method in that same hour only (a file delivered twice)
    history = store.load([IN_SE])
    stats = store.commit({IN_SE: delta(HOUR)}, history, "run-2")

    # Then the run is recorded (a retry of it will be recognized) and no hour counted twice
    counter = store.load([IN_SE])[METHOD][IN_SE[1]]
    assert stats.written == 1
    assert (counter.buckets, counter.recent_runs, counter.version) == (1, ("run-1", "run-2"), 2)


def test_given_more_counters_than_one_batch_read_when_they_are_loaded_then_every_one_is_found(
    store: FrequencyStore,
) -> None:
    # Given 150 counters (more than DynamoDB's 100 keys a BatchGetItem)
    keys: list[CounterKey] = [
        (method_partition(f"svc.amazonaws.com:Call{i:03d}"), "C#SE") for i in range(150)
    ]
    store.commit({key: delta(HOUR) for key in keys}, {}, "run-1")

    # When they are loaded, with one never written
    history = store.load([*keys, (METHOD, "C#JP")])

    # Then each of the 150 is there, the other is not
    assert sorted((p, s) for p, items in history.items() for s in items) == sorted(keys)
