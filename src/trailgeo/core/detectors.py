"""The detectors: one registry every other place reads (settings, aggregation, alert documents,
suppression subjects and each channel's rendering), so that they cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

DetectorName = Literal["country", "city", "user_method", "error_code", "error_spike"]


@dataclass(frozen=True, slots=True)
class Detector:
    name: DetectorName  # the DETECTORS setting's value and the alert's ``detector``
    rule_name: str  # the alert's ``rule.name``, as Elastic names its rules
    generator_id: str  # Security Hub's GeneratorId
    chatbot_event_type: str  # AWS Chatbot custom notification's ``eventType``
    finding_type: str  # Security Hub's "Unusual Behaviors/User/..." type
    # The suppression subject is ``identity|<name>[:<value>]`` for every detector but the
    # country's (``identity|<location>``): app.detect.subject_of.


COUNTRY = Detector(
    name="country",
    rule_name="Unusual Country For an AWS Command",
    generator_id="trailgeo/unusual-country-for-aws-command",
    chatbot_event_type="UnusualCountryForAwsCommand",
    finding_type="Unusual Behaviors/User/Unusual country for AWS command",
)
CITY = Detector(
    name="city",
    rule_name="Unusual City For an AWS Command",
    generator_id="trailgeo/unusual-city-for-aws-command",
    chatbot_event_type="UnusualCityForAwsCommand",
    finding_type="Unusual Behaviors/User/Unusual city for AWS command",
)
USER_METHOD = Detector(
    name="user_method",
    rule_name="Unusual AWS Command For a User",
    generator_id="trailgeo/unusual-aws-command-for-a-user",
    chatbot_event_type="UnusualAwsCommandForAUser",
    finding_type="Unusual Behaviors/User/Unusual AWS command for a user",
)
ERROR_CODE = Detector(
    name="error_code",
    rule_name="Rare AWS Error Code",
    generator_id="trailgeo/rare-aws-error-code",
    chatbot_event_type="RareAwsErrorCode",
    finding_type="Unusual Behaviors/User/Rare AWS error code",
)

ERROR_SPIKE = Detector(
    name="error_spike",
    rule_name="Spike in AWS Error Messages",
    generator_id="trailgeo/spike-in-aws-error-messages",
    chatbot_event_type="SpikeInAwsErrorMessages",
    finding_type="Unusual Behaviors/User/Spike in AWS error messages",
)

REGISTRY: Mapping[str, Detector] = {d.name: d for d in (COUNTRY, CITY, USER_METHOD, ERROR_CODE, ERROR_SPIKE)}
DETECTORS = frozenset(REGISTRY)
DEFAULT_DETECTORS = frozenset({COUNTRY.name})
if frozenset(get_args(DetectorName)) != DETECTORS:  # pragma: no cover - caught at import, by every test
    raise RuntimeError("the detector registry and DetectorName disagree")


def detector(name: str) -> Detector:
    """The registry's entry for ``name``; ValueError for a name it does not hold."""
    found = REGISTRY.get(name)
    if found is None:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(DETECTORS)}")
    return found
