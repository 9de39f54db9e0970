"""`make demo` end to end: moto's server on 127.0.0.1, the real handler, alerts through SNS."""

from __future__ import annotations

from pathlib import Path

import pytest

from trailgeo_tools.demo import run_demo


@pytest.mark.slow
def test_given_a_simulated_organization_when_the_demo_runs_then_the_attacker_is_caught_through_sns(
    dbip_mmdb: Path,
) -> None:
    lines: list[str] = []

    code = run_demo(geoip=dbip_mmdb, days=9, seed=7, out=lines.append)

    text = "\n".join(lines)
    assert code == 0, text
    assert "ALERT via SNS: VN arn:aws:iam::444455556666:user/bob" in text
    # The attacker's later runs are suppressed for 24 h, except once for a sensitive method
    # (ListSecrets: credential access), sent in the first alert's thread: an escalation when more
    # severe (the thief's client and the new method: critical after high), else an update.
    assert text.count("ALERT via SNS") == 1
    assert text.count("ESCALATION of ") + text.count("UPDATE of ") <= 1
    assert "UPDATE of " not in text or "Update: " in text
    assert "detected: yes" in text
    assert "other alerts: 0" in text
    assert "What an email subscriber reads:" in text
    assert "subject: [HIGH] Unusual country for AWS command: " in text
