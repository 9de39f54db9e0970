"""The evaluation harness: matching, metrics, targets, the two reference detectors, end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_html_report import Page
from tests.test_incidents import an_alert
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.core.incidents import link
from trailgeo_tools import cli, evaluation
from trailgeo_tools.evaluation import (
    DETECTORS,
    Detection,
    ElasticSettings,
    Incident,
    Principals,
    TrailEvent,
    aggregate,
    elastic_rare,
    evaluate,
    first_seen,
    format_report,
    incidents_from_truth,
    matches,
    record_score,
    run_evaluation,
    targets,
)
from trailgeo_tools.simulate import SimulationConfig

T0 = datetime(2026, 3, 2, tzinfo=UTC)
ACCOUNT = "111122223333"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Dev_0123/bob"
CI = f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/i-0abc"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def incident(
    ident: str,
    kind: str = "attack",
    *,
    principal: str = ALICE,
    country: str = "VN",
    start: float = 200.0,
    end: float = 200.5,
    delivery: float | None = 200.25,
    new_to_org: bool = True,
) -> Incident:
    return Incident(
        id=ident,
        kind=kind,
        scenario=ident,
        account_id=ACCOUNT,
        principal_arns=frozenset([principal]),
        country=country,
        first_event=at(start),
        last_event=at(end),
        first_delivery=at(delivery) if delivery is not None else None,
        country_new_to_org=new_to_org,
        country_new_to_principal=new_to_org,
    )


def alert(
    *,
    principal: str = ALICE,
    country: str = "VN",
    start: float = 200.1,
    end: float | None = None,
    detected: float = 200.5,
    account: str = ACCOUNT,
    follows: str | None = None,
) -> Detection:
    return Detection(
        "test",
        account,
        principal,
        country,
        ("sts.amazonaws.com:GetCallerIdentity",),
        at(start),
        at(start if end is None else end),
        at(detected),
        90.0,
        follows,
    )


# ---------------------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------------------
def test_given_alert_inside_the_incident_window_when_matched_then_it_matches() -> None:
    assert matches(alert(start=200.2), incident("a"))


def test_given_alert_within_one_hour_after_the_last_event_when_matched_then_it_matches() -> None:
    assert matches(alert(start=201.4, end=201.45), incident("a", end=200.5))


def test_given_alert_more_than_one_hour_outside_the_window_when_matched_then_it_does_not_match() -> None:
    assert not matches(alert(start=201.6, end=203.0), incident("a", end=200.5))
    assert not matches(alert(start=197.0, end=198.9), incident("a", start=200.0))


@pytest.mark.parametrize(
    "other",
    [
        {"principal": BOB},
        {"country": "RO"},
        {"account": "444455556666"},
    ],
)
def test_given_alert_differing_in_principal_country_or_account_when_matched_then_it_does_not_match(
    other: dict[str, Any],
) -> None:
    assert not matches(alert(**other), incident("a"))


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------
def _figures() -> dict[str, Any]:
    incidents = [
        incident("attack-new", start=200.0, end=200.5, delivery=200.25),
        incident("attack-missed", principal=BOB, country="IN", start=250, end=251, new_to_org=False),
        incident("trip", "travel", principal=BOB, country="FR", start=100, end=150, delivery=None),
        incident("hire", "new_hire", principal=CI, country="KE", start=300, end=600, delivery=None),
    ]
    alerts = [
        alert(start=200.1, detected=200.5),  # on the attack: 0.5 h after first event, 15 min after delivery
        alert(start=200.3, detected=200.75),  # a second alert on the same attack
        alert(principal=BOB, country="FR", start=120, detected=120.5),  # on the trip
        alert(principal=BOB, country="FR", start=130, detected=130.5),  # on the trip again
        alert(principal=CI, country="US", start=400, detected=400.5),  # automation, no incident
        alert(principal="ec2.amazonaws.com", country="US", start=401, detected=401.5),
    ]
    who = Principals(humans=frozenset([BOB, ALICE]), automation=frozenset([CI]))
    return evaluate(alerts, incidents, days=27, principals=who)


def test_given_alerts_and_incidents_when_evaluated_then_attack_figures_are_per_incident() -> None:
    figures = _figures()
    first, missed = figures["attacks"]
    assert first == {
        "id": "attack-new",
        "scenario": "attack-new",
        "country": "VN",
        "country_new_to_org": True,
        "country_new_to_principal": True,
        "detected": True,
        "alerts": 2,
        "updates": 0,
        "latency_from_first_event_min": 30.0,
        "latency_from_first_delivery_min": 15.0,
    }
    assert not missed["detected"]
    assert missed["latency_from_first_delivery_min"] is None
    assert figures["attack_recall"] == 0.5
    assert figures["new_country_recall"] == 1.0  # the missed one is known to org and principal
    assert figures["new_country_detected_within_30_min"] == 1
    assert figures["alerts_per_detected_attack"] == 2.0
    assert figures["max_alerts_per_attack"] == 2


def test_given_alerts_off_attacks_when_evaluated_then_false_alerts_are_counted_per_day_and_cause() -> None:
    figures = _figures()
    assert figures["alerts_total"] == 6
    assert figures["false_alerts"] == 4
    assert figures["post_learning_days"] == 20
    assert figures["false_alerts_per_day"] == 0.2
    assert figures["false_alerts_by_cause"] == {"automation_role": 1, "service": 1, "travel": 2}
    # trips and new hires have a target of their own (one alert each): the rest is noise
    assert figures["noise_alerts"] == 2
    assert figures["noise_alerts_per_day"] == 0.1


def test_given_benign_incidents_when_evaluated_then_alerts_per_incident_are_per_kind() -> None:
    benign = _figures()["benign"]
    assert benign["travel"] == {"incidents": 1, "max_alerts": 2, "mean_alerts": 2.0, "alerts": 2}
    assert benign["new_hire"] == {"incidents": 1, "max_alerts": 0, "mean_alerts": 0.0, "alerts": 0}
    assert benign["crossover"]["incidents"] == 0


def test_given_an_update_of_an_alert_when_evaluated_then_it_is_not_a_second_incident_thread() -> None:
    # Given an attack alerted once, then updated when a sensitive method appeared
    incidents = [incident("attack-new", start=200.0, end=203.0, delivery=200.25)]
    alerts = [alert(start=200.1, detected=200.5), alert(start=202.1, detected=202.5, follows="first-id")]

    figures = evaluate(alerts, incidents, days=27)

    # Then the incident has one alert thread and one update; both count in the total
    (attack,) = figures["attacks"]
    assert (attack["alerts"], attack["updates"]) == (1, 1)
    assert figures["max_alerts_per_attack"] == 1
    assert (figures["alerts_total"], figures["alert_updates"]) == (2, 1)


def test_given_two_seeds_when_aggregated_then_counts_add_up_and_ratios_are_recomputed() -> None:
    one = _figures()
    total = aggregate([one, one])
    assert total["alerts_total"] == 12
    assert total["attack_incidents"] == 4
    assert total["attack_recall"] == 0.5
    assert total["false_alerts_per_day"] == 0.2
    assert total["false_alerts_by_cause"]["travel"] == 4
    assert total["benign"]["travel"] == {"incidents": 2, "max_alerts": 2, "mean_alerts": 2.0, "alerts": 4}


def _perfect(alerts_total: int, recall: float) -> dict[str, Any]:
    return {
        "new_country_attacks": 2,
        "new_country_detected": 2,
        "new_country_detected_within_30_min": 2,
        "max_alerts_per_attack": 1,
        "benign": {"travel": {"max_alerts": 1}, "new_hire": {"max_alerts": 0}},
        "false_alerts_per_day": 0.05,
        "noise_alerts_per_day": 0.05,
        "noise_alerts": 1,
        "false_alerts": 1,
        "post_learning_days": 20,
        "alerts_total": alerts_total,
        "attack_recall": recall,
    }


def test_given_figures_meeting_every_target_when_checked_then_all_pass() -> None:
    figures = {
        "trailgeo": _perfect(3, 1.0),
        "first-seen": _perfect(10, 0.5),
        "elastic-approx": _perfect(9, 0.2),
    }
    assert all(t["passed"] for t in targets(figures))


def test_given_a_late_detection_and_equal_recall_when_checked_then_those_targets_fail() -> None:
    ours = {**_perfect(3, 1.0), "new_country_detected_within_30_min": 1}
    figures = {"trailgeo": ours, "first-seen": _perfect(10, 1.0), "elastic-approx": _perfect(9, 0.2)}
    failed = [t["target"] for t in targets(figures) if not t["passed"]]
    assert len(failed) == 2
    assert failed[0].startswith("100% recall")
    assert failed[1].startswith("higher attack recall")


def test_given_an_incident_document_when_loaded_then_fields_follow_the_contract() -> None:
    truth = {
        "incidents": [
            {
                "id": "attack-recon-new-country",
                "kind": "attack",
                "scenario": "stolen-key-recon-new-country",
                "description": "recon",
                "account_id": ACCOUNT,
                "principal_arns": [ALICE],
                "access_key_ids": ["AKIAEXAMPLE"],
                "country": "VN",
                "source_ips": ["113.161.72.9"],
                "first_event": "2024-03-21T09:14:02Z",
                "last_event": "2024-03-21T09:34:40Z",
                "first_delivery": "2024-03-21T09:33:00Z",
                "events": 57,
                "methods": ["sts.amazonaws.com:GetCallerIdentity"],
                "country_new_to_org": True,
                "country_new_to_principal": True,
            }
        ]
    }
    (loaded,) = incidents_from_truth(truth)
    assert loaded.first_delivery == datetime(2024, 3, 21, 9, 33, tzinfo=UTC)
    assert loaded.principal_arns == frozenset([ALICE])
    assert loaded.new_country
    assert loaded.events == 57


# ---------------------------------------------------------------------------------------------------------
# Reference A: first-seen
# ---------------------------------------------------------------------------------------------------------
def event(
    hours: float,
    method: str = "s3.amazonaws.com:ListBuckets",
    country: str = "US",
    principal: str = BOB,
    delay_minutes: int = 7,
) -> TrailEvent:
    moment = int(at(hours).timestamp())
    return TrailEvent(
        moment + delay_minutes * 60, moment, ACCOUNT, principal, country, method, method.split(":", 1)[1]
    )


def test_given_pairs_seen_while_learning_when_seen_again_later_then_first_seen_stays_quiet() -> None:
    events = [event(1), event(2, country="DE"), event(24 * 8), event(24 * 9, country="DE")]
    assert first_seen(events) == []


def test_given_a_pair_first_seen_in_the_learning_period_when_run_then_it_never_alerts() -> None:
    events = [event(1), event(24 * 6, country="FR")]  # FR on day 7: still learning
    assert first_seen(events) == []


def test_given_a_new_pair_after_learning_when_run_then_one_alert_at_the_next_tick_with_its_principal() -> (
    None
):
    events = [
        event(1),
        event(24 * 8 + 0.1, country="VN", principal=ALICE, delay_minutes=9),  # 8 d 00:06, delivered 00:15
        event(24 * 8 + 0.2, country="VN", principal=BOB),
        event(24 * 8 + 0.3, method="sts.amazonaws.com:GetCallerIdentity", country="VN", principal=ALICE),
    ]
    found = first_seen(events)
    assert [(a.principal, a.country, a.methods) for a in found] == [
        (ALICE, "VN", ("s3.amazonaws.com:ListBuckets",)),
        (ALICE, "VN", ("sts.amazonaws.com:GetCallerIdentity",)),
    ]
    assert found[0].detected_at == at(24 * 8 + 0.25)  # delivered exactly on the tick
    assert found[1].detected_at == at(24 * 8 + 0.5)  # 00:18 + 7 min = 00:25 -> the 00:30 tick
    assert found[0].first_event == found[0].last_event == at(24 * 8 + 0.1)


# ---------------------------------------------------------------------------------------------------------
# Reference B: Elastic-like rare by action, per country
# ---------------------------------------------------------------------------------------------------------
COMMON = [f"ec2.amazonaws.com:Describe{i:02d}" for i in range(30)]


def _history(country: str = "US", buckets: int = 30) -> list[TrailEvent]:
    """``buckets`` hours in which the same 30 actions are called from ``country``."""
    return [event(h + 0.5, method, country) for h in range(buckets) for method in COMMON]


def test_given_no_history_for_a_country_when_any_action_is_called_from_it_then_no_record_scores() -> None:
    events = [*_history("US"), event(40.5, "iam.amazonaws.com:CreateUser", "VN")]
    assert elastic_rare(events) == []


def test_given_a_country_with_history_when_a_never_seen_action_is_called_then_it_scores_at_least_50() -> None:
    events = [*_history("US"), event(40.5, "iam.amazonaws.com:CreateUser", "US", principal=ALICE)]
    (found,) = elastic_rare(events)
    assert found.score >= 50
    assert (found.principal, found.country, found.methods) == (ALICE, "US", ("iam.amazonaws.com:CreateUser",))
    assert found.detected_at == at(41) + timedelta(minutes=15)


def test_given_a_country_with_history_when_a_common_action_is_called_then_it_does_not_score() -> None:
    events = [*_history("US"), event(40.5, COMMON[3], "US")]
    assert elastic_rare(events) == []


def test_given_fewer_than_20_buckets_of_history_when_a_new_action_is_called_then_no_record_scores() -> None:
    events = [*_history("US", buckets=19), event(40.5, "iam.amazonaws.com:CreateUser", "US")]
    assert elastic_rare(events) == []
    assert elastic_rare(events, ElasticSettings(min_buckets=19)) != []


def test_given_one_bucket_with_many_calls_when_modelled_then_it_counts_once() -> None:
    # 1,000 calls in one hour are one observation: 40 observations in all, so a never-seen action
    # has p_tail = 1/41 and stays under 50 (counting calls, p_tail = 1/1041 would score 63).
    burst = [event(0.0009 * i, COMMON[0], "US") for i in range(1, 1001)]
    small = [event(h + 0.5, method, "US") for h in range(20) for method in COMMON[:2]]
    events = [*burst, *small, event(40.5, "iam.amazonaws.com:CreateUser", "US")]
    assert elastic_rare(events) == []


def test_given_probabilities_when_scored_then_elastic_anchors_hold() -> None:
    assert record_score(0.05) == 0.0
    assert record_score(0.5) == 0.0
    assert record_score(1e-4) == 100.0
    assert record_score(0.05 / 500**0.5) == pytest.approx(50.0)
    assert record_score(0.01) < record_score(0.001) < record_score(0.0001)


# ---------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------
def _small_config(seed: int, days: int) -> SimulationConfig:
    return SimulationConfig(start=datetime(2026, 10, 5, tzinfo=UTC), days=days, seed=seed, humans=8)


@pytest.fixture(scope="module")
def small_reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-reports")


@pytest.fixture(scope="module")
def small_run(dbip_mmdb: Path, small_reports: Path) -> dict[str, Any]:
    geo = MaxMindGeoResolver(dbip_mmdb)
    try:
        return run_evaluation(geo, [5], 9, make_config=_small_config, report_dir=small_reports)
    finally:
        geo.close()


def test_given_a_report_dir_when_evaluated_then_each_seed_s_replay_is_a_page_listing_its_alerts(
    small_run: dict[str, Any], small_reports: Path
) -> None:
    # Given the small simulation evaluated with a report directory (seed 5)
    (seed,) = small_run["seeds"]
    sent = {a["alert_id"] for a in seed["detectors"]["trailgeo"]["alerts"] if a["member_of"] is None}

    # When its page is read
    page = Page.of((small_reports / "report-seed5.html").read_text(encoding="utf-8"))

    # Then it lists every alert trailgeo sent, under the seed's title
    assert sent
    assert set(page.alert_ids) == sent
    assert "trailgeo evaluation: seed 5, 9 days" in page.all_text


def test_given_a_small_simulation_when_evaluated_then_the_report_has_every_detector_and_figure(
    small_run: dict[str, Any],
) -> None:
    (seed,) = small_run["seeds"]
    assert set(seed["detectors"]) == set(DETECTORS)
    for name in DETECTORS:
        figures = seed["detectors"][name]
        assert figures["alerts_total"] == len(figures["alerts"])
        assert {"attack_recall", "false_alerts_per_day", "false_alerts_by_cause", "benign"} <= set(figures)
        assert small_run["aggregate"][name]["seeds"] == 1
    assert small_run["targets"][0]["target"].startswith("100% recall")
    json.dumps(small_run)  # every figure is JSON


def test_given_a_small_simulation_when_evaluated_then_trailgeo_finds_the_new_country_attack_in_time(
    small_run: dict[str, Any],
) -> None:
    attacks = small_run["seeds"][0]["detectors"]["trailgeo"]["attacks"]
    new_country = [a for a in attacks if a["country_new_to_org"]]
    assert new_country
    for found in new_country:
        assert found["detected"]
        assert found["latency_from_first_delivery_min"] <= 30


def test_given_a_small_simulation_replayed_in_continuous_mode_then_attacks_are_detected_within_the_window(
    small_run: dict[str, Any],
) -> None:
    # Given the small simulation replayed on the schedule and in continuous mode (60 s window)
    schedule, continuous = small_run["aggregate"]["trailgeo"], small_run["continuous"]

    # Then continuous mode finds every attack the schedule finds, its median within 2 minutes of
    # the first file's delivery and sooner than the schedule's, and its target is checked
    assert continuous["attacks_detected"] == schedule["attacks_detected"] > 0
    assert continuous["median_latency_from_first_delivery_min"] <= 2
    assert (
        continuous["median_latency_from_first_delivery_min"]
        < schedule["median_latency_from_first_delivery_min"]
    )
    (target,) = [t for t in small_run["targets"] if t["target"].startswith("continuous mode")]
    assert target["passed"]
    assert "continuous mode (60 s batching window)" in format_report(small_run)


def test_given_a_report_when_formatted_then_every_target_reads_pass_or_fail(
    small_run: dict[str, Any],
) -> None:
    text = format_report(small_run)
    lines = [line for line in text.splitlines() if line.startswith("TARGET ")]
    assert len(lines) == len(small_run["targets"])
    assert all(line.startswith(("TARGET PASS: ", "TARGET FAIL: ")) for line in lines)
    assert "== aggregate over 1 seed(s) ==" in text


def test_given_the_simulate_command_when_run_then_tree_and_ground_truth_are_written(tmp_path: Path) -> None:
    out = tmp_path / "trail"
    assert cli.main(["simulate", str(out), "--seed", "2", "--days", "1"]) == 0
    truth = json.loads((tmp_path / "ground-truth.json").read_text(encoding="utf-8"))
    assert truth["config"]["seed"] == 2
    assert any((out / "AWSLogs").rglob("*_CloudTrail_*.json.gz"))


def test_given_the_eval_command_when_run_then_it_prints_the_report_and_writes_json(
    dbip_mmdb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(evaluation, "evaluation_config", _small_config)
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--geoip", str(dbip_mmdb), "--seeds", "4", "--days", "8", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "TARGET " in printed.out
    assert "seed 4: simulated 8 days" in printed.err
    assert json.loads(out.read_text(encoding="utf-8"))["seeds"][0]["seed"] == 4


def test_given_an_incident_carrier_when_evaluated_then_it_counts_once_and_members_match_attacks() -> None:
    # Given two planted attacks (alice from VN, bob from VN), and trailgeo's one notification for
    # them: a carrier for a third, benign principal naming both as incident members
    attacks = [incident("attack-alice"), incident("attack-bob", principal=BOB)]
    window = {"first_event_time": "2026-03-10T08:06:00Z", "last_event_time": "2026-03-10T08:12:00Z"}
    alerts = [
        an_alert(a, principal=p, ip="203.0.113.5", location="VN", score=s).model_copy(update=window)
        for a, p, s in (("carrier", CI, 99.0), ("alice", ALICE, 80.0), ("bob", BOB, 70.0))
    ]
    (assignment,) = link(alerts, {}, alerts[0].detected_at, timedelta(hours=24))

    # When the notification is turned into detections and evaluated
    detections = evaluation.detections_of(assignment.alert)
    figures = evaluate(detections, attacks, days=28)

    # Then one notification (the carrier: no false alert, it carries two attacks), and both
    # attacks detected, each by one alert
    assert [d.notification for d in detections] == [True, False, False]
    assert figures["alerts_total"] == 1
    assert figures["alerts_linked"] == 2
    assert figures["attack_recall"] == 1.0
    assert [r["alerts"] for r in figures["attacks"]] == [1, 1]
    assert figures["false_alerts"] == 0


def test_given_an_alert_that_waited_to_settle_when_received_then_its_latency_counts_from_the_run_that_sent_it(
    tmp_path: Path, country_test_mmdb: Path
) -> None:
    # Given a replayed tree where alice calls from BT once (a medium alert: the country's rarity
    # alone, which waits a run before it goes out)
    from tests.builders import BT_IP, files_by_delivery, record, write_tree
    from trailgeo.app.detect import RunOptions
    from trailgeo.core.scoring import ScoringPolicy

    home = [record(T0 + timedelta(hours=h)) for h in range(0, 72, 3)]
    write_tree(tmp_path, files_by_delivery([*home, record(T0 + timedelta(days=3, minutes=2), ip=BT_IP)]))
    options = RunOptions(policy=ScoringPolicy(learning_days=0, learning_buckets=0))

    # When the evaluation replays it, waiting to settle as deployed, and sending at once
    geo = MaxMindGeoResolver(country_test_mmdb)
    (found,) = evaluation.run_trailgeo(tmp_path, geo, options)
    (at_once,) = evaluation.run_trailgeo(tmp_path, geo, replace(options, settle=timedelta(0)))

    # Then the detection is dated by the run that sent it, a schedule period after the one that raised
    # it (delivered at 00:20, raised at 00:30, sent at 00:45), and the team's latency counts from there
    assert at_once.detected_at == T0 + timedelta(days=3, minutes=30)
    assert found.detected_at == T0 + timedelta(days=3, minutes=45)


def test_given_a_first_alert_carrying_its_own_re_alert_when_counted_then_the_re_alert_is_an_update() -> None:
    # Given a medium first alert of alice from BT that waited to settle, carrying her re-alert of the
    # next run (a sensitive method new to her) and bob's alert from the same network
    from trailgeo.core.incidents import absorbed

    first = an_alert("first")
    again = an_alert("again", sensitive=True).model_copy(update={"follows_alert_id": "first"})
    other = an_alert("other", principal=BOB, ip="67.43.156.11")
    sent = absorbed(first, [again, other])

    # When the evaluation reads its detections
    found = {d.alert_id: d for d in evaluation.detections_of(sent)}

    # Then alice's re-alert counts as an update of her alert (as sent alone it was one), bob's as an
    # alert of his own, carried
    assert (found["again"].follows, found["again"].member_of) == ("first", "first")
    assert (found["other"].follows, found["other"].member_of) == (None, "first")


# ---------------------------------------------------------------------------------------------------------
# The severity ablation (as the enterprise's, on the small organization)
# ---------------------------------------------------------------------------------------------------------
def test_given_severities_by_variant_when_evaluated_then_the_ablation_counts_attacks_and_alerts_at_high() -> (
    None
):
    # Given an attack alerted at high only with its new client, and a traveller's alert at medium
    attack = replace(alert(), severities={"all": "high", "without new_client": "medium"})
    trip = replace(
        alert(principal=BOB, country="FR", start=300.0, detected=300.5),
        severities={"all": "medium", "without new_client": "medium"},
    )

    # When evaluated, and two seeds of it aggregated
    figures = evaluate([attack, trip], [incident("a")], days=28.0)
    overall = aggregate([figures, figures])

    # Then the variant without the client has the attack under high, and nothing at high at all
    assert figures["ablation"] == {
        "all": {"attacks_high": 1, "alerts_high": 1, "alerts_high_on_attacks": 1},
        "without new_client": {"attacks_high": 0, "alerts_high": 0, "alerts_high_on_attacks": 0},
    }
    assert overall["ablation"]["all"] == {"attacks_high": 2, "alerts_high": 2, "alerts_high_on_attacks": 2}
    # and the references, without severities, have none
    assert evaluate([alert()], [incident("a")], days=28.0)["ablation"] == {}
