"""The rarity model: a hierarchy org -> method -> principal -> access key, scored by surprisal."""

from __future__ import annotations

import pytest

from trailgeo.core.aggregate import HitGroup, MethodActivity
from trailgeo.core.counters import DEFAULT_HALF_LIFE_HOURS, CounterState, decay_weight, hour_of
from trailgeo.core.scoring import (
    COUNTRY_CODES,
    History,
    MethodViews,
    ScoringPolicy,
    predictive,
    score_group,
    surprisal_score,
    tail_probability,
)

METHOD = "ec2.amazonaws.com:DescribeInstances"
SENSITIVE = "iam.amazonaws.com:CreateAccessKey"
NOW = hour_of("2026-11-02T14:00:00Z") or 0
ARN = "arn:aws:iam::111122223333:user/alice"
KEY = "AKIAEXAMPLEALICE0001"
WEIGHT = decay_weight(NOW, DEFAULT_HALF_LIFE_HOURS)  # observed now: decayed and raw buckets agree
A_YEAR_AGO = decay_weight(NOW - 365 * 24, DEFAULT_HALF_LIFE_HOURS)


def partition(countries: dict[str, int], weight: float = WEIGHT, first: str = "2026-08-01T00:00:00Z") -> dict:
    items = {f"C#{cc}": CounterState(buckets=n, wsum=n * weight) for cc, n in countries.items()}
    items["TOTAL"] = CounterState(
        buckets=sum(countries.values()),
        wsum=sum(countries.values()) * weight,
        first_seen=first,
        countries={cc: (n, n * weight) for cc, n in countries.items()},
    )
    return items


def history(
    org: dict[str, int],
    method: dict[str, int] | None = None,
    principal: dict[str, int] | None = None,
    key: dict[str, int] | None = None,
) -> History:
    found: History = {"ORG": partition(org)}
    if method is not None:
        found[f"M#{METHOD}"] = partition(method)
    if principal is not None:
        found[f"P#{ARN}"] = partition(principal)
    if key is not None:
        found[f"K#{KEY}"] = partition(key)
    return found


def group(country: str, *methods: str, key: str | None = None) -> HitGroup:
    g = HitGroup(account="111122223333", principal=ARN, country=country)
    for method in methods or (METHOD,):
        g.methods[method] = MethodActivity(events=3, hours={NOW})
    if key:
        g.access_keys[key] += 3
    return g


ORG = {"US": 600, "IN": 300, "DE": 100}


def score(g: HitGroup, h: History, policy: ScoringPolicy | None = None) -> float:
    return score_group(g, h, policy or ScoringPolicy(), NOW).score


def test_given_three_levels_then_the_predictive_distribution_sums_to_one_over_all_countries() -> None:
    levels = [({"US": 60.0, "DE": 3.0}, 1.0), ({"US": 10.0}, 1.0), ({}, 1.0)]
    prob, unseen, unseen_count = predictive(levels, {"US", "DE", "VN"})
    assert unseen_count == COUNTRY_CODES - 3
    assert sum(prob.values()) + unseen * unseen_count == pytest.approx(1.0)
    assert prob["VN"] == pytest.approx(unseen)


def test_given_the_probability_of_less_likely_categories_then_rarer_countries_have_smaller_tails() -> None:
    prob, unseen, count = predictive([({"US": 90.0, "DE": 9.0, "FR": 1.0}, 1.0)], {"US", "DE", "FR", "XX"})
    tails = {cc: tail_probability(prob, unseen, count, cc) for cc in ("US", "DE", "FR", "XX")}
    assert tails["US"] == pytest.approx(1.0)
    assert tails["XX"] < tails["FR"] < tails["DE"] < tails["US"]
    # every never-seen country together: the base measure's mass for them, 247 of 250 codes
    assert tails["XX"] == pytest.approx(247 / 250 / 101)
    assert tails["FR"] == pytest.approx(2 / 101, rel=1e-2)


def test_given_tail_probabilities_then_the_score_is_their_surprisal_on_0_to_100() -> None:
    assert surprisal_score(1.0, 1e-4) == 0
    assert surprisal_score(1e-2, 1e-4) == pytest.approx(50)
    assert surprisal_score(1e-4, 1e-4) == 100
    assert surprisal_score(1e-9, 1e-4) == 100


def test_given_a_country_the_organization_never_saw_when_scored_then_the_score_is_high() -> None:
    # Given a year of history with no call from RU at any level
    h = history(ORG, method={"US": 200, "IN": 40}, principal={"US": 120})
    # When alice's calls from RU are scored
    scored = score_group(group("RU"), h, ScoringPolicy(), NOW)
    # Then the score is near 100 and the group says why
    assert scored.score > 95
    assert scored.new_to_org
    assert scored.new_to_principal
    assert scored.methods[0].alerts


def test_given_the_principal_works_from_the_country_every_day_then_even_a_rare_method_is_weak_evidence() -> (
    None
):
    # Given a method the organization calls from the US only, and alice who works from DE daily
    h = history(ORG, method={"US": 200}, principal={"DE": 150})
    # When alice calls it from DE
    # Then the score stays far below the threshold
    assert score(group("DE"), h) < 10


def test_given_a_country_common_for_the_org_but_new_for_the_principal_then_it_alerts() -> None:
    # Given many calls from IN by the organization, and alice's 120 hourly buckets all in the US
    h = history(ORG, method={"US": 200, "IN": 80}, principal={"US": 120})
    # When alice's key is used from IN
    # Then it alerts: the organization knows IN, alice does not
    scored = score_group(group("IN"), h, ScoringPolicy(), NOW)
    assert scored.score >= 50
    assert not scored.new_to_org
    assert scored.new_to_principal


def test_given_the_principal_sometimes_works_from_the_country_then_it_does_not_alert() -> None:
    h = history(ORG, method={"US": 200, "IN": 80}, principal={"US": 120, "IN": 5})
    assert score(group("IN"), h) < 50


def test_given_a_principal_without_history_in_the_orgs_usual_country_then_it_does_not_alert() -> None:
    h = history(ORG, method={"US": 200, "IN": 80})
    assert score(group("US"), h) < 10
    assert score(group("IN"), h) < 50


def test_given_a_young_method_then_its_own_model_adds_no_evidence_but_a_new_country_still_alerts() -> None:
    # Given a method with 5 hourly buckets of history (under Elastic's 20), only from the US
    h = history(ORG, method={"US": 5}, principal={"US": 120})
    # When it is called from the US, then it is not an alert by itself
    assert score(group("US"), h) < 10
    # When it is called from a country the organization never saw, then it alerts all the same
    scored = score_group(group("VN"), h, ScoringPolicy(), NOW)
    assert scored.methods[0].method_model == "learning"
    assert scored.score > 90
    # And a country the org knows but the young method does not: the method's absence is no evidence
    assert score(group("DE"), history(ORG, method={"US": 5}, principal={"DE": 50})) < 10


def test_given_a_young_organization_baseline_then_nothing_alerts() -> None:
    h = history(ORG, method={"US": 40}, principal={"US": 40})
    h["ORG"]["TOTAL"] = CounterState(
        buckets=1000,
        wsum=1000 * WEIGHT,
        first_seen="2026-10-30T00:00:00Z",
        countries={"US": (1000, 1000 * WEIGHT)},
    )
    scored = score_group(group("RU"), h, ScoringPolicy(learning_days=7), NOW)
    assert scored.score > 90
    assert scored.methods[0].suppressed == "org_learning"
    assert scored.rare_methods(50) == ()


def test_given_a_long_term_key_only_ever_used_from_the_us_then_its_use_from_a_familiar_country_alerts() -> (
    None
):
    # Given alice works from the US and DE (console), but her access key has only been used from the US
    h = history(ORG, method={"US": 200, "DE": 60}, principal={"US": 100, "DE": 100}, key={"US": 200})
    # When the key is used from DE
    with_key = score_group(group("DE", key=KEY), h, ScoringPolicy(), NOW)
    without_key = score_group(group("DE"), h, ScoringPolicy(), NOW)
    # Then the key level makes it rare, while alice's own history alone would not
    assert with_key.score >= 50
    assert without_key.score < 10
    assert any(level.level == f"access key {KEY}" and level.country == 0 for level in with_key.levels)


def test_given_a_country_last_used_a_year_ago_then_it_is_rare_again() -> None:
    # Given alice and the org used DE in 60 hours a year ago (decayed ~80x) and the US ever since
    h = history(ORG, method={"US": 200}, principal={"US": 120})
    old = partition({"DE": 60}, weight=A_YEAR_AGO)
    for name in ("ORG", f"M#{METHOD}", f"P#{ARN}"):
        total = h[name]["TOTAL"]
        h[name]["TOTAL"] = CounterState(
            buckets=total.buckets + 60,
            wsum=total.wsum + old["TOTAL"].wsum,
            first_seen="2025-08-01T00:00:00Z",
            countries={**total.countries, "DE": old["TOTAL"].countries["DE"]},
        )
    recent = history({**ORG, "DE": 0}, method={"US": 200, "DE": 100}, principal={"US": 120, "DE": 100})
    # Then DE scores high after a year and low when it was used recently
    assert score(group("DE"), h) >= 50
    assert score(group("DE"), recent) < 10


def test_given_methods_then_sensitive_ones_carry_their_tactics() -> None:
    h = history(ORG, method={"US": 200}, principal={"US": 120})
    scored = score_group(group("VN", METHOD, SENSITIVE), h, ScoringPolicy(), NOW)
    by_method = {m.method: m for m in scored.methods}
    assert by_method[SENSITIVE].sensitive
    assert "Persistence" in by_method[SENSITIVE].tactics
    assert not by_method[METHOD].sensitive


def test_given_groups_of_one_run_sharing_method_views_then_each_scores_as_when_scored_alone() -> None:
    """Given three groups of one run (two countries, a sensitive method in one, a long-term key in
    another) and one set of method views shared by them, when scored in turn, then each score is
    the one it gets with views of its own: a shared summary of a method changes nothing."""
    h = history(ORG, method={"US": 200, "IN": 80}, principal={"US": 120}, key={"US": 40})
    groups = [group("IN"), group("RU", METHOD, SENSITIVE), group("IN", key=KEY)]
    shared: MethodViews = {}

    together = [score_group(g, h, ScoringPolicy(), NOW, method_views=shared) for g in groups]

    assert together == [score_group(g, h, ScoringPolicy(), NOW) for g in groups]
    assert set(shared) == {METHOD, SENSITIVE}
    assert sorted(m.sensitive for m in together[1].methods) == [False, True]
