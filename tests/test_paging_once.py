"""A page holds the on-call for an hour (core.alerts.pages_again): once a subject's alert or an
incident paged at the paging severity, what follows within the hour (a higher severity, a role
chain's next accounts) is an update in its thread, at the severity it brings; a higher severity
after it pages again. Whatever follows a thread the team has resolved (``trailgeo alerts resolve``,
any verdict: AlertOutbox.resolved) pages anew, so that a decoy a hurried analyst closed as a trip,
or set aside, cannot carry the real theft in quietly."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from tests.aws import TABLE, create_deployment
from tests.builders import BOB
from tests.test_incidents import NOW, an_alert, deps_of
from trailgeo.adapters.dynamodb import DynamoOutbox
from trailgeo.adapters.memory import MemoryOutbox
from trailgeo.app.detect import RunOptions, RunReport
from trailgeo.app.detect.alerting import _raise_alerts, alert_subject
from trailgeo.app.detect.incidents import to_record
from trailgeo.core.alerts import Alert, pages_again
from trailgeo.core.incidents import OpenIncident
from trailgeo.ports import AlertDigest, AlertOutbox, Resolution, Suppression, TriageRecord

NETWORK = "67.43.156.0/24"  # tests.test_incidents.an_alert's address
LIST_SECRETS = "secretsmanager.amazonaws.com:ListSecrets"


MINUTES = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("severity", "paged", "paging", "resolved", "new_sensitive", "ago", "pages"),
    [
        ("high", "medium", "high", False, False, None, True),  # the thread reaches the pager
        ("medium", "medium", "high", False, True, None, True),  # below it, a new sensitive method
        ("medium", "medium", "high", False, False, None, False),  # below it, nothing new
        ("critical", "high", "high", False, False, 15 * MINUTES, False),  # the page holds
        ("critical", "high", "high", False, True, 59 * MINUTES, False),
        ("critical", "high", "high", False, False, 60 * MINUTES, True),  # the hour is over
        ("high", "high", "high", False, True, 3 * 60 * MINUTES, False),  # no higher: in the thread
        ("critical", "high", "high", False, False, None, True),  # no known page: it pages
        ("critical", "high", "critical", False, False, None, True),  # a team paged at critical only
        ("high", "high", "high", True, False, 5 * MINUTES, True),  # the team closed the thread
        ("critical", "", "high", False, False, None, True),  # a record from before severities
    ],
)
def test_given_a_threads_state_then_a_later_alert_pages_only_when_news_to_the_pager(
    severity: str,
    paged: str,
    paging: str,
    resolved: bool,
    new_sensitive: bool,
    ago: timedelta | None,
    pages: bool,
) -> None:
    found = pages_again(
        severity,
        paged,
        paging,  # type: ignore[arg-type]
        resolved=resolved,
        new_sensitive=new_sensitive,
        paged_ago=ago,
    )
    assert found is pages


def resolve(outbox: MemoryOutbox, alert_id: str, verdict: str = "expected") -> None:
    """The team resolves an alert (what ``trailgeo alerts resolve`` writes)."""
    digest = AlertDigest.of(an_alert(alert_id))
    outbox.triage_records[alert_id] = TriageRecord(digest, Resolution(verdict, "bob", NOW), 1)  # type: ignore[arg-type]


def recorded_recon(
    outbox: MemoryOutbox,
    *,
    last: str = "recon",
    sensitive: frozenset[str] = frozenset(),
    paged: timedelta = 15 * MINUTES,
) -> dict[str, Suppression]:
    """alice's recon from BT alerted at high, paging the on-call ``paged`` ago (its thread
    ``recon``; ``last``: the subject's latest alert in it), as the subject's record holds it."""
    subject = alert_subject(an_alert("recon"))
    at = NOW - paged
    record = Suppression(at, last, sensitive, frozenset(), "high", "recon", at)
    assert outbox.remember(subject, record, None)
    return {subject: record}


def run(outbox: AlertOutbox, recent: dict[str, Suppression], alert: Alert, reopened: int = 0) -> Alert:
    """One run deciding on ``alert``: what it queued (``reopened``: the threads the run must count
    as back after the team resolved them)."""
    report = RunReport(NOW, NOW, NOW)
    _raise_alerts([(alert, frozenset())], dict(recent), NOW, deps_of(outbox), RunOptions(), report, {})
    assert report.threads_reopened == reopened
    (queued,) = outbox.pending()
    return queued


def backdoor() -> Alert:
    return an_alert("backdoor", severity="critical", sensitive=True)


def test_given_a_recon_paged_at_high_when_the_backdoor_follows_critical_then_an_update_in_its_thread() -> (
    None
):
    # Given alice's recon from BT, paged at high 15 minutes ago, not resolved
    outbox = MemoryOutbox()
    recent = recorded_recon(outbox)

    # When her key's backdoor follows from there, critical
    queued = run(outbox, recent, backdoor())

    # Then the on-call, holding the thread, is not paged again: the backdoor goes in the thread at
    # critical (each channel's copy raised to it); the thread and its page stay the recon's
    assert (queued.severity, queued.follows_alert_id, queued.notification) == ("critical", "recon", "update")
    (record,) = outbox.recent(recent).values()
    assert (record.alert_id, record.thread, record.severity) == ("backdoor", "recon", "critical")
    assert record.paged_at == NOW - 15 * MINUTES


def test_given_a_recon_paged_hours_ago_and_set_aside_when_the_backdoor_follows_critical_then_it_pages() -> (
    None
):
    # Given alice's recon from BT, paged at high three hours ago, set aside: not resolved
    outbox = MemoryOutbox()
    recent = recorded_recon(outbox, paged=3 * 60 * MINUTES)

    # When her key's backdoor follows from there, critical
    queued = run(outbox, recent, backdoor())

    # Then the page no longer holds: the backdoor pages as an escalation in the recon's thread, and
    # is the thread's page from now
    assert (queued.severity, queued.follows_alert_id, queued.notification) == (
        "critical",
        "recon",
        "escalation",
    )
    (record,) = outbox.recent(recent).values()
    assert (record.thread, record.paged_at) == ("recon", NOW)


@pytest.mark.parametrize(
    ("verdict", "recon_methods"),
    [("expected", frozenset()), ("false-positive", frozenset({LIST_SECRETS})), ("attack", frozenset())],
)
def test_given_a_recon_the_team_resolved_when_the_backdoor_follows_then_it_pages_anew(
    verdict: str, recon_methods: frozenset[str]
) -> None:
    # Given alice's recon from BT paged at high (with or without a sensitive method of its own),
    # and resolved by the team: a trip, a false positive, an attack being handled
    outbox = MemoryOutbox()
    recent = recorded_recon(outbox, sensitive=recon_methods)
    resolve(outbox, "recon", verdict)

    # When her key's backdoor follows from there within the window (counted: the thread is back)
    queued = run(outbox, recent, backdoor(), reopened=1)

    # Then it pages (neither quiet nor suppressed) as the first alert of a thread of its own, not in
    # the closed one's finding or chat thread: what follows it is judged against it
    assert (queued.severity, queued.follows_alert_id, queued.notification, queued.thread_id) == (
        "critical",
        None,
        "new",
        "backdoor",
    )
    (record,) = outbox.recent(recent).values()
    assert (record.alert_id, record.thread) == ("backdoor", "backdoor")


def test_given_a_threads_first_alert_resolved_when_its_latest_was_an_update_then_it_still_pages() -> None:
    # Given alice's thread: the recon that paged, then a quiet update ("update-1", the subject's
    # latest alert); the team resolved the recon, what it was paged with
    outbox = MemoryOutbox()
    recent = recorded_recon(outbox, last="update-1")
    resolve(outbox, "recon")

    # When the backdoor follows
    queued = run(outbox, recent, backdoor(), reopened=1)

    # Then it pages: resolving the alert a thread began with closes the thread
    assert (queued.follows_alert_id, queued.notification) == (None, "new")


def recorded_incident(outbox: MemoryOutbox, paged: timedelta | None) -> None:
    """An incident from the attacker's network at high (no sensitive method), its last member 30
    minutes ago, which paged the on-call ``paged`` ago (None: a record from before pages were kept)."""
    at = NOW - 30 * MINUTES
    paged_at = NOW - paged if paged is not None else None
    incident = OpenIncident("decoy", at, "decoy", "high", frozenset(), 1, at, paged_at=paged_at)
    assert outbox.remember_incident(to_record(NETWORK, incident), None)


@pytest.mark.parametrize(
    ("paged", "resolved", "pages"),
    [
        (30 * MINUTES, False, False),  # the on-call holds it
        (30 * MINUTES, True, True),  # the team closed it
        (None, False, True),  # no page known: a higher severity pages
    ],
)
def test_given_an_incident_that_paged_when_another_principal_follows_then_an_update_until_resolved(
    paged: timedelta | None, resolved: bool, pages: bool
) -> None:
    # Given an incident from a network at high, which paged the on-call half an hour ago (or no page
    # is known), resolved by the team or not
    outbox = MemoryOutbox()
    recorded_incident(outbox, paged)
    if resolved:
        resolve(outbox, "decoy")

    # When bob's key creates an access key from that network, critical
    attack = an_alert("attack", principal=BOB, severity="critical", sensitive=True)
    queued = run(outbox, {}, attack, reopened=int(resolved))

    # Then it is an update in the incident's thread while the page holds, and pages anew (an
    # escalation naming the incident, in its own thread) once the team has closed it; the incident
    # records when it paged
    assert queued.incident is not None
    assert queued.incident.id == "decoy"
    assert (queued.incident.escalation, queued.notification) == (
        (True, "escalation") if pages else (False, "update")
    )
    assert queued.thread_id == ("attack" if pages else "decoy")
    record = outbox.incidents([NETWORK])[NETWORK]
    assert record.paged_at == (NOW if pages else NOW - 30 * MINUTES)


@pytest.mark.parametrize("forged", [{"N": "1"}, {"S": ""}, {"S": "x" * 129}, {"L": []}])
def test_given_a_subject_record_with_a_forged_thread_when_read_then_its_latest_alert_is_its_thread(
    aws: Any, forged: dict[str, Any]
) -> None:
    # Given alice's record in the table (recon, paged at high), its thread and page fields written by
    # someone else (no alert id, no zoned time a run could have kept there)
    create_deployment(aws)
    client = aws.client("dynamodb")
    outbox = DynamoOutbox(client, TABLE, clock=lambda: NOW)
    recent = recorded_recon(MemoryOutbox())
    (subject,) = recent
    assert outbox.remember(subject, recent[subject], None)
    client.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "SUPPRESS"}, "sk": {"S": subject}},
        UpdateExpression="SET tid = :forged, pat = :forged",
        ExpressionAttributeValues={":forged": forged},
    )

    # When it is read
    (record,) = outbox.recent([subject]).values()

    # Then its thread is its latest alert alone (resolving that alert closes it), and no page is
    # known (a higher severity pages): the run goes on
    assert (record.thread, record.thread_alerts, record.paged_at) == ("", {"recon"}, None)


@dataclass(slots=True)
class AskedOutbox(MemoryOutbox):
    """The in-memory outbox, noting which alerts a run asks about."""

    asked: set[str] = field(default_factory=set)

    def resolved(self, alert_ids: Collection[str]) -> frozenset[str]:
        self.asked |= set(alert_ids)
        return MemoryOutbox.resolved(self, alert_ids)


@pytest.mark.parametrize(("ago", "asked"), [(2 * 60 * MINUTES, True), (2 * 24 * 60 * MINUTES, False)])
def test_given_a_subjects_last_alert_when_a_run_decides_then_it_asks_of_its_thread_only_within_the_window(
    ago: timedelta, asked: bool
) -> None:
    # Given alice's recon alerted 2 hours ago (within the 24-hour window) or 2 days ago (over, still
    # quarantined)
    outbox = AskedOutbox()
    recent = recorded_recon(outbox, paged=ago)

    # When a run decides on her key's next alert
    report = RunReport(NOW, NOW, NOW)
    _raise_alerts([(backdoor(), frozenset())], dict(recent), NOW, deps_of(outbox), RunOptions(), report, {})

    # Then it asks whether the team resolved the recon only while its thread can go on
    assert ("recon" in outbox.asked) is asked
