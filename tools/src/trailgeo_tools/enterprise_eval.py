"""``trailgeo-tools eval --org enterprise``: trailgeo on the simulated enterprise, against issue 15's targets.

The enterprise (:mod:`trailgeo_tools.enterprise`) is replayed through the production detector
(:func:`trailgeo.app.replay.replay`, default :class:`RunOptions`, a tick every 15 minutes), and every
alert is matched against the ground truth's incidents. The unit of truth is the **incident group**: a
role chain across three accounts, the two phases of a low-and-slow theft, an offsite or a conference
are one incident each.

* An **alert** is every alert the detector raised: each published one and each carried inside a
  roll-up (``rolled_up``, an alert flood sent as one message). A **notification** is a published
  one (updates of an earlier alert, ``follows_alert_id``, included). A **page** is a notification
  that opens or escalates a thread: every one but a quiet update (``Alert.is_update``: an
  incident's update, a re-alert no more severe than its subject's earlier alerts; sent in the
  thread, SNS attribute ``notification=update``, not an alert in OCSF's sense: the issue's
  "updates rather than new pages").
* An alert **matches** an incident when its account is one of the incident's, its principal one of
  its principals, its location its country, and its event times overlap the incident's by an hour
  either side (a rolled-up alert has its carrier's times).
* **Recall**: attack incidents with at least one matching alert (at any severity; at ``high`` or
  ``critical``). **Precision at >= high**: alerts at ``high``/``critical`` that match an attack
  incident over all alerts at ``high``/``critical``. **Notifications per attack incident**: the
  notifications holding a matching alert, per detected attack incident (mean; the max is reported);
  **pages per attack incident** the same for pages (the target's figure: a notification that is no
  quiet update, whatever its severity). **On-call pager pages**: those of them at high or critical,
  what a ``PagingEndpoint`` subscribed at the default ``PagingSeverity`` receives (reported beside
  the target, not instead of it).
* **Benign alerts** are every alert that matches no attack: those matching a benign incident (by
  ``benign_kind``) and the unexplained rest (by the kind of principal: person, vendor, automation).
  "Alerts per benign incident" divides all benign alerts by the benign incidents; per kind, only the
  alerts matching that kind's incidents. "Benign pages" are the pages holding a benign alert.

The targets (printed as ``TARGET PASS``/``FAIL`` lines): every attack incident has an alert at
>= high; precision at >= high >= 0.8; <= 1.2 pages per attack incident; benign alerts at most
medium and <= 0.5 per benign incident.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trailgeo.app.detect import RunOptions
from trailgeo.core.alert_builder import rarity_severity
from trailgeo.core.alerts import PAGING_NOTIFICATIONS, SEVERITY_LEVELS, Alert, paging_filter_policy
from trailgeo.core.detectors import COUNTRY
from trailgeo.core.evidence import (
    FACTORS,
    HOSTING_PROVIDER,
    MFA_SIGN_IN,
    REGISTRY,
    SHARED_EGRESS,
    evidenced_severity,
    raised,
)
from trailgeo.ports import GeoResolver
from trailgeo_tools.enterprise import (
    EnterpriseConfig,
    EnterpriseSimulation,
    enterprise_config,
    simulate_enterprise,
    write_enterprise_tree,
)
from trailgeo_tools.evaluation import MATCH_SLACK, ListAlertSink, iso, parse_time

HIGH = frozenset({"high", "critical"})
# What the on-call pager lets through at the default PagingSeverity (the product's own filter policy).
_PAGER = paging_filter_policy("high")
PRECISION_TARGET = 0.8
NOTIFICATIONS_TARGET = 1.2
BENIGN_PER_INCIDENT_TARGET = 0.5

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class GroundIncident:
    """One incident of the enterprise's ground truth."""

    id: str
    kind: str  # "attack" | "benign"
    benign_kind: str | None
    scenario: str
    group: str
    accounts: frozenset[str]
    principals: frozenset[str]
    country: str
    first_event: datetime
    last_event: datetime
    first_delivery: datetime
    new_to_org: bool
    new_to_principal: bool

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> GroundIncident:
        times = [parse_time(str(item[k])) for k in ("first_event", "last_event", "first_delivery")]
        first, last, delivery = times
        if first is None or last is None or delivery is None:
            raise ValueError(f"incident {item.get('id')}: bad times")
        return cls(
            id=str(item["id"]),
            kind=str(item["kind"]),
            benign_kind=item.get("benign_kind"),
            scenario=str(item["scenario"]),
            group=str(item["incident_group"]),
            accounts=frozenset(item["account_ids"]),
            principals=frozenset(item["principal_arns"]),
            country=str(item["country"]),
            first_event=first,
            last_event=last,
            first_delivery=delivery,
            new_to_org=bool(item["country_new_to_org"]),
            new_to_principal=bool(item["country_new_to_principal"]),
        )


@dataclass(frozen=True, slots=True)
class Hit:
    """One alert of the detector: published (``notification`` its index) or carried in a roll-up."""

    notification: int
    account: str
    principal: str
    country: str
    severity: str
    first_event: datetime
    last_event: datetime
    detected_at: datetime
    page: bool  # False for a quiet update (Alert.is_update)
    # Reaches the on-call pager subscribed at the default PagingSeverity (template.yaml): it pages
    # and its notification is high or critical (docs/notifications.md#paging-the-on-call).
    pager: bool = False

    def matches(self, inc: GroundIncident) -> bool:
        return (
            self.account in inc.accounts
            and self.principal in inc.principals
            and self.country == inc.country
            and self.first_event <= inc.last_event + MATCH_SLACK
            and self.last_event >= inc.first_event - MATCH_SLACK
        )


def hits_of(alerts: Sequence[Alert]) -> list[Hit]:
    """Every alert, the rolled-up ones after their carrier (with its event times)."""
    out: list[Hit] = []
    for k, a in enumerate(alerts):
        detected = a.detected_at
        first = parse_time(a.first_event_time) or detected
        last = parse_time(a.last_event_time) or first
        page = not a.is_update
        pager = a.notification in PAGING_NOTIFICATIONS and a.severity in _PAGER["severity"]
        out.append(
            Hit(k, a.cloud.account.id, a.principal, a.country, a.severity, first, last, detected, page, pager)
        )
        out.extend(
            Hit(k, r.account, r.principal, r.location, r.severity, first, last, detected, page, pager)
            for r in a.rolled_up
        )
    return out


def replay_alerts(logs: Path, geo: GeoResolver, options: RunOptions | None = None) -> list[Alert]:
    from trailgeo.app.replay import replay

    sink = ListAlertSink()
    replay(logs, geo, sink, options or RunOptions(), on_tick=lambda r: sink.stamp(r.scheduled_at))
    return sink.as_received()


# ------------------------------------------------------------------------------------------------
# Ablation: what each part of the severity buys
# ------------------------------------------------------------------------------------------------
def ablation_variants() -> dict[str, frozenset[str]]:
    """The evidence factors left in, by variant: every one, none (the rarity alone), and each left
    out in turn. ``mfa_sign_in`` weighs nothing and holds alerts back, so no recomputed severity
    shows it: what it buys is measured by a replay without it (``eval --without mfa_sign_in``)."""
    parts = frozenset(REGISTRY)
    variants = {"all": parts, "rarity alone": frozenset[str]()}
    for part in sorted(parts - {MFA_SIGN_IN.name}):
        variants[f"without {part}"] = parts - {part}
    return variants


def severity_with(alert: Alert, parts: frozenset[str]) -> str:
    """A country alert's severity as it would be with only the factors ``parts`` weighing in:
    recomputed from its score and its evidence (a factor sets a severity; the alerts that
    ``concurrent_use`` makes under the threshold and those the learned egress holds back are the
    replay's, in every variant). Without ``shared_egress`` a hosting address the run recognised as the
    organization's own egress counts as hosting again. Other detectors' alerts keep theirs. A
    notification carrying others (an incident's members, the alerts that joined a first
    notification while it waited) is at the highest of them all, each recomputed."""
    own = _recomputed(
        alert.detector,
        alert.severity,
        alert.score,
        {e.factor: e.raises for e in alert.evidence},
        bool(alert.correlated_detectors),
        parts,
    )
    members = alert.incident.members if alert.incident is not None else []
    return max(
        [
            own,
            *(_recomputed(m.detector, m.severity, m.score, m.factors, m.correlated, parts) for m in members),
        ],
        key=SEVERITY_LEVELS.index,
    )


def variant_severities(alert: Alert) -> dict[str, tuple[str, ...]]:
    """For each ablation variant (``ablation_variants``): the alert's own severity recomputed, then
    each incident member's, in order (each alert of a notification judged on its own evidence: the
    small organization's ablation matches each to its planted incident)."""
    members = alert.incident.members if alert.incident is not None else []
    factors = {e.factor: e.raises for e in alert.evidence}
    correlated = bool(alert.correlated_detectors)
    return {
        name: (
            _recomputed(alert.detector, alert.severity, alert.score, factors, correlated, parts),
            *(_recomputed(m.detector, m.severity, m.score, m.factors, m.correlated, parts) for m in members),
        )
        for name, parts in ablation_variants().items()
    }


def _recomputed(
    detector: str,
    severity: str,
    score: float,
    factors: Mapping[str, int],
    correlated: bool,
    parts: frozenset[str],
) -> str:
    """One alert's severity with only ``parts`` weighing in (``severity_with``)."""
    if detector != COUNTRY.name:
        return severity
    weighing = {factor: raises for factor, raises in factors.items() if factor in parts}
    if SHARED_EGRESS.name in factors and SHARED_EGRESS.name not in parts and HOSTING_PROVIDER.name in parts:
        weighing[HOSTING_PROVIDER.name] = HOSTING_PROVIDER.raises
    return raised(evidenced_severity(rarity_severity(score), weighing), correlated)


def ablation(alerts: Sequence[Alert], truth: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variant's figures on the same replay's alerts (published alerts recomputed; alerts
    rolled up in a flood keep the severity they were published with)."""
    out: dict[str, dict[str, Any]] = {}
    for name, parts in ablation_variants().items():
        varied = [a.model_copy(update={"severity": severity_with(a, parts)}) for a in alerts]
        figures = evaluate_enterprise(varied, truth)
        out[name] = {k: figures[k] for k in _SUMS}
    return out


def _cause(hit: Hit, truth: Mapping[str, Any]) -> str:
    """Who an unexplained alert is about: a person, a vendor's role, automation, or other."""
    kinds = (("person", "people"), ("vendor", "vendors"), ("automation", "automation"))
    for label, key in kinds:
        if any(hit.principal in item.get("arns", []) for item in truth.get(key, [])):
            return label
    return "other"


def evaluate_enterprise(alerts: Sequence[Alert], truth: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure of one seed, JSON-ready."""
    incidents = [GroundIncident.from_json(i) for i in truth["incidents"]]
    hits = hits_of(alerts)
    groups: dict[str, list[GroundIncident]] = defaultdict(list)
    for inc in incidents:
        groups[inc.group].append(inc)
    attack_groups = {g: incs for g, incs in groups.items() if incs[0].kind == "attack"}
    benign_groups = {g: incs for g, incs in groups.items() if incs[0].kind != "attack"}
    matched: list[set[str]] = [{inc.group for inc in incidents if h.matches(inc)} for h in hits]
    attacks = [_attack_row(g, incs, hits, matched) for g, incs in sorted(attack_groups.items())]
    high = [h for h in hits if h.severity in HIGH]
    high_true = sum(
        1 for h, m in zip(hits, matched, strict=True) if h.severity in HIGH and m & set(attack_groups)
    )
    benign_hits = [(h, m) for h, m in zip(hits, matched, strict=True) if not m & set(attack_groups)]
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({incs[0].benign_kind or "other" for incs in benign_groups.values()}):
        names = [g for g, incs in benign_groups.items() if (incs[0].benign_kind or "other") == kind]
        counts = [sum(1 for _, m in benign_hits if g in m) for g in names]
        by_kind[kind] = {"incidents": len(names), "alerts": sum(counts), "max_alerts": max(counts)}
    unexplained = Counter(_cause(h, truth) for h, m in benign_hits if not m)
    detected = [r for r in attacks if r["detected"]]
    return {
        "alerts": len(hits),
        "notifications": len(alerts),
        "attack_incidents": len(attacks),
        "attacks_detected": len(detected),
        "attacks_detected_high": sum(1 for r in attacks if r["detected_high"]),
        "alerts_high": len(high),
        "alerts_high_on_attacks": high_true,
        "notifications_on_attacks": sum(r["notifications"] for r in detected),
        "max_notifications_per_attack": max((r["notifications"] for r in attacks), default=0),
        "pages_on_attacks": sum(r["pages"] for r in detected),
        "max_pages_per_attack": max((r["pages"] for r in attacks), default=0),
        "pager_pages_on_attacks": sum(r["pager_pages"] for r in detected),
        "benign_incidents": len(benign_groups),
        "benign_alerts": len(benign_hits),
        "benign_alerts_matched": sum(1 for _, m in benign_hits if m),
        "benign_pages": len({h.notification for h, _ in benign_hits if h.page}),
        "benign_pager_pages": len({h.notification for h, _ in benign_hits if h.pager}),
        "benign_severity": {s: sum(1 for h, _ in benign_hits if h.severity == s) for s in SEVERITY_LEVELS},
        "benign_by_kind": by_kind,
        "unexplained_by_cause": dict(sorted(unexplained.items())),
        "unexplained": [
            {
                "account": h.account,
                "principal": h.principal,
                "country": h.country,
                "severity": h.severity,
                "first_event": iso(h.first_event),
            }
            for h, m in benign_hits
            if not m
        ],
        "attacks": attacks,
    }


def _attack_row(
    group: str, incs: Sequence[GroundIncident], hits: Sequence[Hit], matched: Sequence[set[str]]
) -> dict[str, Any]:
    mine = sorted((h for h, m in zip(hits, matched, strict=True) if group in m), key=lambda h: h.detected_at)
    high = [h for h in mine if h.severity in HIGH]
    delivery = min(i.first_delivery for i in incs)

    def latency(found: Sequence[Hit]) -> float | None:
        return round((found[0].detected_at - delivery).total_seconds() / 60, 1) if found else None

    return {
        "group": group,
        "scenario": incs[0].scenario,
        "country": incs[0].country,
        "accounts": len({a for i in incs for a in i.accounts}),
        "principals": len({p for i in incs for p in i.principals}),
        "new_to_org": any(i.new_to_org for i in incs),
        "new_to_principal": any(i.new_to_principal for i in incs),
        "detected": bool(mine),
        "detected_high": bool(high),
        "alerts": len(mine),
        "notifications": len({h.notification for h in mine}),
        "pages": len({h.notification for h in mine if h.page}),
        "pager_pages": len({h.notification for h in mine if h.pager}),
        "severities": sorted({h.severity for h in mine}, key=SEVERITY_LEVELS.index),
        "latency_min": latency(mine),
        "latency_high_min": latency(high),
    }


_SUMS = (
    "alerts",
    "notifications",
    "attack_incidents",
    "attacks_detected",
    "attacks_detected_high",
    "alerts_high",
    "alerts_high_on_attacks",
    "notifications_on_attacks",
    "pages_on_attacks",
    "pager_pages_on_attacks",
    "benign_incidents",
    "benign_alerts",
    "benign_alerts_matched",
    "benign_pages",
    "benign_pager_pages",
)


def aggregate_enterprise(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The seeds' figures summed, ratios recomputed from the sums."""
    total: dict[str, Any] = {k: sum(m[k] for m in per_seed) for k in _SUMS}
    if all("ablation" in m for m in per_seed) and per_seed:
        total["ablation"] = {
            name: (row := {k: sum(m["ablation"][name][k] for m in per_seed) for k in _SUMS}) | ratios(row)
            for name in per_seed[0]["ablation"]
        }
    for most in ("max_notifications_per_attack", "max_pages_per_attack"):
        total[most] = max((m[most] for m in per_seed), default=0)
    total["benign_severity"] = {s: sum(m["benign_severity"][s] for m in per_seed) for s in SEVERITY_LEVELS}
    kinds: dict[str, dict[str, Any]] = {}
    for m in per_seed:
        for kind, row in m["benign_by_kind"].items():
            acc = kinds.setdefault(kind, {"incidents": 0, "alerts": 0, "max_alerts": 0})
            acc["incidents"] += row["incidents"]
            acc["alerts"] += row["alerts"]
            acc["max_alerts"] = max(acc["max_alerts"], row["max_alerts"])
    total["benign_by_kind"] = dict(sorted(kinds.items()))
    causes: Counter[str] = Counter()
    for m in per_seed:
        causes.update(m["unexplained_by_cause"])
    total["unexplained_by_cause"] = dict(sorted(causes.items()))
    total["attacks"] = [r for m in per_seed for r in m["attacks"]]
    return total | ratios(total)


def ratios(m: Mapping[str, Any]) -> dict[str, float | None]:
    def div(a: float, b: float) -> float | None:
        return None if not b else round(a / b, 3)

    return {
        "recall": div(m["attacks_detected"], m["attack_incidents"]),
        "recall_high": div(m["attacks_detected_high"], m["attack_incidents"]),
        "precision_high": div(m["alerts_high_on_attacks"], m["alerts_high"]),
        "notifications_per_attack": div(m["notifications_on_attacks"], m["attacks_detected"]),
        "pages_per_attack": div(m["pages_on_attacks"], m["attacks_detected"]),
        "pager_pages_per_attack": div(m["pager_pages_on_attacks"], m["attacks_detected"]),
        "benign_per_incident": div(m["benign_alerts"], m["benign_incidents"]),
        "benign_matched_per_incident": div(m["benign_alerts_matched"], m["benign_incidents"]),
        "benign_pages_per_incident": div(m["benign_pages"], m["benign_incidents"]),
    }


def targets(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's targets on aggregate figures (``aggregate_enterprise`` or one seed with ``ratios``)."""
    out: list[dict[str, Any]] = []

    def add(name: str, passed: bool, value: str) -> None:
        out.append({"target": name, "passed": passed, "value": value})

    n, high = m["attack_incidents"], m["attacks_detected_high"]
    add("every attack incident has an alert at >= high", n > 0 and high == n, f"{high}/{n}")
    p = m["precision_high"]
    add(
        f"precision at >= high >= {PRECISION_TARGET}",
        p is not None and p >= PRECISION_TARGET,
        f"{p} ({m['alerts_high_on_attacks']}/{m['alerts_high']})",
    )
    per = m["pages_per_attack"]
    add(
        f"pages per attack incident <= {NOTIFICATIONS_TARGET}",
        per is not None and per <= NOTIFICATIONS_TARGET,
        f"{per} (max {m['max_pages_per_attack']}; notifications with quiet updates "
        f"{m['notifications_per_attack']}, max {m['max_notifications_per_attack']})",
    )
    sev = m["benign_severity"]
    loud = sev["high"] + sev["critical"]
    add("benign alerts at most low/medium", loud == 0, f"{loud} at high or critical of {m['benign_alerts']}")
    b = m["benign_per_incident"]
    add(
        f"<= {BENIGN_PER_INCIDENT_TARGET} alerts per benign incident",
        b is not None and b <= BENIGN_PER_INCIDENT_TARGET,
        f"{b} ({m['benign_alerts']} benign alerts / {m['benign_incidents']} benign incidents; "
        f"matching an incident: {m['benign_matched_per_incident']})",
    )
    return out


# ------------------------------------------------------------------------------------------------
# Running it
# ------------------------------------------------------------------------------------------------
def evaluate_enterprise_simulation(
    sim: EnterpriseSimulation,
    geo: GeoResolver,
    *,
    workdir: Path | None = None,
    progress: Progress = _quiet,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    truth = sim.ground_truth()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp) / "trail"
        started = time.perf_counter()
        write_enterprise_tree(sim, root)
        progress(f"  wrote {len(sim.files):,} objects ({time.perf_counter() - started:.1f} s)")
        started = time.perf_counter()
        alerts = replay_alerts(root, geo, options)
        replay_s = time.perf_counter() - started
        progress(f"  trailgeo replay: {len(alerts)} notifications ({replay_s:.1f} s)")
    figures = evaluate_enterprise(alerts, truth)
    figures["ablation"] = ablation(alerts, truth)
    people = truth["people"]
    return {
        "seed": sim.config.seed,
        "days": sim.config.days,
        "start": iso(sim.config.start),
        "events": sim.events_count,
        "events_per_day": truth["events_per_day"],
        "objects": len(sim.files),
        "people": len(people),
        "home_countries": len({p["country"] for p in people}),
        "accounts": len(truth["accounts"]),
        "replay_seconds": round(replay_s, 1),
        **figures,
        **ratios(figures),
        "alerts_list": [
            {
                "account": a.cloud.account.id,
                "principal": a.principal,
                "country": a.country,
                "severity": a.severity,
                "score": round(a.score, 2),
                "first_event": a.first_event_time,
                "detected_at": iso(a.detected_at),
                "follows": a.follows_alert_id,
                "rolled_up": len(a.rolled_up),
            }
            for a in alerts
        ],
    }


def run_enterprise_evaluation(
    geo: GeoResolver,
    seeds: Sequence[int],
    days: int,
    *,
    progress: Progress = _quiet,
    make_config: Callable[[int, int], EnterpriseConfig] | None = None,
    simulator: Callable[[EnterpriseConfig], EnterpriseSimulation] = simulate_enterprise,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Simulate and evaluate each seed; per-seed figures, the aggregate and the targets.

    ``make_config(seed, days)`` gives each configuration (default :func:`enterprise_config`);
    ``simulator`` turns it into a simulation (a test hands one it already has); ``options``: the
    detector's (default ``RunOptions()``; the evidence factors left out for an ablation replay).
    """
    configure = make_config or enterprise_config
    reports = []
    began = time.perf_counter()
    for seed in seeds:
        started = time.perf_counter()
        sim = simulator(configure(seed, days))
        sim_s = time.perf_counter() - started
        progress(
            f"seed {seed}: simulated the enterprise, {sim.config.days} days, {sim.events_count:,} events "
            f"({sim_s:.1f} s)"
        )
        report = evaluate_enterprise_simulation(sim, geo, progress=progress, options=options)
        report["simulate_seconds"] = round(sim_s, 1)
        report["seconds"] = round(time.perf_counter() - started, 1)
        reports.append(report)
    overall = aggregate_enterprise(reports)
    overall["seconds"] = round(time.perf_counter() - began, 1)
    left_out = sorted(FACTORS - (options or RunOptions()).factors)
    return {
        "org": "enterprise",
        "factors_left_out": left_out,
        "seeds": reports,
        "aggregate": overall,
        "targets": targets(overall),
    }


# ------------------------------------------------------------------------------------------------
# The printed report
# ------------------------------------------------------------------------------------------------
def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole}" + (f" ({100 * part / whole:.0f}%)" if whole else "")


def _attack_line(r: Mapping[str, Any]) -> str:
    flags = "new-org" if r["new_to_org"] else ("new-principal" if r["new_to_principal"] else "known")
    where = f"{r['country']}, {flags}, {r['accounts']} account(s), {r['principals']} principal(s)"
    if not r["detected"]:
        return f"  {r['group']} ({where}): missed"
    sev = "/".join(r["severities"])
    high = f", >=high after {r['latency_high_min']} min" if r["detected_high"] else ", never >= high"
    return (
        f"  {r['group']} ({where}): {r['alerts']} alert(s) in {r['notifications']} notification(s) "
        f"({r['pages']} paging, {r['pager_pages']} to the pager), "
        f"severity {sev}, first {r['latency_min']} min after delivery{high}"
    )


def _summary(m: Mapping[str, Any]) -> list[str]:
    sev = m["benign_severity"]
    precision = (
        f"{m['precision_high']} ({m['alerts_high_on_attacks']}/{m['alerts_high']} alerts at >= high "
        "match an attack)"
    )
    per_attack = (
        f"{m['notifications_per_attack']} (mean over detected; max {m['max_notifications_per_attack']})"
    )
    pages = f"{m['pages_per_attack']} (max {m['max_pages_per_attack']}; quiet incident updates not counted)"
    pager = (
        f"{m['pager_pages_per_attack']} (PagingSeverity=high: new or escalating notifications at high "
        f"or critical); benign: {m['benign_pager_pages']}"
    )
    alerts = (
        f"{m['alerts']} in {m['notifications']} notifications; benign: {m['benign_alerts']} "
        f"({m['benign_alerts_matched']} on a benign incident, the rest unexplained)"
    )
    benign_pages = (
        f"{m['benign_pages_per_incident']} ({m['benign_pages']} notifications that page; "
        "the rest are updates in a thread)"
    )
    per_benign = f"{m['benign_per_incident']} (all benign alerts / {m['benign_incidents']} benign incidents)"
    lines = [
        f"recall, any alert:                  {_pct(m['attacks_detected'], m['attack_incidents'])}",
        f"recall, alert at >= high:           {_pct(m['attacks_detected_high'], m['attack_incidents'])}",
        f"precision at >= high:               {precision}",
        f"notifications per attack incident:  {per_attack}",
        f"pages per attack incident:          {pages}",
        f"on-call pager pages per attack:     {pager}",
        f"alerts:                             {alerts}",
        "benign alerts by severity:          " + ", ".join(f"{s} {sev[s]}" for s in SEVERITY_LEVELS),
        f"benign alerts per benign incident:  {per_benign}",
        f"benign pages per benign incident:   {benign_pages}",
    ]
    for kind, row in m["benign_by_kind"].items():
        mean = row["alerts"] / row["incidents"] if row["incidents"] else 0.0
        lines.append(
            f"  {kind:<12} {row['incidents']:>3} incident(s): {row['alerts']:>3} alert(s), "
            f"{mean:.2f} per incident, max {row['max_alerts']}"
        )
    if m["unexplained_by_cause"]:
        lines.append(
            "  unexplained, by principal: "
            + ", ".join(f"{k} {v}" for k, v in m["unexplained_by_cause"].items())
        )
    return lines


def format_enterprise_report(result: Mapping[str, Any]) -> str:
    lines: list[str] = []
    if result.get("factors_left_out"):
        lines.append(
            f"== evidence factors left out of the detector: {', '.join(result['factors_left_out'])} =="
        )
    for s in result["seeds"]:
        lines.append(
            f"== enterprise seed {s['seed']}: {s['days']} days from {s['start']}, {s['people']} people in "
            f"{s['home_countries']} countries, {s['accounts']} accounts, {s['events']:,} events "
            f"({s['events_per_day']:,.0f}/day, {s['objects']:,} objects); simulated in "
            f"{s['simulate_seconds']} s, replayed in {s['replay_seconds']} s =="
        )
        lines.append("attack incidents:")
        lines.extend(_attack_line(r) for r in s["attacks"])
        lines.extend(_summary(s))
        lines.append("")
    overall = result["aggregate"]
    lines.append(f"== enterprise, aggregate over {len(result['seeds'])} seed(s) ({overall['seconds']} s) ==")
    lines.extend(_summary(overall))
    if "ablation" in overall:
        lines.append(
            "ablation (severity parts left in; recall / recall >= high / precision >= high / benign >= high):"
        )
        for name, row in overall["ablation"].items():
            lines.append(
                f"  {name:<28} {row['attacks_detected']}/{row['attack_incidents']}"
                f"  {row['attacks_detected_high']}/{row['attack_incidents']}"
                f"  {row['precision_high']} ({row['alerts_high_on_attacks']}/{row['alerts_high']})"
                f"  {row['alerts_high'] - row['alerts_high_on_attacks']}"
            )
    by_scenario: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in overall["attacks"]:
        row = by_scenario[r["scenario"]]
        row[0] += 1
        row[1] += r["detected"]
        row[2] += r["detected_high"]
    lines.append("by attack scenario (incidents / detected / at >= high):")
    lines.extend(f"  {k}: {v[0]} / {v[1]} / {v[2]}" for k, v in sorted(by_scenario.items()))
    lines.append("")
    failed = 0
    for t in result["targets"]:
        failed += not t["passed"]
        lines.append(f"TARGET {'PASS' if t['passed'] else 'FAIL'}: {t['target']}: {t['value']}")
    total = len(result["targets"])
    lines.append(
        f"targets: {total - failed}/{total} passed"
        + (f", {failed} FAILED (see FAIL lines)" if failed else "")
    )
    return "\n".join(lines)


def write_enterprise_json(result: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
