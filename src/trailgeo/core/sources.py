"""Classifying CloudTrail's ``sourceIPAddress`` before any geolocation.

Only a public IP address can be geolocated and scored. Everything else is a reason to skip,
counted per reason so that operators can see what was not scored and why; but a private address
behind a VPC endpoint of an account outside the organization is scored from that endpoint
(``endpoint_location``; the aggregate decides, knowing the file's account).
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple


class SourceKind(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"  # RFC 1918, ULA, shared address space: VPC endpoints, on-prem via DX
    SPECIAL = "special"  # loopback, link-local, multicast, documentation, reserved, unspecified
    SERVICE_HOST = "service_host"  # "ec2.amazonaws.com": an AWS service acting for the caller
    AWS_INTERNAL = "aws_internal"  # the literal "AWS Internal"
    HOSTNAME = "hostname"  # some other DNS name
    INVALID = "invalid"  # unparseable: "253.252.51.07", "not-an-ip", overlong
    MISSING = "missing"  # field absent or empty


# Where a call came from when it is no country, scored like one with a history of its own: a public
# address the GeoIP database has no country for, and a VPC endpoint of an account outside the
# organization (aggregate.RunAggregate). Neither can be taken for an ISO 3166 code (two capitals).
UNKNOWN_LOCATION = "unknown"
ENDPOINT_LOCATION_PREFIX = "VPCE:"
_ACCOUNT_ID = re.compile(r"\d{12}")
# A source behind a VPC endpoint, as the aggregate keeps it: "<address> via <endpoint id>".
VIA_ENDPOINT = " via "


def endpoint_location(account: str) -> str:
    """The location of calls through a VPC endpoint of ``account``. A value that is no account id
    (only a forged record has one) gets one shared location, never a counter key of its own."""
    return ENDPOINT_LOCATION_PREFIX + (account if _ACCOUNT_ID.fullmatch(account) else "other")


def endpoint_account(location: str) -> str | None:
    """The account of an endpoint location (``VPCE:<account>``), None for any other location."""
    prefix = ENDPOINT_LOCATION_PREFIX
    return location[len(prefix) :] if location.startswith(prefix) else None


class SourceClass(NamedTuple):
    kind: SourceKind
    ip: str | None  # canonical text of the address when it is one


_MAX_SOURCE_CHARS = 255  # longest DNS name


# Sources classified, remembered across runs in one process (a replay, a warm Lambda): parsing an
# address costs more than the rest of an event's counting, and a run of small files meets each of
# its few hundred addresses anew. Bounded: a value longer than a DNS name is never kept (it is
# cheap to refuse anyway), and at most this many are, the least recently used dropped first; the
# answer is a function of the text alone, so a flood of made-up values only costs time.
SOURCE_CACHE_ENTRIES = 4096


def classify_source(value: str | None) -> SourceClass:
    """Say what a ``sourceIPAddress`` is; the canonical IP text when it is an address."""
    if value and len(value) <= _MAX_SOURCE_CHARS:
        return _classify_remembered(value)
    return _classify(value)


def _classify(value: str | None) -> SourceClass:
    if not value:
        return SourceClass(SourceKind.MISSING, None)
    if value == "AWS Internal":
        return SourceClass(SourceKind.AWS_INTERNAL, None)
    if len(value) > _MAX_SOURCE_CHARS:
        return SourceClass(SourceKind.INVALID, None)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return _classify_name(value)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # "::ffff:1.2.3.4" is 1.2.3.4 on the wire
    text = str(address)
    if address.is_multicast:
        return SourceClass(SourceKind.SPECIAL, text)  # Python's is_global says True for some
    if address.is_global:
        return SourceClass(SourceKind.PUBLIC, text)
    if address.is_private and not _is_special(address):
        return SourceClass(SourceKind.PRIVATE, text)
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE:
        return SourceClass(SourceKind.PRIVATE, text)
    return SourceClass(SourceKind.SPECIAL, text)


_classify_remembered = lru_cache(maxsize=SOURCE_CACHE_ENTRIES)(_classify)

_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_PRIVATE_V4 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_ULA_V6 = ipaddress.IPv6Network("fc00::/7")


def _is_special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """``is_private`` also covers loopback, link-local, documentation: those are not a VPC."""
    if isinstance(address, ipaddress.IPv4Address):
        return not any(address in net for net in _PRIVATE_V4)
    return address not in _ULA_V6


def _classify_name(value: str) -> SourceClass:
    lowered = value.lower()
    if lowered.endswith((".amazonaws.com", ".amazonaws.com.cn", ".amazon.com")):
        return SourceClass(SourceKind.SERVICE_HOST, None)
    if _looks_like_hostname(lowered):
        return SourceClass(SourceKind.HOSTNAME, None)
    return SourceClass(SourceKind.INVALID, None)


def _looks_like_hostname(value: str) -> bool:
    labels = value.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False  # "253.252.51.07" and friends are broken addresses, not names
    return all(0 < len(label) <= 63 and label.replace("-", "").isalnum() for label in labels)
