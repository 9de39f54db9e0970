"""Write the ASN database of the GeoIP layer: a MaxMind DB (.mmdb) from the CSV release of the npm
package @ip-location-db/asn (CC BY 4.0: RouteViews, DB-IP and the NRO), pinned in
requirements/geoip.mk.

The npm registry carries that data only as CSV (``start,end,asn,organization`` per line, IPv4
and IPv6 files); maxminddb reads it as an .mmdb in microseconds a lookup without holding 500,000
rows in memory, so the build converts it once. Records have GeoLite2-ASN's layout
(``autonomous_system_number``, ``autonomous_system_organization``), so a GeoLite2-ASN or GeoIP2-ISP
file is read by the same code. The output is a function of the input alone (build epoch from the
release's version), so a pinned release always gives the same bytes.

Usage: python3 asn_mmdb.py OUT.mmdb VERSION IPV4.csv [IPV6.csv]

Standard library only (it runs in `sam build`'s Python and in the Makefile's, before any venv).
The MaxMind DB format: https://maxmind.github.io/MaxMind-DB/ (search tree, data section,
metadata), written here for IPv6 with IPv4 at ::/96 as MaxMind's own databases do.
"""

from __future__ import annotations

import bisect
import csv
import ipaddress
import re
import sys
from calendar import timegm
from pathlib import Path

DATABASE_TYPE = "ip-location-db-ASN"
METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
BITS = 128
_MAX_ORGANIZATION = 200  # characters kept of an organization name
_VERSION = re.compile(r"^\d+\.\d+\.(\d{4})(\d{2})(\d{2})(\d{2})$")

# ---------------------------------------------------------------------------- data section encoding

_POINTER, _STRING, _UINT16, _UINT32, _MAP = 1, 2, 5, 6, 7
_UINT64, _ARRAY = 9, 11


def _control(kind: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        head, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        head, extra = 31, (size - 65821).to_bytes(3, "big")
    if kind < 8:
        return bytes([(kind << 5) | head]) + extra
    return bytes([head, kind - 7]) + extra  # extended type: type 0, then the type less 7


def encode(value: object, kind: int | None = None) -> bytes:
    """A value of the data section: str, dict (str keys), list, or int as ``kind`` says."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _control(_STRING, len(raw)) + raw
    if isinstance(value, dict):
        return _control(_MAP, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())
    if isinstance(value, list):
        return _control(_ARRAY, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, int):
        width = {_UINT16: 2, _UINT32: 4, _UINT64: 8}[kind or _UINT32]
        raw = value.to_bytes(width, "big").lstrip(b"\x00")
        return _control(kind or _UINT32, len(raw)) + raw
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Uint16(int):
    pass


class _Uint64(int):
    pass


def _encode_metadata(meta: dict[str, object]) -> bytes:
    out = [_control(_MAP, len(meta))]
    for key, value in meta.items():
        out.append(encode(key))
        if isinstance(value, _Uint16):
            out.append(encode(int(value), _UINT16))
        elif isinstance(value, _Uint64):
            out.append(encode(int(value), _UINT64))
        else:
            out.append(encode(value))
    return b"".join(out)


# ---------------------------------------------------------------------------- reading the CSV


def read_ranges(paths: list[Path]) -> list[tuple[int, int, int, str]]:
    """(first, last, asn, organization) in one 128-bit space (IPv4 at ::/96), sorted, without
    overlaps (a range overlapping the one before it is dropped: the first listed wins)."""
    rows: list[tuple[int, int, int, str]] = []
    for path in paths:
        with path.open(encoding="utf-8", newline="") as handle:
            for fields in csv.reader(handle):
                if len(fields) < 3 or not fields[2].strip().isdigit():
                    continue
                first, last = ipaddress.ip_address(fields[0]), ipaddress.ip_address(fields[1])
                if first.version != last.version or int(last) < int(first):
                    continue
                organization = (fields[3] if len(fields) > 3 else "").strip()[:_MAX_ORGANIZATION]
                rows.append((int(first), int(last), int(fields[2]), organization))
    rows.sort()
    kept: list[tuple[int, int, int, str]] = []
    for row in rows:
        if kept and row[0] <= kept[-1][1]:
            continue
        kept.append(row)
    return kept


# ---------------------------------------------------------------------------- the search tree


def build(ranges: list[tuple[int, int, int, str]], version: str) -> bytes:
    starts = [r[0] for r in ranges]
    ends = [r[1] for r in ranges]
    values: dict[tuple[int, str], int] = {}  # (asn, organization) -> index in data
    data: list[bytes] = []
    data_offset: list[int] = []
    size = 0
    for _, _, asn, organization in ranges:
        if (asn, organization) not in values:
            values[(asn, organization)] = len(data)
            blob = encode(
                {"autonomous_system_number": asn, "autonomous_system_organization": organization}
            )
            data.append(blob)
            data_offset.append(size)
            size += len(blob)
    value_of = [values[(r[2], r[3])] for r in ranges]

    left: list[int] = []
    right: list[int] = []
    EMPTY = -1  # noqa: N806 - placeholders, resolved once the node count is known

    def record(first: int, depth: int, lo: int, hi: int) -> int:
        """The record for the block of ``2**(BITS-depth)`` addresses at ``first``: EMPTY, a data
        placeholder ``-(2 + value index)`` or a node number. ``lo:hi`` bounds the ranges to look at."""
        last = first + (1 << (BITS - depth)) - 1
        lo = bisect.bisect_left(ends, first, lo, hi)
        hi = bisect.bisect_right(starts, last, lo, hi)
        if lo >= hi:
            return EMPTY
        if hi - lo == 1 and starts[lo] <= first and ends[lo] >= last:
            return -(2 + value_of[lo])
        node = len(left)
        left.append(EMPTY)
        right.append(EMPTY)
        half = 1 << (BITS - depth - 1)
        left[node] = record(first, depth + 1, lo, hi)
        right[node] = record(first + half, depth + 1, lo, hi)
        return node

    sys.setrecursionlimit(max(1000, BITS * 4))
    root = record(0, 0, 0, len(ranges))
    if root < 0:  # one range covering everything, or nothing: still a tree of one node
        left.append(root)
        right.append(root)
    node_count = len(left)

    def resolve(value: int) -> int:
        if value >= 0:
            return value
        if value == EMPTY:
            return node_count
        return node_count + 16 + data_offset[-value - 2]

    largest = node_count + 16 + size
    record_size = 24 if largest < 1 << 24 else 32
    width = record_size // 8
    tree = bytearray()
    for a, b in zip(left, right, strict=True):
        tree += resolve(a).to_bytes(width, "big") + resolve(b).to_bytes(width, "big")

    meta = {
        "binary_format_major_version": _Uint16(2),
        "binary_format_minor_version": _Uint16(0),
        "build_epoch": _Uint64(_epoch(version)),
        "database_type": DATABASE_TYPE,
        "description": {
            "en": f"ASN of IP addresses: npm @ip-location-db/asn@{version} (RouteViews, DB-IP, NRO; "
            "CC BY 4.0), converted to MaxMind DB by trailgeo"
        },
        "ip_version": _Uint16(6),
        "languages": ["en"],
        "node_count": node_count,
        "record_size": _Uint16(record_size),
    }
    return bytes(tree) + b"\x00" * 16 + b"".join(data) + METADATA_MARKER + _encode_metadata(meta)


def _epoch(version: str) -> int:
    """The release's date (``2.3.YYYYMMDDHH``) as seconds since 1970, so the bytes are reproducible;
    1 for a version without a date (maxminddb's C reader refuses a database built at 0)."""
    match = _VERSION.match(version)
    if match is None:
        return 1
    year, month, day, hour = (int(g) for g in match.groups())
    return timegm((year, month, day, hour, 0, 0, 0, 0, 0))


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, version, inputs = Path(argv[1]), argv[2], [Path(p) for p in argv[3:]]
    ranges = read_ranges(inputs)
    if not ranges:
        print(f"asn_mmdb.py: no ASN range in {', '.join(map(str, inputs))}", file=sys.stderr)
        return 1
    blob = build(ranges, version)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    print(f"asn_mmdb.py: {len(ranges)} ranges -> {out} ({len(blob)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
