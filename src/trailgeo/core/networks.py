"""Whose network an address is in: its autonomous system (AS number and organization, from an ASN
database through ``GeoResolver.asn``), and whether that is a hosting or cloud provider (servers for
rent: an attacker's VPS or cloud instance) rather than a consumer or business access network.

The providers are data, ``data/hosting_networks.json``: well-known hosting and cloud ASNs, each
checked against the ASN database the GeoIP layer ships, and organization-name patterns for the
same providers' other ASNs and for plainly named hosting companies ("... Hosting", "... Data
Center"). An AS that is neither is *not known as hosting*, which says nothing more: residential
proxies and VPNs on consumer lines look exactly like a person at home (docs/threat-model.md).

Pure: the standard library only.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

MAX_ORGANIZATION = 200  # characters of an organization name kept (the database's text)


@dataclass(frozen=True, slots=True)
class AsnInfo:
    """The autonomous system an address is announced from."""

    number: int
    organization: str

    @property
    def label(self) -> str:
        """``AS16509 Amazon.com, Inc.``: how an alert names it."""
        return f"AS{self.number} {self.organization}".strip()


@dataclass(frozen=True, slots=True)
class HostingNetworks:
    """The providers of ``data/hosting_networks.json``: by AS number, and by organization pattern."""

    by_number: dict[int, str]
    patterns: tuple[tuple[re.Pattern[str], str], ...]

    def provider(self, asn: AsnInfo | None) -> str | None:
        """The hosting or cloud provider an AS belongs to, None when it is not known as one."""
        if asn is None:
            return None
        known = self.by_number.get(asn.number)
        if known is not None:
            return known
        organization = asn.organization.casefold()
        for pattern, name in self.patterns:
            if pattern.search(organization):
                return name
        return None


def parse_hosting_networks(document: dict[str, object]) -> HostingNetworks:
    """The providers of a document shaped like ``data/hosting_networks.json``; ValueError otherwise."""
    providers = document.get("providers")
    patterns = document.get("organization_patterns")
    if not isinstance(providers, list) or not isinstance(patterns, list):
        raise TypeError("hosting networks: 'providers' and 'organization_patterns' must be lists")
    by_number: dict[int, str] = {}
    for entry in providers:
        name, numbers = entry.get("name"), entry.get("asns")
        if not isinstance(name, str) or not isinstance(numbers, list) or not numbers:
            raise ValueError(f"hosting networks: provider without a name or ASNs: {entry!r}")
        for number in numbers:
            if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 2**32:
                raise ValueError(f"hosting networks: {name}: not an AS number: {number!r}")
            if by_number.setdefault(number, name) != name:
                raise ValueError(f"hosting networks: AS{number} listed for two providers")
    compiled = tuple(
        (re.compile(str(entry["pattern"]), re.IGNORECASE), str(entry["name"])) for entry in patterns
    )
    return HostingNetworks(by_number, compiled)


@cache
def hosting_networks() -> HostingNetworks:
    text = resources.files("trailgeo").joinpath("data/hosting_networks.json").read_text(encoding="utf-8")
    return parse_hosting_networks(json.loads(text))


def hosting_provider(asn: AsnInfo | None) -> str | None:
    """The hosting or cloud provider of an AS (``data/hosting_networks.json``), else None."""
    return hosting_networks().provider(asn)


def lookup_address(text: str) -> str | None:
    """The address to look up for a source: an IPv4-mapped IPv6 form (``::ffff:1.2.3.4``) as its
    IPv4 address (the databases hold IPv4 under ::/96 only), a zone index dropped; None for what is
    no public address (a service host name, ``AWS Internal``, a private, loopback, link-local,
    reserved or multicast address), which has no AS to speak of."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address) if address.is_global and not address.is_multicast else None


@dataclass(frozen=True, slots=True)
class PublicAddress:
    """A source address that is a public one (``lookup_address``), with its autonomous system and
    whether a hosting or cloud provider's network holds it."""

    ip: str
    asn: AsnInfo | None  # None: no ASN database, or one that lacks the address
    hosting: bool

    @property
    def access(self) -> bool:
        """Whether it is an access network's (a consumer or business line, or one the ASN database
        lacks): where a person is, unlike a rented server or a VPN gateway on one."""
        return not self.hosting


def public_address(address: str, asn_of: Callable[[str], AsnInfo | None] | None) -> PublicAddress | None:
    """``address`` as a public address with its AS (``asn_of``: the ASN database's answer, when
    there is one) and whether it is a hosting provider's; None for what is no public address (the
    one place the detector decides whether a source is a server for rent or where a person is)."""
    ip = lookup_address(address)
    if ip is None:
        return None
    asn = asn_of(ip) if asn_of is not None else None
    return PublicAddress(ip, asn, hosting_provider(asn) is not None)
