"""Which events a run scores, by CloudTrail's ``eventCategory``: management events always; data
events (S3 object-level, Lambda ``Invoke``, DynamoDB items...) and network activity events (calls
through VPC endpoints) only when the deployment asks for them (``Events=All``).

A trail that logs data or network activity events writes them into the same delivery files as its
management events, often many more of them. Only the two categories CloudTrail documents for them
are ever set apart: a record with no category (older records, other shapes), ``Management``, or
any other value is scored as a management event, so that a forged category (a bucket writer's
``"Foo"``, or ``"Data"`` spelt otherwise) never hides an event (docs/threat-model.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class EventScope(StrEnum):
    """The ``Events`` setting: the values of the template parameter and of ``EVENTS``."""

    MANAGEMENT = "Management"  # data and network activity events are skipped (the default)
    ALL = "All"  # they are scored too, and counted apart


# eventCategory -> the reason a record of it is counted under when excluded (a skip) ...
EXCLUDED: Mapping[str, str] = {"Data": "data_event", "NetworkActivity": "network_activity_event"}
# ... and when included (counted, not skipped, as field_truncated or geo_unknown are)
SCORED: Mapping[str, str] = {
    "Data": "data_event_scored",
    "NetworkActivity": "network_activity_event_scored",
}
REASONS = frozenset(EXCLUDED.values()) | frozenset(SCORED.values())


def category_reasons(scope: EventScope) -> tuple[dict[str, str], bool]:
    """The reason each non-management category is counted under, and whether its records are
    skipped (``Management``) or scored (``All``)."""
    if scope is EventScope.ALL:
        return dict(SCORED), False
    return dict(EXCLUDED), True
