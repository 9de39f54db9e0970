"""Decoding CloudTrail delivery files into the few fields the detector uses.

A delivery file is ``{"Records": [...]}``. The fast path decodes the whole file with typed
msgspec structs that name only the fields we read (everything else is skipped by the decoder,
never materialised). When a file contains one malformed record, msgspec rejects the whole
document, so the slow path decodes record by record and counts what it had to skip: one bad
record never costs the rest of the file.
"""

from __future__ import annotations

import codecs
import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import msgspec

# Hostile strings (a 1 MB userAgent) are cut before they reach tables or alerts.
MAX_FIELD_CHARS = 1024
# Invalid UTF-8 is repaired a chunk at a time; each bad byte grows by 2 (U+FFFD is 3 bytes). A real
# file has a handful; a file that would grow by more is hostile and refused (invalid_json).
_UTF8_CHUNK = 1 << 20
MAX_UTF8_REPAIR_GROWTH = 16 << 20

# More records than a delivery file holds: the file is skipped whole (too_many_records). The real
# corpora (../shared/data/cloudtrail, 3,932 files) hold 622 records a file at most, 6 at the median;
# the benchmark's busiest deliveries 10,000 (docs/performance.md): 100,000 leaves a margin of 10
# over those and takes about 140 MB decoded. Issue 13's 29 KB object held 10 million "{}".
MAX_RECORDS_PER_FILE = 100_000
# What decoding one file may take besides the document, estimated from its counts of "{" and ","
# before any decoding, so that a file too costly is refused, not decoded (docs/threat-model.md). A
# "{" is at most one record or identity struct with its list slot (121 B measured, 13 fields), a
# "," at most one short string of a declared field (56 B, 16 at most a struct); the slow path holds
# a raw value per element, or a generic key, value and dict entry, per ",". 10 million "{}" took
# 1.15 GB. Real files come to 2.8 KB a record estimated (6.1 "{" and 32.5 "," a record in the
# corpora, 1.4 KB measured): 384 MiB admits 120,000 to 140,000 records, 70,000 on the slow path.
MAX_DECODE_BYTES = 384 * 1024 * 1024
_STRUCT_BYTES, _STRING_BYTES, _STRINGS_PER_STRUCT, _GENERIC_VALUE_BYTES = 160, 56, 16, 160
# "{}," is the costliest JSON a byte (272 B estimated for 3 bytes; a valid document has 3 bytes or
# more a "{"): a file this small cannot go over the budget, and nearly every file is this small,
# so the counts (0.8 ms a MB each, measured) are made only above it.
_COUNTED_ABOVE = MAX_DECODE_BYTES // 91


# The record structs are decoded by the million and never form reference cycles (strings and one
# nested struct): ``gc=False`` keeps them out of the cyclic collector's lists altogether. Only the
# fields something reads are declared; msgspec skips the others without materialising them (the
# identity's ``sessionContext`` was decoded into two nested structs per record and never read).


class UserIdentity(msgspec.Struct, forbid_unknown_fields=False, frozen=True, gc=False):
    """Frozen, so hashable: the aggregate keys its per-event cache on it (``RunAggregate``)."""

    type: str | None = None
    arn: str | None = None
    principalId: str | None = None  # noqa: N815
    accountId: str | None = None  # noqa: N815
    accessKeyId: str | None = None  # noqa: N815
    userName: str | None = None  # noqa: N815 - not read; declared so a wrong type is still counted
    invokedBy: str | None = None  # noqa: N815


class TrailRecord(msgspec.Struct, forbid_unknown_fields=False, gc=False):
    """One CloudTrail event, reduced to what detection and alerts need."""

    eventTime: str | None = None  # noqa: N815
    eventSource: str | None = None  # noqa: N815
    eventName: str | None = None  # noqa: N815
    sourceIPAddress: str | None = None  # noqa: N815
    userAgent: str | None = None  # noqa: N815
    userIdentity: UserIdentity | None = None  # noqa: N815
    recipientAccountId: str | None = None  # noqa: N815
    awsRegion: str | None = None  # noqa: N815
    eventID: str | None = None  # noqa: N815
    eventType: str | None = None  # noqa: N815
    errorCode: str | None = None  # noqa: N815
    vpcEndpointId: str | None = None  # noqa: N815
    vpcEndpointAccountId: str | None = None  # noqa: N815 - the endpoint's owner (sources.endpoint_location)
    # "Management", "Data", "NetworkActivity" (events.category_reasons); absent from older records
    eventCategory: str | None = None  # noqa: N815
    # Kept undecoded (a slice of the file, empty when absent): only sign-in records' are ever read
    # (core/sign_ins.py), so no other record pays for their contents.
    additionalEventData: msgspec.Raw = msgspec.Raw()  # noqa: N815
    responseElements: msgspec.Raw = msgspec.Raw()  # noqa: N815
    serviceEventDetails: msgspec.Raw = msgspec.Raw()  # noqa: N815


class _TrailFile(msgspec.Struct, gc=False):
    Records: list[TrailRecord]


class _RawTrailFile(msgspec.Struct):
    Records: list[msgspec.Raw]


_file_decoder = msgspec.json.Decoder(_TrailFile)
_raw_file_decoder = msgspec.json.Decoder(_RawTrailFile)
_record_decoder = msgspec.json.Decoder(TrailRecord)
_any_decoder = msgspec.json.Decoder()


class MalformedFileError(ValueError):
    """The object is not a CloudTrail ``{"Records": [...]}`` document at all."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class DecodedFile:
    records: list[TrailRecord]
    skipped: Counter[str] = field(default_factory=Counter)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic collector out of bulk decoding: millions of fresh objects, no cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def decode_trail_file(data: bytes) -> DecodedFile:
    """Decode an uncompressed delivery file.

    Raises MalformedFileError when the document is not JSON, not an object, or has no
    ``Records`` list, or holds more than a delivery file (``too_many_records``: over
    MAX_RECORDS_PER_FILE records, or too costly to decode, refused before decoding); otherwise
    returns every record that decodes and counts the others.
    """
    if len(data) > _COUNTED_ABOVE:
        braces = data.count(b"{")
        if (_STRUCT_BYTES + _STRING_BYTES * _STRINGS_PER_STRUCT) * braces > MAX_DECODE_BYTES:
            commas = data.count(b",")  # only where the strings might take it over the budget
            strings = min(commas + braces, _STRINGS_PER_STRUCT * braces)
            estimate = _STRUCT_BYTES * braces + _STRING_BYTES * strings
            _within_budget(estimate, f'{braces:,} "{{" and {commas:,} ","')
    repaired = _repair_utf8(data)
    decoded = _decode_valid_utf8(data if repaired is None else repaired)
    if repaired is not None:
        decoded.skipped["invalid_utf8_replaced"] += 1
    if len(decoded.records) > MAX_RECORDS_PER_FILE:
        raise MalformedFileError("too_many_records", f"{len(decoded.records):,} > {MAX_RECORDS_PER_FILE:,}")
    return decoded


def _within_budget(estimate: int, counted: str) -> None:
    if estimate > MAX_DECODE_BYTES:
        raise MalformedFileError(
            "too_many_records",
            f"{counted}: decoding would take about {estimate >> 20:,} MiB, over the budget",
        )


def _repair_utf8(data: bytes) -> bytearray | None:
    """The file with U+FFFD for each invalid UTF-8 sequence, or None when it is valid.

    Checked here rather than left to the decoder: decoders disagree (msgspec 0.22 raises
    UnicodeDecodeError, 0.23 a DecodeError indistinguishable from invalid JSON, and neither looks
    inside the fields it skips), and one bad byte must never cost the file's other records. Trail files
    are almost always ASCII, which ``isascii`` confirms without a copy. Otherwise the file is read in
    chunks, so that neither the check nor the repair holds the file as text (up to 4 bytes a
    character): a repair adds at most ``MAX_UTF8_REPAIR_GROWTH`` bytes, else the file is refused.
    """
    if data.isascii():
        return None
    check = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        for chunk, final in _utf8_chunks(data):
            check.decode(chunk, final=final)
    except UnicodeDecodeError:
        pass
    else:
        return None
    repair = codecs.getincrementaldecoder("utf-8")("replace")
    repaired = bytearray()
    for chunk, final in _utf8_chunks(data):
        repaired += repair.decode(chunk, final=final).encode()
        if len(repaired) > len(data) + MAX_UTF8_REPAIR_GROWTH:
            raise MalformedFileError("invalid_json", "invalid UTF-8 throughout: not a delivery file")
    return repaired


def _utf8_chunks(data: bytes) -> Iterator[tuple[memoryview, bool]]:
    view = memoryview(data)
    for start in range(0, len(data), _UTF8_CHUNK):
        yield view[start : start + _UTF8_CHUNK], start + _UTF8_CHUNK >= len(data)


def _decode_valid_utf8(data: bytes | bytearray) -> DecodedFile:
    try:
        return DecodedFile(records=_file_decoder.decode(data).Records)
    except msgspec.ValidationError:
        pass  # some record is malformed (or the shape is wrong): sort it out below
    except msgspec.DecodeError as exc:
        raise MalformedFileError("invalid_json", str(exc)) from exc
    except RecursionError as exc:
        raise MalformedFileError("too_deep", "JSON nested deeper than the decoder follows") from exc
    try:
        return _decode_slowly(data)
    except RecursionError as exc:
        raise MalformedFileError("too_deep", "JSON nested deeper than the decoder follows") from exc


def _decode_slowly(data: bytes | bytearray) -> DecodedFile:
    commas = data.count(b",")  # a value each, at most: bounded before they are held one by one
    _within_budget(_GENERIC_VALUE_BYTES * (commas + 1), f'{commas:,} "," on the slow path')
    try:
        raw_records = _raw_file_decoder.decode(data).Records
    except msgspec.ValidationError:
        try:
            document = _any_decoder.decode(data)
        except msgspec.DecodeError as exc:  # pragma: no cover - the fast path saw valid JSON
            raise MalformedFileError("invalid_json", str(exc)) from exc
        if not isinstance(document, dict):
            raise MalformedFileError("not_an_object", type(document).__name__) from None
        if "Records" not in document:
            raise MalformedFileError("no_records_key", ",".join(sorted(map(str, document))[:10])) from None
        raise MalformedFileError("records_not_a_list", type(document["Records"]).__name__) from None
    decoded = DecodedFile(records=[])
    for raw in raw_records:
        try:
            decoded.records.append(_record_decoder.decode(raw))
        except msgspec.ValidationError:
            decoded.records.extend(_salvage(raw, decoded.skipped))
    return decoded


_STRING_FIELDS = (
    "eventTime",
    "eventSource",
    "eventName",
    "sourceIPAddress",
    "userAgent",
    "recipientAccountId",
    "awsRegion",
    "eventID",
    "eventType",
    "errorCode",
    "vpcEndpointId",
    "vpcEndpointAccountId",
    "eventCategory",
)
_IDENTITY_FIELDS = ("type", "arn", "principalId", "accountId", "accessKeyId", "userName", "invokedBy")


def _salvage(raw: msgspec.Raw, skipped: Counter[str]) -> list[TrailRecord]:
    """Keep a record whose optional fields have the wrong type, dropping only those fields."""
    value = _any_decoder.decode(raw)
    if not isinstance(value, dict):
        skipped["record_not_object"] += 1
        return []
    kwargs: dict[str, object] = {}
    for name in _STRING_FIELDS:
        item = value.get(name)
        if isinstance(item, str):
            kwargs[name] = item
        elif item is not None:
            skipped["field_wrong_type"] += 1
    identity = value.get("userIdentity")
    if isinstance(identity, dict):
        id_kwargs = {k: identity[k] for k in _IDENTITY_FIELDS if isinstance(identity.get(k), str)}
        skipped["field_wrong_type"] += sum(
            1 for k in _IDENTITY_FIELDS if identity.get(k) is not None and not isinstance(identity[k], str)
        )
        kwargs["userIdentity"] = UserIdentity(**id_kwargs)
    elif identity is not None:
        skipped["field_wrong_type"] += 1
    return [TrailRecord(**kwargs)]  # type: ignore[arg-type]


def clip(value: str | None, limit: int = MAX_FIELD_CHARS) -> str | None:
    """Cut attacker-controlled strings to at most ``limit`` bytes of UTF-8 (``limit`` characters
    of ASCII), marking the cut. Bytes, because DynamoDB bounds keys in bytes (2,048 a partition
    key, 1,024 a sort key): 512 characters of 4-byte emoji in a principal were an item it refuses."""
    if value is None or (len(value) <= limit and value.isascii()):
        return value
    encoded = value[:limit].encode("utf-8", "surrogatepass")
    if len(value) <= limit and len(encoded) <= limit:
        return value
    return encoded[:limit].decode("utf-8", "ignore") + "…[truncated]"
