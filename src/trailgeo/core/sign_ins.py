"""Sign-ins: who signed in, from which address, when, and whether with a phishing-resistant factor.
The ``mfa_sign_in`` evidence (core/evidence.MFA_SIGN_IN) reads those with a security key or passkey:
a person who has just signed in from a hotel with their own security key is the one calling from
that hotel. The ``session_elsewhere`` evidence (core/evidence.SESSION_ELSEWHERE) reads every
completed Identity Center sign-in, whatever its factor: a role session is opened from the access
portal session a sign-in began, so where the person signed in is where their sessions start.

Two kinds of record say so (``eventSource`` ``signin.amazonaws.com``):

* An IAM user's ``ConsoleLogin`` that succeeded (``responseElements.ConsoleLogin``) with
  ``MFAUsed`` ``Yes`` and an ``MFAIdentifier`` of a FIDO security key (``arn:...:u2f/...``).
* An IAM Identity Center sign-in: one sign-in is several records sharing an ``AuthWorkflowID``. The
  ``CredentialChallenge`` for the password names the user (``UserName``, given once per sign-in),
  a successful ``CredentialVerification`` of ``CredentialType`` ``WEBAUTHN`` proves the key, and
  ``UserAuthentication`` says the user was signed in. All three are needed, from one address; a
  workflow whose records are split between two runs vouches for nothing (more alerts, never fewer).

A one-time code (TOTP, SMS, e-mail) does not vouch: an adversary-in-the-middle page relays it from
the attacker's own address (such a sign-in is kept, ``phishing_resistant`` false, for where the
person's sessions began). Nor does a sign-in through an external identity provider
(``EXTERNAL_IDP``): the trail does not say which factor the provider asked for.

Identity Center's sign-in records are no API call (their ``userIdentity`` names no principal but
the type ``IdentityCenterUser``): ``is_identity_center_sign_in`` sets them apart from the counting
(``identity_center_sign_in``), where every user's sign-ins would be one made-up principal.

May import: the standard library, msgspec and pure modules of ``trailgeo.core``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from trailgeo.core.networks import AsnInfo, public_address
from trailgeo.core.records import TrailRecord
from trailgeo.core.text import plain

SIGN_IN_SOURCE = "signin.amazonaws.com"
IDENTITY_CENTER_USER = "IdentityCenterUser"
IDENTITY_CENTER_SIGN_IN_EVENTS = frozenset(
    {"CredentialChallenge", "CredentialVerification", "UserAuthentication"}
)
# The factors an adversary-in-the-middle cannot relay: FIDO2 security keys and passkeys.
PHISHING_RESISTANT = frozenset({"WEBAUTHN"})
SIGN_IN_SKIP = "identity_center_sign_in"  # the counted reason Identity Center's records are set apart
UNREADABLE_SIGN_IN = "sign_in_unreadable"  # a sign-in record whose details do not decode (still counted)
MAX_USER_NAME_CHARS = 256
MAX_FACTOR_CHARS = 32  # a credential type as shown (the record's to write)
# Workflows kept per run: a flood of challenges (anyone may type any user name at the sign-in page)
# must not grow a run's memory without bound; past this, new workflows are not followed (no vouch).
MAX_WORKFLOWS = 20_000


class _Details(msgspec.Struct, forbid_unknown_fields=False):
    CredentialType: str | None = None
    UserName: str | None = None
    AuthWorkflowID: str | None = None
    MFAUsed: str | None = None
    MFAIdentifier: str | None = None


class _ServiceOutcome(msgspec.Struct, forbid_unknown_fields=False):
    CredentialVerification: str | None = None
    UserAuthentication: str | None = None


class _ConsoleOutcome(msgspec.Struct, forbid_unknown_fields=False):
    ConsoleLogin: str | None = None


_details = msgspec.json.Decoder(_Details | None)
_service_outcome = msgspec.json.Decoder(_ServiceOutcome | None)
_console_outcome = msgspec.json.Decoder(_ConsoleOutcome | None)


@dataclass(frozen=True, slots=True)
class SignIn:
    """A person signed in from ``ip`` at ``event_time`` (an IAM user's console sign-ins only with a
    security key: theirs say nothing of where their access keys are used)."""

    identity: str  # whose history it joins: ``sso:<user>`` or an IAM user's ARN (identities.identity_of)
    ip: str
    country: str
    event_time: str
    credential: str  # what proved it: "security key (IAM user)", "WEBAUTHN (Identity Center)", ...
    phishing_resistant: bool = True  # a security key or passkey (mfa_sign_in vouches only for these)


def is_identity_center_sign_in(record: TrailRecord) -> bool:
    identity = record.userIdentity
    return (
        record.eventSource == SIGN_IN_SOURCE
        and record.eventName in IDENTITY_CENTER_SIGN_IN_EVENTS
        and identity is not None
        and identity.type == IDENTITY_CENTER_USER
        and not identity.arn
    )


@dataclass(slots=True)
class _Workflow:
    ip: str
    country: str
    user_name: str | None = None
    key_verified: bool = False
    factor: str | None = None  # the second factor verified (WEBAUTHN, TOTP, ...)
    authenticated_at: str | None = None
    other_address: bool = False


@dataclass(slots=True)
class SignInReader:
    """Follows one run's sign-in records (``add``, each with the address it was located at) and
    gives the phishing-resistant sign-ins they complete (``sign_ins``); ``unreadable`` counts the
    records whose details did not decode."""

    unreadable: int = 0
    _workflows: dict[str, _Workflow] = field(default_factory=dict)
    _completed: list[SignIn] = field(default_factory=list)

    def merge(self, sign_ins: list[SignIn]) -> None:
        """Sign-ins another reader completed (a fan-out worker's partial)."""
        self._completed.extend(sign_ins)

    def add(self, record: TrailRecord, ip: str, country: str, event_time: str) -> None:
        try:
            details = _details.decode(record.additionalEventData) if record.additionalEventData else None
        except msgspec.DecodeError:
            self.unreadable += 1
            return
        if details is None:
            return
        if record.eventName == "ConsoleLogin":
            self._console_login(record, details, (ip, country), event_time)
        elif is_identity_center_sign_in(record):
            self._identity_center(record, details, (ip, country), event_time)

    def _console_login(
        self, record: TrailRecord, details: _Details, source: tuple[str, str], event_time: str
    ) -> None:
        identity = record.userIdentity
        if identity is None or identity.type != "IAMUser" or not identity.arn or ":user/" not in identity.arn:
            return
        if details.MFAUsed != "Yes" or not details.MFAIdentifier or ":u2f/" not in details.MFAIdentifier:
            return
        try:
            outcome = _console_outcome.decode(record.responseElements) if record.responseElements else None
        except msgspec.DecodeError:
            self.unreadable += 1
            return
        if outcome is not None and outcome.ConsoleLogin == "Success" and not record.errorCode:
            self._completed.append(SignIn(identity.arn, *source, event_time, "security key (IAM user)"))

    def _identity_center(
        self, record: TrailRecord, details: _Details, source: tuple[str, str], event_time: str
    ) -> None:
        workflow_id = details.AuthWorkflowID
        if not workflow_id or len(workflow_id) > 128:
            return
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            if len(self._workflows) >= MAX_WORKFLOWS:
                return
            workflow = self._workflows[workflow_id] = _Workflow(*source)
        elif workflow.ip != source[0]:
            workflow.other_address = True  # one sign-in, two addresses: vouches for neither
        name = record.eventName
        if name == "CredentialChallenge":
            if details.UserName and details.CredentialType == "PASSWORD":
                workflow.user_name = details.UserName
            return
        try:
            outcome = (
                _service_outcome.decode(record.serviceEventDetails) if record.serviceEventDetails else None
            )
        except msgspec.DecodeError:
            self.unreadable += 1
            return
        if outcome is None or record.errorCode:
            return
        if name == "CredentialVerification":
            verified = outcome.CredentialVerification == "Success"
            if verified and details.CredentialType in PHISHING_RESISTANT:
                workflow.key_verified = True
            elif verified and details.CredentialType and details.CredentialType != "PASSWORD":
                workflow.factor = plain(details.CredentialType, MAX_FACTOR_CHARS)
        elif outcome.UserAuthentication == "Success":
            workflow.authenticated_at = event_time

    def sign_ins(self) -> list[SignIn]:
        """The run's completed sign-ins (``phishing_resistant`` says which vouch), in order of time."""
        found = list(self._completed)
        for workflow in self._workflows.values():
            name = workflow.user_name
            if (
                name
                and workflow.authenticated_at
                and not workflow.other_address
                and len(name) <= MAX_USER_NAME_CHARS
                and plain(name, MAX_USER_NAME_CHARS) == name
            ):
                factor = "WEBAUTHN" if workflow.key_verified else workflow.factor or "password"
                found.append(
                    SignIn(
                        f"sso:{name}",
                        workflow.ip,
                        workflow.country,
                        workflow.authenticated_at,
                        f"{factor} (Identity Center)",
                        workflow.key_verified,
                    )
                )
        return sorted(found, key=lambda s: (s.event_time, s.identity, s.ip))


def sign_in_network(address: str, country: str, asn_of: Callable[[str], AsnInfo | None] | None) -> str | None:
    """The network a sign-in from ``address`` (located in ``country``) vouches for: the country and
    autonomous system (``JP/AS4713``; ``asn_of``: the ASN database's answer), or for an address the
    database lacks (or with none) its /24 or /48 (``JP/202.248.0.0/24``); None for what is no public
    address. A hotel's or conference's Wi-Fi and the phone beside it share a country and a network,
    seldom an address. A hosting or cloud provider's address (a VPN gateway on a cloud instance)
    vouches for itself alone (``DE/3.120.0.1``): anyone rents the next one in that provider's AS."""
    found = public_address(address, asn_of)
    if found is None:
        return None
    if found.hosting:
        return f"{country}/{found.ip}"
    if found.asn is not None:
        return f"{country}/AS{found.asn.number}"
    prefix = 24 if ipaddress.ip_address(found.ip).version == 4 else 48
    return f"{country}/{ipaddress.ip_network(f'{found.ip}/{prefix}', strict=False)}"


def sign_in_places(address: str, country: str, asn_of: Callable[[str], AsnInfo | None]) -> tuple[str, ...]:
    """Where a sign-in from ``address`` (located in ``country``) says the person is: the country and
    the autonomous system (``("JP", "AS4713")``; the country alone for an address the ASN database
    lacks). Nothing for a hosting or cloud provider's address (a VPN gateway on a cloud instance
    says nothing of where the person is) or what is no public address."""
    found = public_address(address, asn_of)
    if found is None or found.hosting:
        return ()
    return (country, f"AS{found.asn.number}") if found.asn is not None else (country,)
