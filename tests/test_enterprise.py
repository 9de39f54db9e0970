"""The enterprise simulation and its evaluation (``trailgeo-tools eval --org enterprise``).

One reduced enterprise (60 people, 8 accounts, one region, 15 days, episodes from day 8) is simulated for the
module: determinism, ground-truth consistency, the addresses against DB-IP Lite, a small evaluation.
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import trail_record
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.evidence import FACTORS
from trailgeo.core.networks import lookup_address
from trailgeo.core.sign_ins import SIGN_IN_SKIP
from trailgeo_tools import cli, enterprise_eval
from trailgeo_tools.enterprise import (
    _HOMES,
    _NEW_ORG_ATTACK,
    ATTACK_SCENARIOS,
    BENIGN_KINDS,
    EnterpriseConfig,
    EnterpriseSimulation,
    _home_countries,
    country_of,
    enterprise_config,
    enterprise_emittable_ips,
    simulate_enterprise,
)
from trailgeo_tools.enterprise_eval import (
    format_enterprise_report,
    run_enterprise_evaluation,
    targets,
)
from trailgeo_tools.simulate import journey_seconds

SMALL = EnterpriseConfig(seed=3, days=15, people=60, accounts=8, regions=("us-east-1",), first_episode_day=8)


def small_config(seed: int, days: int) -> EnterpriseConfig:
    return replace(SMALL, seed=seed, days=days)


@pytest.fixture(scope="module")
def sim() -> EnterpriseSimulation:
    return simulate_enterprise(SMALL)


@pytest.fixture(scope="module")
def truth(sim: EnterpriseSimulation) -> dict[str, Any]:
    return sim.ground_truth()


@pytest.fixture(scope="module")
def records(sim: EnterpriseSimulation) -> list[dict[str, Any]]:
    return [rec for _, rec in sim.records()]


def _time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ the preset
def test_given_the_evaluation_preset_then_it_meets_the_minimums_of_an_enterprise() -> None:
    # Given the preset of `eval --org enterprise`
    cfg = enterprise_config(1)

    # When its people are spread over their home countries
    homes = _home_countries(cfg.people)

    # Then 200+ people in 10+ countries and ~15 accounts, one country both home and attack country
    assert cfg.people >= 200
    assert len(homes) == cfg.people
    assert len(set(homes)) >= 10
    assert 14 <= cfg.accounts <= 16
    assert homes.count("IN") >= 30  # a large-staff country the org-country attack comes from
    assert not set(_NEW_ORG_ATTACK) & {c for c, _ in _HOMES}


def test_given_too_few_days_or_people_when_configured_then_it_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        EnterpriseConfig(seed=1, days=10)
    with pytest.raises(ValueError, match="people"):
        EnterpriseConfig(seed=1, people=10)


# ------------------------------------------------------------------------------------------------ determinism
def test_given_the_same_config_when_simulated_twice_then_bytes_and_ground_truth_are_identical(
    sim: EnterpriseSimulation,
) -> None:
    # When the same configuration is simulated again
    again = simulate_enterprise(SMALL)

    # Then every object and the ground truth are the same bytes
    assert again.digest() == sim.digest()
    assert [f.key for f in again.files] == [f.key for f in sim.files]
    assert json.dumps(again.ground_truth(), sort_keys=True) == json.dumps(sim.ground_truth(), sort_keys=True)


# ------------------------------------------------------------------------------------------- ground truth
def test_given_the_ground_truth_then_every_scenario_and_benign_kind_is_there(truth: dict[str, Any]) -> None:
    incidents = truth["incidents"]
    assert {i["scenario"] for i in incidents if i["kind"] == "attack"} == set(ATTACK_SCENARIOS)
    assert {i["benign_kind"] for i in incidents if i["kind"] == "benign"} == set(BENIGN_KINDS)
    assert all(i["benign_kind"] is None for i in incidents if i["kind"] == "attack")
    assert len({i["id"] for i in incidents}) == len(incidents)
    assert len({p["country"] for p in truth["people"]}) >= 10
    assert len(truth["accounts"]) == SMALL.accounts


def test_given_each_incident_then_its_records_exist_in_the_bucket(
    truth: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    # Given the records by (account, principal, address)
    times: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for rec in records:
        times[(rec["recipientAccountId"], rec["userIdentity"].get("arn", ""), rec["sourceIPAddress"])].append(
            rec["eventTime"]
        )

    # Then each incident's events are records of its accounts, principals and addresses in its window
    for inc in truth["incidents"]:
        found = [
            t
            for account in inc["account_ids"]
            for arn in inc["principal_arns"]
            for ip in inc["source_ips"]
            for t in times.get((account, arn, ip), [])
            if inc["first_event"] <= t <= inc["last_event"]
        ]
        assert len(found) >= inc["events"] >= 1, inc["id"]
        assert {country_of(ip) for ip in inc["source_ips"]} == {inc["country"]}, inc["id"]


def test_given_the_role_chain_then_it_is_one_incident_across_accounts_from_one_address(
    truth: dict[str, Any],
) -> None:
    chain = [i for i in truth["incidents"] if i["scenario"] == "role-chain"]
    accounts = {a for i in chain for a in i["account_ids"]}
    assert len({i["incident_group"] for i in chain}) == 1
    assert 3 <= len(accounts) <= 4
    assert len({p for i in chain for p in i["principal_arns"]}) >= 3
    assert len({ip for i in chain for ip in i["source_ips"]}) == 1
    assert any("OrganizationAccountAccessRole" in p for i in chain for p in i["principal_arns"])


def test_given_a_commuter_then_office_and_home_days_are_one_incident_in_two_countries(
    truth: dict[str, Any],
) -> None:
    groups: dict[str, set[str]] = defaultdict(set)
    for inc in truth["incidents"]:
        if inc["benign_kind"] == "commuter":
            groups[inc["incident_group"]].add(inc["country"])
    assert groups
    assert all(len(countries) == 2 for countries in groups.values())


def test_given_an_sso_person_then_one_person_has_a_reserved_role_in_several_accounts(
    truth: dict[str, Any],
) -> None:
    sso = [p for p in truth["people"] if p["kind"] == "sso" and len(p["accounts"]) >= 3]
    assert sso
    arns = sso[0]["arns"]
    assert len({a.split(":")[4] for a in arns}) == len(arns)
    assert all(":assumed-role/AWSReservedSSO_" in a and a.endswith("/" + sso[0]["email"]) for a in arns)


def test_given_the_attacks_then_copied_agents_ipv6_and_ec2_are_as_planted(
    truth: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    by_id = {i["id"]: i for i in truth["incidents"]}
    v6 = by_id["attack-stolen-key-ipv6"]
    assert all(":" in ip for ip in v6["source_ips"])
    assert by_id["attack-stolen-key-from-ec2-other-region"]["country"] in {"SG", "DE"}
    assert by_id["attack-hijacked-session-org-country-copied-ua"]["country"] == "IN"
    # The copied user agent is the victim's own, seen in the victim's everyday records
    copied = by_id["attack-stolen-key-known-country-copied-ua"]
    (arn,) = copied["principal_arns"]
    agents = [r["userAgent"] for r in records if r["userIdentity"].get("arn") == arn]
    attack_ips = set(copied["source_ips"])
    theirs = {
        r["userAgent"]
        for r in records
        if r["userIdentity"].get("arn") == arn and r["sourceIPAddress"] in attack_ips
    }
    assert len(theirs) == 1
    assert agents.count(next(iter(theirs))) > copied["events"]


def test_given_identity_center_people_then_they_sign_in_where_they_are_and_attackers_never_do(
    truth: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    # Given the Identity Center sign-in records, and what trailgeo's reader makes of them
    sign_ins = [
        r
        for r in records
        if r["eventSource"] == "signin.amazonaws.com" and r["eventType"] == "AwsServiceEvent"
    ]
    aggregate = RunAggregate(geolocate=country_of)
    aggregate.add_records([trail_record(r) for r in sign_ins])
    completed = aggregate.sign_in_reader.sign_ins()

    # Then they are CloudTrail's: no principal, the user named once per sign-in (the password's challenge)
    assert all(
        r["userIdentity"]["type"] == "IdentityCenterUser" and not r["userIdentity"]["arn"] for r in sign_ins
    )
    named = [r for r in sign_ins if "UserName" in r["additionalEventData"]]
    assert named
    assert all(r["additionalEventData"]["CredentialType"] == "PASSWORD" for r in named)
    assert aggregate.skipped[SIGN_IN_SKIP] == len(sign_ins)
    # and most people's second factor is a security key or passkey, the others' an app's code:
    # only the former complete a sign-in that vouches; vendors' staff never sign in to ours
    factors = {p["identity"]: p["second_factor"] for p in truth["people"] if p["kind"] == "sso"}
    keys = {who for who, factor in factors.items() if factor == "WEBAUTHN"}
    assert 0.5 < len(keys) / len(factors) < 0.9
    assert {s.identity for s in completed if s.phishing_resistant} == keys
    assert {s.identity for s in completed if not s.phishing_resistant} == set(factors) - keys
    assert all(v["second_factor"] is None for v in truth["vendors"])
    # and no sign-in comes from an attack's address
    attack_ips = {ip for i in truth["incidents"] if i["kind"] == "attack" for ip in i["source_ips"]}
    assert attack_ips.isdisjoint(r["sourceIPAddress"] for r in sign_ins)
    # and a traveller signs in from the trip's country on its days
    trips = [i for i in truth["incidents"] if i["benign_kind"] == "trip"]
    travelling = {
        (s.identity, s.country)
        for s in completed
        for i in trips
        if i["first_event"] <= s.event_time <= i["last_event"]
    }
    assert any(country == i["country"] for i in trips for _, country in travelling)


def test_given_identity_center_people_then_every_call_of_theirs_is_within_a_portal_session(
    truth: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    """Role credentials come only from a live access portal session (8 hours): whoever works past
    its end signs in again."""
    # Given each person's completed sign-ins
    aggregate = RunAggregate(geolocate=country_of)
    aggregate.add_records([trail_record(r) for r in records if r["eventSource"] == "signin.amazonaws.com"])
    signed_in: dict[str, list[datetime]] = defaultdict(list)
    for sign_in in aggregate.sign_in_reader.sign_ins():
        signed_in[sign_in.identity.removeprefix("sso:")].append(_time(sign_in.event_time))
    attack_ips = {ip for i in truth["incidents"] if i["kind"] == "attack" for ip in i["source_ips"]}

    # Then every call of an Identity Center role session (not an attacker's) is within 8 hours of one
    outside = []
    for r in records:
        arn = r["userIdentity"].get("arn", "")
        if ":assumed-role/AWSReservedSSO_" not in arn or r["sourceIPAddress"] in attack_ips:
            continue
        at, times = _time(r["eventTime"]), signed_in[arn.rsplit("/", 1)[-1]]
        if not any(timedelta(0) <= at - t <= timedelta(hours=8) for t in times):
            outside.append((arn, r["eventTime"]))
    assert outside == []


def test_given_the_hijacked_identity_center_sessions_then_each_is_used_within_a_portal_session_of_the_victim(
    truth: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    """Role credentials come only from a live access portal session (8 hours by default): a stolen
    session is used within one the victim opened, from where the victim signed in."""
    # Given the victims' completed sign-ins
    aggregate = RunAggregate(geolocate=country_of)
    aggregate.add_records([trail_record(r) for r in records if r["eventSource"] == "signin.amazonaws.com"])
    completed = aggregate.sign_in_reader.sign_ins()
    for scenario in ("hijacked-admin-persistence", "hijacked-session-org-country-copied-ua"):
        incident = next(i for i in truth["incidents"] if i["id"] == f"attack-{scenario}")
        (arn,) = incident["principal_arns"]
        victim = "sso:" + arn.rsplit("/", 1)[-1]
        first = _time(incident["first_event"])

        # Then the victim signed in within the 8 hours before the first call, from another country
        before = [
            s
            for s in completed
            if s.identity == victim and timedelta(0) < first - _time(s.event_time) < timedelta(hours=8)
        ]
        assert before, scenario
        assert all(s.country != incident["country"] for s in before), scenario


# ------------------------------------------------------------------------------------------------ DB-IP
def test_given_dbip_lite_then_every_emittable_address_resolves_to_its_country(dbip_mmdb: Path) -> None:
    maxminddb = pytest.importorskip("maxminddb")
    wrong: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    checked = 0
    with maxminddb.open_database(str(dbip_mmdb)) as db:
        for country, ips in enterprise_emittable_ips().items():
            for ip in ips:
                checked += 1
                code = (db.get(ip) or {}).get("country_code")
                if code != country:
                    wrong[country].append((ip, code))
    assert checked > 50_000
    assert any(":" in ip for ips in enterprise_emittable_ips().values() for ip in ips)
    assert not wrong, {c: v[:5] for c, v in wrong.items()}


def test_given_dbip_lite_then_every_emitted_address_resolves_to_the_intended_country(
    dbip_mmdb: Path, records: list[dict[str, Any]]
) -> None:
    # Given every distinct public source address of the bucket
    maxminddb = pytest.importorskip("maxminddb")
    public = set()
    for rec in records:
        ip = rec["sourceIPAddress"]
        if ip[0].isdigit() and not ipaddress.ip_address(ip).is_private:
            public.add(ip)

    # Then each is one the simulation knows, and DB-IP places it where the simulation meant
    with maxminddb.open_database(str(dbip_mmdb)) as db:
        wrong = {ip: (country_of(ip), (db.get(ip) or {}).get("country_code")) for ip in public}
    assert len(public) > 100
    assert {ip: cc for ip, cc in wrong.items() if cc[0] is None or cc[0] != cc[1]} == {}


# ------------------------------------------------------------------------------------------------ evaluation
@pytest.fixture(scope="module")
def small_eval(dbip_mmdb: Path, sim: EnterpriseSimulation) -> dict[str, Any]:
    def simulator(cfg: EnterpriseConfig) -> EnterpriseSimulation:
        assert cfg == SMALL
        return sim  # the module's simulation of the same configuration

    geo = MaxMindGeoResolver(dbip_mmdb)
    try:
        return run_enterprise_evaluation(
            geo, [SMALL.seed], SMALL.days, make_config=small_config, simulator=simulator
        )
    finally:
        geo.close()


def test_given_a_small_enterprise_when_evaluated_then_every_figure_is_there(
    small_eval: dict[str, Any],
) -> None:
    (seed,) = small_eval["seeds"]
    overall = small_eval["aggregate"]
    # One row per attack incident group (the role chain and low-and-slow once each)
    assert [r["scenario"] for r in seed["attacks"]] == sorted(ATTACK_SCENARIOS, key=lambda s: f"attack-{s}")
    chain = next(r for r in seed["attacks"] if r["scenario"] == "role-chain")
    assert chain["accounts"] >= 3
    assert 0 <= seed["attacks_detected_high"] <= seed["attacks_detected"] <= seed["attack_incidents"] == 9
    assert seed["alerts_high_on_attacks"] <= seed["alerts_high"] <= seed["alerts"]
    assert seed["notifications"] <= seed["alerts"]
    assert seed["pages_on_attacks"] <= seed["notifications_on_attacks"]
    assert all(r["pages"] <= r["notifications"] for r in seed["attacks"])
    assert sum(seed["benign_severity"].values()) == seed["benign_alerts"]
    assert set(seed["benign_by_kind"]) <= set(BENIGN_KINDS)
    assert overall["attack_incidents"] == 9
    assert overall["recall"] == seed["recall"]
    assert [t["target"] for t in small_eval["targets"]] == [t["target"] for t in targets(overall)]
    assert len(small_eval["targets"]) == 5
    json.dumps(small_eval)


def test_given_a_small_enterprise_when_evaluated_then_attacks_from_new_countries_are_found(
    small_eval: dict[str, Any],
) -> None:
    (seed,) = small_eval["seeds"]
    new = [r for r in seed["attacks"] if r["new_to_org"]]
    assert len(new) >= 4
    assert all(r["detected"] for r in new)


def test_given_the_report_then_it_has_one_pass_or_fail_line_per_target(small_eval: dict[str, Any]) -> None:
    text = format_enterprise_report(small_eval)
    lines = [line for line in text.splitlines() if line.startswith("TARGET ")]
    assert len(lines) == 5
    assert all(line.startswith(("TARGET PASS: ", "TARGET FAIL: ")) for line in lines)
    assert "precision at >= high" in text
    assert "== enterprise, aggregate over 1 seed(s)" in text


def test_given_eval_with_org_enterprise_when_run_then_it_prints_the_enterprise_report_and_json(
    dbip_mmdb: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_eval: dict[str, Any],
) -> None:
    # Given the evaluation already run (the command's plumbing is what is tested here)
    calls: list[tuple[list[int], int]] = []

    def fake(_geo: Any, seeds: list[int], days: int, **_: Callable[..., Any]) -> dict[str, Any]:
        calls.append((seeds, days))
        return small_eval

    monkeypatch.setattr(enterprise_eval, "run_enterprise_evaluation", fake)
    out = tmp_path / "ent.json"

    # When the command runs with --org enterprise
    code = cli.main(
        [
            "eval",
            "--org",
            "enterprise",
            "--geoip",
            str(dbip_mmdb),
            "--seeds",
            "3",
            "--days",
            "15",
            "--json",
            str(out),
        ]
    )

    # Then the enterprise report is printed and the figures written
    assert code == 0
    assert calls == [([3], 15)]
    assert "TARGET " in capsys.readouterr().out
    assert json.loads(out.read_text(encoding="utf-8"))["org"] == "enterprise"


def test_given_eval_without_a_factor_then_the_replay_leaves_it_out_and_a_made_up_one_is_refused(
    dbip_mmdb: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_eval: dict[str, Any],
) -> None:
    # Given the evaluation already run (what the command hands it is what is tested here)
    handed: list[Any] = []

    def fake(_geo: Any, _seeds: list[int], _days: int, **kwargs: Any) -> dict[str, Any]:
        handed.append(kwargs["options"])
        return small_eval

    monkeypatch.setattr(enterprise_eval, "run_enterprise_evaluation", fake)
    base = ["eval", "--org", "enterprise", "--geoip", str(dbip_mmdb), "--seeds", "3"]

    # When run without mfa_sign_in, then with a factor that does not exist
    assert cli.main([*base, "--without", "mfa_sign_in"]) == 0
    refused = cli.main([*base, "--without", "gut_feeling"])

    # Then the replay's detector has every factor but that one; the made-up one is a usage error
    (options,) = handed
    assert options.factors == FACTORS - {"mfa_sign_in"}
    assert refused == 2
    assert "gut_feeling" in capsys.readouterr().err


def test_given_eval_without_org_then_the_small_organization_stays_the_default() -> None:
    args = cli.build_parser().parse_args(["eval", "--geoip", "x.mmdb"])
    assert args.org == "small"


def test_given_a_traveller_then_they_reach_the_trip_and_home_again_no_sooner_than_a_flight(
    truth: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    """Travellers take flights: their first call abroad comes a journey after their last at home
    (and the same on the way back), never at the local midnight of the trip's first day."""
    # Given each trip, offsite and conference, and each person's calls in time order
    away = [i for i in truth["incidents"] if i["benign_kind"] in {"trip", "offsite", "conference"}]
    home_of = {arn: p["country"] for p in truth["people"] for arn in p["arns"]}
    attack_ips = {ip for i in truth["incidents"] if i["kind"] == "attack" for ip in i["source_ips"]}
    times: dict[str, list[datetime]] = defaultdict(list)
    for r in records:
        arn, ip = r["userIdentity"].get("arn", ""), r["sourceIPAddress"]
        if (
            arn in home_of and lookup_address(ip) is not None and ip not in attack_ips
        ):  # theirs, not AWS's or a thief's
            times[arn].append(_time(r["eventTime"]))
    assert away

    # Then between the calls before an episode and its first, and its last and the calls after,
    # there is at least the journey between the two countries
    checked = 0
    for incident in away:
        arns = [a for a in incident["principal_arns"] if a in home_of]
        home, there = home_of[arns[0]], incident["country"]
        first, last = _time(incident["first_event"]), _time(incident["last_event"])
        calls = sorted(t for a in arns for t in times[a])
        before = [t for t in calls if t < first]
        after = [t for t in calls if t > last]
        journey = timedelta(seconds=journey_seconds(home, there))
        if before:
            assert first - before[-1] >= journey, (incident["id"], home, there)
            checked += 1
        if after:
            assert after[0] - last >= journey, (incident["id"], home, there)
    assert checked
