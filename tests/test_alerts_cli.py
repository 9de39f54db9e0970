"""``trailgeo alerts`` (list, show, resolve, allow --from-alert) in a subprocess against moto's server,
as an operator runs it; the triage rules themselves on the in-memory view."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.aws import REGION, TABLE, create_deployment
from tests.test_channels import fixed_alert
from tests.test_cli_habits import TRICKY_ARN, clean_env, moto_server, trail_with_an_attack, trailgeo
from trailgeo.adapters.dynamodb import DynamoOutbox
from trailgeo.adapters.local_tuning import FileTuningStore
from trailgeo.adapters.memory import MemoryLedger, MemoryOperations, MemoryOutbox
from trailgeo.adapters.operations import DynamoOperations
from trailgeo.app.operate import OperateError, alerts
from trailgeo.cli import EXIT_FAILED, EXIT_USAGE, classify, main
from trailgeo.core.alerts import Account, Alert, Cloud, CloudTrail, Geo, Source, UserIdentity
from trailgeo.core.tuning import Tuning
from trailgeo.ports import ConcurrentChangeError

pytestmark = pytest.mark.app  # the operator CLI (tests/README.md), as test_cli_habits.py
__all__ = ["moto_server"]  # the fixture, shared with the CLI's habits
PARAMETER = "/trailgeo/tuning"
ALICE = "arn:aws:iam::111122223333:user/ops/alice"  # the principal of events/sqs-alert.json
MOTO_CALLER = "arn:aws:sts::123456789012:user/moto"  # moto's GetCallerIdentity
T0 = datetime(2026, 11, 2, 14, 15, tzinfo=UTC)


def an_alert(n: int, *, hours: int = 0, principal: str | None = None, **changes: Any) -> Alert:
    alert = fixed_alert(alert_id=f"{n:032x}", detected_at=T0 + timedelta(hours=hours), **changes)
    if principal is not None:
        identity = UserIdentity(arn=principal, access_key_id="AKIAEXAMPLEKEY000009")
        alert = alert.model_copy(
            update={"aws": alert.aws.model_copy(update={"cloudtrail": CloudTrail(user_identity=identity)})}
        )
    return alert


def at(alert: Alert, location: str, account: str = "111122223333") -> Alert:
    """The alert from ``location`` (a country, or a stand-in for one) in ``account``."""
    geo = Geo(country_iso_code=location) if len(location) == 2 else Geo()
    return alert.model_copy(
        update={
            "location": location,
            "source": Source(geo=geo, ip=alert.source.ip),
            "cloud": Cloud(account=Account(id=account), region=alert.cloud.region),
        }
    )


def queue(*queued: Alert, sent: bool = True) -> None:
    """The alerts in the deployment's outbox (moto's server: this process's boto3 points at it)."""
    session = boto3.session.Session(region_name=REGION)
    if TABLE not in session.client("dynamodb").list_tables()["TableNames"]:
        create_deployment(session)
    outbox = DynamoOutbox(session.client("dynamodb"), TABLE)
    for alert in queued:
        assert outbox.put(alert)
        if sent:
            outbox.mark_sent(alert.alert_id, f"sns-{alert.alert_id[-4:]}")


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- list -----------------------------------------------------------------------------------------------


def test_given_alerts_in_the_outbox_when_listed_then_newest_first_filtered_and_a_page_at_a_time(
    moto_server: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given five alerts an hour apart: BT, then from PT, one of them by bob, one medium
    queue(
        an_alert(1, hours=0),
        at(an_alert(2, hours=1), "PT"),
        an_alert(3, hours=2, principal="arn:aws:iam::111122223333:user/bob"),
        an_alert(4, hours=3, severity="medium"),
        an_alert(5, hours=4),
    )

    # When listed as a table, then newest first, one row each
    done = trailgeo("alerts", "list", "--table", TABLE, env=moto_server)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split() == [
        "DETECTED", "ALERT", "ID", "SEVERITY", "SCORE", "DETECTOR", "STATE", "FROM", "ACCOUNT", "PRINCIPAL"
    ]  # fmt: skip
    assert [row.split()[1] for row in rows[1:]] == [f"{n:032x}" for n in (5, 4, 3, 2, 1)]
    assert rows[1].split()[2:] == [
        "critical", "93.5", "country", "open", "BT", "111122223333", ALICE
    ]  # fmt: skip

    # And the filters keep what they name (in this process: the same main, one interpreter start less)
    def ids(*options: str) -> list[str]:
        assert main(["alerts", "list", "--table", TABLE, "--output", "json", *options]) == 0
        page = json.loads(capsys.readouterr().out)
        return [row["alert_id"][-1] for row in page["alerts"]]

    assert ids("--country", "PT") == ["2"]
    assert ids("--principal", "*:user/bob") == ["3"]
    assert ids("--severity", "medium") == ["4"]
    assert ids("--severity", "critical", "--country", "BT") == ["5", "3", "1"]
    assert ids("--since", (T0 + timedelta(hours=3)).isoformat()) == ["5", "4"]
    assert ids("--state", "resolved") == []

    # And pages follow one another through the token, which stands after the alerts added meanwhile
    first = json_of(
        trailgeo("alerts", "list", "--table", TABLE, "--limit", "2", "--output", "json", env=moto_server)
    )
    assert ([row["alert_id"][-1] for row in first["alerts"]], first["matched"]) == (["5", "4"], 5)
    queue(an_alert(6, hours=5))
    after = ["--table", TABLE, "--limit", "2", "--next", first["next"], "--output", "json"]
    second = json_of(trailgeo("alerts", "list", *after, env=moto_server))
    assert [row["alert_id"][-1] for row in second["alerts"]] == ["3", "2"]
    table = trailgeo("alerts", "list", "--table", TABLE, "--limit", "2", env=moto_server)
    assert "6 alerts match; the next page: add --next " in table.stderr

    # And a token it never printed is an input error
    done = trailgeo("alerts", "list", "--table", TABLE, "--next", "%%%", env=moto_server)
    assert done.returncode == EXIT_USAGE
    assert "--next '%%%': not a token this command printed" in done.stderr


def test_given_a_principal_with_terminal_controls_when_listed_then_the_row_stays_one_inert_line(
    moto_server: dict[str, str],
) -> None:
    queue(an_alert(1, principal=TRICKY_ARN))

    done = trailgeo("alerts", "list", "--table", TABLE, env=moto_server)

    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert not any(trick in done.stdout for trick in ("\x1b", "\x9b", "\u202e", "\u2028", "\r"))


# --- show -----------------------------------------------------------------------------------------------


def test_given_an_alert_when_shown_then_its_triage_the_console_links_and_the_brief(
    moto_server: dict[str, str],
) -> None:
    alert = an_alert(1)
    queue(alert)

    done = trailgeo("alerts", "show", alert.alert_id, "--table", TABLE, env=moto_server)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Triage:   open (not resolved")
    history = "https://console.aws.amazon.com/cloudtrailv2/home?region=eu-west-1#/events"
    assert (
        f"Console:  CloudTrail event history, this access key: {history}?AccessKeyId=AKIAEXAMPLEKEY000001"
        in lines
    )
    assert f"Console:  CloudTrail event history, this user name: {history}?Username=alice" in lines
    assert "Outbox:   sent " in done.stdout
    assert f"Who:      {alert.principal}" in lines
    assert "Why it is rare:" in lines
    assert f"Alert id: {alert.alert_id}" in lines

    shown = json_of(
        trailgeo("alerts", "show", alert.alert_id, "--table", TABLE, "--output", "json", env=moto_server)
    )
    assert (shown["state"], shown["delivery"], shown["version"]) == ("open", "sent", 0)
    assert Alert.model_validate(shown["alert"]) == alert
    assert (
        shown["console_links"]["principal"] == "https://console.aws.amazon.com/iam/home#/users/details/alice"
    )

    unknown = trailgeo("alerts", "show", "0" * 32, "--table", TABLE, env=moto_server)
    assert unknown.returncode == EXIT_USAGE
    assert f"alert {'0' * 32} is not in table {TABLE}" in unknown.stderr


# --- resolve --------------------------------------------------------------------------------------------


def test_given_an_open_alert_when_resolved_then_the_verdict_who_and_when_are_kept_and_a_change_is_asked_for(
    moto_server: dict[str, str],
) -> None:
    alert = an_alert(1)
    queue(alert)
    before = datetime.now(tz=UTC).replace(microsecond=0)

    # When resolved, it is signed with the caller's ARN (STS) and the time
    done = trailgeo(
        "alerts", "resolve", alert.alert_id, "--as", "expected", "--note", "trip to Thimphu, INC-7",
        "--table", TABLE, "--output", "json", env=moto_server,
    )  # fmt: skip
    resolved = json_of(done)
    assert resolved["resolution"]["by"] == MOTO_CALLER
    assert resolved["resolution"]["verdict"] == "expected"
    assert datetime.fromisoformat(resolved["resolution"]["at"]) >= before
    assert (resolved["version"], resolved["previous"]) == (1, None)

    # And kept: list and show say so
    row = json_of(trailgeo("alerts", "list", "--table", TABLE, "--output", "json", env=moto_server))[
        "alerts"
    ][0]
    assert (row["state"], row["resolution"]["note"]) == ("expected", "trip to Thimphu, INC-7")

    # And resolving it again needs --change, which keeps the first in the history
    again = trailgeo("alerts", "resolve", alert.alert_id, "--as", "attack", "--table", TABLE, env=moto_server)
    assert again.returncode == EXIT_USAGE
    assert "is already resolved: expected, by arn:aws:sts::123456789012:user/moto" in again.stderr
    changed = trailgeo(
        "alerts", "resolve", alert.alert_id, "--as", "attack", "--change", "--table", TABLE, env=moto_server
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines()[1].startswith("  was: expected, by ")
    shown = trailgeo("alerts", "show", alert.alert_id, "--table", TABLE, env=moto_server).stdout
    assert shown.splitlines()[0].startswith(f"Triage:   attack, by {MOTO_CALLER} at ")
    assert shown.splitlines()[1].startswith(f"  before: expected, by {MOTO_CALLER} at ")

    # And --by cannot claim someone else with AWS credentials
    claimed = trailgeo(
        "alerts", "resolve", alert.alert_id, "--as", "expected", "--change", "--by", "alice",
        "--table", TABLE, env=moto_server,
    )  # fmt: skip
    assert claimed.returncode == EXIT_USAGE
    assert "--by: only for a state file" in claimed.stderr


def test_given_someone_resolving_between_read_and_write_then_nothing_is_written_and_the_exit_code_is_1(
    moto_server: dict[str, str],
) -> None:
    # Given an alert carol and dave resolve at the same moment
    alert = an_alert(1)
    queue(alert)
    view = DynamoOperations(boto3.client("dynamodb", region_name=REGION), TABLE)

    def dave() -> None:
        alerts.resolve(view, alert.alert_id, "attack", by="dave", now=T0)

    # When carol's write comes after dave's
    with pytest.raises(ConcurrentChangeError) as raised:
        alerts.resolve(view, alert.alert_id, "expected", by="carol", now=T0, before_write=dave)

    # Then dave's stands, and the CLI would say so with exit code 1
    record = view.triage_record(alert.alert_id)
    assert record is not None
    assert (record.resolution.by, record.version) == ("dave", 1)
    assert classify(raised.value) == (EXIT_FAILED, str(raised.value))
    assert "resolved by someone else since it was read" in str(raised.value)


# --- allow --from-alert --------------------------------------------------------------------------------


def test_given_an_expected_alert_when_allowed_from_then_the_narrowest_entry_is_shown_and_written_with_yes(
    moto_server: dict[str, str],
) -> None:
    alert = an_alert(1)
    queue(alert)
    trailgeo(
        "alerts",
        "resolve",
        alert.alert_id,
        "--as",
        "expected",
        "--note",
        "INC-7",
        "--table",
        TABLE,
        env=moto_server,
    )
    ssm = boto3.client("ssm", region_name=REGION)

    # Without a terminal and without --yes: the diff, and nothing written
    refused = trailgeo(
        "alerts",
        "allow",
        "--from-alert",
        alert.alert_id,
        "--table",
        TABLE,
        "--parameter",
        PARAMETER,
        env=moto_server,
    )
    assert refused.returncode == EXIT_USAGE
    assert "standard input is no terminal to ask on; give --yes" in refused.stderr
    assert '+principals = ["arn:aws:iam::111122223333:user/ops/alice"]' in refused.stdout
    assert not ssm.describe_parameters()["Parameters"]

    # With --yes: written, the entry naming the principal, the country, the account, a date 30 days on
    done = trailgeo(
        "alerts", "allow", "--from-alert", alert.alert_id, "--table", TABLE, "--parameter", PARAMETER,
        "--yes",
        env=moto_server,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("--- (none)\n+++ SSM parameter /trailgeo/tuning (with the entry)\n")
    assert "created SSM parameter /trailgeo/tuning (String), version 1" in done.stdout
    written = tomllib.loads(ssm.get_parameter(Name=PARAMETER)["Parameter"]["Value"])
    entry = written["allowed_countries"][0]
    assert entry["principals"] == [alert.principal]
    assert (entry["countries"], entry["accounts"]) == (["BT"], ["111122223333"])
    assert entry["until"] == datetime.now(tz=UTC).date() + timedelta(days=30)
    assert entry["note"].startswith(f"from alert {alert.alert_id}, resolved expected by {MOTO_CALLER} on ")
    assert entry["note"].endswith(": INC-7")

    # And once allowed, the same alert proposes nothing more
    again = trailgeo(
        "alerts", "allow", "--from-alert", alert.alert_id, "--table", TABLE, "--parameter", PARAMETER,
        "--yes",
        env=moto_server,
    )  # fmt: skip
    assert again.returncode == EXIT_USAGE
    assert "already allows" in again.stderr


@pytest.mark.parametrize(
    ("verdict", "told"),
    [
        (None, "is open: only an alert resolved as expected or false-positive"),
        ("attack", "is attack: only an alert resolved as expected or false-positive"),
    ],
)
def test_given_an_open_or_attack_alert_when_allowed_from_then_it_is_refused(
    moto_server: dict[str, str], verdict: str | None, told: str
) -> None:
    alert = an_alert(1)
    queue(alert)
    if verdict:
        trailgeo("alerts", "resolve", alert.alert_id, "--as", verdict, "--table", TABLE, env=moto_server)

    done = trailgeo(
        "alerts", "allow", "--from-alert", alert.alert_id, "--table", TABLE, "--parameter", PARAMETER,
        "--yes",
        env=moto_server,
    )  # fmt: skip

    assert done.returncode == EXIT_USAGE
    assert told in done.stderr
    assert not boto3.client("ssm", region_name=REGION).describe_parameters()["Parameters"]


# --- the rules, on the in-memory view --------------------------------------------------------------------


def resolved_view(*resolved: Alert, verdict: str = "expected") -> MemoryOperations:
    outbox = MemoryOutbox()
    view = MemoryOperations(MemoryLedger(), outbox)
    for alert in resolved:
        outbox.put(alert)
        alerts.resolve(view, alert.alert_id, verdict, by="alice", now=T0)
    return view


def entry_for(view: MemoryOperations, alert: Alert, until: str | None = None) -> Any:
    return alerts.entry_for_alert(alerts.find_triaged(view, alert.alert_id), until=until, today=T0.date())


def test_given_a_principal_with_glob_characters_when_allowlisted_from_then_the_entry_matches_it_alone() -> (
    None
):
    # Given an alert whose principal holds every glob character (a role session name chosen by the caller)
    principal = "arn:aws:sts::111122223333:assumed-role/Admin/*?[x]"
    alert = an_alert(1, principal=principal)
    entry = entry_for(resolved_view(alert), alert)

    # When the tuning holds the entry
    tuning = Tuning(version=1, allowed_countries=(entry,))

    # Then it allows that principal in that country and account, until its last day, and nothing else
    day = T0.date()

    def allows(
        who: str = principal, country: str = "BT", account: str = "111122223333", on: date = day
    ) -> bool:
        return tuning.country_verdict(account=account, principal=who, country=country, on=on) is not None

    assert allows()
    assert allows(on=T0.date() + timedelta(days=30))
    assert not allows(on=T0.date() + timedelta(days=31))
    assert not allows(who="arn:aws:sts::111122223333:assumed-role/Admin/anyone")
    assert not allows(who="arn:aws:sts::111122223333:assumed-role/Admin/*?x")
    assert not allows(country="PT")
    assert not allows(account="444455556666")


def test_given_an_until_too_far_or_past_when_allowlisted_from_then_it_is_refused() -> None:
    alert = an_alert(1)
    view = resolved_view(alert)

    assert entry_for(
        view, alert, until=(T0.date() + timedelta(days=90)).isoformat()
    ).until == T0.date() + timedelta(days=90)
    with pytest.raises(OperateError, match="more than 90 days away"):
        entry_for(view, alert, until=(T0.date() + timedelta(days=91)).isoformat())
    with pytest.raises(OperateError, match="is in the past"):
        entry_for(view, alert, until=(T0.date() - timedelta(days=1)).isoformat())


@pytest.mark.parametrize(
    ("alert", "told"),
    [
        (an_alert(1, detector="user_method"), "from the user_method detector: allowed_countries silences"),
        (at(an_alert(2), "VPCE:444455556666"), "not a country"),
        (at(an_alert(3), "unknown"), "not a country"),
    ],
    ids=["sibling-detector", "vpc-endpoint", "unknown-location"],
)
def test_given_an_alert_no_country_entry_can_name_when_allowlisted_from_then_it_is_refused(
    alert: Alert, told: str
) -> None:
    with pytest.raises(OperateError, match=told):
        entry_for(resolved_view(alert), alert)


# --- a local state file ---------------------------------------------------------------------------------


def test_given_a_replay_s_state_file_when_triaged_then_list_resolve_allow_and_the_file_keeps_them(
    tmp_path: Path, country_test_mmdb: Path
) -> None:
    # Given a replay that raised one alert, its state kept in a file
    logs, state, tuning = tmp_path / "logs", tmp_path / "state.json", tmp_path / "tuning.toml"
    trail_with_an_attack(logs)
    replayed = trailgeo("replay", logs, "--geoip", country_test_mmdb, "--state", state)
    alert_id = json.loads(replayed.stdout.splitlines()[0])["alert_id"]

    # When it is listed, resolved (by --by) and allowlisted into a tuning file
    listed = json_of(trailgeo("alerts", "list", "--state-file", state, "--output", "json"))
    resolved = json_of(
        trailgeo("alerts", "resolve", alert_id, "--as", "false-positive", "--by", "alice", "--state-file",
                 state,
                 "--output", "json")
    )  # fmt: skip
    allowed = trailgeo(
        "alerts", "allow", "--from-alert", alert_id, "--state-file", state, "--tuning-file", tuning, "--yes"
    )

    # Then the state file keeps the resolution, and the tuning file holds the entry
    assert [(row["alert_id"], row["state"]) for row in listed["alerts"]] == [(alert_id, "open")]
    assert resolved["resolution"]["by"] == "alice"
    row = json_of(trailgeo("alerts", "list", "--state-file", state, "--output", "json"))["alerts"][0]
    assert (row["state"], row["resolution"]["by"]) == ("false-positive", "alice")
    assert allowed.returncode == 0, allowed.stderr
    assert "created tuning file" in allowed.stdout
    parsed = Tuning.parse(tuning.read_text(encoding="utf-8"), source="test")
    assert parsed.allowed_countries[0].principals == ("arn:aws:iam::111122223333:user/alice",)

    # And without --by, the OS user signs it
    again = json_of(
        trailgeo("alerts", "resolve", alert_id, "--as", "expected", "--change", "--state-file", state,
                 "--output", "json", env=clean_env(USER="carol", LOGNAME="carol"))
    )  # fmt: skip
    assert again["resolution"]["by"] == "carol"


TRIAGE_HELP = [["alerts"], *(["alerts", a] for a in ("list", "show", "resolve", "allow")), ["report"]]


@pytest.mark.parametrize("command", TRIAGE_HELP)
def test_given_a_triage_command_when_help_is_asked_then_it_says_what_goes_where_with_examples(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "stdout:" in text
    assert "stderr:" in text
    assert f"trailgeo {' '.join(command)}" in text.split("examples:\n", 1)[1]


def test_given_a_tuning_file_changed_or_created_meanwhile_when_written_then_nothing_is_written(
    tmp_path: Path,
) -> None:
    # Given a tuning file read at one version, then edited by someone else
    store, path = FileTuningStore(), tmp_path / "tuning.toml"
    path.write_text("version = 1\n", encoding="utf-8")
    read = store.read(str(path))
    assert read is not None
    assert read.type == "File"
    path.write_text("version = 1\n# theirs\n", encoding="utf-8")
    os.utime(path, ns=(read.version + 1_000_000, read.version + 1_000_000))

    # When ours is written on the version read, or a file is created where one appeared meanwhile
    with pytest.raises(ConcurrentChangeError, match="changed while we edited it"):
        store.write(str(path), "version = 1\n# ours\n", expected_version=read.version, type="File")
    with pytest.raises(ConcurrentChangeError, match="created by someone else"):
        store.write(str(path), "version = 1\n# ours\n", expected_version=None, type="File")

    # Then theirs stands; and on the version now, ours is written whole
    assert path.read_text(encoding="utf-8") == "version = 1\n# theirs\n"
    now = store.read(str(path))
    assert now is not None
    store.write(str(path), "version = 1\n# ours\n", expected_version=now.version, type="File")
    assert path.read_text(encoding="utf-8") == "version = 1\n# ours\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuning.toml"]
