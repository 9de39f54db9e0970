"""Incidents across runs: the run's decided alerts linked by source network (``core.incidents``)
to the incidents still open, each network's incident remembered in the outbox's incident records.

An open incident is kept under each of its networks (``203.0.113.0/24``) as a
``ports.IncidentRecord``, in a partition of its own (never a subject's ``Suppression``, so that no
reader of subjects has to know of it): its first alert id, its first and last members' runs, the
alert that last recorded it (the compare-and-set token, as for a subject's last alert), its highest
severity, member count and sensitive methods. A run reads the open incidents once
(``AlertOutbox.open_incidents``); an item that is no such record (written by someone else) reads as
no incident, so the run's alerts from that network open a new one and page.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from trailgeo.app.detect.context import Dependencies, RunOptions, RunReport
from trailgeo.core.alerts import Alert
from trailgeo.core.incidents import MAX_NETWORKS, Assignment, OpenIncident, link, network_keys
from trailgeo.observability import logger
from trailgeo.ports import IncidentRecord

MAX_RECORD_RACES = 5


def to_record(network: str, incident: OpenIncident) -> IncidentRecord:
    return IncidentRecord(
        network=network,
        incident_id=incident.incident_id,
        first_at=incident.first_at or incident.last_at,
        last_at=incident.last_at,
        last_alert_id=incident.last_alert_id,
        severity=incident.severity,
        members=incident.alerts,
        sensitive_methods=incident.sensitive_methods,
        paged_at=incident.paged_at,
    )


def from_record(record: IncidentRecord, resolved: frozenset[str] = frozenset()) -> OpenIncident:
    """The incident a record keeps; ``resolved``: the alerts the team resolved (its first or its
    last among them closes it: what follows pages anew)."""
    return OpenIncident(
        incident_id=record.incident_id,
        last_at=record.last_at,
        last_alert_id=record.last_alert_id,
        severity=record.severity,
        sensitive_methods=record.sensitive_methods,
        alerts=record.members,
        first_at=record.first_at,
        resolved=bool({record.incident_id, record.last_alert_id} & resolved),
        paged_at=record.paged_at,
    )


def open_incidents(
    records: Mapping[str, IncidentRecord], resolved: frozenset[str] = frozenset()
) -> dict[str, OpenIncident]:
    """The incidents of ``records`` by network (any age; ``core.incidents.link`` keeps the live)."""
    return {network: from_record(record, resolved) for network, record in records.items()}


def linked(
    decided: list[Alert],
    records: dict[str, IncidentRecord],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport | None = None,
) -> list[Assignment]:
    """The run's decided alerts as incidents, each incident remembered under its networks before
    anything is queued (a crash in between is repaired by the takeover, which queues the same ids).
    One read tells which of the open incidents the run's alerts touch the team has resolved."""
    touched = {k for alert in decided for k in network_keys(alert)}
    threads = {i for n, r in records.items() if n in touched for i in (r.incident_id, r.last_alert_id)}
    resolved = deps.outbox.resolved(threads) if threads else frozenset()
    assignments = link(
        decided,
        open_incidents(records, resolved),
        scheduled_at,
        options.incident_window,
        options.paging_severity,
    )
    for assignment in assignments:
        if not assignment.networks:
            continue
        state = assignment.remembered(scheduled_at, options.paging_severity)
        for network in sorted(assignment.networks)[:MAX_NETWORKS]:
            _remember(network, state, records, deps)
        if assignment.incident is not None and assignment.incident.resolved and report is not None:
            report.threads_reopened += 1
            logger.warning(
                "an incident the team resolved has new members: it pages anew",
                incident_id=assignment.incident.incident_id,
            )
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


def _remember(
    network: str, state: OpenIncident, records: dict[str, IncidentRecord], deps: Dependencies
) -> None:
    """Record the incident under a network (compare-and-set on the record read; another invocation
    recording the network meanwhile makes this one read it again and write over it: the alert is
    decided already, the record follows the newest). An item under the network that is no incident
    is left as it is (logged): the alerts are decided and queued all the same."""
    for _ in range(MAX_RECORD_RACES):
        last = records.get(network)
        record = to_record(network, state)
        if deps.outbox.remember_incident(record, last.last_alert_id if last is not None else None):
            records[network] = record.bounded()
            return
        found = deps.outbox.incidents([network])
        if network not in found and last is None:
            logger.warning("incident network holds no readable incident: left as it is", network=network)
            return
        records.pop(network, None)
        records.update(found)
    logger.warning("incident network record kept changing: left as it is", network=network)
