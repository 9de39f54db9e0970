"""Turning an object's bytes into a JSON document, with a hard cap on decompressed size."""

from __future__ import annotations

from isal import isal_zlib

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_DECOMPRESSED = 512 * 1024 * 1024  # a gzip bomb stops here, not at the Lambda's memory


class UnreadablePayloadError(ValueError):
    """The object cannot be turned into a document; ``reason`` is a metric-friendly word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decompress(data: bytes, *, name: str, limit: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """Inflate a ``.gz`` object (ISA-L, several times faster than zlib); plain ``.json`` passes through."""
    if not data.startswith(GZIP_MAGIC):
        if name.endswith(".gz"):
            raise UnreadablePayloadError("not_gzip", f"{len(data)} bytes without a gzip header")
        if len(data) > limit:
            raise UnreadablePayloadError("too_large", f"{len(data)} bytes > {limit}")
        return data
    parts: list[bytes] = []
    size = 0
    remaining = data
    # A gzip file may hold several members one after another (as `gzip -d` reads them).
    while remaining:
        inflater = isal_zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(remaining, limit + 1 - size)
        except (isal_zlib.error, ValueError) as exc:  # type: ignore[misc]
            raise UnreadablePayloadError("corrupt_gzip", str(exc)) from exc
        size += len(out)
        if size > limit:
            raise UnreadablePayloadError("too_large", f"decompresses to more than {limit} bytes")
        if not inflater.eof:
            raise UnreadablePayloadError("truncated_gzip", "stream ends before the gzip trailer")
        parts.append(out)
        remaining = inflater.unused_data
        if remaining and not remaining.startswith(GZIP_MAGIC):
            if remaining.strip(b"\x00"):
                raise UnreadablePayloadError(
                    "corrupt_gzip", f"{len(remaining)} trailing bytes after the gzip data"
                )
            break  # zero padding after the last member, as some writers leave
    return b"".join(parts)
