"""Decoding delivery files: the fast typed path, the record-by-record fallback, and bad shapes."""

from __future__ import annotations

import gzip
import json

import pytest

from trailgeo.core.payload import UnreadablePayloadError, decompress
from trailgeo.core.records import MAX_FIELD_CHARS, MalformedFileError, clip, decode_trail_file


def test_given_a_well_formed_file_when_decoded_then_only_the_needed_fields_are_kept() -> None:
    data = json.dumps(
        {
            "Records": [
                {
                    "eventTime": "2021-07-29T23:53:26Z",
                    "eventSource": "lambda.amazonaws.com",
                    "eventName": "ListFunctions20150331",
                    "sourceIPAddress": "96.253.26.224",
                    "userAgent": "console.amazonaws.com",
                    "userIdentity": {
                        "type": "Root",
                        "arn": "arn:aws:iam::342082656213:root",
                        "accessKeyId": "ASIA1",
                    },
                    "recipientAccountId": "342082656213",
                    "requestParameters": {"huge": "x" * 10_000},
                }
            ]
        }
    ).encode()

    decoded = decode_trail_file(data)

    assert len(decoded.records) == 1
    rec = decoded.records[0]
    assert (rec.eventSource, rec.eventName, rec.sourceIPAddress) == (
        "lambda.amazonaws.com",
        "ListFunctions20150331",
        "96.253.26.224",
    )
    assert rec.userIdentity is not None
    assert rec.userIdentity.arn == "arn:aws:iam::342082656213:root"
    assert not hasattr(rec, "requestParameters")
    assert decoded.skipped == {}


def test_given_one_record_with_wrong_types_when_decoded_then_the_others_survive_and_it_is_counted() -> None:
    data = json.dumps(
        {
            "Records": [
                {"eventName": "A", "eventSource": "s3.amazonaws.com", "sourceIPAddress": 12345},
                "not an object",
                None,
                {"eventName": "B", "eventSource": "s3.amazonaws.com", "userIdentity": "oops"},
                {
                    "eventName": "C",
                    "eventSource": "s3.amazonaws.com",
                    "userIdentity": {"arn": 7, "type": "IAMUser"},
                },
            ]
        }
    ).encode()

    decoded = decode_trail_file(data)

    assert [r.eventName for r in decoded.records] == ["A", "B", "C"]
    assert decoded.records[0].sourceIPAddress is None
    assert decoded.records[2].userIdentity is not None
    assert decoded.records[2].userIdentity.type == "IAMUser"
    assert decoded.records[2].userIdentity.arn is None
    # sourceIPAddress 12345, userIdentity "oops", userIdentity.arn 7
    assert decoded.skipped == {"record_not_object": 2, "field_wrong_type": 3}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"records": []}', "no_records_key"),
        (b'{"Records": {"a": 1}}', "records_not_a_list"),
        (b"\xff\xfe\x00", "invalid_json"),
    ],
)
def test_given_a_document_that_is_not_a_trail_file_then_a_clear_error_names_the_reason(
    payload: bytes, reason: str
) -> None:
    with pytest.raises(MalformedFileError) as caught:
        decode_trail_file(payload)
    assert caught.value.reason == reason


def test_given_an_empty_records_list_then_nothing_is_decoded_and_nothing_skipped() -> None:
    decoded = decode_trail_file(b'{"Records": []}')
    assert decoded.records == []
    assert decoded.skipped == {}


def test_given_a_huge_attacker_string_then_clip_bounds_it_visibly() -> None:
    clipped = clip("A" * 1_000_000)
    assert clipped is not None
    assert len(clipped) == MAX_FIELD_CHARS + len("…[truncated]")
    assert clipped.endswith("…[truncated]")
    assert clip("short") == "short"
    assert clip(None) is None


def test_given_gzip_and_plain_objects_then_both_decompress_and_bad_ones_have_reasons() -> None:
    body = b'{"Records": []}'
    assert decompress(gzip.compress(body), name="x.json.gz") == body
    assert decompress(body, name="x.json") == body
    with pytest.raises(UnreadablePayloadError) as not_gzip:
        decompress(body, name="x.json.gz")
    assert not_gzip.value.reason == "not_gzip"
    with pytest.raises(UnreadablePayloadError) as truncated:
        decompress(gzip.compress(body * 100)[:-12], name="x.json.gz")
    assert truncated.value.reason == "truncated_gzip"
    with pytest.raises(UnreadablePayloadError) as corrupt:
        decompress(b"\x1f\x8b" + b"\x00" * 40, name="x.json.gz")
    assert corrupt.value.reason == "corrupt_gzip"


def test_given_a_gzip_bomb_then_decompression_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KiB
    with pytest.raises(UnreadablePayloadError) as caught:
        decompress(bomb, name="bomb.json.gz", limit=1024 * 1024)
    assert caught.value.reason == "too_large"


def _record_bytes(ip: str, **raw_fields: bytes) -> bytes:
    fields = b",".join(b'"%s":"%s"' % (name.encode(), value) for name, value in raw_fields.items())
    return (
        b'{"eventTime":"2026-11-02T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject",'
        b'"sourceIPAddress":"' + ip.encode() + b'"' + (b"," + fields if fields else b"") + b"}"
    )


# One bad byte in a field the detector reads, one in a field it skips: the locked decoder treats
# the two differently (below), and the file must come out the same either way.
_BAD_IN_READ_FIELD = _record_bytes("81.2.69.160", userAgent=b"aws-cli/2 \xff\xfe")
_BAD_IN_SKIPPED_FIELD = _record_bytes("81.2.69.161", requestParameters=b"\xc3(")
_GOOD = _record_bytes("81.2.69.162", userAgent="aws-cli/2 né".encode())


def test_given_the_locked_msgspec_then_it_rejects_invalid_utf8_only_in_fields_it_reads() -> None:
    # The premise of the test below, measured on the decoder we ship. If an upgrade changes it,
    # this names the change; decode_trail_file must not care either way.
    import msgspec

    from trailgeo.core.records import TrailRecord

    with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
        msgspec.json.decode(_BAD_IN_READ_FIELD, type=TrailRecord)
    assert msgspec.json.decode(_BAD_IN_SKIPPED_FIELD, type=TrailRecord).sourceIPAddress == "81.2.69.161"


@pytest.mark.parametrize(
    ("bad", "bad_ip"),
    [(_BAD_IN_READ_FIELD, "81.2.69.160"), (_BAD_IN_SKIPPED_FIELD, "81.2.69.161")],
    ids=["read_field", "skipped_field"],
)
def test_given_invalid_utf8_in_a_record_when_decoded_then_every_record_counts_whatever_the_decoder_does(
    bad: bytes, bad_ip: str
) -> None:
    # Given a file whose middle record carries invalid UTF-8 between two good ones
    data = b'{"Records":[' + _GOOD + b"," + bad + b"," + _GOOD + b"]}"

    # When it is decoded
    decoded = decode_trail_file(data)

    # Then all three records count, the repair is counted once, and bad bytes read as U+FFFD
    assert [r.sourceIPAddress for r in decoded.records] == ["81.2.69.162", bad_ip, "81.2.69.162"]
    assert decoded.skipped == {"invalid_utf8_replaced": 1}
    assert decoded.records[0].userAgent == "aws-cli/2 né"
    if bad is _BAD_IN_READ_FIELD:
        assert decoded.records[1].userAgent == "aws-cli/2 \ufffd\ufffd"


def test_given_valid_non_ascii_utf8_when_decoded_then_nothing_is_counted_as_repaired() -> None:
    decoded = decode_trail_file(b'{"Records":[' + _GOOD + b"]}")

    assert decoded.skipped == {}
    assert decoded.records[0].userAgent == "aws-cli/2 né"


def test_given_a_file_of_invalid_utf8_throughout_when_decoded_then_it_is_refused_not_tripled() -> None:
    # Given a record whose user agent is 20 MiB of bytes that are never UTF-8 (each would become 3)
    data = b'{"Records":[' + _record_bytes("81.2.69.160", userAgent=b"\xff" * (20 << 20)) + b"]}"

    # When it is decoded, then it is refused as a whole, naming why
    with pytest.raises(MalformedFileError) as refused:
        decode_trail_file(data)
    assert refused.value.reason == "invalid_json"
    assert "UTF-8" in refused.value.detail


def test_given_a_large_non_ascii_file_with_one_bad_byte_when_repaired_then_it_is_never_held_as_text() -> None:
    import tracemalloc

    # Given 16 MiB of 4-byte characters (text would take 4 bytes each) and one invalid byte
    emoji = "\U0001f600".encode() * (4 << 20)
    data = b'{"Records":[' + _record_bytes("81.2.69.160", userAgent=emoji + b"\xff") + b"]}"

    # When only the repair runs, under tracemalloc
    from trailgeo.core import records

    tracemalloc.start()
    try:
        repaired = records._repair_utf8(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Then it holds the repaired copy and a chunk, not the file as text as well
    assert repaired is not None
    assert repaired.endswith(b'\xef\xbf\xbd"}]}')
    assert peak < len(data) * 1.5, f"{peak >> 20} MiB for a {len(data) >> 20} MiB file"
