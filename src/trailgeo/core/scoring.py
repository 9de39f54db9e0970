"""How unusual a country is for a call, scored against the history before this run.

The model (docs/scoring.md has the maths and worked examples):

* Counts are hourly-bucket presence with forward decay (counters.py), kept at four levels: the
  organization's countries, each method's countries, each principal's countries (an IAM Identity
  Center user is one principal across accounts) and each long-term access key's countries.
* The levels form a hierarchy of Dirichlet-smoothed predictive distributions, each smoothing
  towards the one above it (the "back-off" of a hierarchical Dirichlet process):
  ``P_org(c) = (o_c + a/U) / (O + a)``, ``P_method(c) = (n_c + b P_org(c)) / (N + b)``,
  ``P_principal(c) = (k_c + g P_method(c)) / (K + g)``, ``P_key(c) = (a_c + d P_principal(c)) / (A + d)``.
  A country the organization never saw gets almost no mass at the top, so it stays improbable at
  every level below: brand-new countries score highest, which Elastic's per-country models
  cannot do. A country the principal works from every day gets most of the principal's mass
  whatever the method, so a familiar country is weak evidence even for a rare method.
* Rarity is Elastic's "probability of less likely categories" on the final distribution:
  ``p_tail = sum of P(c') over every country c' with P(c') <= P(c)``, and the score is its
  surprisal on a 0-100 scale: ``100 * min(1, ln p_tail / ln p_full)``, with ``p_full = 1e-4``
  (a 1-in-10,000 event scores 100; a 1-in-100 event scores 50, the default threshold).
* A method's own model needs ``learning_buckets`` hours of history (Elastic's 20) before it is
  used: a young or never-seen method adds no evidence; its calls are then scored on the
  organization's and the principal's history alone. Nothing alerts before the organization's
  baseline spans ``learning_days``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from trailgeo.core.aggregate import CategoryGroup, HitGroup
from trailgeo.core.counters import (
    DEFAULT_HALF_LIFE_HOURS,
    EMPTY,
    ERROR_LEVELS,
    ORG_CITIES,
    ORG_EGRESS_HOURS,
    ORG_ERROR_LEVELS,
    ORG_ERRORS,
    ORG_METHODS,
    ORG_PARTITION,
    OTHER_CATEGORY,
    TOTAL,
    CounterState,
    access_key_partition,
    category_sort_key,
    country_sort_key,
    decay_weight,
    error_levels_partition,
    hour_of,
    identity_index_partition,
    is_long_term_key,
    method_cities_partition,
    method_partition,
    principal_cities_partition,
    principal_partition,
    user_methods_partition,
)
from trailgeo.core.identities import identity_of, role_of
from trailgeo.core.sensitive import is_sensitive, tactics_of
from trailgeo.core.tuning import DEFAULT_METHOD_POLICY, MethodPolicy

History = dict[str, dict[str, CounterState]]  # partition -> sort key -> counter
TOP_COUNTRIES = 5
# ISO 3166-1 has 249 country codes; the base measure spreads the unseen mass over them.
COUNTRY_CODES = 250
# At the organization and method levels one identity (a role, a person, a user) vouches for at
# most this many decayed hourly buckets of a country: a day of calls. A country is as common to
# the organization as the identities calling from it make it, not as one identity's hours do.
IDENTITY_VOUCH_BUCKETS = 24.0


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    threshold: float = 50.0
    learning_buckets: int = 20  # Elastic's documented minimum for a model to score
    learning_days: float = 7.0
    # Concentrations of the hierarchy: how many hourly buckets of evidence the level above is
    # worth. 1 is the classic "add one" choice; docs/scoring.md shows the effect of each.
    org_concentration: float = 1.0
    method_concentration: float = 1.0
    role_concentration: float = 1.0
    principal_concentration: float = 1.0
    key_concentration: float = 1.0
    full_score_tail: float = 1e-4  # a tail probability this small scores 100
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS
    user_method_threshold: float = 75.0  # Elastic's rule for rare_method_for_a_username alerts at 75


@dataclass(frozen=True, slots=True)
class LevelView:
    """One level's decayed buckets for the hit's country, out of its total."""

    level: str  # "organization" | "method" | "principal" | "access key"
    country: float
    total: float

    @property
    def share(self) -> float:
        return self.country / self.total if self.total else 0.0


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
    probability: float  # P(this country) for this call under the model
    p_tail: float  # P(a country at most as likely)
    method_model: str  # "trained" or "learning" (fewer than learning_buckets: adds no evidence)
    sensitive: bool
    tactics: tuple[str, ...]
    suppressed: str | None  # why a high score does not alert: "org_learning", "ignored_method"
    threshold: float | None = None  # the tuning's threshold for this method, if it has one

    @property
    def alerts(self) -> bool:
        return self.suppressed is None

    def reasons(self) -> str:
        if self.method_model == "learning":
            seen = (
                f"method new to the organization ({self.method_buckets} hourly buckets of history, "
                "still learning: scored on the organization's and the principal's history)"
            )
        elif self.country_buckets == 0:
            seen = f"never called from this country in {self.method_buckets} hourly buckets"
        else:
            seen = (
                f"called from this country in {self.country_buckets} of {self.method_buckets} hourly buckets"
            )
        return f"{self.method}: {seen}"


@dataclass(frozen=True, slots=True)
class GroupScore:
    group: HitGroup
    methods: tuple[MethodScore, ...]  # every method of the group, highest score first
    principal_countries: tuple[tuple[str, float], ...]
    principal_buckets: int
    principal_country_buckets: int
    principal_first_seen: str | None
    org_country_buckets: int
    org_buckets: int
    org_countries: int  # distinct countries in the organization's history
    org_first_seen: str | None
    levels: tuple[LevelView, ...]  # organization, principal, access key(s), for the hit's country

    @property
    def score(self) -> float:
        return max((m.score for m in self.methods), default=0.0)

    @property
    def new_to_org(self) -> bool:
        return self.org_country_buckets == 0

    @property
    def new_to_principal(self) -> bool:
        return self.principal_country_buckets == 0

    def rare_methods(self, threshold: float) -> tuple[MethodScore, ...]:
        return tuple(
            m
            for m in self.methods
            if m.alerts and m.score >= (threshold if m.threshold is None else m.threshold)
        )


def _countries(partition: Mapping[str, CounterState], scale: float) -> dict[str, float]:
    """Decayed buckets per country, from the TOTAL counter's copy of its countries.

    A capped map's overflow (``OTHER_CATEGORY``, the mass of its lightest categories) stays in:
    it counts in the level's total, and as a candidate it is one category at least as likely as
    each it holds, so it joins a value's tail only when all of them would (rarity errs toward
    alerting). No report names it: ``_top`` leaves it out, and the scorers report only the values
    a run saw, and no real category takes its name."""
    total = partition.get(TOTAL, EMPTY)
    return {cc: wsum / scale for cc, (buckets, wsum) in total.countries.items() if buckets > 0}


def _top(countries: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    ranked = sorted(
        ((cc, weight) for cc, weight in countries.items() if cc != OTHER_CATEGORY),
        key=lambda item: (-item[1], item[0]),
    )
    return tuple((cc, round(weight, 2)) for cc, weight in ranked[:TOP_COUNTRIES])


Level = tuple[Mapping[str, float], float]  # (decayed buckets per country, concentration)
SummedLevel = tuple[Mapping[str, float], float, float]  # (decayed buckets, their sum, concentration)


def predictive(
    levels: Iterable[Level], candidates: Iterable[str], support: int = COUNTRY_CODES
) -> tuple[dict[str, float], float, int]:
    """The hierarchy's predictive distribution: (P per candidate, P of each category seen nowhere,
    how many such categories). Probabilities sum to one over the ``support`` categories."""
    summed = [(counts, sum(counts.values()), concentration) for counts, concentration in levels]
    return _predictive(summed, set(candidates), support)


def _predictive(
    levels: Iterable[SummedLevel], names: Collection[str], support: int
) -> tuple[dict[str, float], float, int]:
    """:func:`predictive` with each level's total given, (counts, total, concentration): a group's
    levels are summed once for all its methods (the same sums, in the same order)."""
    prob = dict.fromkeys(names, 1.0 / support)
    unseen = 1.0 / support
    for counts, total, concentration in levels:
        denominator = total + concentration
        get = counts.get
        prob = {name: (get(name, 0.0) + concentration * p) / denominator for name, p in prob.items()}
        unseen = concentration * unseen / denominator
    return prob, unseen, max(0, support - len(names))


def tail_probability(prob: Mapping[str, float], unseen: float, unseen_count: int, country: str) -> float:
    """Elastic's probability of less likely categories: P(next category is at most as likely)."""
    return tail_probabilities(prob, unseen, unseen_count, [country])[country]


def tail_probabilities(
    prob: Mapping[str, float], unseen: float, unseen_count: int, values: Iterable[str]
) -> dict[str, float]:
    """:func:`tail_probability` for many values at once (sorted once: thousands of methods)."""
    ranked = sorted(prob.values())
    cumulative = list(itertools.accumulate(ranked))
    tails = {}
    for value in values:
        own = prob[value] * (1.0 + 1e-9)  # float noise must not split equal categories
        at = bisect.bisect_right(ranked, own)
        tail = cumulative[at - 1] if at else 0.0
        if unseen <= own:
            tail += unseen * unseen_count
        tails[value] = min(1.0, tail)
    return tails


def surprisal_score(p_tail: float, full_score_tail: float) -> float:
    """0 for a certain event, 50 at sqrt(full_score_tail), 100 at full_score_tail or rarer."""
    if p_tail >= 1.0:
        return 0.0
    if p_tail <= full_score_tail:
        return 100.0
    return 100.0 * math.log(p_tail) / math.log(full_score_tail)


def score_group(
    group: HitGroup,
    history: History,
    policy: ScoringPolicy,
    now_hour: int,
    *,
    quarantined_hours: Collection[int] = (),
    quarantined_identities: Collection[str] = (),
    method_policy: Callable[[str], MethodPolicy] | None = None,
    method_views: MethodViews | None = None,
    vouched_shares: dict[str, float] | None = None,
) -> GroupScore:
    """Score every method of a group against ``history`` (the counters before this run).

    ``quarantined_hours``: hours of this group's subject (role, person) in this country since it
    alerted. They do not vouch for the country at the role, principal and key levels (an
    attacker's own calls must not make their country familiar); they count again once the
    quarantine ends or the country is allowlisted.
    ``quarantined_identities``: the identity digests (``identity_digest``) of every subject under
    quarantine in this country, this group's included: at the organization and method levels
    their buckets are taken out, so one alerted session does not make the country familiar to
    every other role either.
    ``method_policy``: the tuning's per-method overrides (ignore, threshold, sensitive).
    ``method_views``: shared by the groups of one run (same history, hour, policy and tuning), so
    that each method's history is summarised once per run, not once per group.
    ``vouched_shares``: likewise for each country's share its identities vouch for (the same
    ``quarantined_identities`` for every group of a country in one run).
    """
    scale = decay_weight(now_hour, policy.half_life_hours)
    country = group.country
    org_part = history.get(ORG_PARTITION, {})
    org_total = org_part.get(TOTAL, EMPTY)
    org_countries, vouched = _org_level(
        history, org_part, country, scale, quarantined_identities, vouched_shares
    )
    principal_part = history.get(principal_partition(identity_of(group.principal)), {})
    principal_countries = _countries(principal_part, scale)
    principal_country_buckets = principal_part.get(country_sort_key(country), EMPTY).buckets
    held = sum(decay_weight(h, policy.half_life_hours) for h in set(quarantined_hours)) / scale
    if held:
        _hold(principal_countries, country, held)
        principal_country_buckets = max(0, principal_country_buckets - len(set(quarantined_hours)))
    role = role_of(group.principal)
    role_countries = (
        _hold(_countries(history.get(principal_partition(role), {}), scale), country, held) if role else {}
    )
    keys = [k for k in group.access_keys if is_long_term_key(k)]
    key_levels = [
        (k, _hold(_countries(history.get(access_key_partition(k), {}), scale), country, held))
        for k in sorted(keys)
    ]
    org_young = _span_days(org_total.first_seen, now_hour) < policy.learning_days
    # Each level of the group summed once, for all its methods and its level views.
    org_sum, role_sum, principal_sum, key_sums = (
        sum(org_countries.values()),
        sum(role_countries.values()),
        sum(principal_countries.values()),
        [(k, counts, sum(counts.values())) for k, counts in key_levels],
    )
    org_level, role_level, principal_level = (
        (org_countries, org_sum, policy.org_concentration),
        (role_countries, role_sum, policy.role_concentration),
        (principal_countries, principal_sum, policy.principal_concentration),
    )
    group_candidates = {country, *org_countries, *role_countries, *principal_countries}

    summaries: MethodViews = {} if method_views is None else method_views
    scores = []
    for method, activity in group.methods.items():
        view = summaries.get(method)
        if view is None:
            view = summaries[method] = _method_view(method, history, policy, scale, method_policy)
        method_part, method_total, method_countries = view.part, view.total, view.countries
        method_sum = view.countries_sum
        if vouched < 1.0 and country in method_countries:
            # The method's buckets of the country, as vouched for as the organization's.
            method_countries = {**method_countries, country: method_countries[country] * vouched}
            method_sum = sum(method_countries.values())
        trained = view.trained
        above: list[SummedLevel] = [org_level]
        if trained:
            above.append((method_countries, method_sum, policy.method_concentration))
        if role_countries:
            above.append(role_level)
        above.append(principal_level)
        candidates = group_candidates.union(method_countries)
        # With several long-term keys in one group, the most surprising key speaks for the group.
        best: tuple[float, float] | None = None
        for _, key_countries, key_sum in key_sums or [("", {}, 0.0)]:
            chain = [*above, (key_countries, key_sum, policy.key_concentration)] if key_countries else above
            prob, unseen, unseen_count = _predictive(chain, candidates.union(key_countries), COUNTRY_CODES)
            p_tail = tail_probability(prob, unseen, unseen_count, country)
            if best is None or p_tail < best[1]:
                best = (prob[country], p_tail)
        probability, p_tail = best or (1.0, 1.0)
        override = view.override
        scores.append(
            MethodScore(
                method=method,
                score=round(surprisal_score(p_tail, policy.full_score_tail), 1),
                events=activity.events,
                hours_in_run=len(activity.hours),
                method_buckets=method_total.buckets,
                country_buckets=method_part.get(country_sort_key(country), EMPTY).buckets,
                method_first_seen=method_total.first_seen,
                top_countries=view.top,
                probability=probability,
                p_tail=p_tail,
                method_model="trained" if trained else "learning",
                sensitive=view.sensitive,
                tactics=view.tactics,
                suppressed="ignored_method" if override.ignore else "org_learning" if org_young else None,
                threshold=override.threshold,
            )
        )
    scores.sort(key=lambda m: (-m.score, m.method))
    views = [
        LevelView("organization", org_countries.get(country, 0.0), org_sum),
        *([LevelView("role", role_countries.get(country, 0.0), role_sum)] if role else []),
        LevelView("principal", principal_countries.get(country, 0.0), principal_sum),
        *(LevelView(f"access key {k}", counts.get(country, 0.0), total) for k, counts, total in key_sums),
    ]
    return GroupScore(
        group=group,
        methods=tuple(scores),
        principal_countries=_top(principal_countries),
        principal_buckets=principal_part.get(TOTAL, EMPTY).buckets,
        principal_country_buckets=principal_country_buckets,
        principal_first_seen=principal_part.get(TOTAL, EMPTY).first_seen,
        org_country_buckets=org_part.get(country_sort_key(country), EMPTY).buckets,
        org_buckets=org_total.buckets,
        org_countries=len(org_countries.keys() - {OTHER_CATEGORY}),
        org_first_seen=org_total.first_seen,
        levels=tuple(views),
    )


@dataclass(frozen=True, slots=True)
class MethodView:
    """What scoring reads of one method's history and tuning, the same for every group of a run."""

    part: Mapping[str, CounterState]
    total: CounterState
    countries: Mapping[str, float]  # decayed buckets per country (read only: groups share it)
    countries_sum: float  # their sum (summed once a run)
    top: tuple[tuple[str, float], ...]
    trained: bool
    override: MethodPolicy
    sensitive: bool
    tactics: tuple[str, ...]


MethodViews = dict[str, MethodView]


def _method_view(
    method: str,
    history: History,
    policy: ScoringPolicy,
    scale: float,
    method_policy: Callable[[str], MethodPolicy] | None,
) -> MethodView:
    part = history.get(method_partition(method), {})
    total = part.get(TOTAL, EMPTY)
    countries = _countries(part, scale)
    override = method_policy(method) if method_policy else DEFAULT_METHOD_POLICY
    return MethodView(
        part=part,
        total=total,
        countries=countries,
        countries_sum=sum(countries.values()),
        top=_top(countries),
        trained=total.buckets >= policy.learning_buckets,
        override=override,
        sensitive=is_sensitive(method, override.sensitive),
        tactics=tactics_of(method),
    )


def _org_level(
    history: History,
    org_part: Mapping[str, CounterState],
    country: str,
    scale: float,
    quarantined: Collection[str],
    shares: dict[str, float] | None,
) -> tuple[dict[str, float], float]:
    """The organization's decayed buckets per country, the hit's country's as its identities
    vouch for it, and that share (cached in ``shares`` per country)."""
    org_countries = _countries(org_part, scale)
    shares = {} if shares is None else shares
    if country not in shares:
        shares[country] = _vouched_share(history, org_part, org_countries, country, scale, quarantined)
    vouched = shares[country]
    if vouched < 1.0:
        org_countries[country] = org_countries[country] * vouched
    return org_countries, vouched


def _vouched_share(
    history: History,
    org_part: Mapping[str, CounterState],
    org_countries: Mapping[str, float],
    country: str,
    scale: float,
    quarantined: Collection[str],
) -> float:
    """How much of the organization's buckets of ``country`` its identities vouch for (0 to 1).

    The hours held at the organization's learned egress there (``OXH``) are taken out first: the
    gateway's country is not where its users are. Then from the country's identity index
    (``I#<country>``): identities under quarantine vouch for
    nothing (their buckets are taken out), the others for at most ``IDENTITY_VOUCH_BUCKETS`` each.
    The cap applies only when the index is as old as the country's history (a table from before
    the index would otherwise see its familiar countries turn rare on upgrade); taking out the
    quarantined always applies. Taking out a quarantined identity's buckets may take out hours
    another identity shared: the country looks rarer, never more familiar."""
    org_buckets = org_countries.get(country, 0.0)
    egress = history.get(ORG_EGRESS_HOURS, {}).get(country_sort_key(country), EMPTY)
    taken_out = egress.wsum / scale if egress.buckets > 0 else 0.0
    if not org_buckets:
        return 1.0
    index = history.get(identity_index_partition(country), {}).get(TOTAL)
    if index is None or not index.countries:
        return min(1.0, max(0.0, org_buckets - taken_out) / org_buckets)
    held = set(quarantined)
    vouching = 0.0
    for digest, (buckets, wsum) in index.countries.items():
        weight = wsum / scale if buckets > 0 else 0.0
        if digest in held:
            taken_out += weight
        elif digest == OTHER_CATEGORY:  # many identities, folded when the index was capped
            vouching += weight
        else:
            vouching += min(weight, IDENTITY_VOUCH_BUCKETS)
    left = max(0.0, org_buckets - taken_out)
    country_first = org_part.get(country_sort_key(country), EMPTY).first_seen
    first_indexed = hour_of(index.first_seen) if index.first_seen else None
    first_counted = hour_of(country_first) if country_first else None
    if first_indexed is not None and (first_counted is None or first_indexed <= first_counted + 1):
        left = min(left, vouching)
    return min(1.0, left / org_buckets)


def _hold(countries: dict[str, float], country: str, held: float) -> dict[str, float]:
    """Take quarantined (alerted) hours out of one of the principal's own levels."""
    if held and country in countries:
        countries[country] = max(0.0, countries[country] - held)
        if countries[country] <= 1e-9:
            del countries[country]
    return countries


def _span_days(first_seen: str | None, now_hour: int) -> float:
    first = hour_of(first_seen) if first_seen else None
    return 0.0 if first is None else (now_hour - first) / 24.0


# ---------------------------------------------------------------------------------------------
# Sibling detectors from the same pass (off unless configured): the same predictive hierarchy
# and surprisal score, over other categories.
# ---------------------------------------------------------------------------------------------
# AWS has about 15,000 API actions and a few hundred error codes: the base measures' supports.
METHOD_NAMES = 15_000
ERROR_CODES = 500
CITY_NAMES = 100_000  # cities in a City database, roughly


@dataclass(frozen=True, slots=True)
class CategoryScore:
    value: str  # the method (user_method), the error code (error_code), the error level (error_spike)
    score: float
    events: int
    own_buckets: int  # hourly buckets of it in the history that is scored against
    own_total: int  # all hourly buckets of that history
    org_buckets: int  # the organization's hourly buckets of it (user_method)
    probability: float
    p_tail: float


@dataclass(frozen=True, slots=True)
class SiblingScore:
    detector: str  # "user_method" | "error_code" | "city" | "error_spike"
    account: str
    principal: str
    sources: tuple[HitGroup, ...]  # the (principal, country) groups the calls came from: evidence
    items: tuple[CategoryScore, ...]  # highest score first
    # "learning" (too little history), "org_learning", "few_errors" (an error spike under the floor)
    suppressed: str | None
    threshold: float
    context: str = ""  # the city ("CC/City") for the city detector

    @property
    def score(self) -> float:
        return max((i.score for i in self.items), default=0.0)

    def rare(self) -> tuple[CategoryScore, ...]:
        if self.suppressed is not None:
            return ()
        return tuple(i for i in self.items if i.score >= self.threshold)


def score_user_methods(
    group: HitGroup, history: History, policy: ScoringPolicy, now_hour: int
) -> SiblingScore:
    """Unusual AWS command for a user: how rare each method is for this principal, backing off to
    the organization's methods (Elastic's ``rare_method_for_a_username``, plus the back-off)."""
    scale = decay_weight(now_hour, policy.half_life_hours)
    org_part = history.get(ORG_PARTITION, {})
    methods_part = history.get(ORG_METHODS, {})
    user_part = history.get(user_methods_partition(identity_of(group.principal)), {})
    org_methods = _countries(methods_part, scale)
    user_methods = _countries(user_part, scale)
    user_total = user_part.get(TOTAL, EMPTY)
    levels: list[Level] = [
        (org_methods, policy.org_concentration),
        (user_methods, policy.principal_concentration),
    ]
    candidates = {*org_methods, *user_methods, *group.methods}
    prob, unseen, unseen_count = predictive(levels, candidates, METHOD_NAMES)
    tails = tail_probabilities(prob, unseen, unseen_count, group.methods)
    items = sorted(
        (
            CategoryScore(
                value=method,
                score=round(surprisal_score(tails[method], policy.full_score_tail), 1),
                events=activity.events,
                own_buckets=user_part.get(category_sort_key(method), EMPTY).buckets,
                own_total=user_total.buckets,
                org_buckets=methods_part.get(TOTAL, EMPTY).countries.get(method, (0, 0.0))[0],
                probability=prob[method],
                p_tail=tails[method],
            )
            for method, activity in group.methods.items()
        ),
        key=lambda i: (-i.score, i.value),
    )
    return SiblingScore(
        detector="user_method",
        account=group.account,
        principal=group.principal,
        sources=(group,),
        items=tuple(items),
        suppressed=_sibling_learning(user_total, org_part, policy, now_hour),
        threshold=policy.user_method_threshold,
    )


def score_error_codes(
    group: CategoryGroup, history: History, policy: ScoringPolicy, now_hour: int
) -> SiblingScore:
    """Rare AWS error code: how rare the code is for the organization (Elastic's
    ``rare_error_code``), for the principal that got it."""
    scale = decay_weight(now_hour, policy.half_life_hours)
    codes_part = history.get(ORG_ERRORS, {})
    codes = _countries(codes_part, scale)
    total = codes_part.get(TOTAL, EMPTY)
    prob, unseen, unseen_count = predictive(
        [(codes, policy.org_concentration)], {*codes, group.value}, ERROR_CODES
    )
    tail = tail_probability(prob, unseen, unseen_count, group.value)
    seen = codes_part.get(category_sort_key(group.value), EMPTY).buckets  # the history is the org's
    item = CategoryScore(
        value=group.value,
        score=round(surprisal_score(tail, policy.full_score_tail), 1),
        events=sum(a.events for a in group.methods.values()),
        own_buckets=seen,
        own_total=total.buckets,
        org_buckets=seen,
        probability=prob[group.value],
        p_tail=tail,
    )
    return SiblingScore(
        detector="error_code",
        account=group.account,
        principal=group.principal,
        sources=tuple(group.sources),
        items=(item,),
        suppressed=_sibling_learning(total, history.get(ORG_PARTITION, {}), policy, now_hour),
        threshold=policy.threshold,
    )


# An error spike pages only from this many errors in one identity's hour (as one run saw it): a
# handful of denied calls is a script's bad day, an enumeration makes hundreds.
ERROR_SPIKE_MIN_EVENTS = 100


def score_error_spike(
    group: CategoryGroup, history: History, policy: ScoringPolicy, now_hour: int
) -> SiblingScore:
    """Spike in AWS error messages: how unusual the level of an identity's busiest error hour is
    for that identity (its ``ES#`` history of hourly error levels), backing off to the
    organization's (``OS``). The tail is the upper one (Elastic's ``high_*`` functions): the
    probability of an hour with at least this many errors, so that a quiet hour is never a spike."""
    scale = decay_weight(now_hour, policy.half_life_hours)
    org_part = history.get(ORG_ERROR_LEVELS, {})
    own_part = history.get(error_levels_partition(group.principal), {})
    org_levels = _countries(org_part, scale)
    own_levels = _countries(own_part, scale)
    prob, _, _ = predictive(
        [(org_levels, policy.org_concentration), (own_levels, policy.principal_concentration)],
        ERROR_LEVELS,
        len(ERROR_LEVELS),
    )
    at = ERROR_LEVELS.index(group.value)
    tail = min(1.0, sum(prob[level] for level in ERROR_LEVELS[at:]))
    events = sum(a.events for a in group.methods.values())
    own_total = own_part.get(TOTAL, EMPTY)
    item = CategoryScore(
        value=group.value,
        score=round(surprisal_score(tail, policy.full_score_tail), 1),
        events=events,
        own_buckets=own_part.get(category_sort_key(group.value), EMPTY).buckets,
        own_total=own_total.buckets,
        org_buckets=org_part.get(category_sort_key(group.value), EMPTY).buckets,
        probability=prob[group.value],
        p_tail=tail,
    )
    suppressed = _sibling_learning(own_total, history.get(ORG_PARTITION, {}), policy, now_hour)
    if suppressed is None and events < ERROR_SPIKE_MIN_EVENTS:
        suppressed = "few_errors"
    return SiblingScore(
        detector="error_spike",
        account=group.account,
        principal=group.principal,
        sources=tuple(group.sources),
        items=(item,),
        suppressed=suppressed,
        threshold=policy.threshold,
    )


def score_cities(
    group: CategoryGroup, history: History, policy: ScoringPolicy, now_hour: int
) -> SiblingScore:
    """Unusual city for an AWS command (Elastic's ``rare_method_for_a_city``): the country model's
    hierarchy (organization -> method -> principal) over cities instead of countries."""
    scale = decay_weight(now_hour, policy.half_life_hours)
    org_part = history.get(ORG_CITIES, {})
    org_cities = _countries(org_part, scale)
    principal_part = history.get(principal_cities_partition(identity_of(group.principal)), {})
    principal_cities = _countries(principal_part, scale)
    city = group.value
    items = []
    for method, activity in group.methods.items():
        method_part = history.get(method_cities_partition(method), {})
        method_cities = _countries(method_part, scale)
        levels: list[Level] = [(org_cities, policy.org_concentration)]
        if method_part.get(TOTAL, EMPTY).buckets >= policy.learning_buckets:
            levels.append((method_cities, policy.method_concentration))
        levels.append((principal_cities, policy.principal_concentration))
        candidates = {city, *org_cities, *method_cities, *principal_cities}
        prob, unseen, unseen_count = predictive(levels, candidates, CITY_NAMES)
        tail = tail_probability(prob, unseen, unseen_count, city)
        items.append(
            CategoryScore(
                value=method,
                score=round(surprisal_score(tail, policy.full_score_tail), 1),
                events=activity.events,
                own_buckets=principal_part.get(category_sort_key(city), EMPTY).buckets,
                own_total=principal_part.get(TOTAL, EMPTY).buckets,
                org_buckets=org_part.get(category_sort_key(city), EMPTY).buckets,
                probability=prob[city],
                p_tail=tail,
            )
        )
    items.sort(key=lambda i: (-i.score, i.value))
    return SiblingScore(
        detector="city",
        account=group.account,
        principal=group.principal,
        sources=tuple(group.sources),
        items=tuple(items),
        suppressed=_sibling_learning(
            org_part.get(TOTAL, EMPTY), history.get(ORG_PARTITION, {}), policy, now_hour
        ),
        threshold=policy.threshold,
        context=city,
    )


def _sibling_learning(
    own_total: CounterState, org_part: Mapping[str, CounterState], policy: ScoringPolicy, now_hour: int
) -> str | None:
    if own_total.buckets < policy.learning_buckets:
        return "learning"
    if _span_days(org_part.get(TOTAL, EMPTY).first_seen, now_hour) < policy.learning_days:
        return "org_learning"
    return None
