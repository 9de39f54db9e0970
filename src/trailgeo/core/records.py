"""Decoding CloudTrail delivery files into the few fields the detector uses.

A delivery file is ``{"Records": [...]}``. The fast path decodes the whole file with typed
msgspec structs that name only the fields we read (everything else is skipped by the decoder,
never materialised). When a file contains one malformed record, msgspec rejects the whole
document, so the slow path decodes record by record and counts what it had to skip: one bad
record never costs the rest of the file.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import msgspec

# Hostile strings (a 1 MB userAgent) are cut before they reach tables or alerts.
MAX_FIELD_CHARS = 1024


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
    ``Records`` list; otherwise returns every record that decodes and counts the others.
    """
    repaired = _repair_utf8(data)
    if repaired is not None:
        decoded = _decode_valid_utf8(repaired)
        decoded.skipped["invalid_utf8_replaced"] += 1
        return decoded
    return _decode_valid_utf8(data)


def _repair_utf8(data: bytes) -> bytes | None:
    """The file with U+FFFD for each invalid UTF-8 sequence, or None when it is valid.

    Checked here rather than left to the decoder: decoders disagree (msgspec 0.22 raises
    UnicodeDecodeError, 0.23 a DecodeError indistinguishable from invalid JSON, and neither looks
    inside the fields it skips), and one bad byte must never cost the file's other records. Trail files
    are almost always ASCII, which ``isascii`` confirms without a copy.
    """
    if data.isascii():
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace").encode("utf-8")
    return None


def _decode_valid_utf8(data: bytes) -> DecodedFile:
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


def _decode_slowly(data: bytes) -> DecodedFile:
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
    """Cut attacker-controlled strings to a bounded length, marking the cut."""
    if value is None or len(value) <= limit:
        return value
    return value[:limit] + "…[truncated]"
