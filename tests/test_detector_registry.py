"""One detector registry (core/detectors.py): every channel names each detector as it says, and
the city detector scores a new city high and a usual one low."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.builders import ACCOUNT, ALICE, JP_IP, T0, files_by_delivery, record, write_tree
from tests.conftest import MAXMIND_TEST_DATA
from tests.test_siblings import (
    BOXFORD_IP,
    DESCRIBE,
    LONDON_IP,
    NOW,
    WEIGHT,
    total,
)
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.app.detect import RunOptions, subject_of
from trailgeo.app.replay import replay
from trailgeo.app.settings import Settings, SettingsError
from trailgeo.core.aggregate import CategoryGroup, HitGroup, MethodActivity
from trailgeo.core.alerts import Alert
from trailgeo.core.counters import CounterState
from trailgeo.core.detectors import DETECTORS, REGISTRY, detector
from trailgeo.core.render.asff import asff_finding, default_product_arn
from trailgeo.core.render.chatbot import chatbot_message
from trailgeo.core.render.email import email_body
from trailgeo.core.scoring import ScoringPolicy, score_cities

CITY_DB = MAXMIND_TEST_DATA / "GeoLite2-City-Test.mmdb"


def alerts_of(logs: Path, geo: MaxMindGeoResolver, detectors: set[str]) -> dict[str, Alert]:
    out = io.StringIO()
    replay(logs, geo, JsonLinesAlertSink(out), RunOptions(detectors=frozenset(detectors)))
    return {a.detector: a for a in map(Alert.model_validate_json, out.getvalue().splitlines())}


@pytest.fixture(scope="module")
def one_alert_per_detector(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Alert]:
    """A real alert of each detector, from replays of the City test database's addresses."""
    if not CITY_DB.is_file():
        pytest.skip("MaxMind GeoLite2-City test database not available")
    geo = MaxMindGeoResolver(CITY_DB)
    # alice hourly from London for ten days, every other call denied; then, from Boxford, a
    # CreateUser that fails in a new way (city, user_method, error_code) amid 150 denied calls
    # (error_spike), and from Japan (country)
    baseline = [
        record(
            T0 + timedelta(hours=i, minutes=3),
            ip=LONDON_IP,
            **({"errorCode": "AccessDenied"} if i % 2 else {}),
        )
        for i in range(240)
    ]
    at = T0 + timedelta(days=10, hours=3)
    odd = [
        record(
            at, ip=BOXFORD_IP, name="CreateUser", source="iam.amazonaws.com", errorCode="EntityAlreadyExists"
        ),
        *(record(at + timedelta(seconds=s), ip=BOXFORD_IP, errorCode="AccessDenied") for s in range(150)),
    ]
    siblings = tmp_path_factory.mktemp("siblings")
    write_tree(siblings, files_by_delivery(baseline + odd))
    found = alerts_of(siblings, geo, set(DETECTORS) - {"country"} | {"country"})
    abroad = tmp_path_factory.mktemp("abroad")
    write_tree(
        abroad, files_by_delivery(baseline + [record(at + timedelta(minutes=m), ip=JP_IP) for m in range(3)])
    )
    found["country"] = alerts_of(abroad, geo, {"country"})["country"]
    return found


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_given_an_alert_of_each_detector_when_rendered_then_every_channel_names_that_detector(
    name: str, one_alert_per_detector: dict[str, Alert]
) -> None:
    # Given a real alert of the detector
    alert = one_alert_per_detector[name]
    entry = detector(name)

    # When it is rendered for e-mail, Security Hub and AWS Chatbot
    body = email_body(alert)
    finding = asff_finding(alert, default_product_arn("aws", "us-east-1", ACCOUNT))
    chatbot = json.loads(chatbot_message(alert))

    # Then each names the detector's own rule, generator and event type (before, the e-mail always
    # printed the country rule's name, a city finding carried the country rule's generator id and
    # Chatbot's event type was the country rule's)
    assert alert.rule.name == entry.rule_name
    assert body.splitlines()[0].startswith(f"{entry.rule_name}: ")
    assert finding["GeneratorId"] == entry.generator_id
    assert finding["Types"][-1] == entry.finding_type
    assert chatbot["metadata"]["eventType"] == entry.chatbot_event_type
    assert ("country" in chatbot["metadata"]["summary"]) == (name == "country")


def test_given_the_registry_then_its_names_ids_and_types_are_distinct_and_settings_read_it() -> None:
    # Given the registry
    entries = list(REGISTRY.values())

    # Then no two detectors share a rule name, generator id, event type or finding type
    for field in ("rule_name", "generator_id", "chatbot_event_type", "finding_type"):
        assert len({getattr(e, field) for e in entries}) == len(entries), field
    # And the settings accept exactly its names
    base = {
        "TRAIL_BUCKET": "trail-bucket",
        "TABLE_NAME": "trailgeo",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:alerts",
    }
    assert (
        Settings.from_environ({**base, "DETECTORS": ",".join(DETECTORS)}).run_options().detectors == DETECTORS
    )
    with pytest.raises(SettingsError, match="unknown detector"):
        Settings.from_environ({**base, "DETECTORS": "country,town"})
    # And each sibling detector's suppression subject starts with its name
    assert subject_of(ALICE, "city", "GB/Boxford") == f"{ALICE}|city:GB/Boxford"
    assert subject_of(ALICE, "user_method") == f"{ALICE}|user_method"
    assert subject_of(ALICE, "error_spike") == f"{ALICE}|error_spike"


def _city_history() -> dict[str, dict[str, CounterState]]:
    london = "GB/London"
    return {
        "OC": {"TOTAL": total({london: 240, "US/Boxford": 3})},
        f"MC#{DESCRIBE}": {"TOTAL": total({london: 240})},
        f"PC#{ALICE}": {
            "TOTAL": total({london: 240}),
            f"C#{london}": CounterState(buckets=240, wsum=240 * WEIGHT),
        },
    }


def _city_group(city: str) -> CategoryGroup:
    source = HitGroup(account=ACCOUNT, principal=ALICE, country="GB")
    group = CategoryGroup(account=ACCOUNT, principal=ALICE, value=city, sources=[source])
    group.methods[DESCRIBE] = MethodActivity(events=3, hours={NOW})
    return group


def test_given_a_principal_always_in_london_when_a_call_comes_from_another_city_then_it_scores_high() -> None:
    # Given alice's 240 hours from London, and the organization's
    # When a call of hers is scored from Boxford, a city the organization never saw for her
    scored = score_cities(_city_group("GB/Boxford"), _city_history(), ScoringPolicy(learning_days=0), NOW)

    # Then it is rare enough to alert
    assert scored.detector == "city"
    assert scored.score >= 90


def test_given_a_principal_always_in_london_when_a_call_comes_from_london_then_it_scores_low() -> None:
    # Given the same history
    # When a call of hers is scored from London
    scored = score_cities(_city_group("GB/London"), _city_history(), ScoringPolicy(learning_days=0), NOW)

    # Then it is her usual city: no alert
    assert scored.score < 10


def test_given_the_registry_then_the_notifications_doc_lists_each_detector_as_it_is() -> None:
    # Given docs/notifications.md's table of detectors
    text = (Path(__file__).resolve().parent.parent / "docs" / "notifications.md").read_text(encoding="utf-8")

    # Then each detector's row says what the registry says
    for entry in REGISTRY.values():
        row = (
            f"| `{entry.name}` | {entry.rule_name} | `{entry.generator_id}` | `{entry.finding_type}` "
            f"| `{entry.chatbot_event_type}` |"
        )
        assert row in text, entry.name
