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
from trailgeo.core.sources import endpoint_account

SUPPORTED_VERSION = 1
# Countries that allowed_countries entries for everyone (catch-all principals) may name together.
MAX_COUNTRIES_FOR_EVERYONE = 10
_GLOB_CHARS = frozenset("*?[")
_MIN_PREFIX = {4: 8, 6: 16}  # a broader "trusted" network is a slice of the Internet, not a VPN
# Shared with the operator CLI (app/operate/allow.py), which checks its options the same way.
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


# Principals of one account with names nobody writes, by kind: IAM users, sessions of roles, and
# IAM Identity Center sessions (people). A pattern matching every probe of a kind matches every
# principal of that kind in an account, or more: it is a catch-all.
_PROBE_KINDS: tuple[tuple[str, ...], ...] = (
    ("arn:{p}:iam::{a}:user/{n}", "arn:{p}:iam::{a}:user/x/{n}-2"),
    ("arn:{p}:sts::{a}:assumed-role/{n}/{n}", "arn:{p}:sts::{a}:assumed-role/{n}-2/i-0{n}"),
    (
        "arn:{p}:sts::{a}:assumed-role/AWSReservedSSO_{n}_0123456789abcdef/{n}@x.example",
        "arn:{p}:sts::{a}:assumed-role/AWSReservedSSO_{n}-2_fedcba9876543210/{n}-2",
    ),
)
_PARTITION = re.compile(r"^arn:(aws[a-z-]*):")
_ACCOUNT_LIKE = re.compile(r"[0-9?]{12}")


def is_catch_all(pattern: str) -> bool:
    """Whether a principal glob matches every IAM user, every role session or every Identity Center
    session of an account (the account it names, 12 digits with ``?`` for any digit, or any
    account), whatever their names: ``*``, ``arn:*``, ``*:*``, ``arn:aws:sts::*``,
    ``arn:aws:iam::111122223333:user/*``, ``*AWSReservedSSO_*`` are; ``.../ci-deployer/*`` is not."""
    regex = re.compile(fnmatch.translate(pattern))
    partition = _PARTITION.match(pattern)
    p = partition.group(1) if partition else "aws"
    accounts = {found.replace("?", "0") for found in _ACCOUNT_LIKE.findall(pattern)} | {"000000000000"}
    return any(
        all(regex.match(probe.format(p=p, a=account, n="zq-trailgeo-probe")) for probe in kind)
        for account in accounts
        for kind in _PROBE_KINDS
    )


def _not_catch_all(value: str) -> str:
    if is_catch_all(value):
        raise ValueError(
            f"{value!r} matches every principal of an account (or more): it would silence the detector "
            "for all of them; name the principals (a role, a user, a path)"
        )
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
ScopePrincipalGlob = Annotated[str, AfterValidator(_glob), AfterValidator(_not_catch_all)]
IgnoredPrincipalGlob = Annotated[str, AfterValidator(_glob), AfterValidator(_not_catch_all)]
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


def _trusted_network(value: str) -> str:
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"is not a valid IPv4 or IPv6 network ({exc}){_host_bits_hint(value)}") from None
    minimum = _MIN_PREFIX[network.version]
    if network.prefixlen < minimum:
        raise ValueError(
            f"/{network.prefixlen} is too broad to trust (IPv{network.version} needs /{minimum} or longer)"
        )
    return str(network)


Cidr = Annotated[str, AfterValidator(_trusted_network)]


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
        return _trusted_network(value)

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


class IgnoredUserAgents(_Model):
    """User agents that do not alert, for the principals and/or networks named, never alone: the
    caller sets its user agent, and an attacker with stolen keys can send ``Terraform/1.9.0``."""

    user_agents: Annotated[tuple[UserAgentGlob, ...], AfterValidator(_non_empty)]
    principals: tuple[ScopePrincipalGlob, ...] = ()
    cidrs: tuple[Cidr, ...] = ()
    note: str = ""

    @model_validator(mode="before")
    @classmethod
    def _not_alone(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(  # noqa: TRY004 - pydantic wants ValueError
                "a user agent alone is refused (the caller sets it): write a table with user_agents "
                "and the principals and/or cidrs it comes from"
            )
        return value

    @model_validator(mode="after")
    def _scoped(self) -> Self:
        if not self.principals and not self.cidrs:
            raise ValueError("needs principals or cidrs (or both): the caller sets its user agent")
        return self

    @cached_property
    def _agent_re(self) -> re.Pattern[str]:
        return _compile(self.user_agents)

    @cached_property
    def _principal_re(self) -> re.Pattern[str]:
        return _compile(self.principals)

    @cached_property
    def _networks(self) -> tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv6Network, ...]]:
        return _split_networks(ipaddress.ip_network(cidr) for cidr in self.cidrs)

    def applies(self, principal: str, source_ips: Sequence[str], *, behind_endpoint: bool) -> bool:
        """The group is this entry's: its principal matches (when given) and every address is in
        the networks (when given; never behind a foreign VPC endpoint, whose addresses are not ours)."""
        if self.principals and self._principal_re.match(principal) is None:
            return False
        return not self.cidrs or (not behind_endpoint and _all_inside(source_ips, *self._networks))

    def ignores(self, agent: str) -> bool:
        return self._agent_re.match(agent) is not None


class MethodPolicy(_Model):
    """Per-method override, keyed by ``eventSource:eventName`` (globs allowed) in ``methods``."""

    ignore: StrictBool = False  # never score or alert on this method
    threshold: Threshold | None = None  # alert at score >= this instead of the global threshold
    sensitive: StrictBool | None = None  # force the method in (True) or out (False) of the sensitive set
    note: str = ""


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "allowed_countries": AllowedCountries,
    "trusted_cidrs": TrustedCidr,
    "ignored_user_agents": IgnoredUserAgents,
    "methods": MethodPolicy,
}
DEFAULT_METHOD_POLICY = MethodPolicy()


class Tuning(_Model):
    version: Annotated[Literal[1], BeforeValidator(_version)]
    description: str = ""
    allowed_countries: tuple[AllowedCountries, ...] = ()
    trusted_cidrs: tuple[TrustedCidr, ...] = ()
    ignored_principals: tuple[IgnoredPrincipalGlob, ...] = ()
    ignored_user_agents: tuple[IgnoredUserAgents, ...] = ()
    # Accounts whose VPC endpoints are the organization's, besides the account of each trail file
    # (its S3 folder): calls through them are skipped (source_vpce_own), not scored as VPCE:<account>.
    trusted_vpc_endpoint_accounts: tuple[AccountId, ...] = ()
    methods: dict[MethodKey, MethodPolicy] = Field(default_factory=dict)

    @field_validator("allowed_countries")
    @classmethod
    def _few_countries_for_everyone(
        cls, entries: tuple[AllowedCountries, ...]
    ) -> tuple[AllowedCountries, ...]:
        """Entries for everyone (catch-all principals) name offices, not the world: with every
        country listed they would switch the detector off as surely as ``ignored_principals = ["*"]``."""
        countries = {
            country
            for entry in entries
            if any(is_catch_all(principal) for principal in entry.principals)
            for country in entry.countries
        }
        if len(countries) > MAX_COUNTRIES_FOR_EVERYONE:
            raise ValueError(
                f"entries whose principals match everyone (such as '*') allow {len(countries)} countries "
                f"together, more than {MAX_COUNTRIES_FOR_EVERYONE}: name the principals of the others"
            )
        return entries

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
    def _networks(self) -> tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv6Network, ...]]:
        return _split_networks(t.network for t in self.trusted_cidrs)

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
        or the ``…other`` marker means "not all"; never behind a VPC endpoint, ``VPCE:<account>``);
        ``ignored_user_agent`` needs at least one agent and every agent ignored by an entry whose
        principals and networks the group is in. ``on`` is the UTC date the ``until`` of allowlist
        entries is compared to.
        """
        verdict = self.country_verdict(account=account, principal=principal, country=country, on=on)
        if verdict is not None:
            return verdict
        # Not behind a foreign VPC endpoint: its private addresses are the other account's VPC's,
        # whatever network of ours they fall in.
        ips = tuple(source_ips)
        behind_endpoint = endpoint_account(country) is not None
        if self.trusted_cidrs and not behind_endpoint and _all_inside(ips, *self._networks):
            return Verdict.TRUSTED_CIDR
        if self.ignored_user_agents and self._all_ignored_agents(
            principal, ips, behind_endpoint, user_agents
        ):
            return Verdict.IGNORED_USER_AGENT
        return None

    def country_verdict(self, *, account: str, principal: str, country: str, on: date) -> str | None:
        """Why ``principal`` may be in ``country`` whatever its addresses and agents (an ignored
        principal, an allowed country), or None."""
        if self.ignores_principal(principal):
            return Verdict.IGNORED_PRINCIPAL
        if any(
            entry.allows(account=account, principal=principal, country=country, on=on)
            for entry in self.allowed_countries
        ):
            return Verdict.ALLOWED_COUNTRY
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

    def _all_ignored_agents(
        self, principal: str, ips: Sequence[str], behind_endpoint: bool, user_agents: Iterable[str]
    ) -> bool:
        entries = [
            entry
            for entry in self.ignored_user_agents
            if entry.applies(principal, ips, behind_endpoint=behind_endpoint)
        ]
        seen = False
        for agent in user_agents:
            if agent == OTHER_MARKER or not any(entry.ignores(agent) for entry in entries):
                return False
            seen = True
        return seen


EMPTY_TUNING = Tuning(version=1)


# --- helpers -------------------------------------------------------------------------------------------


def _split_networks(
    networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv6Network, ...]]:
    both = tuple(networks)
    v4 = tuple(n for n in both if isinstance(n, ipaddress.IPv4Network))
    v6 = tuple(n for n in both if isinstance(n, ipaddress.IPv6Network))
    return v4, v6


def _all_inside(
    source_ips: Iterable[str], v4: Sequence[ipaddress.IPv4Network], v6: Sequence[ipaddress.IPv6Network]
) -> bool:
    """Whether there is an address and every one is in a network of ``v4`` or ``v6``."""
    seen = False
    for text in source_ips:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False  # not an address, or the "…other" marker: unknown, so not all inside
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv4Address):
            if not any(address in network for network in v4):
                return False
        elif not any(address in network for network in v6):
            return False
        seen = True
    return seen


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
