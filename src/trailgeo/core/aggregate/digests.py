"""The within-run duplicate check: the same event delivered twice (two trails into one bucket) is
counted once. It keeps event-id digests: stable across processes (snapshots are merged
elsewhere), and below 2**60 so that CPython stores each in 32 bytes instead of 48."""

from __future__ import annotations

import binascii
import hashlib
import re
import sys
from array import array
from collections import Counter
from collections.abc import Sequence
from operator import attrgetter
from typing import cast

from trailgeo.core.records import TrailRecord

_EVENT_ID = attrgetter("eventID")
DIGEST_BITS = 60
_DIGEST_MASK = (1 << DIGEST_BITS) - 1
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID_DASHES = (8, 13, 18, 23)
_LOW_NIBBLE = bytes(value & 0x0F for value in range(256))


def event_digest(event_id: str) -> int:
    """A stable 60-bit digest of an ``eventID``.

    A canonical UUID (lower-case ``8-4-4-4-12`` hex, as CloudTrail writes them) is its 128 bits
    folded: the two 64-bit halves XORed, truncated to 60 bits. Anything else: BLAKE2b (8 bytes)
    of its UTF-8, truncated the same way.
    """
    if len(event_id) == 36 and _CANONICAL_UUID.fullmatch(event_id):
        value = int(event_id.replace("-", ""), 16)
        return ((value >> 64) ^ value) & _DIGEST_MASK
    blake = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(blake, "big") & _DIGEST_MASK


def event_digests(event_ids: Sequence[str | None]) -> list[int] | None:
    """``event_digest`` of each id, in bulk (C-level bytes and integer operations, no per-id
    Python) when every id is a canonical UUID, as in any file CloudTrail writes; None otherwise."""
    count = len(event_ids)
    if not count or None in event_ids:
        return None
    ids = cast("Sequence[str]", event_ids)
    try:
        text = "|".join(ids).encode("ascii")
    except UnicodeEncodeError:
        return None
    # Every id 36 characters with its dashes in place: the separators and dashes where they belong
    # and, below, exactly 32 hex digits per id once both are deleted (so none inside an id).
    if len(text) != 37 * count - 1 or text[36::37] != b"|" * (count - 1):
        return None
    dashes = b"-" * count
    if any(text[at::37] != dashes for at in _UUID_DASHES):
        return None
    digits = text.translate(None, b"-|")
    if not digits.islower():  # upper-case hex is not canonical (nor, here, an all-digit file)
        return None
    try:
        raw = binascii.unhexlify(digits)
    except binascii.Error:
        return None
    if len(raw) != 16 * count:
        return None
    units = memoryview(raw).cast("Q")  # 8-byte units, copied as bytes: their order is kept
    high, low = units[0::2].tobytes(), units[1::2].tobytes()  # each id's high and low 8 bytes
    folded = bytearray((int.from_bytes(high, "big") ^ int.from_bytes(low, "big")).to_bytes(8 * count, "big"))
    folded[0::8] = folded[0::8].translate(_LOW_NIBBLE)  # 60 bits: the top 4 of each digest cleared
    digests = array("Q", folded)
    if sys.byteorder == "little":
        digests.byteswap()
    return digests.tolist()


def all_new(seen: set[int], digests: list[int] | None) -> bool:
    """Whether these eventID digests (None: some id is not canonical) are all distinct and
    none in ``seen`` (the run's); if so, they are added to it."""
    if digests is None:
        return False
    fresh = set(digests)
    if len(fresh) != len(digests) or not seen.isdisjoint(fresh):
        return False
    seen.update(fresh)
    return True


def without_duplicates(
    seen: set[int], records: Sequence[TrailRecord], skipped: Counter[str]
) -> Sequence[TrailRecord]:
    """The records whose eventID this run has not seen (``seen``: their digests; a missing or empty
    id never matches), the others counted as ``duplicate_event``.

    The same event delivered twice (two trails into one bucket) is one event. One file of
    canonical UUIDs, none seen before, costs a few C-level set operations.
    """
    event_ids = list(map(_EVENT_ID, records))
    digests = event_digests(event_ids)
    if all_new(seen, digests):
        return records
    kept: list[TrailRecord] = []
    duplicates = 0
    for position, (record, event_id) in enumerate(zip(records, event_ids, strict=True)):
        if event_id:
            digest = digests[position] if digests is not None else event_digest(event_id)
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
        kept.append(record)
    if duplicates:
        skipped["duplicate_event"] += duplicates
    return kept
