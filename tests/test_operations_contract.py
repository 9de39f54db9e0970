"""What the operator commands read and write (ports.OperationsView, ports.TuningStore): one contract
on the in-memory fakes and on the AWS adapters (DynamoDB and SSM on moto)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from tests.aws import TABLE, create_deployment
from tests.conftest import Backend
from tests.test_channels import fixed_alert
from trailgeo.adapters.dynamodb import DynamoLedger, DynamoOutbox
from trailgeo.adapters.memory import MemoryLedger, MemoryOperations, MemoryOutbox, MemoryTuningStore
from trailgeo.adapters.operations import DynamoOperations, SsmTuningStore, _triage_item
from trailgeo.core.alerts import Alert
from trailgeo.ports import (
    MAX_NOTE_CHARS,
    MAX_RESOLUTION_HISTORY,
    MAX_RESOLVER_CHARS,
    AlertDigest,
    AlertOutbox,
    ConcurrentChangeError,
    Ledger,
    OperationsError,
    OperationsView,
    Resolution,
    TableMissingError,
    TriageRecord,
    TuningStore,
)

NOW = datetime(2026, 10, 2, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=14)
PARAMETER = "/trailgeo/tuning"


@dataclass(frozen=True)
class Deployment:
    """What the detector writes (ledger, outbox) and what ``status``/``explain`` read of it."""

    ledger: Ledger
    outbox: AlertOutbox
    view: OperationsView


@pytest.fixture
def deployment(backend: Backend) -> Deployment:
    if backend.kind == "memory":
        ledger, outbox = MemoryLedger(), MemoryOutbox()
        return Deployment(ledger, outbox, MemoryOperations(ledger, outbox, table=TABLE))
    dynamodb = backend.client("dynamodb")
    return Deployment(
        DynamoLedger(dynamodb, TABLE), DynamoOutbox(dynamodb, TABLE), DynamoOperations(dynamodb, TABLE)
    )


@pytest.fixture
def tuning(backend: Backend) -> TuningStore:
    if backend.kind == "memory":
        return MemoryTuningStore()
    return SsmTuningStore(backend.client("ssm"))


def alert(n: int) -> Alert:
    return fixed_alert(alert_id=f"{n:032x}")


# --- OperationsView ---------------------------------------------------------------------------------


def test_given_a_new_deployment_when_read_then_it_is_active_with_no_watermark_run_or_alert(
    deployment: Deployment,
) -> None:
    # Given a deployment nothing has run against
    view = deployment.view

    # When status reads it
    info, watermark, runs, outbox = view.table_info(), view.watermark(), view.runs(), view.outbox()

    # Then it is active, named, and holds nothing yet
    assert (view.table, info.state, watermark, runs, outbox) == (TABLE, "ACTIVE", None, [], [])
    assert view.outbox_entry(f"{1:032x}") is None


def test_given_a_completed_run_when_read_then_the_watermark_is_where_it_advanced(
    deployment: Deployment,
) -> None:
    # Given two runs that advanced the watermark, the second to an earlier time (it never moves back)
    deployment.ledger.advance_watermark(NOW)
    deployment.ledger.advance_watermark(NOW - timedelta(minutes=15))

    # When it is read, then it is the later one
    assert deployment.view.watermark() == NOW


def test_given_an_open_a_taken_over_and_a_closed_run_when_read_then_each_record_says_so(
    deployment: Deployment,
) -> None:
    # Given a run still at work on two files
    ledger = deployment.ledger
    ledger.begin("run-a", ["a1", "a2"], LEASE, NOW)
    ledger.claim(["a1", "a2"], "run-a", LEASE, NOW)
    # a run that died, taken over once after its lease
    ledger.begin("run-b", ["b1"], LEASE, NOW)
    ledger.claim(["b1"], "run-b", LEASE, NOW)
    later = LEASE + timedelta(minutes=1)
    ledger.claim(["b1"], "run-b", later + timedelta(minutes=14), later, takeover=True)
    # and a run that set one of its three files aside as poison, then closed
    ledger.begin("run-c", ["c1", "c2", "c3"], LEASE, NOW)
    ledger.claim(["c1", "c2", "c3"], "run-c", LEASE, NOW)
    assert ledger.set_aside("run-c", "c2")
    ledger.complete({"c1": "done", "c2": "poison", "c3": "done"}, "run-c", NOW + timedelta(minutes=3))

    # When the run records are read
    runs = {run.run_id: run for run in deployment.view.runs()}

    # Then each says its state, lease, files, takeovers and poison; by run id
    assert list(runs) == ["run-a", "run-b", "run-c"]
    assert (runs["run-a"].state, runs["run-a"].lease_until, runs["run-a"].files) == ("open", LEASE, 2)
    assert (runs["run-a"].takeovers, runs["run-a"].poison, runs["run-a"].closed_at) == (0, (), None)
    assert (runs["run-b"].state, runs["run-b"].takeovers) == ("open", 1)
    assert runs["run-b"].lease_until == later + timedelta(minutes=14)
    closed = runs["run-c"]
    assert (closed.state, closed.files, closed.poison) == ("closed", 3, ("c2",))
    assert closed.closed_at == NOW + timedelta(minutes=3)
    # and only a run open past its lease is interrupted
    assert [run.run_id for run in runs.values() if run.interrupted(later + timedelta(hours=1))] == [
        "run-a",
        "run-b",
    ]


def test_given_pending_sent_and_parked_alerts_when_read_then_each_entry_says_its_state_and_holds_its_alert(
    deployment: Deployment,
) -> None:
    # Given three alerts queued: one left pending, one sent, one parked by its channel
    outbox = deployment.outbox
    for n in (3, 1, 2):
        assert outbox.put(alert(n))
    outbox.mark_sent(alert(2).alert_id, "message-2")
    outbox.park(alert(3).alert_id, "InvalidParameter")

    # When the outbox is read
    entries = deployment.view.outbox()

    # Then each entry, by alert id, says its state and holds the alert queued
    assert [(e.alert_id, e.state) for e in entries] == [
        (alert(1).alert_id, "pending"),
        (alert(2).alert_id, "sent"),
        (alert(3).alert_id, "parked"),
    ]
    assert [Alert.model_validate_json(e.document or "") for e in entries] == [alert(1), alert(2), alert(3)]
    assert all(e.created is not None for e in entries)
    pending, sent, parked = entries
    assert (pending.sent_at, pending.message_id, pending.parked_at, pending.parked_reason) == (None,) * 4
    assert (sent.message_id, sent.sent_at is not None, sent.parked_reason) == ("message-2", True, None)
    assert (parked.parked_reason, parked.parked_at is not None, parked.message_id) == (
        "InvalidParameter",
        True,
        None,
    )
    # And one entry reads the same by its id
    assert deployment.view.outbox_entry(alert(2).alert_id) == sent


def test_given_no_table_when_read_then_table_missing_names_it(request: pytest.FixtureRequest) -> None:
    # Given a view of a table that does not exist, in memory and on DynamoDB
    session = request.getfixturevalue("aws")
    views: list[OperationsView] = [
        MemoryOperations(MemoryLedger(), MemoryOutbox(), table="nosuch", exists=False),
        DynamoOperations(session.client("dynamodb"), "nosuch"),
    ]
    for view in views:
        # When its description is read, then the error names the table
        with pytest.raises(TableMissingError) as raised:
            view.table_info()
        assert raised.value.table == "nosuch"


def test_given_aws_refusing_a_read_then_it_is_an_operations_error_telling_aws_s_line(aws: Any) -> None:
    # Given a table whose RUN query the caller may not make
    create_deployment(aws)
    dynamodb = aws.client("dynamodb")
    with Stubber(dynamodb) as stub:
        stub.add_client_error("query", "AccessDeniedException", "not authorized to perform: dynamodb:Query")

        # When the run records are read
        with pytest.raises(OperationsError) as raised:
            DynamoOperations(dynamodb, TABLE).runs()

    # Then the domain error carries AWS's code and its one line
    assert raised.value.code == "AccessDeniedException"
    assert str(raised.value) == "Query: AccessDeniedException: not authorized to perform: dynamodb:Query"


# --- TuningStore --------------------------------------------------------------------------------------


def test_given_no_parameter_when_written_as_new_then_version_1_reads_back(tuning: TuningStore) -> None:
    # Given no tuning parameter
    assert tuning.read(PARAMETER) is None

    # When it is written as a new one
    version = tuning.write(PARAMETER, "version = 1\n", expected_version=None, type="SecureString")

    # Then version 1 reads back, with its text and type, on the Standard tier
    stored = tuning.read(PARAMETER)
    assert stored is not None
    assert (version, stored.version, stored.text, stored.type) == (1, 1, "version = 1\n", "SecureString")
    assert stored.tier == "Standard"


def test_given_an_unchanged_parameter_when_written_then_the_next_version_holds_the_text(
    tuning: TuningStore,
) -> None:
    # Given a parameter at version 1
    tuning.write(PARAMETER, "version = 1\n", expected_version=None, type="String")

    # When it is written back expecting version 1
    ours = 'version = 1\ndescription = "ours"\n'
    version = tuning.write(PARAMETER, ours, expected_version=1, type="String")

    # Then version 2 holds the new text
    stored = tuning.read(PARAMETER)
    assert stored is not None
    assert (version, stored.version, stored.text) == (2, 2, ours)


def test_given_a_parameter_changed_since_read_when_written_then_nothing_is_written(
    tuning: TuningStore,
) -> None:
    # Given a parameter we read at version 1, that a colleague then wrote (version 2)
    tuning.write(PARAMETER, "version = 1\n", expected_version=None, type="String")
    tuning.write(PARAMETER, 'version = 1\ndescription = "theirs"\n', expected_version=1, type="String")

    # When we write expecting version 1, then it is refused and theirs stays
    with pytest.raises(ConcurrentChangeError, match="read version 1, now 2"):
        tuning.write(PARAMETER, 'version = 1\ndescription = "ours"\n', expected_version=1, type="String")
    stored = tuning.read(PARAMETER)
    assert stored is not None
    assert (stored.version, stored.text) == (2, 'version = 1\ndescription = "theirs"\n')


def test_given_a_parameter_created_since_read_when_created_then_nothing_is_written(
    tuning: TuningStore,
) -> None:
    # Given a parameter absent when read, then created by a colleague
    assert tuning.read(PARAMETER) is None
    tuning.write(PARAMETER, "version = 1\n", expected_version=None, type="String")

    # When we create it too, then it is refused and theirs stays
    with pytest.raises(ConcurrentChangeError, match="created by someone else"):
        tuning.write(PARAMETER, 'version = 1\ndescription = "ours"\n', expected_version=None, type="String")
    stored = tuning.read(PARAMETER)
    assert stored is not None
    assert (stored.version, stored.text) == (1, "version = 1\n")


def test_given_ssm_refusing_the_read_then_it_is_an_operations_error_telling_aws_s_line(aws: Any) -> None:
    # Given a parameter the caller may not read
    ssm = aws.client("ssm")
    with Stubber(ssm) as stub:
        stub.add_client_error("get_parameter", "AccessDeniedException", "not authorized")

        # When it is read
        with pytest.raises(OperationsError) as raised:
            SsmTuningStore(ssm).read(PARAMETER)

    # Then the domain error carries AWS's code and its one line
    assert (raised.value.code, str(raised.value)) == (
        "AccessDeniedException",
        "GetParameter: AccessDeniedException: not authorized",
    )


# --- Triage records (``trailgeo alerts resolve``, ``trailgeo report``) -------------------------------------


def triage_record(
    n: int, *, version: int = 1, detected: datetime = NOW, verdict: str = "expected"
) -> TriageRecord:
    digest = AlertDigest.of(alert(n).model_copy(update={"detected_at": detected}))
    resolution = Resolution(verdict=verdict, by="arn:aws:sts::111122223333:assumed-role/Triage/bob", at=NOW)  # type: ignore[arg-type]
    return TriageRecord(digest=digest, resolution=resolution, version=version)


def test_given_no_resolution_when_triage_is_read_then_there_is_no_record(deployment: Deployment) -> None:
    assert deployment.view.triage_record(alert(1).alert_id) is None
    assert deployment.view.triage(NOW - timedelta(days=90)) == []


def test_given_alerts_resolved_when_the_detector_asks_then_it_finds_those_and_only_those(
    deployment: Deployment,
) -> None:
    # Given 120 alerts the detector asks about (more than one batch read), of which the team
    # resolved three, one of them twice
    view = deployment.view
    for n in (3, 77, 110):
        view.write_triage(triage_record(n), 0)
    changed = triage_record(77).resolved(Resolution("attack", "bob", NOW + timedelta(minutes=5)))
    view.write_triage(changed, 1)

    # When the detector asks which of its threads' alerts are resolved
    found = deployment.outbox.resolved([alert(n).alert_id for n in range(1, 121)])

    # Then exactly those three, whatever their verdict; none when nothing is asked
    assert found == {alert(n).alert_id for n in (3, 77, 110)}
    assert deployment.outbox.resolved([]) == frozenset()


def test_given_a_first_resolution_when_written_then_it_reads_back_and_by_detection_time(
    deployment: Deployment,
) -> None:
    # Given two alerts resolved, one detected 40 days ago
    view = deployment.view
    recent, old = triage_record(1), triage_record(2, detected=NOW - timedelta(days=40))
    view.write_triage(recent, 0)
    view.write_triage(old, 0)

    # When read back, one by one and by detection time
    # Then each is as written, and the window keeps only what was detected in it
    assert view.triage_record(recent.alert_id) == recent
    assert view.triage_record(old.alert_id) == old
    assert view.triage(NOW - timedelta(days=30)) == [recent]
    assert view.triage(NOW - timedelta(days=50)) == sorted([recent, old], key=lambda r: r.alert_id)


def test_given_a_record_resolved_since_it_was_read_when_written_then_it_refuses_and_keeps_the_other(
    deployment: Deployment,
) -> None:
    # Given an alert resolved by alice, then by bob (version 2), while carol still holds version 1
    view = deployment.view
    first = triage_record(1)
    view.write_triage(first, 0)
    bob = first.resolved(Resolution("attack", "bob", NOW + timedelta(minutes=1), "INC-9"))
    view.write_triage(bob, 1)
    carol = first.resolved(Resolution("false-positive", "carol", NOW + timedelta(minutes=2)))

    # When carol writes hers on the version she read, or anyone creates it anew
    with pytest.raises(ConcurrentChangeError, match="resolved by someone else since it was read"):
        view.write_triage(carol, 1)
    with pytest.raises(ConcurrentChangeError):
        view.write_triage(triage_record(1), 0)

    # Then bob's stands, alice's in its history
    stored = view.triage_record(first.alert_id)
    assert stored == bob
    assert stored is not None
    assert (stored.version, stored.resolution.by, [r.by for r in stored.history]) == (
        2,
        "bob",
        [first.resolution.by],
    )


def test_given_many_resolutions_and_long_texts_when_written_then_what_is_kept_is_bounded(
    deployment: Deployment,
) -> None:
    # Given a record resolved 30 times, the last with a note and a resolver over their bounds
    view = deployment.view
    record = triage_record(1)
    view.write_triage(record, 0)
    for i in range(30):
        resolution = Resolution("expected", "x" * (MAX_RESOLVER_CHARS + 10), NOW, "n" * (MAX_NOTE_CHARS + 10))
        updated = record.resolved(resolution if i == 29 else Resolution("attack", f"r{i}", NOW))
        view.write_triage(updated, record.version)
        record = updated

    # When it is read back
    stored = view.triage_record(record.alert_id)

    # Then it keeps the newest earlier resolutions and cut texts
    assert stored is not None
    assert stored.version == 31
    assert len(stored.history) == MAX_RESOLUTION_HISTORY
    assert stored.history[-1].by == "r28"
    assert (len(stored.resolution.by), len(stored.resolution.note)) == (MAX_RESOLVER_CHARS, MAX_NOTE_CHARS)


def test_given_a_record_no_resolve_could_write_when_read_then_it_is_no_record(
    backend: Backend, deployment: Deployment
) -> None:
    # Given items under TRIAGE that no resolve wrote: a made-up verdict, detector, severity, no version
    forged = [
        replace(triage_record(1), resolution=Resolution("fine", "x", NOW)),  # type: ignore[arg-type]
        replace(triage_record(2), digest=replace(triage_record(2).digest, detector="made-up")),
        replace(triage_record(3), digest=replace(triage_record(3).digest, severity="urgent")),
        replace(triage_record(4), version=0),
    ]
    if backend.kind == "memory":
        assert isinstance(deployment.view, MemoryOperations)
        for record in forged:
            deployment.view.alerts.triage_records[record.alert_id] = record
    else:
        dynamodb = backend.client("dynamodb")
        for record in forged:
            dynamodb.put_item(TableName=TABLE, Item=_triage_item(record))
        dynamodb.put_item(
            TableName=TABLE, Item={"pk": {"S": "TRIAGE"}, "sk": {"S": f"A#{5:032x}"}, "st": {"N": "1"}}
        )

    # When read, then none is a record, and reading goes on
    assert deployment.view.triage(NOW - timedelta(days=90)) == []
    assert all(deployment.view.triage_record(f"{n:032x}") is None for n in range(1, 6))
