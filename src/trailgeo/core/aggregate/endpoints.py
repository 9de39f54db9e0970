"""Calls from a private address through a VPC endpoint, judged by the endpoint's owner: skipped
through the organization's own endpoints, counted from a location of their own through any other
account's (``count_endpoints``, once per file that has such calls)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import compress
from operator import attrgetter
from typing import TYPE_CHECKING

from trailgeo.core.aggregate.groups import Located
from trailgeo.core.records import TrailRecord, clip
from trailgeo.core.sources import VIA_ENDPOINT, classify_source, endpoint_location

if TYPE_CHECKING:
    from trailgeo.core.aggregate.accumulate import RunAggregate

_ENDPOINT_OWNER = attrgetter("vpcEndpointAccountId")  # read per file, only of files with private sources


def count_endpoints(
    aggregate: RunAggregate,
    kept: Sequence[TrailRecord],
    skipped: Counter[str],
    account_hint: str | None,
    folder: str | None,
) -> int:
    """The calls of one file from a private address through a VPC endpoint, which ``RunAggregate._count``
    skipped as ``source_private``, judged by the endpoint's owner (``vpcEndpointAccountId``);
    returns the change in the file's records not counted.

    Through an endpoint of the organization, the call stays skipped (``source_vpce_own``): the
    organization's accounts are the file's own account, from its S3 key (CloudTrail writes the
    key; no field of a record can add an account), and ``trusted_endpoint_accounts``. Through
    any other account's endpoint (stolen keys used from the attacker's own VPC, the "sneaky
    endpoints" technique), it is counted and scored from the location ``VPCE:<account>``, with
    a history of its own like a country's. A private address without an endpoint owner stays
    ``source_private``.
    """
    # C-level: only the records that name an endpoint owner reach the Python loop below
    named = list(compress(kept, map(_ENDPOINT_OWNER, kept)))
    if not named:
        return 0
    sources, trusted = aggregate._sources, aggregate.trusted_endpoint_accounts
    # data or network activity events the file's pass skipped by category, not as source_private
    excluded = aggregate._categories if aggregate._skip_categories else {}
    own = 0
    # (location, endpoint id) -> its records and where each of their sources is located
    foreign: dict[tuple[str, str | None], tuple[list[TrailRecord], Located]] = {}
    for record in named:
        source, owner = record.sourceIPAddress, record.vpcEndpointAccountId
        if not owner or record.eventCategory in excluded or sources.get(source) != "source_private":
            continue
        if owner == folder or owner in trusted:
            own += 1
            continue
        location, endpoint = endpoint_location(owner), clip(record.vpcEndpointId, 64)
        records, located = foreign.setdefault((location, endpoint), ([], {}))
        records.append(record)
        if source not in located:
            ip = classify_source(source).ip or ""
            located[source] = (f"{ip}{VIA_ENDPOINT}{endpoint}" if endpoint else ip, location)
    moved = own + sum(len(records) for records, _ in foreign.values())
    if not moved:
        return 0
    left = skipped["source_private"] - moved
    if left:
        skipped["source_private"] = left
    else:
        del skipped["source_private"]
    if own:
        skipped["source_vpce_own"] += own
    change = own - moved
    for records, located in foreign.values():
        change += aggregate._count(records, skipped, account_hint, folder, located)
    return change
