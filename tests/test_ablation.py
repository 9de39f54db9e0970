"""The evaluation's ablation: each alert's severity recomputed with a part of the severity left out
(an evidence factor, the sensitive-method level), from the alert itself, so that one replay gives
every variant's figures."""

from __future__ import annotations

from pathlib import Path

from tests.builders import US_IP
from tests.test_corroboration import (
    AMAZON,
    CAROL,
    CLI_V2,
    COMCAST,
    DAVE,
    DE_IP,
    ERIN,
    FOREIGN_IP,
    KALI_CLI,
    VPN_IP,
    calls,
    history,
    replayed,
    resolver,
)
from trailgeo.core.alerts import Alert, AlertIncident, Evidence
from trailgeo_tools.enterprise_eval import ablation_variants, hits_of, severity_with


def test_given_the_registry_then_the_variants_are_all_none_and_each_part_left_out() -> None:
    variants = ablation_variants()
    assert set(variants) == {
        "all",
        "rarity alone",
        "without concurrent_use",
        "without hosting_provider",
        "without impossible_travel",
        "without new_client",
        "without new_sensitive_method",
        "without session_elsewhere",
        "without shared_egress",
        "without unusual_hour",
    }
    assert variants["rarity alone"] == frozenset()
    assert all(len(v) == len(variants["all"]) - 1 for k, v in variants.items() if k.startswith("without"))


def test_given_a_stolen_key_alert_when_its_factor_is_left_out_then_the_rarity_alone_remains(
    tmp_path: Path,
) -> None:
    # Given the stolen-key alert raised to high by the thief's client
    (raw,) = replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI), resolver())
    alert = Alert.model_validate(raw)
    variants = ablation_variants()

    # When its severity is recomputed per variant
    # Then everything gives what the run published, and without the new client it is the rarity's
    assert severity_with(alert, variants["all"]) == alert.severity == "high"
    assert severity_with(alert, variants["without new_client"]) == "medium"
    assert severity_with(alert, variants["without hosting_provider"]) == "high"
    assert severity_with(alert, variants["rarity alone"]) == "medium"


def test_given_an_alert_through_the_organizations_egress_when_shared_egress_is_left_out_then_hosting_counts(
    tmp_path: Path,
) -> None:
    # Given alice through the VPN gateway three DE colleagues use with her, its first day (the
    # hosting factor stood down; not learned yet, so she alerts)
    colleagues = [r for arn in (CAROL, DAVE, ERIN) for r in history(arn, DE_IP)]
    today = [r for arn in (CAROL, DAVE, ERIN, None) for r in calls(VPN_IP, CLI_V2, *([arn] if arn else []))]
    (raw,) = replayed(tmp_path, history() + colleagues + today, resolver({VPN_IP: AMAZON, US_IP: COMCAST}))
    alert = Alert.model_validate(raw)
    variants = ablation_variants()

    # Then without the egress rule the hosting provider raises it, as it did before the rule
    assert severity_with(alert, variants["all"]) == alert.severity == "medium"
    assert severity_with(alert, variants["without shared_egress"]) == "high"
    assert severity_with(alert, variants["without hosting_provider"]) == "medium"


def test_given_an_incidents_quiet_update_when_counted_then_a_notification_but_no_page(tmp_path: Path) -> None:
    """The issue's "updates rather than new pages": an incident's quiet update is sent in its
    thread; its first notification, an escalation and a re-alert each page."""
    # Given one alert, published as an incident's first notification, a quiet update, an escalation
    (raw,) = replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI), resolver())
    alert = Alert.model_validate(raw)
    first = alert.model_copy(update={"incident": AlertIncident(id=alert.alert_id)})
    quiet = alert.model_copy(update={"incident": AlertIncident(id=alert.alert_id, update=True)})
    louder = alert.model_copy(update={"incident": AlertIncident(id=alert.alert_id, escalation=True)})
    re_alert = alert.model_copy(update={"follows_alert_id": alert.alert_id})

    # When counted, Then all four are notifications and all but the quiet update page
    hits = hits_of([first, quiet, louder, re_alert])
    assert [h.notification for h in hits] == [0, 1, 2, 3]
    assert [h.page for h in hits] == [True, False, True, True]


def test_given_notifications_of_each_severity_when_counted_then_only_high_pages_reach_the_pager(
    tmp_path: Path,
) -> None:
    """The pager (PagingSeverity=high) gets new and escalating notifications at high or critical;
    the channels get the medium one and the quiet update too."""
    # Given a medium first notification, its quiet update at high, its escalation to high
    (raw,) = replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI), resolver())
    alert = Alert.model_validate(raw)
    first = alert.model_copy(update={"severity": "medium", "incident": AlertIncident(id=alert.alert_id)})
    quiet = alert.model_copy(
        update={"severity": "high", "incident": AlertIncident(id=alert.alert_id, update=True)}
    )
    louder = alert.model_copy(
        update={"severity": "high", "incident": AlertIncident(id=alert.alert_id, escalation=True)}
    )

    # When counted, Then two pages and one reaches the pager: the escalation
    hits = hits_of([first, quiet, louder])
    assert [h.page for h in hits] == [True, False, True]
    assert [h.pager for h in hits] == [False, False, True]


def test_given_a_notification_carrying_a_settled_member_when_recomputed_then_the_member_counts_too(
    tmp_path: Path,
) -> None:
    # Given the stolen-key alert raised to high by the thief's client, sent inside a medium first
    # notification it joined while that waited to settle (core.incidents.absorbed)
    from tests.test_incidents import an_alert
    from trailgeo.core.incidents import absorbed

    (raw,) = replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI), resolver())
    joined = Alert.model_validate(raw).model_copy(update={"follows_alert_id": "first"})
    first = an_alert("first", severity="medium", score=60.0)
    sent = absorbed(first, [joined])
    variants = ablation_variants()

    # When its severity is recomputed per variant
    # Then the notification is at its member's recomputed severity where that is higher: high with
    # every factor (as published), the rarity's medium without the thief's client
    assert sent.severity == severity_with(sent, variants["all"]) == "high"
    assert severity_with(sent, variants["without new_client"]) == "medium"


def test_given_a_session_begun_elsewhere_beside_a_new_client_when_the_client_is_left_out_then_medium(
    tmp_path: Path,
) -> None:
    """The recomputation applies the rule the run applies: a factor that only corroborates, alone,
    takes an alert no higher than medium (core/evidence.evidenced_severity)."""
    # Given the stolen-key alert raised by the thief's client, with a session begun elsewhere beside it
    (raw,) = replayed(tmp_path, history() + calls(FOREIGN_IP, KALI_CLI), resolver())
    alert = Alert.model_validate(raw)
    session = Evidence(factor="session_elsewhere", raises=1, text="session begun elsewhere")
    both = alert.model_copy(update={"evidence": [*alert.evidence, session], "severity": "critical"})
    variants = ablation_variants()

    # When its severity is recomputed per variant
    # Then with both it is critical; without the client the session alone leaves the rarity's medium
    assert severity_with(both, variants["all"]) == "critical"
    assert severity_with(both, variants["without new_client"]) == "medium"
    assert severity_with(both, variants["without session_elsewhere"]) == "high"
