"""The per-batch record budget (``RunOptions.batch_records``) is a setting: ``BATCH_RECORDS``."""

from __future__ import annotations

import pytest

from trailgeo.app.detect import RunOptions
from trailgeo.app.settings import Settings, SettingsError

ENV = {
    "TRAIL_BUCKET": "org-trail",
    "TABLE_NAME": "trailgeo-state",
    "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:trailgeo-alerts",
}


def test_given_no_batch_records_variable_then_the_run_keeps_the_default_budget() -> None:
    # Given the template's environment, which sets no BATCH_RECORDS
    # When the settings are read
    options = Settings.from_environ(ENV).run_options()

    # Then a batch decodes at most the 4 million records sized for the default function
    assert options.batch_records == RunOptions().batch_records == 4_000_000


def test_given_batch_records_set_then_the_run_options_carry_it() -> None:
    # Given BATCH_RECORDS raised for a function given more memory
    # When the settings are read
    options = Settings.from_environ({**ENV, "BATCH_RECORDS": "12000000"}).run_options()

    # Then the run's batches are cut at that budget
    assert options.batch_records == 12_000_000


@pytest.mark.parametrize("value", ["99999", "60000001", "0", "-1", "lots"])
def test_given_batch_records_out_of_bounds_then_the_cold_start_stops_naming_it(value: str) -> None:
    # Given a budget below one file's most records, above what the largest function holds, or no number
    # When the settings are read
    # Then the cold start stops with an error naming the variable
    with pytest.raises(SettingsError, match="BATCH_RECORDS"):
        Settings.from_environ({**ENV, "BATCH_RECORDS": value})
