"""The detection run end to end over local files and in-memory state (no AWS needed)."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import (
    ALICE,
    BOB,
    BT_IP,
    GB_IP,
    SE_IP,
    T0,
    US_IP,
    delivery_key,
    files_by_delivery,
    gz_file,
    hourly_history,
    record,
    write_tree,
)
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink, LocalLogSource
from trailgeo.adapters.memory import MemoryFrequencyStore, MemoryLedger, MemoryOutbox
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, detect, finish_batch, read_batch
from trailgeo.app.replay import ReplayState, replay
from trailgeo.core.aggregate import CounterKey
from trailgeo.core.alerts import Alert
from trailgeo.core.counters import CounterDelta
from trailgeo.core.scoring import History
from trailgeo.ports import (
    CommitStats,
    IncidentRecord,
    LatePrefixes,
    ListedWindow,
    Suppression,
    TransientReadError,
)

ATTACK_AT = T0 + timedelta(days=10, hours=3)


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def baseline() -> list[dict[str, object]]:
    """Ten days of alice calling DescribeInstances from the US, one call every 6 hours (40 buckets)."""
    return [record(T0 + timedelta(hours=6 * i, minutes=3), ip=US_IP) for i in range(40)]


def run_replay(
    logs: Path, geo: MaxMindGeoResolver, state: ReplayState | None = None, options: RunOptions | None = None
) -> tuple[list[dict[str, object]], ReplayState]:
    out = io.StringIO()
    _, final = replay(logs, geo, JsonLinesAlertSink(out), options or RunOptions(), state)
    return [json.loads(line) for line in out.getvalue().splitlines()], final


def test_given_an_established_method_when_called_from_a_new_country_then_one_alert_explains_it(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    attack = [
        record(
            ATTACK_AT + timedelta(minutes=m), name=name, source=source, ip=BT_IP, agent="python-requests/2.31"
        )
        for m, (source, name) in enumerate(
            [("ec2.amazonaws.com", "DescribeInstances"), ("iam.amazonaws.com", "ListUsers")] * 3
        )
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + attack))

    alerts, _ = run_replay(tmp_path, geo)

    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["source"]["geo"]["country_iso_code"] == "BT"
    assert alert["source"]["ip"] == [BT_IP]
    assert alert["aws"]["cloudtrail"]["user_identity"]["arn"] == ALICE
    assert alert["aws"]["cloudtrail"]["user_identity"]["access_key_id"] == "AKIAALICE0000000001"
    assert alert["event"]["action"] == ["DescribeInstances", "ListUsers"]
    assert alert["event"]["provider"] == ["ec2.amazonaws.com", "iam.amazonaws.com"]
    assert alert["user_agent"]["original"] == ["python-requests/2.31"]
    assert alert["cloud"]["account"]["id"] == "111122223333"
    # ListUsers was never seen before: its own model is still learning and adds no evidence, but
    # the organization and alice never called from BT, and that is evidence enough for both calls.
    evidence = {m["method"]: m for m in alert["methods"]}
    assert set(evidence) == {"ec2.amazonaws.com:DescribeInstances", "iam.amazonaws.com:ListUsers"}
    assert evidence["iam.amazonaws.com:ListUsers"]["method_model"] == "learning"
    established = evidence["ec2.amazonaws.com:DescribeInstances"]
    assert established["method_model"] == "trained"
    assert established["country_hourly_buckets"] == 0
    assert established["method_hourly_buckets"] == 40
    assert established["top_countries"][0][0] == "US"
    assert alert["score"] >= 90
    assert alert["severity"] == "high"
    assert alert["country_new_to_organization"]
    assert alert["country_new_to_principal"]
    assert "never called from this country in 40 hourly buckets" in alert["explanation"]
    assert "Organization: no call from BT before this run" in alert["explanation"]
    assert alert["first_event_time"] == ATTACK_AT.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_given_the_usual_country_when_the_method_is_called_then_no_alert(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    later = [record(ATTACK_AT + timedelta(minutes=m), ip=US_IP) for m in range(5)]
    write_tree(tmp_path, files_by_delivery(baseline() + later))

    alerts, _ = run_replay(tmp_path, geo)

    assert alerts == []


def test_given_a_never_seen_method_from_the_usual_country_then_it_is_not_an_alert_by_itself(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given alice's usual US history, when she calls methods nobody ever called, from the US
    new_methods = [
        record(ATTACK_AT + timedelta(minutes=m), ip=US_IP, name=f"Brand{m}New", source="iam.amazonaws.com")
        for m in range(5)
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + new_methods))

    alerts, _ = run_replay(tmp_path, geo)

    # Then nothing alerts: a new method is not evidence of a new country
    assert alerts == []


def test_given_a_young_method_when_called_from_a_new_country_then_the_org_and_principal_history_score_it(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    young = [
        record(T0 + timedelta(days=9, hours=h), ip=US_IP, name="ListUsers", source="iam.amazonaws.com")
        for h in range(5)
    ]
    attack = [record(ATTACK_AT, ip=BT_IP, name="ListUsers", source="iam.amazonaws.com")]
    write_tree(tmp_path, files_by_delivery(baseline() + young + attack))

    alerts, _ = run_replay(tmp_path, geo)

    assert len(alerts) == 1
    (method,) = alerts[0]["methods"]
    assert method["method_model"] == "learning"
    assert method["method_hourly_buckets"] == 5
    assert "still learning" in alerts[0]["explanation"]


def test_given_a_deployment_younger_than_the_learning_days_then_no_alert(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    dense = hourly_history(T0, 30, ip=US_IP)  # 30 buckets, but only 30 hours of baseline
    attack = [record(T0 + timedelta(hours=31), ip=BT_IP)]
    write_tree(tmp_path, files_by_delivery(dense + attack))

    alerts, _ = run_replay(tmp_path, geo)
    assert alerts == []
    alerts, _ = run_replay(tmp_path, geo, options=RunOptions())
    assert alerts == []


def test_given_a_principal_who_works_from_a_country_then_a_method_new_there_is_weak_evidence(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    bobs_days = [
        record(
            T0 + timedelta(hours=6 * i, minutes=1),
            arn=BOB,
            key="AKIABOB",
            ip=GB_IP,
            name="ListBuckets",
            source="s3.amazonaws.com",
        )
        for i in range(40)
    ]
    bob_describes = [record(ATTACK_AT, arn=BOB, key="AKIABOB", ip=GB_IP)]
    write_tree(tmp_path, files_by_delivery(baseline() + bobs_days + bob_describes))

    alerts, _ = run_replay(tmp_path, geo)

    assert alerts == []


def test_given_a_finished_replay_when_the_same_files_are_replayed_then_counts_and_alerts_do_not_change(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    attack = [record(ATTACK_AT, ip=BT_IP)]
    write_tree(tmp_path, files_by_delivery(baseline() + attack))
    first_alerts, state = run_replay(tmp_path, geo)
    snapshot = {p: dict(items) for p, items in state.store.partitions.items()}

    second_alerts, state = run_replay(tmp_path, geo, state=state)

    assert len(first_alerts) == 1
    assert second_alerts == []
    assert {p: dict(items) for p, items in state.store.partitions.items()} == snapshot


def test_given_two_trails_delivering_the_same_event_then_it_counts_once(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    event = record(T0 + timedelta(minutes=2), ip=SE_IP)
    files = files_by_delivery([event], region="us-east-1")
    files |= files_by_delivery([event], region="eu-west-1")
    write_tree(tmp_path, files)

    _, state = run_replay(tmp_path, geo)

    counter = state.store.partitions["M#ec2.amazonaws.com:DescribeInstances"]["C#SE"]
    assert counter.buckets == 1
    assert counter.first_seen == counter.last_seen == event["eventTime"]


def test_given_two_trails_whose_copies_of_an_event_land_in_different_runs_then_the_tables_count_it_once(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given an event that a second trail delivers 20 minutes after the first (the next run reads it)
    event = record(T0 + timedelta(minutes=2), ip=SE_IP)
    files = {
        delivery_key(T0 + timedelta(minutes=5), region="us-east-1"): gz_file([event]),
        delivery_key(T0 + timedelta(minutes=25), region="eu-west-1"): gz_file([event]),
    }
    files |= files_by_delivery([record(T0 + timedelta(minutes=40), ip=SE_IP)])
    write_tree(tmp_path, files)
    ticks: list[RunReport] = []

    # When replayed run by run, and when read by one run that sees both copies
    _, per_run = replay(tmp_path, geo, JsonLinesAlertSink(io.StringIO()), RunOptions(), on_tick=ticks.append)
    _, one_run = replay(
        tmp_path, geo, JsonLinesAlertSink(io.StringIO()), RunOptions(lookback=timedelta(days=1))
    )

    # Then the copies were read by two runs, and the tables equal those of the run that saw both
    assert [t.events for t in ticks if t.events] == [1, 1, 1]
    assert counts(per_run.store) == counts(one_run.store)
    assert per_run.store.partitions["M#ec2.amazonaws.com:DescribeInstances"]["C#SE"].buckets == 1


@dataclass
class CrashingStore:
    """A real in-memory store that dies once, after writing part of a commit (a Lambda timeout)."""

    inner: MemoryFrequencyStore
    crash_after: int
    crashed: bool = False

    def load(self, partitions: object) -> History:
        return self.inner.load(partitions)  # type: ignore[arg-type]

    def commit(self, deltas: Mapping[CounterKey, CounterDelta], history: History, run_id: str) -> CommitStats:
        if self.crashed:
            return self.inner.commit(deltas, history, run_id)
        self.crashed = True
        partial = dict(list(deltas.items())[: self.crash_after])
        self.inner.commit(partial, history, run_id)
        raise TimeoutError("Task timed out")


def counts(
    store: MemoryFrequencyStore,
) -> dict[tuple[str, str], tuple[int, float, str | None, str | None]]:
    return {
        (p, k): (v.buckets, v.wsum, v.first_seen, v.last_seen)
        for p, items in store.partitions.items()
        for k, v in items.items()
    }


def test_given_a_run_that_died_mid_commit_when_the_next_run_takes_over_then_counts_equal_an_uninterrupted_run(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    history = [
        record(T0 + timedelta(minutes=5 * i), ip=[US_IP, GB_IP, SE_IP][i % 3], name=f"Call{i % 4}")
        for i in range(24)
    ]
    write_tree(tmp_path, files_by_delivery(history))
    source = LocalLogSource(tmp_path)
    tick = T0 + timedelta(hours=2, minutes=15)
    sink = JsonLinesAlertSink(io.StringIO())

    reference = MemoryFrequencyStore()
    detect(
        tick,
        Dependencies(source, geo, reference, MemoryLedger(), MemoryOutbox(), sink, clock=lambda: tick),
        RunOptions(),
    )

    crashing = CrashingStore(MemoryFrequencyStore(), crash_after=5)
    ledger = MemoryLedger()
    with pytest.raises(TimeoutError):
        detect(
            tick,
            Dependencies(source, geo, crashing, ledger, MemoryOutbox(), sink, clock=lambda: tick),
            RunOptions(),
        )
    assert {e.state for e in ledger.entries.values()} == {"claimed"}
    later = tick + timedelta(minutes=30)  # the lease (20 min) has expired
    report = detect(
        later,
        Dependencies(source, geo, crashing, ledger, MemoryOutbox(), sink, clock=lambda: later),
        RunOptions(),
    )

    assert report.files_recovered == len(list(tmp_path.rglob("*.json.gz")))
    assert report.counters_already_applied == 5
    assert counts(crashing.inner) == counts(reference)
    assert len(counts(reference)) > 5
    assert {e.state for e in ledger.entries.values()} == {"done"}


CLI_AGENT = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5 exe/x86_64.ubuntu.22"  # builders.record's


def _several_runs(tmp_path: Path, geo: MaxMindGeoResolver, next_day_agent: str) -> tuple[list[Any], int]:
    """alice's key from BT in two bursts 40 minutes apart, then once more 26 hours later with
    ``next_day_agent``: the alerts and the number suppressed."""
    first_burst = [record(ATTACK_AT + timedelta(minutes=m), ip=BT_IP) for m in range(3)]
    second_burst = [
        record(ATTACK_AT + timedelta(minutes=40 + m), ip=BT_IP, name="DescribeVolumes") for m in range(3)
    ]
    next_day = [
        record(ATTACK_AT + timedelta(hours=26), ip=BT_IP, name="DescribeSnapshots", agent=next_day_agent)
    ]
    history = [
        *baseline(),
        *[
            record(T0 + timedelta(hours=6 * i, minutes=9), ip=US_IP, name=n)
            for i in range(40)
            for n in ("DescribeVolumes", "DescribeSnapshots")
        ],
    ]
    write_tree(tmp_path, files_by_delivery(history + first_burst + second_burst + next_day))
    out = io.StringIO()
    summaries: list[Any] = []

    replay(tmp_path, geo, JsonLinesAlertSink(out), RunOptions(), on_tick=summaries.append)

    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    return alerts, sum(r.alerts_suppressed for r in summaries)


def test_given_an_attacker_active_over_several_runs_then_one_alert_until_something_corroborates_it(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given the same person, country and client over two days (nothing beside the location's rarity)
    alerts, suppressed = _several_runs(tmp_path, geo, CLI_AGENT)

    # Then one alert: the second burst is within the window, the next day a repeat without
    # corroboration within the quarantine (a trip's next days page nobody)
    assert [a["event"]["action"] for a in alerts] == [["DescribeInstances"]]
    assert suppressed == 2


def test_given_a_repeat_with_a_new_client_the_next_day_then_it_alerts_again(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    """An attacker cannot first spend a quiet alert to make the real use of the key quiet: once
    anything corroborates it (here the thief's own client), the subject alerts again."""
    alerts, suppressed = _several_runs(tmp_path, geo, "python-requests/2.31")
    assert [a["event"]["action"] for a in alerts] == [["DescribeInstances"], ["DescribeSnapshots"]]
    assert alerts[1]["severity"] == "high"
    assert [e["factor"] for e in alerts[1]["evidence"]] == ["new_client"]
    assert suppressed == 1


def test_given_too_little_time_left_then_files_are_deferred_unclaimed_and_the_next_run_reads_them(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    write_tree(
        tmp_path, files_by_delivery([record(T0 + timedelta(minutes=m), ip=SE_IP) for m in range(0, 60, 5)])
    )
    source, store, ledger = LocalLogSource(tmp_path), MemoryFrequencyStore(), MemoryLedger()
    tick = T0 + timedelta(hours=1, minutes=30)
    sink = JsonLinesAlertSink(io.StringIO())

    late_in_life = Dependencies(
        source, geo, store, ledger, MemoryOutbox(), sink, time_left=lambda: 5.0, clock=lambda: tick
    )
    deferred = detect(tick, late_in_life, RunOptions())
    fresh = Dependencies(source, geo, store, ledger, MemoryOutbox(), sink, clock=lambda: tick)
    finished = detect(tick, fresh, RunOptions())

    assert deferred.files_deferred == 4
    assert deferred.files_new == 0
    assert ledger.runs == {}
    assert finished.files_new == 4
    assert finished.events == 12
    counter = store.partitions["M#ec2.amazonaws.com:DescribeInstances"]["C#SE"]
    assert (counter.first_seen, counter.last_seen) == ("2026-10-01T00:00:00Z", "2026-10-01T00:55:00Z")


def test_given_a_suppressed_attacker_when_a_sensitive_method_appears_then_it_re_alerts_once(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given an alert for alice's recon from BT
    recon = [record(ATTACK_AT + timedelta(minutes=m), ip=BT_IP) for m in range(3)]
    # When, two hours later, the same key creates an access key (persistence), twice
    persistence = [
        record(ATTACK_AT + timedelta(hours=h), ip=BT_IP, name="CreateAccessKey", source="iam.amazonaws.com")
        for h in (2, 4)
    ]
    write_tree(tmp_path, files_by_delivery(baseline() + recon + persistence))
    out = io.StringIO()
    summaries = []

    replay(tmp_path, geo, JsonLinesAlertSink(out), RunOptions(), on_tick=summaries.append)

    # Then the sensitive method re-alerts within the suppression window, once, pointing at the first alert
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first["follows_alert_id"] is None
    assert second["follows_alert_id"] == first["alert_id"]
    assert second["sensitive_methods"] == ["iam.amazonaws.com:CreateAccessKey"]
    assert second["severity"] == "high"
    assert "Persistence" in second["tactics"]
    assert sum(r.alerts_suppressed for r in summaries) == 1


class FlakyReads:
    """A log source whose first read of each key in ``flaky`` fails as S3 throttling would."""

    def __init__(self, inner: LocalLogSource, flaky: set[str]) -> None:
        self.inner, self.flaky = inner, set(flaky)

    def list_window(self, start: datetime, end: datetime, late: LatePrefixes | None = None) -> ListedWindow:
        return self.inner.list_window(start, end, late)

    def read(self, key: str) -> bytes:
        if key in self.flaky:
            self.flaky.discard(key)
            raise TransientReadError(f"SlowDown reading {key}")
        return self.inner.read(key)


def test_given_a_file_unreadable_for_now_when_later_runs_no_longer_look_back_that_far_then_it_is_still_read(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given a file delivered early in a run's window, which that run cannot read (S3 throttling)
    files = files_by_delivery([record(T0 + timedelta(minutes=m), ip=SE_IP) for m in range(0, 30, 5)])
    write_tree(tmp_path, files)
    source = FlakyReads(LocalLogSource(tmp_path), {min(files)})
    store, ledger, sink = MemoryFrequencyStore(), MemoryLedger(), JsonLinesAlertSink(io.StringIO())

    def run(at: datetime) -> RunReport:
        return detect(
            at, Dependencies(source, geo, store, ledger, MemoryOutbox(), sink, clock=lambda: at), RunOptions()
        )

    # When the run that sees it releases it, and the next run's 2-hour look-back starts after its delivery
    first = run(T0 + timedelta(hours=1, minutes=45))
    second = run(T0 + timedelta(hours=2, minutes=45))

    # Then the second run catches up from the last complete run and reads it: nothing is missed
    assert first.files_released == 1
    assert second.catch_up
    assert second.files_new == 1
    assert first.events + second.events == 6
    counter = store.partitions["M#ec2.amazonaws.com:DescribeInstances"]["C#SE"]
    assert counter.first_seen == "2026-10-01T00:00:00Z"  # the released file's event


@dataclass
class ConcurrentOutbox:
    """A real in-memory outbox seen by an invocation that read the suppressions before another
    one recorded its alert (two fan-out reduces deciding at the same moment)."""

    inner: MemoryOutbox
    stale: dict[str, Suppression]
    reads: int = 0

    def recent(self, subjects: Collection[str]) -> Mapping[str, Suppression]:
        self.reads += 1
        if self.reads == 1:
            return {s: self.stale[s] for s in subjects if s in self.stale}
        return self.inner.recent(subjects)

    def put(self, alert: Alert) -> bool:
        return self.inner.put(alert)

    def pending(self) -> list[Alert]:
        return self.inner.pending()

    def claim_publish(self, alert_id: str, holder: str, until: datetime, now: datetime) -> bool:
        return self.inner.claim_publish(alert_id, holder, until, now)

    def mark_sent(self, alert_id: str, message_id: str) -> None:
        self.inner.mark_sent(alert_id, message_id)

    def park(self, alert_id: str, reason: str) -> None:
        self.inner.park(alert_id, reason)

    def resolved(self, alert_ids: Collection[str]) -> frozenset[str]:
        return self.inner.resolved(alert_ids)

    def remember(self, subject: str, suppression: Suppression, expected_alert_id: str | None) -> bool:
        return self.inner.remember(subject, suppression, expected_alert_id)

    def extend_quarantine(self, subject: str, alert_id: str, hours: Collection[int]) -> None:
        self.inner.extend_quarantine(subject, alert_id, hours)

    def alerted_since(self, since: datetime) -> Mapping[str, Suppression]:
        self.reads += 1
        if self.reads == 1:
            return {s: last for s, last in self.stale.items() if last.at >= since}
        return self.inner.alerted_since(since)

    def open_incidents(self, since: datetime) -> Mapping[str, IncidentRecord]:
        return self.inner.open_incidents(since)

    def incidents(self, networks: Collection[str]) -> Mapping[str, IncidentRecord]:
        return self.inner.incidents(networks)

    def remember_incident(self, record: IncidentRecord, expected_alert_id: str | None) -> bool:
        return self.inner.remember_incident(record, expected_alert_id)


def test_given_two_batches_of_one_attacker_decided_at_once_then_one_alert(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given alice's baseline, counted, and her key used from BT in two regions' files of one window
    write_tree(tmp_path / "baseline", files_by_delivery(baseline()))
    _, state = run_replay(tmp_path / "baseline", geo)
    files_a = files_by_delivery([record(ATTACK_AT, ip=BT_IP)], region="us-east-1")
    files_b = files_by_delivery([record(ATTACK_AT + timedelta(minutes=1), ip=BT_IP)], region="eu-west-1")
    write_tree(tmp_path / "attack", files_a | files_b)
    tick = ATTACK_AT + timedelta(minutes=30)
    source, sink = LocalLogSource(tmp_path / "attack"), JsonLinesAlertSink(io.StringIO())
    shared = state.outbox
    before = dict(shared.last_alerted)

    stale_store = copy.deepcopy(state.store)  # B loads its history before A commits, too

    def deps(outbox: Any, store: MemoryFrequencyStore = state.store) -> Dependencies:
        return Dependencies(source, geo, store, state.ledger, outbox, sink, clock=lambda: tick)

    # When batch A is finished, and batch B, which read the suppressions before A recorded its alert
    first, second = RunReport(tick, tick, tick), RunReport(tick, tick, tick)
    aggregate_a, outcomes_a, _ = read_batch(list(files_a), deps(shared), RunOptions(), first)
    aggregate_b, outcomes_b, _ = read_batch(list(files_b), deps(shared), RunOptions(), second)
    finish_batch(aggregate_a, outcomes_a, "run-a", tick, deps(shared), RunOptions(), first)
    late_view = ConcurrentOutbox(shared, before)
    finish_batch(aggregate_b, outcomes_b, "run-b", tick, deps(late_view, stale_store), RunOptions(), second)

    # Then B read the subject again and suppressed its alert: the team gets one
    assert (first.alerts_raised, second.alerts_raised, second.alerts_suppressed) == (1, 0, 1)
    assert late_view.reads == 2
    assert len(shared.pending()) == 1
