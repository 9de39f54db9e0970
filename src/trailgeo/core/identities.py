"""Who a call belongs to: the person, the role, the principal (pure; no AWS access)."""

from __future__ import annotations

import hashlib
from functools import lru_cache

_SSO_ROLE = "assumed-role/AWSReservedSSO_"
# A run asks who each principal is for every counter, group and subject it makes: the answers for
# the principals met most recently are kept per process (a replay, a warm Lambda). Principals are
# clipped to 512 characters where records are read; a longer string is worked out and not kept.
IDENTITY_CACHE_ENTRIES = 2048
_REMEMBERED_CHARS = 512


def identity_of(principal: str) -> str:
    """Whose history a principal's calls belong to.

    An IAM Identity Center user appears as a different role ARN in each account and permission
    set (``arn:aws:sts::<acct>:assumed-role/AWSReservedSSO_<set>_<id>/<user>``), always with
    the user name as the session name: one person, so one history (``sso:<user>``). Every other
    principal is its ARN (or the type and principal id CloudTrail gives instead).
    """
    if len(principal) <= _REMEMBERED_CHARS:
        return _identity_remembered(principal)
    return _identity(principal)


def _identity(principal: str) -> str:
    at = principal.find(_SSO_ROLE)
    if at > 0 and principal.startswith("arn:"):
        _, slash, session = principal[at + len(_SSO_ROLE) :].partition("/")
        if slash and session:
            return f"sso:{session}"
    return principal


def is_identity_center_user(identity: str) -> bool:
    """Whether an identity (``identity_of``) is an IAM Identity Center user's: their role sessions
    are opened from the access portal session of a sign-in."""
    return identity.startswith("sso:")


_ASSUMED_ROLE = ":assumed-role/"


def role_of(principal: str) -> str | None:
    """The role a session belongs to (``arn:<p>:sts::<acct>:assumed-role/<role>``, the session
    name dropped), or None for any other principal and for Identity Center users (one person).

    Session names are the caller's choice: one stolen role can be called through as many
    sessions as the attacker likes, so the role, not the session, is what has a history worth
    trusting, what one suppression window covers and what counts as one identity."""
    if len(principal) <= _REMEMBERED_CHARS:
        return _role_remembered(principal)
    return _role(principal)


def _role(principal: str) -> str | None:
    at = principal.find(_ASSUMED_ROLE)
    if at < 0 or not principal.startswith("arn:") or principal.find(_SSO_ROLE) > 0:
        return None
    role, slash, session = principal[at + len(_ASSUMED_ROLE) :].partition("/")
    return principal[: at + len(_ASSUMED_ROLE) + len(role)] if role and slash and session else None


def permission_set_of(principal: str) -> str | None:
    """The Identity Center permission set's role in one account an Identity Center user's session
    belongs to (``arn:<p>:sts::<acct>:assumed-role/AWSReservedSSO_<set>_<id>``): the people who do
    the same job there. None for any other principal (a role's sessions are the role already)."""
    at = principal.find(_SSO_ROLE)
    if at <= 0 or not principal.startswith("arn:"):
        return None
    start = at + len("assumed-role/")
    role, slash, session = principal[start:].partition("/")
    return principal[: start + len(role)] if role and slash and session else None


_identity_remembered = lru_cache(maxsize=IDENTITY_CACHE_ENTRIES)(_identity)
_role_remembered = lru_cache(maxsize=IDENTITY_CACHE_ENTRIES)(_role)


def subject_identity(principal: str) -> str:
    """Who one suppression window, one quarantine and one vote among identities belong to: the
    role for a role session, the person for an Identity Center user, else the principal."""
    return role_of(principal) or identity_of(principal)


def identity_digest(identity: str) -> str:
    """A short stable name for an identity in the per-country identity index (items stay small:
    the index counts identities, it does not need to name them)."""
    return hashlib.blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
