"""Incidents across runs: the run's decided alerts linked by source network (``core.incidents``)
to the incidents still open, each network's incident remembered in the outbox's subject records.

An open incident is kept under its network's subject (``~net|203.0.113.0/24``) as the outbox
keeps a subject's last alert (``Suppression``): ``at`` is its last member's run, ``alert_id`` the
alert that last recorded it (the compare-and-set token, as for identities), and the sensitive
methods its members brought, beside three entries of our own that no method can be named (they
start with ``!``, which sorts before any AWS method): the incident's first alert id, its highest
severity and its member count. No port changes: DynamoDB and the in-memory fake keep these
records as they keep any subject's, with the same compare-and-set.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from trailgeo.app.detect.context import Dependencies, RunOptions
from trailgeo.core.alerts import Alert
from trailgeo.core.incidents import (
    MAX_NETWORKS,
    SEVERITIES,
    Assignment,
    OpenIncident,
    is_network_subject,
    link,
)
from trailgeo.observability import logger
from trailgeo.ports import MAX_REMEMBERED_METHODS, Suppression

_ID = "!incident:"
_SEVERITY = "!severity:"
_ALERTS = "!alerts:"
_KEPT_METHODS = MAX_REMEMBERED_METHODS - 3  # the three entries of our own always fit
MAX_RECORD_RACES = 5


def to_record(incident: OpenIncident) -> Suppression:
    methods = frozenset(sorted(incident.sensitive_methods)[:_KEPT_METHODS])
    own = {f"{_ID}{incident.incident_id}", f"{_SEVERITY}{incident.severity}", f"{_ALERTS}{incident.alerts}"}
    return Suppression(incident.last_at, incident.last_alert_id, methods | own)


def from_record(record: Suppression) -> OpenIncident | None:
    """The incident a network's record holds; None for a record that holds none (never read as one)."""
    own = {m.partition(":")[0] + ":": m.partition(":")[2] for m in record.sensitive_methods if m[:1] == "!"}
    incident_id, severity, alerts = own.get(_ID), own.get(_SEVERITY), own.get(_ALERTS, "")
    if not incident_id or severity not in SEVERITIES or not alerts.isdigit():
        return None
    return OpenIncident(
        incident_id=incident_id,
        last_at=record.at,
        last_alert_id=record.alert_id,
        severity=SEVERITIES[SEVERITIES.index(severity)],
        sensitive_methods=frozenset(m for m in record.sensitive_methods if m[:1] != "!"),
        alerts=int(alerts),
    )


def open_incidents(records: Mapping[str, Suppression]) -> dict[str, OpenIncident]:
    """The incidents remembered under network subjects among ``records`` (any age)."""
    found = {}
    for subject, record in records.items():
        if is_network_subject(subject):
            incident = from_record(record)
            if incident is not None:
                found[subject] = incident
    return found


def linked(
    decided: list[Alert],
    records: dict[str, Suppression],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
) -> list[Assignment]:
    """The run's decided alerts as incidents, each incident remembered under its networks before
    anything is queued (a crash in between is repaired by the takeover, which queues the same ids)."""
    assignments = link(decided, open_incidents(records), scheduled_at, options.incident_window)
    for assignment in assignments:
        if not assignment.networks:
            continue
        state = assignment.remembered(scheduled_at)
        for subject in sorted(assignment.networks)[:MAX_NETWORKS]:
            _remember(subject, state, records, deps)
        if assignment.members or assignment.incident is not None:
            info = assignment.alert.incident
            logger.info(
                "alerts linked into one incident",
                incident_id=state.incident_id,
                carrier=assignment.alert.alert_id,
                members=len(assignment.members),
                update=info is not None and info.update,
                escalation=info is not None and info.escalation,
            )
    return assignments


def _remember(subject: str, state: OpenIncident, records: dict[str, Suppression], deps: Dependencies) -> None:
    """Record the incident under a network (compare-and-set on the record read; another invocation
    recording the network meanwhile makes this one read it again and write over it: the alert is
    decided already, the record follows the newest)."""
    for _ in range(MAX_RECORD_RACES):
        last = records.get(subject)
        record = to_record(state)
        if deps.outbox.remember(subject, record, last.alert_id if last is not None else None):
            records[subject] = record
            return
        records.update(deps.outbox.recent([subject]))
    logger.warning("incident network record kept changing: left as it is", subject=subject)
