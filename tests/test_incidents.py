"""One incident per attacker: alerts of the country detector linked by source network (IPv4 /24,
IPv6 /48, an endpoint's or unknown location's exact address) and time are one notification naming
its members; later linked alerts update it, unless they escalate (core/incidents.py,
app/detect/incidents.py)."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws import TABLE, create_deployment
from tests.builders import ACCOUNT, ALICE, BOB, SE_IP, T0, files_by_delivery, record, write_tree
from tests.conftest import EVENTS, Backend
from tests.test_adversary_teaching import every
from trailgeo.adapters.dynamodb import INCIDENT_RETENTION, MAX_ALERT_DOC_BYTES, DynamoOutbox
from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryOutbox
from trailgeo.app.detect import Dependencies, RunOptions, RunReport
from trailgeo.app.detect.alerting import _queue, _raise_alerts, country_subject, quarantined_identities
from trailgeo.app.detect.incidents import linked, to_record
from trailgeo.app.replay import ReplayState, replay
from trailgeo.app.settings import Settings, SettingsError
from trailgeo.core.alerts import Alert, CloudTrail, Geo, MethodEvidence, Source, UserIdentity, compacted
from trailgeo.core.incidents import MAX_MEMBERS, MAX_WINDOW, OpenIncident, link, network_key
from trailgeo.core.render.asff import asff_finding, default_product_arn, validate_finding
from trailgeo.core.render.chatbot import chatbot_notification
from trailgeo.core.render.email import email_body, email_subject
from trailgeo.core.render.envelope import sns_message
from trailgeo.core.render.slack import slack_message
from trailgeo.core.tuning import EMPTY_TUNING
from trailgeo.ports import AlertOutbox, IncidentRecord, Suppression

NOW = datetime(2026, 10, 2, 12, tzinfo=UTC)
DAY = timedelta(hours=24)
PRODUCT_ARN = default_product_arn("aws", "us-east-1", "123456789012")


def an_alert(
    alert_id: str,
    *,
    principal: str = ALICE,
    account: str = ACCOUNT,
    ip: str = "67.43.156.10",
    location: str = "BT",
    severity: str = "medium",
    score: float = 80.0,
    sensitive: bool = False,
) -> Alert:
    """The alert of events/sqs-alert.json, as another principal, address, severity and score."""
    event = json.loads((EVENTS / "sqs-alert.json").read_text(encoding="utf-8"))
    alert = Alert.model_validate_json(event["Records"][0]["body"])
    methods: list[MethodEvidence] = [m.model_copy(update={"sensitive": sensitive}) for m in alert.methods]
    country = location if len(location) == 2 else None
    return alert.model_copy(
        update={
            "alert_id": alert_id,
            "detected_at": NOW,
            "location": location,
            "source": Source(geo=Geo(country_iso_code=country), ip=[ip]),
            "aws": alert.aws.model_copy(
                update={"cloudtrail": CloudTrail(user_identity=UserIdentity(arn=principal))}
            ),
            "cloud": alert.cloud.model_copy(
                update={"account": alert.cloud.account.model_copy(update={"id": account})}
            ),
            "severity": severity,
            "score": score,
            "methods": methods,
            "sensitive_methods": ["iam.amazonaws.com:CreateAccessKey"] if sensitive else [],
        }
    )


def an_open_incident(
    incident_id: str = "first", severity: str = "medium", sensitive: frozenset[str] = frozenset()
) -> OpenIncident:
    return OpenIncident(incident_id, NOW - timedelta(hours=2), incident_id, severity, sensitive, 1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- network keys


@pytest.mark.parametrize(
    ("address", "location", "key"),
    [
        ("203.0.113.77", "BT", "203.0.113.0/24"),
        ("2001:218:1:2::5", "JP", "2001:218:1::/48"),
        ("::ffff:203.0.113.9", "BT", "203.0.113.0/24"),  # an IPv4-mapped IPv6 address is its IPv4
        ("10.1.2.3", "VPCE:444455556666", "VPCE:444455556666@10.1.2.3"),
        ("198.18.0.1", "unknown", "unknown@198.18.0.1"),
    ],
)
def test_given_an_address_when_keyed_then_its_network_or_its_exact_location_and_address(
    address: str, location: str, key: str
) -> None:
    # Given an address and where it was scored from
    # When its network key is taken
    found = network_key(address, location)

    # Then a country's address links by its /24 or /48, an endpoint's or unknown one by itself
    assert found == key


@pytest.mark.parametrize(
    "address",
    [
        "ec2.amazonaws.com",
        "AWS Internal",
        "",
        "1.2.3.4.5",
        "999.1.1.1",
        " 203.0.113.7",
        "203.0.113.7/24",
        "203.0.113.7\u202e",
        "0.0.0.0",  # noqa: S104 - a crafted value, never bound
        "127.0.0.1",
        "::",
        "::1",
        "fe80::1%eth0",
        "2a00:1450::1%25x",
        "224.0.0.1",
        "255.255.255.255",
        "2" * 1_000_000,
        "1:2:3:4:5:6:7:8:9",
    ],
)
def test_given_a_crafted_source_address_when_keyed_then_it_never_crashes_nor_links(address: str) -> None:
    # Given a sourceIPAddress an AWS service or a forged record wrote
    # When its network key is taken from a country and from an unknown location
    keys = {network_key(address, "BT"), network_key(address, "unknown")}

    # Then there is none: it links nothing
    assert keys == {None}


def test_given_two_alerts_from_crafted_addresses_when_linked_then_each_stays_alone() -> None:
    # Given two principals' alerts whose source is the same AWS service host name
    alerts = [
        an_alert("a", ip="ec2.amazonaws.com"),
        an_alert("b", principal=BOB, ip="ec2.amazonaws.com"),
    ]

    # When the run links its alerts
    assignments = link(alerts, {}, NOW, DAY)

    # Then two notifications, neither part of an incident
    assert [a.alert.incident for a in assignments] == [None, None]


# --------------------------------------------------------------------------- one run


def test_given_a_stolen_key_assumed_into_three_accounts_when_linked_then_one_notification_names_all() -> None:
    # Given one network's alerts for a user and three roles assumed into other accounts
    alerts = [
        an_alert("user", ip="203.0.113.5", score=70, severity="low"),
        an_alert("r1", principal="arn:aws:sts::222233334444:assumed-role/Admin/x", account="222233334444",
                 ip="203.0.113.6", sensitive=True, severity="critical", score=95),
        an_alert("r2", principal="arn:aws:sts::333344445555:assumed-role/Admin/x", account="333344445555",
                 ip="203.0.113.7"),
        an_alert("r3", principal="arn:aws:sts::444455556666:assumed-role/Admin/x", account="444455556666",
                 ip="203.0.113.200"),
    ]  # fmt: skip

    # When the run links them
    (assignment,) = link(alerts, {}, NOW, DAY)

    # Then one notification: the most urgent (the sensitive one) carries the other three by name
    carrier = assignment.alert
    assert carrier.alert_id == "r1"
    assert carrier.incident is not None
    assert carrier.incident.id == "r1"
    assert not carrier.incident.update
    assert (carrier.incident.alerts, carrier.incident.accounts) == (4, 4)
    assert [m.alert_id for m in carrier.incident.members] == ["r2", "r3", "user"]
    assert carrier.incident.networks == ["203.0.113.0/24"]
    assert "One incident: 4 alerts across 4 accounts" in email_body(carrier)


def test_given_a_shared_network_when_a_critical_alert_joins_a_sensitive_one_then_it_pages_critical() -> None:
    # Given a corporate VPN's egress shared by a benign traveller's low alert, an attacker's
    # sensitive but medium alert, and a critical alert without sensitive methods
    alerts = [
        an_alert("benign", ip="203.0.113.5", severity="low", score=60),
        an_alert("attacker", principal=BOB, ip="203.0.113.6", severity="medium", score=70, sensitive=True),
        an_alert("loud", principal="arn:aws:iam::111122223333:user/carol", ip="203.0.113.7",
                 severity="critical", score=99),
    ]  # fmt: skip

    # When the run links them into one incident
    (assignment,) = link(alerts, {}, NOW, DAY)

    # Then linking lowers nobody's severity: the notification carries the highest of them, and
    # each member keeps its own
    carrier = assignment.alert
    assert carrier.alert_id == "attacker"
    assert carrier.severity == "critical"
    assert carrier.incident is not None
    assert {m.alert_id: m.severity for m in carrier.incident.members} == {"loud": "critical", "benign": "low"}
    # And every member is named in every rendering a person reads
    slack = json.dumps(slack_message(carrier))
    chatbot = json.dumps(chatbot_notification(carrier))
    email = email_body(carrier)
    for principal in (ALICE, "user/carol"):
        assert principal in email
        assert principal in slack
        assert principal in chatbot
    asff = asff_finding(carrier, PRODUCT_ARN)
    assert validate_finding(asff) == []
    assert "user/carol" in asff["ProductFields"]["trailgeo/IncidentMembers"]
    assert asff["ProductFields"]["trailgeo/IncidentAlerts"] == "3"


def test_given_a_flood_of_principals_from_one_network_then_one_bounded_notification(
    tmp_path: Path,
) -> None:
    # Given 600 principals alerting from one /24 in one run
    alerts = [
        an_alert(
            f"a{n:04d}", principal=f"arn:aws:iam::{ACCOUNT}:user/{'x' * 400}{n}", ip=f"203.0.113.{n % 250}"
        )
        for n in range(600)
    ]

    # When the run links them
    (assignment,) = link(alerts, {}, NOW, DAY)

    # Then one notification whose document names MAX_MEMBERS and counts the rest, well within
    # DynamoDB's item (the outbox's limit) and an SNS message
    carrier = assignment.alert
    assert carrier.incident is not None
    assert len(carrier.incident.members) == MAX_MEMBERS
    assert carrier.incident.omitted_members == 599 - MAX_MEMBERS
    assert carrier.incident.alerts == 600
    assert len(assignment.members) == 599  # every one of them is still recorded by the run
    assert len(carrier.to_json().encode()) < MAX_ALERT_DOC_BYTES
    assert json.loads(sns_message(carrier))["default"] == carrier.to_json()


def test_given_alerts_from_different_networks_when_linked_then_each_is_its_own() -> None:
    # Given two users' alerts from two different /24s
    alerts = [an_alert("a", ip="203.0.113.5"), an_alert("b", principal=BOB, ip="198.51.100.5")]

    # When linked
    assignments = link(alerts, {}, NOW, DAY)

    # Then two notifications, no incident named
    assert [(a.alert.alert_id, a.alert.incident) for a in assignments] == [("a", None), ("b", None)]


# --------------------------------------------------------------------------- across runs


def test_given_an_open_incident_when_a_later_alert_of_its_network_is_no_worse_then_it_is_a_quiet_update() -> (
    None
):
    # Given an incident opened two hours ago from 203.0.113.0/24 at medium severity
    open_ = {"203.0.113.0/24": an_open_incident("first", "medium")}

    # When another principal alerts from that network at medium severity
    (assignment,) = link([an_alert("later", principal=BOB, ip="203.0.113.50")], open_, NOW, DAY)

    # Then it is an update of that incident, sent in its thread (same finding, same chat thread)
    alert = assignment.alert
    assert alert.incident is not None
    assert (alert.incident.id, alert.incident.update, alert.incident.escalation) == ("first", True, False)
    assert alert.thread_id == "first"
    assert asff_finding(alert, PRODUCT_ARN)["Id"] == "first"
    assert chatbot_notification(alert)["metadata"]["threadId"] == "first"


@pytest.mark.parametrize(
    ("severity", "sensitive"),
    [("high", False), ("medium", True)],
    ids=["higher-severity", "new-sensitive-method"],
)
def test_given_a_harmless_alert_first_when_the_real_attack_follows_from_its_network_then_it_pages_anew(
    severity: str, sensitive: bool
) -> None:
    # Given an attacker who first raised a harmless medium alert from their network (an incident
    # open, no sensitive method)
    open_ = {"203.0.113.0/24": an_open_incident("decoy", "medium")}

    # When the real attack comes from that network: a higher severity, or a sensitive method
    attack = an_alert("attack", principal=BOB, ip="203.0.113.9", severity=severity, sensitive=sensitive)
    (assignment,) = link([attack], open_, NOW, DAY)

    # Then it pages as a new notification (its own thread and finding), still naming the incident
    alert = assignment.alert
    assert alert.incident is not None
    assert (alert.incident.id, alert.incident.update, alert.incident.escalation) == ("decoy", False, True)
    assert alert.thread_id == "attack"
    assert asff_finding(alert, PRODUCT_ARN)["Id"] == "attack"
    assert email_subject(alert).startswith(f"[{alert.severity.upper()}] Incident escalation: ")


def test_given_an_incident_past_its_window_when_its_network_alerts_again_then_a_new_incident() -> None:
    # Given an incident whose last member alerted 25 hours ago, and one two hours ago
    subject = "203.0.113.0/24"
    stale = OpenIncident("old", NOW - timedelta(hours=25), "old", "medium", frozenset(), 1)
    recent = an_open_incident("recent")
    alert = an_alert("later", ip="203.0.113.9")

    # When its network alerts again under a 24-hour window, and the recent one's under a window of zero
    (later,) = link([alert], {subject: stale}, NOW, DAY)
    (unlinked,) = link([alert], {subject: recent}, NOW, timedelta(0))

    # Then neither is linked to its incident
    assert (later.alert.incident, later.incident) == (None, None)
    assert (unlinked.alert.incident, unlinked.incident) == (None, None)


def test_given_incident_window_settings_then_bounded_to_a_week() -> None:
    # Given the deployment's environment with and without INCIDENT_HOURS
    base = {
        "TRAIL_BUCKET": "trail-bucket",
        "TABLE_NAME": "trailgeo",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
    }

    # When settings are read
    default = Settings.from_environ(base).run_options().incident_window
    off = Settings.from_environ({**base, "INCIDENT_HOURS": "0"}).run_options().incident_window

    # Then 24 hours by default, 0 turns linking off, and more than a week is refused
    assert (default, off) == (DAY, timedelta(0))
    with pytest.raises(SettingsError, match="INCIDENT_HOURS"):
        Settings.from_environ({**base, "INCIDENT_HOURS": "200"})


# --------------------------------------------------------------------------- records


def test_given_an_open_incident_when_alerting_reads_subjects_then_no_network_is_among_them() -> None:
    # Given an outbox holding identities' last alerts (two of principals a bucket writer named like
    # networks) and an incident under three networks
    outbox = MemoryOutbox()
    incident = OpenIncident("i1", NOW, "i1", "high", frozenset({"iam.amazonaws.com:CreateAccessKey"}), 3)
    identities = {
        f"{ALICE}|SE": (ALICE, "SE"),
        "~net|GB": ("~net", "GB"),
        "203.0.113.0/24|JP": ("203.0.113.0/24", "JP"),
    }
    for subject in identities:
        assert outbox.remember(subject, Suppression(NOW, "a1"), None)
    networks = ["203.0.113.0/24", "2001:218:1::/48", "unknown@198.18.0.1"]
    for network in networks:
        assert outbox.remember_incident(to_record(network, incident), None)

    # When alerting reads the subjects alerted (suppression, quarantine) and the open incidents
    alerted = outbox.alerted_since(NOW - DAY)
    recent = outbox.recent([*identities, *networks])
    held = quarantined_identities(alerted, EMPTY_TUNING, NOW.date())
    incidents = outbox.open_incidents(NOW - DAY)

    # Then the subjects' readers see the identities alone (each quarantined, however named), never a
    # network; the incidents are read apart
    assert set(alerted) == set(recent) == set(identities)
    assert {s: country_subject(s) for s in alerted} == identities
    assert set(held) == {"SE", "GB", "JP"}
    assert set(incidents) == set(networks)
    assert {r.incident_id for r in incidents.values()} == {"i1"}


@pytest.fixture
def outbox(backend: Backend) -> AlertOutbox:
    if backend.kind == "memory":
        return MemoryOutbox()
    ticks = itertools.count()
    return DynamoOutbox(
        backend.client("dynamodb"), TABLE, clock=lambda: NOW + timedelta(microseconds=next(ticks))
    )


@pytest.mark.contract
def test_given_an_incident_remembered_under_its_network_then_each_backend_gives_it_back(
    outbox: AlertOutbox,
) -> None:
    # Given an incident of 3 alerts with 250 sensitive methods, remembered under its network
    methods = frozenset(f"iam.amazonaws.com:Method{n:03d}" for n in range(250))
    incident = OpenIncident("first", NOW, "last", "critical", methods, 3, first_at=NOW - timedelta(hours=5))
    network = "203.0.113.0/24"
    assert outbox.remember_incident(to_record(network, incident), None)

    # When a later run reads the open incidents, and another invocation writes on a stale read
    (read,) = outbox.open_incidents(NOW - DAY).values()
    stale = outbox.remember_incident(to_record(network, incident), None)

    # Then the incident comes back (its id, times, severity and count whatever the methods), and
    # the compare-and-set refuses the stale write
    assert (read.network, read.incident_id, read.last_alert_id, read.severity, read.members) == (
        network,
        "first",
        "last",
        "critical",
        3,
    )
    assert (read.first_at, read.last_at) == (NOW - timedelta(hours=5), NOW)
    assert read.sensitive_methods <= methods
    assert stale is False


def test_given_the_longest_incident_window_then_an_incident_s_record_outlives_it() -> None:
    # Given the longest incident window a deployment accepts
    # When an incident's record is kept after its last member
    # Then it is kept longer than that window: an open incident is never forgotten while it can link
    assert INCIDENT_RETENTION > MAX_WINDOW


def deps_of(outbox: AlertOutbox) -> Dependencies:
    return Dependencies(source=None, geo=None, store=None, ledger=None, outbox=outbox, sink=None)  # type: ignore[arg-type]


@pytest.mark.contract
def test_given_two_invocations_linking_one_network_at_once_then_at_worst_two_incidents_never_none(
    outbox: AlertOutbox,
) -> None:
    # Given two invocations (fan-out reduces) that both read no incident for one network
    network = "203.0.113.0/24"
    mine, theirs = an_alert("mine", ip="203.0.113.5"), an_alert("theirs", principal=BOB, ip="203.0.113.6")

    # When each links its alert from that network and records its incident, the second on its stale read
    first = linked([mine], {}, NOW, deps_of(outbox), RunOptions())
    second = linked([theirs], {}, NOW, deps_of(outbox), RunOptions())
    # and a later run's alert from that network
    (later,) = linked(
        [an_alert("later", principal=f"arn:aws:iam::{ACCOUNT}:user/carol", ip="203.0.113.7")],
        dict(outbox.open_incidents(NOW - DAY)),
        NOW + timedelta(hours=1),
        deps_of(outbox),
        RunOptions(),
    )

    # Then each alert is its own incident (two at worst, none lost), the record follows the newest,
    # and the later alert updates that one
    assert [a.alert.alert_id for a in (*first, *second)] == ["mine", "theirs"]
    assert outbox.incidents([network])[network].incident_id == "theirs"
    assert later.alert.incident is not None
    assert (later.alert.incident.id, later.alert.incident.update) == ("theirs", True)
    assert outbox.incidents([network])[network].members == 2


def test_given_a_recorded_incident_when_the_real_attack_follows_then_it_escalates_and_is_recorded() -> None:
    # Given an incident an earlier run recorded under its network: medium, no sensitive method
    outbox = MemoryOutbox()
    earlier = OpenIncident("decoy", NOW - timedelta(hours=2), "decoy", "medium", frozenset(), 1)
    assert outbox.remember_incident(to_record("203.0.113.0/24", earlier), None)
    attack = an_alert("attack", principal=BOB, ip="203.0.113.9", sensitive=True)

    # When a run raises the attack's alert (sensitive) from that network
    _raise_alerts(
        [(attack, frozenset())], {}, NOW, deps_of(outbox), RunOptions(), RunReport(NOW, NOW, NOW), {}
    )

    # Then it pages as an escalation naming the incident, and the incident's record carries it
    (queued,) = outbox.pending()
    assert queued.incident is not None
    assert (queued.incident.id, queued.incident.escalation, queued.thread_id) == ("decoy", True, "attack")
    record = outbox.incidents(["203.0.113.0/24"])["203.0.113.0/24"]
    assert (record.incident_id, record.last_alert_id, record.members) == ("decoy", "attack", 2)
    assert (record.first_at, record.last_at) == (NOW - timedelta(hours=2), NOW)
    assert record.sensitive_methods == {"iam.amazonaws.com:CreateAccessKey"}


VALID_ITEM: dict[str, Any] = {
    "pk": {"S": "INCIDENT"},
    "sk": {"S": "203.0.113.0/24"},
    "iid": {"S": "decoy"},
    "first": {"S": (NOW - timedelta(hours=1)).isoformat()},
    "at": {"S": (NOW - timedelta(hours=1)).isoformat()},
    "aid": {"S": "decoy"},
    "sev": {"S": "critical"},
    "n": {"N": "1"},
    "ms": {"L": [{"S": "iam.amazonaws.com:CreateAccessKey"}]},
}
FORGED_ITEMS: dict[str, dict[str, Any]] = {
    "keys-only": {"pk": VALID_ITEM["pk"], "sk": VALID_ITEM["sk"], "at": VALID_ITEM["at"]},
    "no-severity": {k: v for k, v in VALID_ITEM.items() if k != "sev"},
    "unknown-severity": {**VALID_ITEM, "sev": {"S": "critical\u202e"}},
    "severity-a-number": {**VALID_ITEM, "sev": {"N": "4"}},
    "count-no-number": {**VALID_ITEM, "n": {"S": "many"}},
    "count-negative": {**VALID_ITEM, "n": {"N": "-1"}},
    "count-a-fraction": {**VALID_ITEM, "n": {"N": "1.5"}},
    "methods-a-string-set": {**VALID_ITEM, "ms": {"SS": ["iam.amazonaws.com:CreateAccessKey"]}},
    "methods-of-numbers": {**VALID_ITEM, "ms": {"L": [{"N": "1"}]}},
    "time-no-zone": {**VALID_ITEM, "first": {"S": "2026-10-02T10:00:00"}},
    "time-no-time": {**VALID_ITEM, "first": {"S": "yesterday"}},
    "first-after-last": {**VALID_ITEM, "first": {"S": NOW.isoformat()}},
    "empty-incident-id": {**VALID_ITEM, "iid": {"S": ""}},
    "alert-id-a-map": {**VALID_ITEM, "aid": {"M": {}}},
    "page-no-time": {**VALID_ITEM, "pat": {"S": "now"}},
    "page-no-zone": {**VALID_ITEM, "pat": {"S": "2026-10-02T11:00:00"}},
    "page-after-last": {**VALID_ITEM, "pat": {"S": NOW.isoformat()}},
    "page-a-number": {**VALID_ITEM, "pat": {"N": "1"}},
}


@pytest.mark.parametrize("forged", list(FORGED_ITEMS.values()), ids=list(FORGED_ITEMS))
def test_given_a_forged_incident_item_on_the_attacker_s_network_when_the_attack_alerts_then_it_pages(
    aws: Any, forged: dict[str, Any]
) -> None:
    # Given a principal inside the account who put an incident item of their own making under their
    # network (dynamodb:PutItem on the table): "critical, CreateAccessKey seen" meant to make the
    # attack a quiet update, but no record a run could have written
    create_deployment(aws)
    client = aws.client("dynamodb")
    client.put_item(TableName=TABLE, Item=forged)
    outbox = DynamoOutbox(client, TABLE, clock=lambda: NOW)
    attack = an_alert("attack", principal=BOB, ip="203.0.113.9", severity="high", sensitive=True)
    report = RunReport(NOW, NOW, NOW)

    # When a run raises the attack's alert from that network
    _raise_alerts([(attack, frozenset())], {}, NOW, deps_of(outbox), RunOptions(), report, {})

    # Then the run completes and the alert pages as its own notification, not as an update of the
    # forged incident; the forged item reads as no incident and is left as it was
    (queued,) = outbox.pending()
    assert (queued.alert_id, queued.incident, queued.thread_id) == ("attack", None, "attack")
    assert report.alerts_raised == 1
    assert outbox.open_incidents(NOW - DAY) == outbox.incidents(["203.0.113.0/24"]) == {}
    stored = client.get_item(TableName=TABLE, Key={"pk": VALID_ITEM["pk"], "sk": VALID_ITEM["sk"]})["Item"]
    assert stored == forged


def test_given_a_forged_record_in_the_fake_then_it_reads_as_no_incident_there_too() -> None:
    # Given the in-memory outbox holding, under a network, a record no run could have written
    outbox = MemoryOutbox()
    forged = IncidentRecord("203.0.113.0/24", "decoy", NOW, NOW, "decoy", "urgent", 1)  # type: ignore[arg-type]
    outbox.incident_records[forged.network] = forged

    # When the open incidents are read, and a run records an incident there on its read of none
    opened = outbox.open_incidents(NOW - DAY)
    recorded = outbox.remember_incident(replace(forged, severity="low"), None)

    # Then there is none, and the item is left as it is (as DynamoOutbox does)
    assert opened == outbox.incidents([forged.network]) == {}
    assert recorded is False


# --------------------------------------------------------------------------- end to end

ATTACK_AT = T0 + timedelta(days=10, hours=3)


@pytest.fixture
def geo(country_test_mmdb: Path) -> MaxMindGeoResolver:
    return MaxMindGeoResolver(country_test_mmdb)


def test_given_a_stolen_key_used_on_two_users_then_one_notification_and_a_later_user_updates_it(
    tmp_path: Path, geo: MaxMindGeoResolver
) -> None:
    # Given alice and bob at home in the US for ten days, then both calling from one Swedish
    # address in one hour, and carol from that network three hours later
    carol = f"arn:aws:iam::{ACCOUNT}:user/carol"
    history = [record(t, arn=arn) for arn in (ALICE, BOB, carol) for t in every(240, T0, step=4)]
    attack = [
        record(ATTACK_AT, ip=SE_IP),
        record(ATTACK_AT + timedelta(minutes=2), arn=BOB, key="AKIABOB", ip=SE_IP),
        record(ATTACK_AT + timedelta(hours=3), arn=carol, key="AKIACAROL", ip="89.160.20.113"),
    ]
    write_tree(tmp_path, files_by_delivery(history + attack))
    outbox = MemoryOutbox()
    out = io.StringIO()

    # When the trail is replayed
    summary, _ = replay(tmp_path, geo, JsonLinesAlertSink(out), RunOptions(), ReplayState(outbox=outbox))

    # Then one notification for alice and bob naming the other, then carol's as an update of it
    alerts: list[dict[str, Any]] = [json.loads(line) for line in out.getvalue().splitlines()]
    first, update = (Alert.model_validate(a) for a in alerts)
    assert first.incident is not None
    assert update.incident is not None
    assert {first.principal, first.incident.members[0].principal} == {ALICE, BOB}
    assert (update.principal, update.incident.id, update.incident.update) == (carol, first.alert_id, True)
    assert update.thread_id == first.alert_id
    # And each of them is recorded for suppression and quarantine as if alerted alone
    assert {f"{ALICE}|SE", f"{BOB}|SE", f"{carol}|SE"} <= set(outbox.last_alerted)
    assert summary.alerts_linked == 1


def test_given_more_incidents_than_a_team_reads_when_queued_then_their_members_are_rolled_up_by_name() -> (
    None
):
    # Given one run's twelve incidents of two alerts each, from twelve networks
    alerts = [
        an_alert(f"a{n:02d}{m}", principal=f"arn:aws:iam::{ACCOUNT}:user/u{n}-{m}", ip=f"198.51.{n}.{m + 1}")
        for n in range(12)
        for m in range(2)
    ]
    incidents = link(alerts, {}, NOW, DAY)
    outbox = MemoryOutbox()
    deps = Dependencies(source=None, geo=None, store=None, ledger=None, outbox=outbox, sink=None)  # type: ignore[arg-type]
    report = RunReport(NOW, NOW, NOW)

    # When the run queues them (more than rollup_after: an alert flood)
    _queue(incidents, RunOptions(), deps, report)

    # Then six notifications; the sixth rolls up the other six incidents, members included, by name
    assert len(incidents) == 12
    assert len(outbox.alerts) == 6
    (carrier,) = (a for a in outbox.alerts.values() if a.rolled_up)
    queued = {a.principal for a in outbox.alerts.values()}
    named = {m.principal for a in outbox.alerts.values() if a.incident for m in a.incident.members}
    assert queued | named | {r.principal for r in carrier.rolled_up} == {a.principal for a in alerts}
    assert (report.alerts_linked, report.alerts_rolled_up) == (12, 12)


def test_given_an_incident_carrier_over_an_item_when_compacted_then_its_members_are_cut_and_counted() -> None:
    # Given a carrier naming MAX_MEMBERS members and counting 10 more
    alerts = [
        an_alert(f"a{n:03d}", principal=f"arn:aws:iam::{ACCOUNT}:user/u{n}") for n in range(MAX_MEMBERS + 11)
    ]
    (assignment,) = link(alerts, {}, NOW, DAY)

    # When the outbox compacts it (a document over 350 KB)
    cut = compacted(assignment.alert)

    # Then five members stay named and the others are counted, none silently dropped
    assert cut.incident is not None
    assert len(cut.incident.members) == 5
    assert cut.incident.omitted_members == MAX_MEMBERS + 10 - 5
    assert cut.incident.alerts == MAX_MEMBERS + 11


# ------------------------------------------------------- a quiet re-alert never silences the others


def test_given_a_subjects_two_alerts_in_one_run_when_linked_then_the_notification_pages() -> None:
    """A stolen key's recon and its theft in one run (two accounts or regions): the run's first
    alert of the subject, then a re-alert for the sensitive method, no more severe. Both go out in
    one notification, the first about this attacker: it pages, in a thread of its own."""
    # Given the run's first alert of the subject (critical) and its re-alert (critical, sensitive),
    # which follows it and is quiet (paged at this severity already)
    first = an_alert("first", ip="171.100.5.84", location="TH", severity="critical", score=99)
    again = an_alert("again", ip="171.100.5.90", location="TH", severity="critical", score=99, sensitive=True)
    again = again.model_copy(update={"follows_alert_id": "first", "quiet_update": True})

    # When the run links them
    (assignment,) = link([first, again], {}, NOW, DAY)

    # Then the notification is the incident's first: it pages, in its own thread
    carrier = assignment.alert
    assert carrier.alert_id == "again"
    assert not carrier.is_update
    assert carrier.notification == "new"
    assert carrier.thread_id == "again"
    assert [m.alert_id for m in assignment.members] == ["first"]


def test_given_a_quiet_re_alert_and_a_fresh_alert_from_one_network_then_the_fresh_one_pages() -> None:
    """An attacker's new victim must not ride, silenced, in another subject's quiet re-alert."""
    # Given a quiet re-alert of an alert sent in an earlier run, and another principal's first
    # alert from the same network, less urgent
    again = an_alert("again", ip="171.100.5.84", location="TH", severity="critical", score=99, sensitive=True)
    again = again.model_copy(update={"follows_alert_id": "earlier", "quiet_update": True})
    fresh = an_alert("fresh", principal=BOB, ip="171.100.5.90", location="TH", severity="high", score=90)

    # When linked
    (assignment,) = link([again, fresh], {}, NOW, DAY)

    # Then the notification pages (as an escalation in the re-alert's thread)
    carrier = assignment.alert
    assert carrier.alert_id == "again"
    assert not carrier.is_update
    assert carrier.thread_id == "earlier"


def test_given_only_quiet_re_alerts_of_earlier_alerts_when_linked_then_the_notification_stays_quiet() -> None:
    # Given two quiet re-alerts, each of an alert sent in an earlier run
    a = an_alert("a", ip="171.100.5.84", location="TH", severity="high", sensitive=True)
    b = an_alert("b", principal=BOB, ip="171.100.5.90", location="TH", severity="high", sensitive=True)
    a = a.model_copy(update={"follows_alert_id": "a0", "quiet_update": True})
    b = b.model_copy(update={"follows_alert_id": "b0", "quiet_update": True})

    # When linked, Then the notification is the quiet update its subjects' earlier pages allow
    (assignment,) = link([a, b], {}, NOW, DAY)
    assert assignment.alert.is_update
