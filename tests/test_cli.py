"""The command line and the settings: what a person running them sees."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.builders import BT_IP, T0, US_IP, files_by_delivery, record, write_tree
from trailgeo.app.settings import Settings, SettingsError
from trailgeo.cli import main


def test_given_a_trail_directory_when_replayed_then_alerts_are_written_and_a_summary_printed(
    tmp_path: Path, country_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    history = [record(T0 + timedelta(hours=6 * i), ip=US_IP) for i in range(40)]
    write_tree(logs, files_by_delivery([*history, record(T0 + timedelta(days=10, hours=1), ip=BT_IP)]))
    (logs / "AWSLogs" / "README.txt").write_text("not a log")
    alerts_out = tmp_path / "alerts.jsonl"
    state = tmp_path / "state.json"

    replay_args = [
        "replay",
        str(logs),
        "--geoip",
        str(country_test_mmdb),
        "--alerts-out",
        str(alerts_out),
        "--state",
        str(state),
    ]

    code = main(replay_args)

    assert code == 0
    alerts = [json.loads(line) for line in alerts_out.read_text().splitlines()]
    assert [a["source"]["geo"]["country_iso_code"] for a in alerts] == ["BT"]
    summary = json.loads(capsys.readouterr().err)["replay"]
    assert summary["events"] == 41
    assert summary["alerts"] == 1
    assert summary["keys_skipped"] == {"key_other": 1}
    assert summary["events_per_second"] > 0

    # When: replayed again with the saved state, then nothing is new
    again = main(replay_args)
    assert again == 0
    assert alerts_out.read_text() == ""
    assert json.loads(capsys.readouterr().err)["replay"]["events"] == 0


def test_given_an_asn_database_when_replayed_then_alerts_name_their_networks_and_a_bad_one_is_refused(
    tmp_path: Path, country_test_mmdb: Path, asn_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a trail with an attack from Bhutan, and MaxMind's GeoLite2-ASN test database
    logs = tmp_path / "logs"
    history = [record(T0 + timedelta(hours=6 * i), ip=US_IP) for i in range(40)]
    write_tree(logs, files_by_delivery([*history, record(T0 + timedelta(days=10, hours=1), ip=BT_IP)]))
    alerts_out = tmp_path / "alerts.jsonl"
    args = ["replay", str(logs), "--geoip", str(country_test_mmdb), "--alerts-out", str(alerts_out)]

    # When replayed with --asn
    code = main([*args, "--asn", str(asn_test_mmdb)])

    # Then the alert names its address's network and the summary counts the lookup
    assert code == 0
    (alert,) = [json.loads(line) for line in alerts_out.read_text().splitlines()]
    assert alert["networks"] == [{"ip": BT_IP, "asn": 35908, "organization": ""}]
    assert json.loads(capsys.readouterr().err)["replay"]["networks"] == {"other": 1}

    # When the --asn file is missing or is no ASN database, Then the CLI refuses, saying why
    assert main([*args, "--asn", str(tmp_path / "nope.mmdb")]) == 2
    assert "ASN database not found" in capsys.readouterr().err
    assert main([*args, "--asn", str(country_test_mmdb)]) == 2
    assert "without AS numbers" in capsys.readouterr().err


def test_given_a_missing_database_or_directory_then_the_cli_says_so_and_exits_2(
    tmp_path: Path, country_test_mmdb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path), "--geoip", str(tmp_path / "nope.mmdb")]) == 2
    assert "GeoIP database not found" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "absent"), "--geoip", str(country_test_mmdb)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_given_the_lambda_environment_then_settings_validate_once_with_clear_errors() -> None:
    env = {
        "TRAIL_BUCKET": "org-trail",
        "TRAIL_PREFIX": "/cloudtrail",
        "TABLE_NAME": "trailgeo-state",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:trailgeo-alerts",
        "LOOKBACK_MINUTES": "180",
    }
    settings = Settings.from_environ(env)
    assert settings.trail_prefix == "cloudtrail/"
    assert settings.run_options().lookback == timedelta(minutes=180)

    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({**env, "TOPIC_ARN": "not-an-arn", "LOOKBACK_MINUTES": "5"})
    message = str(caught.value)
    assert "TOPIC_ARN" in message
    assert "LOOKBACK_MINUTES" in message
    with pytest.raises(SettingsError, match="TRAIL_BUCKET"):
        Settings.from_environ({k: v for k, v in env.items() if k != "TRAIL_BUCKET"})


def test_given_fan_out_settings_then_both_the_queue_and_the_bucket_are_required() -> None:
    env = {
        "TRAIL_BUCKET": "org-trail",
        "TABLE_NAME": "trailgeo-state",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:trailgeo-alerts",
        "FANOUT_QUEUE_URL": "",  # as the template sets them with FanOut=Disabled
        "PARTIALS_BUCKET": "",
    }
    single = Settings.from_environ(env)
    assert not single.fanout
    assert single.run_options().lease == timedelta(minutes=20)

    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/trailgeo-FanOutQueue"
    fanned = Settings.from_environ({**env, "FANOUT_QUEUE_URL": queue, "PARTIALS_BUCKET": "trailgeo-partials"})
    assert fanned.fanout
    assert fanned.run_options().lease == timedelta(hours=2)  # SQS may still deliver a batch's tasks

    with pytest.raises(SettingsError, match="PARTIALS_BUCKET"):
        Settings.from_environ({**env, "FANOUT_QUEUE_URL": queue})
