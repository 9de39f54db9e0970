"""Operator commands: ``trailgeo status``, ``explain``, ``allow`` against moto, and the CLI's progress bar."""

from __future__ import annotations

import io
import json
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws import REGION, TABLE, create_deployment
from tests.builders import BT_IP, T0, record
from trailgeo.adapters.dynamodb import DynamoLedger, DynamoOutbox
from trailgeo.adapters.operations import SsmTuningStore
from trailgeo.app import operate
from trailgeo.cli import ProgressBar, main
from trailgeo.core.alerts import Alert
from trailgeo.core.tuning import AllowedCountries, IgnoredUserAgents, MethodPolicy, TrustedCidr, Tuning

PARAMETER = "/trailgeo/tuning"
ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--region", REGION])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def an_alert() -> Alert:
    from tests.test_alerts import alert_for

    return alert_for([record(T0, ip=BT_IP)])


def stored_parameter(session: Any) -> dict[str, Any]:
    parameter: dict[str, Any] = session.client("ssm", region_name=REGION).get_parameter(
        Name=PARAMETER, WithDecryption=True
    )["Parameter"]
    return parameter


# --- status ---------------------------------------------------------------------------------------


def test_given_an_empty_table_when_status_then_no_run_yet_is_reported_in_json_and_table(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    create_deployment(aws)

    code, out, err = run(capsys, "status", "--table", TABLE, "--output", "json")

    assert (code, err) == (0, "")
    status = json.loads(out)
    assert status["watermark"] is None
    assert status["lag_seconds"] is None
    assert status["alerts_pending"] == []
    assert status["runs_interrupted"] == []
    assert status["item_count"] == 0
    assert any("no complete run yet" in w for w in status["warnings"])

    code, out, _ = run(capsys, "status", "--table", TABLE)
    assert code == 0
    assert "last complete run       none yet" in out
    assert "alerts pending          0" in out


def test_given_a_busy_table_when_status_then_lag_runs_and_pending_alerts_are_listed(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a last complete run 45 minutes ago, a run still holding its lease, a dead run and a
    # closed one, a pending alert and a sent one
    create_deployment(aws)
    dynamodb = aws.client("dynamodb", region_name=REGION)
    ledger = DynamoLedger(dynamodb, TABLE)
    now = datetime.now(tz=UTC)
    ledger.advance_watermark(now - timedelta(minutes=45))
    ledger.begin("run-live", ["AWSLogs/a.json.gz"], now + timedelta(minutes=20), now)
    ledger.begin("run-dead", ["AWSLogs/b.json.gz", "AWSLogs/c.json.gz"], now - timedelta(minutes=5), now)
    ledger.begin("run-done", ["AWSLogs/d.json.gz"], now - timedelta(minutes=30), now)
    ledger.complete({"AWSLogs/d.json.gz": "ok"}, "run-done", now)
    outbox = DynamoOutbox(dynamodb, TABLE)
    pending = an_alert()
    outbox.put(pending)
    sent_alert = pending.model_copy(update={"alert_id": "f" * 32})
    outbox.put(sent_alert)
    outbox.mark_sent(sent_alert.alert_id, "sns-message-1")

    # When status is asked as JSON
    code, out, err = run(capsys, "status", "--table", TABLE, "--output", "json")

    # Then
    assert (code, err) == (0, "")
    status = json.loads(out)
    assert status["watermark"] is not None
    assert status["lag_seconds"] >= 45 * 60
    assert [r["run_id"] for r in status["runs_open"]] == ["run-live"]
    assert [(r["run_id"], r["state"], r["files"]) for r in status["runs_interrupted"]] == [
        ("run-dead", "interrupted", 2)
    ]
    assert status["runs_closed_last_day"] == 1
    assert [a["alert_id"] for a in status["alerts_pending"]] == [pending.alert_id]
    assert status["alerts_pending"][0]["country"] == "BT"
    assert status["alerts_kept"] == 2
    warnings = " ".join(status["warnings"])
    assert "interrupted run" in warnings
    assert "not yet published" in warnings
    assert "last complete run 45m ago" in warnings

    # And the table rendering aligns its columns
    code, out, _ = run(capsys, "status", "--table", TABLE)
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("PENDING ALERT"))
    row = next(line for line in lines if line.startswith(pending.alert_id))
    assert header.index("SEVERITY") == row.index(pending.severity)
    assert "runs interrupted        1" in out
    run_header = next(line for line in lines if line.startswith("RUN "))
    dead = next(line for line in lines if line.startswith("run-dead"))
    assert run_header.index("STATE") == dead.index("interrupted")


def test_given_parked_alerts_when_status_then_each_is_listed_with_when_and_why_and_stays_inert(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an alert SNS refused for what it holds (its refusal carrying terminal controls and a
    # line break), and an outbox item someone wrote that holds no alert, parked by the next read
    create_deployment(aws)
    dynamodb = aws.client("dynamodb", region_name=REGION)
    outbox = DynamoOutbox(dynamodb, TABLE)
    refused = an_alert()
    outbox.put(refused)
    reason = "InvalidParameter\x1b]0;owned\x07\nwarning: none"
    outbox.park(refused.alert_id, reason)
    forged = "e" * 32
    dynamodb.put_item(
        TableName=TABLE,
        Item={"pk": {"S": "OUTBOX"}, "sk": {"S": f"A#{forged}"}, "st": {"S": "pending"}, "doc": {"S": "{}"}},
    )
    assert outbox.pending() == []

    # When status is asked as JSON
    code, out, err = run(capsys, "status", "--table", TABLE, "--output", "json")

    # Then each parked alert is listed with when and why, and a warning says they need a person
    assert (code, err) == (0, "")
    status = json.loads(out)
    parked = {a["alert_id"]: a for a in status["alerts_parked"]}
    assert {k: v["reason"] for k, v in parked.items()} == {
        refused.alert_id: reason,
        forged: "invalid_document",
    }
    assert all(datetime.fromisoformat(a["parked_at"]) for a in parked.values())
    assert status["alerts_pending"] == []
    assert any("2 alert(s) parked" in w for w in status["warnings"])

    # And the table lists them, the refusal escaped on one line: no control, no drawn warning
    code, out, _ = run(capsys, "status", "--table", TABLE)
    assert code == 0
    assert "alerts parked           2" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("PARKED ALERT"))
    row = next(line for line in lines if line.startswith(refused.alert_id))
    assert row.endswith("InvalidParameter\\u001b]0;owned\\u0007\\nwarning: none")
    assert header.index("REASON") == row.index("InvalidParameter")
    assert "\x1b" not in out
    assert "\x07" not in out
    assert not any(line.startswith("warning: none") for line in lines)

    # And explain says the alert is parked and why; the item holding no alert is one clear line
    code, out, _ = run(capsys, "explain", refused.alert_id, "--table", TABLE)
    assert code == 0
    assert out.startswith("Outbox:   parked ")
    assert "InvalidParameter\\u001b]0;owned\\u0007\\nwarning: none" in out
    code, out, err = run(capsys, "explain", forged, "--table", TABLE)
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1
    assert f"outbox item {forged} holds no alert (state parked, parked: invalid_document)" in err


def test_given_a_wrong_table_name_when_status_then_one_line_on_stderr_and_exit_2(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    create_deployment(aws)

    code, out, err = run(capsys, "status", "--table", "no-such-table")

    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("trailgeo: table no-such-table not found in us-east-1")


# --- explain --------------------------------------------------------------------------------------


def test_given_an_alert_in_the_outbox_when_explained_then_the_brief_and_the_json_are_shown(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    create_deployment(aws)
    dynamodb = aws.client("dynamodb", region_name=REGION)
    alert = an_alert()
    DynamoOutbox(dynamodb, TABLE).put(alert)

    code, out, err = run(capsys, "explain", alert.alert_id.upper(), "--table", TABLE)

    assert (code, err) == (0, "")
    assert out.startswith("Outbox:   pending")
    assert f"Who:      {alert.principal}" in out
    assert f"Alert id: {alert.alert_id}" in out

    DynamoOutbox(dynamodb, TABLE).mark_sent(alert.alert_id, "sns-42")
    code, out, _ = run(capsys, "explain", alert.alert_id, "--table", TABLE, "--output", "json")
    assert code == 0
    document = json.loads(out)
    assert document["state"] == "sent"
    assert document["message_id"] == "sns-42"
    assert Alert.model_validate(document["alert"]) == alert


def test_given_an_unknown_or_malformed_id_when_explained_then_a_clear_message_and_exit_2(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    create_deployment(aws)

    code, out, err = run(capsys, "explain", "0" * 32, "--table", TABLE)
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1
    assert f"alert {'0' * 32} is not in table {TABLE}" in err
    assert "30 days" in err

    code, _, err = run(capsys, "explain", "not-an-id", "--table", TABLE)
    assert code == 2
    assert "'not-an-id' is not an alert id" in err


# --- allow ----------------------------------------------------------------------------------------


def test_given_no_parameter_when_allow_then_a_version_1_toml_document_is_created(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "allow",
        "--parameter",
        PARAMETER,
        "--principal",
        "arn:aws:iam::*:user/alice",
        "--country",
        "JP",
        "--until",
        "2099-12-31",
        "--note",
        'trip "Tokyo" \\ INC-1',
        "--account",
        "012345678901",
        "--output",
        "json",
    )

    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["created"] is True
    assert result["new_version"] == 1
    assert result["added"]["path"] == "allowed_countries[0]"
    parameter = stored_parameter(aws)
    assert parameter["Type"] == "String"
    document = tomllib.loads(parameter["Value"])
    assert document["version"] == 1
    assert document["allowed_countries"] == [
        {
            "principals": ["arn:aws:iam::*:user/alice"],
            "countries": ["JP"],
            "accounts": ["012345678901"],
            "until": date(2099, 12, 31),
            "note": 'trip "Tokyo" \\ INC-1',
        }
    ]


def test_given_a_commented_secure_toml_parameter_when_allow_then_the_entry_is_appended_keeping_it(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the example tuning as a SecureString with a customer managed key
    ssm = aws.client("ssm", region_name=REGION)
    key_id = aws.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    original = (ROOT / "examples" / "tuning.toml").read_text(encoding="utf-8")
    ssm.put_parameter(Name=PARAMETER, Value=original, Type="SecureString", KeyId=key_id, Tier="Advanced")
    before = Tuning.parse(original, source="example")

    # When
    code, out, err = run(
        capsys, "allow", "--parameter", PARAMETER, "--principal", "arn:aws:iam::*:user/bob", "--country", "BR"
    )

    # Then the document is the original plus one entry, comments included, type and key kept
    assert (code, err) == (0, "")
    index = len(before.allowed_countries)
    assert "version 1 -> 2" in out
    assert f"+ [[allowed_countries]]  # allowed_countries[{index}]" in out
    assert '+ countries = ["BR"]' in out
    parameter = stored_parameter(aws)
    assert parameter["Type"] == "SecureString"
    assert parameter["Value"].startswith(original.rstrip("\n"))
    after = Tuning.parse(parameter["Value"], source="stored")
    assert after.allowed_countries[:index] == before.allowed_countries
    assert after.allowed_countries[index].principals == ("arn:aws:iam::*:user/bob",)
    assert after.methods == before.methods
    (meta,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [PARAMETER]}])["Parameters"]
    assert meta["KeyId"] == key_id
    assert meta["Tier"] == "Advanced"


def test_given_an_inline_allowed_countries_list_when_allow_then_the_document_is_re_emitted(
    aws: Any,
) -> None:
    ssm = aws.client("ssm", region_name=REGION)
    ssm.put_parameter(
        Name=PARAMETER,
        Value='version = 1\nallowed_countries = [{ principals = ["*"], countries = ["PT"] }]\n',
        Type="String",
    )
    entry = operate.allowed_entry(principal="arn:aws:iam::*:user/carol", countries=["ES"])

    result = operate.allow(SsmTuningStore(ssm), PARAMETER, entry)

    assert result.layout == "emitted"
    document = tomllib.loads(stored_parameter(aws)["Value"])
    assert [e["countries"] for e in document["allowed_countries"]] == [["PT"], ["ES"]]


def test_given_a_json_parameter_when_allow_then_it_stays_json(aws: Any) -> None:
    ssm = aws.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=PARAMETER, Value='{"version": 1, "description": "json"}', Type="String")
    entry = operate.allowed_entry(
        principal="arn:aws:iam::*:user/dan", countries=["FR"], until="2099-01-02", note="x"
    )

    result = operate.allow(SsmTuningStore(ssm), PARAMETER, entry)

    value = stored_parameter(aws)["Value"]
    assert (result.layout, result.old_version, result.new_version) == ("json", 1, 2)
    assert json.loads(value)["allowed_countries"] == [
        {"principals": ["arn:aws:iam::*:user/dan"], "countries": ["FR"], "until": "2099-01-02", "note": "x"}
    ]
    assert json.loads(value)["description"] == "json"


def test_given_a_change_between_read_and_write_when_allow_then_it_refuses_and_writes_nothing(
    aws: Any,
) -> None:
    ssm = aws.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=PARAMETER, Value="version = 1\n", Type="String")
    theirs = 'version = 1\ndescription = "a colleague\'s edit"\n'
    entry = operate.allowed_entry(principal="arn:aws:iam::*:user/erin", countries=["IT"])

    def colleague_writes(_: operate.TuningParameter) -> None:
        ssm.put_parameter(Name=PARAMETER, Value=theirs, Type="String", Overwrite=True)

    with pytest.raises(operate.ConcurrentChangeError, match="read version 1, now 2"):
        operate.allow(SsmTuningStore(ssm), PARAMETER, entry, before_write=colleague_writes)

    parameter = stored_parameter(aws)
    assert (parameter["Version"], parameter["Value"]) == (2, theirs)


def test_given_a_parameter_created_meanwhile_when_allow_creates_then_it_refuses(aws: Any) -> None:
    ssm = aws.client("ssm", region_name=REGION)
    entry = operate.allowed_entry(principal="arn:aws:iam::*:user/erin", countries=["IT"])

    def colleague_creates(current: operate.TuningParameter) -> None:
        assert current.version is None
        ssm.put_parameter(Name=PARAMETER, Value="version = 1\n", Type="String")

    with pytest.raises(operate.ConcurrentChangeError, match="created by someone else"):
        operate.allow(SsmTuningStore(ssm), PARAMETER, entry, before_write=colleague_creates)
    assert stored_parameter(aws)["Value"] == "version = 1\n"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--country", "usa", "--country 'usa': must be two upper-case letters"),
        ("--country", "pt", "--country 'pt': must be two upper-case letters"),
        ("--until", "2026-02-30", "--until '2026-02-30': must be a calendar date written YYYY-MM-DD"),
        ("--until", "31/12/2099", "--until '31/12/2099': must be a calendar date"),
        ("--until", "2001-01-01", "--until 2001-01-01: is in the past"),
        ("--account", "1234", "--account '1234': must be a 12-digit AWS account id"),
        ("--principal", " alice", "--principal ' alice': must be a non-empty glob"),
    ],
)
def test_given_invalid_input_when_allow_then_one_clear_line_exit_2_and_nothing_written(
    aws: Any, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    options = {"--principal": "arn:aws:iam::*:user/alice", "--country": "PT", option: value}
    argv = [part for name, given in options.items() for part in (name, given)]

    code, out, err = run(capsys, "allow", "--parameter", PARAMETER, *argv)

    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"trailgeo: {message}")
    ssm = aws.client("ssm", region_name=REGION)
    assert ssm.describe_parameters()["Parameters"] == []


def test_given_an_invalid_stored_tuning_when_allow_then_it_refuses_to_write_on_top(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ssm = aws.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=PARAMETER, Value="version = 1\ncountires = []\n", Type="String")

    code, _, err = run(capsys, "allow", "--parameter", PARAMETER, "--principal", "x", "--country", "PT")

    assert code == 2
    assert "countires: unknown field" in err
    assert "nothing was written" in err
    assert stored_parameter(aws)["Version"] == 1


# --- the TOML emitter -----------------------------------------------------------------------------


def test_given_every_field_and_hostile_text_when_emitted_as_toml_then_tomllib_reads_the_same_tuning() -> None:
    text = 'quote " backslash \\ newline \n tab \t del \x7f nul \x00 é 日本 😀'
    tuning = Tuning(
        version=1,
        description=text,
        ignored_principals=("arn:aws:sts::*:assumed-role/ci/*",),
        ignored_user_agents=(
            IgnoredUserAgents(user_agents=("Terraform/*", text), principals=("arn:aws:iam::*:user/ci",)),
            IgnoredUserAgents(user_agents=("x",), cidrs=("198.51.100.0/24",), note=text),
        ),
        trusted_cidrs=(TrustedCidr(cidr="198.51.100.0/24"), TrustedCidr(cidr="2001:db8::/48", note=text)),
        allowed_countries=(
            AllowedCountries(principals=("*",), countries=("PT", "ES")),
            AllowedCountries(
                principals=("arn:aws:iam::*:user/a", "b[!x]?"),
                countries=("JP",),
                accounts=("012345678901",),
                until=date(2026, 12, 31),
                note=text,
            ),
        ),
        methods={
            "s3.amazonaws.com:Get*": MethodPolicy(ignore=True),
            "iam.amazonaws.com:CreateUser": MethodPolicy(threshold=35.5, sensitive=True, note=text),
            "kms.amazonaws.com:Decrypt": MethodPolicy(threshold=70, sensitive=False),
            "ec2.amazonaws.com:Describe*": MethodPolicy(),
        },
    )

    emitted = operate.to_toml(tuning)

    tomllib.loads(emitted)  # valid TOML, or this raises
    again = Tuning.parse(emitted, source="emitted")
    assert again.model_dump() == tuning.model_dump()


def test_given_the_example_tuning_when_re_emitted_then_it_is_unchanged() -> None:
    example = Tuning.parse((ROOT / "examples" / "tuning.toml").read_text(encoding="utf-8"), source="ex")

    assert Tuning.parse(operate.to_toml(example), source="emitted").model_dump() == example.model_dump()


# --- progress -------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_given_a_terminal_when_progress_advances_then_one_line_is_redrawn_and_ended() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, total=4, unit="days", width=8)

    bar.advance("day one", plain="never on a terminal")
    bar.advance("day two")
    bar.close()

    text = stream.getvalue()
    assert text.count("\r") == 2
    assert "[####....] 2/4 days  day two" in text
    assert "never on a terminal" not in text
    assert text.endswith("\n")
    assert text.count("\n") == 1


def test_given_a_pipe_when_progress_advances_then_only_the_plain_lines_are_written() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, total=None, unit="ticks")

    bar.advance("tick", plain="  2026-11-01 00:00Z: 3 files")
    bar.advance("tick")  # a replay tick: nothing in a log
    bar.close()

    assert stream.getvalue() == "  2026-11-01 00:00Z: 3 files\n"


def test_given_no_total_when_rendered_on_a_terminal_then_a_spinner_counts_ticks() -> None:
    bar = ProgressBar(Terminal(), total=None, unit="ticks")

    bar.advance("x")

    assert bar.render("2026-11-01 00:15Z") == "/ 1 ticks  2026-11-01 00:15Z"
