"""The simulator's "sneaky endpoints" attack: a stolen key used from the attacker's own AWS account,
through an interface VPC endpoint in their VPC, recorded as CloudTrail records it (private
``sourceIPAddress``, top-level ``vpcEndpointId`` and ``vpcEndpointAccountId``), and the evaluation
counting it as an attack to detect."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from trailgeo.adapters.geoip import MaxMindGeoResolver
from trailgeo_tools.evaluation import run_evaluation
from trailgeo_tools.simulate import (
    FOREIGN_ENDPOINT_SCENARIO,
    AttackSpec,
    Simulation,
    SimulationConfig,
    simulate,
)

START = datetime(2026, 10, 5, tzinfo=UTC)
ATTACKER = "210987654321"  # the attacker's own account, outside the simulated organization
DAYS = 9
VICTIM = 7  # an IAM user (a long-term key) among 8 humans
INCIDENT = "attack-foreign-vpc-endpoint"


def _config(seed: int = 5, days: int = DAYS, country: str = f"VPCE:{ATTACKER}") -> SimulationConfig:
    """A small organization, no classic attack, the endpoint attack on the last day (after learning)."""
    attack = AttackSpec(FOREIGN_ENDPOINT_SCENARIO, day=days - 1, victim=VICTIM, country=country)
    return SimulationConfig(start=START, days=days, seed=seed, humans=8, attack=False, scenarios=(attack,))


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(_config())


def _incident(sim: Simulation) -> dict[str, Any]:
    (found,) = [inc for inc in sim.ground_truth()["incidents"] if inc["id"] == INCIDENT]
    return dict(found)


def test_given_the_endpoint_scenario_then_its_records_carry_the_endpoint_as_cloudtrail_does(
    sim: Simulation,
) -> None:
    # Given the simulated organization with the foreign endpoint attack planted
    incident = _incident(sim)

    # When the records of the incident are read back from the delivered files
    records = [r for _, r in sim.records() if r["sourceIPAddress"] in incident["source_ips"]]

    # Then each comes from one private address of a VPC, names an interface endpoint and the
    # attacker's account as its owner (top-level fields, eventVersion 1.09), is recorded in the
    # victim's account, and is signed with the victim's long-term key
    assert len(records) == incident["events"] >= 6
    (address,) = {r["sourceIPAddress"] for r in records}
    assert ipaddress.ip_address(address) in ipaddress.ip_network("10.0.0.0/8")
    (endpoint,) = {r["vpcEndpointId"] for r in records}
    assert re.fullmatch(r"vpce-[0-9a-f]{17}", endpoint)
    assert {r["vpcEndpointAccountId"] for r in records} == {ATTACKER}
    assert {r["eventVersion"] for r in records} == {"1.09"}
    assert {r["recipientAccountId"] for r in records} == {incident["account_id"]}
    assert ATTACKER not in sim.config.accounts
    assert all(r["userIdentity"]["accessKeyId"].startswith("AKIA") for r in records)
    assert len({r["awsRegion"] for r in records}) == 1  # an interface endpoint is regional


def test_given_the_endpoint_scenario_then_the_ground_truth_names_its_location(
    sim: Simulation,
) -> None:
    # Given the simulated organization with the foreign endpoint attack planted
    # When its ground truth is read
    incident = _incident(sim)

    # Then it is an attack from the location VPCE:<attacker>, new to the organization and to the victim
    assert (incident["kind"], incident["scenario"]) == ("attack", FOREIGN_ENDPOINT_SCENARIO)
    assert incident["country"] == f"VPCE:{ATTACKER}"
    assert incident["country_new_to_org"]
    assert incident["country_new_to_principal"]
    assert "VPC endpoint of account 210987654321" in incident["description"]


@pytest.mark.parametrize("country", ["VN", "VPCE:111122223333", "VPCE:12345", "VPCE:other"])
def test_given_an_endpoint_attack_not_from_a_foreign_account_when_configured_then_it_is_refused(
    country: str,
) -> None:
    # Given the scenario asked for from a country, from an account of the organization, or from no account id
    # When the configuration is built
    # Then it is refused, naming what the scenario needs
    with pytest.raises(ValueError, match="VPCE:<12-digit account outside the organization>"):
        _config(country=country)


def test_given_the_endpoint_attack_when_evaluated_then_trailgeo_detects_it_and_the_geoip_references_cannot(
    dbip_mmdb: Path,
) -> None:
    # Given a small organization whose only attack is the foreign endpoint one
    geo = MaxMindGeoResolver(dbip_mmdb)

    # When the evaluation simulates and scores it
    try:
        result = run_evaluation(geo, [5], DAYS, make_config=_config)
    finally:
        geo.close()

    # Then it counts as an attack to detect: trailgeo finds it (scored from VPCE:<attacker>), the
    # references, which locate public addresses only, miss it
    detectors = result["seeds"][0]["detectors"]
    found = {
        name: {a["id"]: a["detected"] for a in figures["attacks"]} for name, figures in detectors.items()
    }
    assert found["trailgeo"] == {INCIDENT: True}
    assert found["first-seen"] == found["elastic-approx"] == {INCIDENT: False}
    assert result["aggregate"]["trailgeo"]["attack_recall"] == 1.0
