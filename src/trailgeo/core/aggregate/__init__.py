"""One run's observations, aggregated in memory before anything is written (a package being split
along its jobs: the per-event loop, the derivation of counters and groups, the snapshot)."""

from trailgeo.core.aggregate.accumulate import (
    MAX_DISTINCT_EVIDENCE,
    OTHER_MARKER,
    CategoryGroup,
    CategoryKey,
    GroupKey,
    HitGroup,
    MethodActivity,
    RunAggregate,
    event_digest,
    event_digests,
    method_key,
    method_of,
    principal_of,
    principal_of_identity,
)
from trailgeo.core.counters import CounterKey

__all__ = [
    "MAX_DISTINCT_EVIDENCE",
    "OTHER_MARKER",
    "CategoryGroup",
    "CategoryKey",
    "CounterKey",
    "GroupKey",
    "HitGroup",
    "MethodActivity",
    "RunAggregate",
    "event_digest",
    "event_digests",
    "method_key",
    "method_of",
    "principal_of",
    "principal_of_identity",
]
