"""Scoring against the history before the run: rare, common, learning, familiar principals."""

from __future__ import annotations

from trailgeo.core.aggregate import HitGroup, MethodActivity
from trailgeo.core.counters import DEFAULT_HALF_LIFE_HOURS, CounterState, decay_weight, hour_of
from trailgeo.core.scoring import History, ScoringPolicy, score_group, tail_probability

METHOD = "iam.amazonaws.com:CreateAccessKey"
NOW = hour_of("2026-11-02T14:00:00Z") or 0
ARN = "arn:aws:iam::111122223333:user/alice"


WEIGHT = decay_weight(NOW, DEFAULT_HALF_LIFE_HOURS)  # observed now: decayed and raw buckets agree


def counter(
    buckets: int, first: str = "2026-09-01T00:00:00Z", countries: dict[str, int] | None = None
) -> CounterState:
    return CounterState(
        buckets=buckets,
        wsum=buckets * WEIGHT,
        first_seen=first,
        countries={cc: (n, n * WEIGHT) for cc, n in (countries or {}).items()},
    )


def group(country: str) -> HitGroup:
    g = HitGroup(account="111122223333", principal=ARN, country=country)
    g.methods[METHOD] = MethodActivity(events=3, hours={NOW})
    return g


def history(method_countries: dict[str, int], principal_countries: dict[str, int]) -> History:
    method_part = {f"C#{cc}": counter(n) for cc, n in method_countries.items()}
    method_part["TOTAL"] = counter(sum(method_countries.values()), countries=method_countries)
    principal_part = {f"C#{cc}": counter(n) for cc, n in principal_countries.items()}
    principal_part["TOTAL"] = counter(sum(principal_countries.values()), countries=principal_countries)
    return {
        f"M#{METHOD}": method_part,
        f"P#{ARN}": principal_part,
        "ORG": {"TOTAL": counter(1000, first="2026-08-01T00:00:00Z"), "C#US": counter(900)},
    }


def test_given_the_probability_of_less_likely_categories_then_rarer_countries_have_smaller_tails() -> None:
    countries = {"US": 90.0, "DE": 9.0, "FR": 1.0}
    assert tail_probability(countries, "XX", 1.0) == 1.0 / 101.0
    assert tail_probability(countries, "FR", 1.0) == 2.0 / 101.0
    assert tail_probability(countries, "DE", 1.0) == 11.0 / 101.0
    assert tail_probability(countries, "US", 1.0) == 1.0


def test_given_a_country_never_seen_for_an_established_method_then_the_score_is_high() -> None:
    scored = score_group(group("RU"), history({"US": 40}, {"US": 40}), ScoringPolicy(), NOW)
    method = scored.methods[0]
    assert method.country_buckets == 0
    assert method.method_buckets == 40
    assert method.score > 95
    assert method.alerts
    assert scored.rare_methods(50.0) == (method,)


def test_given_the_usual_country_then_the_score_is_zero() -> None:
    scored = score_group(group("US"), history({"US": 40}, {"US": 40}), ScoringPolicy(), NOW)
    assert scored.score == 0.0
    assert scored.rare_methods(50.0) == ()


def test_given_a_method_with_little_history_then_it_is_still_learning() -> None:
    scored = score_group(group("RU"), history({"US": 5}, {"US": 5}), ScoringPolicy(), NOW)
    assert scored.methods[0].suppressed == "method_learning"
    assert scored.rare_methods(50.0) == ()


def test_given_a_principal_who_lives_in_the_country_then_its_familiarity_discounts_the_score() -> None:
    stranger = score_group(group("DE"), history({"US": 40}, {"US": 40}), ScoringPolicy(), NOW)
    local = score_group(group("DE"), history({"US": 40}, {"DE": 60}), ScoringPolicy(), NOW)
    assert stranger.score > 95
    assert local.score < 5


def test_given_a_young_deployment_then_org_learning_keeps_it_quiet() -> None:
    hist = history({"US": 40}, {"US": 40})
    hist["ORG"]["TOTAL"] = counter(100, first="2026-11-01T00:00:00Z")
    scored = score_group(group("RU"), hist, ScoringPolicy(learning_days=7), NOW)
    assert scored.methods[0].suppressed == "org_learning"
