"""Evidence factors: what an alert found beside the rarity of its location, and what each does to
its severity. One registry, so that each factor (a hosting address today; a new user agent, new
methods, an unusual hour, an MFA sign-in, a colleague's co-travel later) is named, weighed and
explained in one place, and every rendering shows the same words.

Severity comes from the score (``alert_builder.severity_for``: one level higher with a rare
sensitive method); each factor present adds its ``raises`` levels on top, up to critical. Factors
only ever raise: none lowers the severity of an alert the rarity raised (docs/scoring.md says why).

Imports: the standard library and pure modules of ``trailgeo.core`` (never ``core.render``, never
boto3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from trailgeo.core.alerts import MAX_LIST, Alert, Evidence, Network, Severity
from trailgeo.core.networks import MAX_ORGANIZATION, AsnInfo, hosting_provider, lookup_address
from trailgeo.core.text import plain

_LEVELS: tuple[Severity, ...] = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class EvidenceFactor:
    """A kind of evidence an alert may carry."""

    name: str  # stable: the alert's ``evidence[].factor``
    title: str  # how renderings name it
    raises: int  # severity levels it adds when present (0: shown, weighs nothing)
    description: str  # what it means and why it weighs what it weighs (docs/scoring.md)

    def __post_init__(self) -> None:
        if self.raises < 0:
            raise ValueError(f"evidence factor {self.name}: factors only raise a severity, never lower it")


HOSTING_PROVIDER = EvidenceFactor(
    name="hosting_provider",
    title="hosting provider",
    raises=1,
    description=(
        "A source address is in the network of a hosting or cloud provider (servers for rent), not "
        "a consumer or business access network: stolen keys are often used from a VPS or a cloud "
        "instance. One severity level up. A residential proxy defeats it, so its absence lowers nothing."
    ),
)

REGISTRY: Mapping[str, EvidenceFactor] = {factor.name: factor for factor in (HOSTING_PROVIDER,)}

AsnLookup = Callable[[str], AsnInfo | None]


def networks_of(addresses: Iterable[str], lookup: AsnLookup) -> list[Network]:
    """The autonomous system of each public address (at most ``MAX_LIST``), in order; addresses that
    are no public IP (host names, private ranges...) and those the database lacks are left out."""
    found: list[Network] = []
    for address in addresses:
        if len(found) >= MAX_LIST:
            break
        ip = lookup_address(address)
        asn = lookup(ip) if ip is not None else None
        if asn is None:
            continue
        found.append(
            Network(
                ip=ip or address,
                asn=asn.number,
                organization=plain(asn.organization, MAX_ORGANIZATION),
                hosting=hosting_provider(asn),
            )
        )
    return found


def hosting_evidence(networks: list[Network]) -> Evidence | None:
    """The hosting-provider factor, when a source address is in a hosting or cloud network."""
    hosted = [n for n in networks if n.hosting is not None]
    if not hosted:
        return None
    seen: dict[tuple[int, str], list[str]] = {}
    for n in hosted:
        seen.setdefault((n.asn, n.organization), []).append(n.ip)
    parts = [
        f"AS{asn} {organization} ({', '.join(ips[:3])}{' and more' if len(ips) > 3 else ''})"
        for (asn, organization), ips in list(seen.items())[:5]
    ]
    more = f" and {len(seen) - 5} more networks" if len(seen) > 5 else ""
    text = f"{HOSTING_PROVIDER.title}: " + "; ".join(parts) + more
    return Evidence(factor=HOSTING_PROVIDER.name, raises=HOSTING_PROVIDER.raises, text=text)


def raised(severity: Severity, levels: int) -> Severity:
    return _LEVELS[min(_LEVELS.index(severity) + max(0, levels), len(_LEVELS) - 1)]


def with_evidence(alert: Alert, networks: list[Network]) -> Alert:
    """``alert`` with the networks of its addresses and the factors they make present: each factor
    raises the severity by its levels (up to critical) and adds a line to the explanation."""
    found = [e for e in (hosting_evidence(networks),) if e is not None]
    if not networks and not found:
        return alert
    update: dict[str, object] = {"networks": networks, "evidence": [*alert.evidence, *found]}
    if found:
        update["severity"] = raised(alert.severity, sum(e.raises for e in found))
        update["explanation"] = (
            alert.explanation
            + "\n"
            + "\n".join(
                f"Evidence: {e.text} (severity raised {e.raises} level{'s' if e.raises != 1 else ''})."
                for e in found
            )
        )
    return alert.model_copy(update=update)
