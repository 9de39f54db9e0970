"""The run's HTML report (``trailgeo replay --report``): what it shows, that an attacker's text in
an alert stays text, that it loads nothing from the network, and that it stays small with any
number of alerts. The same page in a real browser: tests/test_html_report_browser.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.builders import ACCOUNT, BT_IP, GB_IP, T0, US_IP, files_by_delivery, record, write_tree
from trailgeo.cli import main
from trailgeo.core.alerts import Alert, CloudTrail, UserAgent, UserIdentity
from trailgeo.core.render.html_report import (
    CONTENT_SECURITY_POLICY,
    MAX_ALERT_ROWS,
    CountryHistory,
    ReportData,
    RunFigures,
    render_html_report,
)

EVENTS = Path(__file__).resolve().parents[1] / "events"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
# What an attacker who names their own session (sts:AssumeRole's RoleSessionName in a forged record,
# or a user agent) would try: close the cell, open a script, an element with a handler, a link.
INJECTION = (
    '</td></tr></table><script>document.title="pwned"</script>'
    "<img src=x onerror=alert(1)><b id=\"injected\">x</b><a href='https://evil.example/'>y</a>"
    '" onmouseover="alert(2)'
)


def fixed_alert(**changes: object) -> Alert:
    """The alert of events/sqs-alert.json, changed."""
    event = json.loads((EVENTS / "sqs-alert.json").read_text(encoding="utf-8"))
    return Alert.model_validate_json(event["Records"][0]["body"]).model_copy(update=changes)


def hostile_alert() -> Alert:
    alert = fixed_alert()
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin{INJECTION}/{INJECTION}"
    methods = [m.model_copy(update={"method": f"iam.amazonaws.com:{INJECTION}"}) for m in alert.methods]
    return alert.model_copy(
        update={
            "aws": alert.aws.model_copy(
                update={"cloudtrail": CloudTrail(user_identity=UserIdentity(arn=arn))}
            ),
            "user_agent": UserAgent(original=[INJECTION]),
            "explanation": f"called by {INJECTION}\nsecond line {INJECTION}",
            "methods": methods,
        }
    )


@dataclass
class Page(HTMLParser):
    """A parsed report: its elements (tag, attributes), its text, the alert rows, the history rows."""

    elements: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    _in_script: bool = False

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    @classmethod
    def of(cls, html: str) -> Page:
        page = cls()
        page.feed(html)
        page.close()
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    @property
    def alert_ids(self) -> list[str | None]:
        return [attrs["data-alert-id"] for attrs in self.tags("tr") if "data-alert-id" in attrs]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def report_of(*alerts: Alert, histories: dict[str, list[CountryHistory]] | None = None) -> str:
    return render_html_report(
        ReportData(run=RunFigures(files=3, events=40), alerts=list(alerts), histories=histories or {})
    )


# ---------------------------------------------------------------------------- attacker's text


def test_given_markup_in_a_session_name_or_user_agent_when_reported_then_it_is_text() -> None:
    # Given an alert whose principal, role, session name, user agent, methods and explanation carry
    # markup: a script, an element with an event handler, a link, a quote to end an attribute
    alert = hostile_alert()
    histories = {alert.principal: [CountryHistory("BT", 1, "2026-11-02T14:03:00Z", "2026-11-02T14:09:00Z")]}

    # When the report is written
    html = report_of(alert, histories=histories)
    page = Page.of(html)

    # Then the page has its own elements only: one script (its own), no image, no element of the
    # attacker's, no event handler, no link but the console's
    assert len(page.tags("script")) == 1
    assert page.tags("img") == []
    assert [a for _, a in page.elements if a.get("id") == "injected"] == []
    assert [a for _, a in page.elements if any(name.startswith("on") for name in a)] == []
    assert [a["href"] for a in page.tags("a") if not str(a["href"]).startswith("https://console.aws")] == []
    assert "pwned" not in "".join(page.scripts)
    # and the attacker's text is there, as text a defender reads
    assert page.all_text.count('<script>document.title="pwned"</script>') >= 4
    assert page.alert_ids == [alert.alert_id]


def test_given_invisible_and_control_characters_in_a_principal_when_reported_then_they_show() -> None:
    # Given a principal whose name hides a right-to-left override and a line break
    alert = fixed_alert()
    arn = f"arn:aws:iam::{ACCOUNT}:user/admin\u202egpj.exe\nfake line"
    alert = alert.model_copy(
        update={
            "aws": alert.aws.model_copy(
                update={"cloudtrail": CloudTrail(user_identity=UserIdentity(arn=arn))}
            )
        }
    )

    # When reported
    text = Page.of(report_of(alert)).all_text

    # Then the override is shown as its escape, and the line break is a space
    assert "\u202e" not in text
    assert "admin\\u202egpj.exe fake line" in text


# ---------------------------------------------------------------------------- no network


def test_given_a_report_then_it_loads_nothing_and_links_only_to_the_console() -> None:
    # Given a report of alerts with console links
    html = report_of(fixed_alert(), hostile_alert())
    page = Page.of(html)

    # Then no element has a source, no stylesheet or script is linked, the style imports nothing,
    # and every URL in an attribute is a plain anchor to the AWS console
    assert [attrs for _, attrs in page.elements if "src" in attrs] == []
    assert page.tags("link") == []
    assert "url(" not in html.split("<style>", 1)[1].split("</style>", 1)[0]
    urls = [
        (tag, name, value)
        for tag, attrs in page.elements
        for name, value in attrs.items()
        if value is not None and ("http://" in value or "https://" in value)
    ]
    assert urls
    assert {(tag, name) for tag, name, _ in urls} == {("a", "href")}
    assert all(value.startswith("https://console.aws.amazon.com/") for _, _, value in urls)
    # and the page's policy lets nothing load, and only its own style and script apply
    (meta,) = [a for a in page.tags("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert meta["content"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY


# ---------------------------------------------------------------------------- bounds


def test_given_10000_alerts_and_a_critical_one_last_when_reported_then_rows_are_capped_it_first() -> None:
    # Given an alert flood: 10,000 low alerts, and the real one (critical) last
    base = fixed_alert(severity="low", score=55.0, sensitive_methods=[])
    flood = [
        base.model_copy(
            update={
                "alert_id": f"{n:032x}",
                "detected_at": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n),
            }
        )
        for n in range(10_000)
    ]
    real = fixed_alert(alert_id="c" * 32)

    # When reported
    html = report_of(*flood, real)
    page = Page.of(html)

    # Then the table lists the cap, the critical alert first, and says how many it left out;
    # the header counts every alert; the page stays small enough to open
    assert len(page.alert_ids) == MAX_ALERT_ROWS
    assert page.alert_ids[0] == real.alert_id
    assert f"{MAX_ALERT_ROWS} of 10,001 alerts listed" in page.all_text
    assert "9,501 more are counted" in page.all_text
    assert "Alerts (10,001)" in page.all_text
    assert len(html) < 3_000_000


def test_given_a_principal_with_hundreds_of_countries_when_reported_then_its_history_is_cut_and_says_so() -> (
    None
):
    # Given an alerted principal whose history holds 300 locations (a forged-address flood)
    alert = fixed_alert()
    history = [
        CountryHistory(f"{chr(65 + n // 26)}{chr(65 + n % 26)}", 1 + n, None, None) for n in range(300)
    ]

    # When reported
    text = Page.of(report_of(alert, histories={alert.principal: history})).all_text

    # Then the alerted country is listed first, the others cut, and the cut counted
    assert "BT (alerted)" in text
    assert "and 280 more countries not shown" in text


# ---------------------------------------------------------------------------- a replay's report


def test_given_a_replay_with_report_when_run_then_the_page_shows_the_alert_its_history_and_the_skips(
    tmp_path: Path, country_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given alice's 40 days from the US, bob's from GB, then alice calling from BT; and a stray file
    logs = tmp_path / "logs"
    history = [record(T0 + timedelta(hours=6 * i), ip=US_IP) for i in range(40)]
    history += [record(T0 + timedelta(hours=6 * i + 1), ip=GB_IP, arn=BOB) for i in range(40)]
    attack = record(T0 + timedelta(days=10, hours=1), ip=BT_IP)
    write_tree(logs, files_by_delivery([*history, attack]))
    (logs / "AWSLogs" / "README.txt").write_text("not a log")
    report = tmp_path / "report.html"

    # When replayed with --report
    out = tmp_path / "a.jsonl"
    code = main(
        [
            "replay",
            str(logs),
            "--geoip",
            str(country_test_mmdb),
            "--alerts-out",
            str(out),
            "--report",
            str(report),
        ]
    )

    # Then the page lists the alert, alice's countries with BT marked as alerted (1 hour) beside the
    # US (her 40 hours), both principals' countries, and the skipped key
    assert code == 0
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    page = Page.of(report.read_text(encoding="utf-8"))
    assert page.alert_ids == [a["alert_id"] for a in alerts]
    text = page.all_text
    assert "BT (alerted)1" in text
    assert "US40" in text
    assert "Countries per principal (2 histories)" in text
    assert f"arn:aws:iam::{ACCOUNT}:user/bob1GB 40h" in text
    assert "keyskey_other1" in text
    assert "Window: 2026-09-30" in text
    capsys.readouterr()


def test_given_a_report_path_in_no_directory_when_replayed_then_it_is_refused_before_the_replay(
    tmp_path: Path, country_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a trail and a report path whose directory does not exist
    logs = tmp_path / "logs"
    write_tree(logs, files_by_delivery([record(T0)]))

    # When replayed
    code = main(
        ["replay", str(logs), "--geoip", str(country_test_mmdb), "--report", str(tmp_path / "no" / "r.html")]
    )

    # Then a usage error, said in one line, and nothing replayed
    assert code == 2
    err = capsys.readouterr().err
    assert "--report: not a directory" in err
    assert '"replay"' not in err
