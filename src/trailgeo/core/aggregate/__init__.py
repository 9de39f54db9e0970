"""One run's observations, aggregated in memory before anything is written.

Writes to the frequency store grow with the distinct counters a run touches, never with the
number of events. Alongside the counters, each (account, principal, country) seen in the run
keeps the evidence an alert needs: methods, addresses, user agents, access keys, times.

The package, by job:

* ``accumulate``: ``RunAggregate`` and its per-event loop (``_count``), the cells it fills;
* ``digests``: the within-run duplicate check on eventIDs;
* ``endpoints``: calls through VPC endpoints, judged by the endpoint's owner;
* ``derive``: the counters and groups worked out from the cells, once per batch;
* ``snapshot``: an aggregate carried to another process and merged there;
* ``groups``: what the aggregate hands on (hit and category groups, bounded evidence) and the
  shapes of its cells.

May import: `trailgeo.core`, `msgspec`; the standard library always.
"""

from trailgeo.core.aggregate.accumulate import GeoLookup, RunAggregate
from trailgeo.core.aggregate.digests import DIGEST_BITS, event_digest, event_digests
from trailgeo.core.aggregate.groups import (
    MAX_DISTINCT_EVIDENCE,
    OTHER_MARKER,
    CategoryGroup,
    CategoryKey,
    Evidence,
    GroupKey,
    HitGroup,
    MethodActivity,
    method_key,
    method_of,
    principal_of,
    principal_of_identity,
)
from trailgeo.core.aggregate.snapshot import SNAPSHOT_VERSION
from trailgeo.core.counters import CounterKey

__all__ = [
    "DIGEST_BITS",
    "MAX_DISTINCT_EVIDENCE",
    "OTHER_MARKER",
    "SNAPSHOT_VERSION",
    "CategoryGroup",
    "CategoryKey",
    "CounterKey",
    "Evidence",
    "GeoLookup",
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
