"""Allowlists and tuning: what a security engineer tells the detector not to alert on.

One versioned document (TOML, or JSON when the text starts with ``{``), validated by pydantic with
``extra="forbid"`` everywhere so that a typo is an error, never a silently ignored setting. Pure: the
adapters read it from a file or an SSM parameter and hand the text to :meth:`Tuning.parse`.

Globs are ``fnmatch`` patterns (``*`` any run of characters, ``/`` and ``:`` included; ``?`` one
character; ``[seq]`` a character class), matched case-sensitively against the whole value.
See docs/tuning.md for the reference and advice.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from trailgeo.core.aggregate import OTHER_MARKER  # what stands in for evidence beyond its bound

SUPPORTED_VERSION = 1
_GLOB_CHARS = frozenset("*?[")
_MIN_PREFIX = {4: 8, 6: 16}  # a broader "trusted" network is a slice of the Internet, not a VPN
# Shared with the operator CLI (app/operate.py), which checks its options the same way.
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
COUNTRY_PATTERN = re.compile(r"^[A-Z]{2}$")
ACCOUNT_PATTERN = re.compile(r"^\d{12}$")
_METHOD = re.compile(r"^[^:\s]+:[^:\s]+$")
_NEVER = re.compile(r"(?!)")


class TuningError(ValueError):
    """The tuning cannot be read or is invalid; the message names the source and every bad field."""


class Verdict(StrEnum):
    """Why a (principal, country) group must not alert, in the order the checks run."""

    IGNORED_PRINCIPAL = "ignored_principal"
    ALLOWED_COUNTRY = "allowed_country"
    TRUSTED_CIDR = "trusted_cidr"
    IGNORED_USER_AGENT = "ignored_user_agent"


# --- field types ------------------------------------------------------------------------------------


def _glob(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError("has leading or trailing whitespace (it would never match)")
    return value


def _not_everything(value: str) -> str:
    if set(value) <= {"*", "?"}:
        raise ValueError(f"{value!r} matches everything: it would silence the detector")
    return value


def _agent_glob(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return _not_everything(value)


def _country(value: str) -> str:
    if not COUNTRY_PATTERN.match(value):
        raise ValueError("must be two upper-case letters (ISO 3166-1 alpha-2, e.g. 'PT')")
    return value


def _account(value: object) -> object:
    if isinstance(value, int):
        raise ValueError("must be a string in quotes (an account id may start with 0)")  # noqa: TRY004
    if isinstance(value, str) and not ACCOUNT_PATTERN.match(value):
        raise ValueError("must be a 12-digit AWS account id, written as a string")
    return value


def _date(value: object) -> date:
    """A calendar date: TOML's ``2026-12-31`` or the string ``"2026-12-31"``; nothing looser."""
    if isinstance(value, datetime):
        raise ValueError("must be a date (YYYY-MM-DD), not a date-time")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, date):
        return value
    if isinstance(value, str) and DATE_PATTERN.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("is not a valid calendar date") from None
    raise ValueError("must be a date written YYYY-MM-DD")


def _non_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    if not value:
        raise ValueError("must list at least one")
    return value


def _method_key(value: str) -> str:
    if not _METHOD.match(value):
        raise ValueError("must be eventSource:eventName, globs allowed (e.g. 's3.amazonaws.com:Get*')")
    return value


def _version(value: object) -> object:
    if value == SUPPORTED_VERSION and type(value) is int:
        return value
    raise ValueError(
        f"unsupported version: this trailgeo reads version {SUPPORTED_VERSION} only "
        "(write version = 1, or upgrade trailgeo to read a newer file)"
    )


PrincipalGlob = Annotated[str, AfterValidator(_glob)]
IgnoredPrincipalGlob = Annotated[str, AfterValidator(_glob), AfterValidator(_not_everything)]
UserAgentGlob = Annotated[str, AfterValidator(_agent_glob)]
CountryCode = Annotated[str, AfterValidator(_country)]
AccountId = Annotated[str, BeforeValidator(_account)]
Until = Annotated[date, BeforeValidator(_date)]
MethodKey = Annotated[str, AfterValidator(_method_key)]
Threshold = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Always revalidated (``deep`` is moot: everything is immutable). The compiled globs and
        networks are cached per instance, so pydantic's plain copy would keep them stale."""
        del deep
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return self.model_validate({**values, **(update or {})})


# --- sections -----------------------------------------------------------------------------------------


class AllowedCountries(_Model):
    """Principals matching any of ``principals`` may work from ``countries``."""

    principals: Annotated[tuple[PrincipalGlob, ...], AfterValidator(_non_empty)]
    countries: Annotated[tuple[CountryCode, ...], AfterValidator(_non_empty)]
    accounts: Annotated[tuple[AccountId, ...], AfterValidator(_non_empty)] | None = None
    until: Until | None = None  # inclusive, UTC: the entry applies on that day, not after
    note: str = ""

    @cached_property
    def _principal_re(self) -> re.Pattern[str]:
        return _compile(self.principals)

    @cached_property
    def _countries(self) -> frozenset[str]:
        return frozenset(self.countries)

    def expired(self, on: date) -> bool:
        return self.until is not None and on > self.until

    def allows(self, *, account: str, principal: str, country: str, on: date) -> bool:
        return (
            country in self._countries
            and not self.expired(on)
            and (self.accounts is None or account in self.accounts)
            and self._principal_re.match(principal) is not None
        )


class TrustedCidr(_Model):
    """A network whose addresses are trusted (corporate VPN or proxy egress). A bare string is accepted."""

    cidr: str
    note: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            return {"cidr": value}
        if not isinstance(value, Mapping):
            raise ValueError("must be a CIDR string or a table with cidr (and an optional note)")  # noqa: TRY004
        return value

    @field_validator("cidr")
    @classmethod
    def _valid_network(cls, value: str) -> str:
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"is not a valid IPv4 or IPv6 network ({exc}){_host_bits_hint(value)}") from None
        minimum = _MIN_PREFIX[network.version]
        if network.prefixlen < minimum:
            raise ValueError(
                f"/{network.prefixlen} is too broad to trust "
                f"(IPv{network.version} needs /{minimum} or longer)"
            )
        return str(network)

    @cached_property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)


def _host_bits_hint(value: str) -> str:
    """For ``203.0.113.7/24``: the network, or the one address; never guess which was meant."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
        address = ipaddress.ip_interface(value.strip()).ip
    except ValueError:
        return ""
    return f": write {network} for the network or {address}/{network.max_prefixlen} for the one address"


class MethodPolicy(_Model):
    """Per-method override, keyed by ``eventSource:eventName`` (globs allowed) in ``methods``."""

    ignore: StrictBool = False  # never score or alert on this method
    threshold: Threshold | None = None  # alert at score >= this instead of the global threshold
    sensitive: StrictBool | None = None  # force the method in (True) or out (False) of the sensitive set
    note: str = ""


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "allowed_countries": AllowedCountries,
    "trusted_cidrs": TrustedCidr,
    "methods": MethodPolicy,
}
DEFAULT_METHOD_POLICY = MethodPolicy()


class Tuning(_Model):
    version: Annotated[Literal[1], BeforeValidator(_version)]
    description: str = ""
    allowed_countries: tuple[AllowedCountries, ...] = ()
    trusted_cidrs: tuple[TrustedCidr, ...] = ()
    ignored_principals: tuple[IgnoredPrincipalGlob, ...] = ()
    ignored_user_agents: tuple[UserAgentGlob, ...] = ()
    methods: dict[MethodKey, MethodPolicy] = Field(default_factory=dict)

    # --- reading -------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, source: str) -> Tuning:
        """TOML, or JSON when the text starts with ``{``. Raises :class:`TuningError` naming ``source``
        and the path of every invalid field."""
        text = text.removeprefix("\ufeff")
        document: Any
        if text.lstrip().startswith("{"):
            try:
                document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
            except json.JSONDecodeError as exc:
                raise TuningError(
                    f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                ) from None
            except _DuplicateKeyError as exc:
                raise TuningError(f"{source}: not valid JSON: {exc}") from None
        else:
            try:
                document = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise TuningError(f"{source}: not valid TOML: {exc}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            problems = [_describe(error) for error in exc.errors()]
            noun = "problem" if len(problems) == 1 else "problems"
            raise TuningError(
                f"{source}: invalid tuning, {len(problems)} {noun}: " + "; ".join(problems)
            ) from None

    # --- compiled once ---------------------------------------------------------------------------------

    @cached_property
    def _ignored_principal_re(self) -> re.Pattern[str]:
        return _compile(self.ignored_principals)

    @cached_property
    def _ignored_agent_re(self) -> re.Pattern[str]:
        return _compile(self.ignored_user_agents)

    @cached_property
    def _networks(self) -> tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv6Network, ...]]:
        v4 = tuple(t.network for t in self.trusted_cidrs if isinstance(t.network, ipaddress.IPv4Network))
        v6 = tuple(t.network for t in self.trusted_cidrs if isinstance(t.network, ipaddress.IPv6Network))
        return v4, v6

    @cached_property
    def _method_globs(self) -> tuple[tuple[re.Pattern[str], MethodPolicy], ...]:
        return tuple(
            (re.compile(fnmatch.translate(key)), policy)
            for key, policy in self.methods.items()
            if _GLOB_CHARS.intersection(key)
        )

    @cached_property
    def _method_cache(self) -> dict[str, MethodPolicy]:
        return {}

    # --- decisions ---------------------------------------------------------------------------------------

    def group_verdict(
        self,
        *,
        account: str,
        principal: str,
        country: str,
        source_ips: Iterable[str],
        user_agents: Iterable[str],
        on: date,
    ) -> str | None:
        """Why this (principal, country) group must not alert, or None when it may.

        ``trusted_cidr`` needs every address of the group in a trusted network (an unparsable address
        or the ``…other`` marker means "not all"); ``ignored_user_agent`` needs at least one agent and
        every agent ignored. ``on`` is the UTC date the ``until`` of allowlist entries is compared to.
        """
        if self.ignores_principal(principal):
            return Verdict.IGNORED_PRINCIPAL
        if any(
            entry.allows(account=account, principal=principal, country=country, on=on)
            for entry in self.allowed_countries
        ):
            return Verdict.ALLOWED_COUNTRY
        if self.trusted_cidrs and self._all_trusted(source_ips):
            return Verdict.TRUSTED_CIDR
        if self.ignored_user_agents and self._all_ignored_agents(user_agents):
            return Verdict.IGNORED_USER_AGENT
        return None

    def ignores_principal(self, principal: str) -> bool:
        """Whether ``principal`` matches ``ignored_principals`` (every detector honours it)."""
        return bool(self.ignored_principals) and self._ignored_principal_re.match(principal) is not None

    def method_policy(self, method: str) -> MethodPolicy:
        """The override for ``eventSource:eventName``: an exact key first, else the first glob in file
        order that matches, else the default (no override)."""
        cache = self._method_cache
        policy = cache.get(method)
        if policy is None:
            policy = self.methods.get(method)
            if policy is None:
                policy = next(
                    (found for pattern, found in self._method_globs if pattern.match(method)),
                    DEFAULT_METHOD_POLICY,
                )
            cache[method] = policy
        return policy

    def expired_entries(self, on: date) -> tuple[AllowedCountries, ...]:
        """Allowlist entries whose ``until`` has passed: worth a log line asking to remove them."""
        return tuple(entry for entry in self.allowed_countries if entry.expired(on))

    def _all_trusted(self, source_ips: Iterable[str]) -> bool:
        v4, v6 = self._networks
        seen = False
        for text in source_ips:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                return False  # not an address, or the "…other" marker: unknown, so not all trusted
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if isinstance(address, ipaddress.IPv4Address):
                if not any(address in network for network in v4):
                    return False
            elif not any(address in network for network in v6):
                return False
            seen = True
        return seen

    def _all_ignored_agents(self, user_agents: Iterable[str]) -> bool:
        pattern = self._ignored_agent_re
        seen = False
        for agent in user_agents:
            if agent == OTHER_MARKER or not pattern.match(agent):
                return False
            seen = True
        return seen


EMPTY_TUNING = Tuning(version=1)


# --- helpers -------------------------------------------------------------------------------------------


def _compile(globs: Sequence[str]) -> re.Pattern[str]:
    """One case-sensitive regex matching the whole value against any of ``globs``."""
    if not globs:
        return _NEVER
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _path(loc: Sequence[int | str]) -> str:
    """``allowed_countries[0].countries[1]``, ``methods."s3.amazonaws.com:Get*".threshold``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (the key)"
        else:
            name = part if part.isidentifier() else json.dumps(part, ensure_ascii=False)
            out += f".{name}" if out else name
    return out or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{_path(loc)}: unknown field{_suggestion(loc)}"
    if kind == "missing":
        return f"{_path(loc)}: required"
    message = str(error["msg"]).removeprefix("Value error, ")
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{_path(loc)}: {message} (got {shown})"


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """ "(did you mean 'countries'?)" or the list of allowed fields, for a typo."""
    name = str(loc[-1])
    model: type[BaseModel] = Tuning if len(loc) == 1 else _SECTION_MODELS.get(str(loc[0]), Tuning)
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (allowed: {', '.join(allowed)})"
