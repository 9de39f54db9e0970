"""``trailgeo report``: the precision report from resolved alerts, in a subprocess against moto's
server, its CloudWatch metrics there too; its figures on the in-memory view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from tests.aws import REGION, TABLE
from tests.test_alerts_cli import T0, an_alert, at, json_of, moto_server, queue
from tests.test_cli_habits import trailgeo
from trailgeo.adapters.memory import MemoryLedger, MemoryOperations, MemoryOutbox
from trailgeo.adapters.operations import DynamoOperations
from trailgeo.app.operate import OperateError, alerts, report
from trailgeo.core.alerts import Alert

pytestmark = pytest.mark.app  # the operator CLI (tests/README.md), as test_cli_habits.py
__all__ = ["moto_server"]
BOB = "arn:aws:iam::111122223333:user/bob"
END = T0 + timedelta(days=1)


def shifted(alert: Alert, by: timedelta) -> Alert:
    return alert.model_copy(update={"detected_at": alert.detected_at + by})


def triaged_month() -> list[tuple[Alert, str | None, timedelta]]:
    """Eight alerts, their verdicts and how long after detection each was resolved: alice's trip to
    Bhutan (three alerts, two resolved expected, one open: the entry would save three), bob's VPN in
    Portugal (a false positive, and an attack from the same place: the entry would hide it), an attack
    of the city detector, an old false positive outside a 30-day window, and one left open."""
    return [
        (an_alert(1, hours=-50), "expected", timedelta(hours=1)),
        (an_alert(2, hours=-26), "expected", timedelta(hours=3)),
        (an_alert(3, hours=-2), None, timedelta()),
        (
            at(an_alert(4, hours=-40, principal=BOB, severity="medium"), "PT"),
            "false-positive",
            timedelta(hours=2),
        ),
        (at(an_alert(5, hours=-30, principal=BOB, severity="high"), "PT"), "attack", timedelta(minutes=30)),
        (an_alert(6, hours=-10, detector="city", severity="high"), "attack", timedelta(hours=5)),
        (an_alert(7, hours=-24 * 40), "false-positive", timedelta(hours=1)),
        (at(an_alert(8, hours=-5, severity="low"), "PT"), None, timedelta()),
    ]


def test_given_a_month_of_triaged_alerts_when_reported_then_states_detectors_precision_time_and_noise(
    moto_server: dict[str, str],
) -> None:
    # Given the month's alerts in the outbox, resolved as said (each at detection + its delay)
    month = triaged_month()
    queue(*(alert for alert, _, _ in month))
    view = DynamoOperations(boto3.client("dynamodb", region_name=REGION), TABLE)
    for alert, verdict, after in month:
        if verdict:
            alerts.resolve(view, alert.alert_id, verdict, by="alice", now=alert.detected_at + after)

    # When the report of the 30 days before END is printed as JSON
    figures = json_of(
        trailgeo("report", "--table", TABLE, "--days", "30", "--end", END.isoformat(), "--output", "json",
                 env=moto_server)
    )  # fmt: skip

    # Then: alerts by state (the 40-day-old one outside), by detector and severity
    assert figures["alerts"] == 7
    assert figures["by_state"] == {"open": 2, "attack": 2, "expected": 2, "false-positive": 1}
    assert figures["by_detector"]["country"] == {"critical": 3, "high": 1, "medium": 1, "low": 1}
    assert figures["by_detector"]["city"] == {"critical": 0, "high": 1, "medium": 0, "low": 0}
    assert figures["verdicts_by_detector"]["city"]["attack"] == 1
    # the precision: 2 attacks of 5 resolved; the median of 1h, 3h, 2h, 30m, 5h is 2 hours
    assert (figures["resolved"], figures["precision"], figures["median_seconds_to_resolve"]) == (5, 0.4, 7200)
    # who and where the expected and false-positive alerts came from, and what an entry each would do
    noisy = {(s["principal"], s["location"]): s for s in figures["noisy_sources"]}
    alice, bob = noisy[(an_alert(1).principal, "BT")], noisy[(BOB, "PT")]
    assert (alice["verdicts"], alice["would_have_saved"], alice["would_have_hidden_attacks"]) == (
        {"expected": 2},
        3,
        0,
    )
    assert (bob["verdicts"], bob["would_have_saved"], bob["would_have_hidden_attacks"]) == (
        {"false-positive": 1},
        1,
        1,
    )
    assert figures["noisy_countries"] == {"BT": 2, "PT": 1}
    assert figures["allowlisting_would_have_saved"] == 4

    # And the table says the same to a person
    table = trailgeo("report", "--table", TABLE, "--days", "30", "--end", END.isoformat(), env=moto_server)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "alerts                  7 (open 2, attack 2, expected 2, false-positive 1)" in lines
    assert "precision               40% (attacks among the 5 resolved)" in lines
    assert "median time to resolve  2h 00m (detection to first resolution)" in lines
    assert "allowlisting each would have saved 4 alert(s) of the window" in lines


def test_given_a_report_when_its_metrics_are_published_then_cloudwatch_has_its_figures_in_the_stack_namespace(
    moto_server: dict[str, str],
) -> None:
    # Given the month's alerts moved to end now (CloudWatch takes recent data points only)
    end = datetime.now(tz=UTC).replace(microsecond=0)
    month = [(shifted(alert, end - END), verdict, after) for alert, verdict, after in triaged_month()]
    queue(*(alert for alert, _, _ in month))
    view = DynamoOperations(boto3.client("dynamodb", region_name=REGION), TABLE)
    for alert, verdict, after in month:
        if verdict:
            alerts.resolve(view, alert.alert_id, verdict, by="alice", now=alert.detected_at + after)

    # When the report is published as metrics of the stack "prod"
    done = trailgeo(
        "report", "--table", TABLE, "--days", "30", "--end", end.isoformat(), "--publish-metrics",
        "--stack", "prod", env=moto_server,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "published" in done.stderr
    assert "to CloudWatch namespace trailgeo/prod" in done.stderr
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="trailgeo/prod")["Metrics"]}
    assert names >= {"TriageAlerts", "TriageAlertsByDetector", "TriagePrecision", "TriageMedianTimeToResolve",
                     "TriageAllowlistSavings"}  # fmt: skip

    def value(name: str, **dimensions: str) -> float:
        stats = cloudwatch.get_metric_statistics(
            Namespace="trailgeo/prod",
            MetricName=name,
            Dimensions=[
                {"Name": k, "Value": v} for k, v in {"service": "prod", "Days": "30", **dimensions}.items()
            ],
            StartTime=end - timedelta(hours=1),
            EndTime=end + timedelta(hours=1),
            Period=3600,
            Statistics=["Maximum"],
        )["Datapoints"]
        assert len(stats) == 1, (name, dimensions, stats)
        return float(stats[0]["Maximum"])

    # Then CloudWatch holds the report's figures, each with the stack's service and the window
    assert value("TriageAlerts", state="open") == 2
    assert value("TriageAlerts", state="attack") == 2
    assert value("TriageAlertsByDetector", detector="country", severity="critical") == 3
    assert value("TriagePrecision") == 40.0
    assert value("TriageMedianTimeToResolve") == 7200
    assert value("TriageAllowlistSavings") == 4
    for dimension in cloudwatch.list_metrics(Namespace="trailgeo/prod", MetricName="TriageAlerts")["Metrics"]:
        assert {d["Name"] for d in dimension["Dimensions"]} == {"service", "Days", "state"}

    # And without --stack nothing is published
    refused = trailgeo("report", "--table", TABLE, "--publish-metrics", env=moto_server)
    assert refused.returncode == 2
    assert "--publish-metrics: give --stack" in refused.stderr


def test_given_metric_figures_then_their_dimensions_come_from_fixed_sets_never_from_cloudtrail() -> None:
    # Given alerts by principals and from locations an attacker chose
    outbox = MemoryOutbox()
    view = MemoryOperations(MemoryLedger(), outbox)
    for n in range(20):
        alert = at(an_alert(n, hours=-n, principal=f"arn:aws:iam::111122223333:user/x{n}\u202e"), "VPCE:9999")
        outbox.put(alert)
        alerts.resolve(view, alert.alert_id, "false-positive", by="alice", now=T0)

    # When its metrics are made
    points = report.report_metrics(report.build_report(view, days=30, end=T0))

    # Then no dimension value names a principal or a location, and none is allowlistable
    values = {value for point in points for value in point.dimensions.values()}
    assert values <= {
        "30",
        "open",
        "attack",
        "expected",
        "false-positive",
        "country",
        "critical",
        "high",
        "medium",
        "low",
    }
    built = report.build_report(view, days=30, end=T0)
    assert built.saved == 0
    assert all(not source.allowable for source in built.noisy)


@pytest.mark.parametrize("days", [0, 91])
def test_given_a_window_outside_what_the_table_keeps_when_reported_then_it_is_refused(days: int) -> None:
    with pytest.raises(OperateError, match="must be from 1 to 90"):
        report.build_report(MemoryOperations(MemoryLedger(), MemoryOutbox()), days=days, end=T0)


def test_given_a_window_longer_than_the_outbox_keeps_when_reported_then_it_says_open_alerts_are_missing() -> (
    None
):
    built = report.build_report(MemoryOperations(MemoryLedger(), MemoryOutbox()), days=60, end=T0)

    assert built.notes == [
        (
            "alerts older than 30 days are known only when resolved (the outbox keeps an alert 30 days): "
            "open ones before then are not counted"
        )
    ]
