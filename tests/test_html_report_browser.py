"""The replay's HTML report in a real browser: Debian's chromium, headless, with every host name
unresolvable (the page must need no network). The page's script marks the document when it has run
to its end (``data-ready``); any console message (an uncaught error, a Content-Security-Policy
refusal) fails the test.

The browser is ``$TRAILGEO_CHROMIUM`` if set, else the first of ``chromium``, ``chromium-browser``,
``google-chrome`` on the PATH. Without one the test fails (CI runs it): ``apt-get install -y
chromium`` (Debian, Ubuntu) installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.builders import ACCOUNT, BT_IP, GB_IP, SE_IP, T0, US_IP, files_by_delivery, record, write_tree
from tests.test_html_report import INJECTION, Page

pytestmark = pytest.mark.app  # the CLI and the browser in subprocesses

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
ROLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/Deploy"


def browser() -> str:
    configured = os.environ.get("TRAILGEO_CHROMIUM")
    if configured:
        return configured
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "no headless browser found for the HTML report's test (looked for TRAILGEO_CHROMIUM, then "
        f"{', '.join(BROWSERS)} on the PATH): install one, e.g. `sudo apt-get install -y chromium` on "
        "Debian or Ubuntu, or set TRAILGEO_CHROMIUM to a Chromium or Chrome binary"
    )


def render(chromium: str, page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after the page's load and script, and the browser's log (console messages included)."""
    done = subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",  # as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no host resolves: nothing may load
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_given_a_hostile_session_when_its_replay_report_opens_in_a_browser_then_it_shows_the_alerts(
    tmp_path: Path, country_test_mmdb: Path
) -> None:
    chromium = browser()  # before the replay: a missing browser fails at once, saying how to install one
    # Given a trail: alice's and bob's history, the Deploy role's sessions from the US, then alice
    # calling from SE and a session of the role, named by the attacker with markup, from BT
    logs = tmp_path / "logs"
    history = [record(T0 + timedelta(hours=6 * i), ip=US_IP) for i in range(40)]
    history += [
        record(T0 + timedelta(hours=6 * i + 1), ip=GB_IP, arn=f"arn:aws:iam::{ACCOUNT}:user/bob")
        for i in range(40)
    ]
    history += [record(T0 + timedelta(hours=6 * i + 2), ip=US_IP, arn=f"{ROLE}/ci-{i}") for i in range(40)]
    attack = [
        record(T0 + timedelta(days=10, hours=1), ip=SE_IP),
        record(
            T0 + timedelta(days=10, hours=1, minutes=5), ip=BT_IP, arn=f"{ROLE}/{INJECTION}", agent=INJECTION
        ),
    ]
    write_tree(logs, files_by_delivery([*history, *attack]))
    report, alerts_out = tmp_path / "report.html", tmp_path / "alerts.jsonl"

    # When replayed with --report (the CLI in a subprocess) and the page opened in headless chromium
    replayed = subprocess.run(
        [
            *(sys.executable, "-m", "trailgeo", "replay", str(logs), "--geoip", str(country_test_mmdb)),
            *("--alerts-out", str(alerts_out), "--report", str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    dom, log = render(chromium, report, tmp_path / "profile")

    # Then the script ran to its end without a console message (no error, nothing refused)
    page = Page.of(dom)
    (root,) = page.tags("html")
    assert root.get("data-ready") == "1", log[-2000:]
    assert [line for line in log.splitlines() if ":CONSOLE" in line] == []
    # and every alert is a row of the rendered table, the hostile session's among them as text
    alerts = [json.loads(line) for line in alerts_out.read_text().splitlines()]
    assert len(alerts) == 2
    assert sorted(page.alert_ids) == sorted(a["alert_id"] for a in alerts)
    principals = {a["aws"]["cloudtrail"]["user_identity"]["arn"] for a in alerts}
    assert f"arn:aws:iam::{ACCOUNT}:user/alice" in principals
    assert '<script>document.title="pwned"</script>' in page.all_text
    # and nothing of the attacker's became markup: no element of theirs, no title of theirs
    assert [a for _, a in page.elements if a.get("id") == "injected"] == []
    assert page.tags("img") == []
    assert "pwned" not in dom.split("<title>", 1)[1].split("</title>", 1)[0]
    # and the histories and the timeline are drawn
    assert "BT (alerted)" in page.all_text
    assert "SE (alerted)" in page.all_text
    assert [a for a in page.tags("svg") if a.get("id") == "timeline"]
