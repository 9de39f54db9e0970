"""Scoring how unusual a country is for a method, against the history before this run.

First model (see docs/scoring.md):

* Each method's countries are a categorical distribution over hourly-bucket observations
  (forward-decayed). Under a Dirichlet-process prior with concentration ``theta``, a country
  seen in ``n_c`` of ``N`` buckets has probability ``n_c / (N + theta)`` and an unseen one
  ``theta / (N + theta)``.
* Rarity is Elastic's "probability of less likely categories": the probability that the next
  observation is at most as common as this one, ``p_tail = (theta + sum_{n_j <= n_c} n_j) / (N + theta)``.
* A principal that often works from this country is weak evidence of compromise whatever the
  method: its familiarity ``q = k_c / (K + theta)`` (its own buckets in the country over all
  its buckets) discounts the score.

``score = 100 * (1 - p_tail) * (1 - q)``, in [0, 100]. Learning periods keep young methods
and young deployments quiet.
"""

from __future__ import annotations

from dataclasses import dataclass

from trailgeo.core.aggregate import HitGroup
from trailgeo.core.counters import (
    DEFAULT_HALF_LIFE_HOURS,
    EMPTY,
    ORG_PARTITION,
    TOTAL,
    CounterState,
    country_sort_key,
    decay_weight,
    hour_of,
    method_partition,
    principal_partition,
)

History = dict[str, dict[str, CounterState]]  # partition -> sort key -> counter
TOP_COUNTRIES = 5


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    threshold: float = 50.0
    learning_buckets: int = 20  # Elastic's documented minimum for a model to score
    learning_days: float = 7.0
    theta: float = 1.0
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS


@dataclass(frozen=True, slots=True)
class MethodScore:
    method: str
    score: float
    events: int
    hours_in_run: int
    method_buckets: int  # all-time hourly buckets of this method, any country
    country_buckets: int  # all-time hourly buckets of this method from this country
    method_first_seen: str | None
    top_countries: tuple[tuple[str, float], ...]  # decayed buckets, most common first
    p_tail: float
    principal_familiarity: float
    suppressed: str | None  # why a high score does not alert: "method_learning", "org_learning"

    @property
    def alerts(self) -> bool:
        return self.suppressed is None

    def reasons(self) -> str:
        seen = (
            "never seen from this country"
            if self.country_buckets == 0
            else f"seen from this country in {self.country_buckets} of {self.method_buckets} hourly buckets"
        )
        return f"{self.method}: {seen}"


@dataclass(frozen=True, slots=True)
class GroupScore:
    group: HitGroup
    methods: tuple[MethodScore, ...]  # every method of the group, highest score first
    principal_countries: tuple[tuple[str, float], ...]
    principal_buckets: int
    org_country_buckets: int
    org_first_seen: str | None

    @property
    def score(self) -> float:
        return max((m.score for m in self.methods), default=0.0)

    def rare_methods(self, threshold: float) -> tuple[MethodScore, ...]:
        return tuple(m for m in self.methods if m.score >= threshold and m.alerts)


def _countries(partition: dict[str, CounterState], now_hour: int, half_life: float) -> dict[str, float]:
    """Decayed buckets per country, from the TOTAL counter's copy of its countries."""
    scale = decay_weight(now_hour, half_life)
    total = partition.get(TOTAL, EMPTY)
    return {cc: wsum / scale for cc, (buckets, wsum) in total.countries.items() if buckets > 0}


def _top(countries: dict[str, float]) -> tuple[tuple[str, float], ...]:
    ranked = sorted(countries.items(), key=lambda item: (-item[1], item[0]))
    return tuple((cc, round(weight, 2)) for cc, weight in ranked[:TOP_COUNTRIES])


def tail_probability(countries: dict[str, float], country: str, theta: float) -> float:
    """P(next observation is at most as common as ``country``) under the smoothed model."""
    total = sum(countries.values())
    own = countries.get(country, 0.0)
    less_or_equal = sum(w for w in countries.values() if w <= own) if own > 0 else 0.0
    return (theta + less_or_equal) / (total + theta)


def score_group(group: HitGroup, history: History, policy: ScoringPolicy, now_hour: int) -> GroupScore:
    half_life = policy.half_life_hours
    principal_part = history.get(principal_partition(group.principal), {})
    principal_countries = _countries(principal_part, now_hour, half_life)
    principal_total = sum(principal_countries.values())
    familiarity = principal_countries.get(group.country, 0.0) / (principal_total + policy.theta)
    org_part = history.get(ORG_PARTITION, {})
    org_total = org_part.get(TOTAL, EMPTY)
    org_country = org_part.get(country_sort_key(group.country), EMPTY)
    org_young = _span_days(org_total.first_seen, now_hour) < policy.learning_days

    scores = []
    for method, activity in group.methods.items():
        method_part = history.get(method_partition(method), {})
        countries = _countries(method_part, now_hour, half_life)
        method_total = method_part.get(TOTAL, EMPTY)
        p_tail = tail_probability(countries, group.country, policy.theta)
        score = 100.0 * (1.0 - p_tail) * (1.0 - familiarity)
        suppressed = None
        if method_total.buckets < policy.learning_buckets:
            suppressed = "method_learning"
        elif org_young:
            suppressed = "org_learning"
        scores.append(
            MethodScore(
                method=method,
                score=round(score, 1),
                events=activity.events,
                hours_in_run=len(activity.hours),
                method_buckets=method_total.buckets,
                country_buckets=method_part.get(country_sort_key(group.country), EMPTY).buckets,
                method_first_seen=method_total.first_seen,
                top_countries=_top(countries),
                p_tail=p_tail,
                principal_familiarity=familiarity,
                suppressed=suppressed,
            )
        )
    scores.sort(key=lambda m: (-m.score, m.method))
    return GroupScore(
        group=group,
        methods=tuple(scores),
        principal_countries=_top(principal_countries),
        principal_buckets=principal_part.get(TOTAL, EMPTY).buckets,
        org_country_buckets=org_country.buckets,
        org_first_seen=org_total.first_seen,
    )


def _span_days(first_seen: str | None, now_hour: int) -> float:
    first = hour_of(first_seen) if first_seen else None
    return 0.0 if first is None else (now_hour - first) / 24.0
