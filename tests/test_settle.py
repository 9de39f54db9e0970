"""A thread's first notification below the paging severity waits one schedule period, and what
joins it meanwhile goes out inside it (app/detect/publish.py, core.incidents.absorbed); an incident
that paged the on-call pages no more until the team resolves it (core.alerts.pages_again)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from tests.builders import BOB
from tests.test_incidents import DAY, NOW, an_alert, an_open_incident
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryOutbox
from trailgeo.app.detect import Dependencies, RunOptions, RunReport, publish_pending
from trailgeo.app.settings import Settings
from trailgeo.core.alerts import Alert, Severity
from trailgeo.core.incidents import link
from trailgeo.core.render.email import email_subject
from trailgeo.ports import AlertRefusedError

pytestmark = pytest.mark.unit

RUN = timedelta(minutes=15)
NET = "203.0.113.0/24"


@dataclass
class Published:
    """The alerts sink of these tests: what went out, in order; refuses the alert ids in ``refuse``."""

    alerts: list[Alert] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    def publish(self, alert: Alert) -> str:
        if alert.alert_id in self.refuse:
            raise AlertRefusedError(f"{alert.alert_id} refused")
        self.alerts.append(alert)
        return f"message-{len(self.alerts)}"


def deps(outbox: MemoryOutbox, sink: Published, at: datetime) -> Dependencies:
    clock: Callable[[], datetime] = lambda: at  # noqa: E731
    return Dependencies(source=None, geo=None, store=None, ledger=None, outbox=outbox, sink=sink, clock=clock)  # type: ignore[arg-type]


def publish(
    outbox: MemoryOutbox, sink: Published, at: datetime, options: RunOptions | None = None
) -> RunReport:
    report = RunReport(at, at, at)
    publish_pending(deps(outbox, sink, at), report, options or RunOptions())
    return report


def first_and_escalation(first_severity: str = "medium", then: str = "high") -> tuple[Alert, Alert]:
    """A first alert from 203.0.113.0/24 at ``first_severity``, and a run later the next calls from
    that network at ``then`` with a sensitive method: the incident's escalation, as linking makes it."""
    (opened,) = link([an_alert("first", severity=first_severity, ip="203.0.113.5")], {}, NOW, DAY)
    open_ = {n: opened.remembered(NOW) for n in opened.networks}
    later = an_alert("attack", principal=BOB, ip="203.0.113.9", severity=then, sensitive=True)
    (escalated,) = link([later.model_copy(update={"detected_at": NOW + RUN})], open_, NOW + RUN, DAY)
    return opened.alert, escalated.alert


def test_given_a_medium_alert_when_its_run_publishes_then_it_waits_one_period_and_goes_out_unchanged() -> (
    None
):
    # Given a medium alert queued by the run at NOW (below the paging severity, high)
    outbox, sink = MemoryOutbox(), Published()
    first, _ = first_and_escalation()
    outbox.put(first)

    # When that run publishes, then the next one
    during = publish(outbox, sink, NOW + timedelta(minutes=2))
    waited = list(sink.alerts)
    after = publish(outbox, sink, NOW + RUN)

    # Then it waits through its own run (counted, and measured as pending), and the next run sends it
    # as it was queued: nothing joined it
    assert (waited, during.alerts_settling, during.oldest_pending_minutes) == ([], 1, 2)
    assert [a.alert_id for a in sink.alerts] == ["first"]
    assert sink.alerts[0] == first
    assert (after.alerts_published, after.alerts_settling, outbox.pending()) == (1, 0, [])


def test_given_a_medium_first_alert_when_its_escalation_follows_then_one_notification_at_high() -> None:
    # Given a stolen key's medium alert waiting to settle, and a run later its next calls from the
    # same network at high with a sensitive method: linked as the incident's escalation
    outbox, sink = MemoryOutbox(), Published()
    first, escalation = first_and_escalation()
    assert escalation.notification == "escalation"
    outbox.put(first)
    publish(outbox, sink, NOW + timedelta(minutes=2))
    outbox.put(escalation)

    # When the next run publishes
    report = publish(outbox, sink, NOW + RUN)

    # Then one notification goes out: the first alert's thread, at high, new (a page, not an
    # escalation of a page nobody got), naming the escalation as a member; both are sent
    (sent,) = sink.alerts
    assert (sent.alert_id, sent.thread_id, sent.severity, sent.notification) == (
        "first",
        "first",
        "high",
        "new",
    )
    assert sent.incident is not None
    assert [m.alert_id for m in sent.incident.members] == ["attack"]
    assert sent.incident.members[0].sensitive_methods == ["iam.amazonaws.com:CreateAccessKey"]
    assert (sent.incident.alerts, sent.incident.principals, sent.incident.networks) == (2, 2, [NET])
    assert email_subject(sent).startswith("[HIGH] Incident of 2 alerts: ")
    assert f"{BOB} (account" in sent.explanation
    assert sent.explanation.count("A new incident") == 1
    assert (report.alerts_published, report.alerts_settled, outbox.pending()) == (1, 1, [])
    assert outbox.sent == {"first": "message-1", "attack": "message-1"}


def test_given_a_waiting_first_alert_when_a_high_one_joins_in_the_same_run_then_it_goes_out_at_once() -> None:
    # Given an attacker's harmless medium alert first, and their real calls from the same network at
    # high in the same run (another fan-out task, another account of a role chain)
    outbox, sink = MemoryOutbox(), Published()
    first, escalation = first_and_escalation()
    outbox.put(first)
    outbox.put(escalation.model_copy(update={"detected_at": NOW}))

    # When the run publishes, two minutes in
    report = publish(outbox, sink, NOW + timedelta(minutes=2))

    # Then the real alert is not held back by the decoy's wait: one notification at high, now
    (sent,) = sink.alerts
    assert (sent.severity, sent.notification, report.alerts_settling, outbox.pending()) == (
        "high",
        "new",
        0,
        [],
    )


@pytest.mark.parametrize(
    ("severity", "paging", "settle", "waits"),
    [
        ("medium", "high", RUN, True),
        ("low", "high", RUN, True),
        ("high", "high", RUN, False),  # it pages: never held
        ("critical", "high", RUN, False),
        ("medium", "medium", RUN, False),  # PagingSeverity=medium: a medium alert pages
        ("low", "medium", RUN, True),
        ("medium", "high", timedelta(0), False),  # SETTLE_MINUTES=0
    ],
)
def test_given_a_first_alert_when_published_then_only_below_the_paging_severity_does_it_wait(
    severity: str, paging: str, settle: timedelta, waits: bool
) -> None:
    # Given a first alert of some severity, under some paging severity and settle period
    outbox, sink = MemoryOutbox(), Published()
    first, _ = first_and_escalation(first_severity=severity)
    outbox.put(first)

    # When its own run publishes
    publish(outbox, sink, NOW + timedelta(minutes=1), RunOptions(paging_severity=paging, settle=settle))  # type: ignore[arg-type]

    # Then it waits only when below the paging severity, with a settle period
    assert (not sink.alerts) is waits


def test_given_an_update_of_a_sent_incident_when_published_then_it_never_waits() -> None:
    # Given an incident whose first notification went out, and a quiet medium update of it
    outbox, sink = MemoryOutbox(), Published()
    (update,) = link(
        [an_alert("later", principal=BOB, ip="203.0.113.50")], {NET: an_open_incident("first")}, NOW, DAY
    )
    assert update.alert.notification == "update"
    outbox.put(update.alert)

    # When its run publishes
    publish(outbox, sink, NOW + timedelta(minutes=1))

    # Then it goes out at once in the incident's thread (only a thread's first notification waits)
    assert [(a.alert_id, a.thread_id) for a in sink.alerts] == [("later", "first")]


def test_given_a_joined_alert_another_publisher_holds_then_it_goes_out_later_alone() -> None:
    # Given a waiting first alert and its escalation, the escalation claimed by another publisher
    # (a fan-out reducer publishing side by side)
    outbox, sink = MemoryOutbox(), Published()
    first, escalation = first_and_escalation()
    outbox.put(first)
    outbox.put(escalation)
    assert outbox.claim_publish("attack", "reducer", NOW + RUN + timedelta(minutes=5), NOW + RUN)

    # When this run publishes, then the next one after the reducer died
    publish(outbox, sink, NOW + RUN)
    publish(outbox, sink, NOW + 3 * RUN)

    # Then nothing is lost: the first alert went out with the escalation's severity (the publisher
    # read it), and the escalation goes out on its own once its holder's lease is over
    assert [(a.alert_id, a.notification) for a in sink.alerts] == [("first", "new"), ("attack", "escalation")]
    assert outbox.pending() == []


def test_given_the_channel_refusing_the_first_notification_then_what_joined_it_goes_out_alone() -> None:
    # Given a waiting first alert and its escalation, and a channel that refuses the first alert's
    # notification for what it holds
    outbox, sink = MemoryOutbox(), Published(refuse={"first"})
    first, escalation = first_and_escalation()
    outbox.put(first)
    outbox.put(escalation)

    # When two runs publish
    one = publish(outbox, sink, NOW + RUN)
    publish(outbox, sink, NOW + 2 * RUN)

    # Then the first is parked, and the escalation still goes out, on its own
    assert one.alerts_parked == 1
    assert [a.alert_id for a in sink.alerts] == ["attack"]
    assert outbox.pending() == []


def test_given_a_crash_after_the_first_notification_then_a_joined_alert_goes_out_again_never_lost() -> None:
    # Given a waiting first alert and its escalation, and a publisher that sent their notification
    # and marked the first one sent, then died before marking the escalation
    outbox, sink = MemoryOutbox(), Published()
    first, escalation = first_and_escalation()
    outbox.put(first)
    outbox.put(escalation)
    outbox.mark_sent("first", "message-0")

    # When the next run publishes
    publish(outbox, sink, NOW + 2 * RUN)

    # Then the escalation goes out on its own: at worst a second page, never a missing one
    assert [(a.alert_id, a.notification) for a in sink.alerts] == [("attack", "escalation")]


def test_given_the_replayed_notifications_as_json_then_a_settled_one_names_its_members() -> None:
    # Given a settled notification written by the JSON Lines sink (trailgeo replay's)
    outbox, out = MemoryOutbox(), io.StringIO()
    first, escalation = first_and_escalation()
    outbox.put(first)
    outbox.put(escalation)
    report = RunReport(NOW, NOW, NOW)

    # When it is published
    publish_pending(deps(outbox, JsonLinesAlertSink(out), NOW + RUN), report, RunOptions())  # type: ignore[arg-type]

    # Then its document is the incident's, naming the escalation
    (line,) = out.getvalue().splitlines()
    document = json.loads(line)
    assert (document["alert_id"], document["severity"]) == ("first", "high")
    assert [m["alert_id"] for m in document["incident"]["members"]] == ["attack"]


def test_given_the_deployment_s_environment_then_the_paging_severity_and_settle_period_are_its_own() -> None:
    # Given the detector's environment, with and without PAGING_SEVERITY and SETTLE_MINUTES
    base = {
        "TRAIL_BUCKET": "trail-bucket",
        "TABLE_NAME": "trailgeo-table",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
    }

    # When the settings are read
    default = Settings.from_environ(base).run_options()
    set_ = Settings.from_environ({**base, "PAGING_SEVERITY": "critical", "SETTLE_MINUTES": "0"}).run_options()

    # Then the default waits a schedule period below high, and the deployment's values apply
    assert (default.paging_severity, default.settle) == ("high", RUN)
    assert (set_.paging_severity, set_.settle) == ("critical", timedelta(0))


# --------------------------------------------------------------------------- paged the on-call


@pytest.mark.parametrize(
    ("severity", "sensitive", "paging", "escalates"),
    [
        ("critical", frozenset({"sts.amazonaws.com:AssumeRole"}), "high", False),  # paged the on-call
        ("critical", frozenset(), "high", False),  # a critical decoy: the on-call holds its network
        ("high", frozenset({"sts.amazonaws.com:AssumeRole"}), "high", False),
        ("medium", frozenset(), "high", True),  # below the pager: a new sensitive method is news
        ("high", frozenset(), "critical", True),  # a team paged at critical only
    ],
)
def test_given_an_incident_when_a_member_brings_a_new_sensitive_method_then_it_pages_unless_on_call_paged(
    severity: str, sensitive: frozenset[str], paging: Severity, escalates: bool
) -> None:
    # Given an open incident at some severity, with or without sensitive methods (a role chain's
    # first hop: critical, sts:AssumeRole), not resolved
    open_ = {NET: an_open_incident("first", severity, sensitive)}

    # When the chain's next account alerts from that network at medium with a sensitive method new
    # to the incident (iam:CreateAccessKey)
    next_ = an_alert("next", principal=BOB, ip="203.0.113.9", sensitive=True)
    (assignment,) = link([next_], open_, NOW, DAY, paging)

    # Then it pages anew unless the incident paged at the paging severity already; as an update it
    # is still named in the incident's thread with its sensitive method
    alert = assignment.alert
    assert alert.incident is not None
    assert alert.incident.escalation is escalates
    assert alert.incident.update is not escalates
    assert alert.sensitive_methods == ["iam.amazonaws.com:CreateAccessKey"]


def test_given_joiners_below_paging_when_a_first_alert_waits_then_one_period_only() -> None:
    # Given a medium first alert, and an attacker who keeps adding medium alerts to its thread (a
    # new principal from the same network every few minutes) so that it waits for ever
    outbox, sink = MemoryOutbox(), Published()
    first, _ = first_and_escalation()
    outbox.put(first)
    open_ = {NET: an_open_incident("first")}
    for minutes in (5, 10, 14):
        joiner = an_alert(f"noise-{minutes}", principal=f"{BOB}{minutes}", ip="203.0.113.77")
        (update,) = link(
            [joiner.model_copy(update={"detected_at": NOW + timedelta(minutes=minutes)})], open_, NOW, DAY
        )
        outbox.put(update.alert)

    # When the run one period after the first alert's publishes
    publish(outbox, sink, NOW + RUN)

    # Then the wait ran from the first alert's run: everything goes out now, in one notification
    (sent,) = sink.alerts
    assert sent.alert_id == "first"
    assert sent.incident is not None
    assert len(sent.incident.members) == 3
    assert outbox.pending() == []
